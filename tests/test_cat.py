"""CAT heads, loss, steering and baselines: exact identities and hand-checkable rules."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import attributes as attr_lib
from catrans import baselines
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig, CATModel
from catrans.config import ModelConfig
from catrans.inference import estimate, observed_q
from catrans.objective import cat_loss
from catrans.steering import SteeringConfig, Target, choose_token, steered_decode
from catrans.transformer import Transformer

V = 13
CFG = ModelConfig(vocab_size=V, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                  mlp_dim=64, max_len=32)
ATTRS = (AttributeSpec("sentiment", num_classes=3), AttributeSpec("flag", kind="binary",
                                                                  binary_style="sigmoid"),
         AttributeSpec("rating", kind="numeric"))


@functools.lru_cache(maxsize=None)
def _model(param="full", branch="mlp"):
  model = CATModel(CFG, CATConfig(attributes=ATTRS, param=param, branch=branch))
  t = jnp.zeros((1, 4), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), t, all_tokens=True)["params"])
  # Non-zero biases so that the gather of the bias table is exercised too.
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(3), x.shape),
                        params)
  return model, params


def _batch(b=3, l=7, seed=0):
  k = jax.random.PRNGKey(seed)
  toks = jax.random.randint(k, (b, l + 1), 0, V)
  w = jnp.ones((b, l)).at[0, :2].set(0.0).at[1, 5:].set(0.0)   # a prompt and padding
  return {"inputs": toks[:, :-1], "targets": toks[:, 1:], "weights": w,
          "sentiment": jnp.array([2, -1, 0]), "flag": jnp.array([1, 0, -1]),
          "rating": jnp.array([4.5, jnp.nan, 1.0])}


@pytest.mark.parametrize("param,branch", [("full", "mlp"), ("factorized", "block"),
                                          ("factorized", "none")])
def test_at_token_gather_equals_all_token_table(param, branch):
  model, params = _model(param, branch)
  b = _batch()
  at = model.apply({"params": params}, b["inputs"], next_tokens_BxL=b["targets"]).attributes
  full = model.apply({"params": params}, b["inputs"], all_tokens=True).attributes
  for name, table in full.items():
    assert table.shape == (3, 7, V, ATTRS[[a.name for a in ATTRS].index(name)].num_outputs)
    gathered = jnp.take_along_axis(table, b["targets"][..., None, None], axis=2)[:, :, 0]
    np.testing.assert_allclose(at[name], gathered, atol=1e-5)


@pytest.mark.parametrize("param,branch", [("full", "mlp"), ("factorized", "block")])
def test_observed_q_equals_estimate_without_the_vocab_table(param, branch):
  """The low-memory path reads q_t at the observed tokens only and runs no token head; it
  must give estimate's q_t for every attribute kind and target."""
  model, params = _model(param, branch)
  toks = _batch()["inputs"]
  for name, target in (("sentiment", 0), ("sentiment", None), ("flag", None),
                       ("rating", None)):
    full = estimate(model, params, toks, attribute=name, target=target).q[:, 1:]
    np.testing.assert_allclose(observed_q(model, params, toks, attribute=name, target=target),
                               full, atol=1e-5)
  out = model.apply({"params": params}, toks, next_tokens_BxL=toks, return_logits=False)
  assert out.logits is None
  with pytest.raises(ValueError, match="at least 2 tokens"):
    observed_q(model, params, toks[:, :1], attribute="flag")


@pytest.mark.parametrize("spec", [AttributeSpec("c", num_classes=5),
                                  AttributeSpec("b", kind="binary"),
                                  AttributeSpec("s", kind="binary", binary_style="sigmoid"),
                                  AttributeSpec("c20", num_classes=20)])
def test_expected_value_is_the_softmax_entry_and_rejects_other_classes(spec):
  # expected_value reads softmax classes slice by slice (up to 16 classes); it must equal
  # probabilities[..., target], logits of +-1e4 included (no overflow), for every class.
  out = jax.random.normal(jax.random.PRNGKey(0), (3, 4, spec.num_outputs)) * 5
  out = out.at[0, 0].set(1e4).at[0, 1].set(-1e4).at[1, 0, 0].set(1e4)
  probs = np.asarray(attr_lib.probabilities(spec, out))
  c = probs.shape[-1]
  for target in range(c):
    np.testing.assert_allclose(np.asarray(attr_lib.expected_value(spec, out, target)),
                               probs[..., target], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(attr_lib.expected_value(spec, out)), probs[..., c - 1],
                             rtol=1e-6, atol=1e-7)
  for bad in (-1, c):
    with pytest.raises(ValueError, match=f"target = {bad} is outside the classes"):
      attr_lib.expected_value(spec, out, bad)


