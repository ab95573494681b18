"""CAT inference in one forward pass (no change to the input), batched and jit-compiled.

Row t - 1 of the attribute branch conditions on s_{t-1}; its entry at v = x_t is
P(a | s_{t-1}, x_t) = P(a | s_t) =: q_t. The same row gives every alternative v'
(counterfactuals) and the value V(s_{t-1}) = sum_v p(v | s_{t-1}) P(a | s_{t-1}, v).
Position 0 has no row before it: sequences start with a BOS (or prompt) token, and every
estimate below is for t >= 1 (index t of the outputs; index 0 is the prior V(s_0) at row 0
for 'value' and NaN-free zeros elsewhere)."""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from catrans import attributes as attr_lib
from catrans import validation


class Estimates(NamedTuple):
  q: jnp.ndarray           # [B, L] q_t = P(a=target | s_t) (E[a | s_t] for numeric); q_0 = V(s_0)
  value: jnp.ndarray       # [B, L] V(s_t) = sum_v p(v|s_t) Q(s_t, v)
  advantage: jnp.ndarray   # [B, L] c_t = Q(s_{t-1}, x_t) - V(s_{t-1}); 0 at t = 0
  difference: jnp.ndarray  # [B, L] q_t - q_{t-1}; 0 at t = 0
  token_probs: jnp.ndarray  # [B, L] p(x_t | s_{t-1}); 1 at t = 0


def _q_table(spec, attrs_BxLxVxK, target):
  """Q(s_t, v) for every candidate: [B, L, V] (or [B, L] from outputs at given tokens)."""
  return attr_lib.expected_value(spec, attrs_BxLxVxK, target)


def _check_sequences(model, tokens_BxL, positions_BxL, mask, attribute, target, caller):
  """The checks shared by estimate / observed_q / counterfactuals (module validation): the
  trunk's inputs (ids, L <= max_len, positions, mask), L >= 2, a known attribute and a
  target class in its range. Returns the target as an int (or None)."""
  validation.check_trunk_inputs(model.cfg, tokens_BxL, positions_BxL, mask)
  if np.shape(tokens_BxL)[1] < 2:
    raise ValueError(f"{caller} needs tokens_BxL of at least 2 tokens (BOS + one token), got "
                     f"shape {np.shape(tokens_BxL)}")
  spec = validation.check_attribute(model, attribute)
  if target is None or spec.kind == "numeric":   # numeric: documented as ignored
    return None
  return validation.check_class(spec, target, "target")


def _arrays(*xs):
  """Checked inputs as jax arrays (a nested list would reach jit as a pytree of scalars)."""
  return tuple(None if x is None else jnp.asarray(x) for x in xs)


def estimate(model, params, tokens_BxL, positions_BxL=None, mask=None, *, attribute: str,
             target: int | None = None) -> Estimates:
  """q_t, V(s_t), the advantage and the difference credit for every position.

  tokens_BxL: int ids, starting with BOS (or a prompt); attribute: which CAT attribute;
  target: the class whose probability is reported (default: the last class, e.g.
  'positive' / 'win'); ignored for numeric attributes (expected value). Returns Estimates of
  [B, L] arrays.

  Checked on the host before jit (catrans.validation), errors naming the argument:
  tokens_BxL integer ids [B, L] in [0, vocab_size), 2 <= L <= max_len (the dtype is read
  before any cast: an int64 id beyond int32 is an error, not a wrapped id); positions_BxL
  integer [B, L] in [0, max_len); mask bool [B, L, L] or [L, L]; attribute a name of the
  model; target None or an integer class in [0, C) (C = 2 for any binary; never wrapped or
  clamped)."""
  target = _check_sequences(model, tokens_BxL, positions_BxL, mask, attribute, target,
                            "estimate")
  tokens_BxL, positions_BxL, mask = _arrays(tokens_BxL, positions_BxL, mask)
  return _estimate(model, params, tokens_BxL, positions_BxL, mask, attribute=attribute,
                   target=target)


@functools.partial(jax.jit, static_argnames=("model", "attribute", "target"))
def _estimate(model, params, tokens_BxL, positions_BxL=None, mask=None, *, attribute: str,
              target: int | None = None) -> Estimates:
  spec = model.cat.spec(attribute)
  out = model.apply({"params": params}, tokens_BxL, positions_BxL, mask, all_tokens=True)
  q_all = _q_table(spec, out.attributes[attribute], target)          # [B, L, V]
  p_all = jax.nn.softmax(out.logits.astype(jnp.float32), axis=-1)   # [B, L, V]
  value = (p_all * q_all).sum(-1)                                    # V(s_t)
  nxt = tokens_BxL[:, 1:, None]
  q_next = jnp.take_along_axis(q_all[:, :-1], nxt, axis=-1)[..., 0]   # q_t for t >= 1
  p_next = jnp.take_along_axis(p_all[:, :-1], nxt, axis=-1)[..., 0]
  q = jnp.concatenate([value[:, :1], q_next], axis=1)
  adv = jnp.concatenate([jnp.zeros_like(value[:, :1]), q_next - value[:, :-1]], axis=1)
  diff = jnp.concatenate([jnp.zeros_like(value[:, :1]), q[:, 1:] - q[:, :-1]], axis=1)
  tok_p = jnp.concatenate([jnp.ones_like(value[:, :1]), p_next], axis=1)
  return Estimates(q, value, adv, diff, tok_p)


