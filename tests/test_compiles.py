"""No silent recompiles: a steady-state run compiles nothing after warm-up, length buckets
bound the compiled shapes and give the losses of full-width batches, and a recompile is
caught and named."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.compiles import CompileWatch
from experiments.configs import arithmetic_seqmatch, default
from experiments.trainer import Trainer


def _run(workdir, **data):
  c = default.get_config("tiny")
  c.train.update(dict(steps=12, log_every=2, eval_every=4, checkpoint_every=4,
                      async_checkpoint=False))
  c.data.update(data)
  t = Trainer(c, str(workdir), progress=False)
  t.run()
  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
  return t, losses


def test_steady_state_compiles_nothing_and_buckets_match_full_width(tmp_path):
  full, full_losses = _run(tmp_path / "full")
  assert full.compile_watch.warmup_compiles > 0
  assert full.compile_watch.recompiles == []

  buckets = (32, 38, 40, 48)  # this data: longest rows of 37-40 bytes
  cut, cut_losses = _run(tmp_path / "cut", length_buckets=buckets)
  widths = {k[1] for k in cut.compile_watch._seen if isinstance(k, tuple) and k[0] == "train"}
  assert len(widths) >= 2 and widths <= set(buckets)  # buckets in use, nothing else
  assert cut.compile_watch.recompiles == []
  # Right padding never reaches a real position of a causal model: the same losses.
  np.testing.assert_allclose(cut_losses, full_losses, rtol=1e-5)


def test_a_recompile_is_caught_and_named():
  watch = CompileWatch()
  try:
    @jax.jit
    def scale_rows(x):
      return x * 2.0

    with watch.phase("step"):
      scale_rows(jnp.ones(3))
    with watch.phase("step"):
      scale_rows(jnp.ones(3))          # cached: nothing new
    assert watch.recompiles == []
    with watch.phase("step"):
      scale_rows(jnp.ones(5))          # a new shape in a phase that compiled before
    assert len(watch.recompiles) == 1 and "jit(scale_rows)" in watch.recompiles[0][1]
  finally:
    watch.close()


def test_bad_length_buckets_are_rejected(tmp_path):
  c = default.get_config("tiny")
  c.data.length_buckets = (32, 24, 48)
  with pytest.raises(ValueError, match="increasing positive widths"):
    Trainer(c, str(tmp_path), progress=False)
  c.data.length_buckets = (24, 32)  # must end at seq_len (48)
  with pytest.raises(ValueError, match="data.seq_len=48"):
    Trainer(c, str(tmp_path), progress=False)
  s = arithmetic_seqmatch.get_config("sm,tiny")
  s.data.length_buckets = (32, s.data.seq_len)
  with pytest.raises(ValueError, match="SequenceMatch needs the full data.seq_len"):
    Trainer(s, str(tmp_path), progress=False)
