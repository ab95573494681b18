"""LoRA adapters (catrans.lora) and their wiring in the trainer (model.lora_rank): a fine-tune
starts exactly at the pretrained model, only the adapters train and hold optimizer state, and
the merged kernel is the adapter's low-rank update of the frozen one."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import ModelConfig, lora
from catrans.pretrained import layout
from catrans.transformer import Transformer
from experiments.configs import arithmetic_seqmatch, bits_cat
from experiments.data import pipeline
from experiments.trainer import Trainer
from tests.test_pretrained import _linear_weights, _random_trunk, _write_gguf

FILE_CFG = ModelConfig(vocab_size=259, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       mlp_dim=48, max_len=64)


@pytest.fixture(scope="module")
def lora_trainer(tmp_path_factory):
  path = tmp_path_factory.mktemp("pre") / "tiny.gguf"
  _write_gguf(path, _linear_weights(FILE_CFG, _random_trunk(FILE_CFG)), cfg=FILE_CFG)
  c = arithmetic_seqmatch.get_config("bc,tiny")   # no rollouts: the cheapest compile
  c.init_from = str(path)
  # The scanned layout, as the SmolLM2 configs use it: adapters with a leading layer axis.
  c.model.update(dict(max_len=64, lora_rank=4, lora_alpha=8.0, lora_targets=r"attn/(q|o)$",
                      scan_layers=True))
  t = Trainer(c, str(tmp_path_factory.mktemp("run")), progress=False)
  return t, t.init_state()


def _base(params):
  return {k: v for k, v in params.items() if k != "lora"}


def test_step_zero_is_the_pretrained_model_exactly(lora_trainer):
  t, state = lora_trainer
  obj, params = t.objective, state.params
  assert set(params["lora"]["layers"]["attn"]) == {"q", "o"}
  assert params["lora"]["layers"]["attn"]["q"]["a"].shape == (2, 32, 4)   # [layers, d, r]
  assert params["lora"]["layers"]["attn"]["o"]["b"].shape == (2, 4, 32)   # [layers, r, d]
  assert lora.num_params(params) == 2 * 2 * 4 * (32 + 32)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 259)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((12, 12), bool)), (2, 12, 12))
  with_adapters, _ = obj.apply_fn(params, tokens, pos, mask)
  plain = obj.model.apply({"params": _base(params)}, tokens, pos, mask).logits
  np.testing.assert_array_equal(np.asarray(with_adapters), np.asarray(plain))
  # ... and the base is the file's trunk (the adapters did not disturb the placement).
  np.testing.assert_array_equal(np.asarray(params["layers"]["mlp"]["down"]),
                                np.asarray(t.objective._pretrained["layers"]["mlp"]["down"]))


def test_only_the_adapters_train_and_hold_optimizer_state(lora_trainer):
  t, state = lora_trainer
  before = jax.device_get(state.params)
  batch = {k: jnp.asarray(v) for k, v in t.objective.prepare_batch(_batch(t, 0), 5).items()}
  grads = jax.jit(jax.grad(lambda p: t.objective.loss(p, batch, jax.random.PRNGKey(0),
                                              jnp.asarray(5))[0]))(state.params)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(_base(grads)))
  assert np.all(np.any(np.asarray(grads["lora"]["layers"]["attn"]["q"]["b"]), axis=(1, 2)))
  n_adapter = lora.num_params(before)
  opt_floats = sum(x.size for x in jax.tree.leaves(state.opt_state)
                   if jnp.issubdtype(x.dtype, jnp.floating))
  assert opt_floats == 2 * n_adapter           # Adam's two moments, for the adapters only
  for step in range(2):   # B moves at step 1, A (its gradient is 0 while B = 0) at step 2
    state, m = t.train_step(state, _batch(t, step), step)
    assert float(m["finite"]) == 1.0
  after = jax.device_get(state.params)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(_base(before)),
                          jax.tree.leaves(_base(after))):
    np.testing.assert_array_equal(a, b, err_msg=str(path))
  for leaf in ("a", "b"):   # every layer's own adapter moved
    old, new = (x["lora"]["layers"]["attn"]["o"][leaf] for x in (before, after))
    assert np.all(np.any(new != old, axis=(1, 2)))


def _batch(t, step):
  it = pipeline.make_train_iterator(t.task, "train", global_batch_size=t.batch_size,
                                    seq_len=t.seq_len, seed=step)
  return next(it)


def test_merged_kernel_equals_base_plus_low_rank_path():
  cfg = ModelConfig(vocab_size=40, d_model=16, num_layers=1, num_heads=4, num_kv_heads=2,
                    mlp_dim=24, max_len=16)
  params = Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                        is_leaf=lambda x: hasattr(x, "unbox"))
  p = lora.add(params, jax.random.PRNGKey(1), rank=3)
  # Non-zero B, so the update is not trivially zero.
  p["lora"] = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x.shape),
                           p["lora"])
  merged = lora.merge(p, alpha=6.0)
  assert "lora" not in merged
  adapted = lora.target_paths(params)
  assert len(adapted) == 7                       # q, k, v, o, gate, up, down
  for path in adapted:
    w, ad = params, p["lora"]
    for k in path:
      w, ad = w[k], ad[k]
    fan_in = lora.trunk_fan_in("/".join(path), w.shape)
    x = jax.random.normal(jax.random.PRNGKey(4), (5,) + w.shape[:fan_in])
    x_flat = x.reshape(5, -1)
    got = (x_flat @ _get(merged, path).reshape(x_flat.shape[1], -1))
    want = x_flat @ w.reshape(x_flat.shape[1], -1) + (x_flat @ ad["a"]) @ ad["b"] * (6.0 / 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                               err_msg=str(path))


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def test_scanned_adapters_are_the_unrolled_ones_stacked():
  cfg = ModelConfig(vocab_size=40, d_model=16, num_layers=3, num_heads=4, num_kv_heads=2,
                    mlp_dim=24, max_len=16, scan_layers=True)
  shapes = nn.meta.unbox(jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0),
                                        jnp.zeros((1, 4), jnp.int32))["params"])
  rs = np.random.default_rng(0)
  scanned = jax.tree.map(lambda s: rs.normal(size=s.shape).astype(np.float32), shapes)
  p = lora.add(scanned, jax.random.PRNGKey(1), rank=2)
  assert len(jax.tree.leaves(p["lora"])) == 2 * 7
  assert p["lora"]["layers"]["attn"]["o"]["a"].shape == (3, 16, 2)   # [layers, heads*hd, r]
  assert p["lora"]["layers"]["mlp"]["down"]["b"].shape == (3, 2, 16)
  # B = 0: the merged tree is the base exactly, so step 0 is the pretrained model.
  for path, w in jax.tree_util.tree_leaves_with_path(lora.merge(p, alpha=4.0)):
    np.testing.assert_array_equal(w, _get(scanned, [k.key for k in path]), err_msg=str(path))
  # With B != 0, layer i of the stacked adapters is an independent adapter of layer i: the
  # scanned merge equals the unrolled merge of the same per-layer adapters.
  p["lora"] = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(2), x.shape),
                           p["lora"])
  unrolled = dict(layout.to_unrolled(scanned),
                  lora=layout.to_unrolled(jax.device_get(p["lora"])))
  merged_scanned = layout.to_unrolled(jax.device_get(lora.merge(p, alpha=4.0)))
  merged_unrolled = lora.merge(unrolled, alpha=4.0)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(merged_unrolled),
                          jax.tree.leaves(merged_scanned)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=str(path))
  assert not np.allclose(merged_scanned["layer_2"]["attn"]["o"], unrolled["layer_2"]["attn"]["o"])
  bad = dict(p, lora={"layers": {"attn": {"q": {"a": p["lora"]["layers"]["attn"]["q"]["a"][:2],
                                                "b": p["lora"]["layers"]["attn"]["q"]["b"][:2]}}}})
  with pytest.raises(ValueError, match="leading layer axes"):
    lora.merge(bad, alpha=4.0)


def test_bad_arguments_are_refused(tmp_path):
  params = {"layer_0": {"attn": {"q": jnp.ones((4, 2, 2))}}}
  with pytest.raises(ValueError, match="rank"):
    lora.init(params, jax.random.PRNGKey(0), rank=0)
  with pytest.raises(ValueError, match="match no kernel"):
    lora.init(params, jax.random.PRNGKey(0), rank=2, targets="mlp/gate$")
  with pytest.raises(ValueError, match="regular expression"):
    lora.init(params, jax.random.PRNGKey(0), rank=2, targets="(")
  with pytest.raises(ValueError, match="alpha"):
    lora.merge(lora.add(params, jax.random.PRNGKey(0), rank=2), alpha=-1.0)
  c = bits_cat.get_config("tiny")   # CAT's loss does not apply the adapters: refused, not ignored
  c.model.lora_rank = 2
  with pytest.raises(ValueError, match="does not apply LoRA"):
    Trainer(c, str(tmp_path), progress=False)
