"""Steering sweep: attribute success against fluency and diversity over a grid of methods and
strengths, with the diagnosis to read first.

  python -m experiments.reports.steer_sweep --workdir=DIR [--out=DIR2] [--tiny]
      [--gammas=1,3,9] [--thresholds=0.6,0.8,0.95]
      [--methods=weighted,satisficing,greedy_attr,director,fudge]
  python -m experiments.reports.steer_sweep --workdir=DIR --quick   # self-contained, < 1 min CPU
  # equal-perplexity comparison (issue 25): own strengths per method, sampling seeds
  python -m experiments.reports.steer_sweep --workdir=DIR --top_k=20 --seeds=0,1,2
      --methods=weighted,director,fudge --cat_gammas=.. --director_gammas=.. --fudge_gammas=..

Default: the reviews runs of experiments/configs/reviews_cat.py under DIR (cat, lm, director,
clf, judge; trained first when missing, as experiments.reports.reviews_report does,
',tiny' with --tiny); prompts are neutral openings and openings of reviews of the other class;
targets fresh and rotten; success = the separate 'judge' classifier says the target, and
beside it the independent VADER lexicon (never trained on these reviews), each judge's own
accuracy / AUC on the labelled test reviews in the report.
--quick: Polya-urn bits (experiments/tiny_lm): a tiny LM trained here, CAT and Director heads
fitted on its frozen trunk (catrans.fit), FUDGE's classifier a linear probe on the same
trunk; success = the exact attribute (count of ones >= majority); numbers are a smoke test.

Methods: weighted (CAT, gamma), satisficing (CAT, threshold), greedy_attr (CAT), director
(gamma), fudge (gamma), and unsteered sampling. Fluency: perplexity of the new tokens under
the unsteered LM; diversity: distinct-1/2 over the generated token ids.
Every success and perplexity carries a 95% bootstrap interval over generations; CAT,
Director and FUDGE (each with >= 2 strengths) are compared at shared perplexities
(experiments/reviews/equal_ppl.py), next to the paper's figures.
Writes OUT/sweep.json, OUT/sweep.md, OUT/success_vs_perplexity[_vader].png,
OUT/success_vs_distinct.png (and with --quick OUT/reliability_cat.png); OUT defaults to DIR."""
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

from catrans import diagnose
from experiments import figures
from experiments.reviews import data as rdata
from experiments.reviews import equal_ppl
from experiments.reviews.sweep_setup import Setup, quick_setup, reviews_setup
from experiments.reviews.estimation import timed
from experiments.reviews.steering import distinct_n_units, make_decoder, new_token_nll
from experiments.runs import until_eos

log = logging.getLogger("experiments")
METHODS = ("weighted", "satisficing", "greedy_attr", "director", "fudge")
# SPEC section 2 (reported): Amazon reviews, a 3-star prefix steered to 1 / 5 stars.
PAPER = {"weighted": {"success": (0.64, 0.77), "perplexity": (45.9, 44.0)},
         "director": {"success": (0.58, 0.65), "perplexity": (46.8, 48.2)}}
CURVES = ("weighted", "director", "fudge")


# --- the sweep ---------------------------------------------------------------------------------
def grid(methods, gammas, thresholds, unsteered,
         strengths: dict | None = None) -> list[tuple[str, float | None]]:
  """The cells; strengths: method -> its own gammas (default `gammas`), so that the methods'
  perplexities can be made to overlap."""
  out = [(u, None) for u in unsteered]
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"unknown method {m!r}; choose from {METHODS}")
    if m in ("weighted", "director", "fudge"):
      out += [(m, float(g)) for g in (strengths or {}).get(m) or gammas]
    elif m == "satisficing":
      out += [(m, float(t)) for t in thresholds]
    else:
      out.append((m, None))
  return out


