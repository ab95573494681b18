"""Property-based fuzzing of the public API: bad and edge-case calls on estimate, observed_q,
counterfactuals, steered_decode, Transformer.apply, build_one_pass, sequencematch_loss,
generate and the tokenizers, each classified as

  clear error      ValueError / TypeError / KeyError whose message names the argument
  correct result   a valid call whose result satisfies its property or matches a reference
  unhelpful crash  any other exception, an error not naming the argument, or a valid call
                   rejected
  silently wrong   a bad call that returns, or a result that violates its property

  python -m tests.fuzz_public_api --calls=1200 [--seed=0]

prints the counts (and every non-clean case) and exits 1 if either of the last two is > 0.
tests/test_fuzz_public_api.py runs a seeded sample of it in the default test run."""
import argparse
import collections
import functools
import os
import sys
from typing import Any, Callable, NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  # The test suite's fast-compile flags (tests/conftest.py): the fuzz is compile-bound.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_"
                             "level=0 --xla_llvm_disable_expensive_passes=true "
                             "--xla_cpu_use_fusion_emitters=false").strip()

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import catrans  # noqa: E402
import seqmatch  # noqa: E402
from catrans import attributes as attr_lib  # noqa: E402
from catrans.attributes import AttributeSpec  # noqa: E402
from catrans.cat_model import CATConfig, CATModel  # noqa: E402
from catrans.inference import counterfactuals, estimate, observed_q  # noqa: E402
from catrans.steering import SteeringConfig, Target, steered_decode  # noqa: E402
from experiments.data.tokenizers import ByteTokenizer  # noqa: E402

OUTCOMES = ("clear error", "correct result", "unhelpful crash", "silently wrong")
V, MAX_LEN = 11, 12
A, BK = 12, 11                      # seqmatch: 11 base tokens + <bkspc>
ATTRS = {"a": 3, "b": 2, "s": 2, "n": None}   # categorical, softmax binary, sigmoid, numeric
CLEAR = (ValueError, TypeError, KeyError)


class Case(NamedTuple):
  entry: str                         # the entry point
  what: str                          # the mutation
  call: Callable[[], Any]
  expect: tuple | None               # names one of which the error must contain; None: valid
  check: Callable[[Any], bool] | None = None   # property of a valid call's result


def classify(case: Case) -> str:
  try:
    out = case.call()
    if case.expect is None:
      jax.block_until_ready(out)
  except CLEAR as e:
    if case.expect is None:
      return "unhelpful crash"        # a valid call rejected
    return "clear error" if any(n in str(e) for n in case.expect) else "unhelpful crash"
  except Exception:  # noqa: BLE001 -- anything else is what the fuzz exists to find
    return "unhelpful crash"
  if case.expect is not None:
    return "silently wrong"
  try:
    return "correct result" if case.check(out) else "silently wrong"
  except Exception:  # noqa: BLE001 -- a result the property cannot even read is wrong
    return "silently wrong"


# ----------------------------------------------------------------------------- models
@functools.lru_cache(maxsize=None)
def cat_model():
  cfg = catrans.ModelConfig(vocab_size=V, d_model=16, num_layers=1, num_heads=2,
                            num_kv_heads=1, mlp_dim=32, max_len=MAX_LEN)
  specs = (AttributeSpec("a", num_classes=3), AttributeSpec("b", kind="binary"),
           AttributeSpec("s", kind="binary", binary_style="sigmoid"),
           AttributeSpec("n", kind="numeric"))
  model = CATModel(cfg, CATConfig(attributes=specs))
  params = nn.meta.unbox(jax.jit(functools.partial(model.init, all_tokens=True))(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  # Random, not initial, weights: distinct classes get clearly distinct probabilities.
  params = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
                        params)
  return model, params


@functools.lru_cache(maxsize=None)
def _forward():
  model, _ = cat_model()
  return jax.jit(lambda p, t: model.apply({"params": p}, t, all_tokens=True))


def class_probs(tokens, attribute):
  """Reference: [B, L, V, C] class probabilities (numeric: [..., 0] the mean) and [B, L, V]
  log p(v | s), from a plain forward."""
  model, params = cat_model()
  out = _forward()(params, jnp.asarray(tokens, jnp.int32))
  spec = model.cat.spec(attribute)
  probs = np.asarray(attr_lib.probabilities(spec, out.attributes[attribute]))
  return probs, np.asarray(jax.nn.log_softmax(out.logits, -1))


@functools.lru_cache(maxsize=None)
def seq_model():
  cfg = catrans.ModelConfig(vocab_size=A, d_model=16, num_layers=1, num_heads=2,
                            num_kv_heads=1, mlp_dim=32, max_len=MAX_LEN)
  model = catrans.Transformer(cfg)
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))

  def apply_fn(p, tokens, positions, mask, cache=None):
    out = model.apply(p, tokens, positions, mask, cache=cache)
    return out.logits, out.cache
  return apply_fn, (lambda b, s: catrans.init_cache(cfg, b, s)), params


