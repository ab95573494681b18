"""Why does the per-candidate CAT head learn so little on reviews? Short runs of the reviews
CAT config (experiments/configs/reviews_cat.py:cat) with one setting changed at a time, each
scored on held-out test reviews (issue 25).

  python -m experiments.reports.reviews_head_diag --root=DIR [--variants=paper,lam1,...]
      [--steps=800] [--reviews=0] [--tiny]

A variant is a name from VARIANTS or NAME:key=value;key=value over config keys (e.g.
'mine:objective.lam=1;objective.param=factorized;optimizer.learning_rate=3e-3').
Each is trained (or reused) under DIR/<name>; then for every test review (all of the test
split with --reviews=0) and every fraction 25/50/75/100% of it:
  q      CAT's estimate read at the token that came (the head's row of that token), and
  value  V(s) = sum_v p(v | s) P(fresh | s, v), the same prefix one token earlier averaged over
         the token head's candidates (common rows dominate), so q vs value isolates the rows
         of the tokens actually read;
with accuracy, log-loss, ECE (10 bins, top label) and AUC; q's accuracy at 25-75% split
by how often the token read occurred as a next token in the training split (rare: < 20); and
linear probes (logistic regression fitted on the train split) of the trunk's hidden state at
the last token and averaged over the review: is the label in the features at all?
Writes DIR/diag.json and DIR/diag.md."""
import argparse
import json
import logging
import math
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

from experiments import runs
from experiments.configs.reviews_cat import get_config
from experiments.reviews import data
from experiments.reviews.estimation import cat_q_and_value
from experiments.reviews.probes import binary_metrics, logistic_probe, parse_table_variant

log = logging.getLogger("experiments")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RARE = 20

# Each names its branch and lambda, since the config's default is itself a tuned variant
# ('block_lam5' at --steps=1200); the paper's setting is 'paper'.
PAPER = {"objective.branch": "mlp", "objective.lam": 0.15}
BLOCK = {"objective.branch": "block"}
VARIANTS = {
    "paper": dict(PAPER),                                 # full U, lambda 0.15, lr 2e-3
    "lam1": dict(PAPER, **{"objective.lam": 1.0}),
    "lam3": dict(PAPER, **{"objective.lam": 3.0}),
    "factorized": dict(PAPER, **{"objective.param": "factorized"}),
    "factorized_lam1": dict(PAPER, **{"objective.param": "factorized", "objective.lam": 1.0}),
    "lam1_td05": dict(PAPER, **{"objective.lam": 1.0, "objective.td_mix": 0.5}),
    "lam1_lr5e-3": dict(PAPER, **{"objective.lam": 1.0, "optimizer.learning_rate": 5e-3}),
    "lam1_lr1e-3": dict(PAPER, **{"objective.lam": 1.0, "optimizer.learning_rate": 1e-3}),
    # The paper's "Attribute Head + Block": the branch has its own attention, trained by the
    # attribute loss alone, so it can gather the review's sentiment over positions itself.
    "block": dict(BLOCK, **{"objective.lam": 0.15}),
    "block_lam1": dict(BLOCK, **{"objective.lam": 1.0}),
    "block_lam3": dict(BLOCK, **{"objective.lam": 3.0}),
    "block_factorized": dict(BLOCK, **{"objective.lam": 0.15, "objective.param": "factorized"}),
    "block_td05": dict(BLOCK, **{"objective.lam": 0.15, "objective.td_mix": 0.5}),
    # The config's default (issue 25) when run with --steps=1200.
    "block_lam5": dict(BLOCK, **{"objective.lam": 5.0}),
}


def parse_variant(spec: str) -> tuple[str, dict]:
  return parse_table_variant(spec, VARIANTS)


