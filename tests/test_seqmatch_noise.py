"""seqmatch.noise: collapse(augmented) == original, noise never an expert target, the
<bkspc> after it is; the three noise kinds; max length; errors."""
import numpy as np
import pytest

from seqmatch import masking, noise
from tests.seqmatch_testlib import BASE_VOCAB, BKSPC, NUM_ACTIONS


def _noise_positions(items, expert, prompt_len):
  """Indices of noise tokens: non-expert action items (each must precede a <bkspc>)."""
  return [t for t in range(prompt_len, len(items)) if not expert[t]]


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_random_noise_collapses_to_original(p):
  rng = np.random.default_rng(0)
  for _ in range(20):
    n, pl = int(rng.integers(2, 12)), int(rng.integers(1, 3))
    tokens = rng.integers(0, BASE_VOCAB, size=n)
    items, expert = noise.augment(tokens, pl, rng, p_noise=p, backspace_id=BKSPC,
                                  base_vocab_size=BASE_VOCAB)
    assert masking.collapse(items, pl, BKSPC) == tokens.tolist()
    assert not expert[:pl].any()
    pos = _noise_positions(items, expert, pl)
    assert len(pos) == {0.0: 0, 1.0: n - pl}.get(p, len(pos))
    for t in pos:
      assert items[t + 1] == BKSPC and expert[t + 1] and items[t] < BASE_VOCAB
    # Every other action item is a real token and an expert target.
    assert expert[pl:].sum() == (n - pl) + len(pos)


def test_noise_rate():
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, BASE_VOCAB, size=4001)
  items, expert = noise.augment(tokens, 1, rng, p_noise=0.3, backspace_id=BKSPC,
                                base_vocab_size=BASE_VOCAB)
  rate = len(_noise_positions(items, expert, 1)) / 4000
  assert abs(rate - 0.3) < 0.03, rate   # 4 sigma ~ 0.029


def test_ground_truth_and_model_noise():
  rng = np.random.default_rng(2)
  tokens = np.array([1, 5, 6, 7, 8])
  seen = []

  def wrong(prefix, true_next, r):
    seen.append((prefix.tolist(), true_next))
    return (true_next + 1) % BASE_VOCAB
  items, expert = noise.augment(tokens, 2, rng, p_noise=1.0, backspace_id=BKSPC,
                                kind="ground_truth", ground_truth_fn=wrong)
  assert items.tolist() == [1, 5, 7, BKSPC, 6, 8, BKSPC, 7, 9, BKSPC, 8]
  assert expert.tolist() == [0, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1]
  assert seen == [([1, 5], 6), ([1, 5, 6], 7), ([1, 5, 6, 7], 8)]
  model_tokens = np.array([0, 0, 3, 4, 0])
  items, _ = noise.augment(tokens, 3, rng, p_noise=1.0, backspace_id=BKSPC, kind="model",
                           model_tokens=model_tokens)
  assert items.tolist() == [1, 5, 6, 4, BKSPC, 7, 0, BKSPC, 8]


def test_max_len_and_batch_feed_one_pass():
  rng = np.random.default_rng(3)
  tokens = np.array([[1, 3, 4, 5, 6, 7, 0], [1, 2, 3, 4, 5, 6, 7]])
  lengths, prompt_lens = np.array([6, 7]), np.array([1, 2])
  items, expert, lens = noise.augment_batch(tokens, lengths, prompt_lens, rng, max_len=9,
                                            p_noise=1.0, backspace_id=BKSPC,
                                            base_vocab_size=BASE_VOCAB)
  assert items.shape == (2, 9) and lens.tolist() == [8, 9]   # 1 and 1 noise pair fit
  for i in range(2):
    assert masking.collapse(items[i, :lens[i]], int(prompt_lens[i]), BKSPC) == \
        tokens[i, :lengths[i]].tolist()
  # Too long for max_len: truncated, no noise.
  it, ex = noise.augment(np.arange(10), 2, rng, p_noise=1.0, backspace_id=BKSPC,
                         base_vocab_size=BASE_VOCAB, max_len=6)
  assert it.tolist() == list(range(6)) and ex.tolist() == [0, 0, 1, 1, 1, 1]
  # Noise tokens are never expert targets of the one-pass transitions; their <bkspc> is.
  one = masking.build_one_pass(items, prompt_lens, lens, vocab_size=NUM_ACTIONS,
                               backspace_id=BKSPC, expert_BxN=expert)
  nxt_is_noise = np.asarray(one.is_transition) & ~np.roll(expert, -1, axis=1)
  assert nxt_is_noise.sum() == 2
  assert not np.any(np.asarray(one.expert) & nxt_is_noise)
  bk_targets = np.asarray(one.is_transition) & (np.asarray(one.next_action) == BKSPC)
  assert bk_targets.sum() == 2 and np.all(np.asarray(one.expert)[bk_targets])


