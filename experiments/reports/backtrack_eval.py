"""Does attribute-aware backtracking (catrans.backtrack) raise steering success at equal
fluency? CAT weighted (several gamma) / satisficing / unsteered, each without backtracking and
with a forced <bkspc> at several drop thresholds, on the review task.

  python -m experiments.reports.backtrack_eval --root=DIR --out=OUT [--tiny] [--gammas=1,3]
      [--thresholds=0.05,0.15] [--seeds=2] [--max_retries=N]

DIR holds the runs of experiments/configs/reviews_cat.py (cat, lm, judge are read; missing
ones are trained, as experiments.reports.reviews_report does). Prompts: the report's neutral
openings and openings of reviews of the other class, steered to fresh and to rotten. Success: the
'judge' classifier (trained apart from CAT) says P(target | prompt + generation) > 0.5;
fluency: perplexity of the kept new tokens under the plain LM; distinct-1/2 over words.
Without backtracking the same decoder runs with threshold None (== plain steered sampling).
Writes OUT/backtrack.json and OUT/backtrack.md."""
import argparse
import json
import logging
import os
import sys
import time

import jax
import numpy as np

from catrans import backtrack as bt
from catrans import steerers as st
from catrans.steering import SteeringConfig, Target
from experiments.reviews import data
from experiments.reviews.runs import CLASS_NAMES, FULL, TINY, load_run, steering_prompts
from experiments.reviews.steering import judge_and_fluency, summarize
from experiments.runs import decode_new

log = logging.getLogger("experiments")


def policies(model, target: int, gammas, attribute: str = "label"):
  """(name, strength, policy) of the compared steering rules towards class `target`."""
  out = [("unsteered", None, bt.SamplePolicy())]
  out += [("cat_weighted", g, bt.SamplePolicy(st.target(model, attribute, target, g)))
          for g in gammas]
  out.append(("cat_satisficing", None, SteeringConfig(
      rule="satisficing", targets=(Target(attribute, target),))))
  return out


def run(models, params, tok, prompt_sets, *, width, max_new_tokens, gammas, thresholds,
        seeds, max_retries=None, action_factor=3) -> list[dict]:
  rows = []
  for target in (1, 0):
    ids, sets = prompt_sets[target]
    prompts, lens = data.right_pad(ids, max(len(x) for x in ids), tok.pad_id)
    sets = np.array(sets)
    for name, strength, policy in policies(models["cat"], target, gammas):
      for th in (None,) + tuple(thresholds):
        rule = bt.BacktrackRule("label", target, threshold=th, max_retries=max_retries)
        agg = {"p": [], "nll": [], "cnt": [], "texts": [], "sets": [], "bk": [], "unres": [],
               "sec": 0.0}
        for seed in range(seeds):
          start = time.perf_counter()
          d = jax.block_until_ready(bt.backtrack_decode(
              models["cat"], params["cat"], prompts, lens,
              jax.random.PRNGKey(1000 * seed + 10 * target + 1), policy=policy, rule=rule,
              max_new_tokens=max_new_tokens, max_actions=action_factor * max_new_tokens,
              eos_id=tok.eos_id, pad_id=tok.pad_id))
          agg["sec"] += time.perf_counter() - start
          p_t, nll, cnt = jax.device_get(judge_and_fluency(
              models["judge"], params["judge"], models["lm"], params["lm"], prompts, lens,
              d.new_tokens, target, width=width, eos_id=tok.eos_id, pad_id=tok.pad_id))
          agg["p"].append(p_t), agg["nll"].append(nll), agg["cnt"].append(cnt)
          agg["texts"] += [decode_new(tok, r) for r in np.asarray(d.new_tokens)]
          agg["sets"].append(sets)
          agg["bk"].append(np.asarray(d.num_backspaces))
          agg["unres"].append(np.asarray(d.unresolved))
        cat = lambda k: np.concatenate(agg[k])
        all_sets = cat("sets")
        row = dict(method=name, strength=strength, threshold=th, target=CLASS_NAMES[target],
                   **summarize(cat("p"), cat("nll"), cat("cnt"), agg["texts"]),
                   backspaces_per_row=float(cat("bk").mean()),
                   unresolved_rate=float(cat("unres").mean()), seconds_incl_compile=agg["sec"])
        for ps in ("neutral", "opposite"):
          row[f"target_rate_{ps}"] = float(np.mean(cat("p")[all_sets == ps] > 0.5))
        rows.append(row)
        log.info("%s@%s th=%s -> %s: rate %.2f ppl %.1f bk/row %.1f (%.1f s)", name, strength,
                 th, CLASS_NAMES[target], row["target_rate"], row["perplexity"],
                 row["backspaces_per_row"], agg["sec"])
  return rows


