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
  assert "checkpoint at step 6" in caplog.text and "is corrupt: part" in caplog.text
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
  before = jax.device_get((state.params, state.opt_state))
  state, m = t.train_step(state, next(it))  # step index 2: poisoned
  assert float(m["finite"]) == 0.0 and int(m["skipped"]) == 1 and int(state.step) == 3
  after = jax.device_get((state.params, state.opt_state))
  jax.tree.map(np.testing.assert_array_equal, before, after)  # moments and counts too
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


# --- checkpoint integrity, start-over, metrics, non-finite updates, save failures, CLI ------

def _restore(trainer, directory):
  from experiments.checkpointing import Checkpointer
  ckpt = Checkpointer(str(directory), async_save=False)
  try:
    with trainer.context():
      return ckpt.restore(trainer.abstract_state, trainer.meta)
  finally:
    ckpt.close(quiet=True)


def _garble_bytes(path, rng, size, flip):
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    at = rng.randrange(0, len(data) - size)
    for i in range(at, at + size):
      change = (1 << rng.randrange(8)) if flip else rng.randrange(1, 256)
      data[i] = data[i] ^ change
    f.seek(0)
    f.write(data)


def test_every_garbled_part_falls_back_with_one_line_naming_it(tmp_path, caplog):
  """Flipped bits and random bytes in the arrays, a data position that parses but lacks its
  key, a deleted digest, an edited model description: each restores the previous checkpoint
  (never silently the altered one), and the log names the step and the part."""
  import json
  import shutil
  from experiments.trainer import Trainer
  c = _config(6, checkpoint_every=3)
  c.train.async_checkpoint = False
  t = Trainer(c, str(tmp_path / "run"), progress=False)
  t.run()
  source = tmp_path / "run" / "checkpoints"
  arrays = max((p for p in (source / "6" / "state").rglob("*") if "d" in p.parent.name
                and p.is_file()), key=lambda p: p.stat().st_size)
  rng = random.Random(0)

  def edit_json(name, change):
    def apply(step_dir):
      path = next((step_dir / name).glob("metadata"))
      path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return apply
  cases = {
      "1 flipped bit": (lambda d: _garble_bytes(d / arrays.relative_to(source / "6"), rng, 1,
                                                True), "part "),
      "4 random bytes": (lambda d: _garble_bytes(d / arrays.relative_to(source / "6"), rng, 4,
                                                 False), "part "),
      "64 flipped bytes": (lambda d: _garble_bytes(d / arrays.relative_to(source / "6"), rng,
                                                   64, True), "part "),
      "data position without next_index": (edit_json("data", lambda j: {
          k: v for k, v in j.items() if k != "next_index"}), "part data differs"),
      "digest deleted": (lambda d: shutil.rmtree(d / "digest"), "part 'digest' is unreadable"),
      "model description edited": (edit_json("meta", lambda j: dict(j, objective="other")),
                                   "part 'meta' differs"),
  }
  for i, (name, (apply, expect)) in enumerate(cases.items()):
    copy = tmp_path / f"case{i}"
    shutil.copytree(source, copy)
    apply(copy / "6")
    caplog.clear()
    with caplog.at_level("INFO", logger="experiments"):
      _, _, step = _restore(t, copy)
    assert step == 3, name
    lines = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
    assert len(lines) == 1 and "checkpoint at step 6" in lines[0] and expect in lines[0], (
        name, lines)


def test_update_made_nonfinite_by_a_broken_state_stops_before_it_is_saved(tmp_path):
  """A state whose second moments are negative (as a garbled checkpoint left them) gives
  finite gradients but a NaN update. Skipping cannot help (every later update is NaN too), so
  the run stops at once, naming the step, and the NaN parameters are never checkpointed."""
  import shutil
  from experiments.checkpointing import Checkpointer
  from experiments.train_step import NonFiniteError
  from experiments.trainer import Trainer
  c = _config(2, checkpoint_every=2)
  c.train.async_checkpoint = False
  t = Trainer(c, str(tmp_path), progress=False)
  t.run()
  state, data, step = _restore(t, tmp_path / "checkpoints")
  nu_negative = jax.tree_util.tree_map_with_path(
      lambda path, x: -jnp.abs(x) - 1.0 if "nu" in jax.tree_util.keystr(path) else x,
      state.opt_state)
  shutil.rmtree(tmp_path / "checkpoints")
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  ckpt.save(step, state.replace(opt_state=nu_negative), data, t.meta)
  ckpt.close()
  for policy, every in (("skip", 100), ("stop", 100), ("skip", 1)):
    c = _config(20, checkpoint_every=every)
    c.train.nonfinite = policy
    with pytest.raises(NonFiniteError, match=r"the update at step 3 made the parameters "
                       r"non-finite from finite gradients.*the last checkpoint is step 2"):
      Trainer(c, str(tmp_path), progress=False).run()
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2], policy


