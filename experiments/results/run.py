"""Running a registry row and checking its figures: what runner.py and the tests share.

Each seed of a row runs its commands in a fresh workdir (under `work_root`), with stdout and
stderr kept in workdir/stdout.log; the row's parser reads the figures back. The result is one
JSON-able dict per row (figures per seed, mean/min/max, machine, commit, wall time, load)."""
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

from experiments.results.registry import Row

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "experiments", "results", "data")


class RunFailed(RuntimeError):
  pass


def machine() -> str:
  """CPU model and cores (the benchmarks' own line: experiments/bench/timing.py)."""
  from experiments.bench import timing
  return timing.machine()


def commit() -> str:
  """HEAD's hash, '+dirty' when tracked files differ from it (the figures then came from
  code no commit holds)."""
  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout
  head = git("rev-parse", "HEAD").strip() or "unknown"
  return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


def expand(row: Row, seed: int, workdir: str, python: str = sys.executable) -> list[str]:
  return [c.format(python=python, seed=seed, workdir=workdir) for c in row.commands]


def run_seed(row: Row, seed: int, work_root: str, log=print) -> dict:
  """One seed of a row: its commands in order in a fresh workdir, then the parser."""
  os.makedirs(work_root, exist_ok=True)
  workdir = tempfile.mkdtemp(prefix=f"{row.id}_s{seed}_", dir=work_root)
  commands = expand(row, seed, workdir)
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  stdout = []
  with open(os.path.join(workdir, "stdout.log"), "w") as logf:
    for cmd in commands:
      log(f"[{row.id} seed {seed}] {cmd}")
      p = subprocess.run(shlex.split(cmd), cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
      logf.write(f"$ {cmd}\n{p.stdout}\n")
      stdout.append(p.stdout)
      if p.returncode not in row.ok_returncodes:
        raise RunFailed(f"row {row.id} seed {seed}: `{cmd}` exited {p.returncode}; last "
                        f"lines:\n" + "\n".join(p.stdout.splitlines()[-15:]))
  wall = time.perf_counter() - t0
  figures = row.parse("\n".join(stdout), workdir)
  return {"seed": seed, "figures": figures, "wall_s": round(wall, 1), "commands": commands,
          "workdir": workdir, "load_before": [round(x, 2) for x in load_before],
          "load_after": [round(x, 2) for x in os.getloadavg()]}


def summarise(runs: list[dict]) -> dict:
  """{figure: {mean, min, max, n}} over the seeds that report it."""
  names = [n for r in runs for n in r["figures"]]
  out = {}
  for name in dict.fromkeys(names):
    v = np.asarray([r["figures"][name] for r in runs if name in r["figures"]], np.float64)
    out[name] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
                 "n": int(len(v))}
  return out


def recover_seed(row: Row, seed: int, workdir: str) -> dict:
  """A finished seed's run record from its workdir (the runner stopped before writing it):
  figures from workdir/stdout.log, wall time from that file's creation and last write."""
  path = os.path.join(workdir, "stdout.log")
  with open(path) as f:
    stdout = f.read()
  st = os.stat(path)
  born = getattr(st, "st_birthtime", None)
  if born is None:   # Linux before Python 3.12: GNU stat reads it (0 where unknown)
    born = float(subprocess.run(["stat", "-c", "%W", path], capture_output=True,
                                text=True).stdout.strip() or 0)
  if not born:
    raise RunFailed(f"{path}: its creation time is unknown here, so is the seed's wall time")
  return {"seed": seed, "figures": row.parse(stdout, workdir),
          "wall_s": round(st.st_mtime - born, 1), "commands": expand(row, seed, workdir),
          "workdir": workdir, "recovered": "figures parsed from the workdir's stdout.log after "
          "the runner stopped; wall time from the log's creation and last write"}


def row_result(row: Row, runs: list[dict], code: str, started) -> dict:
  """The row's JSON: the runs in seed order, their summary, where and when."""
  runs = sorted(runs, key=lambda r: r["seed"])
  return {"row": row.id, "title": row.title, "commands": list(row.commands),
          "seeds": [r["seed"] for r in runs], "runs": runs, "summary": summarise(runs),
          "machine": machine(), "commit": code, "date": started.strftime("%Y-%m-%d %H:%M UTC"),
          "wall_s_per_seed": [r["wall_s"] for r in runs],
          "load_1min": [r["load_before"][0] for r in runs if "load_before" in r]}


def run_row(row: Row, seeds=None, work_root=None, log=print, earlier=(), on_seed=None) -> dict:
  """Every seed of the row (or `seeds`), one after another; the row's JSON as a dict.
  earlier: run records kept beside these (a seed run again replaces its record); on_seed
  gets the JSON so far after each seed (a runner stopped later keeps the finished seeds)."""
  seeds = list(row.seeds if seeds is None else seeds)
  if not seeds and not earlier:
    raise ValueError(f"row {row.id}: seeds is empty")
  work_root = work_root or os.path.join(tempfile.gettempdir(), "catrans_results")
  started = datetime.datetime.now(datetime.timezone.utc)
  code = commit()   # before the runs: what the commands ran
  runs = [r for r in earlier if r["seed"] not in seeds]
  for s in seeds:
    runs.append(run_seed(row, s, work_root, log))
    if on_seed:
      on_seed(row_result(row, runs, code, started))
  return row_result(row, runs, code, started)


def check(row: Row, result: dict) -> list[str]:
  """What falls outside the row's intervals: one line per (figure, seed), naming both; a
  figure with an interval that a seed did not report counts too."""
  bad = []
  for name, fig in row.figures.items():
    if fig.low is None and fig.high is None:
      continue
    for r in result["runs"]:
      v = r["figures"].get(name)
      if v is None:
        bad.append(f"{row.id}: figure {name} missing in seed {r['seed']} (parser found "
                   f"{sorted(r['figures'])})")
      elif (fig.low is not None and v < fig.low) or (fig.high is not None and v > fig.high):
        bad.append(f"{row.id}: figure {name} = {fig.fmt.format(v)} in seed {r['seed']}, "
                   f"outside {fig.interval()}")
  return bad


def json_path(row_id: str, data_dir: str = DATA) -> str:
  return os.path.join(data_dir, f"{row_id}.json")
