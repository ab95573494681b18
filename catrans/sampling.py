"""Token choice from scores: greedy, or temperature / top-k / top-p sampling (jit-safe)."""
import jax
import jax.numpy as jnp

NEG = -1e30


def filter_top_k(scores_BxV, k: int):
  if not k or k >= scores_BxV.shape[-1]:
    return scores_BxV
  kth = jax.lax.top_k(scores_BxV, k)[0][..., -1:]
  return jnp.where(scores_BxV < kth, NEG, scores_BxV)


def filter_top_p(scores_BxV, p: float):
  """Keeps the smallest set of tokens whose softmax mass reaches p (always the best one)."""
  if p >= 1.0:
    return scores_BxV
  order = jnp.argsort(-scores_BxV, axis=-1)
  sorted_scores = jnp.take_along_axis(scores_BxV, order, axis=-1)
  probs = jax.nn.softmax(sorted_scores, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs
  keep_sorted = before < p
  keep = jnp.zeros_like(keep_sorted).at[
      jnp.arange(scores_BxV.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, scores_BxV, NEG)


def choose(scores_BxV, rng, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
  """[B] int32: argmax when temperature == 0, else a sample of softmax(scores / T) after
  top-k and top-p filtering."""
  if temperature == 0:
    return jnp.argmax(scores_BxV, axis=-1).astype(jnp.int32)
  s = filter_top_p(filter_top_k(scores_BxV.astype(jnp.float32) / temperature, top_k), top_p)
  return jax.random.categorical(rng, s, axis=-1).astype(jnp.int32)
