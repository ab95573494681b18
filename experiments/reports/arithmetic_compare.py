"""SequenceMatch's arithmetic comparison: MLE vs BC (MLE + <bkspc>) vs SequenceMatch at
several noise rates, same model, data and steps; accuracy by generation on the test set.

  python -m experiments.reports.arithmetic_compare --root=DIR [--noise=0.1,0.25]
      [--methods=mle,bc,sm]
      [--seeds=0,1,2] [--protocol=scratch|finetune [--start_steps=4500] [--ft_lr=5e-4]]
      [--sm_flags=reward_backspace=false,regularize_noise=false --sm_tag=nbnr]
      [--flags=smollm2]

Each run is `experiments.train` with configs/arithmetic_seqmatch.py:METHOD in
DIR/NAME_pNOISE (DIR/sSEED/... with several seeds; --config.seed is the model init, data
order and rollouts, the questions stay the same), then `experiments.reports.arithmetic_eval`.
--protocol=finetune first trains one MLE run per seed (DIR/mle, the 'start' row), then every
method continues from it (METHOD,ft with init_from=run:DIR/mle, folders NAME_ft): all start
from the same model, as in the paper, and the reference is MLE fine-tuned as long (mle_ft).
Finished runs are skipped and killed ones resume, so rerunning the command continues the
comparison. Writes DIR/report.md (mean [min, max] over seeds, per-seed values, and in how
many seeds each variant beats MLE) and DIR/accuracy.png. MLE sees no noise, so it runs once
per seed (mle_p0, or mle_ft) and is drawn flat."""
import argparse
import json
import os
import sys
import time

import numpy as np

from experiments.compare_runs import add_field, run_logged, seed_root, spread, variants


def run_one(workdir, method, overrides, max_questions, tiny=False, steps=0):
  """Trains and evaluates one run unless its arithmetic_eval.json exists; returns that."""
  out = os.path.join(workdir, "arithmetic_eval.json")
  if not os.path.exists(out):
    cfg = f"experiments/configs/arithmetic_seqmatch.py:{method}" + (",tiny" if tiny else "")
    cmd = [sys.executable, "-m", "experiments.train", f"--config={cfg}",
           f"--workdir={workdir}", "--config.train.progress=false"] + overrides
    if steps:
      cmd.append(f"--config.train.steps={steps}")
    t0 = time.time()
    print(f"training {method} in {workdir} ...", flush=True)
    os.makedirs(workdir, exist_ok=True)
    run_logged(cmd, os.path.join(workdir, "stdout.log"))
    train_s = time.time() - t0
    run_logged([sys.executable, "-m", "experiments.reports.arithmetic_eval", f"--workdir={workdir}",
                f"--max_questions={max_questions}"], os.path.join(workdir, "stdout.log"))
    add_field(out, "train_seconds", train_s)
  with open(out) as f:
    return json.load(f)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--noise", default="0.1,0.25")
  ap.add_argument("--methods", default="mle,bc,sm")
  ap.add_argument("--seeds", default="0", help="--config.seed of every run")
  ap.add_argument("--alphas", default="",
                  help="SequenceMatch's chi2 alpha, one 'sm' variant each (default: config's)")
  ap.add_argument("--sm_flags", default="",
                  help="objective KEY=VALUE,... for every sm variant (e.g. reward_backspace=false)")
  ap.add_argument("--sm_tag", default="", help="names the sm variants' runs (with --sm_flags)")
  ap.add_argument("--protocol", default="scratch", choices=("scratch", "finetune"))
  ap.add_argument("--steps", type=int, default=0, help="override train.steps (0: config)")
  ap.add_argument("--start_steps", type=int, default=0,
                  help="finetune: train.steps of the MLE start (0: --steps or the config's)")
  ap.add_argument("--ft_lr", type=float, default=0.0,
                  help="finetune: the *_ft runs' peak learning rate (0: the ',ft' config's)")
  ap.add_argument("--flags", default="",
                  help="config variant flags for every run, e.g. 'smollm2' (the paper's protocol: "
                       "each method fine-tunes a pretrained LM; use the scratch protocol)")
  ap.add_argument("--tiny", action="store_true", help="seconds-long smoke settings")
  ap.add_argument("--max_questions", type=int, default=200)
  a = ap.parse_args(argv)
  if not a.noise:
    ap.error("--noise needs at least one p_noise (e.g. 0.1)")
  os.makedirs(a.root, exist_ok=True)
  seeds = [int(x) for x in a.seeds.split(",")]
  runs = variants(a.methods, a.alphas, a.noise, a.sm_flags, a.sm_tag)
  results = {}   # name -> (p_noise, one evaluation per seed)

  def record(seed, name, p_noise, r):
    results.setdefault(name, (p_noise, []))[1].append(r)
    print(f"seed {seed} {name:18s} accuracy {r['accuracy']:.3f} "
          f"backspace rate {r['backspace_rate']:.3f}", flush=True)

  no_noise = ["--config.objective.p_noise=0.0"]
  extra = "".join("," + f for f in a.flags.split(",") if f)
  ft_lr = [f"--config.optimizer.learning_rate={a.ft_lr}"] if a.ft_lr else []
  for seed in seeds:
    root = seed_root(a.root, seed, seeds)
    seed_arg = [f"--config.seed={seed}"]
    base = os.path.join(root, "mle")
    if a.protocol == "finetune":
      record(seed, "start", 0.0, run_one(base, "mle" + extra, no_noise + seed_arg,
                                          a.max_questions, a.tiny, a.start_steps or a.steps))
    for v in runs:
      noise = no_noise if v.method == "mle" else []
      if a.protocol == "finetune":
        # MLE trains without noise: mle_ft (mle_p0 from scratch, the layout of earlier roots).
        name = ("mle" if v.method == "mle" else v.name) + "_ft"
        r = run_one(os.path.join(root, name), v.method + ",ft" + extra,
                    v.overrides + noise + seed_arg + ft_lr + [f"--config.init_from=run:{base}"],
                    a.max_questions, a.tiny, a.steps)
      else:
        name = v.name + "_p0" if v.method == "mle" else v.name
        r = run_one(os.path.join(root, name), v.method + extra, v.overrides + noise + seed_arg,
                    a.max_questions, a.tiny, a.steps)
      record(seed, name, v.p_noise or 0.0, r)
  _report(a.root, results, seeds)
  return results


