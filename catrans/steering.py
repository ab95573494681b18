"""Steered decoding with a KV cache, batched, one lax.scan over the new tokens.

Rules (SPEC section 2):
  weighted      score_v = log p(v|s) + sum_j gamma_j log P(a_j = target_j | s, v), then
                greedy / temperature / top-k / top-p; numeric targets use the Gaussian
                log-likelihood of the target value ('likelihood') or -(mean - target)^2.
  satisficing   among the top_k (20) tokens with p(v|s) >= eps (0.001), sample by p among
                those whose target-attribute probability >= threshold (0.8); if none, take
                the one with the highest attribute probability.
  greedy_attr   single-step policy improvement: the candidate (top_k tokens with p >= eps)
                with the highest target-attribute probability / expected value.
  none          plain sampling from p (the unsteered model; gamma = 0 is the same).
Prompts may have different lengths: they are right-padded to P, and every new token of row b
goes to cache slot P + step at position prompt_len_b + step, attending to its prompt slots
and the new slots only."""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from catrans import attributes as attr_lib
from catrans import sampling, validation
from catrans.cat_model import init_cat_cache

RULES = ("weighted", "satisficing", "greedy_attr", "none")


@dataclasses.dataclass(frozen=True)
class Target:
  """Steer attribute `name` towards class `value` (or a numeric value) with strength gamma."""
  name: str
  value: float = 1
  gamma: float = 1.0

  def __post_init__(self):
    # The class range needs the attribute's spec: steered_decode checks it (check_class).
    if not isinstance(self.name, str):
      raise TypeError(f"Target.name must be an attribute name (str), got {self.name!r}")
    validation.check_finite_number(self.value, "Target.value")
    validation.check_finite_number(self.gamma, "Target.gamma")


@dataclasses.dataclass(frozen=True)
class SteeringConfig:
  rule: str = "weighted"
  targets: tuple[Target, ...] = ()
  temperature: float = 1.0
  top_k: int = 0                # sampling filter (weighted / none)
  top_p: float = 1.0
  candidates: int = 20          # satisficing / greedy_attr: top-k by p(v|s)
  eps: float = 1e-3
  threshold: float = 0.8
  numeric_mode: str = "likelihood"

  def __post_init__(self):
    """Checks every field (the class of each target needs the model: steered_decode)."""
    if self.rule not in RULES:
      raise ValueError(f"steering rule {self.rule!r}; choose from {RULES}")
    # A tuple, not a list: the config is a static (hashed) jit argument.
    if not isinstance(self.targets, tuple) or not all(isinstance(t, Target)
                                                      for t in self.targets):
      raise TypeError(f"SteeringConfig.targets must be a tuple of Target, got {self.targets!r}")
    if self.rule in ("satisficing", "greedy_attr") and not self.targets:
      raise ValueError(f"rule {self.rule!r} needs a target attribute")
    validation.check_sampling(self.temperature, self.top_k, self.top_p)
    validation.check_positive(self.candidates, "candidates")
    validation.check_probability(self.eps, "eps", allow_zero=True)
    validation.check_finite_number(self.threshold, "threshold")
    validation.check_choice(self.numeric_mode, "numeric_mode", ("likelihood", "mean"))


class Decoded(NamedTuple):
  tokens: jnp.ndarray        # [B, P + T]: prompt (right-padded to P) then new tokens
  new_tokens: jnp.ndarray    # [B, T] (pad_id after eos)
  lengths: jnp.ndarray       # [B] number of new tokens (eos included)
  attr_trace: jnp.ndarray    # [B, T] target-attribute estimate of each chosen token
                             # (first target; P(a = value | s, v) or E[a | s, v])


def _target_logprob(spec, attrs_BxVxK, target: Target, numeric_mode):
  if spec.kind == "numeric":
    return attr_lib.log_prob_of_target(spec, attrs_BxVxK, target.value, numeric_mode)
  return attr_lib.log_prob_of_target(spec, attrs_BxVxK, int(target.value))


def _target_score(spec, attrs_BxVxK, target: Target):
  """What satisficing / greedy_attr compare: a probability, or an expected value."""
  if spec.kind == "numeric":
    return attr_lib.expected_value(spec, attrs_BxVxK)
  return attr_lib.probabilities(spec, attrs_BxVxK)[..., int(target.value)]


def choose_token(model, logits_BxV, attrs, rng, sc: SteeringConfig):
  """One steering decision: (tokens [B], attr estimate of the chosen token [B])."""
  logp = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  first = sc.targets[0] if sc.targets else None
  first_score = None
  if first is not None:
    spec = model.cat.spec(first.name)
    first_score = _target_score(spec, attrs[first.name], first)
  if sc.rule in ("weighted", "none"):
    scores = logp
    if sc.rule == "weighted":
      for t in sc.targets:
        spec = model.cat.spec(t.name)
        scores = scores + t.gamma * _target_logprob(spec, attrs[t.name], t, sc.numeric_mode)
    tok = sampling.choose(scores, rng, temperature=sc.temperature, top_k=sc.top_k,
                          top_p=sc.top_p)
  else:
    p = jnp.exp(logp)
    candidate = sampling.filter_top_k(logp, sc.candidates) > sampling.NEG / 2
    candidate = candidate & (p >= sc.eps)
    # The most likely token is always a candidate so the set is never empty.
    candidate = candidate | (jnp.arange(p.shape[-1]) == jnp.argmax(p, -1, keepdims=True))
    best_attr = jnp.argmax(jnp.where(candidate, first_score, -jnp.inf), axis=-1)
    if sc.rule == "greedy_attr":
      tok = best_attr.astype(jnp.int32)
    else:
      ok = candidate & (first_score >= sc.threshold)
      sampled = jax.random.categorical(rng, jnp.where(ok, logp, sampling.NEG), axis=-1)
      tok = jnp.where(ok.any(-1), sampled, best_attr).astype(jnp.int32)
  est = (jnp.take_along_axis(first_score, tok[:, None], -1)[:, 0] if first is not None
         else jnp.zeros(tok.shape, jnp.float32))
  return tok, est


