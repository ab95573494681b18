"""CAT on Rotten Tomatoes reviews: estimation from partial text, steering, perplexity, credit.

  python -m experiments.reports.reviews_report --root=DIR [--tiny]

Trains (in this process) whichever of the five runs of experiments/configs/reviews_cat.py
(cat, lm, director, clf, judge) has no final checkpoint under DIR/<run>, restores all five
and writes DIR/report.md, DIR/report.json and DIR/*.png:

 1. P(fresh | first 25/50/75/100% of a test review): CAT's q_t (one pass), the prefix
    classifier 'clf' (one pass) and Monte Carlo (plain-LM completions scored by 'clf', N=16
    and N=64, on a subset), with accuracy, log-loss and wall time.
 2. Steering towards fresh and rotten from neutral openings and from openings of reviews of
    the other class: CAT weighted (several gamma), CAT satisficing, Director, FUDGE, and
    unsteered sampling; judged by 'judge' (never the steering model) and by the VADER
    lexicon (never trained on these reviews), each judge's own accuracy on labelled test
    reviews beside it, with the plain LM's perplexity of the new tokens and distinct-1/2.
 3. Perplexity (and bits per byte) of CAT and the plain LM on the test reviews.
 4. Plots, including the per-token credit of one review.
--tiny uses the ',tiny' configs and small subsets (a smoke test; numbers meaningless)."""
import argparse
import dataclasses
import json
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from catrans.inference import estimate
from experiments.configs.reviews_cat import RUNS
from experiments.reviews import data, estimation, judges, plots, steering
from experiments.reviews.runs import (CLASS_NAMES, FRACTIONS, FULL, TINY, load_run,
                                      steering_prompts)
from experiments.runs import decode_new

log = logging.getLogger("experiments")


