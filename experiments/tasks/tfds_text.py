"""Any TFDS text dataset as a task (for users with internet access).

Reads with `tfds.data_source(..., builder_kwargs={'file_format':
'array_record'})`, which needs no TensorFlow at read time (preparing some
datasets the first time may still need it, e.g. ones built from TFRecords).

Config options:
  dataset          required, e.g. 'imdb_reviews', 'civil_comments', 'lm1b',
                   or 'name/config:version'
  text_key         feature holding the text (default 'text')
  label_key        optional feature holding the label; None for plain text
  label_threshold  optional float: label = int(value >= threshold), for
                   float scores such as civil_comments' 'toxicity' (0.5)
  label_names      optional class names; default the ClassLabel's names, or
                   ('below', 'at_or_above') with a threshold
  splits           our split -> TFDS split (slicing allowed), default
                   {'train': 'train', 'test': 'test'}; e.g. imdb_reviews has
                   no validation: {'validation': 'train[90%:]', ...}
  data_dir         default $CATRANS_DATA_DIR or
                   ~/.cache/catrans/tensorflow_datasets
  download         default True (download_and_prepare on first use)
  tokenizer        'byte' (default) or 'sentencepiece' (+
                   sentencepiece_vocab_size, trained on the train split)
Examples: {'text': str} plus 'label': int when label_key is set.
"""
from __future__ import annotations

from typing import Any, Mapping

from experiments.data import pip_sources
from experiments.tasks import Task

DEFAULT_SPLITS = {'train': 'train', 'test': 'test'}
THRESHOLD_NAMES = ('below', 'at_or_above')


class TextView:
  """Random-access view: TFDS records -> {'text': str[, 'label': int]}."""

  def __init__(self, data_source, text_key: str, label_key: str | None = None,
               label_threshold: float | None = None):
    self._source = data_source
    self._text_key = text_key
    self._label_key = label_key
    self._threshold = label_threshold

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index) -> Mapping[str, Any]:
    record = self._source[int(index)]
    text = record[self._text_key]
    out = {'text': text.decode('utf-8') if isinstance(text, bytes) else str(text)}
    if self._label_key is not None:
      value = record[self._label_key]
      out['label'] = (int(float(value) >= self._threshold)
                      if self._threshold is not None else int(value))
    return out


def _features(data_source):
  return data_source.dataset_info.features


def _check_keys(dataset, features, text_key, label_key):
  for role, key in (('text_key', text_key), ('label_key', label_key)):
    if key is not None and key not in features:
      raise ValueError(f'{role}={key!r} is not a feature of {dataset}; '
                       f'features: {sorted(features.keys())}')


def _label_names(config, features, label_key, threshold):
  if label_key is None:
    return None
  names = config.get('label_names', None)
  if names:
    return tuple(names)
  if threshold is not None:
    return THRESHOLD_NAMES
  feature_names = getattr(features[label_key], 'names', None)
  if not feature_names:
    raise ValueError(f'label {label_key!r} is not a ClassLabel; give '
                     'label_threshold (float scores) or label_names')
  return tuple(feature_names)


def make_task(config) -> Task:
  import tensorflow_datasets as tfds
  dataset = config.get('dataset', None)
  if not dataset:
    raise ValueError("tfds_text needs config.dataset, e.g. 'imdb_reviews'")
  text_key = config.get('text_key', 'text')
  label_key = config.get('label_key', None)
  threshold = config.get('label_threshold', None)
  if threshold is not None and label_key is None:
    raise ValueError('label_threshold is set but label_key is not')
  split_map = dict(config.get('splits', None) or DEFAULT_SPLITS)
  # ConfigDict sorts keys: put train / validation / test first, in that order.
  order = {name: i for i, name in enumerate(pip_sources.SPLITS)}
  split_map = dict(sorted(split_map.items(),
                          key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
  if 'train' not in split_map:
    raise ValueError(f"splits must map 'train', got {split_map}")
  data_dir = config.get('data_dir', None) or pip_sources.default_data_dir()

  sources = {ours: tfds.data_source(
      dataset, split=theirs, data_dir=data_dir,
      download=bool(config.get('download', True)),
      builder_kwargs={'file_format': 'array_record'})
             for ours, theirs in split_map.items()}
  features = _features(sources['train'])
  _check_keys(dataset, features, text_key, label_key)
  label_names = _label_names(config, features, label_key, threshold)
  splits = {ours: TextView(source, text_key, label_key,
                           None if threshold is None else float(threshold))
            for ours, source in sources.items()}
  cache_name = dataset.replace('/', '_').replace(':', '_')
  tokenizer = pip_sources.make_tokenizer(config, splits['train'], data_dir,
                                         cache_name)
  return Task(name=f'tfds_text:{dataset}', tokenizer=tokenizer,
              source=pip_sources.split_getter(dataset, splits),
              splits=tuple(split_map),
              label_names=None if label_names is None else {'label': label_names})
