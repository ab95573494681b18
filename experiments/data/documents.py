"""Turns one task example into one training document and into a padded row.

A document is [bos] + tokens + [eos], truncated to seq_len + 1 tokens, then
split into inputs = doc[:-1] and targets = doc[1:]. Targets that are prompt
tokens get weight 0 so the loss only covers what the model should produce.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from experiments.data.tokenizers import Tokenizer

# Keys that describe the document itself; everything else numeric is an extra.
CONTENT_KEYS = ('text', 'tokens', 'prompt', 'answer', 'prompt_length')
SEQUENCE_KEYS = ('inputs', 'targets', 'weights')
UNKNOWN_LABEL = -1


def _as_str(value) -> str:
  # TFDS data sources return text features as bytes.
  return value.decode('utf-8') if isinstance(value, bytes) else value


def content_tokens(example: Mapping[str, Any],
                   tokenizer: Tokenizer) -> tuple[np.ndarray, int]:
  """(tokens without bos/eos, how many of the leading tokens are prompt)."""
  if 'tokens' in example:
    tokens = np.asarray(example['tokens'], dtype=np.int32)
    return tokens, int(example.get('prompt_length', 0))
  if 'prompt' in example:
    prompt = _as_str(example['prompt'])
    if 'answer' in example:
      completion = _as_str(example['answer'])
    else:
      text = _as_str(example['text'])
      if not text.startswith(prompt):
        raise ValueError(f'text {text!r:.60} does not start with its prompt')
      completion = text[len(prompt):]
    # Encoded separately so the prompt boundary is exact for any tokenizer.
    prompt_ids = tokenizer.encode(prompt)
    ids = prompt_ids + tokenizer.encode(completion)
    return np.asarray(ids, dtype=np.int32), len(prompt_ids)
  if 'text' in example:
    return np.asarray(tokenizer.encode(_as_str(example['text'])),
                      dtype=np.int32), 0
  raise ValueError(f"example has neither 'text' nor 'tokens': {sorted(example)}")


def extras(example: Mapping[str, Any],
           label_keys=()) -> dict[str, np.ndarray]:
  """Numeric per-example fields (labels) to pass through next to the tokens."""
  out = {k: np.int32(UNKNOWN_LABEL) for k in label_keys}
  for key, value in example.items():
    if key in CONTENT_KEYS or isinstance(value, (str, bytes)):
      continue
    value = np.asarray(value)
    if value.dtype.kind in 'iub':
      out[key] = value.astype(np.int32)
    elif value.dtype.kind == 'f':
      out[key] = value.astype(np.float32)
  return out


def encode_document(example: Mapping[str, Any], tokenizer: Tokenizer,
                    seq_len: int) -> dict[str, np.ndarray]:
  """Unpadded 'inputs', 'targets', 'weights', each of length <= seq_len."""
  tokens, prompt_length = content_tokens(example, tokenizer)
  doc = np.concatenate([[tokenizer.bos_id], tokens, [tokenizer.eos_id]])
  doc = doc[:seq_len + 1].astype(np.int32)
  # Target i is doc[i + 1]; doc[1 : prompt_length + 1] are prompt tokens.
  target_doc_index = np.arange(1, len(doc))
  return {
      'inputs': doc[:-1],
      'targets': doc[1:],
      'weights': (target_doc_index > prompt_length).astype(np.float32),
  }


def empty_row(seq_len: int) -> dict[str, np.ndarray]:
  """An all-padding row: zero weight everywhere, segment 0."""
  return {
      'inputs': np.zeros(seq_len, np.int32),
      'targets': np.zeros(seq_len, np.int32),
      'weights': np.zeros(seq_len, np.float32),
      'positions': np.zeros(seq_len, np.int32),
      'segment_ids': np.zeros(seq_len, np.int32),
  }


def padded_row(document: Mapping[str, np.ndarray], seq_len: int,
               pad_id: int = 0) -> dict[str, np.ndarray]:
  """One document in one row of length seq_len; padding has segment 0."""
  row = empty_row(seq_len)
  n = len(document['inputs'])
  row['inputs'][:] = pad_id
  row['targets'][:] = pad_id
  for key in SEQUENCE_KEYS:
    row[key][:n] = document[key]
  row['positions'][:n] = np.arange(n)
  row['segment_ids'][:n] = 1
  return row
