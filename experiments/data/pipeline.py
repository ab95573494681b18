"""grain pipelines from a task split to fixed-shape numpy batches.

Batch contract (B = local batch size, L = seq_len):
  inputs       int32   [B, L]  token ids
  targets      int32   [B, L]  next token of inputs (within the same document)
  weights      float32 [B, L]  1 where the target counts; 0 on padding and on
                               prompt tokens
  positions    int32   [B, L]  position inside the document (0 on padding)
  segment_ids  int32   [B, L]  0 = padding, 1..n = documents of the row
  <extras>     [B]             padding mode only: numeric per-example fields,
                               e.g. 'label' int32, -1 when unknown

Multi-host: every process walks the same global order (same seed) and keeps
only its own rows of each global batch, so the union over processes at step
s is exactly the single-process global batch at step s. Iterators are grain
DatasetIterators: get_state() is a JSON-serialisable dict and set_state()
resumes with exactly the batches the original would have produced.
"""
from __future__ import annotations

import collections
import functools
import math

import grain
import numpy as np

from experiments.data import documents

MODES = ('padding', 'packing')


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f'global_batch_size={global_batch_size} is not divisible '
                     f'by process_count={process_count}')
  return global_batch_size // process_count


def _check_args(mode, process_index, process_count):
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count})')


def _label_keys(task) -> tuple[str, ...]:
  return tuple(task.label_names or ())


def _padded_example(example, *, task, seq_len):
  document = documents.encode_document(example, task.tokenizer, seq_len)
  row = documents.padded_row(document, seq_len, task.tokenizer.pad_id)
  row.update(documents.extras(example, _label_keys(task)))
  return row


def _padded_batches(examples: grain.MapDataset, task, *, seq_len, local, rank,
                    process_count, num_examples=None) -> grain.MapDataset:
  """Global row order -> this process's batches, reading only its own rows.

  Consecutive chunks of `local` rows are batched; global batch s is chunks
  s*P .. s*P+P-1, so process p takes every P-th chunk starting at p.
  """
  to_row = functools.partial(_padded_example, task=task, seq_len=seq_len)
  if num_examples is None:
    rows = examples.map(to_row)
  else:  # Finite eval pass: pad the last global batch with empty rows.
    empty = dict(documents.empty_row(seq_len),
                 **{k: np.int32(documents.UNKNOWN_LABEL) for k in _label_keys(task)})
    template = to_row(examples[0]) if num_examples else empty
    empty = {k: np.full_like(v, documents.UNKNOWN_LABEL) if k not in empty
             else empty[k] for k, v in template.items()}
    total = math.ceil(num_examples / (local * process_count)) * local * process_count
    rows = grain.MapDataset.range(total).map(
        lambda i: to_row(examples[i]) if i < num_examples else empty)
  return rows.batch(local, drop_remainder=True)[rank::process_count]


def _packed_batches(documents_ds: grain.IterDataset, *, seq_len, local, rank,
                    process_count, finite) -> grain.IterDataset:
  """Packs the global document stream, batches globally, keeps own rows.

  Every process packs the whole stream (cheap next to a training step) so that
  the packing, and hence each global batch, is identical on all processes.
  """
  global_batch = local * process_count
  packed = grain.experimental.FirstFitPackIterDataset(
      documents_ds, length_struct={k: seq_len for k in documents.SEQUENCE_KEYS},
      num_packing_bins=global_batch, shuffle_bins=False)

  def to_contract(row):
    return {'inputs': row['inputs'], 'targets': row['targets'],
            'weights': row['weights'].astype(np.float32),
            'positions': row['inputs_positions'],
            'segment_ids': row['inputs_segment_ids']}

  def own_rows(batch):
    n = len(batch['inputs'])
    if n < global_batch:  # Only the last batch of a finite pass.
      fill = documents.empty_row(seq_len)
      batch = {k: np.concatenate([v, np.repeat(fill[k][None], global_batch - n, 0)])
               for k, v in batch.items()}
    return {k: v[rank * local:(rank + 1) * local] for k, v in batch.items()}

  return (packed.map(to_contract)
          .batch(global_batch, drop_remainder=not finite).map(own_rows))


def _documents(examples: grain.MapDataset, task, seq_len) -> grain.MapDataset:
  return examples.map(functools.partial(
      documents.encode_document, tokenizer=task.tokenizer, seq_len=seq_len))


def make_train_iterator(task, split: str, *, global_batch_size: int,
                        seq_len: int, seed: int, process_index: int = 0,
                        process_count: int = 1, mode: str = 'padding',
                        read_threads: int = 4) -> grain.DatasetIterator:
  """Infinite iterator over this process's rows of each global batch.

  Every epoch is reshuffled (grain mixes the epoch number into the seed).
  """
  _check_args(mode, process_index, process_count)
  local = _local_batch_size(global_batch_size, process_count)
  source = task.source(split)
  if not len(source):   # repeat(None) of nothing would end the 'infinite' iterator at once
    raise ValueError(f'task {task.name!r} split {split!r} has no examples to train on')
  examples = grain.MapDataset.source(source).shuffle(seed=seed)
  examples = examples.repeat(None)
  read_options = grain.ReadOptions(num_threads=read_threads)
  if mode == 'padding':
    batches = _padded_batches(examples, task, seq_len=seq_len, local=local,
                              rank=process_index, process_count=process_count)
    return iter(batches.to_iter_dataset(read_options))
  docs = _documents(examples, task, seq_len).to_iter_dataset(read_options)
  return iter(_packed_batches(docs, seq_len=seq_len, local=local,
                              rank=process_index, process_count=process_count,
                              finite=False))


def make_eval_iterator(task, split: str, *, global_batch_size: int,
                       seq_len: int, process_index: int = 0,
                       process_count: int = 1, mode: str = 'padding',
                       read_threads: int = 4) -> grain.DatasetIterator:
  """One pass in source order; the last batch is filled with weight-0 rows.

  Every process yields the same number of batches, so collective ops in an
  eval loop never wait on a process that ran out of data.
  """
  _check_args(mode, process_index, process_count)
  local = _local_batch_size(global_batch_size, process_count)
  examples = grain.MapDataset.source(task.source(split))
  read_options = grain.ReadOptions(num_threads=read_threads)
  if mode == 'padding':
    batches = _padded_batches(examples, task, seq_len=seq_len, local=local,
                              rank=process_index, process_count=process_count,
                              num_examples=len(examples))
    return iter(batches.to_iter_dataset(read_options))
  docs = _documents(examples, task, seq_len).to_iter_dataset(read_options)
  return iter(_packed_batches(docs, seq_len=seq_len, local=local,
                              rank=process_index, process_count=process_count,
                              finite=True))


def unigram_entropy(task, split: str, tokenizer=None,
                    max_examples: int | None = None) -> float:
  """Entropy (nats/token) of the unigram distribution of weighted targets.

  A model that ignores context can reach this loss; the trainer prints it
  beside the loss as a baseline. Documents are not truncated here.
  """
  tokenizer = tokenizer or task.tokenizer
  source = task.source(split)
  count = len(source) if max_examples is None else min(max_examples, len(source))
  counts = collections.Counter()
  for i in range(count):
    tokens, prompt_length = documents.content_tokens(source[i], tokenizer)
    counts.update(tokens[prompt_length:].tolist())
    counts[tokenizer.eos_id] += 1
  freq = np.array(list(counts.values()), dtype=np.float64)
  prob = freq / freq.sum()
  return float(-(prob * np.log(prob)).sum())
