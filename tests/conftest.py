"""Test-session settings.

The suite is compile-bound (hundreds of small jitted programs, each run a few times), so
XLA's CPU backend is told to spend less effort optimising: about 25% less CPU time for the
suite, with results that still agree to float32 round-off. Set before any test imports jax;
subprocesses that set their own XLA_FLAGS keep theirs."""
import os
import tempfile

# Tests run on the CPU. With the '.[tpu]' extra installed, jax would otherwise try libtpu in
# every worker (and the workers would contend for its lockfile); the AOT-compile tests load
# libtpu only to describe TPU topologies.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

# Many tests (and their subprocesses: CLI runs, simulated pods) compile the same tiny
# programs; JAX's persistent compilation cache shares them across processes (on CPU too:
# a tiny training run compiles in ~5 s instead of ~17 s the second time). The cache key is
# the program and the compile options, so a cached executable is the one XLA would build.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"catrans-tests-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
