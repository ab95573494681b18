"""seqmatch.masking: one-pass rows == plain forwards of collapsed states; collapse; errors."""
import jax
import numpy as np
import pytest

from seqmatch import masking
from tests.seqmatch_testlib import BKSPC, NUM_ACTIONS, plain_last_logits, random_sequences, tiny_model


def test_reference_collapse_examples():
  assert masking.collapse([5, 6, 7, 9, BKSPC, BKSPC, 8], 2, BKSPC) == [5, 6, 8]
  states = masking.collapse_states([5, 6, 7, BKSPC, 9], 1, BKSPC)
  assert states == [[5], [5, 6], [5, 6, 7], [5, 6], [5, 6, 9]]
  with pytest.raises(ValueError, match="delete a prompt token"):
    masking.collapse([5, 6, BKSPC], 2, BKSPC)
  with pytest.raises(ValueError, match="inside the prompt"):
    masking.collapse([5, BKSPC, 6], 2, BKSPC)


def test_collapse_jax_matches_reference():
  seq, pl, ln = random_sequences(np.random.default_rng(0), 16, 14)
  states, lens = jax.jit(lambda s, p, l: masking.collapse_jax(s, p, l, backspace_id=BKSPC,
                                                              pad_id=-1))(seq, pl, ln)
  for b in range(16):
    ref = masking.collapse(seq[b, :ln[b]], int(pl[b]), BKSPC)
    assert int(lens[b]) == len(ref)
    np.testing.assert_array_equal(np.asarray(states[b, :len(ref)]), ref)
    assert np.all(np.asarray(states[b, len(ref):]) == -1)


def test_one_pass_logits_equal_plain_forward_of_collapsed_states():
  apply_fn, _, params = tiny_model()
  rng = np.random.default_rng(1)
  seq, pl, ln = random_sequences(rng, 6, 16)
  # Force the edge cases: a backspace straight after the prompt, a run down to the prompt.
  seq[0] = [4, 5, 6, BKSPC, 7, 8, BKSPC, BKSPC, 9, 9, 9, BKSPC, 3, BKSPC, BKSPC, BKSPC]
  pl[0], ln[0] = 2, 16
  one = masking.build_one_pass(seq, pl, ln, vocab_size=NUM_ACTIONS, backspace_id=BKSPC)
  logits, _ = jax.jit(apply_fn)(params, one.tokens, one.positions, one.mask)
  logits = np.asarray(logits)
  checked = 0
  for b in range(seq.shape[0]):
    states = masking.collapse_states(seq[b, :ln[b]], int(pl[b]), BKSPC)
    ref = plain_last_logits(apply_fn, params, states)
    np.testing.assert_allclose(logits[b, :ln[b]], ref, atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(one.state_len[b, :ln[b]]),
                                  [len(s) for s in states])
    checked += int(ln[b])
  assert checked > 40
  assert bool(one.is_backspace.any())
  # Backspace is illegal exactly where the state is the bare prompt.
  np.testing.assert_array_equal(np.asarray(one.bkspc_illegal[0, 2:8]),
                                [False, True, False, False, False, True])


def test_parallel_construction_equals_the_step_by_step_one():
  """build_one_pass's closed form (method='parallel') gives exactly the scan's rows, masks,
  positions and heights, for valid sequences and, under jit, for illegal <bkspc> at the
  prompt boundary (which must leave the state unchanged), runs of them, and padding."""
  rng = np.random.default_rng(3)
  seq, pl, ln = random_sequences(rng, 24, 18)
  seq[0] = [4, 5, BKSPC, BKSPC, 6, BKSPC, BKSPC, BKSPC, 7, 8, 9, BKSPC, BKSPC, BKSPC, BKSPC,
            BKSPC, 3, 3]                      # illegal <bkspc> runs at the boundary
  pl[0], ln[0] = 2, 18
  seq[1, :] = BKSPC                           # a prompt made of <bkspc> ids (tokens there)
  pl[1], ln[1] = 3, 9
  build = jax.jit(lambda s, p, l, m: masking.build_one_pass(
      s, p, l, vocab_size=NUM_ACTIONS, backspace_id=BKSPC, eos_id=2, method=m),
      static_argnums=3)
  fast, slow = build(seq, pl, ln, "parallel"), build(seq, pl, ln, "scan")
  for name, x, y in zip(masking.OnePass._fields, fast, slow):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
  with pytest.raises(ValueError, match="parallel"):
    masking.build_one_pass(seq, pl, ln, vocab_size=NUM_ACTIONS, backspace_id=BKSPC,
                           method="loop")