def run_sweep(setup: Setup, cells, targets, rng, top_k: int = 0, seed: int = 0) -> list[dict]:
  tok, lm = setup.tokenizer, setup.models["lm"]
  rows = []
  for target in targets:
    ids, sets = setup.prompts[target]
    p, lens = rdata.right_pad(ids, max(len(x) for x in ids), tok.pad_id)
    p, lens, sets = jnp.asarray(p), jnp.asarray(lens), np.asarray(sets)
    for ci, (method, strength) in enumerate(cells):
      decode = make_decoder(setup.models, setup.params, method, strength,
                            max_new_tokens=setup.max_new_tokens, eos_id=tok.eos_id,
                            pad_id=tok.pad_id, top_k=top_k)
      new, sec = timed(decode, p, lens, target, jax.random.fold_in(rng, 1000 * target + ci))
      p_t = np.asarray(setup.judge(p, lens, new, target), np.float64)
      p_extra = {j: np.asarray(fn(p, lens, new, target), np.float64)
                 for j, fn in setup.extra_judges.items()}
      nll, cnt = (np.asarray(a) for a in new_token_nll(
          lm, setup.params["lm"], p, lens, new, width=setup.width, eos_id=tok.eos_id,
          pad_id=tok.pad_id))
      gens = [until_eos(tok, row) for row in np.asarray(new)]
      for s in dict.fromkeys(sets.tolist()):
        sel = sets == s
        g = [x for x, k in zip(gens, sel) if k]
        rows.append({"method": method, "strength": strength,
                     "target": setup.class_names[target], "prompt_set": s,
                     "success": float(np.mean(p_t[sel] > 0.5)),
                     "judge_p_target": float(np.mean(p_t[sel])),
                     "nll_sum": float(nll[sel].sum()), "tokens": int(cnt[sel].sum()),
                     "perplexity": math.exp(nll[sel].sum() / max(cnt[sel].sum(), 1)),
                     "distinct_1": distinct_n_units(g, 1), "distinct_2": distinct_n_units(g, 2),
                     "n": int(sel.sum()), "seconds_incl_compile": sec,
                     "example": tok.decode(g[0]), "seed": seed,
                     # per generation, for bootstrap intervals and equal-perplexity curves
                     "hits": {setup.judge_name: (p_t[sel] > 0.5).astype(int).tolist(),
                              **{j: (v[sel] > 0.5).astype(int).tolist()
                                 for j, v in p_extra.items()}},
                     "gen_nll": nll[sel].tolist(), "gen_tokens": cnt[sel].tolist(),
                     **{f"success_{j}": float(np.mean(v[sel] > 0.5))
                        for j, v in p_extra.items()}})
      log.info("%s@%s -> %s: success %.2f in %.1f s", method, strength,
               setup.class_names[target], float(np.mean(p_t > 0.5)), sec)
  return rows


def cells_of(rows: list[dict]) -> dict:
  """(method, strength) -> every generation's hits per judge, NLL and token count, pooled over
  targets, prompt sets and seeds (equal_ppl's cells)."""
  cells = {}
  for r in rows:
    c = cells.setdefault((r["method"], r["strength"]), {"hits": {}, "nll": [], "tokens": []})
    for j, h in r["hits"].items():
      c["hits"].setdefault(j, []).extend(h)
    c["nll"] += r["gen_nll"]
    c["tokens"] += r["gen_tokens"]
  return cells


def table(rows: list[dict], replicates: int = 1000) -> list[dict]:
  """One row per (method, strength): success averaged over targets and prompt sets (and
  seeds), perplexity pooled over all their new tokens, distinct-n averaged; with 95% bootstrap
  intervals over generations for success (every judge) and perplexity."""
  out = []
  cells = cells_of(rows)
  judges = list(rows[0]["hits"]) if rows else []
  boot = {j: equal_ppl.bootstrap_cells(cells, j, replicates=replicates) for j in judges}
  pct = lambda x: [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]
  for key in dict.fromkeys((r["method"], r["strength"]) for r in rows):
    rs = [r for r in rows if (r["method"], r["strength"]) == key]
    mean = lambda k: (float(np.mean([r[k] for r in rs if r.get(k) is not None]))
                      if any(r.get(k) is not None for r in rs) else None)
    ci = {}
    for i, j in enumerate(judges):
      name = "success" if i == 0 else f"success_{j}"
      ci[name] = mean(name)
      ci[f"{name}_ci"] = pct(boot[j][key][0])
    if judges:
      ci["perplexity_ci"] = pct(boot[judges[0]][key][1])
    out.append({"method": key[0], "strength": key[1], **ci,
                "judge_p_target": mean("judge_p_target"),
                "perplexity": math.exp(sum(r["nll_sum"] for r in rs)
                                       / max(sum(r["tokens"] for r in rs), 1)),
                "distinct_1": mean("distinct_1"), "distinct_2": mean("distinct_2"),
                "n": sum(r["n"] for r in rs), "seeds": sorted({r.get("seed", 0) for r in rs}),
                "seconds_incl_compile": sum(r["seconds_incl_compile"] for r in rs)})
  return out


