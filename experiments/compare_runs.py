"""What the comparison scripts (arithmetic, Markov, Key-to-Door) share: running a logged
training subprocess, naming SequenceMatch variants, and summarising a metric over seeds."""
import json
import os
import subprocess
from typing import NamedTuple, Optional

import numpy as np


def run_logged(cmd, log_path):
  """Runs cmd with its stdout and stderr appended to log_path; raises if it fails."""
  with open(log_path, "a") as log:
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def add_field(json_path, key, value):
  """Adds key: value to the JSON object in json_path (e.g. an evaluation's training time)."""
  with open(json_path) as f:
    r = json.load(f)
  r[key] = value
  with open(json_path, "w") as f:
    json.dump(r, f, indent=1)


class Variant(NamedTuple):
  name: str                  # the run's folder name, e.g. sm_a10_nb_p0.1
  method: str                # the config variant: mle, bc or sm
  overrides: list            # --config.objective.KEY=VALUE flags
  p_noise: Optional[float]   # None: the config's own (mle: no noise)


def variants(methods, alphas="", noises="", sm_flags="", sm_tag=""):
  """One Variant per run: 'sm' becomes one per chi2 alpha, 'bc' and 'sm' one per p_noise
  (mle has no noise); sm_flags (comma-separated objective KEY=VALUE) go to every sm variant,
  whose names then carry _SM_TAG (before the noise suffix)."""
  tag = [f"--config.objective.{kv}" for kv in sm_flags.split(",") if kv]
  if tag and not sm_tag:
    raise ValueError("--sm_flags needs an --sm_tag to name its runs")
  alpha_opts = [("", tag)] if not alphas else [
      (f"_a{a:g}", [f"--config.objective.alpha={a}"] + tag) for a in map(float, alphas.split(","))]
  if sm_tag:
    alpha_opts = [(n + "_" + sm_tag, x) for n, x in alpha_opts]
  noise_opts = [("", [], None)] if not noises else [
      (f"_p{p:g}", [f"--config.objective.p_noise={p}"], p) for p in map(float, noises.split(","))]
  out = []
  for method in methods.split(","):
    for a_name, a_extra in (alpha_opts if method == "sm" else [("", [])]):
      for p_name, p_extra, p in (noise_opts if method != "mle" else [("", [], None)]):
        out.append(Variant(method + a_name + p_name, method, a_extra + p_extra, p))
  return out


def seed_root(root, seed, seeds):
  """One seed keeps the flat layout of earlier roots; several get a folder DIR/sSEED each."""
  return root if len(seeds) == 1 else os.path.join(root, f"s{seed}")


def spread(values, fmt="{:.3f}"):
  """'mean [min, max]' over seeds, or the one value."""
  v = np.asarray(values, np.float64)
  if len(v) == 1:
    return fmt.format(v[0])
  return f"{fmt.format(v.mean())} [{fmt.format(v.min())}, {fmt.format(v.max())}]"
