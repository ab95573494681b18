"""Key-to-Door, every method on the same data: Random, BC, %BC, Decision Transformer, CAT.

  python -m experiments.reports.keytodoor_compare --root=DIR [--methods=bc,pbc,dt,cat]
      [--seeds=0,1,2]
      [--episodes=1000] [--set train.steps=4000 ...] [--tiny]

Each (method, seed) is `experiments.train` with configs/keytodoor.py:METHOD in
DIR/METHOD_sSEED (seed = the model's and the dataset's: --config.seed and task.seed), then
`experiments.reports.keytodoor_eval` over `episodes` fresh episodes. Finished runs are skipped and
killed ones resume, so rerunning the command continues the table. Random is the exact win
probability of the uniform policy (envs.keytodoor.RandomPolicyValues); "CAT rule, exact
estimates" acts greedily on the exact P(win | s, a) (the ceiling of CAT's rule), and "count
table" greedily on win counts per (state, time, action) of the same 10K episodes.
Writes DIR/report.md and DIR/report.json; prints the table with the published numbers."""
import argparse
import json
import os
import sys
import time

import numpy as np

from experiments.compare_runs import add_field, run_logged
from experiments.envs import keytodoor as env_lib

PUBLISHED = {"random": 0.031, "bc": 0.016, "pbc": 0.951, "dt": 0.946, "cat": 0.999}
NAMES = {"random": "Random", "bc": "BC", "pbc": "%BC", "dt": "Decision Transformer",
         "cat": "CAT (steered to a win)", "exact": "CAT rule, exact estimates",
         "exact_noisy": "CAT rule, exact estimates + noise (std 0.01)",
         "table": "count table (state, t, action)",
         "north": "always N (what a collapsed CAT plays)"}


def exact_greedy_win_rate(episodes, seed=123, noise=0.0):
  """Win rate of argmax_a of the exact P(win | s, a) under the random behaviour policy, plus
  Gaussian noise of std `noise` on every estimate (how precise CAT's estimates must be)."""
  values = env_lib.RandomPolicyValues()
  env = env_lib.KeyToDoor(episodes, seed=seed)
  rng = np.random.default_rng(seed)
  obs = env.reset()
  for _ in range(env_lib.EPISODE_STEPS):
    q = values.q(obs)
    obs, _, done = env.step(np.argmax(q + noise * rng.standard_normal(q.shape), axis=-1))
    if done.all():
      break
  return float(env.won.mean())


def _table_index(obs, t):
  """Index of (key cell while it matters, possession, agent cell, time) for count tables."""
  seeking = (obs["phase"] == 0) & ~obs["has_key"]
  key = np.where(seeking, (obs["key"][:, None, :] == env_lib.KEY_CELLS).all(-1).argmax(-1),
                 len(env_lib.KEY_CELLS))
  cell = obs["pos"][:, 0] * env_lib.COLS + obs["pos"][:, 1]
  return key, obs["has_key"].astype(int), cell, np.full(len(cell), t)


def always_north_win_rate(episodes, seed=123, batch=250):
  """The fixed policy 'always N' on keytodoor_eval's episodes (same seeds and batches)."""
  won = []
  for start in range(0, episodes, batch):
    env = env_lib.KeyToDoor(min(batch, episodes - start), seed=seed + start)
    env.reset()
    for _ in range(env_lib.EPISODE_STEPS):
      env.step(np.zeros(env.batch_size, int))
    won.append(env.won)
  return float(np.concatenate(won).mean())