def test_resume_drops_redone_metrics_and_a_workdir_without_checkpoints_is_refused(tmp_path):
  import shutil
  from experiments.observe import read_metrics
  from experiments.preflight import PreflightError
  _run(tmp_path, _config(4, checkpoint_every=2))
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if killed before the save of step 4
  _run(tmp_path, _config(4, checkpoint_every=2))  # resumes at 2, redoes 3 and 4
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
  shutil.rmtree(tmp_path / "checkpoints")
  with pytest.raises(PreflightError, match="start_over=true"):
    _run(tmp_path, _config(4, checkpoint_every=2))
  c = _config(2, checkpoint_every=2)
  c.train.start_over = True
  assert _run(tmp_path, c).steps == 2
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
  assert (tmp_path / "metrics.jsonl.1").exists()


def test_failed_save_stops_the_run_naming_the_path_and_free_space(tmp_path, monkeypatch):
  import errno
  import orbax.checkpoint as ocp
  from experiments.save_errors import SaveError
  from experiments.trainer import Trainer
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  with pytest.raises(SaveError, match=r"checkpoints/4: No space left on device \(.* MiB free"):
    _run(tmp_path, _config(6, checkpoint_every=2))
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  assert int(Trainer(_config(6), str(tmp_path), progress=False).restore_latest().step) == 2


def test_full_tmpfs_stops_the_cli_with_one_message(tmp_path):
  """A real full disk: a 3 MB tmpfs as the workdir (mount needs root; skipped otherwise)."""
  mnt = tmp_path / "small"
  mnt.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    r = subprocess.run(_train_cmd(mnt / "run", "--config.train.steps=40",
                                  "--config.train.checkpoint_every=1",
                                  "--config.train.keep_checkpoints=100",
                                  "--config.train.eval_every=0"),
                       env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 5, out[-3000:]
    assert "could not write the" in r.stderr and "MiB free" in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in out and "Logging error" not in out, out[-3000:]
    steps = sorted(int(s) for s in os.listdir(mnt / "run" / "checkpoints") if s.isdigit())
    assert steps and steps[-1] < 40
    from experiments.trainer import Trainer
    c = _config(40)
    restored = Trainer(c, str(mnt / "run"), progress=False).restore_latest()
    assert int(restored.step) == steps[-1]  # the newest complete one reads back exactly
  finally:
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_config_ranges_are_checked_and_the_cli_exits_3_without_a_traceback(tmp_path):
  from experiments import config_checks
  c = _config(4)
  c.train.update(dict(checkpoint_every=0, log_every=0, steps=-5))
  c.optimizer.learning_rate = -1e-3
  c.objective.p_noise = 1.5
  found = " ".join(config_checks.errors(c))
  for key in ("train.checkpoint_every=0", "train.log_every=0", "train.steps=-5",
              "optimizer.learning_rate=-0.001", "objective.p_noise=1.5"):
    assert key in found, found
  assert config_checks.errors(_config(4)) == []
  r = subprocess.run(_train_cmd(tmp_path / "w", "--config.train.steps=-5",
                                "--config.train.log_every=0"),
                     env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 3, r.stderr[-3000:]
  assert "train.steps=-5: need an integer >= 1" in r.stderr and "Traceback" not in r.stderr
  assert not (tmp_path / "w").exists()  # nothing was built or written
  (tmp_path / "a_file").write_text("")
  r = subprocess.run(_train_cmd(tmp_path / "a_file"), env=_env(1), cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 3 and "preflight: workdir" in r.stderr, r.stderr[-3000:]
  assert "Traceback" not in r.stderr
