"""Fit a new attribute onto a trained or pretrained trunk in one call, on cached features.

  result = fit_attribute(model, params, AttributeSpec("sentiment"), labels,
                         texts=texts, tokenizer=tok)
  result.model, result.params   # a CATModel usable by inference.estimate / steered_decode

The trunk is frozen, so its hidden states h_t do not change while the attribute branch and
head train: they are computed once ([N, L, D], one pass over the data) and every epoch
reads them instead of re-running the trunk (the speed-up is measured in the same call
against one epoch of attr_only training through catrans.objective.cat_loss). The training
loss is exactly cat_loss's attribute term 'attr/<name>': the head read at the observed
next token, the sequence's label at every counted position.

Sequence layout (as in training): each sequence starts with BOS (texts get
[bos] + encode(text) + [eos]); inputs = seq[:-1], targets = seq[1:]; the prediction for a
whole sequence is the head at the last row, read at its last token (the EOS for texts).
Labels: categorical/binary class ids in [0, K) (or names with class_names); numeric finite
floats. Unlabelled examples are not accepted: drop them first."""
import dataclasses
import functools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from catrans import attributes as attr_lib
from catrans import calibration
from catrans import validation as checks     # fit_attribute has an argument 'validation'
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.fit_data import (check_labels, num_label_classes, prepare_sequences,  # noqa: F401
                              split_indices, to_batch)
from catrans.metrics import class_metrics, numeric_metrics, prior_at_start, reliability
from catrans.objective import cat_loss
from catrans.transformer import Transformer

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass
class FitResult:
  model: CATModel        # the trunk's config + the fitted attribute (mode attr_only)
  params: dict           # {'trunk': the given trunk params (the same objects), branch, head}
  metrics: dict          # held-out (and train) metrics, priors, data summary
  reliability: dict      # held-out reliability bins of the whole-sequence predictions
                         # (classes only): edges, confidence, accuracy, count, ece
  reliability_prefixes: dict   # the same over every prefix's prediction q_t, t >= 1
  timing: dict           # seconds: caching, cached epochs, one trunk epoch, speed-up
  history: list          # training loss (the attr/<name> term) after each epoch
  split: dict            # 'train' / 'heldout' example indices into the given data


# --- the frozen trunk's features --------------------------------------------------------------
def trunk_of(model, params) -> tuple[Transformer, Any]:
  """(a Transformer, its params) from a CATModel, a Transformer or a PrefixClassifier-like
  module with .cfg and params['trunk']."""
  if isinstance(model, Transformer):
    return model, params
  if not hasattr(model, "cfg") or "trunk" not in params:
    raise ValueError(f"fit needs a catrans Transformer or CATModel, got {type(model).__name__}")
  return Transformer(model.cfg), params["trunk"]


def cache_features(trunk: Transformer, trunk_params, inputs_NxL, *, batch_size: int = 64,
                   tap_layer: int | None = None):
  """[N, L, D] trunk hidden states (after the final norm; with tap_layer, the final norm of
  the state after that many blocks, Transformer's .tapped), computed in fixed-size batches
  so one program serves every batch."""
  checks.check_tap_layer(trunk.cfg, tap_layer)

  @jax.jit
  def hidden(p, x_BxL):
    out = trunk.apply({"params": p}, x_BxL, return_logits=False, tap_layer=tap_layer)
    return out.hidden if tap_layer is None else out.tapped

  # Once on the device: host (numpy) params would be copied into every batch's call, and
  # with asynchronous dispatch every queued batch holds its own copy (SmolLM2-135M, 384 rows
  # in 6 batches: peak RSS 4.5 GB against 1.9 GB; 3,200 texts grew past 8 GB and one run was
  # OOM-killed on a shared 24 GB host).
  trunk_params = jax.device_put(trunk_params)
  n = inputs_NxL.shape[0]
  b = min(batch_size, n)
  parts = []
  for start in range(0, n, b):
    idx = np.arange(start, start + b) % n       # wrap the last batch: one shape
    h = hidden(trunk_params, jnp.asarray(inputs_NxL[idx]))
    parts.append(h[:min(b, n - start)])
  return jax.block_until_ready(jnp.concatenate(parts, axis=0))


