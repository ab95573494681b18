"""Trainer objectives: one module `experiments/objectives/NAME.py` per objective.

Each module exposes `make_objective(config, task) -> Objective`; `get_objective` finds it by
name (`config.objective.name`), so adding an objective is adding one file."""
import importlib
import pkgutil

from experiments.objectives.base import Objective


def available_objectives() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith("_") and m.name != "base")


def get_objective(config, task) -> Objective:
  name = config.objective.name
  if name not in available_objectives():
    raise ValueError(f"Unknown objective {name!r}; available objectives (files in "
                     f"experiments/objectives/): {', '.join(available_objectives())}")
  return importlib.import_module(f"{__name__}.{name}").make_objective(config, task)