def variant_config(overrides: dict, steps: int, tiny: bool):
  c = get_config("cat,tiny" if tiny else "cat")
  if not tiny:     # otherwise the report's own tiny config
    c.train.steps = steps
  for key, value in overrides.items():
    node, *path = key.split(".")
    if not path:               # a top-level key, e.g. seed
      if node not in c:
        raise ValueError(f"unknown config key {key!r}")
      c[node] = value
      continue
    target = c[node]
    for p in path[:-1]:
      target = target[p]
    # objective keys may be new (e.g. td_mix): CATConfig.from_dict rejects unknown ones.
    if path[-1] not in target and node != "objective":
      raise ValueError(f"unknown config key {key!r}")
    target[path[-1]] = value
  return c


def train_counts(task, tok, vocab_size: int) -> np.ndarray:
  """How often each id is a next token in the training split (the rows a full U learns)."""
  counts = np.zeros(vocab_size, np.int64)
  for r in task.source("train"):
    if int(r["label"]) in (0, 1):
      np.add.at(counts, np.asarray(tok.encode(r["text"]), np.int64), 1)
  return counts


def hidden_features(model, params, tokens_NxW, n_N):
  """(trunk hidden at each review's last token, mean over its tokens) [N, D] each."""
  last, mean = [], []
  for s in range(0, len(tokens_NxW), 256):
    t = jnp.asarray(tokens_NxW[s:s + 256])
    h = np.asarray(model.apply({"params": params}, t).hidden, np.float64)
    n = n_N[s:s + 256]
    last.append(h[np.arange(len(n)), n])
    m = (np.arange(h.shape[1])[None] <= n[:, None])[..., None]
    mean.append((h * m).sum(1) / m.sum(1))
  return np.concatenate(last), np.concatenate(mean)


def evaluate(trainer, params, reviews, counts, train_reviews=None) -> dict:
  tok, width = trainer.task.tokenizer, int(trainer.config.data.seq_len)
  model = trainer.objective.model
  labels = np.array([int(r["label"]) for r in reviews])
  tokens, n = data.encode_reviews(tok, [r["text"] for r in reviews], width)
  ends = data.prefix_ends(n, FRACTIONS)
  q_all, v_all = cat_q_and_value(model, params, tokens)
  out = {"q": {}, "value": {}, "rare_split": {}}
  if train_reviews:   # is the label in the trunk's features at all? (linear probes)
    t_tok, t_n = data.encode_reviews(tok, [r["text"] for r in train_reviews], width)
    t_y = np.array([int(r["label"]) for r in train_reviews])
    tr, te = hidden_features(model, params, t_tok, t_n), hidden_features(model, params,
                                                                           tokens, n)
    out["probe_last"] = logistic_probe(tr[0], t_y, te[0], labels)
    out["probe_mean"] = logistic_probe(tr[1], t_y, te[1], labels)
  for i, f in enumerate(FRACTIONS):
    e = ends[:, i]
    q = q_all[np.arange(len(e)), e]
    v = v_all[np.arange(len(e)), e - 1]     # V(s_{end-1}): before reading token `end`
    out["q"][str(f)] = binary_metrics(q, labels)
    out["value"][str(f)] = binary_metrics(v, labels)
    if f < 1.0:
      read = tokens[np.arange(len(e)), e]
      rare = counts[read] < RARE
      out["rare_split"][str(f)] = {
          "rare_share": float(rare.mean()),
          "acc_rare": float(np.mean((q[rare] > 0.5) == labels[rare])) if rare.any() else None,
          "acc_common": float(np.mean((q[~rare] > 0.5) == labels[~rare]))}
  return out


