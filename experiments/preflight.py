"""Start-up checks that turn a pod launch's silent hangs into messages.

A multi-host job that is missing a worker, sees other devices than its mesh expects, cannot
split its batch or cannot write its workdir otherwise hangs in its first collective or dies
an hour later at the first checkpoint. `experiments.train` runs these before building
anything; each failure names the problem and what to do about it."""
import contextlib
import logging
import os
import sys
import threading
import time
import uuid

import jax
import numpy as np

from experiments import sharding


log = logging.getLogger("experiments")


class PreflightError(RuntimeError):
  pass


def join_processes(coordinator_address=None, num_processes=None, process_id=None, *,
                   timeout_s: int = 300):
  """jax.distributed for multi-host runs (a no-op for one process), failing after
  `timeout_s` with the addresses involved instead of waiting forever for a missing worker.

  On CPU the collectives go through gloo so that simulated pods (several local processes)
  work; on TPU / GPU pods with no arguments JAX discovers the cluster itself."""
  if num_processes is None or num_processes <= 1:
    if coordinator_address is None and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
      return
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "(auto-detected)")
  message = (f"preflight: process {process_id} of {num_processes}: not every process joined "
             f"the coordinator at {where} within {timeout_s:.0f} s. Start the same command on "
             f"every worker, with distinct --process_id 0..{(num_processes or 0) - 1} and a "
             f"coordinator host:port that all of them can reach. Exiting.")
  # XLA's own deadline aborts the process from C++ with an RPC error; ours fires first.
  with _watchdog(timeout_s, message):
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=int(timeout_s) + 30)
  if num_processes and jax.process_count() != num_processes:
    raise PreflightError(f"{jax.process_count()} processes joined, expected {num_processes}")


@contextlib.contextmanager
def _watchdog(timeout_s: float, message: str, exit_code: int = 3):
  """Ends the process with `message` if the block has not finished after timeout_s: a
  collective or RPC that never completes cannot be interrupted from Python."""
  done = threading.Event()

  def watch():
    if not done.wait(timeout_s):
      print(message, file=sys.stderr, flush=True)
      os._exit(exit_code)

  threading.Thread(target=watch, daemon=True).start()
  try:
    yield
  finally:
    done.set()


def barrier(name: str, timeout_s: float):
  """All processes meet here, or this one exits with a message after timeout_s."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  with _watchdog(timeout_s, f"preflight: process {jax.process_index()} of "
                 f"{jax.process_count()} waited {timeout_s:.0f} s at barrier {name!r}: another "
                 f"process is stuck or gone (crashed at start-up, or started with a different "
                 f"command). Exiting."):
    multihost_utils.sync_global_devices(name)


def check_workdir(workdir: str):
  """The workdir exists (or can be made) and takes a file: checkpoints must not fail at the
  first save. Remote paths (gs://...) are left to orbax."""
  if "://" in workdir:
    return
  probe = os.path.join(workdir, f".preflight-{jax.process_index()}-{uuid.uuid4().hex[:8]}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PreflightError(f"workdir {workdir!r} is not writable from process "
                         f"{jax.process_index()} ({e.strerror}); checkpoints and metrics go "
                         f"there. Use a directory every host can write (shared storage for "
                         f"multi-host runs).") from None


def check_fresh_start(workdir: str, start_over: bool):
  """Called when the workdir has no checkpoint to resume from. An earlier run's metrics
  there mean its checkpoints were deleted (or never written before it died): starting
  afresh would silently mix two runs in one metrics.jsonl, so it takes train.start_over,
  which moves the old metrics aside (metrics.jsonl.1, .2, ...) first."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not (os.path.isfile(path) and os.path.getsize(path) > 0):
    return
  if not start_over:
    raise PreflightError(
        f"workdir {workdir} holds an earlier run's metrics.jsonl but no checkpoint to resume "
        f"from (deleted, or the run died before its first one). Refusing to start over in "
        f"it silently: pass --config.train.start_over=true to start a fresh run there (the "
        f"old metrics are kept as metrics.jsonl.N), or use a new --workdir.")
  if jax.process_index() == 0:
    n = 1
    while os.path.exists(f"{path}.{n}"):
      n += 1
    os.replace(path, f"{path}.{n}")
    log.warning("train.start_over: starting afresh; the earlier metrics are now %s.%d",
                path, n)


def check_devices(config, devices=None) -> tuple[tuple[int, int, int], list[str]]:
  """The mesh fits the devices, every process holds as many devices as the others, and the
  global batch (and its micro-batches) divide the mesh's batch shards. Returns the mesh
  shape and warnings (a mesh that leaves devices idle)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = sharding.mesh_shape(config.mesh, len(devices))
  per_process = {}
  for d in devices:
    per_process[d.process_index] = per_process.get(d.process_index, 0) + 1
  if len(set(per_process.values())) > 1:
    raise PreflightError(f"processes hold different numbers of devices: {per_process}; "
                         f"check each host's accelerator visibility (CUDA_VISIBLE_DEVICES, "
                         f"TPU_VISIBLE_CHIPS)")
  used, warnings = int(np.prod(shape)), []
  if used < len(devices):
    warnings.append(
        f"mesh {dict(zip(sharding.MESH_AXES, shape))} uses {used} of the {len(devices)} "
        f"devices; the rest sit idle (set one mesh axis to -1 to use them all)")
  try:
    sharding.check_batch_split(int(config.data.global_batch_size), shape[0], shape[1],
                               int(config.train.get("grad_accum_steps", 1)))
  except ValueError as e:
    raise PreflightError(str(e)) from None
  return shape, warnings


def run(config, workdir: str, *, timeout_s: float = 300, devices=None) -> list[str]:
  """All checks; returns the lines worth printing at start-up."""
  t0 = time.perf_counter()
  check_workdir(workdir)
  shape, warnings = check_devices(config, devices)
  barrier("preflight", timeout_s)
  devs = list(jax.devices() if devices is None else devices)
  return [f"WARNING {w}" for w in warnings] + [f"preflight ok in {time.perf_counter() - t0:.1f} s: {jax.process_count()} process(es), "
          f"{len(devs)} x {devs[0].device_kind}, mesh {dict(zip(sharding.MESH_AXES, shape))}, "
          f"{int(config.data.global_batch_size) // (shape[0] * shape[1])} rows per batch "
          f"shard, workdir {workdir} writable"]
