"""Test-session settings.

The suite is compile-bound (thousands of small jitted programs, each run a few times), so
XLA's CPU backend is told to spend less effort compiling: no optimisation passes, and the
older elemental emitter for fusions instead of the MLIR fusion emitters. A tiny program
compiles in ~17 ms instead of ~47 ms, the 8-device trainer test's process needs 13 s of CPU
instead of 53 s, and results still agree to float32 round-off (checked on its losses). Set
before any test imports jax; a test that starts a subprocess with its own XLA_FLAGS adds
FAST_COMPILE_FLAGS to them."""
import os
import shutil
import tempfile

# Tests run on the CPU. With the '.[tpu]' extra installed, jax would otherwise try libtpu in
# every worker (and the workers would contend for its lockfile); the AOT-compile tests load
# libtpu only to describe TPU topologies.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                 "--xla_cpu_use_fusion_emitters=false")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

# Many tests (and their subprocesses: CLI runs, simulated pods) compile the same tiny
# programs; JAX's persistent compilation cache shares them across the processes of ONE test
# run. The cache key is the program and the compile options, so a cached executable is the
# one XLA would build (results are unchanged). The directory is made afresh for each run by
# the controlling pytest process (xdist workers and subprocesses inherit it through the
# environment) and removed at its end, so a second run starts as cold as the first: the
# suite's time is always its cold-start time.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _RUN_CACHE = tempfile.mkdtemp(prefix="catrans-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE
else:
  _RUN_CACHE = None
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

FAST_COMPILE_FLAGS = _FAST_COMPILE
# For the few execution-bound loops (hundreds of training steps of one program): per-program
# compiler options that turn XLA's optimisations back on, e.g. jax.jit(f,
# compiler_options=OPTIMIZED). The 400-step CAT fixture of test_cat_exactness runs ~2x faster.
OPTIMIZED = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False,
             "xla_cpu_use_fusion_emitters": True}


def pytest_sessionfinish(session, exitstatus):
  if _RUN_CACHE is not None:
    shutil.rmtree(_RUN_CACHE, ignore_errors=True)
