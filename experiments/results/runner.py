"""Regenerate README Results rows: run each row's commands over its seeds and write its JSON.

  python -m experiments.results.runner --rows=main,bits [--seeds=0,1,2] [--check]
      [--out=experiments/results/data] [--work_root=/tmp/catrans_results] [--list]

Writes OUT/ROW.json per row (figures per seed, mean/min/max, machine, commit, wall time per
seed, date, the commands); then `python -m experiments.results.render --write` puts them
into README.md. --check reruns the rows and exits 1 naming every figure outside the interval
the registry (and so the README) states; with --check nothing is written unless --out is
given. Each seed's commands and logs stay in a fresh folder under --work_root; the JSON is
rewritten after every seed, so a stopped runner keeps the seeds it finished. --add keeps the
JSON's other seeds; --recover=SEED:WORKDIR adds a finished seed whose record was never
written (a runner killed before the partial writes existed)."""
import argparse
import json
import os
import sys

from experiments.results import registry, run


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rows", default="", help="comma-separated row ids (see --list)")
  ap.add_argument("--seeds", default="", help="comma-separated seeds (default: the row's; "
                  "'none' with --recover: run nothing)")
  ap.add_argument("--check", action="store_true")
  ap.add_argument("--out", default=None, help=f"default {os.path.relpath(run.DATA)} "
                                              "(none with --check)")
  ap.add_argument("--work_root", default=None)
  ap.add_argument("--add", action="store_true",
                  help="keep the seeds already in OUT/ROW.json that this run does not rerun")
  ap.add_argument("--recover", default="", metavar="SEED:WORKDIR,...",
                  help="with --add: finished seeds of a stopped runner, read from their "
                       "workdirs (stdout.log), kept beside this run's seeds (one row only)")
  ap.add_argument("--list", action="store_true", help="print the rows and exit")
  a = ap.parse_args(argv)
  if a.list:
    for r in registry.ROWS:
      print(f"{r.id:18s} seeds {','.join(map(str, r.seeds)):8s} ~{r.expected_s / 60:5.1f} min "
            f"per seed{'  (fast)' if r.fast else ''}  {r.title}")
    return 0
  ids = [x for x in a.rows.split(",") if x]
  unknown = [x for x in ids if x not in registry.BY_ID]
  if not ids or unknown:
    ap.error(f"--rows: unknown {unknown} " if unknown else "--rows is required; " +
             f"rows: {', '.join(registry.BY_ID)}")
  try:   # --seeds=none: run nothing, only write what --recover read back
    seeds = [] if a.seeds == "none" else [int(s) for s in a.seeds.split(",") if s] or None
  except ValueError:
    ap.error(f"--seeds must be comma-separated integers, got {a.seeds!r}")
  out = a.out if a.out is not None else (None if a.check else run.DATA)
  if (a.add or a.recover) and not out:
    ap.error("--add/--recover need somewhere to write: --out")
  if a.recover and (not a.add or len(ids) != 1):
    ap.error("--recover goes with --add and one row")
  if seeds == [] and not a.recover:
    ap.error("--seeds=none only with --recover (there would be nothing to write)")
  failures = []
  for row_id in ids:
    row = registry.BY_ID[row_id]
    earlier = []
    if a.add and os.path.exists(run.json_path(row_id, out)):
      with open(run.json_path(row_id, out)) as f:
        earlier = json.load(f)["runs"]
    for item in (x for x in a.recover.split(",") if x):
      seed, workdir = item.split(":", 1)
      earlier = [r for r in earlier if r["seed"] != int(seed)]
      earlier.append(run.recover_seed(row, int(seed), workdir))

    def write(result, row_id=row_id):
      if out:
        os.makedirs(out, exist_ok=True)
        with open(run.json_path(row_id, out), "w") as f:
          json.dump(result, f, indent=1)
    result = run.run_row(row, seeds, a.work_root, log=lambda s: print(s, flush=True),
                         earlier=earlier, on_seed=write)
    for name, s in result["summary"].items():
      print(f"{row_id} {name}: mean {s['mean']:.4g} [{s['min']:.4g}, {s['max']:.4g}] "
            f"over {s['n']} seed(s)", flush=True)
    print(f"{row_id}: wall s per seed {result['wall_s_per_seed']}; {result['machine']}")
    if out:
      write(result)
      print(f"wrote {run.json_path(row_id, out)}")
    if a.check:
      bad = run.check(row, result)
      failures += bad
      print("\n".join(bad) if bad else f"{row_id}: every figure inside its interval")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
