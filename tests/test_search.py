"""catrans.steerers + catrans.search: steerers compose by addition, the band steerer is
log P(lo <= a <= hi), cached decoding == recomputing every state, beam search of width 1 ==
greedy, and beam search of width V^T == exhaustive search (which beats greedy somewhere)."""
import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import sampling
from catrans import search
from catrans import steerers as st
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.config import ModelConfig

ATTRS = (AttributeSpec("sentiment", num_classes=3), AttributeSpec("rating", kind="numeric"))
EOS = 2


@functools.lru_cache(maxsize=None)
def _model(vocab=13, branch="mlp", seed=0):
  cfg = ModelConfig(vocab_size=vocab, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    mlp_dim=64, max_len=16, vocab_pad_multiple=8)
  model = CATModel(cfg, CATConfig(attributes=ATTRS, param="factorized", branch=branch))
  params = nn.meta.unbox(jax.jit(functools.partial(model.init, all_tokens=True))(
      jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  # Random biases too, so the bias tables are exercised and distributions less flat.
  params = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(
      jax.random.PRNGKey(seed + 1), x.shape), params)
  return model, params


def _steerer(model, eos=True):
  parts = [st.target(model, "sentiment", 2, 2.0), st.target(model, "rating", None, 0.5,
                                                            band=(0.0, 1.0))]
  if eos:
    parts += [st.MinNewTokens(EOS, 2), st.BanTokens((5,))]
  return st.combine(*parts)


@functools.lru_cache(maxsize=None)
def _full_forward(model):
  return jax.jit(lambda p, t: model.apply({"params": p}, t, all_tokens=True))


def _last_state(model, params, seqs, width=16):
  """(logits, attrs, hidden) at the last token of each sequence, by a plain forward over the
  whole sequence (right-padded to a fixed width: one compilation)."""
  toks = np.zeros((len(seqs), width), np.int32)
  for i, s in enumerate(seqs):
    toks[i, :len(s)] = s
  out = _full_forward(model)(params, jnp.asarray(toks))
  last = jnp.array([len(s) - 1 for s in seqs])
  ri = jnp.arange(len(seqs))
  return (out.logits[ri, last], {k: v[ri, last] for k, v in out.attributes.items()},
          out.hidden[ri, last])


def _slow_decode(model, params, prompts, n, steerer, *, temperature, rng, eos=None):
  """Recomputes every state from scratch each step; same scores, same rng as search.decode."""
  seqs = [list(p) for p in prompts]
  done = [False] * len(seqs)
  new = [[] for _ in seqs]
  total = np.zeros(len(seqs))
  for i in range(n):
    logits, attrs, hidden = _last_state(model, params, seqs)
    score = search.token_scores(steerer, logits, attrs, hidden, i)
    tok = np.asarray(sampling.choose(score, jax.random.fold_in(rng, i),
                                     temperature=temperature))
    for b in range(len(seqs)):
      if done[b]:
        continue
      total[b] += float(score[b, tok[b]])
      seqs[b].append(int(tok[b]))
      new[b].append(int(tok[b]))
      done[b] = eos is not None and tok[b] == eos
  return new, total


def _sequence_score(model, params, prompt, new, steerer):
  """Sum over the new tokens of log p + steerer, each state recomputed from scratch."""
  states = [list(prompt) + list(new[:i]) for i in range(len(new))]
  logits, attrs, hidden = _last_state(model, params, states)
  score = search.token_scores(steerer, logits, attrs, hidden, jnp.arange(len(new)))
  return float(score[jnp.arange(len(new)), jnp.asarray(new)].sum())


PROMPTS = np.array([[1, 4, 5, 0], [1, 3, 0, 0], [7, 7, 8, 9]], np.int32)
LENS = np.array([3, 2, 4], np.int32)


def _prompt_list():
  return [list(p[:n]) for p, n in zip(PROMPTS, LENS)]


def _synthetic_attrs(b=2, v=7, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  attrs = {"sentiment": jax.random.normal(k[0], (b, v, 3)),
           "rating": jnp.stack([3 * jax.random.normal(k[1], (b, v)),
                                jax.random.normal(k[2], (b, v))], -1)}
  return jax.random.normal(k[3], (b, v)), attrs, jnp.zeros((b, 4))


def test_combine_is_the_sum_of_the_parts():
  model, _ = _model()
  logits, attrs, hidden = _synthetic_attrs()
  a = st.target(model, "sentiment", 1, 1.5)
  b = st.target(model, "rating", 2.0, 0.7)
  c = st.MinNewTokens(EOS, 3)
  args = (logits, attrs, hidden, jnp.array([1, 5]))
  np.testing.assert_allclose(st.combine(a, b)(*args), a(*args) + b(*args), rtol=1e-6)
  nested = st.combine(st.combine(a, b), 2.0 * c)
  np.testing.assert_allclose(nested(*args), a(*args) + b(*args) + 2 * c(*args), rtol=1e-6)
  assert nested == st.combine(a, b, st.Scaled(c, 2.0)) and hash(nested) == hash(
      st.combine(a, b, st.Scaled(c, 2.0)))                    # jit-static
  assert nested.attributes == ("sentiment", "rating") and (a + b).attributes == nested.attributes
  # MinNewTokens reads the per-row step: row 0 (step 1) has EOS masked, row 1 (step 5) not.
  m = c(*args)
  assert m[0, EOS] <= sampling.NEG / 2 and float(m[1, EOS]) == 0 and float(m[:, 3].max()) == 0
  np.testing.assert_allclose(a(*args), 1.5 * jax.nn.log_softmax(attrs["sentiment"])[..., 1],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="numeric"):
    st.AttributeTarget(ATTRS[1], 1)


def test_band_is_the_log_probability_of_the_interval_and_stable_in_the_tails():
  mean = jnp.array([0.0, 1.0, -2.0, 30.0, -30.0, 0.5])
  logvar = jnp.array([0.0, 1.0, -1.0, 0.0, 0.0, -4.0])
  lo, hi = 0.2, 1.3
  got = st.log_prob_in_band(mean, logvar, lo, hi)
  # Reference in float64: P = Q(z_lo) - Q(z_hi), Q(z) = erfc(z / sqrt 2) / 2.
  q = lambda z: 0.5 * math.erfc(z / math.sqrt(2))
  ref = np.array([math.log(q((lo - m) / math.exp(0.5 * lv)) - q((hi - m) / math.exp(0.5 * lv)))
                  for m, lv in zip(mean.tolist()[:3] + [0, 0, mean.tolist()[5]],
                                   logvar.tolist()[:3] + [0, 0, logvar.tolist()[5]])])
  np.testing.assert_allclose(got[:3], ref[:3], rtol=1e-5)
  np.testing.assert_allclose(got[5], ref[5], rtol=1e-5)
  # Far tails: the plain formula underflows to -inf; ours follows the Gaussian tail
  # log Q(z) ~ -z^2 / 2 - log(z sqrt(2 pi)) at the band's near edge (z = 28.7 and 30.2).
  tail = lambda z: -z * z / 2 - math.log(z * math.sqrt(2 * math.pi))
  np.testing.assert_allclose(got[3:5], [tail(28.7), tail(30.2)], atol=0.05)


def test_band_steerer_pushes_the_expected_value_into_the_band():
  model, _ = _model()
  logits, attrs, hidden = _synthetic_attrs(b=64, v=50, seed=3)
  mean = attrs["rating"][..., 0]
  lo, hi = 1.0, 2.5
  band = st.target(model, "rating", None, 10.0, band=(lo, hi))
  plain = jnp.argmax(jax.nn.log_softmax(logits), -1)
  steered = jnp.argmax(jax.nn.log_softmax(logits) + band(logits, attrs, hidden, 0), -1)
  pick = lambda tok: np.asarray(jnp.take_along_axis(mean, tok[:, None], 1)[:, 0])
  inside = lambda x: (x >= lo) & (x <= hi)
  assert inside(pick(steered)).mean() > 0.9 and inside(pick(plain)).mean() < 0.4


@pytest.mark.parametrize("mode,branch", [("greedy", "block"), ("sample", "mlp")])
def test_cached_decoding_equals_recompute(mode, branch):
  model, params = _model(branch=branch)
  steerer = _steerer(model)
  rng = jax.random.PRNGKey(4)
  temperature = 1.0 if mode == "sample" else 0.0
  d = search.decode(model, params, PROMPTS, LENS, rng, steerer=steerer, mode=mode,
                    max_new_tokens=6, eos_id=EOS)
  new, total = _slow_decode(model, params, _prompt_list(), 6, steerer,
                            temperature=temperature, rng=rng, eos=EOS)
  for i, ref in enumerate(new):
    assert d.new_tokens[i, :len(ref)].tolist() == ref and int(d.lengths[i]) == len(ref)
    assert np.all(np.asarray(d.new_tokens[i, len(ref):]) == 0)
    assert 5 not in ref and EOS not in ref[:2]             # the masks hold
  np.testing.assert_allclose(d.score, total, rtol=2e-4, atol=2e-4)


def test_beam_width_one_is_greedy():
  model, params = _model(branch="block")
  steerer = _steerer(model)
  kw = dict(steerer=steerer, max_new_tokens=7, eos_id=EOS)
  g = search.decode(model, params, PROMPTS, LENS, mode="greedy", **kw)
  b1 = search.decode(model, params, PROMPTS, LENS, mode="beam", beam_width=1, **kw)
  np.testing.assert_array_equal(g.new_tokens, b1.new_tokens)
  np.testing.assert_array_equal(g.lengths, b1.lengths)
  np.testing.assert_allclose(g.score, b1.score, rtol=1e-5)


def test_full_width_beam_is_exhaustive_search_and_beats_greedy_somewhere():
  v, t = 5, 3
  model, params = _model(vocab=v, branch="block", seed=2)
  steerer = st.combine(st.target(model, "sentiment", 0, 1.0), st.target(model, "rating", 1.0, 0.3))
  prompts = np.array([[1, 2, 0], [3, 0, 0], [4, 4, 1], [0, 3, 2]], np.int32)
  lens = np.array([2, 1, 3, 3], np.int32)
  beam = search.decode(model, params, prompts, lens, mode="beam", beam_width=v ** t,
                       steerer=steerer, max_new_tokens=t)
  greedy = search.decode(model, params, prompts, lens, mode="greedy", steerer=steerer,
                         max_new_tokens=t)
  assert np.all(np.isfinite(np.asarray(beam.beam_scores)))  # every path is a beam
  gaps = []
  for i, (p, n) in enumerate(zip(prompts, lens)):
    paths = list(itertools.product(range(v), repeat=t))
    states = [list(p[:n]) + list(path[:j]) for path in paths for j in range(t)]
    logits, attrs, hidden = _last_state(model, params, states)
    steps = jnp.tile(jnp.arange(t), len(paths))
    sc = search.token_scores(steerer, logits, attrs, hidden, steps)
    chosen = jnp.asarray([tok for path in paths for tok in path])
    totals = np.asarray(sc[jnp.arange(len(states)), chosen].reshape(len(paths), t).sum(-1))
    best = int(np.argmax(totals))
    assert beam.new_tokens[i].tolist() == list(paths[best])
    np.testing.assert_allclose(beam.score[i], totals[best], rtol=1e-4)
    np.testing.assert_allclose(np.sort(np.asarray(beam.beam_scores[i]))[::-1],
                               np.sort(totals)[::-1], rtol=1e-4, atol=1e-4)
    gaps.append(float(beam.score[i] - greedy.score[i]))
  assert min(gaps) >= -1e-4 and max(gaps) > 1e-2, gaps       # greedy is myopic somewhere


def test_beam_with_eos_scores_its_answer_exactly():
  model, params = _model(branch="mlp", seed=1)
  steerer = st.combine(st.target(model, "sentiment", 1, 1.0), st.Scaled(
      st.BanTokens((EOS,)), 0.0))
  for lp in (0.0, 1.0):
    d = search.decode(model, params, PROMPTS, LENS, mode="beam", beam_width=4, steerer=steerer,
                      max_new_tokens=6, eos_id=EOS, length_penalty=lp)
    ranks = np.asarray(d.beam_scores)
    assert (np.asarray(d.beam_lengths) < 6).any()           # some beams finished with EOS
    assert np.all(np.diff(ranks, axis=1) <= 1e-6)           # best first
    for i, prompt in enumerate(_prompt_list()):
      n = int(d.lengths[i])
      new = d.new_tokens[i, :n].tolist()
      assert EOS not in new[:-1] and np.all(np.asarray(d.new_tokens[i, n:]) == 0)
      ref = _sequence_score(model, params, prompt, new, steerer)
      np.testing.assert_allclose(d.score[i], ref, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(ranks[i, 0], ref / n ** lp, rtol=1e-4, atol=1e-4)
