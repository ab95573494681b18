"""catrans.backtrack: the KV-cache decoder with attribute-aware <bkspc> == a slow decoder that
recomputes every state (and its estimate) from scratch; no kept token drops the estimate by
more than the threshold while an alternative exists; the action budget holds."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import backtrack as bt
from catrans import steerers as st
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.config import ModelConfig
from catrans.steering import SteeringConfig, Target

V, EOS, BK = 13, 2, 12          # BK: the <bkspc> action of the "SequenceMatch" variant
T = 6
PROMPTS = np.array([[1, 4, 5, 0], [1, 3, 0, 0], [7, 7, 8, 9]], np.int32)
LENS = np.array([3, 2, 4], np.int32)
WIDTH = 32                      # the reference's padded forward width


@functools.lru_cache(maxsize=None)
def _model(branch="block"):
  cfg = ModelConfig(vocab_size=V, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    mlp_dim=64, max_len=WIDTH, vocab_pad_multiple=8)
  model = CATModel(cfg, CATConfig(attributes=(AttributeSpec("sentiment", num_classes=3),),
                                  param="factorized", branch=branch))
  params = nn.meta.unbox(jax.jit(functools.partial(model.init, all_tokens=True))(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                        params)
  return model, params


@functools.lru_cache(maxsize=None)
def _forward(model):
  return jax.jit(lambda p, t: model.apply({"params": p}, t, all_tokens=True))


def _last(model, params, seqs):
  toks = np.zeros((len(seqs), WIDTH), np.int32)
  for i, s in enumerate(seqs):
    toks[i, :len(s)] = s
  out = _forward(model)(params, jnp.asarray(toks))
  ri, last = jnp.arange(len(seqs)), jnp.array([len(s) - 1 for s in seqs])
  return (out.logits[ri, last], {k: v[ri, last] for k, v in out.attributes.items()},
          out.hidden[ri, last])


def _estimate(model, params, rule, state, prompt_len):
  """q(state) from scratch: the prompt's marginal, else P(a | state[:-1], state[-1])."""
  if len(state) == prompt_len:
    logits, attrs, _ = _last(model, params, [state])
    return float(bt.prompt_estimate(model, rule, logits, attrs)[0])
  _, attrs, _ = _last(model, params, [state[:-1]])
  return float(bt.target_probs(model, rule, attrs)[0, state[-1]])


def _slow(model, params, rng, policy, rule, max_actions, backspace_id):
  bk_id = V if backspace_id is None else backspace_id
  states = [list(p[:n]) for p, n in zip(PROMPTS, LENS)]
  bans = [{} for _ in states]                 # state length -> banned tokens at that state
  pending, done = [False] * len(states), [False] * len(states)
  trace = np.full((len(states), max_actions), -1, np.int32)
  for step in range(max_actions):
    if all(done):
      break
    logits, attrs, hidden = _last(model, params, states)
    banned = np.zeros((len(states), logits.shape[-1]), bool)
    for b, s in enumerate(states):
      banned[b, sorted(bans[b].get(len(s), ()))] = True
    at_prompt = np.array([len(s) <= n for s, n in zip(states, LENS)])
    steps = np.array([len(s) - n for s, n in zip(states, LENS)], np.int32)
    act, lifted, q_next = (np.asarray(x) for x in bt.decide(
        model, policy, rule, logits, attrs, hidden, jnp.asarray(banned),
        jnp.asarray(at_prompt), jnp.asarray(steps), jax.random.fold_in(rng, step),
        backspace_id))
    for b, s in enumerate(states):
      if done[b]:
        continue
      h = len(s)
      if pending[b] or act[b] == bk_id:
        trace[b, step] = bk_id
        tok = s.pop()
        if pending[b]:
          bans[b].setdefault(h - 1, set()).add(tok)
          assert rule.max_retries is None or len(bans[b][h - 1]) <= rule.max_retries
        pending[b] = False
        continue
      trace[b, step] = act[b]
      q_before = _estimate(model, params, rule, s, LENS[b])
      s.append(int(act[b]))
      bans[b][h + 1] = set()
      pending[b] = (rule.threshold is not None and not lifted[b]
                    and q_before - float(q_next[b]) > rule.threshold)
      done[b] = not pending[b] and (act[b] == EOS or len(s) - LENS[b] >= T)
  return trace, states, pending, done


