"""SIGTERM / SIGINT during training: remembered, not acted on, so the loop can save a checkpoint
at the end of the step and exit cleanly (a pre-empted pod worker loses no work)."""
import signal


class SignalFlag:
  """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and exits at the step end."""

  def __init__(self):
    self.raised, self.signum, self._old = False, None, {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass

  def _handle(self, signum, frame):
    self.raised, self.signum = True, signum

  def restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)
