"""Optimizer and learning-rate schedule from `config.optimizer`."""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine", "linear", "rsqrt")


def learning_rate_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then the named decay to end_lr_fraction x peak."""
  peak = opt_config.learning_rate
  warmup = min(int(opt_config.get("warmup_steps", 0)), max(total_steps - 1, 0))
  end = peak * opt_config.get("end_lr_fraction", 0.1)
  name = opt_config.get("schedule", "cosine")
  decay_steps = max(total_steps - warmup, 1)
  if name == "constant":
    decay = optax.constant_schedule(peak)
  elif name == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif name == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif name == "rsqrt":
    decay = lambda step: peak * (max(warmup, 1) / (step + max(warmup, 1))) ** 0.5
  else:
    raise ValueError(f"optimizer.schedule={name!r}; choose from {SCHEDULES}")
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _decay_mask(params):
  # No weight decay on norms, biases and other vectors: decaying them only hurts.
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(opt_config, total_steps: int, trainable_mask=None):
  """AdamW (or SGD / Adafactor) with global-norm clipping; frozen leaves get no update."""
  schedule = learning_rate_schedule(opt_config, total_steps)
  name = opt_config.get("name", "adamw")
  if name == "adamw":
    tx = optax.adamw(schedule, b1=opt_config.get("b1", 0.9), b2=opt_config.get("b2", 0.95),
                     eps=opt_config.get("eps", 1e-8),
                     weight_decay=opt_config.get("weight_decay", 0.0), mask=_decay_mask)
  elif name == "sgd":
    tx = optax.sgd(schedule, momentum=opt_config.get("momentum", 0.9))
  elif name == "adafactor":
    tx = optax.adafactor(schedule)
  else:
    raise ValueError(f"optimizer.name={name!r}; choose from adamw, sgd, adafactor")
  clip = opt_config.get("grad_clip", 1.0)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  if trainable_mask is not None:
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask)
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  decay = float(opt_config.get("ema_decay", 0.0))
  if decay:
    tx = with_params_ema(tx, decay)
  return tx, schedule


class ParamsEmaState(NamedTuple):
  inner: Any         # the wrapped optimizer's state
  count: jnp.ndarray  # int32: updates averaged so far
  ema: Any           # mirrors the params (so it is sharded and checkpointed like them)


def with_params_ema(tx: optax.GradientTransformation, decay: float):
  """tx, plus an exponential moving average of the parameters it produces, kept in the
  optimizer state. Evaluation reads it through `eval_params`. On noisy targets (sparse
  sequence-level labels) the average generalises better than the last iterate, and it
  costs one extra copy of the params, no extra pass.

  The effective decay warms up as min(decay, (1 + n) / (10 + n)) so that early averages
  are not dominated by the random initialisation."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f"optimizer.ema_decay={decay}: need 0 < decay < 1 (0 turns it off)")

  def init(params):
    return ParamsEmaState(tx.init(params), jnp.zeros((), jnp.int32),
                          jax.tree.map(lambda p: p.astype(jnp.float32), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("with_params_ema needs the params in tx.update(grads, state, params)")
    updates, inner = tx.update(updates, state.inner, params)
    n = state.count.astype(jnp.float32)
    d = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    ema = jax.tree.map(lambda e, p, u: d * e + (1.0 - d) * (p + u).astype(jnp.float32),
                       state.ema, params, updates)
    return updates, ParamsEmaState(inner, state.count + 1, ema)

  return optax.GradientTransformation(init, update)


def eval_params(params, opt_state):
  """The parameters to evaluate: the moving average when the optimizer keeps one (cast
  back to the params' dtypes), else `params`."""
  if not isinstance(opt_state, ParamsEmaState):
    return params
  return jax.tree.map(lambda e, p: e.astype(p.dtype), opt_state.ema, params)
