"""catrans.attention: every implementation equals the xla reference (forward and gradients)
on causal, packed, GQA, padded, KV-cache and seqmatch one-pass masks; the structured mask is
exactly catrans.masks; xla's causal row blocks equal one block; auto's choices and
fallbacks; the TPU kernels AOT-compile for v5e."""
import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import catrans
from catrans import attention, masks
from seqmatch import masking

B, N, K, H = 2, 4, 2, 8          # GQA: 2 query heads per kv head
TOL = 2e-6                       # f32 round-off at these sizes (scores of magnitude ~10)


def _qkv(l, s, seed=0):
  r = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(r[0], (B, l, N, H)), jax.random.normal(r[1], (B, s, K, H)),
          jax.random.normal(r[2], (B, s, K, H)))


def _value_and_grads(impl, q, k, v, mask, rows_BxL=None, **kw):
  """out and d/d(q, k, v) of a fixed random projection of the output (rows_BxL: only those
  rows enter the loss)."""
  def loss(q, k, v):
    out = attention.attend(q, k, v, mask, impl=impl, **kw)
    w = jnp.cos(jnp.arange(out.size, dtype=jnp.float32).reshape(out.shape))
    if rows_BxL is not None:
      w = w * rows_BxL[:, :, None, None]
    return (out * w).sum(), out
  (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  return out, grads


def _assert_same(a, b, rows_BxL=None):
  (oa, ga), (ob, gb) = a, b
  w = 1.0 if rows_BxL is None else np.asarray(rows_BxL)[:, :, None, None]
  np.testing.assert_allclose(np.asarray(oa) * w, np.asarray(ob) * w, atol=TOL, rtol=0)
  for x, y in zip(ga, gb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=TOL, rtol=0)


def _one_pass_mask():
  """seqmatch's one-pass rows for action sequences with <bkspc> (id 9): arbitrary masks."""
  seq = np.array([[1, 2, 3, 9, 4, 5, 9, 9, 6, 0, 0, 0, 0, 0],
                  [7, 1, 9, 2, 3, 4, 9, 5, 9, 9, 9, 6, 1, 2]], np.int32)
  one = masking.build_one_pass(seq, np.array([2, 1]), np.array([9, 14]), vocab_size=10,
                               backspace_id=9)
  return one.mask


SEG = np.array([[1] * 9 + [2] * 20 + [3] * 6 + [0] * 5, [4] * 40])
CASES = {   # name: (L, S, mask); chunked runs with block 16, so blocks are partial too
    "causal": (40, 40, attention.AttentionMask()),
    "packed_padded": (40, 40, attention.AttentionMask(segment_ids=jnp.asarray(SEG))),
    "cache_prefill": (5, 24, attention.AttentionMask(q_offset=jnp.asarray(7))),
    "cache_decode": (1, 24, attention.AttentionMask(q_offset=jnp.asarray(19))),
    "one_pass_backspace": (14, 14, None),   # built in the test (not at collection)
}


@pytest.mark.parametrize("case", CASES)
def test_chunked_equals_xla_forward_and_gradients(case):
  l, s, mask = CASES[case]
  mask = attention.as_mask(_one_pass_mask()) if mask is None else mask
  q, k, v = _qkv(l, s)
  ref = _value_and_grads("xla", q, k, v, mask)
  _assert_same(ref, _value_and_grads("chunked", q, k, v, mask, block=16))


def test_structured_mask_is_exactly_the_dense_masks():
  seg = jnp.asarray(SEG)
  am = attention.AttentionMask
  np.testing.assert_array_equal(am().to_dense(6, 6)[0], masks.causal_mask(6))
  np.testing.assert_array_equal(am(segment_ids=seg).to_dense(40, 40), masks.segment_mask(seg))
  np.testing.assert_array_equal(am(q_offset=jnp.asarray(3)).to_dense(2, 9)[0],
                                masks.cache_causal_mask(3, 2, 9))
  # A block of the structured mask is the same block of the dense one (padding slots hidden).
  full = np.asarray(am(segment_ids=seg).to_dense(40, 40))
  blk = np.asarray(am(segment_ids=jnp.pad(seg, ((0, 0), (0, 8)))).block(32, 16, 16, 16, 40))
  np.testing.assert_array_equal(blk[:, :8], full[:, 32:40, 16:32])
  assert not np.asarray(am().block(0, 32, 16, 16, 40))[:, :, 8:].any()  # slots >= S hidden


def test_trunk_chunked_equals_xla_in_training_and_decoding():
  """Through catrans.Transformer: packed training logits and parameter gradients, and
  prefill + token-by-token decoding from the cache, equal under xla and chunked."""
  cfg = catrans.ModelConfig(vocab_size=40, d_model=32, num_layers=1, num_heads=4,
                            num_kv_heads=2, mlp_dim=64, max_len=24, vocab_pad_multiple=8,
                            attention_impl="xla")
  chunk = cfg.replace(attention_impl="chunked", attention_block=8)
  tokens = jax.random.randint(jax.random.key(1), (2, 20), 0, 40)
  seg = jnp.asarray([[1] * 7 + [2] * 10 + [0] * 3, [5] * 20])
  params = nn.unbox(catrans.Transformer(cfg).init(jax.random.key(0), tokens))

  def loss(c, p):
    out = catrans.Transformer(c).apply(p, tokens, segment_ids_BxL=seg)
    return (out.logits * (seg != 0)[..., None] * jnp.sin(jnp.arange(40.0))).sum(), out.logits
  (_, lx), gx = jax.jit(jax.value_and_grad(lambda p: loss(cfg, p), has_aux=True))(params)
  (_, lc), gc = jax.jit(jax.value_and_grad(lambda p: loss(chunk, p), has_aux=True))(params)
  np.testing.assert_allclose(lc, lx, atol=2e-5, rtol=0)
  # Sums of ~1e3 f32 terms: round-off up to ~1e-4 relative.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5, rtol=1e-4), gc, gx)

  def decode(c):
    model, cache = catrans.Transformer(c), catrans.init_cache(c, 2, 24)
    step = jax.jit(lambda p, t, cache: model.apply(p, t, cache=cache))
    out = step(params, tokens[:, :6], cache)
    logits = [out.logits]
    for t in range(6, 8):
      out = step(params, tokens[:, t:t + 1], out.cache)
      logits.append(out.logits)
    return jnp.concatenate(logits, 1)
  np.testing.assert_allclose(decode(chunk), decode(cfg), atol=2e-5, rtol=0)


def test_bad_impl_is_an_error_naming_it():
  with pytest.raises(ValueError, match="attention_impl='flashy'"):
    catrans.ModelConfig(vocab_size=8, attention_impl="flashy")
  with pytest.raises(ValueError, match="attention_block"):
    catrans.ModelConfig(vocab_size=8, attention_block=0)
  q, k, v = _qkv(4, 4)
  with pytest.raises(ValueError, match="attention_impl='fast'"):
    attention.attend(q, k, v, attention.AttentionMask(), impl="fast")


def test_arbitrary_masks_never_reach_a_kernel():
  """A fused kernel would ignore a dense mask: explicit requests fail, auto falls back, on
  every platform."""
  dense = attention.as_mask(_one_pass_mask())
  for impl, plat in (("splash", "tpu"), ("flash", "tpu"), ("cudnn", "gpu")):
    why = attention.kernel_obstacle(impl, dense, 128, 128, 64, jnp.bfloat16, plat)
    assert why and "per-row mask" in why
    assert attention.kernel_obstacle(impl, attention.AttentionMask(), 128, 128, 64,
                                     jnp.bfloat16, plat) is None
  q, k, v = _qkv(14, 14)
  with pytest.raises(ValueError, match="attention_impl='splash' cannot run this call"):
    attention.attend(q, k, v, dense, impl="splash")
  # A call of a shape the kernel does not take (a short init batch) falls back, logged.
  assert attention.choose("splash", attention.AttentionMask(), 14, 14, 8, jnp.float32) == "xla"


def test_cudnn_on_cpu_fails_clearly_and_auto_falls_back_with_one_log_line(caplog):
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(8, 8))
  with pytest.raises(ValueError, match="cudnn needs a CUDA GPU"):
    attention.attend(q, k, v, attention.AttentionMask(), impl="cudnn")
  attention._logged.clear()
  with caplog.at_level(logging.INFO, logger="catrans"):
    a = attention.attend(q, k, v, attention.AttentionMask(), impl="auto")
    attention.attend(q, k, v, attention.AttentionMask(), impl="auto")
  lines = [r.getMessage() for r in caplog.records if r.name == "catrans"]
  assert len(lines) == 1 and "no fused kernel on cpu; using xla" in lines[0], lines
  ref = attention.attend(q, k, v, attention.AttentionMask(), impl="xla")
  np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(ref, np.float32))
  # Long keys: auto takes chunked, and says so.
  assert attention.choose("auto", attention.AttentionMask(), 1, attention.CHUNKED_MIN_KEYS,
                          8, jnp.float32) == "chunked"