def cached_attr_loss(model: CATModel, head_params, hidden_BxLxD, targets_BxL, weights_BxL,
                     labels_B):
  """cat_loss's 'attr/<name>' term of model's single attribute, from cached trunk features."""
  spec = model.cat.attributes[0]
  out = model.apply({"params": head_params}, hidden_BxLxD, targets_BxL,
                    method=CATModel.attributes_from_hidden)[spec.name]
  known = attr_lib.label_mask(spec, labels_B).astype(jnp.float32)[:, None] * weights_BxL
  per_pos = attr_lib.loss(spec, out, labels_B)
  return (per_pos * known).sum() / jnp.maximum(known.sum(), 1e-8)


def _epoch_fn(step):
  """One jitted epoch: lax.scan of `step` over the batches of index rows [S, B]."""
  def epoch(state, data, idx_SxB):
    def body(state, idx_B):
      return step(state, jax.tree.map(lambda x: x[idx_B], data))
    return jax.lax.scan(body, state, idx_SxB)
  return jax.jit(epoch)


def _batches(rng, n: int, batch_size: int) -> np.ndarray:
  """[S, B] a permutation of range(n) in batches; the last batch wraps to the start."""
  steps = -(-n // batch_size)
  return np.resize(rng.permutation(n), steps * batch_size).reshape(steps, batch_size)


# --- the one call ------------------------------------------------------------------------------
def fit_attribute(model, params, spec: AttributeSpec, labels, *, tokens=None, texts=None,
                  tokenizer=None, class_names: Sequence[str] | None = None,
                  branch: str | None = None, param: str | None = None,
                  factor_dim: int | None = None, branch_mlp_dim: int | None = None,
                  attr_layer: int | None = None,
                  heldout: float = 0.2, validation: float = 0.1, patience: int | None = None,
                  epochs: int = 30,
                  batch_size: int = 64, learning_rate: float = 3e-3, max_len: int | None = None,
                  seed: int = 0, measure_speedup: bool = True, pad_id: int = 0,
                  feature_batch_size: int = 64, num_bins: int = 10,
                  hidden=None) -> FitResult:
  """Trains a new attribute branch + head for `spec` on a frozen trunk.

  model, params: a catrans Transformer (a plain LM) or a CATModel (its trunk is used, its
    own attributes are not carried over); a pretrained trunk from catrans.pretrained works.
  spec, labels: the attribute and one label per sequence (see module doc).
  tokens or texts + tokenizer: the sequences; max_len (default the model's) cuts them.
  branch / param / factor_dim / branch_mlp_dim: the new branch ('mlp' | 'block' | 'none'),
    head ('full' | 'factorized') and their sizes; default the CATModel's, else 'mlp' /
    'full' / 64 / the trunk's d_model.
  attr_layer: the trunk state the branch reads (CATConfig.attr_layer: after that many
    blocks; default the CATModel's, else None = after the last block).
  heldout: share held out (deterministic for a seed); epochs / batch_size / learning_rate:
    Adam on the cached features.
  validation: share of the remaining (training) examples held back to choose the epoch (the
    params of the epoch with the lowest validation loss are kept; training stops after
    `patience` epochs without improvement, None = never) and, for a numeric attribute, to
    calibrate the predicted variance (catrans.calibration). 0 = neither: the last epoch's
    params, uncalibrated.
  measure_speedup: also time one epoch that re-runs the trunk (attr_only cat_loss).
  hidden: the trunk's features of these sequences, [N, L, D] as cache_features returns them
    (L: the padded width of the cut sequences minus one), to fit several heads on one trunk
    pass; None computes them.
  Returns FitResult."""
  trunk, trunk_params = trunk_of(model, params)
  cfg = trunk.cfg
  base = model.cat if isinstance(model, CATModel) else None
  pick = lambda v, field, default: v if v is not None else (
      getattr(base, field) if base is not None else default)
  cat = CATConfig(attributes=(spec,), param=pick(param, "param", "full"),
                  branch=pick(branch, "branch", "mlp"),
                  factor_dim=pick(factor_dim, "factor_dim", 64),
                  branch_mlp_dim=pick(branch_mlp_dim, "branch_mlp_dim", 0),
                  attr_layer=pick(attr_layer, "attr_layer", None),
                  lam=base.lam if base is not None else 0.15, mode="attr_only")
  if epochs < 1 or batch_size < 1:
    raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
  if not 0.0 <= validation < 1.0:
    raise ValueError(f"validation must be a fraction in [0, 1), got {validation}")
  if patience is not None and patience < 1:
    raise ValueError(f"patience must be >= 1 or None, got {patience}")
  seqs, cut = prepare_sequences(cfg.vocab_size, tokens=tokens, texts=texts,
                                tokenizer=tokenizer, max_len=max_len or cfg.max_len)
  y = check_labels(spec, labels, len(seqs), class_names)
  data = to_batch(seqs, pad_id)
  train_idx, held_idx = split_indices(len(seqs), heldout, seed)
  val_idx = np.zeros((0,), np.int64)
  if validation > 0:
    if len(train_idx) < 2:
      raise ValueError(f"validation={validation} needs >= 2 training examples, got "
                       f"{len(train_idx)}; pass validation=0")
    keep, held_back = split_indices(len(train_idx), validation, seed + 7)
    train_idx, val_idx = train_idx[keep], train_idx[held_back]
  cat_model = CATModel(cfg, cat)
  timing = {}

  t0 = time.perf_counter()
  if hidden is None:
    hidden = cache_features(trunk, trunk_params, data["inputs"], batch_size=feature_batch_size,
                            tap_layer=cat.attr_layer)
  else:
    want = (*data["inputs"].shape, cfg.d_model)
    if tuple(hidden.shape) != want:
      raise ValueError(f"hidden has shape {tuple(hidden.shape)}; these sequences need {want} "
                       "([N, L, D] from cache_features)")
    hidden = jnp.asarray(hidden, jnp.float32)
  timing["cache_features_s"] = time.perf_counter() - t0   # includes its compile

  key = jax.random.PRNGKey(seed)
  head_params = cat_model.init(key, hidden[:1], jnp.asarray(data["targets"][:1]),
                               method=CATModel.attributes_from_hidden)["params"]
  b = min(batch_size, len(train_idx))
  # Cosine decay to 0 over the planned steps: the last epochs average out Adam's noise, which
  # otherwise sets which epoch looks best and how wide the predicted variances end up.
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, epochs * -(-len(train_idx) // b)))
  cached = {"hidden": hidden[train_idx], "targets": jnp.asarray(data["targets"][train_idx]),
            "weights": jnp.asarray(data["weights"][train_idx]), "labels": jnp.asarray(y[train_idx])}

  def cached_step(state, batch):
    p, opt = state
    loss, g = jax.value_and_grad(cached_attr_loss, argnums=1)(
        cat_model, p, batch["hidden"], batch["targets"], batch["weights"], batch["labels"])
    updates, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, updates), opt), loss

  val_loss = None
  if len(val_idx):
    val_data = tuple(jnp.asarray(x) for x in (
        hidden[val_idx], data["targets"][val_idx], data["weights"][val_idx], y[val_idx]))
    val_loss = lambda p: float(_compiled(cat_model)[0](p, *val_data))

  rng = np.random.default_rng(seed + 1)
  state = (head_params, tx.init(head_params))
  t0 = time.perf_counter()
  epoch = _epoch_fn(cached_step).lower(state, cached, _batches(rng, len(train_idx), b)).compile()
  timing["compile_cached_epoch_s"] = time.perf_counter() - t0
  history, val_history, epoch_s = [], [], []
  best = (math.inf, 0, state[0])     # (validation loss, epoch, params)
  for e in range(1, epochs + 1):
    idx = _batches(rng, len(train_idx), b)
    t0 = time.perf_counter()
    state, losses = jax.block_until_ready(epoch(state, cached, idx))
    epoch_s.append(time.perf_counter() - t0)
    history.append(float(np.mean(np.asarray(losses))))
    if val_loss is None:
      best = (math.nan, e, state[0])
      continue
    val_history.append(val_loss(state[0]))
    if val_history[-1] < best[0]:
      best = (val_history[-1], e, state[0])
    elif patience is not None and e - best[1] >= patience:
      break
  head_params = best[2]
  var_cal = None
  if spec.kind == "numeric" and len(val_idx):
    var_cal = _calibrate_variance(cat_model, head_params, hidden, data, y, val_idx)
    head_params = var_cal.pop("params")
  timing.update(epochs=len(history), steps_per_epoch=int(idx.shape[0]), batch_size=b,
                cached_epoch_s=float(np.median(epoch_s)), cached_total_s=float(np.sum(epoch_s)))

  if measure_speedup:
    timing.update(_trunk_epoch_timing(cat_model, trunk_params, head_params, tx, data, y,
                                      train_idx, b, rng))
    timing["speedup_per_epoch"] = timing["trunk_epoch_s"] / max(timing["cached_epoch_s"], 1e-9)
    # What the same number of epochs costs either way (the cached path pays one trunk pass).
    timing["speedup_total"] = (epochs * timing["trunk_epoch_s"]) / max(
        timing["cache_features_s"] + timing["cached_total_s"], 1e-9)

  full_params = dict(head_params, trunk=trunk_params)
  metrics, rel, rel_prefixes = _evaluate(cat_model, head_params, hidden, data, y, train_idx, held_idx,
                           num_bins)
  metrics["prior_at_start"] = prior_at_start(cat_model, full_params, int(seqs[0][0]))
  metrics["best_epoch"] = best[1]
  metrics["validation_loss"] = val_history
  if var_cal is not None:
    metrics["variance_calibration"] = var_cal
  if spec.kind != "numeric":   # the constant guess: the training label shares, every time
    share = np.bincount(y[train_idx], minlength=num_label_classes(spec)) / len(train_idx)
    held = metrics["heldout"]
    held["log_loss_prior"] = float(-np.mean(np.log(np.maximum(share[y[held_idx]], 1e-12))))
    held["beats_prior"] = held["log_loss"] < held["log_loss_prior"]
  metrics["data"] = {"examples": len(seqs), "train": len(train_idx),
                     "validation": len(val_idx), "heldout": len(held_idx),
                     "truncated": cut, "width": int(data["inputs"].shape[1]),
                     "label_share": _label_share(spec, y)}
  if class_names is not None:
    metrics["class_names"] = list(class_names)
  metrics["train_loss_final"] = history[-1]
  return FitResult(cat_model, full_params, metrics, rel, rel_prefixes, timing, history,
                   {"train": train_idx, "validation": val_idx, "heldout": held_idx})


