"""Attribute heads: for every candidate next token v, outputs A[t, v, :] of one attribute.

`full` (the paper's): A[t, v, k] = U[v, k] . g_t + b[v, k], U of shape [V, K, D].
`factorized` (ours): A[t, v, :] = P(g_t) E_v + b[v], P: D -> K x F, E a [V, F] table: the
parameters grow with (V + K) F instead of V K D.

Two call paths: `at_tokens` reads only the observed next tokens' rows (training never builds
the [B, L, V, K] tensor) and `all_tokens` gives every candidate (inference, steering)."""
import flax.linen as nn
import jax.numpy as jnp

PARAMS = ("full", "factorized")


def _param(module, name, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class AttributeHead(nn.Module):
  vocab_size: int          # real vocabulary V
  padded_vocab_size: int   # rows of the tables (shards evenly)
  num_outputs: int         # K
  d_model: int             # D of the branch output g
  parameterization: str = "full"  # full | factorized
  factor_dim: int = 64     # F of the factorized head
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.parameterization not in PARAMS:
      raise ValueError(f"attribute head parameterization={self.parameterization!r}; choose from {PARAMS}")
    v, k, d, f = self.padded_vocab_size, self.num_outputs, self.d_model, self.factor_dim
    self.bias = _param(self, "bias", nn.initializers.zeros, (v, k),
                       ("vocab", "attr_classes"), self.param_dtype)
    if self.parameterization == "full":
      self.U = _param(self, "U", nn.initializers.normal(d ** -0.5), (v, k, d),
                      ("vocab", "attr_classes", "embed"), self.param_dtype)
    else:
      self.P = _param(self, "P", nn.initializers.normal(d ** -0.5), (d, k, f),
                      ("embed", "attr_classes", None), self.param_dtype)
      self.E = _param(self, "E", nn.initializers.normal(f ** -0.5), (v, f), ("vocab", None),
                      self.param_dtype)

  def __call__(self, g_BxLxD, tokens_BxL=None):
    """at_tokens when tokens are given, else all_tokens."""
    if tokens_BxL is None:
      return self.all_tokens(g_BxLxD)
    return self.at_tokens(g_BxLxD, tokens_BxL)

  def at_tokens(self, g_BxLxD, tokens_BxL):
    """[B, L, K] float32: outputs for the given next tokens only."""
    g = g_BxLxD.astype(self.dtype)
    if self.parameterization == "full":
      u_BxLxKxD = jnp.take(self.U, tokens_BxL, axis=0).astype(self.dtype)
      out = jnp.einsum("bld,blkd->blk", g, u_BxLxKxD, preferred_element_type=jnp.float32)
    else:
      p_BxLxKxF = jnp.einsum("bld,dkf->blkf", g, self.P.astype(self.dtype))
      e_BxLxF = jnp.take(self.E, tokens_BxL, axis=0).astype(self.dtype)
      out = jnp.einsum("blkf,blf->blk", p_BxLxKxF, e_BxLxF, preferred_element_type=jnp.float32)
    return out + jnp.take(self.bias, tokens_BxL, axis=0).astype(jnp.float32)

  def at_candidates(self, g_BxLxD, tokens_BxLxC):
    """[B, L, C, K] float32: outputs for C given candidates per row (a few, e.g. the token
    head's top-k), without the [B, L, V, K] tensor."""
    g = g_BxLxD.astype(self.dtype)
    if self.parameterization == "full":
      u_BxLxCxKxD = jnp.take(self.U, tokens_BxLxC, axis=0).astype(self.dtype)
      out = jnp.einsum("bld,blckd->blck", g, u_BxLxCxKxD, preferred_element_type=jnp.float32)
    else:
      p_BxLxKxF = jnp.einsum("bld,dkf->blkf", g, self.P.astype(self.dtype))
      e_BxLxCxF = jnp.take(self.E, tokens_BxLxC, axis=0).astype(self.dtype)
      out = jnp.einsum("blkf,blcf->blck", p_BxLxKxF, e_BxLxCxF,
                       preferred_element_type=jnp.float32)
    return out + jnp.take(self.bias, tokens_BxLxC, axis=0).astype(jnp.float32)

  def all_tokens(self, g_BxLxD):
    """[B, L, V, K] float32: outputs for every candidate of the real vocabulary."""
    # The tables are cut to the real vocabulary before the product, not the [B, L, V, K]
    # output after it: at V = 259 (bits, 384 rows padded) the padding was a third of the work.
    g, v = g_BxLxD.astype(self.dtype), self.vocab_size
    if self.parameterization == "full":
      out = jnp.einsum("bld,vkd->blvk", g, self.U[:v].astype(self.dtype),
                       preferred_element_type=jnp.float32)
    else:
      p_BxLxKxF = jnp.einsum("bld,dkf->blkf", g, self.P.astype(self.dtype))
      out = jnp.einsum("blkf,vf->blvk", p_BxLxKxF, self.E[:v].astype(self.dtype),
                       preferred_element_type=jnp.float32)
    return out + self.bias[:v].astype(jnp.float32)[None, None]