def steered_decode(model, params, prompts_BxP, prompt_lens_B, rng, *,
                   steering: SteeringConfig, max_new_tokens: int, eos_id: int | None = None,
                   pad_id: int = 0) -> Decoded:
  """Decodes max_new_tokens tokens per prompt under a steering rule (see module doc).

  model: a CATModel; prompts_BxP: right-padded prompts [B, P], prompt_lens_B in [1, P].
  Returns Decoded (tokens [B, P+T], new_tokens [B, T], lengths [B], attr_trace [B, T]).

  Checked on the host before jit (catrans.validation): steering is a SteeringConfig (whose
  fields are checked when it is built); every target names an attribute of the model and a
  class in its range (an integer, 1.0 accepted; a binary has classes 0 and 1 only), or a
  finite number for a numeric one; integer prompts [B, P] in the vocabulary and integer
  prompt_lens_B [B] in [1, P]; max_new_tokens an integer >= 1 with P + max_new_tokens <=
  max_len; eos_id (or None) and pad_id integers in [0, vocab_size); rng a PRNG key."""
  steering = check_steering(model, steering)
  validation.check_prompts(prompts_BxP, prompt_lens_B, model.cfg.vocab_size,
                           model.cfg.max_len, max_new_tokens)
  validation.check_decode_ids(model.cfg.vocab_size, eos_id, pad_id)
  validation.check_rng(rng)
  return _steered_decode(model, params, jnp.asarray(prompts_BxP), jnp.asarray(prompt_lens_B),
                         rng, steering=steering, max_new_tokens=int(max_new_tokens),
                         eos_id=None if eos_id is None else int(eos_id), pad_id=int(pad_id))


def check_steering(model, steering):
  """The config with every target checked against its attribute (catrans.validation) and a
  class target normalised to an int, so Target('a', 1.0) and Target('a', 1) steer alike and
  share one compilation."""
  if not isinstance(steering, SteeringConfig):
    raise TypeError(f"steering must be a SteeringConfig, got {type(steering).__name__}")
  return dataclasses.replace(steering, targets=validation.check_targets(model, steering.targets))


@functools.partial(jax.jit, static_argnames=("model", "steering", "max_new_tokens", "eos_id",
                                             "pad_id"))
def _steered_decode(model, params, prompts_BxP, prompt_lens_B, rng, *,
                    steering: SteeringConfig, max_new_tokens: int, eos_id: int | None = None,
                    pad_id: int = 0) -> Decoded:
  b, p = prompts_BxP.shape
  names = tuple(t.name for t in steering.targets)
  s = p + max_new_tokens
  slots = jnp.arange(s)
  pl = prompt_lens_B.astype(jnp.int32)
  rows = jnp.arange(p)
  pmask = (slots[None, None] <= rows[None, :, None]) & (
      (slots[None, None] < pl[:, None, None]) | (slots[None, None] == rows[None, :, None]))
  cache = init_cat_cache(model.cfg, model.cat, b, s)
  positions = jnp.broadcast_to(rows.astype(jnp.int32), (b, p))
  out = model.apply({"params": params}, prompts_BxP, positions, pmask, cache=cache,
                    all_tokens=bool(names))
  bi = jnp.arange(b)
  logits = out.logits[bi, pl - 1]
  attrs = {n: out.attributes[n][bi, pl - 1] for n in names}

  def step(carry, i):
    cache, logits, attrs, done = carry
    tok, est = choose_token(model, logits, attrs, jax.random.fold_in(rng, i), steering)
    tok = jnp.where(done, pad_id, tok)
    mask = (slots[None] < pl[:, None]) | ((slots[None] >= p) & (slots[None] <= p + i))
    o = model.apply({"params": params}, tok[:, None], (pl + i)[:, None], mask[:, None],
                    cache=cache, all_tokens=bool(names))
    new_done = done | ((tok == eos_id) if eos_id is not None else False)
    new_attrs = {n: o.attributes[n][:, 0] for n in names}
    return (o.cache, o.logits[:, 0], new_attrs, new_done), (tok, est, ~done)

  (_, _, _, _), (toks, ests, live) = jax.lax.scan(
      step, (out.cache, logits, attrs, jnp.zeros((b,), bool)), jnp.arange(max_new_tokens))
  new = toks.T
  return Decoded(jnp.concatenate([prompts_BxP, new], axis=1), new,
                 live.T.sum(-1).astype(jnp.int32), ests.T)