def _calibrate_variance(cat_model, head_params, hidden, data, y, idx) -> dict:
  """Fits the log-variance map on the rows of examples `idx` (every counted prefix, as the
  training loss counts them) and folds it into the head: {'a', 'c', 'params'}."""
  name = cat_model.cat.attributes[0].name
  out = _outputs(cat_model, head_params, hidden[idx], data["targets"][idx])   # [n, L, 2]
  w = data["weights"][idx]
  values = np.broadcast_to(y[idx][:, None], w.shape)
  a, c = calibration.fit_logvar_affine(out[..., 0], out[..., 1], values, w)
  key = f"head_{name}"
  params = dict(head_params, **{key: calibration.fold_logvar_affine(head_params[key], a, c)})
  return {"a": a, "c": c, "params": params}


def _trunk_epoch_timing(cat_model, trunk_params, head_params, tx, data, y, train_idx, b, rng):
  """One epoch of the same updates the way the trainer's attr_only mode does it: the whole
  CAT forward (trunk included, gradient stopped at the trunk) through cat_loss."""
  name = cat_model.cat.attributes[0].name
  tokens = {"inputs": jnp.asarray(data["inputs"][train_idx]),
            "targets": jnp.asarray(data["targets"][train_idx]),
            "weights": jnp.asarray(data["weights"][train_idx]),
            "labels": jnp.asarray(y[train_idx])}

  def trunk_step(state, batch):
    p, opt = state
    loss_fn = lambda hp: cat_loss(cat_model, dict(hp, trunk=trunk_params), batch,
                                  labels={name: batch["labels"]}, mode="attr_only")[0]
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, opt = tx.update(g, opt, p)
    return (optax.apply_updates(p, updates), opt), loss

  state = (head_params, tx.init(head_params))
  idx = _batches(rng, len(train_idx), b)
  t0 = time.perf_counter()
  epoch = _epoch_fn(trunk_step).lower(state, tokens, idx).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(epoch(state, tokens, idx))   # result discarded: a timing run only
  return {"trunk_epoch_s": time.perf_counter() - t0, "compile_trunk_epoch_s": compile_s}


