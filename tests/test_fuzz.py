"""Fuzzing the public entry points with hypothesis: every input either works (with the
properties that define working) or fails with a ValueError/KeyError that names the problem.
Never an XLA error, a NaN or a silent clamp."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqmatch
from catrans import ModelConfig, Transformer
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.inference import counterfactuals, estimate
from catrans.objective import cat_loss
from catrans.steering import SteeringConfig, Target, steered_decode
from experiments.data import documents
from experiments.data.tokenizers import ByteTokenizer

V = 11
CFG = ModelConfig(vocab_size=V, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1,
                  mlp_dim=32, max_len=16)
FUZZ = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@functools.lru_cache(maxsize=None)
def _cat():
  model = CATModel(CFG, CATConfig(attributes=(AttributeSpec("a"),)))
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32),
                                    all_tokens=True)["params"])
  return model, params


token_arrays = st.tuples(st.integers(0, 3), st.integers(0, 5),
                         st.sampled_from([np.int32, np.int64, np.float32, np.bool_]),
                         st.integers(-3, V + 3), st.integers(0, 2 ** 16))


def _make(b, l, dtype, hi, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(min(0, hi), max(hi, 1), size=(b, l)).astype(dtype)


@FUZZ
@given(token_arrays)
def test_trunk_and_estimates_accept_or_name_the_problem(spec):
  b, l, dtype, hi, seed = spec
  tokens = _make(b, l, dtype, hi, seed)
  model, params = _cat()
  valid = (b > 0 and l > 1 and np.issubdtype(dtype, np.integer)
           and tokens.min() >= 0 and tokens.max() < V)
  if not valid:
    with pytest.raises(ValueError, match="tokens_BxL|estimate needs"):
      estimate(model, params, tokens, attribute="a")
    return
  est = estimate(model, params, tokens, attribute="a")
  assert est.q.shape == (b, l) and np.all(np.isfinite(est.q))
  assert np.all((est.q >= 0) & (est.q <= 1))


@FUZZ
@given(st.integers(1, 3), st.integers(1, 20), st.integers(-2, 22), st.integers(1, 8))
def test_steering_rejects_bad_prompts_and_overlong_contexts(b, p, plen, new):
  model, params = _cat()
  prompts = np.ones((b, p), np.int32)
  lens = np.full((b,), plen, np.int32)
  sc = SteeringConfig(rule="weighted", targets=(Target("a", 1, 1.0),), temperature=0.0)
  if p + new > CFG.max_len or not 1 <= plen <= p:
    with pytest.raises(ValueError, match="max_len|prompt_lens_B"):
      steered_decode(model, params, prompts, lens, jax.random.PRNGKey(0), steering=sc,
                     max_new_tokens=new)
    return
  d = steered_decode(model, params, prompts, lens, jax.random.PRNGKey(0), steering=sc,
                     max_new_tokens=new)
  assert d.new_tokens.shape == (b, new) and np.all((d.new_tokens >= 0) & (d.new_tokens < V))


def test_counterfactual_positions_and_unknown_attributes():
  model, params = _cat()
  t = np.ones((2, 5), np.int32)
  with pytest.raises(ValueError, match=r"position_B\[0\] = 0 is outside \[1, 5\)"):
    counterfactuals(model, params, t, np.array([0, 2]), attribute="a")
  with pytest.raises(KeyError, match="no attribute 'b'"):
    counterfactuals(model, params, t, np.array([1, 2]), attribute="b")
  with pytest.raises(ValueError, match="alternatives_BxK"):
    counterfactuals(model, params, t, np.array([1, 2]), attribute="a",
                    alternatives_BxK=np.full((2, 3), V))


def test_all_padding_batch_gives_a_zero_finite_loss():
  model, params = _cat()
  batch = {"inputs": np.zeros((2, 4), np.int32), "targets": np.zeros((2, 4), np.int32),
           "weights": np.zeros((2, 4), np.float32), "label": np.array([-1, -1])}
  loss, m = cat_loss(model, params, batch)
  assert float(loss) == 0.0 and np.isfinite(float(m["ce"]))
  g = jax.grad(lambda p: cat_loss(model, p, batch)[0])(params)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(g))


@FUZZ
@given(st.integers(1, 4), st.integers(1, 6))
def test_backspace_only_actions(prompt_len, k):
  """A prompt then only <bkspc>: beyond the prompt there is nothing to delete, so the very
  first action is illegal, with an error naming it; the jitted masking agrees."""
  seq = np.array([[1] * prompt_len + [V] * k])
  with pytest.raises(ValueError, match="prompt"):
    seqmatch.collapse(seq[0], prompt_len, V)
  with pytest.raises(ValueError, match="bkspc|backspace|prompt"):
    seqmatch.build_one_pass(seq, np.array([prompt_len]), np.array([prompt_len + k]),
                            vocab_size=V + 1, backspace_id=V)


@FUZZ
@given(st.integers(1, 3), st.integers(1, 10), st.integers(0, 2 ** 16))
def test_one_pass_masking_accepts_or_names_the_problem(b, n, seed):
  rng = np.random.default_rng(seed)
  bk = V
  seqs = rng.integers(0, V + 2, size=(b, n))           # V + 1 is out of range
  seqs[rng.random((b, n)) < 0.3] = bk
  prompt = rng.integers(0, n + 2, size=b)
  lengths = rng.integers(0, n + 2, size=b)
  try:
    one = seqmatch.build_one_pass(seqs, prompt, lengths, vocab_size=V + 1, backspace_id=bk)
  except ValueError as e:
    assert any(w in str(e) for w in ("prompt_len", "outside the action", "bkspc", "backspace",
                                     "lengths"))
    return
  for i in range(b):
    states = seqmatch.collapse_states(seqs[i, :lengths[i]], int(prompt[i]), bk)
    assert int(one.state_len[i, lengths[i] - 1]) == len(states[-1])


@FUZZ
@given(st.text(max_size=40), st.text(max_size=40), st.integers(1, 48))
def test_documents_from_arbitrary_text(prompt, answer, seq_len):
  doc = documents.encode_document({"prompt": prompt, "answer": answer}, ByteTokenizer(), seq_len)
  n = len(doc["inputs"])
  assert n <= seq_len and n == len(doc["targets"]) == len(doc["weights"])
  np.testing.assert_array_equal(doc["inputs"][1:], doc["targets"][:-1])
  prompt_len = len(prompt.encode("utf-8"))
  assert not doc["weights"][:prompt_len].any()          # prompt targets carry no loss
  assert doc["inputs"].max(initial=0) < 259


@FUZZ
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(1, 4), max_size=3))
def test_config_loading_names_unknown_keys(extra):
  base = dict(vocab_size=V, d_model=16, num_heads=2, num_kv_heads=1)
  unknown = sorted(k for k in extra if k not in ModelConfig.__dataclass_fields__)
  if unknown:
    with pytest.raises(ValueError, match="unknown model config keys"):
      ModelConfig.from_dict({**base, **{k: extra[k] for k in unknown}})
  with pytest.raises(ValueError, match="unknown CAT config keys"):
    CATConfig.from_dict({"attributes": [{"name": "a"}], "bogus_key": 1})
  with pytest.raises(ValueError, match="unknown attribute keys"):
    AttributeSpec.from_dict({"name": "a", "classes": 3})
