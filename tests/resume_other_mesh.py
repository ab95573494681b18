"""Run in a subprocess with 8 simulated devices by test_trainer.py: one run moves across
meshes (fsdp=8 -> data=2 x fsdp=2 on 4 devices -> 1 device) through its checkpoints; prints
its losses and those of an uninterrupted fsdp=8 run as JSON."""
import json
import sys

import jax

from experiments.configs import default
from experiments.trainer import Trainer

STEPS = 8


def config(mesh):
  c = default.get_config("tiny")
  c.mesh.update(mesh)
  c.train.update(dict(steps=STEPS, log_every=1, eval_every=0, checkpoint_every=100,
                      async_checkpoint=False))
  return c


def losses(workdir):
  by_step = {}
  with open(f"{workdir}/metrics.jsonl") as f:
    for line in f:
      row = json.loads(line)
      if "loss" in row:
        by_step[row["step"]] = row["loss"]
  return [by_step[s] for s in range(1, STEPS + 1)]


if __name__ == "__main__":
  root = sys.argv[1]
  devices = jax.devices()
  Trainer(config(dict(data=1, fsdp=8)), f"{root}/ref", progress=False).run()
  moved = f"{root}/moved"
  Trainer(config(dict(data=1, fsdp=8)), moved, progress=False).run(until=3)
  Trainer(config(dict(data=2, fsdp=2)), moved, devices=devices[:4], progress=False).run(until=6)
  summary = Trainer(config(dict(data=1, fsdp=1)), moved, devices=devices[:1],
                    progress=False).run()
  print("RESULT " + json.dumps({"ref": losses(f"{root}/ref"), "moved": losses(moved),
                                "steps": summary.steps}))