def _cell(values):
  """spread() of an optional field; '-' where no run recorded it (older evaluations)."""
  return "-" if np.all(np.isnan(values)) else spread(values)


def _report(root, results, seeds=(0,)):
  """results: name -> (p_noise, one evaluation per seed in `seeds` order)."""
  ref = "mle_ft" if "mle_ft" in results else "mle_p0"
  mle = results.get(ref, (0.0, None))[1]
  lines = ["# Arithmetic: MLE vs BC vs SequenceMatch", "",
           ("Fine-tuning protocol: every *_ft run continues from the same MLE run ('start'); "
            "the reference is mle_ft." if "start" in results else
            "Every run trains from scratch; the reference is mle_p0."), "",
           f"Seeds {', '.join(map(str, seeds))}; with several, a cell is the mean [min, max] "
           "over seeds. 'above MLE' counts the seeds where the variant's accuracy is higher "
           "than MLE's of the same seed.", "",
           "Greedy decoding; an erased token is banned at the state it was erased back to "
           "(arithmetic_eval). 'no ban': plain greedy, where a backspace is followed by the "
           "same token again.", "",
           "'no <bkspc>': the same model decoded with <bkspc> forbidden (what undoing buys).",
           "",
           "| run | p_noise | accuracy | per seed | above MLE | no ban | no <bkspc> | "
           "backspace rate | train s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, (noise, rs) in results.items():
    acc = [r["accuracy"] for r in rs]
    above = ("-" if mle is None or name in (ref, "start") else
             f"{sum(x > m['accuracy'] for x, m in zip(acc, mle))}/{len(acc)}")
    no_ban = [r.get("accuracy_without_ban", np.nan) for r in rs]
    no_bk = [r.get("accuracy_no_backspace", np.nan) for r in rs]
    lines.append(f"| {name} | {noise:g} | {spread(acc)} | {' '.join(f'{x:.3f}' for x in acc)} | "
                 f"{above} | {_cell(no_ban)} | {_cell(no_bk)} | "
                 f"{spread([r['backspace_rate'] for r in rs])} | "
                 f"{np.mean([r.get('train_seconds', np.nan) for r in rs]):.0f} |")
  lines += ["", "Samples (SequenceMatch, first noise level):", ""]
  sm = [rs[0] for name, (_, rs) in results.items() if name.startswith("sm")]
  for s in (sm[0]["samples"][:8] if sm else []):
    lines.append(f"- `{s['prompt']}` -> trace `{s['trace']}` (answer {s['answer']}, "
                 f"{'ok' if s['correct'] else 'wrong'})")
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  flat = ("mle", "mle_ft", "start")   # no noise: drawn as a level line
  noises = sorted({n for name, (n, _) in results.items()
                   if name.rsplit("_p", 1)[0] not in flat}) or [0.0]
  families = {}   # a variant's name without its _pNOISE: one line each
  for name, (n, rs) in results.items():
    families.setdefault(name.rsplit("_p", 1)[0], []).append((n, [r["accuracy"] for r in rs]))
  for family, pts in families.items():
    if family in flat:
      m = np.mean(pts[0][1])
      ax.plot(noises, [m] * len(noises), ":" if family == "start" else "--",
              label=f"{family} (no noise)")
      continue
    pts.sort()
    x = [n for n, _ in pts]
    mean = np.array([np.mean(v) for _, v in pts])
    err = np.array([[mean[i] - min(v), max(v) - mean[i]] for i, (_, v) in enumerate(pts)]).T
    ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=family)
  ax.set_xlabel("p_noise")
  ax.set_ylabel("test accuracy")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(root, "accuracy.png"), dpi=100)
  print(f"report: {os.path.join(root, 'report.md')}")


if __name__ == "__main__":
  main()
