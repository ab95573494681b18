"""CAT's bootstrapped attribute target (CATConfig.td_mix): the loss equals a reference built
from the full [B, L, V, K] table, its target carries no gradient, and a bad config fails."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.config import ModelConfig
from catrans.objective import cat_loss

V = 11
CFG = ModelConfig(vocab_size=V, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                  mlp_dim=64, max_len=32)
ATTRS = (AttributeSpec("sentiment", num_classes=3),
         AttributeSpec("flag", kind="binary", binary_style="sigmoid"))


def _setup(param, top_k, mix=0.6):
  model = CATModel(CFG, CATConfig(attributes=ATTRS, param=param, lam=0.7, td_mix=mix,
                                  td_top_k=top_k))
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32),
                                    all_tokens=True)["params"])
  params = jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                        params)
  toks = jax.random.randint(jax.random.PRNGKey(2), (3, 9), 0, V)
  w = jnp.ones((3, 8)).at[0, :2].set(0.0).at[1, 5:].set(0.0)   # a prompt and padding
  seg = jnp.ones((3, 8), jnp.int32).at[2, 4:].set(2)             # row 2: two packed sequences
  batch = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": w, "segment_ids": seg,
           "positions": jnp.concatenate([jnp.arange(4), jnp.arange(4)])[None].repeat(3, 0)
           .at[:2].set(jnp.arange(8)),
           "sentiment": jnp.array([2, -1, 0]), "flag": jnp.array([1, 0, 1])}
  return model, params, batch


def _class_probs(spec, out):
  if spec.kind == "binary":
    p = jax.nn.sigmoid(out[..., 0])
    return jnp.stack([1 - p, p], -1)
  return jax.nn.softmax(out, -1)


def _reference_attr_loss(model, params, batch, frozen_params, top_k, mix):
  """The attribute loss written from the full table: row t's target is (1 - mix) * label +
  mix * V(s_{t+1}), V from `frozen_params` over the numpy top-k of p(. | s_{t+1})."""
  w, seg = np.asarray(batch["weights"]), np.asarray(batch["segment_ids"])
  out = model.apply({"params": params}, batch["inputs"], batch["positions"],
                    segment_ids_BxL=batch["segment_ids"], all_tokens=True)
  frozen = model.apply({"params": frozen_params}, batch["inputs"], batch["positions"],
                       segment_ids_BxL=batch["segment_ids"], all_tokens=True)
  p_tok = np.asarray(jax.nn.softmax(frozen.logits, -1))
  total = 0.0
  for spec in ATTRS:
    y = np.asarray(batch[spec.name])
    probs_frozen = np.asarray(_class_probs(spec, frozen.attributes[spec.name]))
    n_cls = probs_frozen.shape[-1]
    # Targets and row mask built row by row in numpy (constants), then one vectorised sum.
    target, rows = np.zeros(w.shape + (n_cls,)), np.zeros(w.shape)
    for b in range(w.shape[0]):
      for t in range(w.shape[1]):
        if y[b] < 0 or w[b, t] == 0:
          continue
        rows[b, t] = 1.0
        target[b, t] = np.eye(n_cls)[y[b]]
        if t + 1 < w.shape[1] and w[b, t + 1] > 0 and seg[b, t + 1] == seg[b, t]:
          top = np.argsort(-p_tok[b, t + 1])[:top_k]
          p = p_tok[b, t + 1, top] / p_tok[b, t + 1, top].sum()
          value = (p[:, None] * probs_frozen[b, t + 1, top]).sum(0)
          target[b, t] = (1 - mix) * target[b, t] + mix * value
    probs = _class_probs(spec, out.attributes[spec.name])            # [B, L, V, C]
    at_next = jnp.take_along_axis(probs, batch["targets"][..., None, None], axis=2)[:, :, 0]
    nll = -(target * jnp.log(at_next)).sum(-1)
    total = total + spec.weight * (nll * rows).sum() / rows.sum()
  return total


@pytest.mark.parametrize("param,top_k", [("full", V), ("factorized", 3)])
def test_bootstrapped_loss_and_gradient_equal_the_reference(param, top_k):
  model, params, batch = _setup(param, top_k)
  loss, m = cat_loss(model, params, batch)
  ref = _reference_attr_loss(model, params, batch, params, top_k, 0.6)
  np.testing.assert_allclose(m["attr_loss"], ref, rtol=1e-5)
  # The reported attr/<name> is still the loss against the label alone.
  plain = dataclasses.replace(model.cat, td_mix=0.0)
  _, m0 = cat_loss(CATModel(CFG, plain), params, batch)
  for spec in ATTRS:
    np.testing.assert_allclose(m[f"attr/{spec.name}"], m0[f"attr/{spec.name}"], rtol=1e-6)
    assert abs(float(m[f"attr_td/{spec.name}"]) - float(m0[f"attr/{spec.name}"])) > 1e-4
  # The target is a constant: the gradient is that of the reference with frozen targets.
  g = jax.grad(lambda p: cat_loss(model, p, batch)[0])(params)

  def ref_loss(p):
    ce, _ = cat_loss(CATModel(CFG, plain), p, batch, lam=0.0)
    return ce + 0.7 * _reference_attr_loss(model, p, batch, params, top_k, 0.6)
  g_ref = jax.grad(ref_loss)(params)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_mix_one_reads_the_label_only_where_there_is_no_next_row():
  """With td_mix=1 every row that has a next row trains toward V(s_{t+1}) only: changing the
  labels changes nothing there; only the last rows read the label."""
  model, params, batch = _setup("full", V, mix=1.0)
  _, m = cat_loss(model, params, batch)
  flipped = dict(batch, flag=1 - batch["flag"])
  _, m2 = cat_loss(model, params, flipped)
  assert float(m["attr/flag"]) != pytest.approx(float(m2["attr/flag"]))
  # The td term differs only through the rows with no next row (one per sequence here).
  out = model.apply({"params": params}, batch["inputs"], batch["positions"],
                    segment_ids_BxL=batch["segment_ids"], next_tokens_BxL=batch["targets"])
  logit = np.asarray(out.attributes["flag"][..., 0])
  last = [(0, 7), (1, 4), (2, 3), (2, 7)]
  # BCE(y=1) - BCE(y=0) = -logit; the mean is over the 6 + 5 + 8 = 19 counted rows.
  diff = sum(-(2 * batch["flag"][b] - 1) * logit[b, t] for b, t in last) / 19.0
  np.testing.assert_allclose(m["attr_td/flag"] - m2["attr_td/flag"], diff, rtol=1e-4)


def test_bad_td_settings_fail():
  with pytest.raises(ValueError, match="td_mix"):
    CATConfig(attributes=ATTRS, td_mix=1.5)
  with pytest.raises(ValueError, match="numeric"):
    CATConfig(attributes=(AttributeSpec("r", kind="numeric"),), td_mix=0.5)