# --- 1. estimation -----------------------------------------------------------------------------
def run_estimation(models, params, tok, reviews, *, width, sizes, rng) -> dict:
  texts = [r["text"] for r in reviews]
  labels = np.array([int(r["label"]) for r in reviews])
  tokens, num_content = data.encode_reviews(tok, texts, width)
  ends = data.prefix_ends(num_content, FRACTIONS)
  probs, methods = {}, {}
  for name, fn, run in (("cat", estimation.cat_prefix_probs, "cat"),
                        ("clf", estimation.clf_prefix_probs, "clf")):
    fn(models[run], params[run], tokens, ends)  # compile outside the timing
    p, sec = estimation.timed(fn, models[run], params[run], tokens, ends)
    probs[name] = np.asarray(p)
    methods[name] = {"num_reviews": len(reviews), "seconds_all_fractions": sec,
                     "ms_per_prefix": 1e3 * sec / ends.size,
                     "note": "one forward pass gives every prefix; compile excluded"}
    log.info("estimation: %s %.3f s for %d prefixes", name, sec, ends.size)
  scorer = estimation.make_clf_scorer(models["clf"], params["clf"], width=width,
                                      eos_id=tok.eos_id, pad_id=tok.pad_id)
  for n_samples, n_reviews in sizes.mc_reviews:
    name, n_reviews = f"mc{n_samples}", min(n_reviews, len(reviews))
    p = np.zeros((n_reviews, len(FRACTIONS)), np.float32)
    seconds, sampled_seconds, sampled_calls = [], [], []
    for fi, f in enumerate(FRACTIONS):
      p[:, fi], sec = estimation.monte_carlo_probs(
          models["lm"], params["lm"], scorer, tokens[:n_reviews], ends[:n_reviews, fi],
          jax.random.fold_in(rng, 1000 * n_samples + fi), num_samples=n_samples,
          rows_per_call=sizes.rows_per_call, eos_id=tok.eos_id, pad_id=tok.pad_id,
          desc=f"{name} @{f:.0%}")
      seconds += sec
      if f < 1.0:  # a whole review samples nothing: keep it out of the sampling cost
        sampled_calls.append(sec)
    steady = estimation.steady_seconds_per_call([s for c in sampled_calls for s in c])
    per_call = max(1, sizes.rows_per_call // n_samples)
    probs[name] = p
    methods[name] = {"num_reviews": n_reviews, "num_samples": n_samples,
                     "seconds_all_fractions": float(np.sum(seconds)),
                     "ms_per_prefix": 1e3 * steady / per_call,
                     "note": (f"{per_call} prefixes x {n_samples} samples per call, "
                              f"{width - 1} sampled tokens each; the total includes compiling; "
                              "ms_per_prefix is the steady state of the sampled fractions; "
                              "at 100% nothing is sampled (= the classifier)")}
    log.info("estimation: %s %.1f s (%d reviews x %d fractions)", name,
             methods[name]["seconds_all_fractions"], n_reviews, len(FRACTIONS))
  for name, m in methods.items():
    n = m["num_reviews"]
    m["by_fraction"] = {str(f): estimation.accuracy_and_log_loss(probs[name][:, i], labels[:n])
                        for i, f in enumerate(FRACTIONS)}
  # CAT and the classifier on exactly the Monte Carlo subset, for a like-for-like row.
  n_sub = max(n for _, n in sizes.mc_reviews)
  n_sub = min(n_sub, len(reviews))
  subset = {name: {str(f): estimation.accuracy_and_log_loss(probs[name][:n_sub, i],
                                                            labels[:n_sub])
                   for i, f in enumerate(FRACTIONS)} for name in ("cat", "clf")}
  return {"fractions": list(FRACTIONS), "methods": methods, "on_mc_subset": subset,
          "mc_subset_reviews": n_sub, "mc_scorer": "clf",
          "p_fresh": {k: {str(f): v[:, i].tolist() for i, f in enumerate(FRACTIONS)}
                      for k, v in probs.items()},
          "reviews": [{"text": t, "label": int(y), "tokens_read": int(n)}
                      for t, y, n in zip(texts, labels, num_content)],
          "prefix_ends": ends.tolist()}


# --- 2. steering -------------------------------------------------------------------------------
def run_steering(models, params, tok, reviews_by_class, *, width, sizes, rng) -> dict:
  decoders = steering.methods(models, params, gammas=sizes.gammas,
                              max_new_tokens=sizes.max_new_tokens, eos_id=tok.eos_id,
                              pad_id=tok.pad_id)
  rows, samples, timing = [], {}, {}
  vader = steering.text_judge_fn(judges.LexiconJudge("vader"), tok, width=width,
                                 eos_id=tok.eos_id, pad_id=tok.pad_id)
  prompt_sets = {t: steering_prompts(tok, reviews_by_class, t, sizes) for t in (1, 0)}
  ids = {t: [[tok.bos_id] + tok.encode(x) for x in texts]
         for t, (texts, _) in prompt_sets.items()}
  width_p = max(len(x) for v in ids.values() for x in v)  # one prompt shape for both targets
  for target in (1, 0):
    texts, sets = prompt_sets[target]
    prompts, lens = data.right_pad(ids[target], width_p, tok.pad_id)
    prompts, lens = jnp.asarray(prompts), jnp.asarray(lens)
    sets = np.array(sets)
    for mi, m in enumerate(tqdm(decoders, desc=f"steer to {CLASS_NAMES[target]}",
                                leave=False)):
      new, sec = estimation.timed(m.decode, prompts, lens, target,
                                  jax.random.fold_in(rng, 100 * target + mi))
      key = f"{m.name}" + ("" if m.strength is None else f"@{m.strength:g}")
      timing[key] = timing.get(key, 0.0) + sec
      p_t, nll, cnt = jax.device_get(steering.judge_and_fluency(
          models["judge"], params["judge"], models["lm"], params["lm"], prompts, lens, new,
          target, width=width, eos_id=tok.eos_id, pad_id=tok.pad_id))
      p_vader = vader(prompts, lens, new, target)
      generated = [decode_new(tok, row) for row in np.asarray(new)]
      for prompt_set in ("neutral", "opposite"):
        sel = sets == prompt_set
        rows.append(dict(method=m.name, strength=m.strength, target=CLASS_NAMES[target],
                         prompt_set=prompt_set,
                         **steering.summarize(p_t[sel], nll[sel], cnt[sel],
                                              [g for g, s in zip(generated, sel) if s]),
                         target_rate_vader=float(np.mean(p_vader[sel] > 0.5))))
      samples.setdefault(key, []).extend(
          {"target": CLASS_NAMES[target], "prompt": texts[i], "generated": generated[i],
           "judge_p_target": float(p_t[i])} for i in (0, len(texts) - 1))
      log.info("steering: %s -> %s in %.1f s: target rate %.2f", key, CLASS_NAMES[target],
               sec, float(np.mean(p_t > 0.5)))
  return {"rows": rows, "samples": samples, "seconds_incl_compile": timing,
          "judge": "judge", "independent_judge": "vader", "perplexity_model": "lm",
          "rows_per_condition": {"neutral": sizes.openings * sizes.samples_per_opening,
                                 "opposite": sizes.opposite_prompts},
          "max_new_tokens": sizes.max_new_tokens}


# --- 4. credit ---------------------------------------------------------------------------------
def credit_example(model, params, tok, reviews, probs_100, *, width) -> dict:
  """The per-token credit of one review: a short one that CAT gets right most confidently."""
  best, best_margin = 0, -1.0
  for i, (r, p) in enumerate(zip(reviews, probs_100)):
    n = len(r["text"].encode())
    margin = (p - 0.5) * (1 if int(r["label"]) == 1 else -1)
    if 40 <= n <= 120 and r["text"].isascii() and margin > best_margin:
      best, best_margin = i, margin
  r = reviews[best]
  ids = [tok.bos_id] + tok.encode(r["text"])[:width - 1]
  est = jax.device_get(estimate(model, params, jnp.asarray([ids]), attribute="label",
                                target=1))
  return {"text": tok.decode(ids[1:]), "label": CLASS_NAMES[int(r["label"])],
          "pieces": [tok.decode([i]) for i in ids[1:]],
          "q": est.q[0, 1:].tolist(), "advantage": est.advantage[0, 1:].tolist(),
          "difference": est.difference[0, 1:].tolist()}


# --- report ------------------------------------------------------------------------------------
def write_markdown(path, report: dict):
  e, s, pp = report["estimation"], report["steering"], report["perplexity"]
  lines = ["# CAT on Rotten Tomatoes reviews", "",
           f"`{report['command']}` — wall time {report['wall_time_s'] / 60:.1f} min "
           f"(training {report['train_time_s'] / 60:.1f} min of it)"
           + (" — **tiny: smoke-test sizes, numbers meaningless**" if report["tiny"] else ""),
           "", "SentencePiece (2048 pieces) models, see experiments/configs/reviews_cat.py "
           "(parameters and steps in report.json). Plots: "
           + ", ".join(f"`{p}`" for p in report["plots"]), "",
           "## 1. Sentiment from partial reviews",
           "", f"P(fresh | first f of a test review) > 0.5 vs the label. CAT and 'clf' on "
           f"{e['methods']['cat']['num_reviews']} reviews; Monte Carlo (plain-LM completions "
           "scored by 'clf') is costly, so it runs on the first "
           + ", ".join(f"{m['num_reviews']} (N={m['num_samples']})"
                       for k, m in e["methods"].items() if k.startswith("mc"))
           + " of them. At 100% nothing is left to sample, so Monte Carlo equals 'clf'.", "",
           "| method | reviews | " + " | ".join(f"acc@{f:.0%}" for f in e["fractions"])
           + " | " + " | ".join(f"logloss@{f:.0%}" for f in e["fractions"])
           + " | time (all fractions) | ms / prefix |",
           "|---|---|" + "---|" * (2 * len(e["fractions"]) + 2)]
  for name, m in e["methods"].items():
    bf = m["by_fraction"]
    lines.append(f"| {name} | {m['num_reviews']} | "
                 + " | ".join(f"{bf[str(f)]['accuracy']:.3f}" for f in e["fractions"]) + " | "
                 + " | ".join(f"{bf[str(f)]['log_loss']:.3f}" for f in e["fractions"])
                 + f" | {m['seconds_all_fractions']:.2f} s | {m['ms_per_prefix']:.3g} |")
  for name, bf in e["on_mc_subset"].items():
    lines.append(f"| {name} (MC subset) | {e['mc_subset_reviews']} | "
                 + " | ".join(f"{bf[str(f)]['accuracy']:.3f}" for f in e["fractions"]) + " | "
                 + " | ".join(f"{bf[str(f)]['log_loss']:.3f}" for f in e["fractions"])
                 + " | | |")
  lines += ["", "CAT and 'clf' times exclude compilation (one warm-up call); Monte Carlo "
            "totals include it, its ms / prefix is the steady state.", "",
            "## 2. Steering", "",
            f"Targets fresh and rotten; prompts: {s['rows_per_condition']['neutral']} neutral "
            f"openings and {s['rows_per_condition']['opposite']} openings of reviews of the "
            f"other class per target; {s['max_new_tokens']} new tokens at most, temperature 1. "
            "Target rate: the 'judge' classifier (trained apart from every steering model) "
            "reads prompt + generation and says P(target) > 0.5; 'vader' is the same rate by the "
            "VADER lexicon (vaderSentiment, never trained on these reviews; ties count as "
            "neither class). Judges' own accuracy on the labelled test reviews: "
            + "; ".join(f"{k} {q['accuracy']:.3f} (AUC {q['auc']:.3f})"
                        for k, q in report["judge_quality"].items()) + ". "
            "Perplexity: the plain LM on "
            "the new tokens (EOS included) given the prompt. Averaged over both targets (per-target rows in "
            "report.json).", "",
            "| method | gamma | target rate (neutral) | target rate (opposite) | vader (neutral) | "
            "vader (opposite) | perplexity | distinct-1 | distinct-2 | "
            "decode time (2 targets, incl. compile) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  keys = []
  for r in s["rows"]:
    k = (r["method"], r["strength"])
    if k not in keys:
      keys.append(k)
  for method, g in keys:
    rs = [r for r in s["rows"] if (r["method"], r["strength"]) == (method, g)]
    def mean(key, rows=rs):
      vals = [r[key] for r in rows if r[key] is not None]
      return float(np.mean(vals)) if vals else float("nan")
    rate = lambda ps, k="target_rate": float(np.mean([r[k] for r in rs
                                                       if r["prompt_set"] == ps]))
    t = s["seconds_incl_compile"][method + ("" if g is None else f"@{g:g}")]
    lines.append(f"| {method} | {'' if g is None else f'{g:g}'} | {rate('neutral'):.2f} | "
                 f"{rate('opposite'):.2f} | {rate('neutral', 'target_rate_vader'):.2f} | "
                 f"{rate('opposite', 'target_rate_vader'):.2f} | {mean('perplexity'):.2f} | "
                 f"{mean('distinct_1'):.3f} | {mean('distinct_2'):.3f} | {t:.1f} s |")
  lines += ["", "Samples (first neutral and last opposite prompt of each target):", ""]
  for key, ss in s["samples"].items():
    for x in ss[:4]:
      # repr: generations may hold newlines, backticks or undecodable bytes.
      lines.append(f"- {key} -> {x['target']}: {x['prompt']!r} + {x['generated']!r} "
                   f"(judge {x['judge_p_target']:.2f})")
  lines += ["", "## 3. Perplexity on the test reviews", "",
            "| model | nats / token | perplexity (per token) | bits / byte | tokens | bytes |",
            "|---|---|---|---|---|---|"]
  for name, m in pp.items():
    lines.append(f"| {name} | {m['nats_per_token']:.4f} | {m['perplexity']:.3f} | "
                 f"{m['bits_per_byte']:.4f} | {m['tokens']} | {m['bytes']} |")
  lines += ["", f"{pp['lm']['reviews']} test reviews, each BOS + text + EOS cut to the training "
            "length; the EOS counts as a token and as one byte.", "", "## 4. Credit assignment",
            "", f"`credit_heatmap.png`: advantage credit per token of one {report['credit']['label']} "
            f"test review: \"{report['credit']['text']}\"", ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  return make_report(a.root, tiny=a.tiny, seed=a.seed,
                     command="python -m experiments.reports.reviews_report " + " ".join(
                         sys.argv[1:] if argv is None else argv))


def make_report(root: str, *, tiny: bool = False, seed: int = 0, command: str = "") -> dict:
  start = time.perf_counter()
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  sizes = TINY if tiny else FULL
  trainers, params = {}, {}
  for run in RUNS:
    trainers[run], params[run] = load_run(root, run, tiny)
  train_time = time.perf_counter() - start
  models = {k: t.objective.model for k, t in trainers.items()}
  task, tok = trainers["cat"].task, trainers["cat"].task.tokenizer
  width = int(trainers["cat"].config.data.seq_len)
  rng = jax.random.PRNGKey(seed)

  log.info("1/4 estimation from partial reviews")
  reviews = data.test_reviews(task, sizes.num_reviews, seed)
  est = run_estimation(models, params, tok, reviews, width=width, sizes=sizes,
                       rng=jax.random.fold_in(rng, 1))
  log.info("2/4 steering")
  others = data.test_reviews(task, 10 ** 9, seed + 1)
  by_class = {c: [r for r in others if int(r["label"]) == c] for c in (0, 1)}
  steer = run_steering(models, params, tok, by_class, width=width, sizes=sizes,
                       rng=jax.random.fold_in(rng, 2))
  heldout = data.test_reviews(task, sizes.ppl_reviews or 10 ** 9, seed)
  texts, labels = [r["text"] for r in heldout], [int(r["label"]) for r in heldout]
  quality = {"judge": judges.judge_quality(judges.ClassifierJudge(
                 models["judge"], params["judge"], tok, width=width), texts, labels),
             "vader": judges.judge_quality(judges.LexiconJudge("vader"), texts, labels)}
  log.info("3/4 perplexity")
  ppl_texts = [r["text"] for r in data.test_reviews(task, sizes.ppl_reviews or 10 ** 9, seed)]
  ppl = {run: estimation.perplexity_on(models[run], params[run], tok, ppl_texts, width=width)
         for run in ("cat", "lm")}
  log.info("4/4 credit and plots")
  credit = credit_example(models["cat"], params["cat"], tok, reviews,
                          est["p_fresh"]["cat"]["1.0"], width=width)
  pngs = ["estimate_accuracy.png", "steering_strength.png", "credit_heatmap.png"]
  plots.estimate_accuracy(os.path.join(root, pngs[0]), est)
  plots.steering_strength(os.path.join(root, pngs[1]), steer["rows"])
  plots.credit_heatmap(os.path.join(root, pngs[2]), credit["pieces"], credit["advantage"],
                       credit["difference"], credit["q"], credit["label"])
  report = {"command": command, "tiny": tiny, "seed": seed, "sizes": dataclasses.asdict(sizes),
            "runs": {r: {"workdir": trainers[r].workdir, "steps": trainers[r].steps,
                         "parameters": trainers[r].num_params} for r in RUNS},
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "estimation": est, "steering": steer, "perplexity": ppl, "credit": credit,
            "judge_quality": quality,
            "plots": pngs, "train_time_s": train_time}
  report["wall_time_s"] = time.perf_counter() - start
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  write_markdown(os.path.join(root, "report.md"), report)
  log.info("wrote %s/report.md (%.1f min)", root, report["wall_time_s"] / 60)
  return report


if __name__ == "__main__":
  main()
