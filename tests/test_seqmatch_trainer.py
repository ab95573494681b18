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


def _buffer_config(steps):
  c = arithmetic_seqmatch.get_config("sm,tiny")
  c.objective.update(dict(bc_steps=0, rollouts=4, rollout_every=3))
  c.train.update(dict(steps=steps, log_every=1, eval_every=0, checkpoint_every=100,
                      async_checkpoint=False))
  return c


def test_replay_buffer_refreshes_every_m_steps_and_resumes(tmp_path):
  import json
  import jax
  t = Trainer(_buffer_config(6), str(tmp_path / "ref"), progress=False)
  state = t.init_state()
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=t.batch_size,
                                    seq_len=t.seq_len, seed=0)
  seen = []
  for _ in range(5):
    state, _ = t.train_step(state, next(it))
    aux = jax.device_get(state.aux)
    seen.append((int(aux["refreshed_at"]), aux["items"].copy()))
  # Regenerated at steps 0 and 3 only; in between the rows stay as they were.
  assert [s for s, _ in seen] == [0, 0, 0, 3, 3]
  np.testing.assert_array_equal(seen[0][1], seen[2][1])
  np.testing.assert_array_equal(seen[3][1], seen[4][1])
  assert (seen[0][1] != 0).any() and (seen[0][1] != seen[3][1]).any()

  # Stopped at step 4 (after the step-3 refresh) and resumed: step 5 must use the restored
  # buffer, so the losses are those of the uninterrupted run.
  def losses(workdir):
    with open(workdir / "metrics.jsonl") as f:
      return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}
  Trainer(_buffer_config(6), str(tmp_path / "full"), progress=False).run()
  Trainer(_buffer_config(6), str(tmp_path / "cut"), progress=False).run(until=4)
  Trainer(_buffer_config(6), str(tmp_path / "cut"), progress=False).run()
  full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
  assert sorted(cut) == list(range(1, 7))
  np.testing.assert_allclose([cut[s] for s in range(1, 7)], [full[s] for s in range(1, 7)],
                             rtol=1e-6)


def _model_noise_trainer(tmp_path, method="bc"):
  c = arithmetic_seqmatch.get_config(f"{method},tiny")
  c.objective.update(dict(noise="model", p_noise=0.5))
  return Trainer(c, str(tmp_path), progress=False)


def test_model_noise_is_the_policys_own_mistake_at_the_right_state(tmp_path):
  import jax
  import jax.numpy as jnp
  t = _model_noise_trainer(tmp_path)
  obj = t.objective
  batch = next(pipeline.make_train_iterator(t.task, "train", global_batch_size=8,
                                            seq_len=t.seq_len, seed=0))
  prepared = obj.prepare_batch(batch, 3)
  base, bk = obj.vocab.base_vocab_size, obj.vocab.backspace_id

  # A policy whose favourite next token after x is x+1 and runner-up x+2: the noise at a
  # slot inserted before clean token j must be clean[j-1]+1, or +2 where +1 is the truth.
  def fake_apply(params, tokens, positions, mask, cache=None):
    del params, positions, mask
    hot = lambda k: jax.nn.one_hot((tokens + k) % base, obj.vocab.num_actions)
    return 50.0 * hot(1) + 40.0 * hot(2), cache
  obj.apply_fn = fake_apply
  filled = jax.device_get(obj.fill_model_noise(None, jax.tree.map(jnp.asarray, prepared),
                                               jax.random.key(0)))
  seqs, lengths, _ = rows_to_sequences(batch)
  slots = 0
  for i in range(8):
    n, pl = int(prepared["lengths"][i]), int(prepared["prompt_lens"][i])
    items, clean = filled["items"][i, :n], seqs[i, :lengths[i]]
    assert seqmatch.collapse(items, pl, bk) == clean.tolist()
    for k in np.flatnonzero(prepared["noise_source"][i] >= 0):
      j = int(prepared["noise_source"][i, k])
      assert items[k + 1] == bk and not prepared["expert"][i, k]
      want = (clean[j - 1] + 1) % base
      want = (clean[j - 1] + 2) % base if want == clean[j] else want
      assert items[k] == want, (i, k, j)
      slots += 1
  assert slots > 4
  # Every other item is untouched.
  keep = prepared["noise_source"] < 0
  np.testing.assert_array_equal(filled["items"][keep], prepared["items"][keep])


def test_model_noise_trains_and_unknown_noise_kind_fails(tmp_path):
  import pytest
  t = _model_noise_trainer(tmp_path / "sm", "sm")
  state = t.init_state()
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=8, seq_len=t.seq_len,
                                    seed=0)
  for step in range(3):
    state, m = t.train_step(state, next(it), step)
    assert np.isfinite(float(m["loss"])) and float(m["finite"]) == 1.0
  c = arithmetic_seqmatch.get_config("sm,tiny")
  c.objective.noise = "models"
  with pytest.raises(ValueError, match="objective.noise='models'"):
    Trainer(c, str(tmp_path / "bad"), progress=False)


def test_objective_horizon_rescales_exactly_the_sequencematch_term(tmp_path):
  """objective.horizon only changes the normaliser of the gamma^i weights, and L_SM is linear
  in them: on the same state and batch, L_SM(H) = L_SM(N - 1) * z(N - 1) / z(H)."""
  import pytest
  losses = {}
  for horizon in (0, 4):
    c = arithmetic_seqmatch.get_config("sm,tiny")
    c.objective.horizon = horizon
    t = Trainer(c, str(tmp_path / f"h{horizon}"), progress=False)
    it = pipeline.make_train_iterator(t.task, "train", global_batch_size=8, seq_len=t.seq_len,
                                      seed=0)
    _, m = t.train_step(t.init_state(), next(it), 3)   # past the BC warm-up (bc_steps=2)
    losses[horizon] = float(m["sm/loss"])
  g = c.objective.gamma
  z = lambda h: sum(g ** j for j in range(h))
  want = losses[0] * z(c.objective.max_items - 1) / z(4)
  assert losses[4] == pytest.approx(want, rel=1e-4)
  assert abs(losses[4] - losses[0]) > 1e-3


def test_seqmatch_configs_expose_every_objective_key():
  """A --config.objective.KEY=V override needs KEY in the config: the arithmetic and Markov
  comparisons pass objective keys on the command line (arithmetic_compare --sm_flags)."""
  from experiments.configs import markov_seqmatch
  from experiments.objectives.seqmatch import DEFAULTS
  for module in (arithmetic_seqmatch, markov_seqmatch):
    for method in ("mle", "bc", "sm"):
      missing = set(DEFAULTS) - set(module.get_config(method).objective)
      assert not missing, (module.__name__, method, missing)
