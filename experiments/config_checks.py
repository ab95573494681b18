"""Range checks of every numeric config value the trainer reads, run before anything is
built: a zero interval would divide by zero at the first step, a negative step count would
"finish" at once, and a negative learning rate would train uphill, all without a word."""
import math
import numbers

from experiments.preflight import PreflightError


class ConfigError(PreflightError, ValueError):
  """A config value outside its range (a ValueError for in-process callers, a preflight
  failure with exit status 3 for the CLI)."""


INF = math.inf
# key: (low, high), both inclusive
_INT = {
    "seed": (-2**63, 2**63 - 1),
    "train.steps": (1, INF), "train.log_every": (1, INF), "train.checkpoint_every": (1, INF),
    "train.eval_every": (0, INF),  # 0 = no evaluation
    "train.eval_batches": (1, INF), "train.grad_accum_steps": (1, INF),
    "train.keep_checkpoints": (1, INF), "train.max_consecutive_skips": (1, INF),
    "data.global_batch_size": (1, INF), "data.seq_len": (1, INF), "data.read_threads": (1, INF),
    "model.vocab_size": (0, INF),  # 0 = the tokenizer's
    "model.d_model": (1, INF), "model.num_layers": (1, INF), "model.num_heads": (1, INF),
    "model.num_kv_heads": (1, INF), "model.mlp_dim": (1, INF), "model.max_len": (1, INF),
    "optimizer.warmup_steps": (0, INF),
    "objective.bc_steps": (0, INF), "objective.rollouts": (0, INF),
    "objective.rollout_every": (1, INF),
}
# key: (low, high, low open?, high open?)
_FLOAT = {
    "optimizer.learning_rate": (0.0, INF, True, True),
    "optimizer.end_lr_fraction": (0.0, 1.0, False, False),
    "optimizer.weight_decay": (0.0, INF, False, True),
    "optimizer.b1": (0.0, 1.0, False, True), "optimizer.b2": (0.0, 1.0, False, True),
    "optimizer.eps": (0.0, INF, True, True),
    "optimizer.grad_clip": (0.0, INF, False, True),  # 0 = no clipping
    "optimizer.ema_decay": (0.0, 1.0, False, True),  # 0 = no moving average
    "train.peak_flops": (0.0, INF, False, True),  # 0 = measure
    "objective.p_noise": (0.0, 1.0, False, False), "objective.gamma": (0.0, 1.0, False, False),
    "objective.td_mix": (0.0, 1.0, False, False), "objective.lam": (0.0, INF, False, True),
    "objective.rollout_temperature": (0.0, INF, False, True),
}
_MESH = ("mesh.data", "mesh.fsdp", "mesh.tensor")  # -1 = the remaining devices


def _get(config, key):
  node = config
  for part in key.split("."):
    if not hasattr(node, "get") or node.get(part) is None:
      return None
    node = node.get(part)
  return node


def _interval(lo, hi, lo_open, hi_open) -> str:
  return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def errors(config) -> list[str]:
  """One line per bad value: the key, the value and the valid range."""
  out = []
  for key, (lo, hi) in _INT.items():
    v = _get(config, key)
    if v is None:
      continue
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      out.append(f"{key}={v!r}: need an integer")
    elif not lo <= v <= hi:
      out.append(f"{key}={v}: need an integer >= {lo}" if hi == INF
                 else f"{key}={v}: need an integer in [{lo}, {hi}]")
  for key, (lo, hi, lo_open, hi_open) in _FLOAT.items():
    v = _get(config, key)
    if v is None:
      continue
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
      out.append(f"{key}={v!r}: need a number")
      continue
    v = float(v)
    ok = (math.isfinite(v) and (lo < v if lo_open else lo <= v)
          and (v < hi if hi_open else v <= hi))
    if not ok:  # NaN fails every comparison, so it lands here too.
      out.append(f"{key}={v:g}: need a finite number in {_interval(lo, hi, lo_open, hi_open)}")
  for key in _MESH:
    v = _get(config, key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                          or not (v == -1 or v >= 1)):
      out.append(f"{key}={v!r}: need -1 (all remaining devices) or an integer >= 1")
  return out


def check(config):
  found = errors(config)
  if found:
    raise ConfigError("invalid config: " + "; ".join(found))
