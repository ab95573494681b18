"""A pretrained LM with a fitted CAT head vs the from-scratch CAT of the reviews report.

  python -m experiments.reports.smollm2_compare --reviews=DIR --out=DIR [--limit=600] [--tiny]

SmolLM2-135M (catrans.pretrained) gets a sentiment attribute with catrans.fit.fit_attribute
(branch + factorized head on cached frozen-trunk features: its language model is untouched)
from `limit` training reviews. It is then measured exactly as the from-scratch CAT in
DIR (experiments.reports.reviews_report) was:
  - estimation: P(fresh | first 25 / 50 / 75 / 100% of each test review), the same 300 test
    reviews, accuracy and log loss;
  - steering: the same neutral and opposite-class prompts, CAT weighted (gamma 3, 9) and
    satisficing toward fresh and toward rotten, judged by the reviews report's `judge`
    classifier (SmolLM2's text is decoded and re-encoded with the judge's SentencePiece
    vocabulary) and scored for fluency by SmolLM2 itself (perplexity of the new tokens).
Writes OUT/report.json and OUT/report.md with the from-scratch numbers beside."""
import argparse
import json
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from catrans.attributes import AttributeSpec
from catrans.fit import fit_attribute
from catrans.pretrained import load_pretrained, load_pretrained_tokenizer
from catrans.transformer import Transformer
from experiments.reviews import data, estimation, steering
from experiments.reviews.runs import (CLASS_NAMES, FRACTIONS, FULL, TINY, load_run,
                                      steering_prompts)
from experiments.runs import decode_new

log = logging.getLogger("experiments")
METHODS = (("unsteered_cat", None), ("weighted", 3.0), ("weighted", 9.0), ("satisficing", None))


def judge_probs(judge, judge_params, judge_tok, texts: list[str], width: int) -> np.ndarray:
  """P_judge(fresh | text) for texts written with another tokenizer: re-encoded with the
  judge's own, cut to its training width."""
  ids = [[judge_tok.bos_id] + judge_tok.encode(t) + [judge_tok.eos_id] for t in texts]
  ids = [x[:width] for x in ids]
  arr, lens = data.right_pad(ids, width, judge_tok.pad_id)
  p = estimation.classifier_fresh(judge, judge_params, jnp.asarray(arr))
  return np.asarray(p)[np.arange(len(ids)), np.asarray(lens) - 1]


def run(reviews_root: str, out: str, *, limit: int, tiny: bool, seed: int = 0,
        command: str = "") -> dict:
  os.makedirs(out, exist_ok=True)
  t0 = time.perf_counter()
  sizes = TINY if tiny else FULL
  width = 24 if tiny else 64
  cfg, trunk_params = load_pretrained("smollm2", max_len=width + 1)
  tok = load_pretrained_tokenizer("smollm2")
  lm = Transformer(cfg)
  judge_trainer, judge_params = load_run(reviews_root, "judge", tiny)
  judge, judge_tok = judge_trainer.objective.model, judge_trainer.task.tokenizer
  task = judge_trainer.task   # the reviews (the same splits as the from-scratch runs)

  # 1. Fit the attribute on training reviews (cached features; trunk frozen).
  rng = np.random.default_rng(seed)
  train = list(task.source("train"))
  train = [train[i] for i in rng.permutation(len(train))[:limit]]
  spec = AttributeSpec("label", kind="categorical", num_classes=2)
  fit = fit_attribute(lm, trunk_params, spec, [int(r["label"]) for r in train],
                      texts=[r["text"] for r in train], tokenizer=tok, param="factorized",
                      max_len=width, epochs=4 if tiny else 30, batch_size=32,
                      learning_rate=3e-3, measure_speedup=False, seed=seed)
  model, params = fit.model, fit.params
  with open(os.path.join(out, "head.msgpack"), "wb") as f:   # branch + head only
    f.write(serialization.to_bytes({k: v for k, v in params.items() if k != "trunk"}))
  log.info("fit: held-out accuracy %.3f in %.0f s", fit.metrics["heldout"]["accuracy"],
           time.perf_counter() - t0)

  # 2. Estimation on the report's test reviews, at the same prefix fractions.
  reviews = data.test_reviews(task, sizes.num_reviews, seed=seed)
  labels = np.array([int(r["label"]) for r in reviews])
  tokens, num_content = data.encode_reviews(tok, [r["text"] for r in reviews], width)
  ends = data.prefix_ends(num_content, FRACTIONS)
  # In chunks: the one-pass estimate holds [rows, L, V, K] and V is 49K here.
  probs = np.concatenate([np.asarray(estimation.cat_prefix_probs(
      model, params, tokens[i:i + 8], ends[i:i + 8])) for i in range(0, len(tokens), 8)])
  est = {str(f): estimation.accuracy_and_log_loss(probs[:, i], labels)
         for i, f in enumerate(FRACTIONS)}

  # 3. Steering from the report's prompts, judged by its judge.
  by_class = {c: [r for r in reviews if int(r["label"]) == c] for c in (0, 1)}
  rows, samples = [], {}
  for target in (1, 0):
    texts, sets = steering_prompts(tok, by_class, target, sizes)
    ids = [[tok.bos_id] + tok.encode(x) for x in texts]
    prompts, lens = data.right_pad(ids, max(map(len, ids)), tok.pad_id)
    prompts, lens = jnp.asarray(prompts), jnp.asarray(lens)
    for mi, (method, strength) in enumerate(METHODS):
      decode = steering.make_decoder({"cat": model}, {"cat": params}, method, strength,
                                     max_new_tokens=sizes.max_new_tokens, eos_id=tok.eos_id,
                                     pad_id=tok.pad_id, attribute="label")
      new = decode(prompts, lens, target, jax.random.PRNGKey(100 * target + mi + seed))
      generated = [decode_new(tok, row) for row in np.asarray(new)]
      p_fresh = judge_probs(judge, judge_params, judge_tok,
                            [p + g for p, g in zip(texts, generated)], width)
      p_t = p_fresh if target == 1 else 1 - p_fresh
      nll, cnt = jax.device_get(steering.new_token_nll(
          lm, trunk_params, prompts, lens, new, width=prompts.shape[1] + sizes.max_new_tokens,
          eos_id=tok.eos_id, pad_id=tok.pad_id))
      sets_a = np.array(sets)
      for prompt_set in ("neutral", "opposite"):
        sel = sets_a == prompt_set
        rows.append(dict(method=method, strength=strength,
                         target=CLASS_NAMES[target], prompt_set=prompt_set,
                         **steering.summarize(p_t[sel], nll[sel], cnt[sel],
                                              [g for g, s in zip(generated, sel) if s])))
      samples.setdefault(f"{method}@{strength}", []).append(
          {"target": CLASS_NAMES[target], "prompt": texts[0],
           "generated": generated[0], "judge_p_target": float(p_t[0])})
      log.info("steering %s@%s -> %s: rate %.2f", method, strength, target,
               float(np.mean(p_t > 0.5)))

  scratch = _from_scratch(reviews_root)
  report = {"command": command, "limit": limit, "tiny": tiny, "width": width,
            "fit": {"heldout": fit.metrics["heldout"], "prior_at_start":
                    fit.metrics["prior_at_start"], "timing": fit.timing},
            "estimation": est, "steering": rows, "samples": samples,
            "from_scratch": scratch, "seconds": time.perf_counter() - t0}
  with open(os.path.join(out, "report.json"), "w") as f:
    json.dump(report, f, indent=1, default=float)
  _markdown(os.path.join(out, "report.md"), report)
  return report


