"""SequenceMatch on text (experiments.reports.text_seqmatch_report): bc and sm start from the mle
run's parameters, the text statistics have exact values on known inputs, and the tiny report
runs end to end."""
import json
import math
import os

import jax
import numpy as np

from experiments.reports import text_seqmatch_report as report_lib
from experiments.configs.shakespeare_seqmatch import get_config
from experiments.trainer import Trainer


def test_text_statistics_exact_values():
  texts = ["a b a b", "c"]
  # Word unigrams: a, b, a, b, c -> p = (2/5, 2/5, 1/5).
  expected = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
  assert math.isclose(report_lib.ngram_entropy(texts, 1), expected, rel_tol=1e-12)
  # 'a b a b' bigrams: (a b), (b a), (a b): one of three repeats; 'c' has none.
  assert math.isclose(report_lib.repetition(texts, n=2), 1 / 3)
  assert report_lib.repetition(["x y z w v"], n=4) == 0.0


def test_tiny_report_and_init_from_run(tmp_path):
  root = str(tmp_path)
  report = report_lib.make_report(root, tiny=True, mauve=False)
  assert set(report["methods"]) == {"data", "mle", "bc", "sm"}
  for name, r in report["methods"].items():
    assert np.isfinite(r["ppl_ref"]) and r["ppl_ref"] > 1, name
  # MLE's <bkspc> logit is masked: it never backspaces.
  assert report["methods"]["mle"]["backspace_rate"] == 0.0
  for f in ("report.json", "report.md", "backspace_positions.png"):
    assert os.path.getsize(os.path.join(root, f)) > 0
  assert "| sm |" in open(os.path.join(root, "report.md")).read()
  json.load(open(os.path.join(root, "report.json")))

  # init_from=run:DIR: every parameter equals mle's final ones; the optimizer starts fresh.
  mle = Trainer(get_config("mle,tiny"), os.path.join(root, "mle"), progress=False)
  mle_params = mle.restore_latest().params
  c = get_config("sm,tiny")
  c.init_from = "run:" + os.path.join(root, "mle")
  state = Trainer(c, str(tmp_path / "fresh_sm"), progress=False).init_state()
  assert int(state.step) == 0
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(mle_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert all(float(np.abs(np.asarray(x)).max()) == 0.0
             for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0)
