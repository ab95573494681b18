"""The Markov-chain task: exact scoring under the true chain, forbidden-transition noise."""
import ml_collections
import numpy as np
import pytest

from experiments.tasks import get_task
from experiments.tasks import markov


def test_chain_is_sparse_and_stochastic():
  p = markov.transition_matrix(12, 3, seed=0)
  assert np.allclose(p.sum(1), 1.0) and ((p > 0).sum(1) == 3).all()
  with pytest.raises(ValueError, match="branching"):
    markov.transition_matrix(4, 4, seed=0)


def test_score_is_exact_on_chain_samples_and_finds_the_first_forbidden_step():
  p = markov.transition_matrix(12, 3, seed=0)
  s = markov.sample_states(p, 50, 30, np.random.default_rng(0))
  for row in s:
    r = markov.score(p, markov.to_text(row))
    assert r["first_invalid"] == -1 and r["transitions"] == 29
    assert r["loglik"] == pytest.approx(np.log(p[row[:-1], row[1:]]).sum())
  row = s[0].copy()
  row[7] = int(np.flatnonzero(p[row[6]] == 0)[0])       # a forbidden step at transition 7
  r = markov.score(p, markov.to_text(row))
  assert r["first_invalid"] == 7
  assert r["loglik"] == pytest.approx(np.log(p[row[:6], row[1:7]]).sum())
  assert markov.score(p, markov.to_text(s[0][:5]) + "#")["first_invalid"] == 5
  assert markov.score(p, "")["transitions"] == 0


def test_samples_follow_the_transition_probabilities():
  p = markov.transition_matrix(6, 2, seed=3)
  s = markov.sample_states(p, 4000, 6, np.random.default_rng(1))
  counts = np.zeros_like(p)
  np.add.at(counts, (s[:, :-1].ravel(), s[:, 1:].ravel()), 1)
  freq = counts / counts.sum(1, keepdims=True)
  assert np.abs(freq - p).max() < 0.05                  # ~3.3k transitions per row


def test_task_and_ground_truth_noise_is_always_forbidden():
  cfg = ml_collections.ConfigDict(dict(num_train=20, num_test=5, length=10))
  task = get_task("markov", cfg)
  p = markov.chain_of(cfg)
  ex = task.source("train")[0]
  assert ex["text"] == ex["prompt"] + ex["answer"] and len(ex["text"]) == 10
  assert markov.score(p, ex["text"])["first_invalid"] == -1
  rng = np.random.default_rng(0)
  for ex in task.source("train"):
    for k in range(1, 10):
      noise = markov.ground_truth_noise(ex["prompt"], ex["answer"][:k - 1], rng)
      text = ex["text"][:k] + noise
      assert markov.score(p, text)["first_invalid"] == k


def test_finetune_protocol_configs():
  """',ft': every method gets the same 300 extra steps from the MLE run it is pointed at;
  SequenceMatch warms up with BC inside them; unknown flags are named."""
  from experiments.configs.markov_seqmatch import get_config
  for m in ("mle", "bc", "sm"):
    c = get_config(f"{m},ft")
    assert c.train.steps == 300 and c.optimizer.learning_rate == 1e-3
  assert get_config("sm,ft").objective.bc_steps == 100
  assert get_config("mle,ft").objective.p_noise == 0.0
  with pytest.raises(ValueError, match="ft"):
    get_config("sm,finetune")


def test_compare_variants_and_seed_summary(tmp_path):
  """markov_compare expands alphas (sm only) and p_noise (bc and sm) into named variants and
  reports every variant as mean [min, max] over seeds with the per-seed values."""
  from experiments.compare_runs import variants
  from experiments.reports.markov_compare import _report
  v = variants("mle,bc,sm", "1,10", "0.05")
  assert [x.name for x in v] == ["mle", "bc_p0.05", "sm_a1_p0.05", "sm_a10_p0.05"]
  assert [x.p_noise for x in v] == [None, 0.05, 0.05, 0.05]
  assert v[3].overrides == ["--config.objective.alpha=10.0", "--config.objective.p_noise=0.05"]
  assert variants("mle,sm", "", "") == [("mle", "mle", [], None), ("sm", "sm", [], None)]
  assert variants("sm", "10", "", "reward_backspace=false", "nb") == [
      ("sm_a10_nb", "sm", ["--config.objective.alpha=10.0",
                           "--config.objective.reward_backspace=false"], None)]
  with pytest.raises(ValueError, match="sm_tag"):
    variants("sm", "", "", "reward_backspace=false")
  run = lambda share: dict(sequences=4, invalid_share=share, first_invalid_mean=None,
                           loglik_per_valid_transition=-1.0, mean_transitions=3.0,
                           backspace_rate=0.0, first_invalid_positions=[-1] * 4,
                           samples=["ab"], train_seconds=1.0)
  _report(str(tmp_path), {"mle": [run(0.25), run(0.5), run(0.0)]}, -0.8, (0, 1, 2))
  row = [l for l in open(tmp_path / "report.md") if l.startswith("| mle")][0]
  assert "| 0.250 [0.000, 0.500] | 0.250 0.500 0.000 |" in row