def test_splash_interpreted_equals_xla():
  """The TPU splash kernel, run by the Pallas interpreter on CPU: packed segments, GQA,
  forward and gradients (padding rows differ by design: only real rows are compared)."""
  seg = jnp.asarray([[1] * 50 + [2] * 60 + [0] * 18, [3] * 128])
  q, k, v = _qkv(128, 128, seed=2)
  mask = attention.AttentionMask(segment_ids=seg)
  rows = (seg != 0).astype(jnp.float32)
  ref = _value_and_grads("xla", q, k, v, mask, rows)
  _assert_same(ref, _value_and_grads("splash", q, k, v, mask, rows), rows)


def test_tpu_kernels_lower_and_compile_for_v5e():
  """splash (forward + gradient) and flash (forward) compile for a v5e:2x2 slice from this
  CPU host, batch-sharded over its 4 chips through shard_map."""
  pytest.importorskip("libtpu")
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from experiments.tools import aot_compile as aot
  devices = aot.topology_devices("v5e:2x2")
  mesh = Mesh(np.array(devices).reshape(4), ("data",))
  sh = NamedSharding(mesh, P("data"))
  l = 256
  q = jax.ShapeDtypeStruct((4, l, N, 128), jnp.bfloat16, sharding=sh)
  kv = jax.ShapeDtypeStruct((4, l, K, 128), jnp.bfloat16, sharding=sh)
  seg = jax.ShapeDtypeStruct((4, l), jnp.int32, sharding=sh)

  def grad_of(impl):
    def loss(q, k, v, seg):
      out = attention.attend(q, k, v, attention.AttentionMask(segment_ids=seg), impl=impl)
      return out.astype(jnp.float32).sum()
    return jax.grad(loss, argnums=(0, 1, 2))

  fwd = lambda q, k, v, seg: attention.attend(q, k, v, attention.AttentionMask(
      segment_ids=seg), impl="flash")
  with jax.set_mesh(mesh), nn.logical_axis_rules((("batch", "data"),)):
    for fn in (grad_of("splash"), fwd):
      hlo = jax.jit(fn).lower(q, kv, kv, seg)
      assert "tpu_custom_call" in hlo.as_text()
      compiled = hlo.compile()
      assert compiled.memory_analysis().temp_size_in_bytes < 64 * 2 ** 20


