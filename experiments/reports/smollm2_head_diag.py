"""Can a CAT head fitted on frozen SmolLM2-135M read review sentiment (issue 25)? One trunk
pass over N training reviews (cached under DIR), then on the same held-out split:

  probes  L2 logistic regressions of the trunk state at the last text token, and of its mean
          over the review's tokens (at 25/50/75/100% of the review: a causal running mean):
          how much of the label a linear read-out of the features holds;
  fits    catrans.fit.fit_attribute heads on those features (hidden=, no second trunk pass),
          one per variant: branch, head, learning rate, batch, epochs.

  python -m experiments.reports.smollm2_head_diag --root=DIR [--texts=2000] [--max_len=48]
      [--fits=none,mlp] [--seed=0] [--fit_seeds=0,1,2] [--trunk=smollm2] [--attr_layer=K]

A fit variant is a name from FITS or NAME:key=value;... over fit_attribute's keyword
arguments (e.g. 'mine:branch=mlp;param=full;learning_rate=1e-3'). Writes DIR/diag.json and
DIR/diag.md after every variant."""
import argparse
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from catrans.attributes import AttributeSpec
from catrans.fit import cache_features, fit_attribute
from catrans.fit_data import split_indices
from experiments.reviews.probes import logistic_probe, parse_table_variant, review_sequences

log = logging.getLogger("experiments")

FITS = {
    "mlp": dict(branch="mlp", param="factorized"),          # the `fit` row's head
    "mlp_lr1e-3": dict(branch="mlp", param="factorized", learning_rate=1e-3),
    "none": dict(branch="none", param="factorized"),       # the trunk state itself
    # Its own attention over the prefix: can gather sentiment from every token read so far.
    # At SmolLM2's width on 1,600 texts it reached 11 GB and was OOM-killed on a 24 GB machine.
    "block": dict(branch="block", param="factorized", learning_rate=1e-3, epochs=8),
}
HELDOUT = 0.2
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def features(a, root):
  """(model, params, token sequences, their batch, labels, hidden [N, L, D]); the hidden
  states are cached on disk."""
  model, params, seqs, data, labels = review_sequences(a.trunk, a.texts, a.max_len, a.seed)
  at = "" if a.attr_layer is None else f"_L{a.attr_layer}"
  name = lambda n: os.path.join(root, f"hidden_{a.trunk}_{n}_{a.max_len}_{a.seed}{at}.npy")
  every = os.path.join(root, f"layers_{a.trunk}_{a.texts}_{a.max_len}_{a.seed}.f16")
  if a.attr_layer is not None and os.path.exists(every):
    # smollm2_layer_probe's states of every block: the trunk's final norm of block k's.
    shape = (model.cfg.num_layers + 1, *data["inputs"].shape, model.cfg.d_model)
    state = np.asarray(np.memmap(every, np.float16, "r", shape=shape)[a.attr_layer], np.float32)
    norm = jax.jit(lambda p, x: model.apply({"params": p}, x, method=lambda m, x: m.final_norm(x)))
    return model, params, seqs, data, labels, np.asarray(norm(params, state)), None
  if os.path.exists(name(a.texts)):
    return model, params, seqs, data, labels, np.load(name(a.texts)), None
  # A smaller cache of this seed holds the first texts of the same permutation: reuse it.
  have = [n for n in range(a.texts) if os.path.exists(name(n))]
  done = np.load(name(max(have))) if have else np.zeros((0, *data["inputs"].shape[1:], 0))
  if len(done) and done.shape[1] != data["inputs"].shape[1]:
    done = done[:0]                   # another padded width: start again
  t0 = time.perf_counter()
  rest = np.asarray(cache_features(model, params, data["inputs"][len(done):], batch_size=32,
                                   tap_layer=a.attr_layer))
  hidden = np.concatenate([done, rest]) if len(done) else rest
  cache_s = time.perf_counter() - t0
  np.save(name(a.texts), hidden)
  return model, params, seqs, data, labels, hidden, cache_s


