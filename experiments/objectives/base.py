"""The contract between the trainer and an objective.

The trainer owns sharding, optimisation, checkpoints and logging; an objective owns the
model, its parameters and the loss. Everything an objective returns is a pure function of
its inputs so the trainer can jit it with explicit shardings."""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from catrans.config import ModelConfig

Batch = Mapping[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


class Objective:
  """Subclass and override `make_model` and `loss`; the rest has sensible defaults.

  Attributes set here: `config` (the whole experiment ConfigDict), `task`, `model_config`
  (catrans ModelConfig built from `config.model` with the task's vocabulary size)."""

  def __init__(self, config, task):
    self.config = config
    self.task = task
    model = dict(config.model)
    model.setdefault("vocab_size", task.tokenizer.vocab_size)
    if model.get("vocab_size") in (None, 0):
      model["vocab_size"] = task.tokenizer.vocab_size
    self.model_config = ModelConfig.from_dict(model)
    self.model = self.make_model()

  # --- model -----------------------------------------------------------------------------
  def make_model(self) -> nn.Module:
    raise NotImplementedError

  def dummy_batch(self, batch_size: int, seq_len: int) -> dict:
    return {"inputs": jnp.zeros((batch_size, seq_len), jnp.int32),
            "positions": jnp.zeros((batch_size, seq_len), jnp.int32)}

  def init_params(self, rng: jax.Array) -> Any:
    """Boxed (nn.Partitioned) parameters: the trainer reads their logical axis names."""
    b = self.dummy_batch(1, min(8, self.model_config.max_len))
    return self.model.init(rng, b["inputs"], b["positions"])["params"]

  def trainable_mask(self, params) -> Any | None:
    """A pytree of bools like params (True = trained) or None for all trainable."""
    return None

  def prepare_batch(self, local_batch: dict, step: int) -> dict:
    """Host-side (numpy) transformation of this process's rows before they go to devices,
    e.g. noise augmentation. Must be deterministic in (batch, step, process) so a resumed
    run sees the same batches; eval batches get negative steps."""
    return local_batch

  # --- loss ------------------------------------------------------------------------------
  def loss(self, params, batch: Batch, rng: jax.Array, step: jnp.ndarray
           ) -> tuple[jnp.ndarray, Metrics]:
    """Scalar loss to minimise and scalar metrics (means over the global batch)."""
    raise NotImplementedError

  def eval_metrics(self, params, batch: Batch) -> Metrics:
    """Metrics on an eval batch; sums are not needed, the trainer averages over batches
    weighted by `metrics['weight']` when present."""
    _, metrics = self.loss(params, batch, jax.random.PRNGKey(0), jnp.zeros((), jnp.int32))
    return metrics
