"""Preemption, corrupt checkpoints and non-finite values: nothing is lost, failures are loud."""
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_trainer import ROOT, _env, _losses, _train_cmd

ARGS = ["--config.train.steps=10", "--config.train.log_every=1",
        "--config.train.checkpoint_every=100", "--config.train.eval_every=0"]


def _reference(tmp_path):
  ref = tmp_path / "ref"
  r = subprocess.run(_train_cmd(ref, *ARGS), env=_env(1), cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return _losses(ref)


def test_sigterm_at_random_steps_saves_and_resumes_bit_for_bit(tmp_path):
  ref = _reference(tmp_path)
  run = tmp_path / "run"
  rng = random.Random(0)
  done, interruptions = 0, 0
  while done < 10 and interruptions < 3:
    p = subprocess.Popen(_train_cmd(run, *ARGS), env=_env(1), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    target = done + rng.randint(1, 3)
    deadline = time.time() + 300
    while p.poll() is None and max(_losses(run) if (run / "metrics.jsonl").exists() else [0],
                                   default=0) < target:
      assert time.time() < deadline
      time.sleep(0.02)
    if p.poll() is None:
      sent = time.time()
      p.send_signal(signal.SIGTERM)
      out, _ = p.communicate(timeout=60)
      assert time.time() - sent < 60  # exits within a bound
      assert p.returncode == 0, out[-3000:]
      interruptions += 1
      assert "saved a checkpoint" in out and "interrupted" in out
    else:
      p.communicate()
    done = max(_losses(run))
  if done < 10:
    r = subprocess.run(_train_cmd(run, *ARGS), env=_env(1), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0
  assert interruptions >= 2
  got = _losses(run)
  assert [got[s] for s in range(1, 11)] == [ref[s] for s in range(1, 11)]


def _corrupt(step_dir):
  """Truncates every parameter data file of a checkpoint to half its size."""
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      path = os.path.join(root, name)
      if "/d/" in path + "/" and os.path.getsize(path) > 64:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
  args = ["--config.train.log_every=1", "--config.train.checkpoint_every=3",
          "--config.train.eval_every=0"]
  ref = tmp_path / "ref"
  r = subprocess.run(_train_cmd(ref, "--config.train.steps=9", *args), env=_env(1),
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  run = tmp_path / "run"
  r = subprocess.run(_train_cmd(run, "--config.train.steps=6", *args), env=_env(1),
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  _corrupt(run / "checkpoints" / "6")
  r = subprocess.run(_train_cmd(run, "--config.train.steps=9", *args), env=_env(1),
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  out = r.stdout + r.stderr
  assert "checkpoint at step 6" in out and "resumed from step 3" in out
  # The cosine schedule depends on train.steps, so compare with a 9-step reference.
  a, b = _losses(ref), _losses(run)
  assert [a[s] for s in range(4, 10)] == [b[s] for s in range(4, 10)]

  # Every checkpoint broken: an error, never a silent fresh start over the run.
  for step in (3, 6, 9):
    if (run / "checkpoints" / str(step)).exists():
      _corrupt(run / "checkpoints" / str(step))
  r = subprocess.run(_train_cmd(run, "--config.train.steps=12", *args), env=_env(1),
                     cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode != 0
  assert "could be restored" in r.stderr and "refusing to start over" in r.stderr


def _nan_trainer(tmp_path, policy, bad_step=2):
  from experiments.configs import default
  from experiments.trainer import Trainer
  c = default.get_config("tiny")
  c.train.nonfinite = policy
  c.train.steps = 4
  c.train.log_every = 1
  c.train.eval_every = 0
  t = Trainer(c, str(tmp_path), progress=False)
  loss = t.objective.loss

  def poisoned(params, batch, rng, step):  # NaN in the loss at one step only
    value, metrics = loss(params, batch, rng, step)
    value = jnp.where(step == bad_step, jnp.nan, value)
    return value, dict(metrics, loss=value)
  t.objective.loss = poisoned
  return t


def test_nan_loss_is_skipped_and_counted(tmp_path):
  from experiments.data import pipeline
  t = _nan_trainer(tmp_path, "skip")
  state = t.init_state()
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=t.batch_size,
                                    seq_len=t.seq_len, seed=0)
  for _ in range(2):
    state, m = t.train_step(state, next(it))
  before = jax.device_get(state.params)
  state, m = t.train_step(state, next(it))  # step index 2: poisoned
  assert float(m["finite"]) == 0.0 and int(m["skipped"]) == 1 and int(state.step) == 3
  after = jax.device_get(state.params)
  jax.tree.map(np.testing.assert_array_equal, before, after)
  state, m = t.train_step(state, next(it))
  assert float(m["finite"]) == 1.0 and np.isfinite(float(m["loss"]))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_nan_loss_with_stop_policy_names_the_term(tmp_path):
  from experiments.trainer import NonFiniteError
  t = _nan_trainer(tmp_path, "stop")
  with pytest.raises(NonFiniteError, match="non-finite values at step 3 in: loss"):
    t.run()


def test_unknown_nonfinite_policy(tmp_path):
  from experiments.configs import default
  from experiments.trainer import Trainer
  c = default.get_config("tiny")
  c.train.nonfinite = "explode"
  with pytest.raises(ValueError, match="train.nonfinite='explode'"):
    Trainer(c, str(tmp_path))
