"""How good a fitted attribute is (catrans.fit reports these): ROC AUC, top-label reliability
and ECE, accuracy / log loss for classes, error / calibration for numeric attributes, and the
model's own prior of the attribute before any token."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from catrans import attributes as attr_lib
from catrans.cat_model import CATModel


def auc(scores, positives) -> float | None:
  """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; None without both
  classes."""
  s, y = np.asarray(scores, np.float64), np.asarray(positives, bool)
  n1, n0 = int(y.sum()), int((~y).sum())
  if n1 == 0 or n0 == 0:
    return None
  order = np.argsort(s, kind="mergesort")
  ranks = np.empty(len(s))
  sorted_s = s[order]
  i = 0
  while i < len(s):     # average ranks over ties
    j = i
    while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
    i = j + 1
  return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def reliability(probs_NxC, labels_N, num_bins: int = 10) -> dict:
  """Top-label reliability: per equal-width confidence bin the mean confidence, the accuracy
  and the count; ECE = sum_b count_b / N |accuracy_b - confidence_b|."""
  p = np.asarray(probs_NxC, np.float64)
  conf, pred = p.max(-1), p.argmax(-1)
  hit = (pred == np.asarray(labels_N)).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  b = np.clip(np.digitize(conf, edges[1:-1]), 0, num_bins - 1)
  count = np.bincount(b, minlength=num_bins)
  safe = np.maximum(count, 1)
  mean_conf = np.bincount(b, conf, num_bins) / safe
  acc = np.bincount(b, hit, num_bins) / safe
  ece = float(np.sum(count / max(len(conf), 1) * np.abs(acc - mean_conf)))
  return {"edges": edges.tolist(), "confidence": mean_conf.tolist(), "accuracy": acc.tolist(),
          "count": count.tolist(), "ece": ece}


def class_metrics(probs_NxC, labels_N) -> dict:
  p = np.clip(np.asarray(probs_NxC, np.float64), 1e-12, 1.0)
  y = np.asarray(labels_N)
  out = {"accuracy": float(np.mean(p.argmax(-1) == y)),
         "log_loss": float(np.mean(-np.log(p[np.arange(len(y)), y])))}
  if p.shape[-1] == 2:
    out["auc"] = auc(p[:, 1], y == 1)
  else:   # macro one-vs-rest over the classes present
    aucs = [auc(p[:, c], y == c) for c in range(p.shape[-1])]
    aucs = [a for a in aucs if a is not None]
    out["auc"] = float(np.mean(aucs)) if aucs else None
  return out


def numeric_metrics(mean_N, var_N, values_N) -> dict:
  m, v, y = (np.asarray(a, np.float64) for a in (mean_N, var_N, values_N))
  z = (y - m) / np.sqrt(np.maximum(v, 1e-12))
  return {"mae": float(np.mean(np.abs(y - m))), "rmse": float(np.sqrt(np.mean((y - m) ** 2))),
          "nll": float(np.mean(0.5 * (np.log(2 * math.pi * v) + z ** 2))),
          # A calibrated Gaussian puts 68.3% of the values within one predicted sd.
          "coverage_1sd": float(np.mean(np.abs(z) <= 1.0))}


def prior_at_start(model: CATModel, params, bos_id: int) -> list:
  """The model's own prior of the attribute before any token: V(s_0) = sum_v p(v | BOS)
  P(a | BOS, v) per class ([C]); for numeric [E[a]]."""
  spec = model.cat.attributes[0]
  out = model.apply({"params": params}, jnp.asarray([[bos_id]], jnp.int32), all_tokens=True)
  p_V = jax.nn.softmax(out.logits[0, 0].astype(jnp.float32))
  probs_VxC = attr_lib.probabilities(spec, out.attributes[spec.name][0, 0])
  if spec.kind == "numeric":
    return [float(p_V @ probs_VxC[:, 0])]
  return [float(x) for x in p_V @ probs_VxC]
