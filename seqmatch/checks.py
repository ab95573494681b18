"""Input checks of seqmatch's public API (build_one_pass, sequencematch_loss, generate, ...).

seqmatch must not import catrans, so these few generic helpers mirror catrans.validation.
Every error names the argument, its value and the valid range or dtype: ValueError for an
array's dtype, shape or values or a number out of range, TypeError for a scalar of the wrong
type. Dtypes are read before any conversion (an int64 id of 2**32 + 4 is an error, never
wrapped to 4 by a cast to int32); values are read only when concrete (not under jit)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

_INT32 = (-2 ** 31, 2 ** 31)


def is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _interval(lo, hi, lo_open=False, hi_open=False) -> str:
  left = "(" if lo_open or lo is None else "["
  right = ")" if hi_open or hi is None else "]"
  return f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"


def is_int(value) -> bool:
  # bool is an int subclass in Python, but True as an id or a length is a bug.
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, lo=None, hi=None) -> int:
  """An integer (not bool, not 3.0) in [lo, hi]."""
  if not is_int(value):
    raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
  if (lo is not None and value < lo) or (hi is not None and value > hi):
    raise ValueError(f"{name} = {value} is outside {_interval(lo, hi)}")
  return int(value)


def check_number(value, name: str, lo=None, hi=None, *, lo_open=False, hi_open=False):
  """A finite real number in the interval; a tracer passes unread."""
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


def check_bool(value, name: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be True or False, got {value!r}")
  return bool(value)


def dtype_and_shape(x, name):
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


def check_int_array(x, name: str, *, shape=None, lo=None, hi=None, where=None):
  """An integer array (float and bool are errors, not truncated) of the shape, values in
  [lo, hi) and in int32 when concrete (only where `where` is True, if given). Returns the
  shape."""
  dtype, sh = dtype_and_shape(x, name)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {dtype}")
  if shape is not None:
    check_shape(sh, shape, name)
  if is_concrete(x) and np.prod(sh, dtype=np.int64):
    arr = np.asarray(x)
    lo_, hi_ = (_INT32[0] if lo is None else lo), (_INT32[1] if hi is None else hi)
    bad = (arr < lo_) | (arr >= hi_)
    if where is not None:
      bad &= where
    if bad.any():
      idx = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {arr[idx].item()} is outside "
                       f"[{lo_}, {hi_})")
  return sh


def check_bool_array(x, name: str, *, shape=None):
  """A bool array (a float mask is an error: which values mean True would be a guess)."""
  dtype, sh = dtype_and_shape(x, name)
  if not jnp.issubdtype(dtype, jnp.bool_):
    raise ValueError(f"{name} must be a bool array, got dtype {dtype}")
  if shape is not None:
    check_shape(sh, shape, name)
  return sh


def check_float_array(x, name: str, *, ndim=None):
  """A floating-point array (integer logits are a caller bug, not something to cast)."""
  dtype, sh = dtype_and_shape(x, name)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"{name} must be a float array, got dtype {dtype}")
  if ndim is not None and len(sh) != ndim:
    raise ValueError(f"{name} must have {ndim} dimensions, got shape {sh}")
  return sh
