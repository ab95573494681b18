"""experiments.reports.backtrack_eval --tiny end to end: trains the tiny cat / lm / judge runs,
decodes with and without backtracking, writes backtrack.json / .md with numbers in range."""
import json
import os
import subprocess
import sys

from tests.conftest import FAST_COMPILE_FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_eval_writes_the_table(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=FAST_COMPILE_FLAGS)
  out = subprocess.run([sys.executable, "-m", "experiments.reports.backtrack_eval",
                        f"--root={tmp_path}", "--tiny", "--gammas=2", "--thresholds=0.1",
                        "--max_retries=3"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
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
