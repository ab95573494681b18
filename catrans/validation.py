"""Input checks that fail with a message naming the problem instead of an XLA error or a
silently clamped embedding lookup. Value checks run only on concrete (non-traced) arrays, so
they cost nothing inside jit."""
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_tokens(tokens, vocab_size: int, name: str = "tokens_BxL", allow_empty=False):
  """[B, L] integer ids in [0, vocab_size)."""
  shape = np.shape(tokens)
  if len(shape) != 2:
    raise ValueError(f"{name} must be a [batch, length] array, got shape {shape}")
  dtype = jnp.result_type(tokens)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must hold integer token ids, got dtype {dtype}")
  if not allow_empty and (shape[0] == 0 or shape[1] == 0):
    raise ValueError(f"{name} is empty (shape {shape})")
  if is_concrete(tokens) and np.size(tokens):
    arr = np.asarray(tokens)
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
      b, t = np.argwhere(bad)[0]
      raise ValueError(f"{name}[{b}, {t}] = {int(arr[b, t])} is outside the vocabulary "
                       f"[0, {vocab_size})")


def check_prompts(prompts_BxP, prompt_lens_B, vocab_size: int, max_len: int,
                  max_new_tokens: int):
  check_tokens(prompts_BxP, vocab_size, "prompts_BxP")
  b, p = np.shape(prompts_BxP)
  if np.shape(prompt_lens_B) != (b,):
    raise ValueError(f"prompt_lens_B must have shape ({b},), got {np.shape(prompt_lens_B)}")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if p + max_new_tokens > max_len:
    raise ValueError(f"prompt width {p} + max_new_tokens {max_new_tokens} exceeds the "
                     f"model's max_len {max_len}")
  if is_concrete(prompt_lens_B):
    pl = np.asarray(prompt_lens_B)
    if np.any(pl < 1) or np.any(pl > p):
      raise ValueError(f"prompt_lens_B must be in [1, {p}], got {pl.tolist()}")
