"""SequenceMatch's arithmetic comparison: MLE vs BC (MLE + <bkspc>) vs SequenceMatch at
several noise rates, same model, data and steps; accuracy by generation on the test set.

  python -m experiments.arithmetic_compare --root=DIR [--noise=0.1,0.25] [--methods=mle,bc,sm]

Each run is `experiments.train` with configs/arithmetic_seqmatch.py:METHOD in
DIR/METHOD_pNOISE, then `experiments.arithmetic_eval`. Finished runs are skipped and killed
ones resume, so rerunning the command continues the comparison. Writes DIR/report.md and
DIR/accuracy.png. (MLE sees no noise, so it runs once and is drawn flat.)"""
import argparse
import json
import os
import subprocess
import sys
import time


def _run(cmd, log_path):
  with open(log_path, "a") as log:
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def _add_field(json_path, key, value):
  """Adds key: value to the JSON object in json_path (e.g. an evaluation's training time)."""
  with open(json_path) as f:
    r = json.load(f)
  r[key] = value
  with open(json_path, "w") as f:
    json.dump(r, f, indent=1)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--noise", default="0.1,0.25")
  ap.add_argument("--methods", default="mle,bc,sm")
  ap.add_argument("--steps", type=int, default=0, help="override train.steps (0: config)")
  ap.add_argument("--tiny", action="store_true", help="seconds-long smoke settings")
  ap.add_argument("--max_questions", type=int, default=200)
  a = ap.parse_args()
  os.makedirs(a.root, exist_ok=True)
  results = []
  for method in a.methods.split(","):
    for noise in ([0.0] if method == "mle" else [float(x) for x in a.noise.split(",")]):
      workdir = os.path.join(a.root, f"{method}_p{noise:g}")
      out = os.path.join(workdir, "arithmetic_eval.json")
      if not os.path.exists(out):
        cfg = f"experiments/configs/arithmetic_seqmatch.py:{method}" + (",tiny" if a.tiny else "")
        cmd = [sys.executable, "-m", "experiments.train", f"--config={cfg}",
               f"--workdir={workdir}", f"--config.objective.p_noise={noise}",
               "--config.train.progress=false"]
        if a.steps:
          cmd.append(f"--config.train.steps={a.steps}")
        t0 = time.time()
        print(f"training {method} p_noise={noise} in {workdir} ...", flush=True)
        os.makedirs(workdir, exist_ok=True)
        _run(cmd, os.path.join(workdir, "stdout.log"))
        train_s = time.time() - t0
        _run([sys.executable, "-m", "experiments.arithmetic_eval", f"--workdir={workdir}",
              f"--max_questions={a.max_questions}"], os.path.join(workdir, "stdout.log"))
        _add_field(out, "train_seconds", train_s)
      with open(out) as f:
        r = json.load(f)
      results.append((method, noise, r))
      print(f"{method:4s} p_noise={noise:<5g} accuracy {r['accuracy']:.3f} "
            f"backspace rate {r['backspace_rate']:.3f}", flush=True)
  _report(a.root, results)


def _report(root, results):
  lines = ["# Arithmetic: MLE vs BC vs SequenceMatch", "",
           "| method | p_noise | accuracy | backspace rate | train s |", "|---|---|---|---|---|"]
  for method, noise, r in results:
    lines.append(f"| {method} | {noise:g} | {r['accuracy']:.3f} | {r['backspace_rate']:.3f} | "
                 f"{r.get('train_seconds', float('nan')):.0f} |")
  lines += ["", "Samples (SequenceMatch, first noise level):", ""]
  sm = [r for m, _, r in results if m == "sm"]
  for s in (sm[0]["samples"][:8] if sm else []):
    lines.append(f"- `{s['prompt']}` -> trace `{s['trace']}` (answer {s['answer']}, "
                 f"{'ok' if s['correct'] else 'wrong'})")
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  noises = sorted({n for m, n, _ in results if m != "mle"}) or [0.0]
  for method in dict.fromkeys(m for m, _, _ in results):
    pts = [(n, r["accuracy"]) for m, n, r in results if m == method]
    if method == "mle":
      ax.plot(noises, [pts[0][1]] * len(noises), "--", label="mle (no noise)")
    else:
      ax.plot(*zip(*pts), marker="o", label=method)
  ax.set_xlabel("p_noise")
  ax.set_ylabel("test accuracy")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(root, "accuracy.png"), dpi=100)
  print(f"report: {os.path.join(root, 'report.md')}")


if __name__ == "__main__":
  main()
