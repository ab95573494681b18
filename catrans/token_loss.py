"""Next-token cross-entropy straight from the final hidden states: the logits never exist in f32.

The dense route (Transformer.logits, then a softmax cross-entropy) writes the [B, L, V]
logits in f32 and reads them again for the max, the log-sum-exp, the target gather and the
argmax, and its gradient writes another [B, L, V] f32 tensor: at V = 32K and L = 2048 that
is about 1.6 GB of HBM traffic per sequence on a TPU (experiments.tools.hlo_bytes), more
than a layer moves. Here the logits are computed in the model's compute dtype (bf16 on a
pod: the dense route's logits are rounded to bf16 by the same matmul before its f32 cast,
so the values are the same) and kept only for the backward pass; the softmax statistics
(max with argmax in one variadic reduce, then log-sum-exp with the target's logit) are
f32 reductions over the compute-dtype logits, two reading passes and no f32 copy; the gradient
(softmax - one_hot) * g is formed in f32 inside a fusion and written in the compute dtype,
which is what the two matmuls of the backward pass read anyway.

Numerics contract: nll = logsumexp(z) - z[target] with z the compute-dtype logits
upcast to f32; in f32 compute it equals optax.softmax_cross_entropy_with_integer_labels
on the dense logits to f32 round-off (tests/test_token_loss.py), values and gradients."""
import jax
import jax.numpy as jnp


def _logits(hidden_BxLxD, table_VxD):
  return jnp.einsum("bld,vd->blv", hidden_BxLxD, table_VxD.astype(hidden_BxLxD.dtype))


@jax.custom_vjp
def _nll(hidden_BxLxD, table_VxD, targets_BxL):
  return _nll_fwd(hidden_BxLxD, table_VxD, targets_BxL)[0]


def _max_and_argmax(z_BxLxV):
  """Row max and the first index reaching it, in one pass over the logits (a variadic
  reduce: jnp.max and jnp.argmax would read the [B, L, V] tensor twice)."""
  idx = jax.lax.broadcasted_iota(jnp.int32, z_BxLxV.shape, 2)

  def pick(a, b):
    (va, ia), (vb, ib) = a, b
    take_b = (vb > va) | ((vb == va) & (ib < ia))
    return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)

  init = (jnp.array(-jnp.inf, z_BxLxV.dtype), jnp.array(0, jnp.int32))
  return jax.lax.reduce((z_BxLxV, idx), init, pick, (2,))


def _nll_fwd(hidden_BxLxD, table_VxD, targets_BxL):
  z_BxLxV = _logits(hidden_BxLxD, table_VxD)
  m_BxL, argmax_BxL = _max_and_argmax(z_BxLxV)
  m_BxL = m_BxL.astype(jnp.float32)
  # The upcasts below sit inside the reductions' fusions: no f32 [B, L, V] is written. The
  # target's logit is a masked sum, not a gather, so it fuses with the exp-sum.
  z32 = z_BxLxV.astype(jnp.float32)
  lse_BxL = m_BxL + jnp.log(jnp.exp(z32 - m_BxL[..., None]).sum(-1))
  hit_BxLxV = jax.lax.broadcasted_iota(jnp.int32, z_BxLxV.shape, 2) == targets_BxL[..., None]
  z_t_BxL = jnp.where(hit_BxLxV, z32, 0.0).sum(-1)
  out = (lse_BxL - z_t_BxL, argmax_BxL == targets_BxL)
  return out, (hidden_BxLxD, table_VxD, targets_BxL, z_BxLxV, lse_BxL)


def _nll_bwd(res, g):
  hidden_BxLxD, table_VxD, targets_BxL, z_BxLxV, lse_BxL = res
  g_BxL = g[0].astype(jnp.float32)
  p_BxLxV = jnp.exp(z_BxLxV.astype(jnp.float32) - lse_BxL[..., None])
  hit_BxLxV = jax.lax.broadcasted_iota(jnp.int32, z_BxLxV.shape, 2) == targets_BxL[..., None]
  dz_BxLxV = ((p_BxLxV - hit_BxLxV) * g_BxL[..., None]).astype(z_BxLxV.dtype)
  d_hidden = jnp.einsum("blv,vd->bld", dz_BxLxV, table_VxD.astype(dz_BxLxV.dtype))
  d_table = jnp.einsum("blv,bld->vd", dz_BxLxV, hidden_BxLxD.astype(dz_BxLxV.dtype))
  return (d_hidden.astype(hidden_BxLxD.dtype), d_table.astype(table_VxD.dtype),
          None)


_nll.defvjp(_nll_fwd, _nll_bwd)


def token_nll(hidden_BxLxD, table_VxD, targets_BxL):
  """Per-token negative log-likelihood [B, L] (f32) of `targets_BxL` under the logits
  hidden @ table^T, and whether the target is the argmax [B, L] (not differentiated).

  hidden_BxLxD: final hidden states in the compute dtype (the matmul runs in it).
  table_VxD: output embedding over the real vocabulary (V rows; padding rows cut off).
  targets_BxL: integer ids in [0, V)."""
  if hidden_BxLxD.ndim != 3 or table_VxD.ndim != 2:
    raise ValueError(f"hidden_BxLxD must be [B, L, D] and table_VxD [V, D]; got "
                     f"{hidden_BxLxD.shape} and {table_VxD.shape}")
  if hidden_BxLxD.shape[-1] != table_VxD.shape[-1]:
    raise ValueError(f"hidden_BxLxD width {hidden_BxLxD.shape[-1]} != table_VxD width "
                     f"{table_VxD.shape[-1]}")
  if targets_BxL.shape != hidden_BxLxD.shape[:2]:
    raise ValueError(f"targets_BxL shape {targets_BxL.shape} != hidden [B, L] "
                     f"{hidden_BxLxD.shape[:2]}")
  if not jnp.issubdtype(targets_BxL.dtype, jnp.integer):
    raise ValueError(f"targets_BxL must be integer ids, got {targets_BxL.dtype}")
  nll, correct = _nll(hidden_BxLxD, table_VxD, targets_BxL)
  return nll, jax.lax.stop_gradient(correct)
