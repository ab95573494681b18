"""catrans.attention's 'chunked' implementation: blockwise online softmax in plain JAX (any
backend), query blocks x key blocks, memory O(L x block). A custom VJP recomputes the scores
block by block, so the backward pass stores no L x S tensor either; causal blocks above the
diagonal are skipped (about half the FLOPs); heads-major like xla (no transposed score copy).
catrans.attention.attend dispatches here."""
import functools

import jax
import jax.numpy as jnp

# Additive bias for hidden keys: finite so a fully hidden row cannot produce NaN, and large
# enough that exp(bias - max) underflows to exactly 0 (hidden keys contribute nothing).
MASK_BIAS = -1e30
DEFAULT_BLOCK = 512


def _pad_to(x, axis: int, size: int, value=0):
  if x is None or x.shape[axis] == size:
    return x
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, pad, constant_values=value)


def _k_blocks_for(mask, q0, bq, bk, nk):
  """Key blocks a query block needs: with a structured causal mask, none above its last slot."""
  if mask.structured and mask.causal:
    last = q0 + bq - 1 + (0 if mask.q_offset is None else mask.q_offset)
    return jnp.clip(last // bk + 1, 0, nk)
  return nk


def _q_block_start(mask, k0, bq):
  """First query block that can see key slot k0 (0 unless structured causal)."""
  if mask.structured and mask.causal:
    first = k0 - (0 if mask.q_offset is None else mask.q_offset)
    return jnp.maximum(first, 0) // bq
  return 0


def _scores(q_blk, k_blk, mask, q0, k0, bq, bk, s, scale):
  """f32 [B, K, G, bq, bk] scores of q_blk [B, K, G*bq, H] (heads-major, as _softmax_attention)
  against k_blk [B, K, bk, H]; hidden slots at MASK_BIAS, padding slots at -inf (a fully
  hidden real row averages its real slots exactly as xla does); and the block mask."""
  b, kh, mq, _ = q_blk.shape
  sc = jnp.einsum("bkmh,bksh->bkms", q_blk, k_blk, preferred_element_type=jnp.float32)
  sc = sc.reshape(b, kh, mq // bq, bq, bk) * scale
  m = mask.block(q0, k0, bq, bk, s)[:, None, None]
  return jnp.where(k0 + jnp.arange(bk) < s, jnp.where(m, sc, MASK_BIAS), -jnp.inf), m


def _q_rows(x, q0, bq):
  """Rows q0..q0+bq of x [B, K, G, L, H] as [B, K, G*bq, H]."""
  b, kh, g, _, h = x.shape
  return jax.lax.dynamic_slice_in_dim(x, q0, bq, 3).reshape(b, kh, g * bq, h)


def _chunked_fwd_impl(q, k, v, mask, s, scale, bq, bk):
  """q [B, K, G, Lp, H], k/v [B, K, Sp, H] -> out [B, K, G, Lp, H], lse [B, K, G, Lp]."""
  b, kh, g, lp, h = q.shape
  nq, nk = lp // bq, k.shape[2] // bk

  def q_block(qb):
    q0 = qb * bq
    q_blk = _q_rows(q, q0, bq)

    def body(kb, carry):
      m_i, l_i, acc = carry
      k0 = kb * bk
      k_blk, v_blk = (jax.lax.dynamic_slice_in_dim(x, k0, bk, 2) for x in (k, v))
      sc, _ = _scores(q_blk, k_blk, mask, q0, k0, bq, bk, s, scale)
      m_new = jnp.maximum(m_i, sc.max(-1))
      alpha = jnp.exp(m_i - m_new)
      p = jnp.exp(sc - m_new[..., None])
      l_i = l_i * alpha + p.sum(-1)
      pv = jnp.einsum("bkms,bksh->bkmh", p.astype(q.dtype).reshape(b, kh, g * bq, bk), v_blk,
                      preferred_element_type=jnp.float32)
      return m_new, l_i, acc * alpha[..., None] + pv.reshape(acc.shape)

    init = (jnp.full((b, kh, g, bq), -jnp.inf, jnp.float32),
            jnp.zeros((b, kh, g, bq), jnp.float32), jnp.zeros((b, kh, g, bq, h), jnp.float32))
    m_i, l_i, acc = jax.lax.fori_loop(0, _k_blocks_for(mask, q0, bq, bk, nk), body, init)
    return (acc / l_i[..., None]).astype(q.dtype), m_i + jnp.log(l_i)

  outs, lses = jax.lax.map(q_block, jnp.arange(nq))   # [nq, B, K, G, bq, (H)]
  out = jnp.moveaxis(outs, 0, 3).reshape(b, kh, g, lp, h)
  return out, jnp.moveaxis(lses, 0, 3).reshape(b, kh, g, lp)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _chunked_core(q, k, v, mask, s, scale, bq, bk):
  return _chunked_fwd_impl(q, k, v, mask, s, scale, bq, bk)[0]


def _chunked_fwd(q, k, v, mask, s, scale, bq, bk):
  out, lse = _chunked_fwd_impl(q, k, v, mask, s, scale, bq, bk)
  return out, (q, k, v, mask, out, lse)


def _chunked_bwd(s, scale, bq, bk, res, d_out):
  q, k, v, mask, out, lse = res
  b, kh, g, lp, h = q.shape
  nq, nk = lp // bq, k.shape[2] // bk
  dt = q.dtype
  d_out = d_out.astype(dt)
  # D_i = sum_h dO * O: the softmax Jacobian's row term, once for all key blocks.
  delta = jnp.einsum("bkglh,bkglh->bkgl", d_out.astype(jnp.float32), out.astype(jnp.float32))

  def k_block(dq, kb):
    k0 = kb * bk
    k_blk, v_blk = (jax.lax.dynamic_slice_in_dim(x, k0, bk, 2) for x in (k, v))

    def body(qb, carry):
      dq, dk, dv = carry
      q0 = qb * bq
      q_blk, do_blk = _q_rows(q, q0, bq), _q_rows(d_out, q0, bq)
      lse_blk, dl_blk = (jax.lax.dynamic_slice_in_dim(x, q0, bq, 3) for x in (lse, delta))
      sc, m = _scores(q_blk, k_blk, mask, q0, k0, bq, bk, s, scale)
      p = jnp.exp(sc - lse_blk[..., None])
      rows = (b, kh, g * bq, bk)   # [B, K, G*bq, bk]: the matmuls' heads-major view
      dv = dv + jnp.einsum("bkms,bkmh->bksh", p.astype(dt).reshape(rows), do_blk,
                           preferred_element_type=jnp.float32)
      dp = jnp.einsum("bkmh,bksh->bkms", do_blk, v_blk, preferred_element_type=jnp.float32)
      # Hidden slots get no score gradient (jnp.where in xla), even in a fully hidden row.
      ds = jnp.where(m, p * (dp.reshape(sc.shape) - dl_blk[..., None]), 0.0) * scale
      ds = ds.astype(dt).reshape(rows)
      dq_blk = jnp.einsum("bkms,bksh->bkmh", ds, k_blk, preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_slice_in_dim(
          dq, jax.lax.dynamic_slice_in_dim(dq, q0, bq, 3) + dq_blk.reshape(b, kh, g, bq, h),
          q0, 3)
      dk = dk + jnp.einsum("bkms,bkmh->bksh", ds, q_blk, preferred_element_type=jnp.float32)
      return dq, dk, dv

    zeros = jnp.zeros((b, kh, bk, h), jnp.float32)
    dq, dk, dv = jax.lax.fori_loop(_q_block_start(mask, k0, bq), nq, body, (dq, zeros, zeros))
    return dq, (dk, dv)

  dq, (dks, dvs) = jax.lax.scan(k_block, jnp.zeros(q.shape, jnp.float32), jnp.arange(nk))
  dk, dv = (jnp.moveaxis(x, 0, 2).reshape(k.shape) for x in (dks, dvs))
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
          jax.tree.map(lambda x: None, mask))


_chunked_core.defvjp(_chunked_fwd, _chunked_bwd)


def chunked_attention(q_BxLxKxGxH, k_BxSxKxH, v_BxSxKxH, mask, scale: float,
                      block: int = DEFAULT_BLOCK):
  """Blockwise online softmax, heads-major inside; equals xla_attention up to round-off.
  mask: a catrans.attention.AttentionMask."""
  l, s = q_BxLxKxGxH.shape[1], k_BxSxKxH.shape[1]
  bq, bk = min(block, l), min(block, s)
  lp, sp = -(-l // bq) * bq, -(-s // bk) * bk
  if mask.dense is not None:
    mask = mask.replace(dense=_pad_to(_pad_to(mask.dense, 1, lp, False), 2, sp, False))
  if mask.segment_ids is not None:
    mask = mask.replace(segment_ids=_pad_to(mask.segment_ids, 1, max(lp, sp)))
  q = jnp.transpose(_pad_to(q_BxLxKxGxH, 1, lp), (0, 2, 3, 1, 4))
  k, v = (jnp.transpose(_pad_to(x, 1, sp), (0, 2, 1, 3)) for x in (k_BxSxKxH, v_BxSxKxH))
  out = _chunked_core(q, k, v, mask, s, scale, bq, bk)
  return jnp.transpose(out, (0, 3, 1, 2, 4))[:, :l]
