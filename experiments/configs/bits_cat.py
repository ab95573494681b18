"""CAT on random bits with an exact attribute (majority): the estimates can be checked
against binomial tails (experiments/reports/cat_exactness.py does it in-process).

  python -m experiments.train --config=experiments/configs/bits_cat.py[:tiny] --workdir=DIR
"""
from experiments.configs.base import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.task = c.task.__class__(dict(name="bits", length=9, num_train=20000, num_test=500))
  c.objective = c.objective.__class__(dict(
      name="cat", param="factorized", branch="mlp", factor_dim=16, lam=1.0, mode="joint"))
  c.model.update(dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                      max_len=16))
  c.data.update(dict(seq_len=10, global_batch_size=128))
  c.train.update(dict(steps=600, eval_every=300, checkpoint_every=300))
  if arg == "tiny":
    c.model.update(dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=64))
    c.data.global_batch_size = 16
    c.train.update(dict(steps=4, log_every=2, eval_every=4, eval_batches=2,
                        checkpoint_every=4, peak_flops=1e11, progress=False))
  elif arg not in (None, ""):
    raise ValueError(f"bits_cat.py variants: '', 'tiny'; got {arg!r}")
  return c
