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
_TIMEOUT = flags.DEFINE_integer("preflight_timeout", 300, "seconds to wait for every process "
                                "to join before failing with a message")
flags.mark_flags_as_required(["config", "workdir"])


# Exit statuses: 3 a preflight or config failure (nothing was built or written), 4 stopped
# for non-finite values, 5 a checkpoint or metrics write failed (earlier checkpoints intact).
EXIT_PREFLIGHT, EXIT_NONFINITE, EXIT_SAVE = 3, 4, 5


class _FileHandler(logging.FileHandler):
  """train.log; on a full disk it says so once and stops, instead of a traceback per line
  (stdout still gets every line)."""

  def handleError(self, record):
    if not getattr(self, "_failed", False):
      self._failed = True
      print(f"(train.log: cannot write {self.baseFilename}; logging to stdout only)",
            file=sys.stderr, flush=True)


def _ours_or_no_traceback(record) -> bool:
  """Library records that carry a traceback (orbax logs each failed background save from
  four threads) describe failures the trainer reports itself, once, with what to do."""
  return record.name.startswith("experiments") or not record.exc_info


def _unraisable(hook):
  """tensorstore's callbacks into orbax's closed event loops after a failed write print
  'RuntimeError: Event loop is closed' once per pending chunk; the failure itself is
  reported once by the trainer."""
  def filtered(u):
    if not (isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value)):
      hook(u)
  return filtered


def main(argv):
  del argv
  sys.unraisablehook = _unraisable(sys.unraisablehook)
  from experiments import preflight
  from experiments.save_errors import SaveError
  from experiments.train_step import NonFiniteError
  try:
    _train()
  except preflight.PreflightError as e:  # Config and preflight failures: a message, no trace.
    _fail(f"preflight: {e}", EXIT_PREFLIGHT)
  except NonFiniteError as e:
    _fail(f"stopped: {e}", EXIT_NONFINITE)
  except SaveError as e:
    _fail(f"stopped: {e}", EXIT_SAVE)


def _fail(message: str, status: int):
  """One line on stderr (and in train.log when it is open), then the exit status."""
  record = logging.LogRecord("experiments", logging.ERROR, __file__, 0, message, None, None)
  for handler in logging.getLogger().handlers:
    if isinstance(handler, logging.FileHandler):
      handler.handle(record)
  print(message, file=sys.stderr, flush=True)
  sys.exit(status)


def _train():
  from experiments import config_checks
  config_checks.check(_CONFIG.value)  # Before joining processes or touching the workdir.
  import jax
  from experiments import preflight
  preflight.join_processes(_COORD.value, _NPROC.value, _PID.value, timeout_s=_TIMEOUT.value)
  workdir = os.path.abspath(_WORKDIR.value)
  checks = preflight.run(_CONFIG.value, workdir, timeout_s=_TIMEOUT.value)
  from experiments.trainer import Trainer
  handlers = [logging.StreamHandler(sys.stdout)]
  if jax.process_index() == 0:
    handlers.append(_FileHandler(os.path.join(workdir, "train.log")))
  logging.basicConfig(level=logging.WARNING, handlers=handlers, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  for handler in handlers:
    handler.addFilter(_ours_or_no_traceback)
  log = logging.getLogger("experiments")
  log.setLevel(logging.INFO)  # Ours at INFO; libraries (orbax, grain) at WARNING.
  for line in checks:
    (log.warning if line.startswith("WARNING") else log.info)(line)
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
