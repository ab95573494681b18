"""Plain English language modelling on Shakespeare's works (no labels).

Config options (all optional):
  data_dir                 default $CATRANS_DATA_DIR or
                           ~/.cache/catrans/tensorflow_datasets
  tokenizer                'byte' (default) or 'sentencepiece'
  sentencepiece_vocab_size 2048; trained on the train split, cached next to
                           the data
Examples: {'text': chunk of <= 800 chars, 'work': e.g. 'hamlet'}; validation
and test chunks come from works absent from train (see shakespeare_builder).
"""
from __future__ import annotations

from experiments.data import pip_sources
from experiments.data import shakespeare_builder as builder_lib
from experiments.tasks import Task

DATASET_NAME = builder_lib.ShakespeareGutenberg.name
# 'chunk' stays out: the pipeline would pass any int field on as a label.
FIELDS = ('text', 'work')


def make_task(config) -> Task:
  splits, tokenizer = pip_sources.load_splits(config, DATASET_NAME, FIELDS)
  return Task(name='shakespeare', tokenizer=tokenizer,
              source=pip_sources.split_getter('shakespeare', splits),
              splits=builder_lib.SPLITS)
