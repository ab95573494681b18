"""Why CAT does or does not beat Director at equal perplexity on reviews (issue 25): three
measurements on the reviews runs that steer_sweep compares.

  python -m experiments.reports.steer_why --workdir=/work/runs/reviews --out=DIR
      [--pairs=CAT_GAMMA:DIRECTOR_GAMMA,...] [--seeds=0,1,2] [--steps=0,4,...]

1. heads: each guide's own estimate on the labelled test reviews at 25/50/75/100% of the
   review (as reviews_head_diag reads it): q read at the token that came, and V(s) one token
   earlier; accuracy, log-loss, ECE, AUC. Director's sigmoid per token vs CAT's block-branch
   softmax per candidate, read the same way.
2. tokens: on states that neither guide produced (unsteered samples of the plain LM from
   steer_sweep's prompts, every step in --steps), the plain LM's top 20 candidates v are
   scored by each guide (CAT's and Director's P(target | s, v), FUDGE's classifier) and by the
   judge (P_judge(target | s + v), the classifier that scores steer_sweep's success). Per
   state: Spearman correlation of each guide with the judge over the 20 candidates, how often
   the guide's favourite is the judge's favourite, and the spread (std) of the guide's
   log P(target | s, v) over the candidates: what one unit of gamma moves.
3. along: generations of CAT and Director at matched strengths (--pairs, from the
   equal-perplexity sweep), top_k 20, the sweep's prompts and sampling seeds: the judge's
   success after k new tokens, and the plain LM's perplexity of new tokens 1-10, 11-20, 21-30,
   31-40: where along the generation the methods part and where each spends its perplexity;
   VADER's success and ties, and the share of generations holding a VADER lexicon word of the
   target's polarity (and of the other), with the most frequent such words; and the steering
   guide's own P(target | s, v) and its spread over its LM's top 20 after k new tokens.
Writes OUT/why.json and OUT/why.md."""
import argparse
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from catrans.baselines import sample_lm
from catrans.inference import counterfactuals
from experiments.reviews import data as rdata
from experiments.reviews.estimation import cat_q_and_value, classifier_fresh, token_nll
from experiments.reviews.runs import FULL, load_run
from experiments.reviews.runs import steering_prompt_ids as prompts_for
from experiments.reviews.probes import binary_metrics
from experiments.reviews.steering import generation_texts, make_decoder
from experiments.runs import until_eos

log = logging.getLogger("experiments")
GUIDES = ("cat", "director", "clf")
TOP = 20
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
ALONG = (0, 5, 10, 20, 30, 40)
PUSH = (0, 5, 10, 20, 30)
BUCKETS = ((1, 10), (11, 20), (21, 30), (31, 40))


def head_quality(model, params, tok, reviews, width: int) -> dict:
  """q (at the token read) and V(s) one token earlier, at 25/50/75/100% of each review."""
  labels = np.array([int(r["label"]) for r in reviews])
  tokens, n = rdata.encode_reviews(tok, [r["text"] for r in reviews], width)
  ends = rdata.prefix_ends(n, FRACTIONS)
  q, v = cat_q_and_value(model, params, tokens)
  i = np.arange(len(ends))
  return {"q": {str(f): binary_metrics(q[i, ends[:, k]], labels)
                for k, f in enumerate(FRACTIONS)},
          "value": {str(f): binary_metrics(v[i, ends[:, k] - 1], labels)
                    for k, f in enumerate(FRACTIONS)}}


def spearman_rows(a_SxK, b_SxK) -> np.ndarray:
  """Spearman correlation of each row of a with the same row of b [S] (average ranks for
  ties; NaN for a row that is constant in either)."""
  from scipy.stats import rankdata
  ra, rb = rankdata(a_SxK, axis=1), rankdata(b_SxK, axis=1)
  ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
  den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)


