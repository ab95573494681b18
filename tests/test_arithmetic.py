"""Arithmetic task: answers checked with Python ints, splits, determinism."""
import os
import re

import ml_collections
import numpy as np
import pytest

from experiments.tasks import arithmetic, get_task

QUESTION = re.compile(r'In base (\d+), what is (-?\d+) ([+-]) (-?\d+)\? $')


def _task(**overrides):
  return get_task('arithmetic', ml_collections.ConfigDict(overrides))


def test_answers_match_python_ints():
  task = _task(num_train=300, num_test=50)
  for split in task.splits:
    for example in task.source(split):
      base, left, op, right = QUESTION.fullmatch(example['prompt']).groups()
      base = int(base)
      value = int(left, base) + (1 if op == '+' else -1) * int(right, base)
      assert int(example['answer'], base) == value
      assert all(int(c) < base for c in example['answer'].lstrip('-'))
      assert example['text'] == example['prompt'] + example['answer']


def test_unknown_task_key_fails_and_names_it():
  with pytest.raises(ValueError, match="unknown arithmetic task keys \\['max_digit'\\]"):
    _task(max_digit=3)


def test_pretrained_tokenizer_round_trips_and_digits_are_single_actions():
  """With SmolLM2's own BPE tokenizer (the ',smollm2' config): prompt + answer tokens decode
  to the text, and every answer character is one token, so a ground-truth noise character
  is one action and one <bkspc> undoes it."""
  from catrans.pretrained import smollm2_gguf_path
  try:
    smollm2_gguf_path()
  except RuntimeError as e:
    pytest.skip(f"SmolLM2 not available offline: {e}")
  task = _task(num_train=50, num_test=50, tokenizer='smollm2')
  tok = task.tokenizer
  assert tok.vocab_size == 49152
  for q in task.source('test'):
    ids = tok.encode(q['prompt']) + tok.encode(q['answer'])
    assert tok.decode(ids) == q['text']
    assert [tok.decode([i]) for i in tok.encode(q['answer'])] == list(q['answer'])
  rng = np.random.default_rng(0)
  for q in list(task.source('train'))[:20]:
    noise = arithmetic.ground_truth_noise(q['prompt'], q['answer'][:1], rng)
    assert len(tok.encode(noise)) == 1


def test_documented_example():
  example = arithmetic.make_example(7, int('-1403', 7), '+', int('265', 7))
  assert example['text'] == 'In base 7, what is -1403 + 265? -1105'


def test_default_sizes_disjoint_and_deterministic():
  task, again = _task(), _task()
  train, test = task.source('train'), task.source('test')
  assert (len(train), len(test)) == (5000, 200)
  assert not {e['prompt'] for e in train} & {e['prompt'] for e in test}
  assert list(train) == list(again.source('train'))
  assert _task(seed=1).source('test')[:20] != test[:20]
  # The test split does not move when only the train size changes.
  assert list(_task(num_train=10).source('test')) == list(test)


def test_config_bases_and_digits():
  task = _task(min_base=3, max_base=4, max_digits=2, num_train=100, num_test=10)
  for example in task.source('train'):
    base, left, _, right = QUESTION.fullmatch(example['prompt']).groups()
    assert int(base) in (3, 4)
    assert len(left.lstrip('-')) <= 2 and len(right.lstrip('-')) <= 2


def test_too_many_questions_for_space_raises():
  with pytest.raises(ValueError, match='distinct questions'):
    _task(min_base=2, max_base=2, max_digits=1, num_train=100, num_test=10)


def test_score_and_noise():
  example = arithmetic.make_example(5, -7, '-', 12)
  assert arithmetic.score(example, example['answer'] + ' ')
  assert not arithmetic.score(example, example['answer'] + '1')
  rng = np.random.default_rng(0)
  answer = example['answer']
  for cut in range(len(answer) + 1):
    for _ in range(20):
      noise = arithmetic.ground_truth_noise(example['prompt'], answer[:cut], rng)
      assert len(noise) == 1 and noise != answer[cut:cut + 1]
      assert noise in '-0123456789'


def test_unknown_task_lists_available():
  with pytest.raises(ValueError, match='arithmetic'):
    get_task('no_such_task')


def test_compare_report_counts_seeds_above_mle(tmp_path):
  """arithmetic_compare's report: mean [min, max] over seeds, per-seed values, and in how
  many seeds a variant beats MLE of the same seed (the paper's claim, checked per seed)."""
  from experiments.reports.arithmetic_compare import _report
  run = lambda acc: dict(accuracy=acc, backspace_rate=0.0, samples=[], train_seconds=1.0)
  results = {"mle_p0": (0.0, [run(0.2), run(0.3), run(0.1)]),
             "sm_nb_p0.1": (0.1, [run(0.25), run(0.3), run(0.15)])}
  _report(str(tmp_path), results, (0, 1, 2))
  rows = {l.split("|")[1].strip(): l for l in open(tmp_path / "report.md") if l.startswith("| ")}
  assert "| 0.200 [0.100, 0.300] | 0.200 0.300 0.100 | - |" in rows["mle_p0"]
  assert "| 0.233 [0.150, 0.300] | 0.250 0.300 0.150 | 2/3 |" in rows["sm_nb_p0.1"]
  assert (tmp_path / "accuracy.png").exists()
  # The fine-tuning protocol: the reference is MLE fine-tuned as long (mle_ft), not the start.
  results = {"start": (0.0, [run(0.5), run(0.5), run(0.5)]),
             "mle_ft": (0.0, [run(0.2), run(0.3), run(0.1)]),
             "sm_p0.1_ft": (0.1, [run(0.25), run(0.2), run(0.15)])}
  _report(str(tmp_path), results, (0, 1, 2))
  rows = {l.split("|")[1].strip(): l for l in open(tmp_path / "report.md") if l.startswith("| ")}
  assert "| 2/3 |" in rows["sm_p0.1_ft"] and "| - |" in rows["start"]
  # Decoding with <bkspc> forbidden: its own column, '-' for runs evaluated before it existed.
  results["sm_p0.1_ft"][1][0]["accuracy_no_backspace"] = 0.3
  _report(str(tmp_path), results, (0, 1, 2))
  rows = {l.split("|")[1].strip(): l for l in open(tmp_path / "report.md") if l.startswith("| ")}
  assert "| 0.300 |" not in rows["sm_p0.1_ft"]  # a mean over seeds with missing values: nan
  results["sm_p0.1_ft"][1][1]["accuracy_no_backspace"] = 0.2
  results["sm_p0.1_ft"][1][2]["accuracy_no_backspace"] = 0.1
  _report(str(tmp_path), results, (0, 1, 2))
  rows = {l.split("|")[1].strip(): l for l in open(tmp_path / "report.md") if l.startswith("| ")}
  assert "| 0.200 [0.100, 0.300] |" in rows["sm_p0.1_ft"]
  assert "| - | - | - |" in rows["mle_ft"]  # above MLE, no ban, no <bkspc>