def _from_scratch(root: str) -> dict:
  path = os.path.join(root, "report.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    r = json.load(f)
  rows = {}
  for row in r["steering"]["rows"]:
    name = {"cat_weighted": "weighted", "cat_satisficing": "satisficing"}.get(row["method"],
                                                                               row["method"])
    strength = row["strength"] if row["strength"] else None   # unsteered: 0.0 there, None here
    rows[f"{name}@{strength}|{row['target']}|{row['prompt_set']}"] = row["target_rate"]
  return {"estimation": {f: v["accuracy"] for f, v in
                         r["estimation"]["methods"]["cat"]["by_fraction"].items()},
          "steering": rows}


def _markdown(path, report):
  s = report["from_scratch"]
  lines = ["# SmolLM2-135M + fitted CAT head vs the from-scratch CAT (reviews)", "",
           f"`{report['command']}` ({report['seconds']:.0f} s). Head fitted on "
           f"{report['limit']} training reviews (cached frozen-trunk features, factorized "
           f"head); held-out accuracy {report['fit']['heldout']['accuracy']:.3f}.", "",
           "| P(fresh) from the first | SmolLM2 + head | from-scratch CAT |", "|---|---|---|"]
  for f, v in report["estimation"].items():
    lines.append(f"| {float(f):.0%} | {v['accuracy']:.3f} | "
                 f"{s.get('estimation', {}).get(f, float('nan')):.3f} |")
  lines += ["", "| steering | target | prompts | SmolLM2 rate | ppl (SmolLM2) | distinct-2 "
            "| from-scratch rate |", "|---|---|---|---|---|---|---|"]
  for r in report["steering"]:
    key = f"{r['method']}@{r['strength']}|{r['target']}|{r['prompt_set']}"
    scratch = s.get("steering", {}).get(key)
    lines.append(f"| {r['method']}" + ("" if r["strength"] is None else f" γ={r['strength']:g}")
                 + f" | {r['target']} | {r['prompt_set']} | {r['target_rate']:.2f} | "
                 f"{r['perplexity']:.1f} | {r['distinct_2'] or 0:.2f} | "
                 + ("-" if scratch is None else f"{scratch:.2f}") + " |")
  lines += ["", "The rate is the share of generations the judge (a classifier trained apart, "
            "on SentencePiece pieces) calls the target; perplexity is SmolLM2's own on the "
            "new tokens (the from-scratch report's perplexities are under its own small LM, "
            "so they are not comparable and are left out).", "", "Samples:"]
  for k, v in report["samples"].items():
    for x in v:
      lines.append(f"- {k} → {x['target']}: `{x['prompt']}` + `{x['generated']}` "
                   f"(judge {x['judge_p_target']:.2f})")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--reviews", required=True, help="root of experiments.reports.reviews_report")
  ap.add_argument("--out", required=True)
  ap.add_argument("--limit", type=int, default=600, help="training reviews for the fit")
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  run(a.reviews, a.out, limit=a.limit, tiny=a.tiny, seed=a.seed,
      command="python -m experiments.reports.smollm2_compare " + " ".join(
          sys.argv[1:] if argv is None else argv))
  print(open(os.path.join(a.out, "report.md")).read())


if __name__ == "__main__":
  main()