def token_agreement(models, params, tok, task, steps, seed: int = 0) -> dict:
  scores = {g: [] for g in (*GUIDES, "judge")}
  for target in (1, 0):
    p, lens, _ = prompts_for(tok, task, target)
    new = sample_lm(models["lm"], params["lm"], p, lens, jax.random.PRNGKey(seed),
                    max_new_tokens=FULL.max_new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id)
    seq, text_len, _ = rdata.join(p, lens, new, eos_id=tok.eos_id, pad_id=tok.pad_id)
    seq = np.asarray(seq)
    logits = np.asarray(models["lm"].apply({"params": params["lm"]}, jnp.asarray(seq)).logits)
    for t in steps:
      pos = np.asarray(lens) + t                      # where the candidate goes
      ok = pos < np.minimum(np.asarray(text_len), seq.shape[1])
      rows = np.flatnonzero(ok)
      if not rows.size:
        continue
      cand = np.argsort(-logits[rows, pos[rows] - 1], -1)[:, :TOP]           # [S, 20]
      for g in ("cat", "director"):
        q = counterfactuals(models[g], params[g], jnp.asarray(seq[rows]),
                            jnp.asarray(pos[rows]), attribute="label",
                            alternatives_BxK=jnp.asarray(cand), target=target).q
        scores[g].append(np.log(np.clip(np.asarray(q, np.float64), 1e-9, 1.0)))
      # Classifiers: one sequence per candidate, read at the candidate's row.
      flat = np.repeat(seq[rows], TOP, 0)
      r = np.arange(flat.shape[0])
      flat[r, np.repeat(pos[rows], TOP)] = cand.reshape(-1)
      for g in ("clf", "judge"):
        pf = np.asarray(classifier_fresh(models[g], params[g], jnp.asarray(flat)))
        pf = pf[r, np.repeat(pos[rows], TOP)].reshape(-1, TOP)
        scores[g].append(np.log(np.clip(pf if target == 1 else 1 - pf, 1e-9, 1.0)))
  s = {g: np.concatenate(v) for g, v in scores.items()}
  out = {"states": int(s["judge"].shape[0]), "candidates": TOP, "steps": list(steps)}
  for g in GUIDES:
    rho = spearman_rows(s[g], s["judge"])
    same = np.argmax(s[g], 1) == np.argmax(s["judge"], 1)
    out[g] = {"spearman_with_judge": float(np.nanmean(rho)),
              "spearman_se": float(np.nanstd(rho) / math.sqrt(np.isfinite(rho).sum())),
              "top1_agrees_with_judge": float(same.mean()),
              "logp_spread": float(np.mean(np.std(s[g], 1))),
              "p_target_mean": float(np.mean(np.exp(s[g])))}
  out["judge"] = {"logp_spread": float(np.mean(np.std(s["judge"], 1))),
                  "p_target_mean": float(np.mean(np.exp(s["judge"])))}
  out["chance_top1"] = 1.0 / TOP
  return out


def lexicon_words(texts, lexicon: dict, sign: int) -> list[list[str]]:
  """Per text, its words that VADER's lexicon scores with the given sign (+1 / -1)."""
  out = []
  for t in texts:
    words = [w.strip(".,!?;:\"'()").lower() for w in t.split()]
    out.append([w for w in words if lexicon.get(w, 0.0) * sign > 0])
  return out