@functools.lru_cache(maxsize=8)
def _compiled(cat_model: CATModel):
  """(loss, outputs) jitted once per model: called eagerly, each would compile every one of
  its primitives again (most of a small fit's time)."""
  loss = jax.jit(functools.partial(cached_attr_loss, cat_model))
  outputs = jax.jit(lambda p, h, t: cat_model.apply({"params": p}, h, t,
                                                    method=CATModel.attributes_from_hidden))
  return loss, outputs


def _outputs(cat_model, head_params, hidden, targets):
  """[N, L, K] the head at every row, read at that row's target (row t: P(a | x_<=t+1))."""
  spec = cat_model.cat.attributes[0]
  out = _compiled(cat_model)[1](head_params, hidden, jnp.asarray(targets))
  return np.asarray(out[spec.name])


def _evaluate(cat_model, head_params, hidden, data, y, train_idx, held_idx, num_bins):
  spec = cat_model.cat.attributes[0]
  probs_of = lambda out: np.asarray(attr_lib.probabilities(spec, jnp.asarray(out)))
  metrics, rel, rel_prefixes = {}, {}, {}
  for split, idx in (("train", train_idx), ("heldout", held_idx)):
    h, t, w = hidden[idx], data["targets"][idx], data["weights"][idx]
    lengths = data["lengths"][idx]
    loss = _compiled(cat_model)[0](head_params, h, jnp.asarray(t), jnp.asarray(w),
                                   jnp.asarray(y[idx]))
    out = _outputs(cat_model, head_params, h, t)                       # [n, L, K]
    at_row = lambda rows: probs_of(out[np.arange(len(rows)), rows])
    probs = at_row(lengths - 1)               # P(a | the whole sequence)
    if spec.kind == "numeric":
      m = numeric_metrics(probs[:, 0], probs[:, 1], y[idx])
    else:
      m = class_metrics(probs, y[idx])
      if split == "heldout":
        rel = reliability(probs, y[idx], num_bins)
        m["ece"] = rel["ece"]
        counted = w > 0
        rel_prefixes = reliability(probs_of(out[counted]),
                                   np.broadcast_to(y[idx][:, None], w.shape)[counted], num_bins)
        m["ece_all_prefixes"] = rel_prefixes["ece"]
        m["accuracy_by_fraction"] = {   # the prefix of the first f of the tokens after BOS
            str(f): float(np.mean(at_row(np.clip(np.round(f * lengths).astype(int), 1,
                                                 lengths) - 1).argmax(-1) == y[idx]))
            for f in FRACTIONS}
    m["attr_loss"] = float(loss)
    metrics[split] = m
  return metrics, rel, rel_prefixes


def _label_share(spec, y) -> list:
  if spec.kind == "numeric":
    return [float(np.mean(y)), float(np.std(y))]
  return (np.bincount(y, minlength=num_label_classes(spec)) / len(y)).tolist()
