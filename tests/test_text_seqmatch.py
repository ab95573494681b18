"""SequenceMatch on text (experiments.reports.text_seqmatch_report): bc and sm start from the mle
run's parameters, the text statistics have exact values on known inputs, and the tiny report
runs end to end."""
import json
import math
import os

import jax
import numpy as np
import pytest

from experiments import text_samples
from experiments.reports import text_seqmatch_report as report_lib
from experiments.configs.shakespeare_seqmatch import get_config
from experiments.trainer import Trainer


def test_text_statistics_exact_values():
  texts = ["a b a b", "c"]
  # Word unigrams: a, b, a, b, c -> p = (2/5, 2/5, 1/5).
  expected = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2))
  assert math.isclose(text_samples.ngram_entropy(texts, 1), expected, rel_tol=1e-12)
  # 'a b a b' bigrams: (a b), (b a), (a b): one of three repeats; 'c' has none.
  assert math.isclose(text_samples.repetition(texts, n=2), 1 / 3)
  assert text_samples.repetition(["x y z w v"], n=4) == 0.0


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


def test_smollm2_lora_runs_differ_only_in_the_loss():
  from experiments.configs.smollm2_finetune import get_config as smollm2_config
  from experiments.reports import text_seqmatch_smollm2 as sm2
  mle, bc, sm = (sm2.run_config(m, 3, 40) for m in sm2.METHODS)
  assert (mle.objective.loss, mle.objective.p_noise) == ("bc", 0.0)     # plain MLE
  assert (bc.objective.loss, bc.objective.p_noise) == ("bc", 0.1)       # <bkspc> is learnt
  assert sm.objective.loss == "sm" and sm.objective.rollouts > 0
  for c in (mle, bc, sm):   # one trunk, one adapter shape, one data stream per seed
    assert (c.seed, c.train.steps, c.model.lora_rank, c.data.seq_len) == (3, 40, 8, 32)
    assert c.init_from == "smollm2"
  with pytest.raises(ValueError, match="method"):
    sm2.run_config("cat_attr", 0, 40)
  with pytest.raises(ValueError, match="steps"):
    sm2.run_config("sm", 0, 0)
  with pytest.raises(ValueError, match="lora"):
    smollm2_config("cat_attr,lora")
  a = sm2.aggregate([0.8, None, float("nan"), 0.9])
  assert (a["n"], a["min"], a["max"]) == (2, 0.8, 0.9)
  assert math.isclose(a["mean"], 0.85) and math.isclose(a["std"], math.sqrt(0.005))