def along_generation(models, params, tok, task, pairs, seeds, width: int) -> list[dict]:
  from experiments.reviews.judges import LexiconJudge
  vader = LexiconJudge("vader")
  lexicon = vader._analyzer.lexicon
  out = []
  for cg, dg in pairs:
    for method, g in (("weighted", cg), ("director", dg)):
      hits = {k: [] for k in ALONG}
      nll = {b: [0.0, 0] for b in BUCKETS}
      vhits, vties, with_word, with_opposite, counts = [], [], [], [], {}
      guide = {k: ([], []) for k in PUSH}    # the steering guide's own P(target), push
      run = "cat" if method == "weighted" else "director"
      for target in (1, 0):
        p, lens, _ = prompts_for(tok, task, target)
        decode = make_decoder(models, params, method, g, max_new_tokens=FULL.max_new_tokens,
                              eos_id=tok.eos_id, pad_id=tok.pad_id, top_k=TOP)
        for s in seeds:
          new = decode(p, lens, target, jax.random.PRNGKey(s))
          seq, text_len, total = rdata.join(p, lens, new, eos_id=tok.eos_id, pad_id=tok.pad_id)
          seq = np.asarray(seq)[:, :width]
          text_len = np.minimum(np.asarray(text_len), width)
          pf = np.asarray(classifier_fresh(models["judge"], params["judge"], jnp.asarray(seq)))
          pt = pf if target == 1 else 1 - pf
          for k in ALONG:
            at = np.minimum(np.asarray(lens) + k, text_len) - 1
            hits[k] += (pt[np.arange(len(at)), at] > 0.5).tolist()
          for k in PUSH:    # the state after k new tokens, the guide's own top 20 candidates
            pos = np.asarray(lens) + k
            rows = np.flatnonzero(pos < text_len)
            if rows.size:
              q = np.asarray(counterfactuals(
                  models[run], params[run], jnp.asarray(seq[rows]), jnp.asarray(pos[rows]),
                  attribute="label", top_k=TOP, target=target).q, np.float64)
              guide[k][0].extend(q.mean(1).tolist())
              guide[k][1].extend(np.std(np.log(np.clip(q, 1e-9, 1.0)), 1).tolist())
          texts = generation_texts(tok, p, lens, new, width=width, eos_id=tok.eos_id,
                                   pad_id=tok.pad_id)
          pv = vader.p_fresh(texts)
          vhits += ((pv if target == 1 else 1 - pv) > 0.5).tolist()
          vties += (pv == 0.5).tolist()
          gens = [tok.decode(until_eos(tok, row)) for row in np.asarray(new)]
          sign = 1 if target == 1 else -1
          own, opposite = lexicon_words(gens, lexicon, sign), lexicon_words(gens, lexicon, -sign)
          with_word += [bool(w) for w in own]
          with_opposite += [bool(w) for w in opposite]
          for ws in own:
            for w in ws:
              counts[(target, w)] = counts.get((target, w), 0) + 1
          tn = np.asarray(token_nll(models["lm"], params["lm"], jnp.asarray(seq)))
          end = np.minimum(np.asarray(total), width)
          for b in BUCKETS:     # target index j + 1 is new token number j + 2 - lens
            for i in range(len(seq)):
              lo, hi = int(lens[i]) + b[0] - 1, min(int(lens[i]) + b[1], int(end[i]))
              if hi > lo:
                nll[b][0] += float(tn[i, lo - 1:hi - 1].sum())
                nll[b][1] += hi - lo
      out.append({"method": method, "gamma": g, "pair": [cg, dg],
                  "success_after": {str(k): float(np.mean(v)) for k, v in hits.items()},
                  "guide_p_target": {str(k): float(np.mean(v[0])) for k, v in guide.items()},
                  "guide_push": {str(k): float(np.mean(v[1])) for k, v in guide.items()},
                  "n": len(hits[0]), "vader_success": float(np.mean(vhits)),
                  "vader_ties": float(np.mean(vties)),
                  "with_target_lexicon_word": float(np.mean(with_word)),
                  "with_opposite_lexicon_word": float(np.mean(with_opposite)),
                  "top_target_words": {name: [w for (t, w), _ in sorted(
                      ((k, c) for k, c in counts.items() if k[0] == t),
                      key=lambda kc: -kc[1])[:8]] for t, name in ((1, "fresh"), (0, "rotten"))},
                  "perplexity_of_tokens": {f"{a}-{b}": (math.exp(s / c) if c else None)
                                           for (a, b), (s, c) in nll.items()}})
  return out


