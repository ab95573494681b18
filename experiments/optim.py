"""Optimizer and learning-rate schedule from `config.optimizer`."""
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
  import jax
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
    import jax
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask)
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  return tx, schedule
