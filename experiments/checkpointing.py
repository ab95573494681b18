"""Checkpoints: orbax CheckpointManager (async, keeps N) of the train state (params,
optimizer state, step, RNG), the data iterator's position and a description of the model.

Restoring never silently starts over: a workdir with checkpoints either resumes from the
newest one that reads back, or fails with a message (a different model shape, nothing
readable)."""
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.train_state import split_aux, with_aux

log = logging.getLogger("experiments")


def param_shapes(params) -> dict[str, list[int]]:
  """{'layer_0/attn/q': [d, n, h], ...}: what a checkpoint's model looks like."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(v))
          for path, v in flat}


def describe_mismatch(saved: dict, current: dict) -> str:
  lines = []
  for name in sorted(set(saved) | set(current)):
    a, b = saved.get(name), current.get(name)
    if a != b:
      lines.append(f"  {name}: checkpoint {a if a is not None else 'absent'} vs "
                   f"config {b if b is not None else 'absent'}")
  return "\n".join(lines)


@jax.jit
def _fingerprint(tree):
  leaves = [x.astype("float32") for x in jax.tree.leaves(tree)]
  return [(x.sum(), (x * x).sum()) for x in leaves]


def fingerprint(tree) -> list[float]:
  """Per-leaf sums of x and x^2: storage formats do not all checksum their chunks, so a
  flipped or truncated block can read back as valid numbers; this catches it."""
  return [float(v) for pair in jax.device_get(_fingerprint(tree)) for v in pair]


def fingerprints_match(saved, restored, rtol=1e-4) -> bool:
  # Restoring onto another mesh changes reduction order, hence a tolerance.
  saved, restored = np.asarray(saved, np.float64), np.asarray(restored, np.float64)
  return saved.shape == restored.shape and bool(
      np.all(np.abs(saved - restored) <= rtol * (np.abs(saved) + 1e-6)))


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=("state", "data", "meta", "aux"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False):
    state, aux = split_aux(state)
    meta = dict(meta, fingerprint=fingerprint(state.params))
    items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                 meta=ocp.args.JsonSave(meta))
    if aux is not None:
      items["aux"] = ocp.args.StandardSave(aux)
    self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

  def restore(self, abstract_state, meta: dict, step: int | None = None):
    """(state, data_state, step) from the newest readable checkpoint, or None if there
    are none. `abstract_state` carries shapes, dtypes and shardings for the restore.
    step: that checkpoint only (an error names the kept steps when it is not one of them)."""
    steps = self.all_steps()
    if step is not None:
      if int(step) not in steps:
        raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory}; "
                                f"kept steps: {steps}")
      steps = [int(step)]
    if not steps:
      return None
    errors = []
    for step in reversed(steps):
      try:
        saved_meta = self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      except Exception as e:  # Unreadable metadata: a partial or corrupt checkpoint.
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        log.error("checkpoint at step %d is unreadable (%s); trying an older one", step, e)
        continue
      mismatch = describe_mismatch(saved_meta.get("param_shapes", {}), meta["param_shapes"])
      if mismatch:
        raise ValueError(
            f"the workdir {self.directory} holds a run of a different model; parameter "
            f"shapes differ:\n{mismatch}\nUse a new --workdir or the original model config.")
      abstract_plain, abstract_aux = split_aux(abstract_state)
      items = dict(state=ocp.args.StandardRestore(abstract_plain), data=ocp.args.JsonRestore())
      if abstract_aux is not None:
        items["aux"] = ocp.args.StandardRestore(abstract_aux)
      try:
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:
        errors.append(f"step {step}: {type(e).__name__}: {e}")
        log.error("checkpoint at step %d failed to restore (%s); trying an older one",
                  step, e)
        continue
      if "fingerprint" in saved_meta and not fingerprints_match(
          saved_meta["fingerprint"], fingerprint(out["state"].params)):
        errors.append(f"step {step}: parameters read back differ from what was saved")
        log.error("checkpoint at step %d is corrupt (parameter fingerprint mismatch); trying "
                  "an older one", step)
        continue
      if errors:
        log.warning("resumed from step %d after skipping unreadable checkpoints", step)
      state = out["state"] if abstract_aux is None else with_aux(out["state"], out["aux"])
      return state, out["data"], step
    raise RuntimeError(
        f"no checkpoint in {self.directory} could be restored (refusing to start over an "
        f"existing run):\n" + "\n".join(errors))
