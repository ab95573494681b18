"""The <bkspc> action: id bookkeeping, a tokenizer wrapper, and growing a pretrained
embedding table / logits head by one row (pure functions on arrays)."""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


class BackspaceVocab:
  """Actions = base vocabulary [0, base_vocab_size) plus <bkspc> (default id base_vocab_size).

  num_actions is the model's output size (backspace_id + 1)."""

  def __init__(self, base_vocab_size: int, backspace_id: int | None = None,
               marker: str = "<bkspc>"):
    if base_vocab_size < 1:
      raise ValueError(f"base_vocab_size must be >= 1, got {base_vocab_size}")
    backspace_id = base_vocab_size if backspace_id is None else backspace_id
    if backspace_id < base_vocab_size:
      raise ValueError(f"backspace_id {backspace_id} collides with the base vocabulary "
                       f"[0, {base_vocab_size})")
    self.base_vocab_size, self.backspace_id, self.marker = base_vocab_size, backspace_id, marker
    self.num_actions = backspace_id + 1

  def check_ids(self, ids) -> None:
    """ValueError naming the first id that is neither a base token nor <bkspc>."""
    arr = np.asarray(ids)
    bad = ((arr < 0) | (arr >= self.base_vocab_size)) & (arr != self.backspace_id)
    if bad.any():
      raise ValueError(f"id {int(arr[bad][0])} is neither a base token [0, "
                       f"{self.base_vocab_size}) nor <bkspc> ({self.backspace_id})")

  def is_backspace(self, ids):
    return ids == self.backspace_id

  def apply_backspaces(self, ids: Sequence[int]) -> list[int]:
    """Plain collapse without a prompt: a <bkspc> with nothing left to delete is ignored."""
    self.check_ids(ids)
    out: list[int] = []
    for i in ids:
      if int(i) == self.backspace_id:
        if out:
          out.pop()
      else:
        out.append(int(i))
    return out


class BackspaceTokenizer:
  """Wraps a tokenizer (encode/decode, vocab_size, pad/bos/eos ids) with a <bkspc> action.

  encode is the base encode (text has no backspaces). decode(ids, mode='apply') applies the
  backspaces then decodes; mode='show' decodes the runs between backspaces and renders each
  <bkspc> as the marker (for inspecting what a model typed and deleted)."""

  def __init__(self, tokenizer, backspace_id: int | None = None, marker: str = "<bkspc>"):
    self.base = tokenizer
    self.vocab = BackspaceVocab(tokenizer.vocab_size, backspace_id, marker)
    self.vocab_size = self.vocab.num_actions
    self.backspace_id = self.vocab.backspace_id
    for name in ("pad_id", "bos_id", "eos_id"):
      if hasattr(tokenizer, name):
        setattr(self, name, getattr(tokenizer, name))

  def encode(self, text: str) -> list[int]:
    return self.base.encode(text)

  def decode(self, ids: Sequence[int], mode: str = "apply") -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if mode == "apply":
      return self.base.decode(self.vocab.apply_backspaces(ids))
    if mode != "show":
      raise ValueError(f"decode mode must be 'apply' or 'show', got {mode!r}")
    self.vocab.check_ids(ids)
    parts, run = [], []
    for i in ids:
      if i == self.backspace_id:
        parts += [self.base.decode(run), self.vocab.marker]
        run = []
      else:
        run.append(i)
    return "".join(parts + [self.base.decode(run)])


def extend_rows(table, num_real_rows: int, *, axis: int = 0, init: str = "mean",
                rng=None, scale: float = 0.02):
  """Gives a pretrained table one more real row (the <bkspc> row) at index num_real_rows.

  table: an embedding [V_pad, D] (axis=0) or a logits head [D, V_pad] (axis=1), V_pad >=
  num_real_rows. If the table has padding rows (V_pad > num_real_rows) the first padding row
  is overwritten and the shape is kept (so sharded/padded layouts stay valid); otherwise a row
  is appended. init: 'mean' (mean of the real rows: a neutral start whose logit is the
  average logit), 'zeros', or 'normal' (rng required, std scale).
  """
  table = jnp.asarray(table)
  axis = axis % table.ndim
  v = table.shape[axis]
  if not 1 <= num_real_rows <= v:
    raise ValueError(f"num_real_rows must be in [1, {v}] for a table with {v} rows on axis "
                     f"{axis}, got {num_real_rows}")
  real = jax.lax.slice_in_dim(table, 0, num_real_rows, axis=axis)
  if init == "mean":
    row = jnp.mean(real.astype(jnp.float32), axis=axis, keepdims=True)
  elif init == "zeros":
    row = jnp.zeros_like(jax.lax.slice_in_dim(real, 0, 1, axis=axis), jnp.float32)
  elif init == "normal":
    if rng is None:
      raise ValueError("init='normal' needs rng")
    shape = list(table.shape)
    shape[axis] = 1
    row = scale * jax.random.normal(rng, shape, jnp.float32)
  else:
    raise ValueError(f"init must be 'mean', 'zeros' or 'normal', got {init!r}")
  row = row.astype(table.dtype)
  if num_real_rows < v:
    return jax.lax.dynamic_update_slice_in_dim(table, row, num_real_rows, axis=axis)
  return jnp.concatenate([table, row], axis=axis)