# ----------------------------------------------------------------------------- mutations
def bad_int_arrays(rng, name, good, lo, hi):
  """(what, array) variants of an integer array `good` that must be rejected: wrong dtypes,
  values out of [lo, hi) (int64 beyond int32 included), wrong rank."""
  g = np.asarray(good)
  huge = g.astype(np.int64).copy()
  huge.flat[0] = 2 ** 32 + int(lo) + 1      # wraps into range under an int32 cast
  out_hi, out_lo = g.copy(), g.copy()
  out_hi.flat[-1] = hi + int(rng.integers(0, 3))
  out_lo.flat[0] = lo - 1 - int(rng.integers(0, 3))
  return [(f"{name} float", g.astype(np.float32) + 0.7), (f"{name} bool", g.astype(bool)),
          (f"{name} int64 2**32+", huge), (f"{name} >= {hi}", out_hi),
          (f"{name} < {lo}", out_lo), (f"{name} rank+1", g[..., None]),
          (f"{name} rank-1", g.reshape(-1)[:1].reshape(()) if g.ndim == 1 else g[0])]


def bad_targets(rng, attribute):
  c = ATTRS[attribute]
  return [c + int(rng.integers(0, 3)), -1 - int(rng.integers(0, 2)), 0.5, True, "1",
          float(c) + 0.5, np.float32(0.3)]


def pick(rng, xs):
  return xs[int(rng.integers(len(xs)))]


def tokens_for(rng, b, l):
  return rng.integers(0, V, size=(b, l)).astype(pick(rng, [np.int32, np.int64]))


# ----------------------------------------------------------------------------- catrans
def _estimate_ok(tokens, attribute, target):
  probs, _ = class_probs(tokens, attribute)
  b, l = tokens.shape
  c = probs.shape[-1] - 1 if target is None else target
  if ATTRS[attribute] is None:
    c = 0
  bi, ti = np.arange(b)[:, None], np.arange(1, l)[None]
  return probs[bi, ti - 1, tokens[:, 1:], c]       # [B, L-1] q_t, t >= 1


def case_estimate(rng, entry):
  model, params = cat_model()
  b, l = pick(rng, [(1, 3), (2, 5)])
  tokens = tokens_for(rng, b, l)
  attribute = pick(rng, list(ATTRS))
  target = pick(rng, [None] + (list(range(ATTRS[attribute])) if ATTRS[attribute] else []))
  kw = dict(attribute=attribute, target=target)
  fn = estimate if entry == "estimate" else observed_q

  def run(t=tokens, pos=None, mask=None, **over):
    return lambda: fn(model, params, t, pos, mask, **{**kw, **over})
  bad = [(w, run(t=x), ("tokens_BxL",))
         for w, x in bad_int_arrays(rng, "tokens_BxL", tokens, 0, V)]
  bad += [("tokens_BxL L=1", run(t=tokens[:, :1]), ("tokens_BxL",)),
          ("tokens_BxL L>max_len", run(t=tokens_for(rng, b, MAX_LEN + 1 + int(rng.integers(3)))),
           ("tokens_BxL",)),
          ("tokens_BxL empty", run(t=tokens[:0]), ("tokens_BxL",)),
          ("tokens_BxL ragged list", run(t=[[1, 2, 3], [1, 2]]), ("tokens_BxL",))]
  pos = np.broadcast_to(np.arange(l, dtype=np.int32), (b, l))
  bad += [(w, run(pos=x), ("positions_BxL",))
          for w, x in bad_int_arrays(rng, "positions_BxL", pos, 0, MAX_LEN)]
  causal = np.tril(np.ones((l, l), bool))
  bad += [("mask float", run(mask=causal.astype(np.float32)), ("mask",)),
          ("mask int", run(mask=causal.astype(np.int32)), ("mask",)),
          ("mask wrong L", run(mask=np.tril(np.ones((l + 1, l + 1), bool))), ("mask",)),
          ("mask wrong B", run(mask=np.broadcast_to(causal, (b + 2, l, l))), ("mask",))]
  if ATTRS[attribute]:
    bad += [(f"target={t!r}", run(target=t), ("target",)) for t in bad_targets(rng, attribute)]
  bad += [("attribute unknown", run(attribute="zz"), ("zz",)),
          ("attribute int", run(attribute=3), ("attribute",))]
  if rng.random() < 0.25:
    ref = _estimate_ok(np.asarray(tokens), attribute, target)
    if entry == "estimate":
      check = lambda e: (e.q.shape == (b, l) and np.allclose(e.q[:, 1:], ref, atol=1e-5)
                         and np.allclose(e.q[:, 0], e.value[:, 0], atol=1e-6))
    else:
      check = lambda q: q.shape == (b, l - 1) and np.allclose(q, ref, atol=1e-5)
    extra = pick(rng, [{}, {"pos": pos}, {"mask": causal}])
    return Case(entry, "valid", run(**extra), None, check)
  w, call, names = pick(rng, bad)
  return Case(entry, w, call, names)


