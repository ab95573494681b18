"""Attention masks. Convention everywhere: bool, True = the query row may attend the key slot.

Shapes: queries L, keys S (S == L without a cache, S == cache length with one)."""
import jax.numpy as jnp


def causal_mask(length: int) -> jnp.ndarray:
  """[L, L] lower-triangular mask."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))


def segment_mask(segment_ids_BxL: jnp.ndarray) -> jnp.ndarray:
  """[B, L, L] causal mask restricted to rows of the same segment; segment 0 is padding.

  Padding rows attend to themselves only, so their softmax stays finite."""
  seg = segment_ids_BxL
  same = seg[:, :, None] == seg[:, None, :]
  live = (seg[:, :, None] != 0) & (seg[:, None, :] != 0)
  eye = jnp.eye(seg.shape[1], dtype=bool)[None]
  return causal_mask(seg.shape[1])[None] & ((same & live) | eye)


def liveness_mask(alive_BxLxS: jnp.ndarray) -> jnp.ndarray:
  """Identity helper: a per-row liveness table IS the mask (row i sees slot j iff alive).

  Kept as a named function so callers document intent; the row must see itself."""
  return alive_BxLxS.astype(bool)


def cache_causal_mask(index, num_new: int, cache_len: int) -> jnp.ndarray:
  """[num_new, cache_len] mask for rows written at slots index..index+num_new-1."""
  rows = index + jnp.arange(num_new)[:, None]
  return jnp.arange(cache_len)[None, :] <= rows
