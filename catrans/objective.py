"""The CAT training loss: L = CE(logits_t, x_{t+1}) + lambda * L_attr(A[t, x_{t+1}, :], a).

The sequence's label is the target at every position where the next token counts
(weights > 0: not padding, not prompt). Attribute outputs are gathered at the observed next
token only (CATModel(next_tokens_BxL=...)), never the [B, L, V, K] tensor.

With cat.td_mix > 0 (class attributes) row t's target is the mixture (1 - td_mix) * label +
td_mix * V(s_{t+1}), V the model's own class distribution at the next row (gradient stopped)
averaged over the token head's td_top_k most likely tokens there; a row whose next row does
not count (the sequence's last, or another packed segment) keeps the label alone."""
import jax
import jax.numpy as jnp
import optax

from catrans import attributes as attr_lib


def cat_loss(model, params, batch, *, labels: dict | None = None, lam: float | None = None,
             mode: str | None = None):
  """Args:
    model: a CATModel; params its parameters.
    batch: inputs, targets [B, L] int; weights [B, L] float (0 on padding and prompt);
      positions, segment_ids [B, L] optional; labels per attribute name [B] (class ids with
      -1 unknown, or floats with NaN unknown), from `labels` or batch[name] (a single
      attribute may also read batch['label']).
    lam, mode: default from model.cat ('attr_only' freezes the trunk: its CE is reported,
      not trained).
  Returns (loss, metrics) with metrics 'ce', 'attr/<name>', 'attr_acc/<name>' and 'weight'."""
  cat = model.cat
  lam = cat.lam if lam is None else lam
  mode = cat.mode if mode is None else mode
  targets, weights = batch["targets"], batch["weights"].astype(jnp.float32)
  td = float(cat.td_mix)
  out = model.apply({"params": params}, batch["inputs"], batch.get("positions"),
                    segment_ids_BxL=batch.get("segment_ids"), next_tokens_BxL=targets,
                    stop_trunk_gradient=(mode == "attr_only"),
                    candidates_top_k=cat.td_top_k if td else 0)
  if td:
    boot_ok_BxL, p_top_BxLxC = _bootstrap_rows(out, weights, batch.get("segment_ids"))
  total = jnp.maximum(weights.sum(), 1e-8)
  ce = (optax.softmax_cross_entropy_with_integer_labels(out.logits, targets) * weights).sum()
  ce = ce / total
  metrics = {"ce": ce, "weight": weights.sum(),
             "accuracy": ((out.logits.argmax(-1) == targets) * weights).sum() / total}
  attr_total = 0.0
  for spec in cat.attributes:
    y = _labels_for(spec, batch, labels, len(cat.attributes))
    known = attr_lib.label_mask(spec, y).astype(jnp.float32)[:, None] * weights
    n = jnp.maximum(known.sum(), 1e-8)
    per_pos = attr_lib.loss(spec, out.attributes[spec.name], y)
    term = (per_pos * known).sum() / n
    metrics[f"attr/{spec.name}"] = term   # against the label, with or without td_mix
    if td:
      boot_ce = _bootstrap_ce(spec, out.attributes[spec.name], out.candidates[1][spec.name],
                              p_top_BxLxC)
      per_pos = jnp.where(boot_ok_BxL, (1.0 - td) * per_pos + td * boot_ce, per_pos)
      term = (per_pos * known).sum() / n
      metrics[f"attr_td/{spec.name}"] = term
    attr_total = attr_total + spec.weight * term
    if spec.kind != "numeric":
      probs = attr_lib.probabilities(spec, out.attributes[spec.name])
      hit = (probs.argmax(-1) == jnp.maximum(y, 0)[:, None]).astype(jnp.float32)
      metrics[f"attr_acc/{spec.name}"] = (hit * known).sum() / n
  loss = lam * attr_total if mode == "attr_only" else ce + lam * attr_total
  metrics["attr_loss"] = attr_total
  metrics["loss"] = loss
  return loss, metrics


def _bootstrap_rows(out, weights_BxL, segment_ids_BxL):
  """(rows whose next row counts and is the same sequence [B, L], the token head's
  renormalised probabilities of its top-k candidates [B, L, C], gradient stopped)."""
  ok = weights_BxL[:, 1:] > 0
  if segment_ids_BxL is not None:
    ok = ok & (segment_ids_BxL[:, 1:] == segment_ids_BxL[:, :-1])
  ok = jnp.concatenate([ok, jnp.zeros_like(ok[:, :1])], axis=1)
  top_BxLxC = out.candidates[0]
  logp = jax.nn.log_softmax(jax.lax.stop_gradient(out.logits).astype(jnp.float32), axis=-1)
  p_top = jax.nn.softmax(jnp.take_along_axis(logp, top_BxLxC, axis=-1), axis=-1)
  return ok, p_top


def _bootstrap_ce(spec, out_BxLxK, cand_BxLxCxK, p_top_BxLxC):
  """Cross-entropy of row t's class distribution against V(s_{t+1}) (0 at the last row)."""
  value_BxLxN = jnp.einsum("blc,blcn->bln", p_top_BxLxC,
                           attr_lib.probabilities(spec, cand_BxLxCxK))
  value_BxLxN = jax.lax.stop_gradient(value_BxLxN)
  target = jnp.concatenate([value_BxLxN[:, 1:], jnp.zeros_like(value_BxLxN[:, :1])], axis=1)
  return -(target * attr_lib.class_log_probabilities(spec, out_BxLxK)).sum(-1)


def _labels_for(spec, batch, labels, num_attributes):
  if labels is not None and spec.name in labels:
    return labels[spec.name]
  if spec.name in batch:
    return batch[spec.name]
  if num_attributes == 1 and "label" in batch:
    return batch["label"]
  raise KeyError(f"no labels for attribute {spec.name!r}: pass labels= or a batch key "
                 f"{spec.name!r}")