def test_factorized_head_has_fewer_parameters():
  count = lambda p: sum(x.size for x in jax.tree.leaves(p["head_sentiment"]))
  full, fact = count(_model("full")[1]), count(_model("factorized")[1])
  assert full == 128 * 3 * 32 + 128 * 3          # U [V_pad, K, D] + bias
  assert fact == 32 * 3 * 64 + 128 * 64 + 128 * 3  # P [D, K, F] + E [V_pad, F] + bias


def test_loss_masks_unknown_labels_padding_and_prompt():
  model, params = _model()
  b = _batch()
  loss, m = cat_loss(model, params, b)
  out = model.apply({"params": params}, b["inputs"], next_tokens_BxL=b["targets"])
  # Reference written out by hand for the categorical attribute: rows 0 and 2 known.
  logp = jax.nn.log_softmax(out.attributes["sentiment"], -1)
  w = b["weights"]
  nll = -(logp[0, :, 2] * w[0]).sum() - (logp[2, :, 0] * w[2]).sum()
  np.testing.assert_allclose(m["attr/sentiment"], nll / (w[0].sum() + w[2].sum()), rtol=1e-5)
  # Changing an unknown label or a masked position's target changes nothing.
  b2 = dict(b, sentiment=b["sentiment"].at[1].set(-7))
  b2["targets"] = b["targets"].at[0, 0].set((b["targets"][0, 0] + 1) % V)
  np.testing.assert_allclose(cat_loss(model, params, b2)[0], loss, rtol=1e-6)
  # lam scales the attribute part only.
  l0, m0 = cat_loss(model, params, b, lam=0.0)
  np.testing.assert_allclose(l0, m0["ce"], rtol=1e-6)
  np.testing.assert_allclose(loss, m["ce"] + 0.15 * m["attr_loss"], rtol=1e-6)


def test_attr_only_mode_sends_no_gradient_to_the_trunk():
  model, params = _model()
  g = jax.grad(lambda p: cat_loss(model, p, _batch(), mode="attr_only")[0])(params)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["trunk"]))
  assert float(jnp.abs(g["head_sentiment"]["U"]).max()) > 0


def _slow_steered(model, params, prompt, n, sc):
  """Reference: recompute the whole prefix every step, same rule and rng."""
  seq = list(prompt)
  rng = jax.random.PRNGKey(0)
  for i in range(n):
    out = model.apply({"params": params}, jnp.array([seq]), all_tokens=True)
    attrs = {k: v[:, -1] for k, v in out.attributes.items()}
    tok, _ = choose_token(model, out.logits[:, -1], attrs, jax.random.fold_in(rng, i), sc)
    seq.append(int(tok[0]))
  return seq[len(prompt):]


@pytest.mark.parametrize("rule", ["none", "weighted", "satisficing", "greedy_attr"])
def test_cached_steered_decoding_equals_recompute(rule):
  model, params = _model("factorized", "block")
  targets = () if rule == "none" else (Target("sentiment", 2, 3.0), Target("rating", 5.0, 0.5))
  sc = SteeringConfig(rule=rule, targets=targets, temperature=0.0 if rule != "satisficing"
                      else 1.0, candidates=5, eps=0.0, threshold=0.34)
  prompts = jnp.array([[1, 4, 5, 0], [1, 3, 0, 0]])
  d = steered_decode(model, params, prompts, jnp.array([3, 2]), jax.random.PRNGKey(0),
                     steering=sc, max_new_tokens=5)
  for i, p in enumerate([[1, 4, 5], [1, 3]]):
    ref = _slow_steered(model, params, p, 5,
                        sc) if rule != "satisficing" else None
    if ref is not None:
      assert d.new_tokens[i].tolist() == ref


def test_gamma_zero_is_the_unsteered_model():
  model, params = _model()
  prompts, pl = jnp.array([[1, 4, 5, 0]]), jnp.array([3])
  plain = steered_decode(model, params, prompts, pl, jax.random.PRNGKey(0),
                         steering=SteeringConfig(rule="none", temperature=0.0), max_new_tokens=6)
  zero = steered_decode(model, params, prompts, pl, jax.random.PRNGKey(0),
                        steering=SteeringConfig(rule="weighted", temperature=0.0,
                                                targets=(Target("sentiment", 2, 0.0),)),
                        max_new_tokens=6)
  assert plain.new_tokens.tolist() == zero.new_tokens.tolist()


