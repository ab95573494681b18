"""Which XLA compilations happen when, so that a steady-state run can prove it compiles nothing.

A recompile in the middle of a pod run (a batch with a new shape, a Python scalar where an
array was, a changed dtype) silently costs minutes per occurrence. The trainer wraps each
phase (a train step for a given batch shape, an eval pass, a checkpoint, a log) in
`CompileWatch.phase(key)`: the first time a key is seen its compilations are warm-up; any
compilation in a phase whose key was seen before is a recompile, logged with the names of
the functions compiled."""
import contextlib
import logging
import threading

from jax import monitoring

log = logging.getLogger("experiments")

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileWatch:

  def __init__(self):
    self.events: list[tuple[str, float]] = []   # (function name, seconds), in order
    self.recompiles: list[tuple[object, list[str]]] = []
    self._seen: set = set()
    self._lock = threading.Lock()
    monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **kwargs):
    if event == BACKEND_COMPILE_EVENT:
      with self._lock:
        self.events.append((str(kwargs.get("fun_name", "?")), float(duration)))

  @contextlib.contextmanager
  def phase(self, key, where: str = ""):
    start = len(self.events)
    try:
      yield
    finally:
      new = [name for name, _ in self.events[start:]]
      if new and key in self._seen:
        self.recompiles.append((key, new))
        log.warning("recompiled %d function(s) %s: %s (a phase that compiled before: a new "
                    "batch shape or dtype, or a Python value where an array was?)", len(new),
                    where, ", ".join(sorted(set(new))))
      self._seen.add(key)

  @property
  def warmup_compiles(self) -> int:
    return len(self.events) - sum(len(n) for _, n in self.recompiles)

  def close(self):
    monitoring.unregister_event_duration_listener(self._on_event)
