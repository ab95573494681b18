"""Shared test helpers for the seqmatch tests: a tiny catrans model wrapped as a model
function (tests may import catrans; the seqmatch library may not) and random sequences."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import catrans

BASE_VOCAB = 11           # real tokens 0..10
BKSPC = BASE_VOCAB        # <bkspc> = 11
NUM_ACTIONS = BASE_VOCAB + 1
EOS = 2


@functools.lru_cache(maxsize=None)
def tiny_model(seed: int = 0, max_len: int = 64):
  cfg = catrans.ModelConfig(vocab_size=NUM_ACTIONS, d_model=32, num_layers=2, num_heads=4,
                            num_kv_heads=2, mlp_dim=64, max_len=max_len, vocab_pad_multiple=8)
  model = catrans.Transformer(cfg)
  # jit: an eager init dispatches op by op and costs seconds on a loaded machine.
  params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32)))

  def apply_fn(p, tokens, positions, mask, cache=None):
    out = model.apply(p, tokens, positions, mask, cache=cache)
    return out.logits, out.cache

  def init_cache_fn(b, s):
    return catrans.init_cache(cfg, b, s)
  return apply_fn, init_cache_fn, params


@functools.lru_cache(maxsize=None)
def _jit(fn):
  return jax.jit(fn)


def plain_last_logits(apply_fn, params, states):
  """Logits of a plain causal forward at the last token of each state (list of lists)."""
  # Fixed padded shapes so one compilation serves every call.
  n = 32 * -(-max(len(s) for s in states) // 32)
  rows = 32 * -(-len(states) // 32)
  toks = np.zeros((rows, n), np.int32)
  for i, s in enumerate(states):
    toks[i, :len(s)] = s
  pos = np.broadcast_to(np.arange(n, dtype=np.int32), toks.shape)
  mask = np.broadcast_to(np.tril(np.ones((n, n), bool)), (rows, n, n))
  logits, _ = _jit(apply_fn)(params, jnp.asarray(toks), jnp.asarray(pos), jnp.asarray(mask))
  last = np.array([len(s) - 1 for s in states])
  return np.asarray(logits)[np.arange(len(states)), last]


def random_sequences(rng, batch, n, *, p_bkspc=0.45, min_prompt=1, max_prompt=4,
                     tokens=(3, BASE_VOCAB), eos=None):
  """Random legal action sequences (prompt + actions, with backspace runs down to the
  prompt) padded to n. Returns (seq_BxN, prompt_lens_B, lengths_B)."""
  seq = np.zeros((batch, n), np.int32)
  pls, lns = np.zeros(batch, np.int32), np.zeros(batch, np.int32)
  for b in range(batch):
    pl = int(rng.integers(min_prompt, max_prompt + 1))
    ln = int(rng.integers(pl, n + 1)) if b else n   # one full-length row, others padded
    items = list(rng.integers(*tokens, size=pl))
    h = pl
    while len(items) < ln:
      if h > pl and rng.random() < p_bkspc:
        items.append(BKSPC)
        h -= 1
      else:
        items.append(int(rng.integers(*tokens)))
        h += 1
    if eos is not None and ln > pl and items[-1] != BKSPC:
      items[-1] = eos
    seq[b, :ln] = items
    pls[b], lns[b] = pl, ln
  return seq, pls, lns