def observed_q(model, params, tokens_BxL, positions_BxL=None, mask=None, *, attribute: str,
               target: int | None = None):
  """q_t = P(a=target | s_t) (E[a | s_t] for numeric) for t = 1..L-1: [B, L-1], equal to
  estimate(...).q[:, 1:]. Reads the head at the observed next tokens only and skips the token
  head, so memory is O(B L K) instead of estimate's O(B L V K) (a 49K-token vocabulary over
  1K positions is 49M entries per sequence and class there). No value, so no credit: use
  estimate for those. Checks: as estimate."""
  target = _check_sequences(model, tokens_BxL, positions_BxL, mask, attribute, target,
                            "observed_q")
  tokens_BxL, positions_BxL, mask = _arrays(tokens_BxL, positions_BxL, mask)
  return _observed_q(model, params, tokens_BxL, positions_BxL, mask, attribute=attribute,
                     target=target)


@functools.partial(jax.jit, static_argnames=("model", "attribute", "target"))
def _observed_q(model, params, tokens_BxL, positions_BxL=None, mask=None, *, attribute: str,
                target: int | None = None):
  # Row t-1 read at x_t; the last row has no next token, so feed a dummy one and drop it.
  nxt_BxL = jnp.concatenate([tokens_BxL[:, 1:], tokens_BxL[:, -1:]], axis=1)
  out = model.apply({"params": params}, tokens_BxL, positions_BxL, mask,
                    next_tokens_BxL=nxt_BxL, return_logits=False)
  return _q_table(model.cat.spec(attribute), out.attributes[attribute], target)[:, :-1]


class Counterfactuals(NamedTuple):
  tokens: jnp.ndarray      # [B, K] alternative tokens v'
  q: jnp.ndarray           # [B, K] P(a=target | s_{t-1}, v')
  token_probs: jnp.ndarray  # [B, K] p(v' | s_{t-1})
  actual_q: jnp.ndarray    # [B] P(a=target | s_t) for the actual x_t
  delta: jnp.ndarray       # [B, K] q - actual_q


def counterfactuals(model, params, tokens_BxL, position_B, *, attribute: str,
                    alternatives_BxK=None, top_k: int = 5, target: int | None = None,
                    positions_BxL=None, mask=None) -> Counterfactuals:
  """What if x_t (t = position_B >= 1) had been another token? For the given alternatives
  [B, K], or the top_k tokens by p(v | s_{t-1}). Returns Counterfactuals ([B, K] / [B]).

  Checked as estimate, and: position_B integer [B] in [1, L); alternatives_BxK integer ids [B, K] in
  the vocabulary (the same B as tokens_BxL), else top_k an integer in [1, vocab_size]."""
  target = _check_sequences(model, tokens_BxL, positions_BxL, mask, attribute, target,
                            "counterfactuals")
  b, l = np.shape(tokens_BxL)
  validation.check_int_array(position_B, "position_B", shape=(b,), lo=1, hi=l)
  if alternatives_BxK is not None:
    validation.check_tokens(alternatives_BxK, model.cfg.vocab_size, "alternatives_BxK")
    validation.check_shape(np.shape(alternatives_BxK), (b, None), "alternatives_BxK")
  else:
    top_k = validation.check_int(top_k, "top_k", 1, model.cfg.vocab_size)
  tokens_BxL, position_B, alternatives_BxK, positions_BxL, mask = _arrays(
      tokens_BxL, position_B, alternatives_BxK, positions_BxL, mask)
  return _counterfactuals(model, params, tokens_BxL, position_B, attribute=attribute,
                          alternatives_BxK=alternatives_BxK, top_k=top_k, target=target,
                          positions_BxL=positions_BxL, mask=mask)


@functools.partial(jax.jit, static_argnames=("model", "attribute", "target", "top_k"))
def _counterfactuals(model, params, tokens_BxL, position_B, *, attribute: str,
                     alternatives_BxK=None, top_k: int = 5, target: int | None = None,
                     positions_BxL=None, mask=None) -> Counterfactuals:
  spec = model.cat.spec(attribute)
  out = model.apply({"params": params}, tokens_BxL, positions_BxL, mask, all_tokens=True)
  b = tokens_BxL.shape[0]
  row = jnp.asarray(position_B) - 1
  q_row = _q_table(spec, out.attributes[attribute][jnp.arange(b), row], target)   # [B, V]
  p_row = jax.nn.softmax(out.logits[jnp.arange(b), row].astype(jnp.float32), -1)  # [B, V]
  if alternatives_BxK is None:
    _, alternatives_BxK = jax.lax.top_k(p_row, top_k)
  q = jnp.take_along_axis(q_row, alternatives_BxK, axis=-1)
  actual = q_row[jnp.arange(b), tokens_BxL[jnp.arange(b), row + 1]]
  return Counterfactuals(alternatives_BxK, q,
                         jnp.take_along_axis(p_row, alternatives_BxK, axis=-1), actual,
                         q - actual[:, None])
