"""What the scripts under reports/, bench/ and tools/ share about a training run: loading its
trainer (from the run's own config.json, or from a config), its trained parameters, and
turning generated token rows back into text. Scripts import this, never one another."""
import json
import os

import ml_collections

from experiments.trainer import Trainer


def load_trainer(workdir: str) -> Trainer:
  """The Trainer of an experiments.train workdir, rebuilt from its config.json (no training;
  restore_latest / restore_params read its checkpoints)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.train.progress = False
  return Trainer(config, workdir, progress=False)


def trained(config, workdir: str):
  """(Trainer, params) of `config` in `workdir`, training it first (or finishing it: run()
  resumes) when its final checkpoint is missing."""
  trainer = Trainer(config, workdir, progress=False)
  return trainer, trainer.trained_params()


def until_eos(tok, row) -> list[int]:
  """A generated row's token ids up to (not including) its first EOS."""
  ids = [int(t) for t in row]
  return ids[:ids.index(tok.eos_id)] if tok.eos_id in ids else ids


def decode_new(tok, row) -> str:
  """The text of a row of new tokens (up to its first EOS)."""
  return tok.decode(until_eos(tok, row))
