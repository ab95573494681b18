"""SequenceMatch objective (SPEC 3, IQ-Learn form), behaviour cloning and their schedule.

Everything works on the logits of the one-pass rows (masking.build_one_pass) and the
per-row bookkeeping in masking.OnePass; nothing here knows about the model.

Logits are soft Q-values: Q(s, a) = l(a|s), V(s) = logsumexp_a l(a|s), with the <bkspc>
logit masked to -inf where the state is the bare prompt. Per transition i (row t = P-1+i):
  r_i = l(a_i|u_i) - gamma (1 - done_i) V(u_{i+1})
  w_i = gamma^i / sum_{j<H} gamma^j      (H: the padded horizon, N - 1 rows by default;
                                          never a per-sequence length)
General divergence (IQ-Learn): with a concave phi and a regulariser rho,
  L = - E_data[sum_i w_i phi(r_i)]                      (expert actions of data sequences)
      + E_mix[sum_i w_i (V(u_i) - gamma (1 - done_i) V(u_{i+1}))]
      + E_mix[sum_i w_i rho(r_i)]
chi2 (the default, SPEC's L_SM): phi(r) = r, rho(r) = r^2 / (4 alpha).
E_data averages over data sequences. E_mix is the mixture occupancy (rho_data + rho_model)/2:
with rollouts in the batch it is model_share * (mean over rollouts) + (1 - model_share) *
(mean over data sequences), model_share = 0.5 by default, whatever the two counts are;
without rollouts it is the mean over data sequences. All transitions of a sequence enter
E_mix, noise ones included (they are states the mixture visits); only expert actions enter
E_data. Two departures, both off by default: reward_backspace=False drops the <bkspc> rows
from E_data, regularize_noise=False drops the data's noise rows from the regulariser
(sequencematch_loss).
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from seqmatch import checks
from seqmatch.masking import OnePass


class Divergence(NamedTuple):
  """phi: applied to expert rewards (concave); reg: applied to mixture rewards."""
  name: str
  phi: Callable[[jnp.ndarray], jnp.ndarray]
  reg: Callable[[jnp.ndarray], jnp.ndarray]


def chi2(alpha: float = 0.01) -> Divergence:
  """Chi-squared on the mixture (SPEC's L_SM): phi(r) = r, reg(r) = r^2 / (4 alpha).
  alpha: a finite number > 0 (NaN would make every regulariser NaN)."""
  checks.check_number(alpha, "alpha", lo=0.0, lo_open=True)
  return Divergence("chi2", lambda r: r, lambda r: r * r / (4.0 * alpha))


def kl(alpha: float = 0.01) -> Divergence:
  """Forward-KL conjugate phi(r) = -exp(-(r + 1)); no mixture regulariser."""
  del alpha
  return Divergence("kl", lambda r: -jnp.exp(-(r + 1.0)), jnp.zeros_like)


def total_variation(alpha: float = 0.01) -> Divergence:
  """phi(r) = r, no regulariser (IQ-Learn's TV; unbounded rewards, use with care)."""
  del alpha
  return Divergence("tv", lambda r: r, jnp.zeros_like)


def jensen_shannon(alpha: float = 0.01) -> Divergence:
  """phi(r) = log(2 - exp(-r)); defined for r > -log 2, so r is clipped just above it
  (a clipped reward gets no gradient, which is the conservative choice)."""
  del alpha
  def phi(r):
    r = jnp.maximum(r, -jnp.log(2.0) + 1e-4)
    return jnp.log(2.0 - jnp.exp(-r))
  return Divergence("js", phi, jnp.zeros_like)


DIVERGENCES = {"chi2": chi2, "kl": kl, "tv": total_variation, "js": jensen_shannon}


def get_divergence(name: str, alpha: float = 0.01) -> Divergence:
  if not isinstance(name, str):
    raise TypeError(f"divergence must be a name in {sorted(DIVERGENCES)} or a Divergence, got "
                    f"{name!r}")
  if name not in DIVERGENCES:
    raise ValueError(f"unknown divergence {name!r}; known: {sorted(DIVERGENCES)}")
  return DIVERGENCES[name](alpha)


def _check(logits_BxNxA, one: OnePass, backspace_id: int):
  """logits a float [B, N, A] array matching one (a masking.OnePass), backspace_id an integer
  in [0, A) (seqmatch.checks; integer logits are an error, not cast)."""
  if not isinstance(one, OnePass):
    raise TypeError(f"one must be a seqmatch.OnePass (from build_one_pass), got "
                    f"{type(one).__name__}")
  checks.check_float_array(logits_BxNxA, "logits_BxNxA")
  if logits_BxNxA.ndim != 3 or logits_BxNxA.shape[:2] != one.tokens.shape:
    raise ValueError(f"logits_BxNxA must be [B, N, A] with [B, N] = {one.tokens.shape}, "
                     f"got {logits_BxNxA.shape}")
  if not checks.is_int(backspace_id) or not 0 <= backspace_id < logits_BxNxA.shape[-1]:
    raise ValueError(f"backspace_id {backspace_id!r} outside the logits' "
                     f"{logits_BxNxA.shape[-1]} actions")


def _check_discount(gamma, horizon):
  """gamma a finite number in (0, 1] (0 would weight only the first transition and a NaN
  every one); horizon None or an integer >= 1 (a float would make a fractional sum)."""
  checks.check_number(gamma, "gamma", 0.0, 1.0, lo_open=True)
  if horizon is not None and not checks.is_int(horizon):
    raise TypeError(f"horizon must be an integer >= 1 or None, got {horizon!r}")
  if horizon is not None and horizon < 1:
    raise ValueError(f"horizon must be >= 1 (None: the padded length), got {horizon}")


def mask_illegal_backspace(logits_BxNxA, bkspc_illegal_BxN, backspace_id: int):
  """Sets the <bkspc> logit to -inf on rows whose state is the bare prompt."""
  a = logits_BxNxA.shape[-1]
  hit = bkspc_illegal_BxN[..., None] & (jnp.arange(a) == backspace_id)
  return jnp.where(hit, -jnp.inf, logits_BxNxA)


def _is_data(is_data_B, b):
  """A bool [B] array (default all True); a float or int flag is an error, not a cast."""
  if is_data_B is None:
    return jnp.ones((b,), bool)
  sh = checks.check_bool_array(is_data_B, "is_data_B")
  if sh != (b,):
    raise ValueError(f"is_data_B must have shape ({b},), got {sh}")
  return jnp.asarray(is_data_B)


def _shift_left(x_BxN):
  return jnp.concatenate([x_BxN[:, 1:], jnp.zeros_like(x_BxN[:, :1])], axis=1)


def transition_terms(logits_BxNxA, one: OnePass, *, backspace_id: int, gamma: float = 0.998,
                     horizon: int | None = None):
  """Per-row quantities of every transition. Returns a dict of [B, N] float32 arrays:
  q = l(a_i|u_i), v = V(u_i), v_next = V(u_{i+1}) (0 where done), r, w (0 off-transition).
  Checks: as sequencematch_loss (logits, one, backspace_id, gamma, horizon)."""
  _check(logits_BxNxA, one, backspace_id)
  _check_discount(gamma, horizon)
  logits = mask_illegal_backspace(logits_BxNxA.astype(jnp.float32), one.bkspc_illegal,
                                  backspace_id)
  v = jax.nn.logsumexp(logits, axis=-1)
  q = jnp.take_along_axis(logits, one.next_action[..., None], axis=-1)[..., 0]
  tr = one.is_transition
  not_done = (~one.done).astype(jnp.float32)
  v_next = jnp.where(tr & ~one.done, _shift_left(v), 0.0)
  q = jnp.where(tr, q, 0.0)  # off-transition rows may gather an illegal -inf
  r = q - gamma * not_done * v_next
  h = max(one.tokens.shape[1] - 1, 1) if horizon is None else horizon
  z = jnp.sum(gamma ** jnp.arange(h, dtype=jnp.float32))
  w = jnp.where(tr, gamma ** one.transition_index.astype(jnp.float32) / z, 0.0)
  return {"q": q, "v": jnp.where(tr, v, 0.0), "v_next": v_next, "r": jnp.where(tr, r, 0.0),
          "w": w}


def sequencematch_loss(logits_BxNxA, one: OnePass, is_data_B=None, *, backspace_id: int,
                       gamma: float = 0.998, alpha: float = 0.01,
                       divergence: str | Divergence = "chi2", horizon: int | None = None,
                       model_share: float = 0.5, reward_backspace: bool = True,
                       regularize_noise: bool = True):
  """L_SM (SPEC 3) for a batch mixing data sequences (is_data_B True) and model rollouts.

  Args:
    logits_BxNxA: one-pass logits (A actions incl. <bkspc>).
    one: masking.OnePass of the same batch (expert flags from noise augmentation).
    is_data_B: bool; default all data.
    divergence: a name in DIVERGENCES or a Divergence.
    model_share: weight of the rollouts in E_mix when the batch has any (module doc).
    reward_backspace: False leaves the <bkspc> rows out of the expert term (they stay in
      E_mix and in BC). With them in, the reward of undoing a noise token raises
      V(state after the noise), and the regulariser pulls the noise logit toward it:
      the learner is paid to make the augmentation's mistakes (markov_compare measures it).
    regularize_noise: False leaves the noise rows of data sequences (non-expert actions)
      out of the chi2 regulariser (they stay in the telescoping value term).
  Returns (scalar loss, metrics dict of scalars).

  Checked before any work (seqmatch.checks), errors naming the argument: logits_BxNxA a
  float [B, N, A] array matching one (a OnePass); is_data_B None or a bool [B] array;
  backspace_id an integer in [0, A); gamma a finite number in (0, 1]; alpha finite > 0;
  divergence a name in DIVERGENCES or a Divergence; horizon None or an integer >= 1;
  model_share a finite number in [0, 1]; reward_backspace / regularize_noise bools.
  gamma, alpha and model_share pass unread when traced.
  """
  _check(logits_BxNxA, one, backspace_id)
  _check_discount(gamma, horizon)
  checks.check_number(model_share, "model_share", 0.0, 1.0)
  checks.check_bool(reward_backspace, "reward_backspace")
  checks.check_bool(regularize_noise, "regularize_noise")
  is_data_B = _is_data(is_data_B, one.tokens.shape[0])
  if isinstance(divergence, str) or not isinstance(divergence, Divergence):
    div = get_divergence(divergence, alpha)
  else:
    div = divergence
  t = transition_terms(logits_BxNxA, one, backspace_id=backspace_id, gamma=gamma,
                       horizon=horizon)
  w, r = t["w"], t["r"]
  expert_rows = one.expert & is_data_B[:, None]
  if not reward_backspace:
    expert_rows &= one.next_action != backspace_id
  expert = expert_rows.astype(jnp.float32)
  n_data = jnp.maximum(is_data_B.sum(), 1).astype(jnp.float32)
  # phi sees r only where it counts: phi(r) of a non-expert row could overflow (kl: exp(-r))
  # and a where() after the fact would still send 0 * inf = NaN into the gradient.
  r_expert = jnp.where(expert > 0, r, 0.0)
  expert_term = jnp.sum(w * expert * div.phi(r_expert)) / n_data
  n_model = (~is_data_B).sum().astype(jnp.float32)
  seq_w_B = jnp.where(n_model > 0,
                      jnp.where(is_data_B, (1.0 - model_share) / n_data,
                                model_share / jnp.maximum(n_model, 1.0)),
                      is_data_B / n_data)
  value_term = jnp.sum(seq_w_B[:, None] * w * (t["v"] - gamma * t["v_next"]))
  reg_rows = jnp.ones_like(w) if regularize_noise else jnp.where(
      is_data_B[:, None] & ~one.expert, 0.0, 1.0)
  reg_term = jnp.sum(seq_w_B[:, None] * w * reg_rows * div.reg(r))
  loss = -expert_term + value_term + reg_term
  return loss, {"sm/expert_term": expert_term, "sm/value_term": value_term,
                "sm/reg_term": reg_term,
                "sm/mean_expert_reward": jnp.sum(expert * r) / jnp.maximum(expert.sum(), 1.0)}


def bc_loss(logits_BxNxA, one: OnePass, is_data_B=None, *, backspace_id: int):
  """Behaviour cloning: mean cross-entropy over expert transitions of data sequences.
  Returns (scalar, metrics). Checks: logits, one, is_data_B, backspace_id as
  sequencematch_loss."""
  _check(logits_BxNxA, one, backspace_id)
  is_data_B = _is_data(is_data_B, one.tokens.shape[0])
  logits = mask_illegal_backspace(logits_BxNxA.astype(jnp.float32), one.bkspc_illegal,
                                  backspace_id)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, one.next_action[..., None], axis=-1)[..., 0]
  expert = one.expert & is_data_B[:, None]
  n = jnp.maximum(expert.sum(), 1).astype(jnp.float32)
  loss = jnp.sum(jnp.where(expert, nll, 0.0)) / n
  return loss, {"bc/nll": loss, "bc/num_targets": expert.sum()}


def schedule_weights(step, *, bc_steps: int, beta: float):
  """(w_sm, w_bc) at a (possibly traced) step: BC only for bc_steps, then
  (1 - beta) L_SM + beta L_BC."""
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"beta must be in [0, 1], got {beta}")
  warm = jnp.asarray(step) < bc_steps
  return jnp.where(warm, 0.0, 1.0 - beta), jnp.where(warm, 1.0, beta)


def combined_loss(step, loss_sm, loss_bc, *, bc_steps: int, beta: float):
  """The training loss of the schedule; jit-safe. Note: where w_sm == 0, L_SM is still
  computed (cheap next to the forward pass) and multiplied by 0; a non-finite L_SM would
  still poison the gradient, hence the jnp.where rather than a product."""
  w_sm, w_bc = schedule_weights(step, bc_steps=bc_steps, beta=beta)
  return jnp.where(w_sm > 0, w_sm * loss_sm, 0.0) + w_bc * loss_bc