def test_compare_finetune_flags_reach_the_runs(tmp_path, monkeypatch):
  """--start_steps trains only the MLE start longer; --ft_lr and --sm_flags reach only the
  runs they name; every *_ft run starts from its own seed's start."""
  from experiments.reports import arithmetic_compare
  calls = []

  def fake_run(workdir, method, overrides, max_questions, tiny=False, steps=0):
    calls.append((os.path.relpath(workdir, tmp_path), method, overrides, steps))
    return dict(accuracy=0.5, backspace_rate=0.0, samples=[])
  monkeypatch.setattr(arithmetic_compare, "run_one", fake_run)
  arithmetic_compare.main([f"--root={tmp_path}", "--protocol=finetune", "--seeds=0,1",
                           "--methods=mle,sm", "--noise=0.1", "--start_steps=4500",
                           "--ft_lr=5e-4", "--sm_flags=horizon=4", "--sm_tag=h4"])
  by_dir = {d: (m, o, s) for d, m, o, s in calls}
  assert sorted(by_dir) == sorted(f"s{i}/{n}" for i in (0, 1) for n in ("mle", "mle_ft",
                                                                      "sm_h4_p0.1_ft"))
  for seed in (0, 1):
    method, over, steps = by_dir[f"s{seed}/mle"]
    assert (method, steps) == ("mle", 4500) and not any("learning_rate" in x for x in over)
    for name, want in (("mle_ft", "mle,ft"), ("sm_h4_p0.1_ft", "sm,ft")):
      method, over, steps = by_dir[f"s{seed}/{name}"]
      assert method == want and steps == 0
      assert "--config.optimizer.learning_rate=0.0005" in over
      assert f"--config.init_from=run:{tmp_path}/s{seed}/mle" in over
      assert f"--config.seed={seed}" in over
      assert ("--config.objective.horizon=4" in over) == (name != "mle_ft")


def test_config_variants_and_finetune_flag():
  from experiments.configs.arithmetic_seqmatch import get_config
  ft, scratch = get_config("sm,ft"), get_config("sm")
  assert ft.train.steps < scratch.train.steps and ft.objective.bc_steps < ft.train.steps
  assert ft.optimizer.learning_rate < scratch.optimizer.learning_rate
  with pytest.raises(ValueError, match="mle\\|bc\\|sm"):
    get_config("sm,fast")
  # The paper's protocol: every method fine-tunes the same pretrained model, whose own
  # tokenizer the task then uses; continuing one of our runs (',ft') cannot also be that.
  sm2 = get_config("sm,smollm2")
  assert sm2.init_from == sm2.task.tokenizer == "smollm2"
  assert sm2.optimizer.learning_rate < ft.optimizer.learning_rate
  with pytest.raises(ValueError, match="pick one"):
    get_config("sm,ft,smollm2")


def test_eval_scores_final_text_and_forbidding_backspace_removes_it(tmp_path):
  """arithmetic_eval decodes greedily with <bkspc>; a policy that loves <bkspc> uses it, and
  the no-<bkspc> decoding never does. Every sample's verdict is the exact-match score of its
  final (collapsed) text."""
  import jax.numpy as jnp
  from experiments.reports import arithmetic_eval
  from experiments.configs import arithmetic_seqmatch
  from experiments.trainer import Trainer
  t = Trainer(arithmetic_seqmatch.get_config("bc,tiny"), str(tmp_path), progress=False)
  state = t.init_state()
  obj = t.objective
  bk, plain_apply = obj.vocab.backspace_id, obj.apply_fn

  def loves_backspace(params, tokens, positions, mask, cache=None):
    logits, cache = plain_apply(params, tokens, positions, mask, cache=cache)
    return logits.at[..., bk].add(30.0), cache
  obj.apply_fn = loves_backspace
  r = arithmetic_eval.evaluate(t, state, max_questions=10, max_actions=6, batch_size=5)
  assert r["num_questions"] == 10 and r["backspace_rate"] > 0.2
  forbidden = arithmetic_eval._evaluate(t, state, 10, 6, 5, False, forbid_backspace=True)
  assert forbidden["backspace_rate"] == 0.0
  assert r["accuracy_no_backspace"] == forbidden["accuracy"]
  for s in r["samples"] + forbidden["samples"]:
    assert s["correct"] == (s["generated"].strip() == s["answer"])
  assert all("<bkspc>" not in s["trace"] for s in forbidden["samples"])
  assert any("<bkspc>" in s["trace"] for s in r["samples"])
