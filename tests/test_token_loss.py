"""catrans.token_loss: the cross-entropy from hidden states equals the dense one (values,
argmax, gradients) and rejects malformed arguments."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from catrans.config import ModelConfig
from catrans.token_loss import token_nll
from catrans.transformer import Transformer


def _dense(hidden, table, targets):
  z = jnp.einsum("bld,vd->blv", hidden, table)
  return optax.softmax_cross_entropy_with_integer_labels(z, targets), z.argmax(-1) == targets


def _data(b=2, l=5, d=8, v=11, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  hidden = jax.random.normal(k1, (b, l, d))
  table = jax.random.normal(k2, (v, d))
  targets = jax.random.randint(k3, (b, l), 0, v)
  return hidden, table, targets


def test_values_argmax_and_gradients_equal_dense_f32():
  hidden, table, targets = _data()
  w = jnp.linspace(0.0, 1.0, targets.size).reshape(targets.shape)   # uneven weights
  nll, correct = token_nll(hidden, table, targets)
  ref, ref_correct = _dense(hidden, table, targets)
  np.testing.assert_allclose(nll, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(correct, ref_correct)
  loss = lambda f: lambda h, t: (f(h, t, targets)[0] * w).sum()
  g = jax.grad(loss(token_nll), argnums=(0, 1))(hidden, table)
  g_ref = jax.grad(loss(_dense), argnums=(0, 1))(hidden, table)
  for a, r in zip(g, g_ref):
    np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def test_bf16_matches_dense_route_rounded_to_bf16():
  # On a pod the dense route's logits come out of a bf16 matmul, then go to f32: same here.
  hidden, table, targets = _data(seed=1)
  h16, t16 = hidden.astype(jnp.bfloat16), table.astype(jnp.bfloat16)
  nll, _ = token_nll(h16, t16, targets)
  z = jnp.einsum("bld,vd->blv", h16, t16).astype(jnp.float32)
  ref = optax.softmax_cross_entropy_with_integer_labels(z, targets)
  assert nll.dtype == jnp.float32
  np.testing.assert_allclose(nll, ref, rtol=1e-6, atol=1e-6)
  g = jax.grad(lambda h: token_nll(h, t16, targets)[0].sum())(h16)
  assert g.dtype == jnp.bfloat16


@pytest.mark.parametrize("tie", [True, False])
def test_transformer_token_nll_equals_logits_route(tie):
  cfg = ModelConfig(vocab_size=37, d_model=16, num_layers=1, num_heads=2, num_kv_heads=1,
                    mlp_dim=32, max_len=8, tie_embeddings=tie)   # padded to 128 rows
  model = Transformer(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 6), 0, 37)
  targets = jnp.roll(tokens, -1, axis=1)
  params = model.init(jax.random.PRNGKey(3), tokens)["params"]

  def fused(p):
    out = model.apply({"params": p}, tokens, return_logits=False)
    return model.apply({"params": p}, out.hidden, targets, method=Transformer.token_nll)[0]

  def dense(p):
    logits = model.apply({"params": p}, tokens).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)

  np.testing.assert_allclose(fused(params), dense(params), rtol=1e-5, atol=1e-5)
  g = jax.grad(lambda p: fused(p).mean())(params)
  g_ref = jax.grad(lambda p: dense(p).mean())(params)
  jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6), g, g_ref)


def test_rejects_malformed_arguments():
  hidden, table, targets = _data()
  with pytest.raises(ValueError, match="table_VxD width"):
    token_nll(hidden, table[:, :3], targets)
  with pytest.raises(ValueError, match="targets_BxL shape"):
    token_nll(hidden, table, targets[:, :2])
  with pytest.raises(ValueError, match="integer ids"):
    token_nll(hidden, table, targets.astype(jnp.float32))
