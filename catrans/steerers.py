"""Composable steerers: small pure functions of one decoding state that score every candidate
token, summed into the decoder's token score (catrans.search, catrans.backtrack).

A steerer is a frozen (hashable, so jit-static) dataclass called as

  steerer(logits_BxV, attrs, hidden_BxD, step) -> score_BxV (float32, added to log p(v|s))

  logits_BxV  the token head's logits at the current state
  attrs       {attribute name: [B, V, K]} CAT outputs for every candidate next token (only the
              attributes listed in `steerer.attributes` are guaranteed to be present)
  hidden_BxD  the trunk's hidden state at the current state
  step        number of new tokens already in the state: an int32 scalar or [B]

A mask is a score of sampling.NEG (-1e30) on the forbidden tokens; NEG rather than -inf so a
sum of several masks stays finite and softmax / top-k never see NaN.

Provided: AttributeTarget (log P(a = class)), NumericTarget (Gaussian log-likelihood of a value,
or minus the squared error of the mean), NumericBand (log P(lo <= a <= hi) under the Gaussian
head), BanTokens, MinNewTokens (no EOS before n new tokens), Scaled and combine (weighted sums).
"""
import dataclasses
import math

import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from catrans import attributes as attr_lib
from catrans import validation
from catrans.attributes import AttributeSpec
from catrans.sampling import NEG


class Steerer:
  """Base: `attributes` names the CAT outputs the steerer reads (the decoder computes the
  [B, V, K] tables only for those: they cost a V x K head per step)."""
  attributes: tuple = ()

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    raise NotImplementedError

  def __add__(self, other):
    return combine(self, other)

  def __mul__(self, weight: float):
    return Scaled(self, float(weight))

  __rmul__ = __mul__


def _check_numeric(spec: AttributeSpec, what: str):
  if spec.kind != "numeric":
    raise ValueError(f"{what} needs a numeric attribute; {spec.name!r} is {spec.kind}")


@dataclasses.dataclass(frozen=True)
class AttributeTarget(Steerer):
  """weight * log P(a = value | s, v) for a class attribute (categorical, binary, registered)."""
  spec: AttributeSpec
  value: int = 1
  weight: float = 1.0

  def __post_init__(self):
    if self.spec.kind == "numeric":
      raise ValueError(f"{self.spec.name!r} is numeric: use NumericTarget or NumericBand")
    # A class in range, stored as an int (0.5 or 2 on a binary must not become 0 or 1).
    object.__setattr__(self, "value", validation.check_class(
        self.spec, self.value, "AttributeTarget.value", integral_floats=True))
    validation.check_finite_number(self.weight, "AttributeTarget.weight")

  @property
  def attributes(self):
    return (self.spec.name,)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    return self.weight * attr_lib.log_prob_of_target(self.spec, attrs[self.spec.name],
                                                     int(self.value))


@dataclasses.dataclass(frozen=True)
class NumericTarget(Steerer):
  """weight * log N(value; mean_v, var_v) ('likelihood') or -weight * (mean_v - value)^2
  ('mean': ignores the head's uncertainty)."""
  spec: AttributeSpec
  value: float
  weight: float = 1.0
  mode: str = "likelihood"

  def __post_init__(self):
    _check_numeric(self.spec, "NumericTarget")
    validation.check_finite_number(self.value, "NumericTarget.value")
    validation.check_finite_number(self.weight, "NumericTarget.weight")
    if self.mode not in ("likelihood", "mean"):
      raise ValueError(f"NumericTarget.mode={self.mode!r}; choose likelihood|mean")

  @property
  def attributes(self):
    return (self.spec.name,)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    return self.weight * attr_lib.log_prob_of_target(self.spec, attrs[self.spec.name],
                                                     float(self.value), self.mode)


def log_prob_in_band(mean, logvar, lo: float, hi: float):
  """log P(lo <= a <= hi) for a ~ N(mean, exp(logvar)), stable in both tails: with
  z = (bound - mean) / sd, log(Phi(z_hi) - Phi(z_lo)) is computed on the side of the mean
  where the larger CDF is not close to 1 (Phi(z_hi) - Phi(z_lo) = Phi(-z_lo) - Phi(-z_hi))."""
  sd = jnp.exp(0.5 * logvar)
  # |z| <= 1e6 keeps the score finite (>= -5e11, far above a mask's NEG) for a head that is
  # very sure of a value far from the band; beyond that the ordering no longer matters.
  z_lo = jnp.clip((lo - mean) / sd, -1e6, 1e6)
  z_hi = jnp.clip((hi - mean) / sd, -1e6, 1e6)
  right = z_lo > 0                       # the band lies right of the mean: mirror it
  a = jnp.where(right, -z_hi, z_lo)      # a < b, and b <= |...| keeps Phi(b) away from 1
  b = jnp.where(right, -z_lo, z_hi)
  la, lb = log_ndtr(a), log_ndtr(b)
  # log(Phi(b) - Phi(a)) = lb + log1p(-exp(la - lb)).
  frac = -jnp.expm1(jnp.minimum(la - lb, 0.0))
  exact = lb + jnp.log(jnp.maximum(frac, 1e-30))
  # A band much narrower than sd: the difference underflows, but then the mass is the
  # density at the midpoint times the width (relative error ~ (width / sd)^2 < 1e-6).
  z_mid = 0.5 * (z_lo + z_hi)
  narrow = math.log(hi - lo) - 0.5 * logvar - 0.5 * z_mid ** 2 - 0.5 * math.log(2 * math.pi)
  return jnp.where(frac < 1e-6, narrow, exact)