def markdown(report: dict) -> str:
  lines = ["# Why the reviews CAT head learns little: short runs", "",
           f"`{report['command']}` — {report['wall_time_s'] / 60:.1f} min; "
           f"{report['reviews']} test reviews ({report['fresh_share']:.2f} fresh: a constant "
           f"guess has log-loss {report['constant_log_loss']:.3f}).", "",
           "q: CAT's estimate at the token read; value: V(s) one token earlier (averaged over "
           "candidates). acc / log-loss / ECE / AUC at 100% of the review; acc at 25/50/75%.", "",
           "| variant | overrides | steps | train s | q acc@100 | q logloss | q ECE | q AUC | "
           "value acc@100 | value logloss | q acc@25/50/75 | q acc rare / common @50 | "
           "probe acc last / mean |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in report["variants"].items():
    q, v = r["eval"]["q"], r["eval"]["value"]
    rs = r["eval"]["rare_split"].get("0.5", {})
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    lines.append(
        f"| {name} | {json.dumps(r['overrides'])} | {r['steps']} | {r['train_s']:.0f} | "
        f"{q['1.0']['accuracy']:.3f} | {q['1.0']['log_loss']:.3f} | {q['1.0']['ece']:.3f} | "
        f"{fmt(q['1.0']['auc'])} | {v['1.0']['accuracy']:.3f} | {v['1.0']['log_loss']:.3f} | "
        + "/".join(f"{q[str(f)]['accuracy']:.2f}" for f in FRACTIONS[:-1])
        + f" | {fmt(rs.get('acc_rare'))} / {fmt(rs.get('acc_common'))} "
          f"({rs.get('rare_share', 0):.0%} rare) | "
        + (f"{r['eval']['probe_last']['accuracy']:.3f} / {r['eval']['probe_mean']['accuracy']:.3f}"
           if "probe_last" in r["eval"] else "-") + " |")
  return "\n".join(lines + [""])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--variants", default="paper,lam1,factorized_lam1")
  ap.add_argument("--steps", type=int, default=800)
  ap.add_argument("--reviews", type=int, default=0, help="test reviews (0: all)")
  ap.add_argument("--tiny", action="store_true")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  start = time.perf_counter()
  root = os.path.abspath(a.root)
  os.makedirs(root, exist_ok=True)
  variants = [parse_variant(s) for s in a.variants.split(",") if s]
  path = os.path.join(root, "diag.json")
  report = {"variants": {}}
  if os.path.exists(path):          # keep earlier variants: one run at a time, one table
    with open(path) as f:
      report["variants"] = json.load(f)["variants"]
  counts = reviews = None
  for name, overrides in variants:
    config = variant_config(overrides, a.steps, a.tiny)
    t0 = time.perf_counter()
    trainer, params = runs.trained(config, os.path.join(root, name))
    train_s = time.perf_counter() - t0
    if counts is None:
      tok = trainer.task.tokenizer
      counts = train_counts(trainer.task, tok, trainer.objective.model.cfg.vocab_size)
      reviews = data.test_reviews(trainer.task, a.reviews or 10 ** 9, 0)
      train_reviews = [r for r in trainer.task.source("train") if int(r["label"]) in (0, 1)]
    ev = evaluate(trainer, params, reviews, counts, train_reviews)
    report["variants"][name] = {"overrides": overrides, "steps": trainer.steps,
                                "train_s": train_s, "eval": ev}
    log.info("%s: q acc@100 %.3f log-loss %.3f", name, ev["q"]["1.0"]["accuracy"],
             ev["q"]["1.0"]["log_loss"])
    md = write(report, path, reviews, start, argv)   # after every variant: nothing is lost
  print(md)
  return report


def write(report, path, reviews, start, argv) -> str:
  labels = np.array([int(r["label"]) for r in reviews])
  share = float(labels.mean())
  report.update(command="python -m experiments.reports.reviews_head_diag " + " ".join(
      sys.argv[1:] if argv is None else argv), reviews=len(reviews), fresh_share=share,
      constant_log_loss=-(share * math.log(share) + (1 - share) * math.log(1 - share)),
      wall_time_s=time.perf_counter() - start)
  with open(path, "w") as f:
    json.dump(report, f, indent=1)
  md = markdown(report)
  with open(os.path.join(os.path.dirname(path), "diag.md"), "w") as f:
    f.write(md)
  return md


if __name__ == "__main__":
  main()
