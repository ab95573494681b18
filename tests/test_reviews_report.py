"""experiments.reports.reviews_report end to end with --tiny: trains the five tiny runs, writes the
report, and the report's numbers are checked for range and for two exact identities. Then
experiments.reports.backtrack_eval --tiny on the same runs (it reads cat, lm and judge)."""
import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from catrans.inference import estimate
from experiments.configs.reviews_cat import RUNS, get_config
from tests.conftest import FAST_COMPILE_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTIONS = ("0.25", "0.5", "0.75", "1.0")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("reviews")
  _run("experiments.reports.reviews_report", f"--root={root}", "--tiny")
  return root


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             # A smoke test needs no optimised code: these halve XLA's CPU compile time,
             # which is most of this test (five trainings and a dozen decoders).
             XLA_FLAGS=FAST_COMPILE_FLAGS)
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture(scope="module")
def report(report_dir):
  with open(report_dir / "report.json") as f:
    return json.load(f)


def test_every_run_trained_to_its_final_step(report_dir, report):
  for run in RUNS:
    steps = get_config(run + ",tiny").train.steps
    assert os.path.isdir(report_dir / run / "checkpoints" / str(steps))
    assert report["runs"][run]["steps"] == steps


def test_estimation_covers_every_method_and_fraction(report):
  e = report["estimation"]
  assert set(e["methods"]) == {"cat", "clf", "mc16", "mc64"}
  for name, m in e["methods"].items():
    assert set(m["by_fraction"]) == set(FRACTIONS)
    for f in FRACTIONS:
      assert 0.0 <= m["by_fraction"][f]["accuracy"] <= 1.0
      assert math.isfinite(m["by_fraction"][f]["log_loss"]) and m["by_fraction"][f]["log_loss"] > 0
      probs = np.asarray(e["p_fresh"][name][f])
      assert len(probs) == m["num_reviews"] and np.all((probs >= 0) & (probs <= 1))
    assert m["seconds_all_fractions"] > 0 and m["ms_per_prefix"] > 0
  # Monte Carlo runs on a prefix of the evaluated reviews.
  assert e["methods"]["mc64"]["num_reviews"] <= e["methods"]["cat"]["num_reviews"]
  # Prefixes grow with the fraction and end inside the review.
  ends = np.asarray(e["prefix_ends"])
  read = np.asarray([r["tokens_read"] for r in e["reviews"]])
  assert np.all(np.diff(ends, axis=1) >= 0) and np.all(ends[:, -1] == read)


def test_monte_carlo_of_a_whole_review_is_the_classifier(report):
  """With the whole review as the prefix nothing is sampled: every completion is the review
  itself, so the Monte Carlo mean is exactly the classifier's probability."""
  p = report["estimation"]["p_fresh"]
  for mc in ("mc16", "mc64"):
    n = len(p[mc]["1.0"])
    np.testing.assert_allclose(p[mc]["1.0"], p["clf"]["1.0"][:n], atol=1e-5)


def test_cat_estimate_of_a_whole_review_is_catrans_estimate(report_dir, report):
  """The report's 100% CAT number for a review is q at its last byte from
  catrans.inference.estimate on that review alone (no padding, no batch)."""
  from experiments.trainer import Trainer
  trainer = Trainer(get_config("cat,tiny"), str(report_dir / "cat"), progress=False)
  params = trainer.restore_latest().params
  tok, width = trainer.task.tokenizer, trainer.config.data.seq_len
  e = report["estimation"]
  for i in (0, len(e["reviews"]) - 1):
    r = e["reviews"][i]
    ids = [tok.bos_id] + tok.encode(r["text"])[:width - 1]
    assert len(ids) - 1 == r["tokens_read"]
    q = estimate(trainer.objective.model, params, jnp.asarray([ids]), attribute="label",
                 target=1).q
    assert abs(float(q[0, -1]) - e["p_fresh"]["cat"]["1.0"][i]) < 1e-5


def test_steering_rows(report):
  s = report["steering"]
  methods = {(r["method"], r["strength"]) for r in s["rows"]}
  for name in ("unsteered_cat", "unsteered_lm", "cat_satisficing", "cat_weighted", "director",
               "fudge"):
    assert any(m == name for m, _ in methods), name
  for r in s["rows"]:
    assert r["target"] in ("fresh", "rotten") and r["prompt_set"] in ("neutral", "opposite")
    assert 0.0 <= r["target_rate"] <= 1.0 and 0.0 <= r["judge_p_target"] <= 1.0
    assert 0.0 <= r["target_rate_vader"] <= 1.0
    assert math.isfinite(r["perplexity"]) and r["perplexity"] > 1.0
    for k in ("distinct_1", "distinct_2"):
      assert r[k] is None or 0.0 < r[k] <= 1.0
    assert r["n"] == s["rows_per_condition"][r["prompt_set"]]
  # Each (method, strength) has both targets and both prompt sets.
  for m in methods:
    conds = {(r["target"], r["prompt_set"]) for r in s["rows"]
             if (r["method"], r["strength"]) == m}
    assert len(conds) == 4


def test_perplexity_credit_and_files(report_dir, report):
  for run in ("cat", "lm"):
    m = report["perplexity"][run]
    assert math.isfinite(m["perplexity"]) and m["perplexity"] > 1.0
    assert m["bits_per_byte"] == pytest.approx(
        m["nats_per_token"] * m["tokens"] / m["bytes"] / math.log(2))
  c = report["credit"]
  n = len(c["q"])
  assert n == len(c["advantage"]) == len(c["difference"]) > 0
  # Difference credit telescopes: the sum of q_t - q_{t-1} over t >= 2 is q_n - q_1.
  assert sum(c["difference"][1:]) == pytest.approx(c["q"][-1] - c["q"][0], abs=1e-4)
  for name in report["plots"]:
    assert os.path.getsize(report_dir / name) > 1000
  md = (report_dir / "report.md").read_text()
  assert "wall time" in md and "## 2. Steering" in md and "vader (opposite)" in md
  q = report["judge_quality"]
  assert q["vader"]["independent"] and not q["judge"]["independent"]
  assert q["vader"]["reviews"] == q["judge"]["reviews"] == report["perplexity"]["lm"]["reviews"]
  assert report["wall_time_s"] > report["train_time_s"] > 0


def test_backtrack_eval_on_the_report_runs_writes_the_table(report_dir, tmp_path):
  _run("experiments.reports.backtrack_eval", f"--root={report_dir}", f"--out={tmp_path}",
       "--tiny", "--gammas=2", "--thresholds=0.1", "--max_retries=3")
  with open(tmp_path / "backtrack.json") as f:
    report = json.load(f)
  keys = {(r["method"], r["strength"], r["threshold"]) for r in report["table"]}
  assert keys == {(m, s, th) for m, s in (("unsteered", None), ("cat_weighted", 2.0),
                                          ("cat_satisficing", None)) for th in (None, 0.1)}
  for r in report["table"]:
    assert r["n"] == report["rows_per_config"]
    assert 0 <= r["target_rate"] <= 1 and r["perplexity"] > 1
    assert 0 <= r["unresolved_rate"] <= 1
    assert (r["backspaces_per_row"] == 0) == (r["threshold"] is None)
  md = (tmp_path / "backtrack.md").read_text()
  assert "| cat_weighted | 2 | 0.1 |" in md and "tiny" in md