RULE = bt.BacktrackRule("sentiment", 2, threshold=0.03)
SAMPLE = bt.SamplePolicy(st.combine(st.target(_model()[0], "sentiment", 2, 1.0),
                                    st.MinNewTokens(EOS, 4)), 1.0)
SATISFICE = SteeringConfig(rule="satisficing", targets=(Target("sentiment", 2),), candidates=6,
                           eps=1e-4, threshold=0.4)


def _fast(policy, rule, max_actions, backspace_id, seed=3, branch="block"):
  model, params = _model(branch)
  return bt.backtrack_decode(model, params, PROMPTS, LENS, jax.random.PRNGKey(seed),
                             policy=policy, rule=rule, max_new_tokens=T,
                             max_actions=max_actions, eos_id=EOS, backspace_id=backspace_id)


@pytest.mark.parametrize("policy,backspace_id,branch,rule", [
    (SAMPLE, None, "block", RULE), (SATISFICE, BK, "mlp", RULE),
    (SAMPLE, None, "mlp", bt.BacktrackRule("sentiment", 2, threshold=0.01, max_retries=1))])
def test_backtracking_equals_slow_reference(policy, backspace_id, branch, rule):
  model, params = _model(branch)
  rng = jax.random.PRNGKey(3)
  a = 24
  d = _fast(policy, rule, a, backspace_id, branch=branch)
  trace, states, pending, done = _slow(model, params, rng, policy, rule, a, backspace_id)
  np.testing.assert_array_equal(np.asarray(d.actions), trace)
  bk = V if backspace_id is None else backspace_id
  assert (trace == bk).sum() >= 3                  # the test exercises backtracking
  for b, s in enumerate(states):
    new = s[LENS[b]:]
    assert int(d.lengths[b]) == len(new) and d.new_tokens[b, :len(new)].tolist() == new
    assert bool(d.unresolved[b]) == (pending[b] and not done[b])
    np.testing.assert_allclose(float(d.q[b]), _estimate(model, params, rule, s, LENS[b]),
                               rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(d.num_backspaces, (trace == bk).sum(1))
  np.testing.assert_array_equal(d.num_actions, (trace >= 0).sum(1))


def test_no_kept_token_drops_more_than_the_threshold_and_the_budget_holds():
  model, params = _model()
  for a in (T, T + 3, 40):
    d = _fast(SAMPLE, RULE, a, None, seed=7)
    assert int(d.num_actions.max()) <= a and d.actions.shape[1] == a
    for b in range(len(PROMPTS)):
      if bool(d.unresolved[b]):
        continue
      state = list(PROMPTS[b, :LENS[b]])
      for tok in d.new_tokens[b, :int(d.lengths[b])].tolist():
        q_before = _estimate(model, params, RULE, state, LENS[b])
        logits, attrs, _ = _last(model, params, [state])
        q_all = np.asarray(bt.target_probs(model, RULE, attrs)[0])
        # Dropping only where every token of that state drops (bans lifted).
        assert q_before - q_all[tok] <= RULE.threshold + 1e-5 or np.all(
            q_before - q_all > RULE.threshold), (a, b, state, tok)
        state.append(tok)
  # With the full budget every row resolves and backtracks.
  assert not bool(d.unresolved.any()) and int(d.num_backspaces.sum()) > 0
  # A budget of exactly T actions leaves no room to undo: the rows stop unresolved or finish.
  d = _fast(SAMPLE, RULE, T, None, seed=7)
  assert np.all(np.asarray(d.num_actions) <= T)


def test_without_threshold_and_model_backspace_it_is_plain_decoding():
  """threshold None and no <bkspc> action: the same tokens as catrans.search sampling."""
  from catrans import search
  model, params = _model()
  rule = bt.BacktrackRule("sentiment", 2, threshold=None)
  d = _fast(SAMPLE, rule, T, None)
  ref = search.decode(model, params, PROMPTS, LENS, jax.random.PRNGKey(3),
                      steerer=SAMPLE.steerer, mode="sample", max_new_tokens=T, eos_id=EOS)
  np.testing.assert_array_equal(d.new_tokens, ref.new_tokens)
  assert int(d.num_backspaces.sum()) == 0
