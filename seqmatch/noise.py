"""Data augmentation for SequenceMatch (numpy; runs in the input pipeline).

Before each answer token (never inside the prompt) insert, with probability p_noise, a noise
token followed by <bkspc>. The noise token is not an expert target; the <bkspc> after it is
(it teaches the model to undo a mistake). Noise kinds:
  'random'        uniform over the base vocabulary [0, base_vocab_size);
  'ground_truth'  ground_truth_fn(prefix_tokens, true_next, rng) -> a plausible wrong token,
                  supplied by the task;
  'model'         model_tokens[j]: a token the caller sampled from the current model at the
                  state tokens[:j] (same length as tokens).
Output layout = masking.py's: items = prompt + actions, expert flags aligned with the items
(False on the prompt and on noise tokens).
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("random", "ground_truth", "model")


def augment(tokens, prompt_len: int, rng: np.random.Generator, *, p_noise: float,
            backspace_id: int, kind: str = "random", base_vocab_size: int | None = None,
            max_len: int | None = None,
            ground_truth_fn: Callable[[np.ndarray, int, np.random.Generator], int] | None = None,
            model_tokens=None) -> tuple[np.ndarray, np.ndarray]:
  """One sequence. Returns (items int32 [M], expert bool [M]).

  max_len: items never exceed it. A sequence longer than max_len is truncated to max_len
  with no noise; otherwise noise pairs are only inserted while they fit (when more were
  drawn than fit, a uniformly random subset of them is kept), so the original is never cut
  and collapse(items) == tokens exactly.
  """
  tokens = np.asarray(tokens, np.int64).reshape(-1)
  n = len(tokens)
  if kind not in KINDS:
    raise ValueError(f"unknown noise kind {kind!r}; known: {KINDS}")
  if not 0.0 <= p_noise <= 1.0:
    raise ValueError(f"p_noise must be in [0, 1], got {p_noise}")
  if not 1 <= prompt_len <= n:
    raise ValueError(f"prompt_len must be in [1, {n}], got {prompt_len}")
  if np.any(tokens == backspace_id):
    raise ValueError(f"tokens already contain <bkspc> ({backspace_id})")
  if kind == "random" and base_vocab_size is None:
    raise ValueError("kind='random' needs base_vocab_size")
  if kind == "ground_truth" and ground_truth_fn is None:
    raise ValueError("kind='ground_truth' needs ground_truth_fn")
  if kind == "model":
    if model_tokens is None:
      raise ValueError("kind='model' needs model_tokens")
    model_tokens = np.asarray(model_tokens).reshape(-1)
    if len(model_tokens) != n:
      raise ValueError(f"model_tokens must have length {n} (one per position), got "
                       f"{len(model_tokens)}")
  if max_len is not None and n > max_len:
    return tokens[:max_len].astype(np.int32), np.arange(max_len) >= prompt_len

  where = np.flatnonzero(rng.random(n - prompt_len) < p_noise) + prompt_len
  if max_len is not None and 2 * len(where) > max_len - n:
    where = np.sort(rng.choice(where, size=(max_len - n) // 2, replace=False))
  items, expert = list(tokens[:prompt_len]), [False] * prompt_len
  noise_at = set(where.tolist())
  for j in range(prompt_len, n):
    if j in noise_at:
      if kind == "random":
        z = int(rng.integers(base_vocab_size))
      elif kind == "ground_truth":
        z = int(ground_truth_fn(tokens[:j].copy(), int(tokens[j]), rng))
      else:
        z = int(model_tokens[j])
      if z == backspace_id or z < 0 or (base_vocab_size is not None and z >= base_vocab_size):
        raise ValueError(f"noise token {z} at position {j} is not a base-vocabulary token")
      items += [z, backspace_id]
      expert += [False, True]
    items.append(int(tokens[j]))
    expert.append(True)
  return np.asarray(items, np.int32), np.asarray(expert, bool)


def augment_batch(tokens_BxL, lengths_B, prompt_lens_B, rng: np.random.Generator, *,
                  max_len: int, pad_id: int = 0, model_tokens_BxL=None,
                  prompt_ground_truth_fn=None, **kw):
  """A padded batch. Returns (items_BxN int32 padded with pad_id, expert_BxN bool,
  lengths_B int32), N = max_len. kw as in augment.

  prompt_ground_truth_fn(prefix_tokens, true_next, rng, prompt_len) -> token: ground_truth
  noise that also reads the row's prompt length (a task's noise that needs the question),
  bound per row and passed to augment as its ground_truth_fn."""
  tokens_BxL = np.asarray(tokens_BxL)
  if tokens_BxL.ndim != 2:
    raise ValueError(f"tokens_BxL must be [B, L], got shape {tokens_BxL.shape}")
  b = tokens_BxL.shape[0]
  lengths_B, prompt_lens_B = np.asarray(lengths_B), np.asarray(prompt_lens_B)
  for name, x in (("lengths_B", lengths_B), ("prompt_lens_B", prompt_lens_B)):
    if x.shape != (b,):
      raise ValueError(f"{name} must have shape ({b},), got {x.shape}")
  if model_tokens_BxL is not None and np.shape(model_tokens_BxL) != tokens_BxL.shape:
    raise ValueError(f"model_tokens_BxL must have shape {tokens_BxL.shape}, got "
                     f"{np.shape(model_tokens_BxL)}")
  items = np.full((b, max_len), pad_id, np.int32)
  expert = np.zeros((b, max_len), bool)
  lens = np.zeros((b,), np.int32)
  for i in range(b):
    ln = int(lengths_B[i])
    pl = int(prompt_lens_B[i])
    mt = None if model_tokens_BxL is None else np.asarray(model_tokens_BxL)[i, :ln]
    row_kw = kw
    if prompt_ground_truth_fn is not None:
      row_kw = dict(kw, ground_truth_fn=lambda prefix, true_next, g, pl=pl:
                    prompt_ground_truth_fn(prefix, true_next, g, pl))
    it, ex = augment(tokens_BxL[i, :ln], pl, rng, max_len=max_len, model_tokens=mt, **row_kw)
    items[i, :len(it)], expert[i, :len(ex)], lens[i] = it, ex, len(it)
  return items, expert, lens


def model_noise_tokens(logits_BxLxA, tokens_BxL, rng, *, base_vocab_size: int,
                       temperature: float = 1.0, exclude_true: bool = True):
  """Noise tokens for kind='model', sampled from the model's logits on the clean sequences
  (jit-compatible; run it on device, pass row b to augment as model_tokens).

  logits_BxLxA: logits of a plain forward over tokens_BxL (row j-1 predicts position j).
  Returns int32 [B, L]: out[:, j] ~ softmax(logits[:, j-1, :base_vocab_size] / temperature),
  never <bkspc> or another non-base action, and with exclude_true never the true token
  tokens[:, j] (so the noise is a genuine mistake). out[:, 0] = 0 (position 0 is always
  prompt, never noised)."""
  if logits_BxLxA.ndim != 3 or logits_BxLxA.shape[:2] != tokens_BxL.shape:
    raise ValueError(f"logits_BxLxA must be [B, L, A] with [B, L] = {tokens_BxL.shape}, got "
                     f"{logits_BxLxA.shape}")
  if base_vocab_size > logits_BxLxA.shape[-1]:
    raise ValueError(f"base_vocab_size {base_vocab_size} exceeds the logits' "
                     f"{logits_BxLxA.shape[-1]} actions")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  logits = logits_BxLxA[:, :-1, :base_vocab_size].astype(jnp.float32) / temperature
  if exclude_true:
    true_next = tokens_BxL[:, 1:]
    logits = jnp.where(jnp.arange(base_vocab_size) == true_next[..., None], -jnp.inf, logits)
  out = jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
  return jnp.concatenate([jnp.zeros_like(out[:, :1]), out], axis=1)


def noise_sources(items_BxN, expert_BxN, prompt_lens_B, lengths_B, backspace_id):
  """For each noise item (past the prompt, not an expert target), the index j of the clean
  token it was inserted before (so its state is clean[:j]: where kind='model' samples the
  policy's mistake); -1 elsewhere. int32 [B, N]."""
  items_BxN, expert_BxN = np.asarray(items_BxN), np.asarray(expert_BxN)
  idx = np.arange(items_BxN.shape[1])[None]
  live = idx < np.asarray(lengths_B)[:, None]
  in_prompt = idx < np.asarray(prompt_lens_B)[:, None]
  clean = live & (in_prompt | (expert_BxN & (items_BxN != backspace_id)))
  before = np.cumsum(clean, axis=1) - clean
  return np.where(live & ~in_prompt & ~expert_BxN, before, -1).astype(np.int32)
