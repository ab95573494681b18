"""train.nonfinite=skip on the host: counts consecutive skipped updates and stops the run
after train.max_consecutive_skips of them. A run whose every step is skipped has diverged
(or its state is broken); carrying on to `finished N steps` and exit 0 would hide it."""
import jax

from experiments.train_step import broken_update, nonfinite_terms


class SkipWatch:
  """Reads each step's `finite` flag one step late: by then the next step is queued, so the
  read does not leave the device idle (no host sync per step)."""

  def __init__(self, limit: int):
    self.limit = int(limit)
    self.pending = None
    self.run_length, self.first = 0, None

  def push(self, step: int, metrics) -> str | None:
    """Records step `step`'s metrics; a report when the limit was reached, else None."""
    previous, self.pending = self.pending, (step, metrics)
    return self._observe(*previous) if previous else None

  def flush(self) -> str | None:
    previous, self.pending = self.pending, None
    return self._observe(*previous) if previous else None

  def _observe(self, step: int, metrics) -> str | None:
    broken = broken_update(step, metrics)
    if broken:
      return broken
    if float(jax.device_get(metrics["finite"])) >= 1.0:
      self.run_length, self.first = 0, None
      return None
    self.run_length += 1
    self.first = self.first or step
    if self.run_length < self.limit:
      return None
    terms = nonfinite_terms({k: float(v) for k, v in jax.device_get(metrics).items()})
    return (f"{self.run_length} consecutive updates skipped for non-finite values (steps "
            f"{self.first}..{step}; at step {step} in: {terms}); the run has diverged or its "
            f"state is broken. Stopping (train.max_consecutive_skips={self.limit})")