def test_satisficing_rule_on_a_hand_built_distribution():
  model, _ = _model()
  # p: token 0 is likeliest; attribute probabilities (class 2) per token below.
  p = jnp.array([[0.5, 0.2, 0.15, 0.1, 0.0499, 0.0001] + [0.0] * (V - 6)])
  logits = jnp.log(jnp.maximum(p, 1e-12))
  attr_p = jnp.array([0.1, 0.9, 0.85, 0.2, 0.95, 0.99] + [0.99] * (V - 6))
  sentiment = jnp.log(jnp.stack([(1 - attr_p) / 2, (1 - attr_p) / 2, attr_p], -1))[None]
  attrs = {"sentiment": sentiment}
  sc = SteeringConfig(rule="satisficing", targets=(Target("sentiment", 2),), candidates=4,
                      eps=1e-3, threshold=0.8)
  picks = [int(choose_token(model, logits, attrs, jax.random.PRNGKey(s), sc)[0][0])
           for s in range(200)]
  # Candidates: top-4 by p with p >= eps = {0,1,2,3}; those >= 0.8: {1, 2}, sampled 0.2:0.15.
  assert set(picks) == {1, 2}
  assert abs(np.mean(np.array(picks) == 1) - 0.2 / 0.35) < 0.1
  # Nothing clears the threshold: the candidate with the highest attribute probability.
  sc_hi = SteeringConfig(rule="satisficing", targets=(Target("sentiment", 2),), candidates=4,
                         eps=1e-3, threshold=0.95)
  assert int(choose_token(model, logits, attrs, jax.random.PRNGKey(0), sc_hi)[0][0]) == 1
  sc_g = SteeringConfig(rule="greedy_attr", targets=(Target("sentiment", 2),), candidates=5,
                        eps=1e-3)
  assert int(choose_token(model, logits, attrs, jax.random.PRNGKey(0), sc_g)[0][0]) == 4


def test_bad_configuration_errors():
  with pytest.raises(ValueError, match="kind='ordinal'"):
    AttributeSpec("x", kind="ordinal")
  with pytest.raises(ValueError, match="CATConfig.param='huge'"):
    CATConfig(attributes=ATTRS, param="huge")
  with pytest.raises(ValueError, match="needs a target attribute"):
    SteeringConfig(rule="satisficing")
  model, params = _model()
  with pytest.raises(KeyError, match="no attribute 'mood'"):
    steered_decode(model, params, jnp.array([[1, 2]]), jnp.array([2]), jax.random.PRNGKey(0),
                   steering=SteeringConfig(targets=(Target("mood", 1),)), max_new_tokens=2)


