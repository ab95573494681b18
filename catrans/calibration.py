"""Post-hoc calibration of a numeric attribute's predicted variance, folded into the head.

A Gaussian head trained by NLL learns its mean fast and its log-variance slowly: the
log-variance has to travel from ~0 to ~-8 where the value is nearly known (the end of a
sequence), while earlier rows stay wide, and one linear read-out serves all rows. After a
fixed number of epochs the variances are too wide late in the sequence and too narrow in the
middle, by an amount that depends on the seed and on float round-off (so on the machine).

The fix is the regression analogue of Platt scaling: on held-back rows, fit an affine map of
the head's log-variance, logvar' = a * logvar + c, by Gaussian NLL (convex in (a, c), solved
by Newton's method). a > 1 widens the spread of the log-variances, which is what the
undertrained head lacks. The head's log-variance output is linear in its parameters
(U[:, k, :] or P[:, k, :], and bias[:, k]), so the map is folded into them exactly: the
fitted model needs no extra state and every reader (estimate, steering) sees the calibrated
variance."""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

LOGVAR = 1   # the numeric head's outputs: (mean, log-variance)


def fit_logvar_affine(mean_N, logvar_N, values_N, weights_N=None, *, iters: int = 50):
  """(a, c) minimising sum_i w_i NLL(values_i | mean_i, exp(a logvar_i + c)); (1, 0) is the
  identity. Rows with weight 0 are ignored."""
  m, l, y = (np.asarray(x, np.float64).ravel() for x in (mean_N, logvar_N, values_N))
  w = np.ones_like(l) if weights_N is None else np.asarray(weights_N, np.float64).ravel()
  if not (m.shape == l.shape == y.shape == w.shape):
    raise ValueError(f"mean, logvar, values and weights need one shape, got {m.shape}, "
                     f"{l.shape}, {y.shape}, {w.shape}")
  if w.sum() <= 0:
    raise ValueError("fit_logvar_affine needs at least one row with positive weight")
  r2 = np.maximum((y - m) ** 2, 1e-20)
  w = w / w.sum()

  def nll(a, c):
    s = a * l + c
    return float(np.sum(w * 0.5 * (s + r2 * np.exp(-s))))

  a, c = 1.0, 0.0
  for _ in range(iters):
    s = a * l + c
    g_s = 0.5 * (1.0 - r2 * np.exp(-s))
    h_s = 0.5 * r2 * np.exp(-s)
    grad = np.array([np.sum(w * g_s * l), np.sum(w * g_s)])
    hess = np.array([[np.sum(w * h_s * l * l), np.sum(w * h_s * l)],
                     [np.sum(w * h_s * l), np.sum(w * h_s)]])
    step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
    t, before = 1.0, nll(a, c)
    while nll(a - t * step[0], c - t * step[1]) > before and t > 1e-8:   # backtracking
      t *= 0.5
    a, c = a - t * step[0], c - t * step[1]
    if np.max(np.abs(t * step)) < 1e-10:
      break
  return float(a), float(c)


def fold_logvar_affine(head_params: dict, a: float, c: float) -> dict:
  """The AttributeHead params (full or factorized; boxed with logical axes or plain) whose
  log-variance output is a * logvar + c; the mean output is unchanged. Returns a new dict,
  the given arrays are not mutated."""
  out = dict(head_params)
  name = "U" if "U" in out else "P"          # full: U [V, K, D]; factorized: P [D, K, F]

  def edit(x, fn):
    value = np.array(nn.meta.unbox(x))
    fn(value)
    value = jnp.asarray(value, nn.meta.unbox(x).dtype)
    return x.replace_boxed(value) if isinstance(x, nn.meta.AxisMetadata) else value

  def scale_bias(b):
    b[:, LOGVAR] = a * b[:, LOGVAR] + c

  def scale_weight(w):
    w[:, LOGVAR, :] *= a

  out["bias"] = edit(out["bias"], scale_bias)
  out[name] = edit(out[name], scale_weight)
  return out
