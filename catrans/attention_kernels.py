"""The fused attention kernels behind catrans.attention: splash and flash (TPU Pallas) and
cuDNN (GPU). Each takes q [B, L, N, H], k / v [B, S, K, H] and a structured
catrans.attention.AttentionMask (catrans.attention.choose has already checked that the
kernel can take it) and returns [B, L, N, H]."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


# --------------------------------------------------------------------------- TPU kernels
def _batch_head_specs(num_q_heads, num_kv_heads):
  """PartitionSpecs [B, heads, L, H] for q and k/v from the active logical-axis rules, or
  None outside a multi-device mesh: a Pallas call is opaque to the SPMD partitioner, so it
  runs inside shard_map on each device's batch (and heads) shard."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return None
  P = jax.sharding.PartitionSpec
  qs = nn.logical_to_mesh_axes(("batch", "heads", None, None))
  ks = nn.logical_to_mesh_axes(("batch", "kv_heads", None, None))
  def size(ax):
    ax = () if ax is None else (ax,) if isinstance(ax, str) else tuple(ax)
    return math.prod(mesh.shape[a] for a in ax)
  if qs[1] != ks[1] or num_q_heads % size(qs[1]) or num_kv_heads % size(ks[1]):
    qs, ks = P(qs[0], None, None, None), P(ks[0], None, None, None)
  return qs, ks


def _sharded(fn, q, k, v, seg, num_q_heads, num_kv_heads):
  specs = _batch_head_specs(num_q_heads, num_kv_heads)
  if specs is None:
    return fn(q, k, v, seg)
  qs, ks = specs
  P = jax.sharding.PartitionSpec
  seg_spec = P(qs[0], None)
  return jax.shard_map(fn, in_specs=(qs, ks, ks, None if seg is None else seg_spec),
                       out_specs=qs, check_vma=False)(q, k, v, seg)


def splash_attention(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, scale: float,
                     interpret: bool = False, block: int = 512):
  from jax.experimental.pallas.ops.tpu.splash_attention import (
      splash_attention_kernel as sk, splash_attention_mask as sm)
  q = jnp.swapaxes(q_BxLxNxH * jnp.asarray(scale, q_BxLxNxH.dtype), 1, 2)  # kernel: no scale
  k, v = jnp.swapaxes(k_BxSxKxH, 1, 2), jnp.swapaxes(v_BxSxKxH, 1, 2)
  n, l, kh, s = q.shape[1], q.shape[2], k.shape[1], k.shape[2]

  def run(q, k, v, seg):
    bq, bk = min(block, l), min(block, s)
    sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                          block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq,
                          block_kv_dq=bk)
    heads = q.shape[1]
    kernel = sk.make_splash_mha(sm.MultiHeadMask([sm.CausalMask((l, s))] * heads),
                                block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                interpret=interpret)
    if seg is None:
      return jax.vmap(kernel)(q, k, v)
    return jax.vmap(lambda a, b_, c, sg: kernel(a, b_, c, segment_ids=sk.SegmentIds(sg, sg)))(
        q, k, v, seg)

  out = _sharded(run, q, k, v, mask.segment_ids, n, kh)
  return jnp.swapaxes(out, 1, 2)


def flash_attention(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, scale: float,
                    interpret: bool = False, block: int = 512):
  from jax.experimental.pallas import tpu as pltpu
  from jax.experimental.pallas.ops.tpu import flash_attention as fa
  n, kh = q_BxLxNxH.shape[2], k_BxSxKxH.shape[2]
  q = jnp.swapaxes(q_BxLxNxH, 1, 2)
  # No GQA in this kernel: each kv head repeated to its group of query heads.
  k = jnp.repeat(jnp.swapaxes(k_BxSxKxH, 1, 2), n // kh, axis=1)
  v = jnp.repeat(jnp.swapaxes(v_BxSxKxH, 1, 2), n // kh, axis=1)
  l, s = q.shape[2], k.shape[2]

  def run(q, k, v, seg):
    bq, bk = min(block, l), min(block, s)
    sizes = fa.BlockSizes(block_q=bq, block_k_major=bk, block_k=bk, block_b=1,
                          block_q_major_dkv=bq, block_k_major_dkv=bk, block_k_dkv=bk,
                          block_q_dkv=bq, block_k_major_dq=bk, block_k_dq=bk, block_q_dq=bq)
    segs = None if seg is None else fa.SegmentIds(seg, seg)
    call = lambda: fa.flash_attention(q, k, v, segment_ids=segs, causal=True,
                                      sm_scale=scale, block_sizes=sizes)
    if interpret:   # the forward only: its backward kernels are traced later, by jax.grad;
      # to interpret those too, wrap the whole differentiated call in force_tpu_interpret_mode.
      with pltpu.force_tpu_interpret_mode():
        return call()
    return call()

  out = _sharded(run, q, k, v, mask.segment_ids, n, n)
  return jnp.swapaxes(out, 1, 2)


def cudnn_attention(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, scale: float):
  kw = {}
  if mask.q_offset is not None:   # one decoded row: it sees the cache up to its own slot
    b = q_BxLxNxH.shape[0]
    kw["key_value_seq_lengths"] = jnp.broadcast_to(mask.q_offset + 1, (b,)).astype(jnp.int32)
  return jax.nn.dot_product_attention(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, scale=scale,
                                      is_causal=mask.q_offset is None, implementation="cudnn",
                                      **kw)