def table(rows) -> list[dict]:
  """Rows averaged over the two targets, one per (method, strength, threshold)."""
  keys = list(dict.fromkeys((r["method"], r["strength"], r["threshold"]) for r in rows))
  out = []
  for m, s, th in keys:
    rs = [r for r in rows if (r["method"], r["strength"], r["threshold"]) == (m, s, th)]
    mean = lambda k: float(np.mean([r[k] for r in rs if r[k] is not None])) if any(
        r[k] is not None for r in rs) else None
    out.append(dict(method=m, strength=s, threshold=th, n=sum(r["n"] for r in rs),
                    **{k: mean(k) for k in ("target_rate", "target_rate_neutral",
                                            "target_rate_opposite", "judge_p_target",
                                            "perplexity", "distinct_1", "distinct_2",
                                            "backspaces_per_row", "unresolved_rate")},
                    seconds=float(sum(r["seconds_incl_compile"] for r in rs))))
  return out


def markdown(report) -> str:
  f = lambda v, spec=".2f": "" if v is None else format(v, spec)
  lines = [f"# Attribute-aware backtracking on the review task", "",
           f"`{report['command']}`" + (" — **tiny: smoke-test sizes, numbers meaningless**"
                                       if report["tiny"] else ""), "",
           f"Runs: {report['root']} (cat, lm, judge). {report['rows_per_config']} generations "
           f"per row (both targets, {report['seeds']} seed(s)), {report['max_new_tokens']} new "
           f"tokens at most, at most {report['max_actions']} actions, temperature 1. "
           "Threshold: the drop of CAT's P(target) after a token that forces <bkspc> "
           f"('-' = no backtracking); at most {report['max_retries']} forced undos per state "
           "(None = unbounded). Target rate: the judge's P(target) > 0.5. Perplexity: the "
           "plain LM on the kept new tokens.", "",
           "| method | gamma | threshold | target rate | neutral | opposite | judge P(target) | "
           "perplexity | distinct-1 | distinct-2 | <bkspc> / row | unresolved | time (s) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in report["table"]:
    lines.append(
        f"| {r['method']} | {f(r['strength'], 'g')} | "
        f"{'-' if r['threshold'] is None else f(r['threshold'], 'g')} | "
        f"{f(r['target_rate'])} | {f(r['target_rate_neutral'])} | "
        f"{f(r['target_rate_opposite'])} | {f(r['judge_p_target'], '.3f')} | "
        f"{f(r['perplexity'], '.1f')} | {f(r['distinct_1'], '.3f')} | "
        f"{f(r['distinct_2'], '.3f')} | {f(r['backspaces_per_row'], '.1f')} | "
        f"{f(r['unresolved_rate'])} | {r['seconds']:.1f} |")
  return "\n".join(lines) + "\n"


def evaluate(root: str, out: str, *, tiny=False, gammas=(1.0, 3.0), thresholds=(0.05, 0.15),
             seeds=1, max_retries=None, command="") -> dict:
  sizes = TINY if tiny else FULL
  start = time.perf_counter()
  trainers, params = {}, {}
  for r in ("cat", "lm", "judge"):
    trainers[r], params[r] = load_run(root, r, tiny)
  models = {k: t.objective.model for k, t in trainers.items()}
  task, tok = trainers["cat"].task, trainers["cat"].task.tokenizer
  width = int(trainers["cat"].config.data.seq_len)
  others = data.test_reviews(task, 10 ** 9, 1)
  by_class = {c: [r for r in others if int(r["label"]) == c] for c in (0, 1)}
  prompt_sets = {}
  for t in (0, 1):
    texts, sets = steering_prompts(tok, by_class, t, sizes)
    prompt_sets[t] = ([[tok.bos_id] + tok.encode(x) for x in texts], sets)
  rows = run(models, params, tok, prompt_sets, width=width, max_new_tokens=sizes.max_new_tokens,
             gammas=gammas, thresholds=thresholds, seeds=seeds, max_retries=max_retries)
  report = {"command": command, "tiny": tiny, "root": os.path.abspath(root), "seeds": seeds,
            "gammas": list(gammas), "thresholds": list(thresholds), "max_retries": max_retries,
            "max_new_tokens": sizes.max_new_tokens, "max_actions": 3 * sizes.max_new_tokens,
            "rows_per_config": seeds * sum(len(v[0]) for v in prompt_sets.values()),
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "rows": rows, "table": table(rows), "wall_time_s": time.perf_counter() - start}
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "backtrack.json"), "w") as fh:
    json.dump(report, fh, indent=1)
  with open(os.path.join(out, "backtrack.md"), "w") as fh:
    fh.write(markdown(report))
  log.info("wrote %s/backtrack.md (%.1f min)", out, report["wall_time_s"] / 60)
  return report


def _floats(s):
  return tuple(float(x) for x in s.split(",") if x)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True, help="reviews runs (cat, lm, judge)")
  ap.add_argument("--out", default=None, help="where backtrack.json/.md go (default: root)")
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--gammas", type=_floats, default=(1.0, 3.0))
  ap.add_argument("--thresholds", type=_floats, default=(0.05, 0.15))
  ap.add_argument("--seeds", type=int, default=1)
  ap.add_argument("--max_retries", type=int, default=None,
                  help="forced undos per state before a token is kept unchecked")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  return evaluate(a.root, a.out or a.root, tiny=a.tiny, gammas=a.gammas,
                  thresholds=a.thresholds, seeds=a.seeds, max_retries=a.max_retries,
                  command="python -m experiments.reports.backtrack_eval " + " ".join(
                      sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  main()