@pytest.mark.parametrize("case", ["causal", "packed_padded"])
def test_xla_row_blocks_equal_one_block(case):
  """xla's causal row blocks (uneven: 40 rows in blocks of 14) give the one-block softmax's
  outputs and gradients, and compute fewer scores (only the keys up to their last row)."""
  l, s, mask = CASES[case]
  q, k, v = _qkv(l, s)
  w = jnp.cos(jnp.arange(B * l * N * H, dtype=jnp.float32)).reshape(B, l, K, N // K, H)

  def value_and_grads(blocks):
    def loss(q, k, v):
      out = attention.xla_attention(q.reshape(B, l, K, N // K, H), k, v, mask, H ** -0.5,
                                    row_blocks=blocks)
      return (out * w).sum(), out
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  (_, one), g_one = value_and_grads(1)
  (_, three), g_three = value_and_grads(3)
  np.testing.assert_allclose(three, one, atol=TOL, rtol=0)
  for a, b in zip(g_three, g_one):
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
  # The blocks skip the hidden triangle: scores 14x14 + 14x28 + 12x40 of the 40x40 square.
  flops = lambda blocks: jax.jit(functools.partial(
      attention.xla_attention, mask=mask, scale=1.0, row_blocks=blocks)).lower(
          q.reshape(B, l, K, N // K, H), k, v).compile().cost_analysis()["flops"]
  assert flops(3) < 0.75 * flops(1)
  assert attention.xla_row_blocks(mask, 512, 512) == attention.XLA_ROW_BLOCKS
  # No block's gradient is zero-padded to the full length and summed (that cost 3 x 8 passes
  # over dQ, dK, dV per layer): the backward pass has no pad.
  grads = jax.grad(lambda q, k, v: (attention.xla_attention(
      q.reshape(B, l, K, N // K, H), k, v, mask, 1.0, row_blocks=3) * w).sum(), (0, 1, 2))
  assert " pad" not in str(jax.make_jaxpr(grads)(q, k, v))


def test_xla_row_blocks_refuse_masks_they_cannot_split():
  q, k, v = _qkv(5, 24)
  q5 = q.reshape(B, 5, K, N // K, H)
  with pytest.raises(ValueError, match="row_blocks=2: .* structured causal"):
    attention.xla_attention(q5, k, v, attention.AttentionMask(q_offset=jnp.asarray(7)), 1.0,
                            row_blocks=2)
  dense = attention.as_mask(np.tril(np.ones((24, 24), bool)))
  q, k, v = _qkv(24, 24)
  with pytest.raises(ValueError, match="row_blocks=2: .* structured causal"):
    attention.xla_attention(q.reshape(B, 24, K, N // K, H), k, v, dense, 1.0, row_blocks=2)
  with pytest.raises(ValueError, match="row_blocks=0: need an integer >= 1"):
    attention.xla_attention(q.reshape(B, 24, K, N // K, H), k, v, attention.AttentionMask(),
                            1.0, row_blocks=0)
  # A dense mask or a cache call keeps one block by default.
  assert attention.xla_row_blocks(dense, 512, 512) == 1
  assert attention.xla_row_blocks(attention.AttentionMask(q_offset=jnp.asarray(0)), 512,
                                  512) == 1
