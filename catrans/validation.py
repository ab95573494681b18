"""The input checks of catrans's public API, in one place. Every error names the argument,
its value and the valid range or dtype (ValueError for a bad array dtype, shape or value,
TypeError for a scalar of the wrong type, e.g. a float where an integer is needed); nothing is clamped or cast silently.

The entry points (inference.estimate / observed_q / counterfactuals, steering.steered_decode,
search.decode, backtrack.backtrack_decode, Transformer / CATModel __call__) call these on the
host, before jit. Types, dtypes and shapes are always checked; value checks (ids, lengths,
positions, hyperparameters) run only on concrete values: a traced value cannot be read, so
inside jit they cost nothing and check nothing. Dtypes are read before any conversion, so an
int64 id of 2**32 + 4 is rejected rather than wrapped to 4 by a cast to int32.

seqmatch never imports catrans, so it keeps its own copy of the few generic helpers
(seqmatch/checks.py)."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from catrans.attention import AttentionMask

_INT32 = (-2 ** 31, 2 ** 31 - 1)


def is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


# ----------------------------------------------------------------------------- scalars
def _is_int(value) -> bool:
  # bool is an int subclass in Python, but True as a class id or a length is a bug.
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _interval(lo, hi, lo_open=False, hi_open=False) -> str:
  left = "(" if lo_open or lo is None else "["
  right = ")" if hi_open or hi is None else "]"
  return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def check_int(value, name: str, lo=None, hi=None) -> int:
  """An integer (Python or numpy, not bool, not a float such as 3.0) in [lo, hi]."""
  if not _is_int(value):
    raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
  if (lo is not None and value < lo) or (hi is not None and value > hi):
    raise ValueError(f"{name} = {value} is outside {_interval(lo, hi)}")
  return int(value)


def check_optional_int(value, name: str, lo=None, hi=None):
  return None if value is None else check_int(value, name, lo, hi)


def check_positive(value, name: str) -> int:
  """An integer >= 1."""
  return check_int(value, name, lo=1)


def check_number(value, name: str, lo=None, hi=None, *, lo_open=False, hi_open=False):
  """A finite real number (not bool) in the interval; a tracer passes unread."""
  if isinstance(value, jax.core.Tracer):
    return value
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
  v = float(value)
  if not math.isfinite(v):
    raise ValueError(f"{name} must be finite, got {value}")
  if ((lo is not None and (v <= lo if lo_open else v < lo))
      or (hi is not None and (v >= hi if hi_open else v > hi))):
    raise ValueError(f"{name} = {value} is outside {_interval(lo, hi, lo_open, hi_open)}")
  return value


def check_finite_number(value, name: str):
  return check_number(value, name)


def check_probability(value, name: str, *, allow_zero: bool = False):
  """A number in (0, 1] ([0, 1] with allow_zero)."""
  return check_number(value, name, 0.0, 1.0, lo_open=not allow_zero)


def check_choice(value, name: str, choices):
  if value not in choices:
    raise ValueError(f"{name} = {value!r}; choose from {tuple(choices)}")
  return value


def check_bool(value, name: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be True or False, got {value!r}")
  return bool(value)


# ----------------------------------------------------------------------------- arrays
def _dtype_and_shape(x, name):
  if hasattr(x, "dtype") and hasattr(x, "shape"):
    return x.dtype, tuple(x.shape)
  try:
    arr = np.asarray(x)
  except (ValueError, TypeError) as e:   # ragged nested lists
    raise ValueError(f"{name} is not a rectangular array: {e}") from None
  if arr.dtype == object:
    raise ValueError(f"{name} must be a numeric array, got {type(x).__name__} of objects")
  return arr.dtype, arr.shape


def check_shape(shape, expected, name: str):
  """expected: a tuple whose None entries match any size."""
  if len(shape) != len(expected) or any(e is not None and s != e
                                        for s, e in zip(shape, expected)):
    want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
    raise ValueError(f"{name} must have shape {want}, got {tuple(shape)}")


def _first_bad(arr, bad, name, what):
  idx = tuple(int(i) for i in np.argwhere(bad)[0])
  raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {arr[idx].item()} is outside {what}")


def check_int_array(x, name: str, *, shape=None, lo=None, hi=None):
  """An integer array (never float or bool: they would be truncated or read as ids) of the
  given shape, values in [lo, hi) when concrete and within int32 (what the model reads).
  Returns the shape."""
  dtype, sh = _dtype_and_shape(x, name)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {dtype}")
  if shape is not None:
    check_shape(sh, shape, name)
  if is_concrete(x) and np.prod(sh, dtype=np.int64):
    arr = np.asarray(x)
    lo_, hi_ = (_INT32[0] if lo is None else lo), (_INT32[1] + 1 if hi is None else hi)
    bad = (arr < lo_) | (arr >= hi_)
    if bad.any():
      _first_bad(arr, bad, name, f"[{lo_}, {hi_})")
  return sh


def check_bool_array(x, name: str, *, shape=None):
  """A bool array (a float or int mask is an error: which values mean True is a guess)."""
  dtype, sh = _dtype_and_shape(x, name)
  if not jnp.issubdtype(dtype, jnp.bool_):
    raise ValueError(f"{name} must be a bool array, got dtype {dtype}")
  if shape is not None:
    check_shape(sh, shape, name)
  return sh


def check_rng(rng, name: str = "rng"):
  """A PRNG key: jax.random.PRNGKey (uint32 [2]) or jax.random.key (a typed scalar key)."""
  dtype, sh = getattr(rng, "dtype", None), getattr(rng, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and sh == ():
    return
  if dtype == jnp.uint32 and tuple(sh) == (2,):
    return
  raise TypeError(f"{name} must be a PRNG key (jax.random.PRNGKey(seed)), got "
                  f"{type(rng).__name__} dtype {dtype} shape {sh}")


# ----------------------------------------------------------------------------- model inputs
def check_tokens(tokens, vocab_size: int, name: str = "tokens_BxL", allow_empty=False,
                 max_len: int | None = None):
  """[B, L] integer ids in [0, vocab_size); L <= max_len when given. Returns (B, L)."""
  sh = check_int_array(tokens, name, shape=(None, None), lo=0, hi=vocab_size)
  if not allow_empty and 0 in sh:
    raise ValueError(f"{name} is empty (shape {sh})")
  if max_len is not None and sh[1] > max_len:
    raise ValueError(f"{name} has length {sh[1]} > the model's max_len {max_len}")
  return sh


def check_tap_layer(cfg, tap_layer, name: str = "tap_layer"):
  """None, or a block count in [1, cfg.num_layers] of an unrolled trunk (a scanned one has
  no per-block state to read)."""
  if tap_layer is None:
    return None
  k = check_int(tap_layer, name, 1, cfg.num_layers)
  if cfg.scan_layers:
    raise ValueError(f"{name} = {k} reads one block's state; it needs scan_layers=False")
  return k


def check_trunk_inputs(cfg, tokens_BxL, positions_BxL=None, mask=None, segment_ids_BxL=None,
                       cache=None):
  """What Transformer / CATModel __call__ accept: ids in the vocabulary; without a cache at
  most max_len of them; int positions [B, L] in [0, max_len); a bool mask [B or 1, L, S] or
  [L, S] (S = L, or the cache length), or a catrans.attention.AttentionMask; int segment ids [B, L] (not with a cache); with a
  concrete cache index, the new rows fit the cache. Returns (B, L)."""
  b, l = check_tokens(tokens_BxL, cfg.vocab_size,
                      max_len=cfg.max_len if cache is None else None)
  if positions_BxL is not None:
    check_int_array(positions_BxL, "positions_BxL", shape=(b, l), lo=0, hi=cfg.max_len)
  s = l
  if cache is not None:
    s = int(np.shape(cache["k"])[2])
    index = cache["index"]
    if is_concrete(index) and int(index) + l > s:
      raise ValueError(f"tokens_BxL: {l} new rows at cache index {int(index)} overflow the "
                       f"cache of length {s}")
  if isinstance(mask, AttentionMask):   # structured (resolved by a caller): its arrays
    if mask.segment_ids is not None:
      check_int_array(mask.segment_ids, "mask.segment_ids", shape=(b, l), lo=0)
    mask = mask.dense
  if mask is not None:
    sh = check_bool_array(mask, "mask")
    if sh[-2:] != (l, s) or len(sh) not in (2, 3) or (len(sh) == 3 and sh[0] not in (1, b)):
      raise ValueError(f"mask must have shape [{b}, {l}, {s}] or [{l}, {s}], got {sh}")
  if segment_ids_BxL is not None:
    if cache is not None:
      raise ValueError("segment_ids_BxL with a cache is unsupported; pass an explicit mask")
    check_int_array(segment_ids_BxL, "segment_ids_BxL", shape=(b, l), lo=0)
  return b, l


def num_classes(spec) -> int:
  return 2 if spec.kind == "binary" else spec.num_classes


def check_class(spec, target, name: str = "target", *, integral_floats: bool = False):
  """A class id of a class attribute: an integer in [0, C) (C = 2 for a binary, sigmoid or
  softmax; never a wrapped negative or a clamped overflow). For a numeric attribute: a finite
  number. integral_floats accepts 1.0 for class 1 (Target.value is typed float because it
  also holds numeric targets). Returns the class as int (numeric: as given)."""
  if spec.kind == "numeric":
    return check_number(target, name)
  if integral_floats and isinstance(target, (float, np.floating)) and float(target).is_integer():
    target = int(target)
  c = num_classes(spec)
  if not _is_int(target):
    raise TypeError(f"{name} for attribute {spec.name!r} must be an integer class id in "
                    f"[0, {c}), got {target!r}")
  if not 0 <= target < c:
    raise ValueError(f"{name} = {target} is outside the classes [0, {c}) of attribute "
                     f"{spec.name!r}")
  return int(target)


def check_attribute(model, attribute, name: str = "attribute"):
  """The spec of a named attribute (KeyError listing the attributes if unknown)."""
  if not isinstance(attribute, str):
    raise TypeError(f"{name} must be an attribute name (str), got {attribute!r}")
  return model.cat.spec(attribute)


def check_targets(model, targets, name: str = "steering.targets"):
  """Steering targets (objects with name / value, e.g. catrans.steering.Target): each names an
  attribute of the model and a class in its range (integral floats accepted: the field also
  holds numeric targets). Returns the targets with class values as ints."""
  out = []
  for i, t in enumerate(targets):
    spec = check_attribute(model, t.name, f"{name}[{i}].name")
    value = check_class(spec, t.value, f"{name}[{i}].value (Target.value)",
                        integral_floats=True)
    out.append(dataclasses.replace(t, value=value))
  return tuple(out)


def check_prompts(prompts_BxP, prompt_lens_B, vocab_size: int, max_len: int,
                  max_new_tokens: int):
  """Right-padded int prompts [B, P] in the vocabulary, int prompt_lens_B [B] in [1, P],
  max_new_tokens >= 1 and P + max_new_tokens <= max_len."""
  b, p = check_tokens(prompts_BxP, vocab_size, "prompts_BxP")
  check_positive(max_new_tokens, "max_new_tokens")
  if p + max_new_tokens > max_len:
    raise ValueError(f"prompt width {p} + max_new_tokens {max_new_tokens} exceeds the "
                     f"model's max_len {max_len}")
  check_int_array(prompt_lens_B, "prompt_lens_B", shape=(b,), lo=1, hi=p + 1)


def check_decode_ids(vocab_size: int, eos_id, pad_id):
  """eos_id (None or an id) and pad_id: integers in [0, vocab_size)."""
  check_optional_int(eos_id, "eos_id", 0, vocab_size - 1)
  check_int(pad_id, "pad_id", 0, vocab_size - 1)


def check_sampling(temperature, top_k, top_p, vocab_size: int | None = None):
  """temperature finite >= 0 (0 = greedy), top_k an integer >= 0 (0 = off), top_p in (0, 1]."""
  check_number(temperature, "temperature", lo=0.0)
  check_int(top_k, "top_k", lo=0)
  check_probability(top_p, "top_p")
