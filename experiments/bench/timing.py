"""The one timing method of every benchmark in experiments/bench (issue 29).

Contenders are thunks returning arrays. After warm-up (compilation, first touch) they run
round by round, one call each per round, in an order rotated every round, and every output
is block_until_ready'd inside the timed span: load from other processes, thermal drift and
turbo budget then hit all contenders alike, and a ratio of two medians from one `compare`
is what a README may quote. An optional matmul contender runs in the same rounds, so the
peak an MFU is measured against comes from the same minutes as the steps it divides."""
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

PEAK = "matmul peak"


def _matmul(size: int, dtype):
  a = jnp.ones((size, size), dtype)
  b = jnp.full((size, size), 0.5, dtype)
  f = jax.jit(lambda x, y: x @ y)
  return lambda: f(a, b)


def compare(contenders: dict, rounds: int = 5, warmup: int = 1, peak_size: int = 0,
            peak_dtype=jnp.float32) -> dict:
  """{name: {'median', 'min', 'max', 'all'}} seconds per call of each thunk.

  peak_size > 0 adds the contender PEAK: one [peak_size]^2 matmul per round (twice in warm-
  up), whose entry also holds 'flops' = 2 n^3 / its fastest call (the best of `rounds`
  matmuls interleaved with the contenders; a single matmul swung 2x between runs)."""
  thunks = dict(contenders)
  if peak_size:
    thunks[PEAK] = _matmul(peak_size, peak_dtype)
  for _ in range(warmup):
    for f in thunks.values():
      jax.block_until_ready(f())
  names = list(thunks)
  times = {n: [] for n in names}
  for r in range(rounds):
    # Rotating the order keeps any cost of going first (or after a big contender) from
    # landing on one contender every round.
    for n in names[r % len(names):] + names[:r % len(names)]:
      t0 = time.perf_counter()
      jax.block_until_ready(thunks[n]())
      times[n].append(time.perf_counter() - t0)
  out = {n: dict(median=float(np.median(t)), min=float(min(t)), max=float(max(t)), all=t)
         for n, t in times.items()}
  if peak_size:
    out[PEAK]["flops"] = 2.0 * peak_size ** 3 / out[PEAK]["min"]
  return out


def _check_calls(calls):
  if not isinstance(calls, int) or calls < 1:
    raise ValueError(f"calls={calls!r}: need an integer >= 1")


def repeated(thunk, calls: int):
  """A thunk making `calls` calls of `thunk`, each waited for, returning the last output. For
  calls of tens of ms, where one call per round reads the timer's and the threads' wake-up
  noise (bench_cat: 19-31 ms for a 16 ms pass); read its entry back with per_call."""
  _check_calls(calls)

  def go():
    for _ in range(calls):
      out = jax.block_until_ready(thunk())
    return out
  return go


def per_call(t: dict, calls: int) -> dict:
  """A compare() entry whose thunk made `calls` calls, as seconds per call."""
  _check_calls(calls)
  return dict(t, median=t["median"] / calls, min=t["min"] / calls, max=t["max"] / calls,
              all=[x / calls for x in t["all"]])


def spread(t: dict, scale: float = 1.0, fmt: str = ".4f") -> str:
  """'median (min-max)' of one compare entry, each value times `scale`."""
  return (f"{t['median'] * scale:{fmt}} ({t['min'] * scale:{fmt}}-"
          f"{t['max'] * scale:{fmt}})")


def machine() -> str:
  """CPU model, core count and the JAX devices: the line every benchmark prints first."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  dev = jax.devices()
  return (f"machine: {cpu}; {usable} usable cores of {os.cpu_count()}; jax {jax.__version__}, "
          f"{len(dev)} x {dev[0].device_kind} ({dev[0].platform})")
