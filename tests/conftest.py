"""Test-session settings.

The suite is compile-bound (thousands of small jitted programs, each run a few times), so
XLA's CPU backend is told to spend less effort compiling: no optimisation passes, and the
older elemental emitter for fusions instead of the MLIR fusion emitters. A tiny program
compiles in ~17 ms instead of ~47 ms, the 8-device trainer test's process needs 13 s of CPU
instead of 53 s, and results still agree to float32 round-off (checked on its losses). Set
before any test imports jax; a test that starts a subprocess with its own XLA_FLAGS adds
FAST_COMPILE_FLAGS to them."""
import os

# Tests run on the CPU. With the '.[tpu]' extra installed, jax would otherwise try libtpu in
# every worker (and the workers would contend for its lockfile); the AOT-compile tests load
# libtpu only to describe TPU topologies.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

_FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                 "--xla_cpu_use_fusion_emitters=false")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

# No persistent compilation cache: measured over test_trainer + test_reliability (subprocess
# runs of one config) it saved 6% of their CPU, over test_reviews_report + test_readme it cost
# 6%; a cache that lived across runs would also hide the suite's cold-start time.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")

FAST_COMPILE_FLAGS = _FAST_COMPILE
# For the few execution-bound loops (hundreds of training steps of one program): per-program
# compiler options that turn XLA's optimisations back on, e.g. jax.jit(f,
# compiler_options=OPTIMIZED). The 400-step CAT of experiments/reports/cat_exactness.py runs ~2x faster.
OPTIMIZED = {"xla_backend_optimization_level": 3, "xla_llvm_disable_expensive_passes": False,
             "xla_cpu_use_fusion_emitters": True}

# The slowest modules, measured with --durations=0 on 2 cores (CI runs `-n 3 --dist loadfile`,
# a module per work unit, handed out in collection order with --no-loadscope-reorder). The
# longest go first, so the last units to finish are short ones and no worker runs alone
# for the final minute. Only the order changes; a module missing here just runs later.
SLOWEST_FIRST = ("test_reviews_report", "test_trainer", "test_reliability", "test_cat",
                 "test_transformer", "test_pretrained", "test_readme", "test_compile",
                 "test_keytodoor", "test_notebooks", "test_fit", "test_steer_sweep",
                 "test_seqmatch_trainer", "test_benchmarks", "test_cat_td", "test_search",
                 "test_results", "test_text_seqmatch", "test_fuzz", "test_fit_cli")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: rest keep order
