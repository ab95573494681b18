"""Task registry: a task is one module `experiments/tasks/NAME.py`.

Each task module exposes `make_task(config) -> Task`. Adding a task means adding
one file; `get_task` finds it by name, so nothing else has to be edited.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping, Sequence

from experiments.data.tokenizers import Tokenizer

# An example is a dict with 'text': str or 'tokens': np.ndarray, optionally
# 'prompt' (+ 'answer') whose tokens get no loss, and scalar labels ('label').
Example = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  tokenizer: Tokenizer
  # split name -> random-access sequence of examples (len() and __getitem__),
  # usable directly as a grain MapDataset source.
  source: Callable[[str], Sequence[Example]]
  splits: tuple[str, ...]
  # label field name -> class names, e.g. {'label': ('rotten', 'fresh')}.
  label_names: Mapping[str, Sequence[str]] | None = None
  # Structured tokens (catrans ModelConfig.token_features): one tuple of per-token values
  # per feature, e.g. an observation's row and column; the model embeds them factored.
  token_features: tuple = ()


def in_memory_task(name: str, tokenizer: Tokenizer, splits: Mapping[str, Sequence[Example]],
                   label_names: Mapping[str, Sequence[str]] | None = None,
                   token_features: tuple = ()) -> Task:
  """A Task over examples already in memory (the generated tasks): `source` serves the
  splits and names the known ones when asked for another."""
  def source(split: str):
    if split not in splits:
      raise ValueError(f'{name} has splits {tuple(splits)}, not {split!r}')
    return splits[split]
  return Task(name=name, tokenizer=tokenizer, source=source, splits=tuple(splits),
              label_names=label_names, token_features=token_features)


def available_tasks() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith('_'))


def get_task(name: str, config=None) -> Task:
  """Imports `experiments.tasks.<name>` and calls its `make_task(config)`."""
  if name not in available_tasks():
    raise ValueError(f'Unknown task {name!r}; available tasks (files in '
                     f'experiments/tasks/): {", ".join(available_tasks())}')
  module = importlib.import_module(f'{__name__}.{name}')
  if config is None:
    import ml_collections
    config = ml_collections.ConfigDict()
  return module.make_task(config)
