"""experiments.hlo_bytes: per-op HBM bytes of an optimized HLO module."""
import jax
import jax.numpy as jnp
import pytest

from experiments import hlo_bytes as hb


def test_matches_xla_count_and_multiplies_loop_bodies():
  def f(x, w):
    h = jnp.tanh(x @ w)
    return (h * 2).sum(0), jax.lax.fori_loop(0, 5, lambda i, c: jnp.sin(c) * 2, x)

  compiled = jax.jit(f).lower(jnp.ones((64, 32)), jnp.ones((32, 48))).compile()
  rows, ops = hb.breakdown(compiled.as_text())
  total = sum(r[1] for r in rows)
  in_loop = [(op, moved) for op, moved, times in ops if times == 5]
  # The loop body's elementwise fusion reads and writes one f32[64, 32].
  assert max(moved for _, moved in in_loop) == 2 * 64 * 32 * 4
  body = sum(moved for _, moved in in_loop)
  # XLA's own count takes a while body once; this module takes it once per trip.
  xla = compiled.cost_analysis()["bytes accessed"]
  assert total - 4 * body == pytest.approx(xla, rel=0.01)


_HLO = """HloModule m

%fused (p0: f32[256], p1: f32[1024]) -> (f32[256], f32[1024]) {
  %p0 = f32[256]{0} parameter(0)
  %p1 = f32[1024]{0} parameter(1)
  %n = f32[256]{0} negate(%p0)
  ROOT %t = (f32[256]{0}, f32[1024]{0}) tuple(%n, %p1)
}

ENTRY %main (a: f32[256], b: f32[1024]) -> (f32[256], f32[1024]) {
  %a = f32[256]{0} parameter(0)
  %b = f32[1024]{0} parameter(1)
  %f = (f32[256]{0}, f32[1024]{0}) fusion(%a, %b), kind=kLoop, output_to_operand_aliasing={{1}: (1, {})}, calls=%fused, metadata={op_name="jit(step)/jvp(Transformer)/layer_0/mlp/neg"}
  %c = (f32[1024]{0}, f32[1024]{0}, u32[]) copy-start(%b)
  %d = f32[1024]{0} copy-done(%c)
  %g = f32[256]{0} get-tuple-element(%f), index=0
  ROOT %r = (f32[256]{0}, f32[1024]{0}) tuple(%g, %d)
}
"""


def test_aliased_results_pass_through_and_groups_name_the_source():
  rows, ops = hb.breakdown(_HLO)
  by_group = {g: b for g, b, _ in rows}
  # The fusion reads a and writes its negation; the aliased f32[1024] passes through.
  assert by_group["fwd layer_0/mlp/neg"] == 2 * 256 * 4
  # copy-start counts its whole result tuple (operand echo, copy, flag) plus its operand,
  # as XLA's totals do; copy-done adds nothing.
  assert by_group["(unnamed) copy-start f32[1024]"] == 3 * 1024 * 4 + 4
  assert len(ops) == 2