def markdown(r: dict) -> str:
  lines = ["# Why CAT vs Director at equal perplexity (reviews)", "",
           f"`{r['command']}` — {r['wall_time_s']:.0f} s on {r['devices']}", "",
           "## 1. Each guide's estimate on the labelled test reviews", "",
           "| guide | read | acc 25/50/75/100% | log-loss 100% | ECE 100% | AUC 100% |",
           "|---|---|---|---|---|---|"]
  for g, ev in r["heads"].items():
    for read in ("q", "value"):
      m = ev[read]
      lines.append(f"| {g} | {read} | " + "/".join(f"{m[f]['accuracy']:.3f}" for f in m)
                   + f" | {m['1.0']['log_loss']:.3f} | {m['1.0']['ece']:.3f} | "
                   f"{m['1.0']['auc']:.3f} |")
  t = r["tokens"]
  lines += ["", f"## 2. Per-token preferences against the judge's ({t['states']} states of "
            f"unsteered plain-LM samples, steps {t['steps']}, the LM's top {t['candidates']})",
            "", "| guide | Spearman with judge (mean over states, ±se) | favourite = judge's "
            f"(chance {t['chance_top1']:.2f}) | std of log P(target) over candidates | "
            "mean P(target) |", "|---|---|---|---|---|"]
  for g in GUIDES:
    v = t[g]
    lines.append(f"| {g} | {v['spearman_with_judge']:.3f} ± {v['spearman_se']:.3f} | "
                 f"{v['top1_agrees_with_judge']:.3f} | {v['logp_spread']:.3f} | "
                 f"{v['p_target_mean']:.3f} |")
  lines.append(f"| judge | - | - | {t['judge']['logp_spread']:.3f} | "
               f"{t['judge']['p_target_mean']:.3f} |")
  lines += ["", "## 3. Along the generation (judge success after k new tokens; plain-LM "
            "perplexity of new tokens by position)", "",
            "| method | gamma | n | " + " | ".join(f"k={k}" for k in ALONG) + " | "
            + " | ".join(f"ppl {a}-{b}" for a, b in BUCKETS) + " | VADER success | VADER ties | "
            "with a target-polarity lexicon word | with an opposite one |",
            "|---|---|---|" + "---|" * (len(ALONG) + len(BUCKETS) + 4)]
  for a in r["along"]:
    lines.append(f"| {a['method']} | {a['gamma']:g} | {a['n']} | "
                 + " | ".join(f"{a['success_after'][str(k)]:.2f}" for k in ALONG) + " | "
                 + " | ".join("-" if v is None else f"{v:.1f}"
                              for v in a["perplexity_of_tokens"].values())
                 + f" | {a['vader_success']:.2f} | {a['vader_ties']:.2f} | "
                 f"{a['with_target_lexicon_word']:.2f} | {a['with_opposite_lexicon_word']:.2f} |")
  lines += ["", "The steering guide's own view along its generation, after k new tokens: its mean "
            "P(target | s, v) over its LM's top 20 candidates, and the push (std over them of "
            "log P(target | s, v): what gamma multiplies)", "",
            "| method | gamma | " + " | ".join(f"P k={k}" for k in PUSH) + " | "
            + " | ".join(f"push k={k}" for k in PUSH) + " |",
            "|---|---|" + "---|" * (2 * len(PUSH))]
  for a in r["along"]:
    lines.append(f"| {a['method']} | {a['gamma']:g} | "
                 + " | ".join(f"{a['guide_p_target'][str(k)]:.2f}" for k in PUSH) + " | "
                 + " | ".join(f"{a['guide_push'][str(k)]:.3f}" for k in PUSH) + " |")
  lines += ["", "Most frequent target-polarity VADER lexicon words in the generations:", ""]
  for a in r["along"]:
    lines.append(f"- {a['method']} gamma {a['gamma']:g}: "
                 + "; ".join(f"to {t}: {', '.join(ws)}" for t, ws in a["top_target_words"].items()))
  return "\n".join(lines + [""])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True, help="the reviews runs (steer_sweep's)")
  ap.add_argument("--out", default=None)
  ap.add_argument("--pairs", default="", help="CAT_GAMMA:DIRECTOR_GAMMA,... (matched ppl)")
  ap.add_argument("--seeds", default="0", help="sampling seeds of part 3")
  ap.add_argument("--steps", default="0,8,16,24,32")
  ap.add_argument("--reviews", type=int, default=0, help="test reviews for part 1 (0: all)")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  start = time.perf_counter()
  out = os.path.abspath(a.out or a.workdir)
  os.makedirs(out, exist_ok=True)
  pairs = [tuple(float(x) for x in p.split(":")) for p in a.pairs.split(",") if p]
  if any(len(p) != 2 for p in pairs):
    raise ValueError(f"--pairs wants CAT_GAMMA:DIRECTOR_GAMMA,..., got {a.pairs!r}")
  trainers, params = {}, {}
  for run in ("cat", "director", "lm", "clf", "judge"):
    trainers[run], params[run] = load_run(a.workdir, run, False)
  models = {k: t.objective.model for k, t in trainers.items()}
  task, tok = trainers["cat"].task, trainers["cat"].task.tokenizer
  width = int(trainers["cat"].config.data.seq_len)
  reviews = rdata.test_reviews(task, a.reviews or 10 ** 9, 0)
  heads = {g: head_quality(models[g], params[g], tok, reviews, width)
           for g in ("cat", "director")}
  log.info("heads done")
  tokens = token_agreement(models, params, tok, task, [int(s) for s in a.steps.split(",")])
  log.info("tokens done")
  along = along_generation(models, params, tok, task, pairs,
                           [int(s) for s in a.seeds.split(",")], width)
  report = {"command": "python -m experiments.reports.steer_why " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "heads": heads, "tokens": tokens, "along": along, "reviews": len(reviews)}
  report["wall_time_s"] = time.perf_counter() - start
  with open(os.path.join(out, "why.json"), "w") as f:
    json.dump(report, f, indent=1)
  md = markdown(report)
  with open(os.path.join(out, "why.md"), "w") as f:
    f.write(md)
  print(md)
  return report


if __name__ == "__main__":
  main()
