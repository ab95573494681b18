"""seqmatch.decoding: KV-cache decoding with <bkspc> == a slow decoder that recomputes
every state from scratch; illegal backspace at the prompt; eos; rollouts feed masking."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqmatch import decoding as gen
from seqmatch import masking
from tests.seqmatch_testlib import BKSPC, EOS, NUM_ACTIONS, plain_last_logits, tiny_model

T = 10
PROMPTS = np.array([[3, 4, 5, 6], [7, 0, 0, 0], [8, 9, 0, 0], [5, 5, 5, 0]], np.int32)
PROMPT_LENS = np.array([4, 1, 2, 3], np.int32)


@functools.lru_cache(maxsize=None)   # one function object per bias: compiled once
def _biased(apply_fn, bias_items):
  """The model with a bias added to its logits (steers the policy towards <bkspc>/<eos>)."""
  bias = jnp.zeros(NUM_ACTIONS).at[jnp.array([i for i, _ in bias_items])].set(
      jnp.array([v for _, v in bias_items]))

  def f(p, *args, **kw):
    logits, cache = apply_fn(p, *args, **kw)
    return logits + bias, cache
  return f


def _slow_decode(apply_fn, params, rng, temperature, eos_id, ban_undone=False):
  """Recomputes each state's logits with a plain forward over its tokens, every step.
  ban_undone: a token erased back to a state is banned there; a state is named by the push
  that made its last token, so an equal state reached by another path starts unbanned."""
  b = len(PROMPTS)
  states = [list(PROMPTS[i, :PROMPT_LENS[i]]) for i in range(b)]
  pushes = [[-1 - j for j in range(PROMPT_LENS[i])] for i in range(b)]
  banned = [dict() for _ in range(b)]   # push id of the state's last token -> banned tokens
  trace = np.full((b, T), -1, np.int32)
  done = np.zeros(b, bool)
  for step in range(T):
    if done.all():
      break
    logits = plain_last_logits(apply_fn, params, states)
    at_prompt = np.array([len(s) == pl for s, pl in zip(states, PROMPT_LENS)])
    logits = np.array(gen.mask_backspace(jnp.asarray(logits), jnp.asarray(at_prompt), BKSPC))
    for i in range(b):
      for tok in banned[i].get(pushes[i][-1], ()):
        logits[i, tok] = -np.inf
    acts = np.asarray(gen.sample_actions(jnp.asarray(logits), jax.random.fold_in(rng, step),
                                         temperature))
    for i in range(b):
      if done[i]:
        continue
      trace[i, step] = acts[i]
      if acts[i] == BKSPC:
        erased = states[i].pop()
        pushes[i].pop()
        if ban_undone:
          banned[i].setdefault(pushes[i][-1], set()).add(erased)
      else:
        states[i].append(int(acts[i]))
        pushes[i].append(step)
      done[i] = eos_id is not None and acts[i] == eos_id
  return trace, states


def _fast(apply_fn, init_cache_fn, params, rng, **kw):
  f = jax.jit(functools.partial(gen.generate, apply_fn, init_cache_fn, max_actions=T,
                                backspace_id=BKSPC, **kw))
  # Prompt padding set to 1000 (out of range): it must never reach the model.
  prompts = np.where(np.arange(4)[None] < PROMPT_LENS[:, None], PROMPTS, 1000)
  return f(params, prompts, PROMPT_LENS, rng)


@pytest.mark.parametrize("reuse_logits", [True, False])
def test_generation_equals_slow_reference(reuse_logits):
  apply_fn, init_cache_fn, params = tiny_model()
  # Bias towards <bkspc> and <eos> so backspace runs and early stops both happen.
  model = _biased(apply_fn, ((BKSPC, 2.0), (EOS, 0.5)))
  rng = jax.random.key(5)
  g = _fast(model, init_cache_fn, params, rng, eos_id=EOS, temperature=1.0,
            reuse_logits=reuse_logits)
  trace, states = _slow_decode(model, params, rng, 1.0, EOS)
  np.testing.assert_array_equal(np.asarray(g.actions), trace)
  assert (trace == BKSPC).sum() >= 5 and (trace == -1).any()    # the test exercises both
  for i, s in enumerate(states):
    assert int(g.lengths[i]) == len(s)
    np.testing.assert_array_equal(np.asarray(g.tokens[i, :len(s)]), s)
    np.testing.assert_array_equal(np.asarray(g.tokens[i, len(s):]), 0)
    assert bool(g.finished[i]) == (s[-1] == EOS and (trace[i] == EOS).any())
    # The sequences layout collapses to the same final state.
    n = int(g.sequence_lengths[i])
    assert masking.collapse(np.asarray(g.sequences[i, :n]), int(PROMPT_LENS[i]), BKSPC) == s


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_ban_undone_equals_slow_reference(temperature):
  apply_fn, init_cache_fn, params = tiny_model()
  model = _biased(apply_fn, ((BKSPC, 2.0), (EOS, 0.5)))
  rng = jax.random.key(5)
  g = _fast(model, init_cache_fn, params, rng, eos_id=EOS, temperature=temperature,
            ban_undone=True)
  trace, states = _slow_decode(model, params, rng, temperature, EOS, ban_undone=True)
  np.testing.assert_array_equal(np.asarray(g.actions), trace)
  assert (trace == BKSPC).sum() >= 3
  for i, s in enumerate(states):
    np.testing.assert_array_equal(np.asarray(g.tokens[i, :len(s)]), s)


def test_ban_undone_breaks_the_greedy_backspace_loop():
  """A greedy policy that always prefers <bkspc> loops 'x <bkspc> x <bkspc>'; with the ban
  every retry at the prompt is a new token."""
  apply_fn, init_cache_fn, params = tiny_model()
  model = _biased(apply_fn, ((BKSPC, 1e4),))
  loop = np.asarray(_fast(model, init_cache_fn, params, jax.random.key(1),
                          temperature=0.0).actions)
  assert all(len(set(row[0::2])) == 1 for row in loop)
  tries = np.asarray(_fast(model, init_cache_fn, params, jax.random.key(1), temperature=0.0,
                           ban_undone=True).actions)
  assert np.all(tries[:, 1::2] == BKSPC)
  assert all(len(set(row[0::2])) == len(row[0::2]) for row in tries)
  with pytest.raises(ValueError, match="reuse_logits"):
    _fast(apply_fn, init_cache_fn, params, jax.random.key(1), ban_undone=True,
          reuse_logits=False)


def test_greedy_equals_slow_reference():
  apply_fn, init_cache_fn, params = tiny_model()
  rng = jax.random.key(0)
  g = _fast(apply_fn, init_cache_fn, params, rng, temperature=0.0)
  trace, states = _slow_decode(apply_fn, params, rng, 0.0, None)
  np.testing.assert_array_equal(np.asarray(g.actions), trace)
  assert np.all(np.asarray(g.num_actions) == T)


def test_backspace_is_illegal_at_the_prompt_boundary():
  """A policy that always prefers <bkspc> alternates token, <bkspc>, ... and never deletes
  a prompt token."""
  apply_fn, init_cache_fn, params = tiny_model()
  model = _biased(apply_fn, ((BKSPC, 1e4),))
  g = _fast(model, init_cache_fn, params, jax.random.key(1), temperature=0.0)
  acts = np.asarray(g.actions)
  assert np.all(acts[:, 1::2] == BKSPC) and np.all(acts[:, 0::2] != BKSPC)
  np.testing.assert_array_equal(np.asarray(g.lengths), PROMPT_LENS)
  for i in range(len(PROMPTS)):
    np.testing.assert_array_equal(np.asarray(g.tokens[i, :PROMPT_LENS[i]]),
                                  PROMPTS[i, :PROMPT_LENS[i]])


def test_rollout_feeds_one_pass_and_has_no_gradient():
  apply_fn, init_cache_fn, params = tiny_model()
  f = functools.partial(gen.rollout, apply_fn, init_cache_fn=init_cache_fn, max_actions=T,
                        backspace_id=BKSPC, eos_id=EOS)

  def total(p):
    out = f(p, PROMPTS, PROMPT_LENS, jax.random.key(2))
    return jnp.sum(out[0] * 1.0) + jnp.sum(out[2] * 1.0), out
  # Differentiating through the rollout must work (no reverse-mode through while_loop is
  # attempted) and give exactly zero gradient.
  grads, (seq, pl, ln) = jax.jit(jax.grad(total, has_aux=True))(params)
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree_util.tree_leaves(grads))
  one = masking.build_one_pass(seq, pl, ln, vocab_size=NUM_ACTIONS, backspace_id=BKSPC,
                               eos_id=EOS)
  assert seq.shape == (4, 4 + T) and bool(one.is_transition.any())


def test_bad_inputs():
  apply_fn, init_cache_fn, params = tiny_model()
  kw = dict(max_actions=3, backspace_id=BKSPC)
  with pytest.raises(ValueError, match=r"prompts_BxP must be \[B, P\]"):
    gen.generate(apply_fn, init_cache_fn, params, PROMPTS[0], PROMPT_LENS, None, **kw)
  with pytest.raises(ValueError, match="prompt_lens_B must be in"):
    gen.generate(apply_fn, init_cache_fn, params, PROMPTS, np.array([0, 1, 1, 1]), None, **kw)
  with pytest.raises(ValueError, match="not <bkspc>"):
    gen.generate(apply_fn, init_cache_fn, params, np.full((4, 4), BKSPC), PROMPT_LENS, None,
                 **kw)
  with pytest.raises(ValueError, match="prompt id 30 outside the model's 12 actions"):
    gen.generate(apply_fn, init_cache_fn, params, np.full((4, 4), 30), PROMPT_LENS, None, **kw)
  with pytest.raises(ValueError, match="max_actions must be >= 1"):
    gen.generate(apply_fn, init_cache_fn, params, PROMPTS, PROMPT_LENS, None, max_actions=0,
                 backspace_id=BKSPC)
  with pytest.raises(ValueError, match="backspace_id 40 outside the model's 12 actions"):
    gen.generate(apply_fn, init_cache_fn, params, PROMPTS, PROMPT_LENS, None, max_actions=3,
                 backspace_id=40)
