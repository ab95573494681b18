"""Test reviews as arrays, prompts, and prompt + generation joined into one sequence.

Every array follows the training layout: token 0 is BOS, then the review's tokens; index k of
a [N, W] array is the k-th content token, so "the first k tokens of the review" is the prefix
ending at index k (what CAT's q_k and the prefix classifier's row k have read)."""
import jax.numpy as jnp
import numpy as np


def test_reviews(task, num: int, seed: int = 0, min_bytes: int = 8) -> list[dict]:
  """`num` labelled test reviews (rotten 0 / fresh 1), a fixed random subset: the split is
  stored in source order, and a random subset keeps the class mix of the whole split."""
  rows = [r for r in task.source("test")
          if int(r["label"]) in (0, 1) and len(r["text"].encode()) >= min_bytes]
  order = np.random.default_rng(seed).permutation(len(rows))
  return [rows[i] for i in order[:num]]


def right_pad(seqs: list[list[int]], width: int, pad_id: int = 0):
  """([N, width] int32 right-padded, [N] lengths); every sequence must fit."""
  out = np.full((len(seqs), width), pad_id, np.int32)
  for i, s in enumerate(seqs):
    if len(s) > width:
      raise ValueError(f"sequence {i} has {len(s)} tokens > width {width}")
    out[i, :len(s)] = s
  return out, np.array([len(s) for s in seqs], np.int32)


def encode_reviews(tokenizer, texts: list[str], width: int):
  """BOS + the review's tokens, cut to `width` tokens (the model's training length): tokens
  [N, width] and the number of content tokens kept per review [N]."""
  seqs = [[tokenizer.bos_id] + tokenizer.encode(t)[:width - 1] for t in texts]
  tokens, lens = right_pad(seqs, width, tokenizer.pad_id)
  return tokens, lens - 1


def prefix_ends(num_content_N, fractions) -> np.ndarray:
  """[N, F] index of the last token of the first f of each review (at least one token)."""
  n = np.asarray(num_content_N)[:, None]
  return np.clip(np.round(n * np.asarray(fractions)[None]).astype(np.int32), 1, n)


def join(prompts_NxP, prompt_lens_N, new_NxT, *, eos_id: int, pad_id: int = 0):
  """One sequence per row: the prompt's real tokens, then the new tokens up to and including
  the first EOS, then padding. Returns (tokens [N, P+T], text_len [N] = tokens before the
  EOS, total_len [N] = tokens including the EOS when one was produced)."""
  prompts_NxP, new_NxT = jnp.asarray(prompts_NxP), jnp.asarray(new_NxT)
  lens_N = jnp.asarray(prompt_lens_N, jnp.int32)
  n, p = prompts_NxP.shape
  t = new_NxT.shape[1]
  j = jnp.arange(p + t)[None]
  prompt_ext = jnp.pad(prompts_NxP, ((0, 0), (0, t)), constant_values=pad_id)
  if t == 0:
    return jnp.where(j < lens_N[:, None], prompt_ext, pad_id), lens_N, lens_N
  is_eos = new_NxT == eos_id
  has_eos = is_eos.any(1)
  new_text = jnp.where(has_eos, jnp.argmax(is_eos, 1), t)
  total = lens_N + jnp.where(has_eos, new_text + 1, t)
  from_new = jnp.take_along_axis(new_NxT, jnp.clip(j - lens_N[:, None], 0, t - 1), 1)
  seq = jnp.where(j < lens_N[:, None], prompt_ext, from_new)
  return jnp.where(j < total[:, None], seq, pad_id), lens_N + new_text, total


def first_words(text: str, words: int, max_bytes: int) -> str:
  """The opening of a review as a prompt: its first `words` words, cut to max_bytes."""
  return " ".join(text.split()[:words]).encode()[:max_bytes].decode(errors="ignore")