def probes(hidden, data, labels, train, held) -> dict:
  """Linear read-outs of the last-token state and of the running mean at each fraction."""
  n = data["lengths"]                           # rows 0..n-1 are real (BOS .. last token)
  csum = np.cumsum(hidden, axis=1)
  at = lambda x, rows: x[np.arange(len(rows)), rows]
  out = {"last": logistic_probe(at(hidden, n - 1)[train], labels[train],
                                at(hidden, n - 1)[held], labels[held])}
  for f in FRACTIONS:
    rows = np.clip(np.round(f * n).astype(int), 1, n) - 1
    mean = at(csum, rows) / (rows + 1)[:, None]
    out[f"mean@{f}"] = logistic_probe(mean[train], labels[train], mean[held], labels[held])
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--trunk", default="smollm2")
  ap.add_argument("--texts", type=int, default=2000)
  ap.add_argument("--max_len", type=int, default=48)
  ap.add_argument("--fits", default="none,mlp")
  ap.add_argument("--attr_layer", type=int, default=None,
                  help="the branch reads the state after this many blocks (CATConfig."
                       "attr_layer; default the last); reuses smollm2_layer_probe's states "
                       "in --root when there")
  ap.add_argument("--seed", type=int, default=0, help="picks the texts (and the probes' split)")
  ap.add_argument("--fit_seeds", default="",
                  help="comma list: fit each variant once per seed (its held-out split and "
                       "init) on the same features; default --seed")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  root = os.path.abspath(a.root)
  os.makedirs(root, exist_ok=True)
  fits = [parse_table_variant(s, FITS) for s in a.fits.split(",") if s]
  fit_seeds = [int(s) for s in a.fit_seeds.split(",")] if a.fit_seeds else [a.seed]
  model, params, seqs, data, labels, hidden, cache_s = features(a, root)
  log.info("features %s (%.0f s)", hidden.shape, cache_s or 0)
  train, held = split_indices(len(labels), HELDOUT, a.seed)     # fit_attribute's split
  path = os.path.join(root, f"diag_{a.texts}_{a.seed}.json")
  report = {"command": "python -m experiments.reports.smollm2_head_diag " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "texts": len(labels), "heldout": len(held), "fresh_share": float(labels.mean()),
            "cache_features_s": cache_s, "fits": {}}
  if os.path.exists(path):
    with open(path) as f:
      report["fits"] = json.load(f)["fits"]
  report["probes"] = probes(hidden, data, labels, train, held)
  log.info("probes: %s", {k: round(v["accuracy"], 3) for k, v in report["probes"].items()})
  for (name, kw), fit_seed in ((f, s) for f in fits for s in fit_seeds):
    kw = dict(dict(epochs=30, batch_size=32, learning_rate=3e-3, patience=5,
                   attr_layer=a.attr_layer), **kw)
    t0 = time.perf_counter()
    r = fit_attribute(model, params, AttributeSpec("fresh"), labels, tokens=seqs,
                      hidden=hidden, seed=fit_seed, heldout=HELDOUT, measure_speedup=False,
                      max_len=a.max_len, **kw)
    held_m = r.metrics["heldout"]
    key = name if fit_seed == a.seed else f"{name} (split {fit_seed})"
    report["fits"][key] = {"kwargs": kw, "fit_s": time.perf_counter() - t0,
                           "best_epoch": r.metrics["best_epoch"], "heldout": held_m}
    log.info("%s: acc %.3f log-loss %.3f (prior %.3f) ECE %.3f", key, held_m["accuracy"],
             held_m["log_loss"], held_m["log_loss_prior"], held_m["ece"])
    write(report, path)
  print(write(report, path))
  return report


def write(report, path) -> str:
  with open(path, "w") as f:
    json.dump(report, f, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else
              str(x))
  p = report["probes"]
  lines = [f"# SmolLM2-135M features for review sentiment ({report['texts']} texts, "
           f"{report['heldout']} held out, {report['fresh_share']:.2f} fresh)", "",
           f"`{report['command']}`", "",
           "probe acc last: " + f"{p['last']['accuracy']:.3f}; running mean at 25/50/75/100%: "
           + " / ".join(f"{p[f'mean@{f}']['accuracy']:.3f}" for f in FRACTIONS)
           + f" (log-loss @100 {p['mean@1.0']['log_loss']:.3f}, ECE "
             f"{p['mean@1.0']['ece']:.3f})", "",
           "| fit | kwargs | epoch | s | acc@100 | log-loss (prior) | ECE | acc@25/50/75 |",
           "|---|---|---|---|---|---|---|---|"]
  for name, r in report["fits"].items():
    h = r["heldout"]
    lines.append(f"| {name} | {json.dumps(r['kwargs'])} | {r['best_epoch']} | "
                 f"{r['fit_s']:.0f} | {h['accuracy']:.3f} | {h['log_loss']:.3f} "
                 f"({h['log_loss_prior']:.3f}) | {h['ece']:.3f} | "
                 + "/".join(f"{h['accuracy_by_fraction'][str(f)]:.2f}" for f in FRACTIONS[:-1])
                 + " |")
  md = "\n".join(lines + [""])
  with open(path.replace(".json", ".md"), "w") as f:
    f.write(md)
  return md


if __name__ == "__main__":
  main()