@dataclasses.dataclass(frozen=True)
class NumericBand(Steerer):
  """weight * log P(lo <= a <= hi | s, v) under the numeric head's Gaussian: a target band
  rather than a point (any value inside is equally good)."""
  spec: AttributeSpec
  lo: float
  hi: float
  weight: float = 1.0

  def __post_init__(self):
    _check_numeric(self.spec, "NumericBand")
    validation.check_finite_number(self.lo, "NumericBand.lo")
    validation.check_finite_number(self.hi, "NumericBand.hi")
    validation.check_finite_number(self.weight, "NumericBand.weight")
    if not self.lo < self.hi:
      raise ValueError(f"NumericBand needs lo < hi, got [{self.lo}, {self.hi}]")

  @property
  def attributes(self):
    return (self.spec.name,)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    out = attrs[self.spec.name].astype(jnp.float32)
    return self.weight * log_prob_in_band(out[..., 0], out[..., 1], self.lo, self.hi)


@dataclasses.dataclass(frozen=True)
class BanTokens(Steerer):
  """A mask: the listed token ids are never chosen."""
  ids: tuple

  def __post_init__(self):
    for i, v in enumerate(self.ids):
      validation.check_int(v, f"BanTokens.ids[{i}]", lo=0)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    banned_V = jnp.isin(jnp.arange(logits_BxV.shape[-1]), jnp.asarray(self.ids, jnp.int32))
    return jnp.broadcast_to(jnp.where(banned_V, NEG, 0.0), logits_BxV.shape).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class MinNewTokens(Steerer):
  """A mask on EOS while fewer than n new tokens have been produced (reads `step`)."""
  eos_id: int
  n: int

  def __post_init__(self):
    validation.check_int(self.eos_id, "MinNewTokens.eos_id", lo=0)
    validation.check_int(self.n, "MinNewTokens.n", lo=0)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    early = jnp.broadcast_to(jnp.asarray(step) < self.n, logits_BxV.shape[:1])
    is_eos = jnp.arange(logits_BxV.shape[-1]) == self.eos_id
    return jnp.where(early[:, None] & is_eos[None], NEG, 0.0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Scaled(Steerer):
  inner: Steerer
  weight: float

  def __post_init__(self):
    validation.check_finite_number(self.weight, "Scaled.weight")

  @property
  def attributes(self):
    return self.inner.attributes

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    return self.weight * self.inner(logits_BxV, attrs, hidden_BxD, step)


@dataclasses.dataclass(frozen=True)
class Combined(Steerer):
  parts: tuple

  @property
  def attributes(self):
    names = []
    for p in self.parts:
      names += [n for n in p.attributes if n not in names]
    return tuple(names)

  def __call__(self, logits_BxV, attrs, hidden_BxD, step):
    total = jnp.zeros(logits_BxV.shape, jnp.float32)
    for p in self.parts:
      total = total + p(logits_BxV, attrs, hidden_BxD, step)
    return total


def combine(*steerers) -> Steerer:
  """The sum of the steerers' scores (nested combinations are flattened; None is skipped).
  Weights live in each steerer (its `weight` field, or Scaled / `w * steerer`)."""
  parts = []
  for s in steerers:
    if s is None:
      continue
    parts += list(s.parts) if isinstance(s, Combined) else [s]
  return Combined(tuple(parts))


def none() -> Steerer:
  """The empty steerer: score 0 (plain decoding)."""
  return Combined(())


def target(model, name: str, value, weight: float = 1.0, *, band=None,
           numeric_mode: str = "likelihood") -> Steerer:
  """A steerer for attribute `name` of a CATModel: AttributeTarget for classes, NumericTarget
  for a numeric value, NumericBand when band=(lo, hi) is given."""
  spec = model.cat.spec(name)
  if band is not None:
    return NumericBand(spec, float(band[0]), float(band[1]), weight)
  if spec.kind == "numeric":
    return NumericTarget(spec, float(value), weight, numeric_mode)
  return AttributeTarget(spec, value, weight)   # checks the class (no int() truncation)


def from_targets(model, targets, numeric_mode: str = "likelihood") -> Steerer:
  """The weighted rule of catrans.steering as a steerer: sum_j gamma_j log P(a_j = target_j)."""
  return combine(*(target(model, t.name, t.value, t.gamma, numeric_mode=numeric_mode)
                   for t in targets))

