"""experiments.reports.steer_sweep --quick end to end: tiny bits models trained in-process, every
method over its strengths, judged by the exact attribute; table, JSON and PNGs written."""
import json
import math
import os

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
