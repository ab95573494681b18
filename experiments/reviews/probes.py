"""Shared pieces of the reviews diagnostics: binary metrics of P(fresh), a linear probe of
features, 'NAME:key=value;...' variant specs, and a pretrained trunk's review sequences."""
import json

import ml_collections
import numpy as np

from catrans import metrics
from catrans.fit_data import prepare_sequences, to_batch
from catrans.pretrained import load_pretrained, load_pretrained_tokenizer
from catrans.transformer import Transformer
from experiments.tasks import get_task


def parse_table_variant(spec: str, known: dict) -> tuple[str, dict]:
  """(name, overrides): a name from `known`, or NAME:key=value;key=value (values read as JSON
  where they parse, else kept as strings)."""
  if ":" not in spec:
    if spec not in known:
      raise ValueError(f"unknown variant {spec!r}; known {sorted(known)} or NAME:key=value;..")
    return spec, dict(known[spec])
  name, body = spec.split(":", 1)
  out = {}
  for kv in filter(None, body.split(";")):
    if "=" not in kv:
      raise ValueError(f"variant {name!r}: {kv!r} is not key=value")
    k, v = kv.split("=", 1)
    try:
      out[k] = json.loads(v)
    except json.JSONDecodeError:
      out[k] = v
  return name, out


def binary_metrics(p_fresh, labels) -> dict:
  p = np.clip(np.asarray(p_fresh, np.float64), 1e-6, 1 - 1e-6)
  y = np.asarray(labels)
  probs = np.stack([1 - p, p], -1)
  out = metrics.class_metrics(probs, y)
  out["ece"] = metrics.reliability(probs, y)["ece"]
  return out


def logistic_probe(x_train, y_train, x_test, y_test, l2: float = 1e-2, iters: int = 30):
  """Test metrics of an L2 logistic regression (Newton's method) on standardised features:
  how much of the label a linear read-out of the features holds."""
  mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
  xa = np.hstack([(x_train - mu) / sd, np.ones((len(x_train), 1))])
  xb = np.hstack([(x_test - mu) / sd, np.ones((len(x_test), 1))])
  w = np.zeros(xa.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-xa @ w))
    grad = xa.T @ (p - y_train) / len(xa) + l2 * w
    hess = (xa * (p * (1 - p))[:, None]).T @ xa / len(xa) + l2 * np.eye(len(w))
    w -= np.linalg.solve(hess, grad)
  return binary_metrics(1 / (1 + np.exp(-xb @ w)), y_test)


def review_sequences(trunk: str, texts: int, max_len: int, seed: int):
  """(model, params, token sequences, their batch, labels) of `texts` training reviews: the
  same fixed random subset as fit_attribute --limit with this seed."""
  cfg, params = load_pretrained(trunk, max_len=max_len + 1)
  model, tok = Transformer(cfg), load_pretrained_tokenizer(trunk)
  rows = [r for r in get_task("rotten_tomatoes", ml_collections.ConfigDict({})).source("train")
          if int(r["label"]) in (0, 1)]
  rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:texts]]
  labels = np.array([int(r["label"]) for r in rows])
  seqs, _ = prepare_sequences(model.cfg.vocab_size, texts=[r["text"] for r in rows],
                              tokenizer=tok, max_len=max_len)
  return model, params, seqs, to_batch(seqs, getattr(tok, "pad_id", 0) or 0), labels
