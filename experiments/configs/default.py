"""The README's main job: a byte-level transformer learning base-b arithmetic answers.

Variants (`--config=experiments/configs/default.py:ARG`):
  (none)  ~4 minutes on 2 CPU cores; the loss falls far below the unigram baseline
  tiny    a few seconds; for tests and smoke checks
  pod     the same task at a size worth a TPU/GPU slice (fsdp over all devices, bf16)
"""
from experiments.configs.base import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.task.update(dict(name="arithmetic", num_train=5000, num_test=200))
  c.train.steps = 600
  c.train.eval_every = 300
  c.train.checkpoint_every = 200
  if arg == "tiny":
    c.model.update(dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=64,
                        max_len=48))
    c.data.update(dict(seq_len=48, global_batch_size=8))
    c.train.update(dict(steps=6, log_every=2, eval_every=6, eval_batches=2,
                        checkpoint_every=3, peak_flops=1e11, progress=False))
    c.optimizer.warmup_steps = 2
  elif arg == "pod":
    c.model.update(dict(d_model=1024, num_layers=16, num_heads=16, num_kv_heads=8,
                        mlp_dim=4096, max_len=512, dtype="bfloat16", remat="dots",
                        scan_layers=True))
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    c.data.update(dict(seq_len=64, global_batch_size=512))
    c.task.num_train = 200_000
    c.train.update(dict(steps=20_000, eval_every=2000, checkpoint_every=1000))
    c.optimizer.learning_rate = 1e-3
  elif arg not in (None, ""):
    raise ValueError(f"default.py variants: '', 'tiny', 'pod'; got {arg!r}")
  return c
