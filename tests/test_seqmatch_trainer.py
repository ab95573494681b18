"""The seqmatch objective inside the trainer: data conversion, augmentation, a real run."""
import numpy as np

import seqmatch
from experiments.configs import arithmetic_seqmatch
from experiments.data import pipeline
from experiments.objectives.seqmatch import rows_to_sequences
from experiments.trainer import Trainer


def _trainer(tmp_path, method):
  return Trainer(arithmetic_seqmatch.get_config(f"{method},tiny"), str(tmp_path), progress=False)


def test_rows_to_sequences_recovers_documents_and_prompts(tmp_path):
  t = _trainer(tmp_path, "bc")
  batch = next(pipeline.make_eval_iterator(t.task, "test", global_batch_size=8,
                                           seq_len=t.seq_len))
  seqs, lengths, prompt_lens = rows_to_sequences(batch)
  tok = t.task.tokenizer
  for i, q in enumerate(list(t.task.source("test"))[:8]):
    doc = [tok.bos_id] + tok.encode(q["prompt"]) + tok.encode(q["answer"]) + [tok.eos_id]
    assert seqs[i, :lengths[i]].tolist() == doc
    assert prompt_lens[i] == 1 + len(tok.encode(q["prompt"]))


def test_augmentation_is_step_seeded_and_collapses_to_the_data(tmp_path):
  t = _trainer(tmp_path, "bc")
  obj = t.objective
  batch = next(pipeline.make_train_iterator(t.task, "train", global_batch_size=8,
                                            seq_len=t.seq_len, seed=0))
  a, b = obj.prepare_batch(batch, 7), obj.prepare_batch(batch, 7)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  c = obj.prepare_batch(batch, 8)
  assert any((a["items"] != c["items"]).any() for _ in [0])
  seqs, lengths, prompt_lens = rows_to_sequences(batch)
  bk = obj.vocab.backspace_id
  noisy = 0
  for i in range(8):
    items = a["items"][i, :a["lengths"][i]]
    noisy += int((items == bk).sum())
    assert seqmatch.collapse(items, int(a["prompt_lens"][i]), bk) == seqs[i, :lengths[i]].tolist()
    # Noise tokens (followed by <bkspc>) are never expert targets; the <bkspc> is.
    for j in np.flatnonzero(items == bk):
      assert a["expert"][i, j] and not a["expert"][i, j - 1]
  assert noisy > 0  # p_noise = 0.1 over ~8 answer tokens x 8 rows


def test_sequencematch_with_rollouts_trains_in_the_compiled_step(tmp_path):
  t = _trainer(tmp_path, "sm")
  state = t.init_state()
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=8, seq_len=t.seq_len,
                                    seed=0)
  losses = []
  for step in range(4):  # bc_steps=2: two BC steps, then the mixture loss with rollouts
    state, m = t.train_step(state, next(it), step)
    losses.append(float(m["loss"]))
    assert np.isfinite(losses[-1]) and float(m["finite"]) == 1.0
  assert "sm/value_term" in m
  # After the warm-up the loss includes L_SM, so it is not the BC loss any more.
  assert abs(float(m["loss"]) - float(m["bc/nll"])) > 1e-3
