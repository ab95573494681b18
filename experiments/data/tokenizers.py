"""Tokenizers shared by every task: a byte tokenizer and a SentencePiece one.

All tokenizers agree on the special ids pad=0, bos=1, eos=2 so that batches,
masks and decoding code never need to ask which tokenizer produced them.
"""
from __future__ import annotations

import os
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


@runtime_checkable
class Tokenizer(Protocol):
  name: str
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


def _require_str(text) -> str:
  if not isinstance(text, str):
    raise ValueError(
        f'encode() expects a str, got {type(text).__name__}: {text!r:.80}')
  return text


def check_token_ids(ids, vocab_size: int) -> None:
  """Raises ValueError naming the first id outside [0, vocab_size).

  Out-of-range ids do not fail inside a jitted embedding lookup (XLA clamps
  them), so the trainer checks batches before compiling.
  """
  ids_arr = np.asarray(ids)
  bad = (ids_arr < 0) | (ids_arr >= vocab_size)
  if bad.any():
    position = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f'token id {int(ids_arr[position])} at position {position} is outside '
        f'[0, {vocab_size}); {int(bad.sum())} id(s) out of range in total.')


def _checked_ids(ids, vocab_size: int) -> list[int]:
  """decode's input as ints: a 1-D sequence of integers (never float ids, which int() would
  truncate, nor bools) in [0, vocab_size). Raises ValueError naming the first bad id."""
  if isinstance(ids, (str, bytes)):
    raise ValueError(f'decode() expects a sequence of token ids, got {type(ids).__name__}')
  arr = np.asarray(ids)
  if arr.ndim != 1 and arr.size:
    raise ValueError(f'decode() expects a 1-D sequence of token ids, got shape {arr.shape}')
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f'decode() expects integer token ids, got dtype {arr.dtype}: '
                     f'{ids!r:.80}')
  check_token_ids(arr, vocab_size)
  return [int(i) for i in arr]


class ByteTokenizer:
  """UTF-8 bytes shifted past the three special ids: byte b -> b + 3."""

  name = 'byte'
  pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID
  num_special = 3
  vocab_size = 256 + num_special

  def encode(self, text: str) -> list[int]:
    return [b + self.num_special for b in _require_str(text).encode('utf-8')]

  def decode(self, ids: Sequence[int]) -> str:
    """Text of integer ids in [0, vocab_size): the special ids (pad, bos, eos) are skipped,
    anything else out of range is a ValueError (not silently dropped)."""
    data = bytes(i - self.num_special for i in _checked_ids(ids, self.vocab_size)
                 if i >= self.num_special)
    return data.decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A SentencePiece model with the project's special ids (unk is 3)."""

  def __init__(self, model_path: str):
    import sentencepiece as spm  # Imported lazily: only this class needs it.
    self.model_path = str(model_path)
    self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID
    self.name = f'sentencepiece{self.vocab_size}'

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int,
            model_path: str) -> 'SentencePieceTokenizer':
    """Trains in-process from an iterator and writes `model_path`."""
    import sentencepiece as spm
    model_path = str(model_path)
    if model_path.endswith('.model'):
      model_path = model_path[:-len('.model')]
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=model_path,
        vocab_size=vocab_size,
        model_type='unigram',
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=3,
        # Byte fallback makes every string encodable: no unk on rare chars.
        byte_fallback=True,
        character_coverage=0.9995,
        # Vocabularies are small here; don't fail when the corpus is too.
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return cls(model_path + '.model')

  @classmethod
  def load(cls, model_path: str) -> 'SentencePieceTokenizer':
    return cls(model_path)

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(_require_str(text)))

  def decode(self, ids: Sequence[int]) -> str:
    """Text of integer ids in [0, vocab_size) (pad, bos, eos skipped); ValueError otherwise."""
    specials = (self.pad_id, self.bos_id, self.eos_id)
    return self._sp.decode([i for i in _checked_ids(ids, self.vocab_size) if i not in specials])