def test_monte_carlo_is_unbiased_on_a_uniform_model():
  lm = Transformer(CFG)
  params = nn.meta.unbox(lm.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(jnp.zeros_like, params)   # all logits 0: uniform next tokens
  score = lambda pr, pl, comp: (comp[:, 0] < 4).astype(jnp.float32)   # P = 4 / V
  est = baselines.monte_carlo_estimate(lm, params, jnp.array([[1, 2], [1, 0]]),
                                       jnp.array([2, 1]), jax.random.PRNGKey(1),
                                       num_samples=3000, max_new_tokens=2, score_fn=score)
  se = np.sqrt(4 / V * (1 - 4 / V) / 3000)
  np.testing.assert_allclose(est, 4 / V, atol=4 * se)


def test_monte_carlo_shares_each_prefix_and_keeps_the_per_sample_estimate():
  # The shared-cache sampler (each prompt prefilled once) draws what sample_lm draws on the
  # prompts repeated N times with the same rng, so the estimate is the old per-sample one.
  lm = Transformer(CFG)
  params = lm.init(jax.random.PRNGKey(2), jnp.zeros((1, 4), jnp.int32))["params"]
  prompts, pl = jnp.array([[1, 4, 5], [1, 3, 0]]), jnp.array([3, 2])
  n, rng = 6, jax.random.PRNGKey(5)
  shared = baselines.sample_lm_shared_prefix(lm, params, prompts, pl, rng, num_samples=n,
                                             max_new_tokens=4)
  per_sample = baselines.sample_lm(lm, params, jnp.repeat(prompts, n, 0), jnp.repeat(pl, n),
                                   rng, max_new_tokens=4)
  assert shared.shape == (2 * n, 4) and shared.tolist() == per_sample.tolist()
  assert len({tuple(r) for r in shared.tolist()}) > 2          # the N rows are distinct draws
  score = lambda pr, lens, comp: ((comp < 6).sum(-1) + (pr == 4).sum(-1) >= 2).astype(float)
  est = baselines.monte_carlo_estimate(lm, params, prompts, pl, rng, num_samples=n,
                                       max_new_tokens=4, score_fn=score)
  ref = score(jnp.repeat(prompts, n, 0), jnp.repeat(pl, n), per_sample).reshape(2, n).mean(-1)
  np.testing.assert_array_equal(np.asarray(est), np.asarray(ref, np.float32))


def test_fudge_without_classifier_weight_is_plain_greedy():
  lm = Transformer(CFG)
  lm_params = lm.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  clf = baselines.PrefixClassifier(CFG, num_classes=2)
  clf_params = clf.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
  prompts, pl = jnp.array([[1, 4, 5], [1, 3, 0]]), jnp.array([3, 2])
  greedy = baselines.sample_lm(lm, lm_params, prompts, pl, jax.random.PRNGKey(0),
                               max_new_tokens=5, temperature=0.0)
  fudge = baselines.fudge_decode(lm, lm_params, clf, clf_params, prompts, pl,
                                 jax.random.PRNGKey(0), target=1, max_new_tokens=5, top_k=4,
                                 gamma=0.0, temperature=0.0)
  assert fudge.tolist() == greedy.tolist()
  # With a large weight the classifier decides among the LM's top-k: check one step by hand.
  fudge1 = baselines.fudge_decode(lm, lm_params, clf, clf_params, prompts[:1], pl[:1],
                                  jax.random.PRNGKey(0), target=1, max_new_tokens=1, top_k=4,
                                  gamma=100.0, temperature=0.0)
  logits = lm.apply({"params": lm_params}, prompts[:1]).logits[0, -1]
  top4 = jnp.argsort(-logits)[:4]
  cands = jnp.concatenate([jnp.repeat(prompts[:1], 4, 0), top4[:, None]], 1)
  clf_logits, _ = clf.apply({"params": clf_params}, cands)
  score = jax.nn.log_softmax(logits)[top4] + 100.0 * jax.nn.log_softmax(clf_logits[:, -1])[:, 1]
  assert int(fudge1[0, 0]) == int(top4[jnp.argmax(score)])
  # A classifier that reads another vocabulary would score the wrong ids: it is flagged.
  from catrans.diagnose import VocabularyMismatchWarning
  other = baselines.PrefixClassifier(CFG.replace(vocab_size=V + 3), num_classes=2)
  other_params = other.init(jax.random.PRNGKey(1), jnp.zeros((1, 4), jnp.int32))["params"]
  with pytest.warns(VocabularyMismatchWarning, match="vocabulary sizes differ"):
    baselines.fudge_decode(lm, lm_params, other, other_params, prompts[:1], pl[:1],
                           jax.random.PRNGKey(0), target=1, max_new_tokens=1, top_k=4)


def test_attr_layer_reads_block_k_only():
  """CATConfig.attr_layer=k: the branch reads the final norm of block k's state. k = the last
  block is today's model exactly; with k = 1 nothing after block 1 reaches an attribute output
  (zero gradient), the token head is unchanged, and cache_features(tap_layer=k) is what the
  branch reads."""
  from catrans.fit import cache_features
  cfg = CFG.replace(num_layers=3)
  attrs = (AttributeSpec("a", num_classes=3),)
  make = lambda k: CATModel(cfg, CATConfig(attributes=attrs, param="factorized",
                                           attr_layer=k))
  x = jax.random.randint(jax.random.PRNGKey(1), (2, 6), 0, V)
  y = jnp.roll(x, -1, axis=1)
  params = nn.meta.unbox(make(None).init(jax.random.PRNGKey(0), x, next_tokens_BxL=y)["params"])
  run = lambda k, p: make(k).apply({"params": p}, x, next_tokens_BxL=y)
  top, last, first = run(None, params), run(3, params), run(1, params)
  np.testing.assert_array_equal(last.attributes["a"], top.attributes["a"])
  np.testing.assert_array_equal(first.logits, top.logits)
  assert float(jnp.abs(first.attributes["a"] - top.attributes["a"]).max()) > 1e-3
  g = jax.grad(lambda p: run(1, p).attributes["a"].sum())(params)["trunk"]
  assert all(float(jnp.abs(v).max()) == 0
             for v in jax.tree.leaves(g["layer_1"]) + jax.tree.leaves(g["layer_2"]))
  assert min(float(jnp.abs(v).max()) for v in jax.tree.leaves(g["layer_0"])) > 0
  h = cache_features(Transformer(cfg), params["trunk"], x, tap_layer=1)
  alone = make(1).apply({"params": params}, h, y, method=CATModel.attributes_from_hidden)
  np.testing.assert_allclose(alone["a"], first.attributes["a"], atol=1e-5)
  with pytest.raises(ValueError, match=r"CATConfig.attr_layer = 4 is outside \[1, 3\]"):
    run(4, params)
  with pytest.raises(ValueError, match="CATConfig.attr_layer = 0"):
    make(0)
  with pytest.raises(ValueError, match="needs scan_layers=False"):
    cache_features(Transformer(cfg.replace(scan_layers=True)), params["trunk"], x, tap_layer=1)
