"""What a person watching a run sees: a progress bar, readable log lines, JSONL metrics,
TensorBoard events, MFU against a measured or given peak, and plots of the metrics."""
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.save_errors import write_failure

log = logging.getLogger("experiments")


class MetricWriter:
  """Appends {'step': s, **scalars} lines to workdir/metrics.jsonl and TensorBoard events
  to workdir/tb (process 0 only, so a pod writes one copy)."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # TensorBoard is optional; JSONL is the record.
        log.warning("tensorboardX not installed: writing metrics.jsonl only")

  def write(self, step: int, scalars: dict, prefix: str = ""):
    if not self.enabled:
      return
    row = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps({"step": int(step), **row}) + "\n")
    except OSError as e:  # A full disk: one clear error, not a traceback per write.
      raise write_failure(self.path, e, "metrics") from None
    if self._tb is not None:
      for k, v in row.items():
        self._tb.add_scalar(k, v, int(step))

  def close(self, quiet: bool = False):
    """quiet: the run is already failing (a full disk, say); TensorBoard events that cannot
    be flushed are dropped without a second error (metrics.jsonl is the record)."""
    if self._tb is None:
      return
    try:
      self._tb.close()
    except OSError:
      if not quiet:
        raise
      for w in self._tb.all_writers.values():
        _abandon(w.event_writer)


def _abandon(event_writer):
  """Stops a tensorboardX event writer whose file cannot be flushed. Its close() raised
  before marking it closed, so its atexit hook and worker thread would each retry the flush
  and print a traceback at exit; these are its own fields, set as its close() would."""
  try:
    if event_writer._worker is not None:
      event_writer._worker.stop()
  except Exception:  # pylint: disable=broad-except
    pass
  event_writer._closed = True


def drop_metrics_after(workdir: str, step: int) -> int:
  """Keeps the rows of steps <= `step` (and drops a torn last line): a run resumed from a
  checkpoint at `step` redoes the later steps and writes them again, and a reader must get
  one row per step. Atomic (written aside, then renamed). Returns the rows dropped."""
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() != 0 or not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        keep = int(json.loads(line)["step"]) <= step
      except (ValueError, KeyError, TypeError):
        keep = False  # a line cut short by a kill
      if keep:
        kept.append(line if line.endswith("\n") else line + "\n")
      elif line.strip():
        dropped += 1
  if dropped:
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
  return dropped


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar with steps/s, tokens/s and ETA (process 0, when stderr is wanted)."""

  def __init__(self, total: int, initial: int, tokens_per_step: int, enabled: bool = True):
    self.tokens_per_step = tokens_per_step
    self._bar = None
    if enabled and jax.process_index() == 0:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                       mininterval=1.0)

  def update(self, n: int, steps_per_sec: float, **postfix):
    if self._bar is None:
      return
    self._bar.update(n)
    self._bar.set_postfix(tok_s=f"{steps_per_sec * self.tokens_per_step:,.0f}",
                          **{k: (f"{v:.4g}" if isinstance(v, float) else v)
                             for k, v in postfix.items()}, refresh=False)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def measure_peak_flops(dtype=jnp.float32, size: int = 2048, repeats: int = 5,
                       device=None) -> float:
  """Achievable matmul FLOP/s of one device: the best of `repeats` timed [size]^2 matmuls.

  A measured peak, not a datasheet number: on CPUs there is no reliable datasheet, and on
  accelerators it tells what the hardware delivers to XLA today."""
  device = device or jax.local_devices()[0]
  a = jax.device_put(jnp.ones((size, size), dtype), device)
  b = jax.device_put(jnp.ones((size, size), dtype), device)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * size ** 3 / best


def mfu(flops_per_step: float, step_seconds: float, peak_flops_per_device: float,
        num_devices: int) -> float:
  """Model FLOPs utilisation: model FLOPs per second over the peak of all devices."""
  return flops_per_step / step_seconds / (peak_flops_per_device * num_devices)


def plot_metrics(workdir: str, keys=("loss", "eval_loss"), baseline: float | None = None,
                 filename: str = "metrics.png") -> str | None:
  """Plots the given metric keys against step into workdir/filename; returns its path."""
  rows = read_metrics(workdir)
  if not rows or jax.process_index() != 0:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for key in keys:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    if pts:
      s, v = np.array(pts).T
      ax.plot(s, v, label=key, marker="o" if len(pts) < 20 else None)
  if baseline is not None:
    ax.axhline(baseline, color="gray", linestyle="--", label="unigram baseline")
  ax.set_xlabel("step")
  ax.set_ylabel("nats / token")
  ax.legend()
  ax.grid(alpha=0.3)
  path = os.path.join(workdir, filename)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