def case_counterfactuals(rng):
  model, params = cat_model()
  b, l = pick(rng, [(1, 3), (2, 5)])
  tokens = tokens_for(rng, b, l)
  attribute = pick(rng, ["a", "b", "s"])
  target = int(rng.integers(ATTRS[attribute]))
  position = rng.integers(1, l, size=b).astype(np.int32)
  alts = rng.integers(0, V, size=(b, 3)).astype(np.int32)

  def run(**over):
    kw = dict(attribute=attribute, target=target, alternatives_BxK=alts)
    kw.update(over)
    t, p = kw.pop("tokens", tokens), kw.pop("position", position)
    return lambda: counterfactuals(model, params, t, p, **kw)
  bad = [(w, run(position=x), ("position_B",))
         for w, x in bad_int_arrays(rng, "position_B", position, 1, l)]
  bad += [(w, run(alternatives_BxK=x), ("alternatives_BxK",))
          for w, x in bad_int_arrays(rng, "alternatives_BxK", alts, 0, V)]
  bad += [("alternatives wrong batch", run(alternatives_BxK=np.concatenate([alts, alts])),
           ("alternatives_BxK",)),
          ("top_k=0", run(alternatives_BxK=None, top_k=0), ("top_k",)),
          ("top_k>V", run(alternatives_BxK=None, top_k=V + 1), ("top_k",)),
          ("top_k=2.0", run(alternatives_BxK=None, top_k=2.0), ("top_k",)),
          ("tokens L>max_len", run(tokens=tokens_for(rng, b, MAX_LEN + 2)), ("tokens_BxL",)),
          ("tokens float", run(tokens=tokens.astype(np.float32)), ("tokens_BxL",))]
  bad += [(f"target={t!r}", run(target=t), ("target",)) for t in bad_targets(rng, attribute)]
  if rng.random() < 0.25:
    probs, _ = class_probs(tokens, attribute)
    bi = np.arange(b)
    ref_q = probs[bi[:, None], position[:, None] - 1, alts, target]
    ref_actual = probs[bi, position - 1, tokens[bi, position], target]
    check = lambda c: (np.array_equal(c.tokens, alts) and np.allclose(c.q, ref_q, atol=1e-5)
                       and np.allclose(c.actual_q, ref_actual, atol=1e-5))
    return Case("counterfactuals", "valid", run(), None, check)
  w, call, names = pick(rng, bad)
  return Case("counterfactuals", w, call, names)


def _steer_ok(d, prompts, t, eos_id, pad_id, first_ref):
  new = np.asarray(d.new_tokens)
  ok = new.shape == (prompts.shape[0], t) and np.all((new >= 0) & (new < V))
  ok &= np.array_equal(np.asarray(d.tokens)[:, :prompts.shape[1]], prompts)
  if eos_id is not None:
    for row, n in zip(new, np.asarray(d.lengths)):
      hit = np.flatnonzero(row == eos_id)
      end = hit[0] + 1 if hit.size else t
      ok &= n == end and np.all(row[end:] == pad_id)
  return bool(ok) and (first_ref is None or np.array_equal(new[:, 0], first_ref))