def cat_vs_director(tab: list[dict]) -> dict:
  """The published trade-off, checked: for every Director strength, CAT weighted at the
  strength whose perplexity is closest; does CAT succeed more often there?"""
  cat = [r for r in tab if r["method"] == "weighted"]
  pairs = []
  for d in (r for r in tab if r["method"] == "director"):
    if not cat:
      break
    c = min(cat, key=lambda r: abs(math.log(r["perplexity"]) - math.log(d["perplexity"])))
    pairs.append({"director_gamma": d["strength"], "director_success": d["success"],
                  "director_perplexity": d["perplexity"], "cat_gamma": c["strength"],
                  "cat_success": c["success"], "cat_perplexity": c["perplexity"],
                  "cat_higher": c["success"] > d["success"]})
  return {"pairs": pairs, "cat_higher": sum(p["cat_higher"] for p in pairs),
          "of": len(pairs)}


def fmt(v, spec=".3f"):
  return "" if v is None else format(v, spec)


def markdown(report: dict) -> str:
  lines = [f"# Steering sweep: {report['info']['task']}", "",
           f"`{report['command']}` — {report['wall_time_s']:.0f} s on {report['devices']}"
           + (" — **quick: smoke-test sizes**" if report["quick"] else ""), "",
           "Success: share of generations the judge gives the target class (mean over targets "
           f"{', '.join(report['targets'])} and prompt sets); perplexity of the new tokens under "
           "the unsteered LM (pooled); distinct-n over generated token ids.", "",
           f"Seeds (sampling): {report['seeds']}; [a, b]: 95% bootstrap interval over "
           "generations.", ""]
  extra = report.get("extra_judges", [])
  quality = report["info"].get("judge_quality", {})
  for j, q in quality.items():
    origin = ("independent: never trained on these reviews" if q["independent"]
              else "trained here on the reviews train split")
    lines.append(f"- judge `{j}` ({origin}): "
                 f"on {q['reviews']} labelled test reviews accuracy {q['accuracy']:.3f}, AUC "
                 f"{fmt(q['auc'])}, ties (P exactly 0.5, counted wrong) {q['ties']:.3f}")
  ci = lambda r, k: (f" [{r[k + '_ci'][0]:.2f}, {r[k + '_ci'][1]:.2f}]"
                     if r.get(k + "_ci") else "")
  lines += ["", "| method | strength | success (" + report["judge_name"] + ") | "
            + "".join(f"success ({j}) | " for j in extra)
            + "judge P(target) | perplexity | distinct-1 | distinct-2 | n | "
            "decode s (incl. compile) |", "|---|---|---|" + "---|" * len(extra)
            + "---|---|---|---|---|---|"]
  for r in report["table"]:
    lines.append(f"| {r['method']} | {fmt(r['strength'], 'g')} | "
                 f"{fmt(r['success'], '.2f')}{ci(r, 'success')} | "
                 + "".join(f"{fmt(r.get('success_' + j), '.2f')}{ci(r, 'success_' + j)} | "
                           for j in extra)
                 + f"{fmt(r['judge_p_target'])} | {fmt(r['perplexity'], '.2f')}"
                 f"{ci(r, 'perplexity')} | "
                 f"{fmt(r['distinct_1'])} | {fmt(r['distinct_2'])} | {r['n']} | "
                 f"{r['seconds_incl_compile']:.1f} |")
  lines += ["", "fudge, satisficing and greedy_attr choose among the LM's top-20 candidates, "
            "which alone lowers perplexity and distinct-n; weighted, director and "
            "unsteered_cat sample " + (f"among their top {report['top_k']} scores"
                                        if report["top_k"] else "the whole reweighted "
                                        "distribution (--top_k=20 compares like with like)")
            + "; unsteered_lm always samples the LM's whole distribution."]
  cd = report["cat_vs_director"]
  lines += ["", f"CAT weighted vs Director at the closest perplexity: CAT succeeds more often in "
            f"{cd['cat_higher']} of {cd['of']} Director strengths."]
  for p in cd["pairs"]:
    lines.append(f"- Director gamma {p['director_gamma']:g}: success {p['director_success']:.2f} "
                 f"at ppl {p['director_perplexity']:.2f}; CAT gamma {p['cat_gamma']:g}: "
                 f"{p['cat_success']:.2f} at ppl {p['cat_perplexity']:.2f}")
  lines += equal_ppl.markdown_lines(report.get("equal_perplexity"), PAPER)
  lines += ["", "## Diagnosis", ""]
  for t, d in report["diagnosis"]["targets"].items():
    lines.append(f"- target {t}: the base model's own samples are the target with mean "
                 f"P {d['share']:.3f} ({d['hit_rate']:.3f} scored > 0.5, {d['num_samples']} "
                 f"samples)" + (f" — **warning**: {d['message']}" if d["rare"] else ""))
  for m in report["diagnosis"]["vocabulary"] or ["guides and model share one vocabulary"]:
    lines.append(f"- vocabulary: {m}")
  lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in report["plots"]), ""]
  return "\n".join(lines)


