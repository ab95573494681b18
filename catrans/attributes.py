"""Sequence-level attributes: what each kind outputs per candidate token, its loss and its
probabilities. Labels: int class ids with -1 = unknown (categorical/binary and registered
kinds), float values with NaN = unknown (numeric).

New kinds plug in through register_kind (see AttributeKind) without editing this file."""
import dataclasses
import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from catrans import validation

KINDS = ("categorical", "binary", "numeric")


class AttributeKind(NamedTuple):
  """A user-defined attribute kind over classes (labels: int class ids, -1 = unknown; steering
  targets and the attr_acc metric treat it like a categorical).

  num_outputs(spec) -> K: the head's outputs per candidate token.
  probabilities(spec, out[..., K]) -> [..., C] class probabilities (C = spec.num_classes).
  loss(spec, out_BxLxK, labels_B) -> [B, L] (0 where the label is unknown) and
  log_prob_of_target(spec, out[..., K], target) -> [...]: optional, by default
  -log probabilities[label] and log probabilities[target]; give them for numerical
  stability. expected_value is always probabilities[..., target]."""
  num_outputs: Callable[["AttributeSpec"], int]
  probabilities: Callable[["AttributeSpec", jnp.ndarray], jnp.ndarray]
  loss: Optional[Callable] = None
  log_prob_of_target: Optional[Callable] = None


KIND_IMPLS: dict = {}   # name -> AttributeKind, filled by register_kind


def register_kind(name: str, kind: AttributeKind) -> None:
  """Makes AttributeSpec(kind=name) valid; the loss, probabilities, steering and inference
  paths then call `kind`. Built-in kinds cannot be replaced."""
  if name in KINDS:
    raise ValueError(f"{name!r} is a built-in attribute kind")
  if not isinstance(kind, AttributeKind):
    raise TypeError(f"register_kind needs an AttributeKind, got {type(kind).__name__}")
  KIND_IMPLS[name] = kind


def _custom(spec) -> Optional[AttributeKind]:
  return None if spec.kind in KINDS else KIND_IMPLS[spec.kind]


@dataclasses.dataclass(frozen=True)
class AttributeSpec:
  """One attribute of a sequence.

  kind: categorical (K classes, softmax) | binary (softmax over 2, or one sigmoid logit as in
  Director with binary_style='sigmoid') | numeric (Gaussian mean and log-variance).
  weight: its share of the attribute loss."""
  name: str
  kind: str = "categorical"
  num_classes: int = 2
  binary_style: str = "softmax"
  weight: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS and self.kind not in KIND_IMPLS:
      raise ValueError(f"attribute {self.name!r}: kind={self.kind!r}; choose from "
                       f"{KINDS + tuple(KIND_IMPLS)} (or catrans.attributes.register_kind)")
    if self.kind == "categorical" and self.num_classes < 2:
      raise ValueError(f"attribute {self.name!r}: a categorical needs >= 2 classes")
    if self.binary_style not in ("softmax", "sigmoid"):
      raise ValueError(f"attribute {self.name!r}: binary_style must be softmax|sigmoid")

  @property
  def num_outputs(self) -> int:
    if self.kind not in KINDS:
      return int(KIND_IMPLS[self.kind].num_outputs(self))
    if self.kind == "numeric":
      return 2
    if self.kind == "binary":
      return 1 if self.binary_style == "sigmoid" else 2
    return self.num_classes

  @property
  def is_sigmoid(self) -> bool:
    return self.kind == "binary" and self.binary_style == "sigmoid"

  @classmethod
  def from_dict(cls, d) -> "AttributeSpec":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown attribute keys {unknown}; known: {sorted(known)}")
    return cls(**dict(d))


def label_mask(spec: AttributeSpec, labels_B) -> jnp.ndarray:
  """True where the label is known."""
  if spec.kind == "numeric":
    return ~jnp.isnan(labels_B)
  return labels_B >= 0