def case_steered(rng):
  model, params = cat_model()
  b, p = pick(rng, [(1, 3), (2, 4)])
  prompts = tokens_for(rng, b, p)
  lens = np.full((b,), p, np.int32)
  t = int(rng.integers(1, 4))
  attribute = pick(rng, ["a", "b", "s"])
  value = int(rng.integers(ATTRS[attribute]))
  rule = pick(rng, ["weighted", "satisficing", "greedy_attr"])
  sc_kw = dict(rule=rule, targets=(Target(attribute, value, 30.0),), temperature=0.0)

  def run(sc=None, targets=None, **over):
    """targets: a zero-argument function, so a bad Target is built inside the call."""
    kw = dict(max_new_tokens=t, eos_id=None, pad_id=0)
    kw.update(over)
    pr, pl = kw.pop("prompts", prompts), kw.pop("lens", lens)
    key = kw.pop("rng", jax.random.PRNGKey(0))

    def call():
      cfg = dict(sc or sc_kw)
      if targets is not None:
        cfg["targets"] = targets()
      return steered_decode(model, params, pr, pl, key, steering=SteeringConfig(**cfg), **kw)
    return call
  cfgs = [("top_p", 0.0), ("top_p", -0.1), ("top_p", 1.5), ("top_p", float("nan")),
          ("temperature", -1.0), ("temperature", float("nan")), ("temperature", float("inf")),
          ("candidates", 0), ("candidates", 2.5), ("top_k", -1), ("top_k", 1.5),
          ("eps", float("nan")), ("threshold", float("nan")), ("numeric_mode", "median")]
  bad = [(f"{k}={v!r}", run(sc={**sc_kw, k: v}), (k,)) for k, v in cfgs]
  bad += [("targets list", run(sc={**sc_kw, "targets": list(sc_kw["targets"])}), ("targets",))]
  for tv in bad_targets(rng, attribute) + [float(ATTRS[attribute])]:
    bad.append((f"Target({attribute!r}, {tv!r})",
                run(targets=lambda tv=tv: (Target(attribute, tv),)), ("Target.value",)))
  bad += [("Target gamma nan", run(targets=lambda: (Target(attribute, 1, float("nan")),)),
           ("Target.gamma",)),
          ("Target unknown", run(targets=lambda: (Target("zz", 1),)), ("zz",)),
          ("prompts float", run(prompts=prompts.astype(np.float32)), ("prompts_BxP",)),
          ("prompt_lens float", run(lens=lens.astype(np.float32) - 0.3), ("prompt_lens_B",)),
          ("prompt_lens 0", run(lens=lens * 0), ("prompt_lens_B",)),
          ("prompt_lens > P", run(lens=lens + 1), ("prompt_lens_B",)),
          ("prompt_lens int64 huge", run(lens=lens.astype(np.int64) + 2 ** 32), ("prompt_lens_B",)),
          ("prompt_lens wrong B", run(lens=np.ones((b + 1,), np.int32)), ("prompt_lens_B",)),
          ("P + T > max_len", run(max_new_tokens=MAX_LEN), ("max_new_tokens",)),
          ("max_new_tokens 0", run(max_new_tokens=0), ("max_new_tokens",)),
          ("max_new_tokens 2.0", run(max_new_tokens=2.0), ("max_new_tokens",)),
          ("eos_id=V", run(eos_id=V), ("eos_id",)), ("eos_id=-1", run(eos_id=-1), ("eos_id",)),
          ("eos_id=1.5", run(eos_id=1.5), ("eos_id",)), ("pad_id=V", run(pad_id=V), ("pad_id",)),
          ("rng int", run(rng=0), ("rng",))]
  if rng.random() < 0.3:
    eos_id = pick(rng, [None, int(rng.integers(V))])
    first_ref = None
    if rule == "weighted":     # the first token: argmax log p + gamma log P(a = value)
      probs, logp = class_probs(prompts, attribute)
      lp = np.log(np.maximum(probs[:, -1, :, value], 1e-30))
      first_ref = np.argmax(logp[:, -1] + 30.0 * lp, -1)
    elif rule == "greedy_attr":  # the candidate (top 20 of 11 = all) with the highest P
      probs, _ = class_probs(prompts, attribute)
      p_tok = np.exp(class_probs(prompts, attribute)[1][:, -1])
      candidate = (p_tok >= 1e-3) | (np.arange(V) == p_tok.argmax(-1, keepdims=True))
      first_ref = np.argmax(np.where(candidate, probs[:, -1, :, value], -1), -1)
    return Case("steered_decode", f"valid {rule}", run(eos_id=eos_id), None,
                lambda d: _steer_ok(d, prompts, t, eos_id, 0, first_ref))
  w, call, names = pick(rng, bad)
  return Case("steered_decode", w, call, names)