def diagnosis(setup: Setup, targets, rng, threshold: float, num_samples: int) -> dict:
  tok = setup.tokenizer
  out = {}
  for t in targets:
    d = diagnose.target_share(setup.models["cat"], setup.params["cat"],
                              jax.random.fold_in(rng, t), attribute="label", target=t,
                              prompt_ids=[tok.bos_id], num_samples=num_samples,
                              max_new_tokens=setup.max_new_tokens, eos_id=tok.eos_id,
                              pad_id=tok.pad_id, threshold=threshold)
    out[setup.class_names[t]] = {"share": d.share, "hit_rate": d.hit_rate, "rare": d.rare,
                                 "num_samples": d.num_samples, "message": d.message,
                                 "threshold": threshold}
  vocab = []
  for guide in ("clf", "judge", "director"):
    if guide in setup.models:
      vocab += diagnose.check_guide_vocab(setup.models["cat"], setup.models[guide],
                                          model_name="cat", guide_name=guide)
  return {"targets": out, "vocabulary": vocab}


def sweep(workdir: str, *, out: str | None = None, quick: bool = False, tiny: bool = False,
          methods=METHODS, gammas=None, thresholds=None, targets=None, seed: int = 0,
          rare_threshold: float = 0.05, diagnosis_samples: int = 128, top_k: int = 0,
          command: str = "", seeds=None, strengths: dict | None = None,
          cat_workdir: str | None = None, shared_points: int = 3) -> dict:
  start = time.perf_counter()
  workdir = os.path.abspath(workdir)
  out = os.path.abspath(out or workdir)
  os.makedirs(workdir, exist_ok=True)
  os.makedirs(out, exist_ok=True)
  gammas = gammas or ((1.0, 4.0) if quick else (1.0, 3.0, 9.0))
  thresholds = thresholds or ((0.8,) if quick else (0.6, 0.8, 0.95))
  targets = tuple(targets or ((1,) if quick else (1, 0)))
  seeds = tuple(seeds or (seed,))
  setup = (quick_setup(out, seed) if quick else
           reviews_setup(workdir, tiny, seed, cat_workdir=cat_workdir))
  rng = jax.random.PRNGKey(seed)
  diag = diagnosis(setup, targets, jax.random.fold_in(rng, 7), rare_threshold,
                   diagnosis_samples)
  cells = grid(methods, gammas, thresholds, setup.unsteered, strengths)
  rows = []
  for s in seeds:   # sampling seeds: the models are the same, the generations differ
    rows += run_sweep(setup, cells, targets, jax.random.fold_in(jax.random.PRNGKey(s), 1),
                      top_k, seed=s)
  tab = table(rows)
  judge_names = [setup.judge_name, *setup.extra_judges]
  curves = {m: [c[1] for c in cells if c[0] == m] for m in CURVES}
  curves = {m: v for m, v in curves.items() if len(v) >= 2}
  eq = (equal_ppl.compare(cells_of(rows), curves, judge_names, num_points=shared_points)
        if len(curves) >= 2 else None)
  plots = ["success_vs_perplexity.png", "success_vs_distinct.png"]
  figures.tradeoff(os.path.join(out, plots[0]), tab, "perplexity", log_x=True,
                   xlabel="perplexity of the new tokens under the unsteered LM (lower: more "
                          "fluent)", title="Attribute success vs fluency (labels: strength)")
  for j in setup.extra_judges:
    plots.append(f"success_vs_perplexity_{j}.png")
    figures.tradeoff(os.path.join(out, plots[-1]), tab, "perplexity", f"success_{j}",
                     log_x=True, ylabel=f"attribute success (judge: {j})",
                     xlabel="perplexity of the new tokens under the unsteered LM",
                     title=f"Success judged by {j} vs fluency (labels: strength)")
  figures.tradeoff(os.path.join(out, plots[1]), tab, "distinct_2",
                   xlabel="distinct-2 over generated tokens (higher: more diverse)",
                   title="Attribute success vs diversity (labels: strength)")
  if quick:
    plots.append("reliability_cat.png")
  report = {"command": command, "quick": quick, "tiny": tiny, "seed": seed, "top_k": top_k,
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "targets": [setup.class_names[t] for t in targets],
            "grid": [list(c) for c in cells], "info": setup.info, "diagnosis": diag,
            "rows": rows, "table": tab, "cat_vs_director": cat_vs_director(tab),
            "plots": plots, "seeds": list(seeds), "judge_name": setup.judge_name,
            "extra_judges": list(setup.extra_judges), "equal_perplexity": eq}
  report["wall_time_s"] = time.perf_counter() - start
  with open(os.path.join(out, "sweep.json"), "w") as f:
    json.dump(report, f, indent=1)
  md = markdown(report)
  with open(os.path.join(out, "sweep.md"), "w") as f:
    f.write(md)
  print(md)
  return report


