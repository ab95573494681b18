"""Trunk properties: causality, cache decoding == full forward, masking == removing rows."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import catrans
from catrans import masks

TINY = catrans.ModelConfig(vocab_size=50, d_model=32, num_layers=2, num_heads=4,
                           num_kv_heads=2, mlp_dim=64, max_len=32, vocab_pad_multiple=8)
VARIANTS = {
    "plain": TINY,
    "scan_remat": TINY.replace(scan_layers=True, remat="full"),
    "untied_mha": TINY.replace(tie_embeddings=False, num_kv_heads=4, remat="dots"),
    "features_positions": TINY.replace(
        token_features=(tuple(np.arange(50) % 3 - 1), tuple(np.arange(50) // 10)),
        learned_positions=True),
}


def _init(cfg, b=2, l=12, seed=0):
  model = catrans.Transformer(cfg)
  tokens = jax.random.randint(jax.random.key(seed + 1), (b, l), 0, cfg.vocab_size)
  params = nn.unbox(model.init(jax.random.key(seed), tokens))
  return model, params, tokens


@pytest.mark.parametrize("name", VARIANTS)
def test_causality_through_gradients(name):
  """d(logits of row t)/d(embedding input at s) is exactly zero for every s > t."""
  cfg = VARIANTS[name]
  model, params, tokens = _init(cfg, b=1, l=10)
  emb = model.apply(params, tokens, method=catrans.Transformer.embed_tokens)

  def logits_with_delta(delta_1xLxD):
    # Add a perturbation to the embeddings through an intercept, so the gradient flows
    # through every layer exactly as in a normal call.
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      return out + delta_1xLxD if context.method_name == "embed_tokens" else out
    with nn.intercept_methods(add_delta):
      return model.apply(params, tokens).logits

  # jac[t, s, :] = d(sum of row t's logits) / d(embedding of row s)
  jac_LxLxD = jax.jacrev(lambda d: logits_with_delta(d)[0].sum(-1))(jnp.zeros_like(emb))[:, 0]
  norms_LxL = np.asarray(jnp.abs(jac_LxLxD).sum(-1))
  assert np.all(np.triu(norms_LxL, k=1) == 0.0), norms_LxL        # future rows: exactly 0
  assert np.all(norms_LxL[np.tril_indices(len(norms_LxL))] > 0.0), norms_LxL  # past rows matter


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_token_by_token_equals_full_forward(name):
  cfg = VARIANTS[name]
  model, params, tokens = _init(cfg, b=3, l=11)
  full = model.apply(params, tokens).logits
  cache = catrans.init_cache(cfg, batch_size=3, cache_len=16)
  prefill = 4  # a multi-row prefill, then one token per call
  out = model.apply(params, tokens[:, :prefill], cache=cache)
  rows, cache = [out.logits], out.cache
  step = jax.jit(lambda p, tok, c: model.apply(p, tok, cache=c))
  for t in range(prefill, tokens.shape[1]):
    out = step(params, tokens[:, t:t + 1], cache)
    rows.append(out.logits)
    cache = out.cache
  assert int(cache["index"]) == tokens.shape[1]
  np.testing.assert_allclose(np.concatenate(rows, 1), full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_mask_hiding_rows_equals_forward_without_them(name):
  """Hidden rows are invisible: the kept rows' logits equal a forward pass over the
  shortened sequence with the original positions."""
  cfg = VARIANTS[name]
  model, params, tokens = _init(cfg, b=2, l=12)
  rng = np.random.default_rng(0)
  for _ in range(3):
    keep = np.sort(rng.choice(12, size=7, replace=False))
    keep[0] = 0
    keep = np.unique(keep)
    alive = np.zeros(12, bool)
    alive[keep] = True
    mask = np.tril(np.ones((12, 12), bool)) & alive[None, :]
    np.fill_diagonal(mask, True)   # dead rows still see themselves (their output is ignored)
    positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
    masked = model.apply(params, tokens, positions, mask=jnp.asarray(mask)).logits
    short = model.apply(params, tokens[:, keep], positions[:, keep]).logits
    np.testing.assert_allclose(masked[:, keep], short, atol=2e-5, rtol=2e-5)


def test_segment_ids_equal_separate_documents():
  model, params, _ = _init(TINY)
  a = jax.random.randint(jax.random.key(7), (1, 5), 0, TINY.vocab_size)
  b = jax.random.randint(jax.random.key(8), (1, 4), 0, TINY.vocab_size)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], 1)
  seg = jnp.array([[1] * 5 + [2] * 4 + [0] * 3])
  pos = jnp.array([list(range(5)) + list(range(4)) + [0] * 3])
  out = model.apply(params, packed, pos, segment_ids_BxL=seg).logits
  np.testing.assert_allclose(out[:, :5], model.apply(params, a).logits, atol=2e-5)
  np.testing.assert_allclose(out[:, 5:9], model.apply(params, b).logits, atol=2e-5)
  assert np.all(np.isfinite(out))


def test_scan_and_loop_layers_compute_the_same_function():
  model, params, tokens = _init(TINY)
  scan_cfg = TINY.replace(scan_layers=True)
  layers = [params["params"][f"layer_{i}"] for i in range(TINY.num_layers)]
  stacked = dict(params["params"])
  for i in range(TINY.num_layers):
    del stacked[f"layer_{i}"]
  stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  out = catrans.Transformer(scan_cfg).apply({"params": stacked}, tokens).logits
  np.testing.assert_allclose(out, model.apply(params, tokens).logits, atol=2e-5)


def test_bf16_compute_is_close_to_f32():
  model, params, tokens = _init(TINY)
  f32 = model.apply(params, tokens).logits
  bf16 = catrans.Transformer(TINY.replace(dtype="bfloat16")).apply(params, tokens).logits
  assert bf16.dtype == jnp.float32   # logits always come back in f32 for the losses
  assert float(jnp.max(jnp.abs(bf16 - f32))) < 0.1 * float(jnp.max(jnp.abs(f32)))


def test_logits_cover_only_the_real_vocabulary():
  model, params, tokens = _init(TINY)
  assert params["params"]["embed"]["embedding"].shape[0] == 56   # padded to a multiple of 8
  assert model.apply(params, tokens).logits.shape[-1] == TINY.vocab_size


@pytest.mark.parametrize("kw,msg", [
    (dict(num_heads=4, num_kv_heads=3), "num_kv_heads"),
    (dict(remat="sometimes"), "remat"),
    (dict(dtype="float8"), "dtype"),
])
def test_bad_model_config_is_named(kw, msg):
  with pytest.raises(ValueError, match=msg):
    TINY.replace(**kw)


def test_factored_embedding_equals_a_table_holding_the_sums():
  """token_features only change the input rows: a model with them equals a plain model
  (untied output) whose embedding row of each token is its own row + its feature rows."""
  feats = (tuple(np.arange(50) % 4 - 1), tuple(np.arange(50) // 7))
  cfg = TINY.replace(tie_embeddings=False, token_features=feats)
  model, params, tokens = _init(cfg, b=2, l=9)
  p = params["params"]
  table = p["embed"]["embedding"]
  for i, f in enumerate(feats):
    f = np.asarray(f)
    rows = p[f"feature_embed_{i}"]["embedding"][np.maximum(f, 0)] * (f >= 0)[:, None]
    table = table.at[:len(f)].add(rows)
  plain_params = {k: v for k, v in p.items() if not k.startswith("feature_embed")}
  plain_params["embed"] = {"embedding": table}
  plain = catrans.Transformer(TINY.replace(tie_embeddings=False))
  np.testing.assert_allclose(model.apply(params, tokens).logits,
                             plain.apply({"params": plain_params}, tokens).logits,
                             atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="token_features"):
    TINY.replace(token_features=((0, 1, 2),))


def test_learned_positions_see_absolute_time():
  """Rotary attention alone depends only on distances: shifting every position by the same
  amount leaves the logits unchanged. A learnt position embedding makes them depend on the
  absolute position (a timer), and off it is exactly the plain model."""
  for learned in (False, True):
    model, params, tokens = _init(TINY.replace(learned_positions=learned), b=2, l=8)
    pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
    a = model.apply(params, tokens, pos).logits
    b = model.apply(params, tokens, pos + 5).logits
    assert np.allclose(a, b, atol=1e-4) != learned


def test_unknown_model_config_key_is_named():
  with pytest.raises(ValueError, match="d_modle"):
    catrans.ModelConfig.from_dict({"vocab_size": 10, "d_modle": 3})


def test_masks_module():
  seg = jnp.array([[1, 1, 2, 0]])
  m = np.asarray(masks.segment_mask(seg))[0]
  assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                        [False, False, True, False], [False, False, False, True]]
  cm = np.asarray(masks.cache_causal_mask(2, 2, 5))
  assert cm.tolist() == [[True, True, True, False, False], [True, True, True, True, False]]
