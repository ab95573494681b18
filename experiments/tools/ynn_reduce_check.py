"""Does this jaxlib's XLA:CPU miscompile a reduce fused between two broadcasts (YNN fusion)?

  python -m experiments.tools.ynn_reduce_check            # exit 1: the miscompile is here
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce python -m experiments.tools.ynn_reduce_check

jaxlib 0.10.2 on CPU offloads reduce fusions to YNNPACK ('__ynn_fusion' in the compiled HLO).
One that reduces an operand broadcast along a new LEADING axis and feeds the result to more
elementwise work, here out[o] = x * sum(x * c[o], -1), returns garbage for every o > 0 (o = 0
is right) once the reduce reads >= ~38K elements (2 x 300 x 64 fails, 2 x 256 x 64 is exact).
Eager execution (one primitive per program) and the same function with the axis in the
middle are exact. vmap makes exactly this pattern: jax.jacrev vmaps the VJP over the output
basis with the primal residuals unbatched, so in RMSNorm's backward pass x * sum(x * g_o)
broadcasts x over the leading output axis. That is why jax.jit(jax.jacrev(loss parts)) of
experiments/reports/dyck_diagnose.py was wrong for every part but the first (relative error
0.5-40 on the dyck model, 1e-7 with the flag above), while per-part jit(grad) and eager
jacrev agreed. jit(jacfwd) is not hit (its tangent axis never meets this fusion there).
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce (keep YNN off reductions) makes
every case exact; --xla_disable_hlo_passes=dot-library-rewriter does too. For one program:
jax.jit(f, compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}) (no YNN fusion at
all; '-reduce' is refused there), what dyck_diagnose.part_gradients does. Nearest upstream
reports: jax-ml/jax#39103 (0.10.2 CPU jit wrong for a vmapped product then a reduction),
#39257 and #40412 (YNN broadcast-multiply-reduce fusions crash in 0.10.2)."""
import sys

import jax
import jax.numpy as jnp
import numpy as np


def bcast_reduce_bcast(c_OxNxD, x_NxD):
  """x * sum(x * c[o], -1) for every o: x broadcast along the leading axis, then reduced."""
  return x_NxD[None] * jnp.sum(x_NxD[None] * c_OxNxD, axis=-1, keepdims=True)


def row_errors(n=2240, d=64, outputs=2, seed=0):
  """Max relative error of jit(bcast_reduce_bcast) per leading row vs a float64 numpy."""
  rng = np.random.default_rng(seed)
  c = rng.normal(size=(outputs, n, d)).astype(np.float32)
  x = rng.normal(size=(n, d)).astype(np.float32)
  want = x[None].astype(np.float64) * (x[None].astype(np.float64) * c).sum(-1, keepdims=True)
  got = np.asarray(jax.jit(bcast_reduce_bcast)(c, x))
  return [float(np.abs(got[o] - want[o]).max() / np.abs(want[o]).max()) for o in range(outputs)]


def main():
  import jaxlib
  print(f"jax {jax.__version__} jaxlib {jaxlib.__version__} backend {jax.default_backend()}")
  bad = False
  for n in (256, 300, 2240):
    errs = row_errors(n=n)
    bad |= max(errs) > 1e-4
    print(f"[2, {n}, 64]: relative error per leading row " + " ".join(f"{e:.1e}" for e in errs))
  print("MISCOMPILED: set XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce" if bad
        else "exact")
  return int(bad)


if __name__ == "__main__":
  sys.exit(main())
