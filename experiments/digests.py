"""Exact checksums of everything a checkpoint holds, written at save time and checked at
restore: one sha256 per array leaf (its dtype, shape and bytes) and per JSON item.

Why exact: storage formats do not all checksum their chunks, and a flipped bit in an
optimizer moment reads back as a valid (wrong) number; sums-of-squares fingerprints miss
most of these. Hashing the full logical value (not the shards) keeps a checkpoint
verifiable when it is restored onto another mesh."""
import hashlib
import json

import jax
import numpy as np


def _host_value(x) -> np.ndarray:
  """The whole logical array on this host. An array spread over several processes is
  gathered (every process calls this in the same order, as for a save): a full copy per
  host, paid once per checkpoint, is the price of a digest that does not depend on how the
  array is sharded."""
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def array_digest(x) -> str:
  a = np.ascontiguousarray(_host_value(x))
  h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
  h.update(a.tobytes())
  return h.hexdigest()


def json_digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def tree_digests(prefix: str, tree) -> dict[str, str]:
  """{'prefix/<leaf path>': sha256}, e.g. 'state.opt_state[0].mu['embed']'."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {f"{prefix}{jax.tree_util.keystr(path)}": array_digest(leaf) for path, leaf in flat}


def first_mismatch(saved: dict, actual: dict, prefix: str) -> str | None:
  """The first part under `prefix` whose digest differs or is missing on either side."""
  want = {k: v for k, v in saved.items() if _under(k, prefix)}
  for key in sorted(set(want) | set(actual)):
    if want.get(key) != actual.get(key):
      return key
  return None


def _under(key: str, prefix: str) -> bool:
  return key == prefix or (key.startswith(prefix) and key[len(prefix)] in ".[")