def test_bad_inputs():
  rng = np.random.default_rng(0)
  kw = dict(backspace_id=BKSPC, base_vocab_size=BASE_VOCAB)
  with pytest.raises(ValueError, match="unknown noise kind 'typo'"):
    noise.augment([1, 2], 1, rng, p_noise=0.1, kind="typo", **kw)
  with pytest.raises(ValueError, match="p_noise must be in"):
    noise.augment([1, 2], 1, rng, p_noise=2.0, **kw)
  with pytest.raises(ValueError, match="already contain <bkspc>"):
    noise.augment([1, BKSPC], 1, rng, p_noise=0.1, **kw)
  with pytest.raises(ValueError, match="needs ground_truth_fn"):
    noise.augment([1, 2], 1, rng, p_noise=0.1, kind="ground_truth", **kw)
  with pytest.raises(ValueError, match="model_tokens must have length 2"):
    noise.augment([1, 2], 1, rng, p_noise=0.1, kind="model", model_tokens=[1], **kw)
  with pytest.raises(ValueError, match="not a base-vocabulary token"):
    noise.augment([1, 2], 1, rng, p_noise=1.0, kind="model", model_tokens=[0, 99], **kw)
  with pytest.raises(ValueError, match=r"tokens_BxL must be \[B, L\]"):
    noise.augment_batch([1, 2], [2], [1], rng, max_len=4, p_noise=0.1, **kw)


def test_model_noise_tokens():
  """Samples follow the shifted logits, never <bkspc>, never the true token when excluded."""
  b, l = 3, 6
  tokens = np.random.default_rng(4).integers(0, BASE_VOCAB, size=(b, l))
  # Rows j-1 strongly prefer the true token tokens[:, j], then <bkspc>, then token 7.
  logits = np.zeros((b, l, NUM_ACTIONS), np.float32)
  logits[:, :, BKSPC] = 50.0
  logits[:, :, 7] = 20.0
  for j in range(1, l):
    logits[np.arange(b), j - 1, tokens[:, j]] = 100.0
  import jax
  out = np.asarray(noise.model_noise_tokens(logits, tokens, jax.random.key(0),
                                            base_vocab_size=BASE_VOCAB))
  want = np.where(tokens[:, 1:] == 7, -1, 7)     # 7 unless 7 is the true token
  assert np.all(out[:, 0] == 0)
  assert np.all((out[:, 1:] == want) | ((want == -1) & (out[:, 1:] != 7)))
  assert np.all(out < BASE_VOCAB) and np.all(out[:, 1:] != tokens[:, 1:])
  kept = np.asarray(noise.model_noise_tokens(logits, tokens, jax.random.key(0),
                                             base_vocab_size=BASE_VOCAB, exclude_true=False))
  np.testing.assert_array_equal(kept[:, 1:], tokens[:, 1:])
  with pytest.raises(ValueError, match=r"logits_BxLxA must be \[B, L, A\]"):
    noise.model_noise_tokens(logits[:, :3], tokens, jax.random.key(0), base_vocab_size=11)


def test_batch_ground_truth_noise_reads_each_rows_prompt_length_and_noise_sources():
  tokens = np.array([[1, 5, 6, 7, 8], [1, 9, 10, 4, 0]])
  lengths, prompt_lens = np.array([5, 4]), np.array([2, 3])
  seen = []

  def wrong(prefix, true_next, r, prompt_len):
    seen.append((len(prefix), prompt_len))
    return (true_next + 1) % BASE_VOCAB
  items, expert, lens = noise.augment_batch(
      tokens, lengths, prompt_lens, np.random.default_rng(0), max_len=12, p_noise=1.0,
      backspace_id=BKSPC, kind="ground_truth", prompt_ground_truth_fn=wrong)
  assert seen == [(2, 2), (3, 2), (4, 2), (3, 3)]
  assert items[0].tolist() == [1, 5, 7, BKSPC, 6, 8, BKSPC, 7, 9, BKSPC, 8, 0]
  assert items[1, :lens[1]].tolist() == [1, 9, 10, 5, BKSPC, 4]
  # A noise item's state is the clean prefix it was inserted after: clean[:j].
  src = noise.noise_sources(items, expert, prompt_lens, lens, BKSPC)
  assert src[0].tolist() == [-1, -1, 2, -1, -1, 3, -1, -1, 4, -1, -1, -1]
  assert src[1].tolist() == [-1, -1, -1, 3, -1, -1] + [-1] * 6
