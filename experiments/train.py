"""python -m experiments.train --config=experiments/configs/NAME.py[:ARG] --workdir=DIR

Overrides: --config.train.steps=100 --config.mesh.fsdp=2 ... A workdir holding a run
resumes it. On several hosts pass --coordinator_address/--num_processes/--process_id (or
set them in the environment the way your launcher does) and run the same command on all."""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics, logs")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "number of processes (hosts)")
_PID = flags.DEFINE_integer("process_id", None, "this process's index")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """jax.distributed for multi-host runs; a no-op for one process.

  On CPU the collectives go through gloo so that simulated pods (several local processes)
  work; on TPU/GPU pods with no arguments JAX discovers the cluster itself."""
  import jax
  if num_processes is None or num_processes <= 1:
    if coordinator_address is None and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
      return
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                             process_id=process_id)


def main(argv):
  del argv
  import jax
  init_distributed(_COORD.value, _NPROC.value, _PID.value)
  from experiments.trainer import Trainer
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  handlers = [logging.StreamHandler(sys.stdout)]
  if jax.process_index() == 0:
    handlers.append(logging.FileHandler(os.path.join(workdir, "train.log")))
  logging.basicConfig(level=logging.WARNING, handlers=handlers, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log = logging.getLogger("experiments")
  log.setLevel(logging.INFO)  # Ours at INFO; libraries (orbax, grain) at WARNING.
  trainer = Trainer(_CONFIG.value, workdir)
  log.info("devices: %d x %s over %d process(es); mesh %s", jax.device_count(),
           jax.devices()[0].platform, jax.process_count(), dict(trainer.mesh.shape))
  log.info("model: %s parameters; objective %s; task %s", f"{trainer.num_params:,}",
           _CONFIG.value.objective.name, _CONFIG.value.task.name)
  summary = trainer.run()
  if jax.process_index() == 0:
    base = summary.unigram_baseline
    final = summary.final_metrics.get("loss")
    print(f"\nfinished {summary.steps} steps"
          + (" (interrupted; rerun the same command to resume)" if summary.interrupted else ""))
    if final is not None:
      print(f"  train loss      {final:.4f} nats/token")
    if "loss" in summary.eval_metrics:
      print(f"  eval loss       {summary.eval_metrics['loss']:.4f} nats/token")
    if base is not None:
      print(f"  unigram baseline {base:.4f} nats/token (a model that ignores context)")
    print(f"  metrics     {os.path.join(workdir, 'metrics.jsonl')}")
    print(f"  plot        {os.path.join(workdir, 'metrics.png')}")
    print(f"  tensorboard {os.path.join(workdir, 'tb')}")
    print(f"  checkpoints {os.path.join(workdir, 'checkpoints')}")
    print(f"  log         {os.path.join(workdir, 'train.log')}")


if __name__ == "__main__":
  app.run(main)
