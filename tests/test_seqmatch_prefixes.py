"""seqmatch.prefixes: rollout prompts are prefixes of the collapsed data states."""
import jax
import numpy as np
import pytest

from seqmatch import masking, prefixes
from tests.seqmatch_testlib import BKSPC, random_sequences


def test_prompts_are_collapsed_prefixes_with_uniform_cuts():
  seq, pl, ln = random_sequences(np.random.default_rng(0), 8, 12)
  f = jax.jit(lambda s, p, l, k: prefixes.data_prefix_prompts(s, p, l, k, backspace_id=BKSPC,
                                                              max_len=10, pad_id=-1))
  cuts = {b: set() for b in range(8)}
  for k in range(12):
    prompts, cut = f(seq, pl, ln, jax.random.key(k))
    prompts, cut = np.asarray(prompts), np.asarray(cut)
    assert prompts.shape == (8, 10)
    for b in range(8):
      state = masking.collapse(seq[b, :ln[b]], int(pl[b]), BKSPC)
      assert min(pl[b], 10) <= cut[b] <= min(len(state), 10)
      assert prompts[b, :cut[b]].tolist() == state[:cut[b]]
      assert np.all(prompts[b, cut[b]:] == -1)
      cuts[b].add(int(cut[b]))
  # Over 12 draws, rows with room for several cuts get more than one.
  state_lens = [len(masking.collapse(seq[b, :ln[b]], int(pl[b]), BKSPC)) for b in range(8)]
  roomy = [b for b in range(8) if min(state_lens[b], 10) - pl[b] >= 2]
  assert roomy and all(len(cuts[b]) > 1 for b in roomy)
  with pytest.raises(ValueError, match="max_len must be >= 1"):
    prefixes.data_prefix_prompts(seq, pl, ln, jax.random.key(0), backspace_id=BKSPC, max_len=0)
