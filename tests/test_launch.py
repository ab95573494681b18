"""Launch scripts, start-up preflight and env-check: a broken launch fails fast with a
message that names the problem (never a silent hang)."""
import collections
import os
import subprocess
import sys
import time

import ml_collections
import pytest

from experiments import preflight
from experiments.tools import env_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "experiments", "launch")
Dev = collections.namedtuple("Dev", "id process_index device_kind platform")


def _env(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "MASTER_", "WORLD_SIZE", "RANK", "COORDINATOR_"))}
  env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable, **extra)
  return env


def _dry(script, *args, **env):
  r = subprocess.run(["bash", os.path.join(LAUNCH, script), *args], env=_env(DRY_RUN="1", **env),
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  return r.stdout


def test_worker_reads_slurm_torchrun_or_nothing():
  out = _dry("worker.sh", "--config=c.py", "--workdir=/w", SLURM_PROCID="3", SLURM_NTASKS="4",
             SLURM_JOB_NODELIST="gpu07,gpu08", COORDINATOR_PORT="999")
  assert out.split()[1:] == ["-m", "experiments.train", "--config=c.py", "--workdir=/w",
                             "--coordinator_address=gpu07:999", "--num_processes=4",
                             "--process_id=3"]
  out = _dry("worker.sh", "--workdir=/w", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500",
             WORLD_SIZE="2", RANK="1")
  assert "--coordinator_address=10.0.0.1:29500 --num_processes=2 --process_id=1" in out
  assert "--coordinator_address" not in _dry("worker.sh", "--workdir=/w")  # one host / TPU VM


def test_tpu_pod_runs_the_same_command_on_every_worker():
  out = _dry("tpu_pod.sh", "--config=experiments/configs/default.py:pod", "--workdir=gs://b/r",
             TPU_NAME="v5e-256", ZONE="us-west4-a")
  assert "tpu-vm ssh v5e-256 --zone us-west4-a --worker=all" in out
  assert "experiments.train" in out and "gs://b/r" in out
  setup = _dry("tpu_pod.sh", "setup", TPU_NAME="t", ZONE="z")
  assert "scp --recurse" in setup and "experiments.tools.env_check" in setup
  r = subprocess.run(["bash", os.path.join(LAUNCH, "tpu_pod.sh")], env=_env(DRY_RUN="1"),
                     capture_output=True, text=True, timeout=60)
  assert r.returncode != 0 and "TPU_NAME" in r.stderr


def test_missing_worker_fails_with_a_message_not_a_hang(tmp_path):
  port = 21000 + os.getpid() % 20000
  t0 = time.time()
  r = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
       f"--workdir={tmp_path}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
       "--process_id=0", "--preflight_timeout=4"],
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode == 3
  assert "not every process joined the coordinator" in r.stderr
  assert time.time() - t0 < 60


def _config(batch=8, accum=1, **mesh):
  return ml_collections.ConfigDict(dict(
      mesh=dict(dict(data=-1, fsdp=1, tensor=1), **mesh),
      data=dict(global_batch_size=batch), train=dict(grad_accum_steps=accum)))


def test_preflight_device_and_batch_checks():
  eight = [Dev(i, i // 4, "TPU v5 lite", "tpu") for i in range(8)]
  shape, warnings = preflight.check_devices(_config(), eight)
  assert shape == (8, 1, 1) and not warnings
  _, warnings = preflight.check_devices(_config(data=2, fsdp=2), eight)
  assert "uses 4 of the 8 devices" in warnings[0]
  with pytest.raises(preflight.PreflightError, match="does not divide the mesh's 8 batch shards"):
    preflight.check_devices(_config(batch=12), eight)
  with pytest.raises(preflight.PreflightError, match="grad_accum_steps 2"):
    preflight.check_devices(_config(batch=8, accum=2), eight)
  uneven = eight[:5] + [Dev(8, 2, "TPU v5 lite", "tpu")]
  with pytest.raises(preflight.PreflightError, match="different numbers of devices"):
    preflight.check_devices(_config(batch=6), uneven)


def test_preflight_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(preflight.PreflightError, match="not writable"):
    preflight.check_workdir(str(blocker / "run"))
  preflight.check_workdir(str(tmp_path / "new" / "run"))  # created, probe removed
  assert os.listdir(tmp_path / "new" / "run") == []


def test_env_check_reads_pins_and_extras():
  assert env_check.parse('jax[tpu]==0.10.2; extra == "tpu"') == ("jax", ("tpu",), "==0.10.2",
                                                                  "tpu")
  assert env_check.parse("numpy>=1.26") == ("numpy", (), ">=1.26", None)
  assert env_check.check("surely-not-a-package-xyz==1.0") == [
      "surely-not-a-package-xyz==1.0: not installed"]
  assert "pinned 0.0.1" in env_check.check("numpy==0.0.1")[0]
  groups = env_check.requirements()
  assert {"core", "dev", "tpu"} <= set(groups) and "jax==0.10.2" in groups["core"]
  r = subprocess.run([sys.executable, "-m", "experiments.tools.env_check"], env=_env(), cwd=ROOT,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "core       ok" in r.stdout and "devices    1 x cpu" in r.stdout
