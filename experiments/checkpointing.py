"""Checkpoints: orbax CheckpointManager (async, keeps N) of the train state (params,
optimizer state, step, RNG, the objective's state), the data iterator's position, a
description of the model, and a sha256 digest of each of those parts.

Restoring never silently starts over and never silently restores something else than was
saved: a workdir with checkpoints resumes from the newest one whose every part reads back
exactly (an unreadable or altered part is logged by name, and the next older one is tried),
or fails with a message (a different model shape, nothing readable). A failed save raises
save_errors.SaveError naming the path and the free space."""
import gc
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.digests import first_mismatch, json_digest, tree_digests
from experiments.save_errors import SaveError, write_failure
from experiments.train_state import split_aux, with_aux

log = logging.getLogger("experiments")

DIGEST_VERSION = 1  # the layout of the 'digest' item: {"version", "sha256": {part: hex}}


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


class Checkpointer:

  def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=("state", "data", "meta", "aux", "digest"))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, meta: dict, force: bool = False):
    """Saves asynchronously (when enabled) with a digest of every part. The digest is taken
    from the very arrays handed to orbax, before the next step can donate them."""
    self.wait()  # orbax waits for the previous save anyway; this names its step if it failed
    plain, aux = split_aux(state)
    sums = dict(tree_digests("state", plain), data=json_digest(data_state),
                meta=json_digest(meta))
    items = dict(state=ocp.args.StandardSave(plain), data=ocp.args.JsonSave(data_state),
                 meta=ocp.args.JsonSave(meta))
    if aux is not None:
      sums.update(tree_digests("aux", aux))
      items["aux"] = ocp.args.StandardSave(aux)
    items["digest"] = ocp.args.JsonSave({"version": DIGEST_VERSION, "sha256": sums})
    self._saving = int(step)
    try:
      self.manager.save(int(step), args=ocp.args.Composite(**items), force=force)
    except Exception as e:
      raise write_failure(os.path.join(self.directory, str(step)), e) from None

  def check_saves(self):
    """Raises SaveError if a background save has failed since the last call (cheap: does
    not wait for a save in flight)."""
    try:
      self.manager.check_for_errors()
    except Exception as e:
      raise write_failure(self._saving_path(), e) from None

  def wait(self):
    try:
      self.manager.wait_until_finished()
      self.manager.check_for_errors()  # waiting does not raise a background failure
    except Exception as e:
      raise write_failure(self._saving_path(), e) from None

  def _saving_path(self) -> str:
    """The directory of the save that may have failed in the background."""
    step = getattr(self, "_saving", None)
    return self.directory if step is None else os.path.join(self.directory, str(step))

  def close(self, quiet: bool = False):
    """Waits for the last save. quiet: another error is already on its way out; do not
    replace it with this one."""
    try:
      self.wait()
      self.check_saves()
    except SaveError:
      if not quiet:
        raise
    finally:
      try:
        self.manager.close()
      except Exception:  # A failed save was reported above (or is being reported).
        if not quiet:
          raise

  def _read(self, step: int, name: str, arg):
    # A failed read also surfaces as asyncio's "Task exception was never retrieved" with the
    # whole tensorstore spec (kilobytes); the one line logged by restore() says it all.
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**{name: arg}))[name]
    except Exception as e:
      gc.collect()  # Collect the failed tasks while their log is muted.
      raise CorruptCheckpoint(f"part '{name}' is unreadable ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
    finally:
      asyncio_log.setLevel(level)

  def _restore_verified(self, step: int, abstract_state, meta: dict):
    """(state, data_state) of `step`, each part checked against the digest saved with it;
    CorruptCheckpoint names the first part that is unreadable or differs."""
    saved = self._read(step, "digest", ocp.args.JsonRestore())
    sums = saved.get("sha256") if isinstance(saved, dict) else None
    if not isinstance(sums, dict):
      raise CorruptCheckpoint("part 'digest' is malformed")
    saved_meta = self._read(step, "meta", ocp.args.JsonRestore())
    if json_digest(saved_meta) != sums.get("meta"):
      raise CorruptCheckpoint("part 'meta' differs from its checksum")
    mismatch = describe_mismatch(saved_meta.get("param_shapes", {}), meta["param_shapes"])
    if mismatch:
      raise ValueError(
          f"the workdir {self.directory} holds a run of a different model; parameter "
          f"shapes differ:\n{mismatch}\nUse a new --workdir or the original model config.")
    abstract_plain, abstract_aux = split_aux(abstract_state)
    state = self._read(step, "state", ocp.args.StandardRestore(abstract_plain))
    _check(sums, tree_digests("state", state), "state")
    if abstract_aux is not None:
      aux = self._read(step, "aux", ocp.args.StandardRestore(abstract_aux))
      _check(sums, tree_digests("aux", aux), "aux")
      state = with_aux(state, aux)
    data = self._read(step, "data", ocp.args.JsonRestore())
    _check(sums, {"data": json_digest(data)}, "data")
    return state, data

  def restore(self, abstract_state, meta: dict, step: int | None = None):
    """(state, data_state, step) from the newest checkpoint whose every part reads back
    exactly as saved, or None if there are none. `abstract_state` carries shapes, dtypes and
    shardings for the restore. step: that checkpoint only (an error names the kept steps
    when it is not one of them)."""
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
        state, data = self._restore_verified(step, abstract_state, meta)
      except CorruptCheckpoint as e:
        errors.append(f"step {step}: {e}")
        log.error("checkpoint at step %d (%s) is corrupt: %s; trying an older one", step,
                  os.path.join(self.directory, str(step)), e)
        continue
      if errors:
        log.warning("resumed from step %d after skipping %d corrupt checkpoint(s)", step,
                    len(errors))
      return state, data, step
    raise RuntimeError(
        f"no checkpoint in {self.directory} could be restored (refusing to start over an "
        f"existing run; move that directory away to start afresh):\n" + "\n".join(errors))


class CorruptCheckpoint(Exception):
  pass


def _check(sums: dict, actual: dict, prefix: str):
  bad = first_mismatch(sums, actual, prefix)
  if bad is not None:
    raise CorruptCheckpoint(f"part {bad} differs from its checksum")


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""
