"""Preemption, corrupt checkpoints and non-finite values: nothing is lost, failures are loud."""
import os
import random
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_trainer import ROOT, _env, _losses, _train_cmd

def _config(steps, checkpoint_every=100):
  from experiments.configs import default
  c = default.get_config("tiny")
  c.train.update(dict(steps=steps, log_every=1, checkpoint_every=checkpoint_every,
                      eval_every=0))
  return c


def _run(workdir, config, signal_after_step=None):
  """Trainer.run in this process; optionally SIGTERM ourselves right after a given step
  (the handler only sets a flag, exactly as when a scheduler sends the signal)."""
  from experiments.trainer import Trainer
  t = Trainer(config, str(workdir), progress=False)
  if signal_after_step is not None:
    step_fn = t.train_step

    def train_step(state, batch, step=None):
      out = step_fn(state, batch, step)
      if step is not None and step + 1 == signal_after_step:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    t.train_step = train_step
  return t.run()


def test_sigterm_at_random_steps_saves_and_resumes_bit_for_bit(tmp_path):
  _run(tmp_path / "ref", _config(8))
  ref = _losses(tmp_path / "ref")
  run = tmp_path / "run"
  rng = random.Random(0)
  done, interruptions = 0, 0
  while done < 8:
    target = min(done + rng.randint(1, 3), 8) if interruptions < 3 else None
    summary = _run(run, _config(8), signal_after_step=target)
    done = summary.steps
    if summary.interrupted:
      interruptions += 1
      assert done == target  # saved at the step the signal arrived, then stopped
      assert (run / "checkpoints" / str(done)).exists()
  assert interruptions >= 3
  got = _losses(run)
  assert [got[s] for s in range(1, 9)] == [ref[s] for s in range(1, 9)]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
      signal.getsignal(signal.SIGTERM))  # handler restored after run()


def test_sigterm_ends_a_cli_run_cleanly_within_a_bound(tmp_path):
  p = subprocess.Popen(_train_cmd(tmp_path, "--config.train.steps=100000",
                                  "--config.train.log_every=1", "--config.train.eval_every=0"),
                       env=_env(1), cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while not (tmp_path / "metrics.jsonl").exists():
    assert p.poll() is None and time.time() < deadline
    time.sleep(0.05)
  sent = time.time()
  p.send_signal(signal.SIGTERM)
  out, _ = p.communicate(timeout=120)
  assert time.time() - sent < 60, "did not exit within 60 s of SIGTERM"
  assert p.returncode == 0, out[-3000:]
  assert "saved a checkpoint" in out and "interrupted" in out


def _corrupt(step_dir):
  """Truncates every parameter data file of a checkpoint to half its size."""
  for root, _, files in os.walk(step_dir / "state"):
    for name in files:
      path = os.path.join(root, name)
      if "/d/" in path + "/" and os.path.getsize(path) > 64:
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog):
  _run(tmp_path / "ref", _config(9, checkpoint_every=3))
  run = tmp_path / "run"
  _run(run, _config(9, checkpoint_every=3), signal_after_step=6)
  _corrupt(run / "checkpoints" / "6")
  with caplog.at_level("INFO", logger="experiments"):
    summary = _run(run, _config(9, checkpoint_every=3))
  assert summary.steps == 9 and not summary.interrupted
  assert "checkpoint at step 6 is corrupt" in caplog.text or "step 6" in caplog.text
  assert "resumed from step 3" in caplog.text
  a, b = _losses(tmp_path / "ref"), _losses(run)
  assert [a[s] for s in range(1, 10)] == [b[s] for s in range(1, 10)]

  # Every checkpoint broken: an error, never a silent fresh start over the run.
  for step in os.listdir(run / "checkpoints"):
    if step.isdigit():
      _corrupt(run / "checkpoints" / step)
  with pytest.raises(RuntimeError, match="refusing to start over"):
    _run(run, _config(12, checkpoint_every=3))


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
  from experiments.train_step import NonFiniteError
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


def test_resuming_never_unpickles(tmp_path, monkeypatch):
  """Checkpoints (orbax: tensorstore arrays + JSON) restore with pickle disabled, so a
  tampered workdir cannot run code through a pickle."""
  import pickle

  def refuse(*args, **kwargs):
    raise AssertionError("something tried to unpickle")
  _run(tmp_path, _config(2, checkpoint_every=2))
  monkeypatch.setattr(pickle, "load", refuse)
  monkeypatch.setattr(pickle, "loads", refuse)
  monkeypatch.setattr(pickle, "Unpickler", refuse)
  summary = _run(tmp_path, _config(3, checkpoint_every=2))
  assert summary.steps == 3
