"""experiments.reports.steer_sweep --quick end to end: tiny bits models trained in-process, every
method over its strengths, judged by the exact attribute; table, JSON and PNGs written."""
import json
import math
import os

import numpy as np
import pytest

from experiments.reports import steer_sweep


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  r = steer_sweep.main([f"--workdir={root}", "--quick"])
  return root, r


def test_grid_covers_every_method_and_strength(report):
  root, r = report
  cells = {(t["method"], t["strength"]) for t in r["table"]}
  assert cells == ({("unsteered_lm", None), ("greedy_attr", None), ("satisficing", 0.8)}
                   | {(m, g) for m in ("weighted", "director", "fudge") for g in (1.0, 4.0)})
  with open(root / "sweep.json") as f:
    assert json.load(f)["table"] == r["table"]
  md = (root / "sweep.md").read_text()
  assert "| weighted | 4 |" in md and "| fudge | 1 |" in md and "## Diagnosis" in md
  assert "## Equal perplexity" in md and "CAT 0.64/0.77" in md
  eq = r["equal_perplexity"]
  assert set(eq["ranges"]) == {"weighted", "director", "fudge"} and set(eq["judges"]) == {"exact"}
  for t in r["table"]:   # bootstrap intervals hold the point estimate
    lo, hi = t["success_ci"]
    assert lo - 1e-9 <= t["success"] <= hi + 1e-9
  for name in r["plots"]:
    assert os.path.getsize(root / name) > 5000, name
  assert set(r["plots"]) == {"success_vs_perplexity.png", "success_vs_distinct.png",
                             "reliability_cat.png"}


def test_numbers_are_in_range_and_steering_helps(report):
  _, r = report
  for t in r["table"]:
    assert 0.0 <= t["success"] <= 1.0 and t["n"] == 64
    assert math.isfinite(t["perplexity"]) and t["perplexity"] >= 1.0
    assert t["distinct_2"] is None or 0.0 < t["distinct_2"] <= 1.0
  rate = {(t["method"], t["strength"]): t["success"] for t in r["table"]}
  # Half the prompts open with three zeros, so the unsteered LM rarely reaches a majority of
  # ones (measured 0.27); the CAT head's rules reach it nearly always (measured 1.00).
  assert rate[("unsteered_lm", None)] < 0.5
  assert rate[("greedy_attr", None)] > rate[("unsteered_lm", None)] + 0.4
  assert rate[("satisficing", 0.8)] > rate[("unsteered_lm", None)] + 0.4
  cd = r["cat_vs_director"]
  assert cd["of"] == 2 and len(cd["pairs"]) == 2


def test_diagnosis_in_the_report(report):
  _, r = report
  d = r["diagnosis"]["targets"]["reached"]
  # The urn's majority has probability 0.5 under the base model: not rare.
  assert not d["rare"] and 0.3 < d["share"] < 0.7
  assert r["diagnosis"]["vocabulary"] == []


def test_unknown_method_is_named():
  with pytest.raises(ValueError, match="unknown method 'ctrl'"):
    steer_sweep.grid(("ctrl",), (1.0,), (0.8,), ())


def test_equal_perplexity_interpolates_in_log_perplexity():
  from experiments.reviews import equal_ppl
  # Success 0.2 at ppl 10, 0.8 at ppl 1000: at ppl 100 (halfway in log) exactly 0.5.
  out = equal_ppl.interpolate([0.8, 0.2], [1000.0, 10.0], [100.0, 5.0, 2000.0])
  assert out[0] == pytest.approx(0.5) and np.isnan(out[1]) and np.isnan(out[2])
  assert equal_ppl.shared_points({"a": (10, 20), "b": (30, 40)}) == []
  pts = equal_ppl.shared_points({"a": (10, 100), "b": (20, 400)}, 3)
  assert len(pts) == 3 and 20 < pts[0] < pts[1] < pts[2] < 100


def test_equal_perplexity_compare_with_deterministic_cells():
  """Every generation of a cell has the same NLL, so each cell sits at an exact perplexity
  under any resample, and the shared point (one, geometric middle) is exactly halfway."""
  from experiments.reviews import equal_ppl

  def cell(success, ppl, n=20):
    hits = [1] * round(success * n) + [0] * (n - round(success * n))
    return {"hits": {"j": hits}, "nll": [math.log(ppl)] * n, "tokens": [1] * n}

  hit_cat = {("weighted", 1.0): cell(0.5, 10), ("weighted", 2.0): cell(1.0, 100)}
  hit_dir = {("director", 1.0): cell(0.0, 10), ("director", 2.0): cell(0.5, 100)}
  cmp = equal_ppl.compare({**hit_cat, **hit_dir}, {"weighted": [1.0, 2.0],
                                                   "director": [1.0, 2.0]}, ["j"],
                          num_points=1, replicates=50)
  (p,) = cmp["points"]
  assert p == pytest.approx(math.sqrt(10 * 100))
  res = cmp["judges"]["j"]
  # Halfway between the strengths: the mean of the two successes.
  assert res["by_method"]["weighted"][0]["success"] == pytest.approx(0.75)
  assert res["by_method"]["director"][0]["success"] == pytest.approx(0.25)
  assert res["p_cat_higher"]["director"][0] > 0.9


def test_steer_why_spearman_rows_matches_scipy_and_marks_constant_rows():
  from scipy.stats import spearmanr
  from experiments.reports.steer_why import spearman_rows
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))
  b[1] = 3 * a[1] + 1                 # monotone: exactly 1
  b[2] = -a[2]                        # reversed: exactly -1
  a[3, :10] = 0.5                     # ties: average ranks, as scipy
  a[4] = 7.0                          # constant: no correlation defined
  rho = spearman_rows(a, b)
  assert rho[1] == pytest.approx(1.0) and rho[2] == pytest.approx(-1.0)
  for i in (0, 3):
    assert rho[i] == pytest.approx(spearmanr(a[i], b[i]).statistic)
  assert np.isnan(rho[4])


def test_steer_normpush_rejects_a_negative_gamma_before_loading_anything():
  from experiments.reports import steer_normpush
  with pytest.raises(ValueError, match="--gammas"):
    steer_normpush.main(["--workdir=/nonexistent", "--gammas=0.5,-1"])
