"""python -m experiments.tools.garble_sweep [--garbles 40] [--seed 0] [--workdir DIR]

Checkpoint integrity, measured: trains the tiny config to step 6 (checkpoints at 3 and 6),
then garbles a copy of the newest checkpoint in N random ways (1, 4 or 64 bytes at a random
offset; random bytes or flipped bits; half of them in an array data file, half in any file
of the checkpoint) and restores each copy. Each garble ends as one of:

  fell_back  the garble was detected: step 3 was restored, with one log line naming the part
  intact     step 6 restored, bit-identical to the ungarbled one (the bytes hit held nothing
             that is read back, e.g. a commit marker)
  silent     step 6 restored with a different state: the failure this guards against; must
             be 0
  refused    nothing restored and an error raised (a checkpoint directory orbax cannot list)

Prints one line per garble and the counts as JSON; exit status 1 if any was silent."""
import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile

import jax
import numpy as np

from experiments.checkpointing import Checkpointer
from experiments.configs import default
from experiments.trainer import Trainer


def _files(step_dir: str, data_only: bool) -> list[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      if os.path.getsize(path) and (not data_only or f"{os.sep}d{os.sep}" in path):
        out.append(path)
  return sorted(out)


def garble(path: str, rng: random.Random) -> str:
  """Changes `size` bytes of the file at a random offset; returns what it did."""
  size = rng.choice((1, 4, 64))
  kind = rng.choice(("random", "flip"))
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    size = min(size, len(data))
    at = rng.randrange(0, len(data) - size + 1)
    for i in range(at, at + size):
      old = data[i]
      data[i] = (old ^ (1 << rng.randrange(8)) if kind == "flip"
                 else rng.choice([b for b in range(256) if b != old]))
    f.seek(0)
    f.write(data)
  return f"{kind} {size} byte(s) at {at}"


def _host(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(jax.device_get(tree))]


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--garbles", type=int, default=40)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--workdir", default=None, help="default: a temporary directory")
  args = ap.parse_args()
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  root = args.workdir or tempfile.mkdtemp(prefix="garble-sweep-")
  c = default.get_config("tiny")
  c.train.update(dict(steps=6, checkpoint_every=3, eval_every=0, async_checkpoint=False))
  trainer = Trainer(c, os.path.join(root, "run"), progress=False)
  trainer.run()
  source = os.path.join(root, "run", "checkpoints")

  def restore(directory):
    ckpt = Checkpointer(directory, async_save=False)
    try:
      with trainer.context():
        return ckpt.restore(trainer.abstract_state, trainer.meta)
    finally:
      ckpt.close(quiet=True)

  ref_state, ref_data, ref_step = restore(source)
  assert ref_step == 6, ref_step
  ref = (_host(ref_state), ref_data)
  rng = random.Random(args.seed)
  counts = {"fell_back": 0, "intact": 0, "silent": 0, "refused": 0}
  for i in range(args.garbles):
    copy = os.path.join(root, f"garbled-{i}")
    shutil.copytree(source, copy)
    target = rng.choice(_files(os.path.join(copy, "6"), data_only=i % 2 == 0))
    what = garble(target, rng)
    try:
      state, data, step = restore(copy)
      outcome = ("fell_back" if step != 6 else
                 "intact" if (_host(state), data) == ref else "silent")
    except Exception as e:  # pylint: disable=broad-except
      outcome, step = "refused", f"{type(e).__name__}"
    counts[outcome] += 1
    print(f"{i:3d} {outcome:9s} {what:28s} {os.path.relpath(target, copy)} "
          f"({os.path.getsize(target)} B) -> {step}", flush=True)
    shutil.rmtree(copy)
  print("COUNTS " + json.dumps(dict(counts, garbles=args.garbles, seed=args.seed)))
  if not args.workdir:
    shutil.rmtree(root)
  sys.exit(1 if counts["silent"] else 0)


if __name__ == "__main__":
  main()