def case_trunk(rng):
  model, params = cat_model()
  trunk = catrans.Transformer(model.cfg)
  tp = {"params": params["trunk"]}
  b, l = pick(rng, [(1, 3), (2, 5)])
  tokens = tokens_for(rng, b, l)

  def run(t=tokens, pos=None, mask=None, seg=None):
    return lambda: trunk.apply(tp, t, pos, mask, seg)
  pos = np.broadcast_to(np.arange(l, dtype=np.int32), (b, l))
  bad = [(w, run(t=x), ("tokens_BxL",)) for w, x in bad_int_arrays(rng, "tokens_BxL", tokens, 0, V)]
  bad += [(w, run(pos=x), ("positions_BxL",))
          for w, x in bad_int_arrays(rng, "positions_BxL", pos, 0, MAX_LEN)]
  bad += [("tokens L>max_len", run(t=tokens_for(rng, b, MAX_LEN + 1)), ("tokens_BxL",)),
          ("mask float", run(mask=np.tril(np.ones((l, l), np.float32))), ("mask",)),
          ("mask wrong shape", run(mask=np.ones((b, l, l + 1), bool)), ("mask",)),
          ("segment ids float", run(seg=np.ones((b, l), np.float32)), ("segment_ids_BxL",)),
          ("segment ids wrong shape", run(seg=np.ones((b, l + 1), np.int32)),
           ("segment_ids_BxL",))]
  if rng.random() < 0.25:
    ref = np.asarray(_forward()(params, jnp.asarray(tokens, jnp.int32)).logits)
    causal = np.tril(np.ones((l, l), bool))
    return Case("Transformer.apply", "valid", run(pos=pos, mask=causal), None,
                lambda o: o.logits.shape == (b, l, V) and np.allclose(o.logits, ref, atol=1e-4))
  w, call, names = pick(rng, bad)
  return Case("Transformer.apply", w, call, names)


# ----------------------------------------------------------------------------- seqmatch
def _action_batch(rng):
  b, n = pick(rng, [(1, 4), (2, 6)])
  seqs = rng.integers(0, BK, size=(b, n)).astype(np.int32)
  pl = np.ones((b,), np.int32)
  ln = rng.integers(2, n + 1, size=b).astype(np.int32)
  for i in range(b):   # legal <bkspc>: only after a non-prompt token
    for t in range(2, n):
      if rng.random() < 0.3 and len(seqmatch.collapse_states(seqs[i, :t], 1, BK)[-1]) > 1:
        seqs[i, t] = BK
        break
  return seqs, pl, ln


def case_one_pass(rng):
  seqs, pl, ln = _action_batch(rng)
  b, n = seqs.shape

  def run(s=seqs, p=pl, l=ln, **kw):
    kw = {"vocab_size": A, "backspace_id": BK, **kw}
    return lambda: seqmatch.build_one_pass(s, p, l, **kw)
  bad = [(w, run(s=x), ("sequences_BxN",)) for w, x in
         bad_int_arrays(rng, "sequences_BxN", seqs, 0, A)[:3] + [("1-D", seqs[0])]]
  bad += [("prompt_lens float", run(p=pl + 0.5), ("prompt_lens_B",)),
          ("prompt_lens wrong B", run(p=np.ones((b + 1,), np.int32)), ("prompt_lens_B",)),
          ("prompt_lens 0", run(p=pl * 0), ("prompt_lens_B",)),
          ("lengths > N", run(l=ln + n), ("lengths_B",)),
          ("lengths float", run(l=ln.astype(np.float32) + 0.7), ("lengths_B",)),
          ("lengths int64 huge", run(l=ln.astype(np.int64) + 2 ** 32), ("lengths_B",)),
          ("vocab_size 0", run(vocab_size=0), ("vocab_size",)),
          ("vocab_size 2.5", run(vocab_size=2.5), ("vocab_size",)),
          ("backspace_id out", run(backspace_id=A), ("backspace_id",)),
          ("backspace_id float", run(backspace_id=11.0), ("backspace_id",)),
          ("eos_id out", run(eos_id=A + 3), ("eos_id",)),
          ("expert float", run(expert_BxN=np.ones((b, n), np.float32)), ("expert_BxN",)),
          ("expert wrong shape", run(expert_BxN=np.ones((b, n + 1), bool)), ("expert_BxN",)),
          ("method", run(method="fast"), ("method",)),
          ("bkspc in prompt", run(s=np.where(np.arange(n) == 0, BK, seqs)), ("bkspc", "prompt"))]
  if rng.random() < 0.3:
    method = pick(rng, ["scan", "parallel"])

    def check(one):
      return all(int(one.state_len[i, ln[i] - 1]) ==
                 len(seqmatch.collapse(seqs[i, :ln[i]], int(pl[i]), BK)) for i in range(b))
    return Case("build_one_pass", f"valid {method}", run(method=method), None, check)
  w, call, names = pick(rng, bad)
  return Case("build_one_pass", w, call, names)


