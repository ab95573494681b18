"""Test-session settings.

The suite is compile-bound (hundreds of small jitted programs, each run a few times), so
XLA's CPU backend is told to spend less effort optimising: about 25% less CPU time for the
suite, with results that still agree to float32 round-off. Set before any test imports jax;
subprocesses that set their own XLA_FLAGS keep theirs."""
import os

# Tests run on the CPU. With the '.[tpu]' extra installed, jax would otherwise try libtpu in
# every worker (and the workers would contend for its lockfile); the AOT-compile tests load
# libtpu only to describe TPU topologies.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
