"""Trainer: same losses on any mesh, gradient accumulation, multi-host, exact resume after
SIGKILL, and clear errors before compilation."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import FAST_COMPILE_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(num_devices):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} "
                       + FAST_COMPILE_FLAGS,
             JAX_PLATFORMS="cpu")
  return env


def _train_cmd(workdir, *overrides, config="experiments/configs/default.py:tiny"):
  return [sys.executable, "-m", "experiments.train", f"--config={config}",
          f"--workdir={workdir}", *overrides]


def _losses(workdir):
  by_step = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if "loss" in row:
        by_step[row["step"]] = row["loss"]  # a resumed run rewrites later steps: keep last
  return by_step


def test_same_losses_on_1_and_8_devices_and_with_grad_accumulation():
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "trainer_losses.py"), "3"],
                       env=_env(8), cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split("RESULT ", 1)[1])
  one = np.array(result["1 device"])
  assert one[-1] < one[0]  # it trains
  # Sharding changes only the order of float32 reductions: agreement to ~1e-5 relative.
  for name in ("data4 x fsdp2", "data2 x fsdp2 x tensor2"):
    np.testing.assert_allclose(result[name], one, rtol=2e-5, err_msg=name)
  # Two micro-batches of 8 weighted by their token counts == one batch of 16.
  np.testing.assert_allclose(result["fsdp8 accum2"], result["1 device batch16"], rtol=2e-5)


def test_resume_on_a_different_mesh_continues_with_the_same_losses(tmp_path):
  # fsdp=8 for 3 steps, then data=2 x fsdp=2 on 4 devices to step 6, then 1 device to 8:
  # orbax reshards the state onto each new mesh and the data position carries over.
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "resume_other_mesh.py"),
                        str(tmp_path)], env=_env(8), cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split("RESULT ", 1)[1])
  assert result["steps"] == 8
  np.testing.assert_allclose(result["moved"], result["ref"], rtol=2e-5)


def test_data_position_follows_a_changed_global_batch():
  from experiments.resume import resume_data_position
  assert resume_data_position({"next_index": 5, "global_batch_size": 8}, 8) == {"next_index": 5}
  # 5 batches of 8 = 40 examples = 2.5 batches of 16: resume at batch 2 (example 32).
  assert resume_data_position({"next_index": 5, "global_batch_size": 8}, 16) == {"next_index": 2}
  assert resume_data_position({"next_index": 5, "global_batch_size": 16}, 8) == {
      "next_index": 10}
  assert resume_data_position({"next_index": 7}, 4) == {"next_index": 7}  # older checkpoints


def test_two_processes_match_one_process(tmp_path):
  steps = ["--config.train.steps=4", "--config.train.log_every=1",
           "--config.train.eval_every=0", "--config.data.global_batch_size=8"]
  single = tmp_path / "single"
  r = subprocess.run(_train_cmd(single, *steps), env=_env(4), cwd=ROOT,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  multi = tmp_path / "multi"
  port = 20000 + os.getpid() % 20000
  # Through the SLURM launch script, as `srun` would start it on two nodes.
  worker = os.path.join(ROOT, "experiments", "launch", "worker.sh")
  procs = [subprocess.Popen(
      ["bash", worker, "--config=experiments/configs/default.py:tiny", f"--workdir={multi}",
       *steps],
      env=dict(_env(2), SLURM_PROCID=str(i), SLURM_NTASKS="2", SLURM_JOB_NODELIST="127.0.0.1",
               COORDINATOR_PORT=str(port), PYTHON=sys.executable),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  a, b = _losses(single), _losses(multi)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=2e-5)


def test_sigkill_then_resume_gives_the_uninterrupted_losses(tmp_path):
  args = ["--config.train.steps=10", "--config.train.log_every=1",
          "--config.train.checkpoint_every=3", "--config.train.eval_every=0"]
  ref = tmp_path / "ref"
  r = subprocess.run(_train_cmd(ref, *args), env=_env(1), cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]

  run = tmp_path / "run"
  p = subprocess.Popen(_train_cmd(run, *args, "--config.train.async_checkpoint=false"),
                       env=_env(1), cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (run / "checkpoints" / "3").exists():
    assert p.poll() is None, "the run ended before its first checkpoint"
    assert time.time() < deadline
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)
  p.wait()
  killed_at = max(_losses(run), default=0)
  assert killed_at < 10, "too late: the run finished before it was killed"
  r = subprocess.run(_train_cmd(run, *args), env=_env(1), cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resumed from step" in r.stdout + r.stderr
  a, b = _losses(ref), _losses(run)
  assert sorted(b) == list(range(1, 11))
  with open(run / "metrics.jsonl") as f:  # the redone steps' rows replace, not repeat
    steps = [json.loads(line)["step"] for line in f]
  assert steps == list(range(1, 11))
  # Same device, same program, same data order: bit-for-bit.
  assert [a[s] for s in range(4, 11)] == [b[s] for s in range(4, 11)]


# --- errors, in process --------------------------------------------------------------------

def _tiny():
  from experiments.configs import default
  return default.get_config("tiny")


def test_unknown_config_key_is_rejected(tmp_path):
  from experiments.trainer import Trainer
  c = _tiny()
  c.bogus = 1
  with pytest.raises(ValueError, match="unknown config keys \\['bogus'\\]"):
    Trainer(c, str(tmp_path))
  c = _tiny()
  c.model.unknown_width = 3
  with pytest.raises(ValueError, match="unknown model config keys \\['unknown_width'\\]"):
    Trainer(c, str(tmp_path))


def test_cli_override_of_unknown_key_fails(tmp_path):
  r = subprocess.run(_train_cmd(tmp_path, "--config.train.stepz=3"), env=_env(1), cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  assert "stepz" in r.stderr


def test_mesh_larger_than_devices(tmp_path):
  from experiments.trainer import Trainer
  c = _tiny()
  c.mesh.update(dict(data=64, fsdp=1, tensor=1))
  with pytest.raises(ValueError, match="needs 64 devices but only"):
    Trainer(c, str(tmp_path))


def test_batch_that_does_not_divide_the_mesh():
  import jax
  from experiments import sharding
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
  with pytest.raises(ValueError, match="not divisible by grad_accum_steps=3"):
    sharding.check_batch(8, mesh, grad_accum_steps=3)
  fake = type("M", (), {"shape": {"data": 3, "fsdp": 1, "tensor": 1}})()
  with pytest.raises(ValueError, match="does not divide the mesh's 3 batch shards"):
    sharding.check_batch(8, fake)
  assert jax.device_count() >= 1


def test_token_ids_outside_vocab_fail_before_compiling(tmp_path):
  from experiments.data import pipeline
  from experiments.trainer import Trainer
  t = Trainer(_tiny(), str(tmp_path), progress=False)
  batch = next(pipeline.make_train_iterator(t.task, "train", global_batch_size=8,
                                            seq_len=t.seq_len, seed=0))
  batch["inputs"][0, 3] = 259
  with pytest.raises(ValueError, match=r"token ids outside the vocabulary \[0, 259\)"):
    t.train_step(t.init_state(), batch)
  batch["inputs"] = batch["inputs"][:, :10]
  with pytest.raises(ValueError, match="expected \\(local rows 8, seq_len 48\\)"):
    t.check_batch(batch)


def test_resuming_with_a_different_model_names_the_mismatch(tmp_path):
  r = subprocess.run(_train_cmd(tmp_path, "--config.train.steps=3"), env=_env(1), cwd=ROOT,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  r = subprocess.run(_train_cmd(tmp_path, "--config.train.steps=3", "--config.model.mlp_dim=96"),
                     env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode != 0
  assert "different model" in r.stderr and "mlp" in r.stderr and "[32, 96]" in r.stderr