def test_one_pass_row_bookkeeping():
  seq = np.array([[1, 5, 6, BKSPC, 2, 0, 0]], np.int32)
  expert = np.array([[0, 1, 0, 1, 1, 0, 0]], bool)
  one = masking.build_one_pass(seq, np.array([1]), np.array([5]), vocab_size=NUM_ACTIONS,
                               backspace_id=BKSPC, eos_id=2, expert_BxN=expert)
  np.testing.assert_array_equal(one.is_transition[0], [1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(one.next_action[0], [5, 6, BKSPC, 2, 0, 0, 0])
  np.testing.assert_array_equal(one.transition_index[0], [0, 1, 2, 3, 0, 0, 0])
  np.testing.assert_array_equal(one.done[0], [0, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(one.expert[0], [1, 0, 1, 1, 0, 0, 0])
  # The backspace row is a copy of token 5 at position 1; rows 1 (original) and 2 are dead.
  assert int(one.tokens[0, 3]) == 5 and int(one.positions[0, 3]) == 1
  np.testing.assert_array_equal(one.mask[0, 3], [1, 0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(one.mask[0, 4], [1, 0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(one.mask[0, 5], [0, 0, 0, 0, 0, 1, 0])  # padding: self only
  # Under jit (value checks skipped, shapes still checked) the result is identical.
  jitted = jax.jit(lambda s, p, l, e: masking.build_one_pass(
      s, p, l, vocab_size=NUM_ACTIONS, backspace_id=BKSPC, eos_id=2, expert_BxN=e))(
          seq, np.array([1]), np.array([5]), expert)
  for a, b in zip(jitted, one):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_inputs():
  seq = np.array([[1, 5, 6]], np.int32)
  kw = dict(vocab_size=NUM_ACTIONS, backspace_id=BKSPC)
  with pytest.raises(ValueError, match=r"must be \[B, N\]"):
    masking.build_one_pass(seq[0], np.array([1]), np.array([3]), **kw)
  with pytest.raises(ValueError, match="prompt_lens_B must have shape"):
    masking.build_one_pass(seq, np.array([1, 1]), np.array([3]), **kw)
  with pytest.raises(ValueError, match="outside the action vocabulary"):
    masking.build_one_pass(np.array([[1, 5, 99]]), np.array([1]), np.array([3]), **kw)
  with pytest.raises(ValueError, match="lengths_B <= N"):
    masking.build_one_pass(seq, np.array([1]), np.array([4]), **kw)
  with pytest.raises(ValueError, match="delete a prompt token"):
    masking.build_one_pass(np.array([[1, 5, BKSPC, BKSPC]]), np.array([1]), np.array([4]), **kw)
  with pytest.raises(ValueError, match="backspace_id"):
    masking.build_one_pass(seq, np.array([1]), np.array([3]), vocab_size=5, backspace_id=5)


def test_fit_width():
  seq = np.array([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]], np.int32)
  cut, lens = masking.fit_width(seq, np.array([5, 2]), 3, pad_id=-1)
  np.testing.assert_array_equal(cut, [[1, 2, 3], [6, 7, -1]])
  np.testing.assert_array_equal(lens, [3, 2])
  padded, lens = masking.fit_width(seq, np.array([5, 2]), 7, pad_id=-1)
  np.testing.assert_array_equal(padded, [[1, 2, 3, 4, 5, -1, -1], [6, 7, -1, -1, -1, -1, -1]])
  np.testing.assert_array_equal(lens, [5, 2])
  with pytest.raises(ValueError, match="width must be >= 1"):
    masking.fit_width(seq, np.array([5, 2]), 0)
