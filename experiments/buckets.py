"""data.length_buckets: a batch is cut to the smallest bucket width that holds its longest row,
so short batches run a narrower compiled train step (one compile per bucket, never more)."""
import jax
import numpy as np


def check_length_buckets(buckets, seq_len: int, objective) -> tuple[int, ...]:
  """data.length_buckets: increasing widths ending at seq_len (one compiled train step each)."""
  buckets = tuple(int(b) for b in (buckets or ()))
  if not buckets:
    return ()
  if list(buckets) != sorted(set(buckets)) or buckets[0] < 1 or buckets[-1] != seq_len:
    raise ValueError(f"data.length_buckets={buckets}: need increasing positive widths whose "
                     f"last is data.seq_len={seq_len}")
  if not getattr(objective, "supports_length_buckets", True):
    raise ValueError(f"objective {type(objective).__name__} needs the full data.seq_len in "
                     f"every batch; remove data.length_buckets")
  return buckets


def bucket_width(local_batch: dict, buckets: tuple[int, ...]) -> int:
  """The smallest bucket holding every row's last real token, agreed by all processes (their
  arrays must have one global shape)."""
  occupied = np.asarray(local_batch.get("segment_ids", local_batch["weights"])) != 0
  cols = np.flatnonzero(occupied.any(axis=0))
  longest = int(cols[-1]) + 1 if cols.size else 1
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    longest = int(np.max(multihost_utils.process_allgather(np.int32(longest))))
  return next(b for b in buckets if b >= longest)


def trim_to_bucket(local_batch: dict, buckets: tuple[int, ...]) -> dict:
  """Cuts right padding down to the batch's bucket: exact for causal models, whose outputs at
  real positions never see later (padding) positions; per-example fields are kept."""
  width = bucket_width(local_batch, buckets)
  seq_len = buckets[-1]
  return {k: (v[:, :width] if np.ndim(v) == 2 and np.shape(v)[1] == seq_len else v)
          for k, v in local_batch.items()}
