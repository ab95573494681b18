"""Test-session settings.

The suite is compile-bound (hundreds of small jitted programs, each run a few times), so
XLA's CPU backend is told to spend less effort optimising: about 25% less CPU time for the
suite, with results that still agree to float32 round-off. Set before any test imports jax;
subprocesses that set their own XLA_FLAGS keep theirs."""
import os

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