def _floats(s):
  return tuple(float(x) for x in s.split(",")) if s else None


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True, help="the runs (trained here when missing)")
  ap.add_argument("--out", default=None, help="where the table and plots go (default: workdir)")
  ap.add_argument("--quick", action="store_true", help="tiny bits models trained here")
  ap.add_argument("--tiny", action="store_true", help="the reviews runs' ',tiny' configs")
  ap.add_argument("--methods", default=",".join(METHODS))
  ap.add_argument("--gammas", default="")
  ap.add_argument("--thresholds", default="")
  ap.add_argument("--targets", default="", help="class ids, e.g. 1,0")
  ap.add_argument("--rare_threshold", type=float, default=0.05)
  ap.add_argument("--top_k", type=int, default=0,
                  help="weighted / director / unsteered_cat sample among their top_k scores "
                       "(0: all); FUDGE, satisficing and greedy_attr use the LM's top 20")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--seeds", default="", help="sampling seeds, e.g. 0,1,2 (default: --seed)")
  for m in ("cat", "director", "fudge"):
    ap.add_argument(f"--{m}_gammas", default="", help=f"{m}'s own strengths (default --gammas)")
  ap.add_argument("--cat_workdir", default="",
                  help="use this CAT run instead of WORKDIR/cat (reviews; same tokenizer)")
  ap.add_argument("--shared_points", type=int, default=3,
                  help="perplexities at which the methods are compared")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  return sweep(a.workdir, out=a.out, quick=a.quick, tiny=a.tiny,
               methods=tuple(m for m in a.methods.split(",") if m),
               gammas=_floats(a.gammas), thresholds=_floats(a.thresholds),
               targets=tuple(int(t) for t in a.targets.split(",")) if a.targets else None,
               seed=a.seed, rare_threshold=a.rare_threshold, top_k=a.top_k,
               seeds=tuple(int(x) for x in a.seeds.split(",")) if a.seeds else None,
               strengths={"weighted": _floats(a.cat_gammas),
                          "director": _floats(a.director_gammas),
                          "fudge": _floats(a.fudge_gammas)},
               cat_workdir=a.cat_workdir or None, shared_points=a.shared_points,
               command="python -m experiments.reports.steer_sweep " + " ".join(
                   sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
  main()