def case_sm_loss(rng):
  seqs, pl, ln = _action_batch(rng)
  one = seqmatch.build_one_pass(seqs, pl, ln, vocab_size=A, backspace_id=BK)
  b, n = seqs.shape
  logits = rng.normal(size=(b, n, A)).astype(np.float32)

  def run(lg=logits, o=one, **kw):
    kw = {"backspace_id": BK, **kw}
    return lambda: seqmatch.sequencematch_loss(lg, o, **kw)
  nan = float("nan")
  bad = [(f"gamma={g}", run(gamma=g), ("gamma",)) for g in (0.0, -0.5, 1.5, nan, "0.9")]
  bad += [(f"alpha={a}", run(alpha=a), ("alpha",)) for a in (nan, 0.0, -1.0)]
  bad += [(f"horizon={h!r}", run(horizon=h), ("horizon",)) for h in (2.5, 0, "3", np.float32(2))]
  bad += [("logits int", run(lg=logits.astype(np.int32)), ("logits_BxNxA",)),
          ("logits wrong shape", run(lg=logits[:, :-1]), ("logits_BxNxA",)),
          ("divergence None", run(divergence=None), ("divergence",)),
          ("divergence unknown", run(divergence="hellinger"), ("divergence",)),
          ("divergence 3", run(divergence=3), ("divergence",)),
          ("is_data float", run(is_data_B=np.ones((b,), np.float32)), ("is_data_B",)),
          ("is_data wrong shape", run(is_data_B=np.ones((b + 1,), bool)), ("is_data_B",)),
          ("model_share nan", run(model_share=nan), ("model_share",)),
          ("model_share 2", run(model_share=2.0), ("model_share",)),
          ("backspace_id out", run(backspace_id=A), ("backspace_id",)),
          ("one not OnePass", run(o=tuple(one)), ("OnePass",)),
          ("reward_backspace 'no'", run(reward_backspace="no"), ("reward_backspace",))]
  if rng.random() < 0.3:
    name = pick(rng, sorted(seqmatch.DIVERGENCES))
    gamma = pick(rng, [1.0, 0.9, 0.998])
    horizon = pick(rng, [None, 1, n])
    ref = seqmatch.sequencematch_loss(logits, one, backspace_id=BK, gamma=gamma,
                                      horizon=horizon,
                                      divergence=seqmatch.get_divergence(name, 0.05))[0]
    return Case("sequencematch_loss", "valid", run(divergence=name, alpha=0.05, gamma=gamma,
                                                   horizon=horizon), None,
                lambda o: np.isfinite(float(o[0])) and np.allclose(o[0], ref, atol=1e-6))
  w, call, names = pick(rng, bad)
  return Case("sequencematch_loss", w, call, names)


