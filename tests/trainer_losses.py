"""Run in a subprocess by test_trainer.py (device counts are fixed at JAX start-up):
prints a JSON dict {mesh name: [loss per step]} for the tiny default config."""
import json
import sys
import tempfile

import jax

from experiments.configs import default
from experiments.data import pipeline
from experiments.trainer import Trainer


def losses(mesh, steps, devices=None, **overrides):
  c = default.get_config("tiny")
  c.model.num_kv_heads = 2  # so the tensor axis really shards the KV heads
  c.mesh.update(mesh)
  for k, v in overrides.items():
    section, key = k.split(".")
    c[section][key] = v
  t = Trainer(c, tempfile.mkdtemp(), devices=devices, progress=False)
  state = t.init_state()
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=t.batch_size,
                                    seq_len=t.seq_len, seed=c.seed)
  out = []
  for _ in range(steps):
    state, m = t.train_step(state, next(it))
    out.append(float(m["loss"]))
  return out


if __name__ == "__main__":
  steps = int(sys.argv[1])
  result = {
      "1 device": losses(dict(data=1, fsdp=1, tensor=1), steps, devices=jax.devices()[:1]),
      "data4 x fsdp2": losses(dict(data=4, fsdp=2, tensor=1), steps),
      "data2 x fsdp2 x tensor2": losses(dict(data=2, fsdp=2, tensor=2), steps),
      "fsdp8 accum2": losses(dict(data=1, fsdp=8, tensor=1), steps,
                             **{"data.global_batch_size": 16, "train.grad_accum_steps": 2}),
      "1 device batch16": losses(dict(data=1, fsdp=1, tensor=1), steps,
                                 devices=jax.devices()[:1], **{"data.global_batch_size": 16}),
  }
  print("RESULT " + json.dumps(result))