def loss(spec: AttributeSpec, out_BxLxK, labels_B) -> jnp.ndarray:
  """Per-position loss [B, L] of outputs read at the observed next token; 0 where unknown."""
  known = label_mask(spec, labels_B)[:, None]
  out = out_BxLxK.astype(jnp.float32)
  custom = _custom(spec)
  if custom is not None:
    if custom.loss is not None:
      return jnp.where(known, custom.loss(spec, out, labels_B), 0.0)
    y = jnp.where(known, labels_B[:, None], 0).astype(jnp.int32)
    logp = jnp.log(jnp.maximum(custom.probabilities(spec, out), 1e-30))
    y = jnp.broadcast_to(y[..., None], logp.shape[:-1] + (1,))
    return jnp.where(known, -jnp.take_along_axis(logp, y, axis=-1)[..., 0], 0.0)
  if spec.kind == "numeric":
    y = jnp.where(known, labels_B[:, None], 0.0)
    mean, logvar = out[..., 0], out[..., 1]
    nll = 0.5 * (logvar + (y - mean) ** 2 * jnp.exp(-logvar) + math.log(2 * math.pi))
    return jnp.where(known, nll, 0.0)
  y = jnp.where(known, labels_B[:, None], 0).astype(jnp.int32)
  if spec.is_sigmoid:
    logit = out[..., 0]
    nll = jnp.logaddexp(0.0, logit) - y * logit       # BCE with logits
  else:
    logp = jax.nn.log_softmax(out, axis=-1)
    nll = -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
  return jnp.where(known, nll, 0.0)


def probabilities(spec: AttributeSpec, out_xK) -> jnp.ndarray:
  """Class probabilities [..., C] (C = 2 for any binary); for numeric: [..., 2] = (mean,
  variance)."""
  out = out_xK.astype(jnp.float32)
  if _custom(spec) is not None:
    return _custom(spec).probabilities(spec, out)
  if spec.kind == "numeric":
    return jnp.stack([out[..., 0], jnp.exp(out[..., 1])], axis=-1)
  if spec.is_sigmoid:
    p = jax.nn.sigmoid(out[..., 0])
    return jnp.stack([1.0 - p, p], axis=-1)
  return jax.nn.softmax(out, axis=-1)


def class_log_probabilities(spec: AttributeSpec, out_xK) -> jnp.ndarray:
  """log P(a = c | ...) for every class: [..., C] (class kinds only)."""
  out = out_xK.astype(jnp.float32)
  if spec.kind == "numeric":
    raise ValueError(f"attribute {spec.name!r} is numeric: it has no classes")
  if _custom(spec) is not None:
    return jnp.log(jnp.maximum(_custom(spec).probabilities(spec, out), 1e-30))
  if spec.is_sigmoid:
    return jnp.stack([jax.nn.log_sigmoid(-out[..., 0]), jax.nn.log_sigmoid(out[..., 0])], -1)
  return jax.nn.log_softmax(out, axis=-1)


def log_prob_of_target(spec: AttributeSpec, out_xK, target, numeric_mode: str = "likelihood"):
  """log P(a = target | ...) per candidate: [...]. Numeric: the Gaussian log-likelihood of
  the target value ('likelihood') or minus the squared distance of the mean ('mean')."""
  out = out_xK.astype(jnp.float32)
  custom = _custom(spec)
  if custom is not None:
    if custom.log_prob_of_target is not None:
      return custom.log_prob_of_target(spec, out, target)
    return jnp.log(jnp.maximum(custom.probabilities(spec, out)[..., target], 1e-30))
  if spec.kind == "numeric":
    mean, logvar = out[..., 0], out[..., 1]
    if numeric_mode == "mean":
      return -((mean - target) ** 2)
    return -0.5 * (logvar + (target - mean) ** 2 * jnp.exp(-logvar) + math.log(2 * math.pi))
  if spec.is_sigmoid:
    logit = out[..., 0]
    return jnp.where(target == 1, jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit))
  return jax.nn.log_softmax(out, axis=-1)[..., target]


def expected_value(spec: AttributeSpec, out_xK, target=None):
  """E[a | ...] for numeric, P(a = target) for classes (target default: the last class)."""
  out = out_xK.astype(jnp.float32)
  if spec.kind == "numeric":
    return out[..., 0]
  k = validation.check_class(spec, validation.num_classes(spec) - 1 if target is None
                             else target)
  if _custom(spec) is None and not spec.is_sigmoid and out.shape[-1] <= _UNROLLED_CLASSES:
    return _softmax_entry(out, k)
  return probabilities(spec, out)[..., k]


_UNROLLED_CLASSES = 16   # up to this many classes, _softmax_entry; beyond, jax.nn.softmax


def _softmax_entry(out_xK, k):
  """softmax(out)[..., k] from the K slices out[..., j] (same arithmetic as jax.nn.softmax).
  Why: estimate reads a [B, L, V, K] table with K = 2 or so, and XLA:CPU reduces over a
  minor axis that short slowly: the whole 16-bit estimate pass of experiments.bench.cat took
  15.2 ms with jax.nn.softmax there and 9.7 ms with this elementwise form."""
  xs = [out_xK[..., j] for j in range(out_xK.shape[-1])]
  m = functools.reduce(jnp.maximum, xs)
  return jnp.exp(xs[k] - m) / sum(jnp.exp(x - m) for x in xs)