def case_generate(rng):
  apply_fn, init_cache_fn, params = seq_model()
  b, p = pick(rng, [(1, 2), (2, 3)])
  prompts = rng.integers(0, BK, size=(b, p)).astype(np.int32)
  lens = np.full((b,), p, np.int32)

  def run(pr=prompts, pl=lens, **kw):
    kw = {"max_actions": 3, "backspace_id": BK, "temperature": 0.0, "max_len": MAX_LEN, **kw}
    return lambda: seqmatch.generate(apply_fn, init_cache_fn, params, pr, pl,
                                     jax.random.PRNGKey(0), **kw)
  nan = float("nan")
  bad = [("temperature nan", run(temperature=nan), ("temperature",)),
         ("temperature -1", run(temperature=-1.0), ("temperature",)),
         ("max_actions 0", run(max_actions=0), ("max_actions",)),
         ("max_actions 2.5", run(max_actions=2.5), ("max_actions",)),
         ("max_actions > max_len", run(max_actions=MAX_LEN), ("max_actions",)),
         ("eos_id A", run(eos_id=A), ("eos_id",)), ("eos_id -1", run(eos_id=-1), ("eos_id",)),
         ("pad_id A", run(pad_id=A + 2), ("pad_id",)), ("pad_id -1", run(pad_id=-1), ("pad_id",)),
         ("prompts float", run(pr=prompts + 0.5), ("prompts_BxP",)),
         ("prompts int64 huge", run(pr=prompts.astype(np.int64) + 2 ** 32), ("prompts_BxP",)),
         ("prompt_lens float", run(pl=lens - 0.3), ("prompt_lens_B",)),
         ("prompt_lens 0", run(pl=lens * 0), ("prompt_lens_B",)),
         ("backspace_id out", run(backspace_id=A + 5), ("backspace_id",)),
         ("prompt holds bkspc", run(pr=np.full((b, p), BK, np.int32)), ("bkspc",)),
         ("ban_undone without reuse", run(ban_undone=True, reuse_logits=False),
          ("reuse_logits",))]
  if rng.random() < 0.3:
    eos_id = pick(rng, [None, 2])

    def check(g):
      ok = True
      for i in range(b):
        n = int(g.num_actions[i])
        acts = np.asarray(g.actions[i])
        ok &= 1 <= n <= 3 and np.all((acts[:n] >= 0) & (acts[:n] < A)) and np.all(acts[n:] == -1)
        state = seqmatch.collapse(np.asarray(g.sequences[i, :p + n]), p, BK)
        ok &= state == [int(x) for x in g.tokens[i, :int(g.lengths[i])]]
      return bool(ok)
    return Case("generate", "valid", run(eos_id=eos_id), None, check)
  w, call, names = pick(rng, bad)
  return Case("generate", w, call, names)


def case_tokenizer(rng):
  tok = ByteTokenizer()
  text = "".join(pick(rng, list("ab é日?")) for _ in range(int(rng.integers(0, 6))))
  ids = tok.encode(text)
  bad = [("decode id 259", lambda: tok.decode(ids + [259]), ("token id",)),
         ("decode id -1", lambda: tok.decode([-1] + ids), ("token id",)),
         ("decode float ids", lambda: tok.decode([3.7] + ids), ("integer",)),
         ("decode 2-D", lambda: tok.decode([[4, 5]]), ("1-D",)),
         ("decode str", lambda: tok.decode("abc"), ("token ids",)),
         ("encode bytes", lambda: tok.encode(b"x"), ("str",)),
         ("encode None", lambda: tok.encode(None), ("str",))]
  if rng.random() < 0.3:
    return Case("tokenizer", "valid", lambda: tok.decode([1] + ids + [2, 0]), None,
                lambda s: s == text)
  w, call, names = pick(rng, bad)
  return Case("tokenizer", w, call, names)


GENERATORS = (
    ("estimate", lambda r: case_estimate(r, "estimate")),
    ("observed_q", lambda r: case_estimate(r, "observed_q")),
    ("counterfactuals", case_counterfactuals), ("steered_decode", case_steered),
    ("Transformer.apply", case_trunk), ("build_one_pass", case_one_pass),
    ("sequencematch_loss", case_sm_loss), ("generate", case_generate),
    ("tokenizer", case_tokenizer))


def run_fuzz(calls: int, seed: int = 0, verbose: bool = False):
  """Makes `calls` calls round-robin over the entry points. Returns (Counter of outcomes,
  list of (outcome, entry, what) for the unhelpful and wrong ones)."""
  rng = np.random.default_rng(seed)
  counts, bad = collections.Counter(), []
  for i in range(calls):
    _, gen = GENERATORS[i % len(GENERATORS)]
    case = gen(rng)
    outcome = classify(case)
    counts[outcome] += 1
    if outcome in OUTCOMES[2:]:
      bad.append((outcome, case.entry, case.what))
      if verbose:
        print(f"  {outcome}: {case.entry} ({case.what})", flush=True)
  return counts, bad


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--calls", type=int, default=1200)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  counts, bad = run_fuzz(a.calls, a.seed, verbose=True)
  print(f"{a.calls} calls (seed {a.seed}):")
  for o in OUTCOMES:
    print(f"  {o:16s} {counts[o]}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