def count_table_win_rate(num_train, seed, episodes, eval_seed=123):
  """A count table of the win rate per (state, time, action) over the same random episodes
  the models train on (tasks/keytodoor.random_trajectories' seeds), then greedy on it: the
  tabular Monte Carlo estimate CAT's head replaces, as a reference point."""
  shape = (len(env_lib.KEY_CELLS) + 1, 2, env_lib.ROWS * env_lib.COLS, env_lib.EPISODE_STEPS, 4)
  wins, visits = np.zeros(shape), np.zeros(shape)
  env, rng = env_lib.KeyToDoor(num_train, seed=seed), np.random.default_rng(seed + 1)
  obs, trail = env.reset(), []
  for t in range(env_lib.EPISODE_STEPS):
    actions = rng.integers(0, 4, size=num_train)
    trail.append((_table_index(obs, t) + (actions,), ~env.done))
    obs, _, _ = env.step(actions)
  for idx, live in trail:
    idx = tuple(i[live] for i in idx)
    np.add.at(visits, idx, 1)
    np.add.at(wins, idx, env.won[live])
  q_table = wins / np.maximum(visits, 1)
  env = env_lib.KeyToDoor(episodes, seed=eval_seed)
  obs = env.reset()
  for t in range(env_lib.EPISODE_STEPS):
    obs, _, done = env.step(np.argmax(q_table[_table_index(obs, t)], axis=-1))
    if done.all():
      break
  return float(env.won.mean())


def run_one(root, method, seed, episodes, overrides, tiny):
  workdir = os.path.join(root, f"{method}_s{seed}")
  out = os.path.join(workdir, "keytodoor_eval.json")
  if not os.path.exists(out):
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, "stdout.log")
    cfg = f"experiments/configs/keytodoor.py:{method}" + (",tiny" if tiny else "")
    t0 = time.time()
    print(f"training {method} seed {seed} in {workdir} ...", flush=True)
    run_logged([sys.executable, "-m", "experiments.train", f"--config={cfg}",
                f"--workdir={workdir}", f"--config.seed={seed}", f"--config.task.seed={seed}",
                "--config.train.progress=false"] + [f"--config.{o}" for o in overrides], log)
    train_s = time.time() - t0
    run_logged([sys.executable, "-m", "experiments.reports.keytodoor_eval", f"--workdir={workdir}",
                f"--episodes={episodes}"], log)
    add_field(out, "train_seconds", train_s)
  with open(out) as f:
    return json.load(f)


def report(root, rows, episodes, seeds):
  lines = [f"# Key-to-Door win rate ({episodes} episodes per seed, seeds {seeds})", "",
           "| method | mean | spread (min-max) | per seed | published |", "|---|---|---|---|---|"]
  for method, rates in rows.items():
    pub = PUBLISHED.get(method)
    lines.append(f"| {NAMES[method]} | {np.mean(rates):.3f} | {min(rates):.3f}-{max(rates):.3f} | "
                 f"{' '.join(f'{r:.3f}' for r in rates)} | {'-' if pub is None else pub} |")
  text = "\n".join(lines) + "\n"
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(text)
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump({"episodes": episodes, "seeds": seeds, "win_rates": rows,
               "published": PUBLISHED}, f, indent=1)
  print(text)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--methods", default="bc,pbc,dt,cat")
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--episodes", type=int, default=1000)
  ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                  help="config overrides for every run, e.g. train.steps=4000")
  ap.add_argument("--tiny", action="store_true", help="seconds-long smoke settings")
  a = ap.parse_args(argv)
  os.makedirs(a.root, exist_ok=True)
  seeds = [int(s) for s in a.seeds.split(",")]
  rows = {"random": [env_lib.RandomPolicyValues().win_rate()] * len(seeds),
          "exact": [exact_greedy_win_rate(a.episodes, seed=123 + s) for s in seeds],
          "exact_noisy": [exact_greedy_win_rate(a.episodes, seed=123 + s, noise=0.01)
                          for s in seeds],
          "north": [always_north_win_rate(a.episodes)] * len(seeds),
          "table": [count_table_win_rate(10 if a.tiny else 10000, s, a.episodes) for s in seeds]}
  for method in a.methods.split(","):
    rows[method] = []
    for seed in seeds:
      r = run_one(a.root, method, seed, a.episodes, a.set, a.tiny)
      rows[method].append(r["win_rate"])
      print(f"{method:4s} seed {seed}: win rate {r['win_rate']:.3f}", flush=True)
  report(a.root, rows, a.episodes, seeds)
  return rows


if __name__ == "__main__":
  main()
