"""Rollout prompts taken from data prefixes (SPEC 3: rollouts start from data prefixes).

The prefix is cut from the *collapsed* data sequence (the clean expert state, noise and its
<bkspc> removed), at a uniform cut between the original prompt length and the final state
length; the whole prefix becomes the rollout's prompt, so the policy can backspace its own
tokens but never the data prefix. jit-compatible."""
import jax
import jax.numpy as jnp

from seqmatch.masking import collapse_jax


def data_prefix_prompts(sequences_BxN, prompt_lens_B, lengths_B, rng, *, backspace_id: int,
                        max_len: int, pad_id: int = 0):
  """Returns (prompts_BxM int32 padded with pad_id, prompt_lens_B int32), M = max_len.

  Each row's cut c is uniform in [prompt_len, state_len], both clipped to max_len (a prompt
  longer than max_len is truncated to its first max_len tokens)."""
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  states_BxN, state_lens_B = collapse_jax(sequences_BxN, prompt_lens_B, lengths_B,
                                          backspace_id=backspace_id, pad_id=pad_id)
  lo = jnp.minimum(jnp.asarray(prompt_lens_B, jnp.int32), max_len)
  hi = jnp.minimum(state_lens_B, max_len)
  cut = jax.random.randint(rng, lo.shape, lo, hi + 1).astype(jnp.int32)
  n = states_BxN.shape[1]
  states = states_BxN[:, :max_len] if n >= max_len else jnp.pad(
      states_BxN, ((0, 0), (0, max_len - n)), constant_values=pad_id)
  prompts = jnp.where(jnp.arange(max_len)[None] < cut[:, None], states, pad_id)
  return prompts.astype(jnp.int32), cut
