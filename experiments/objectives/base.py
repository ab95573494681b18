"""The contract between the trainer and an objective.

The trainer owns sharding, optimisation, checkpoints and logging; an objective owns the
model, its parameters and the loss. Everything an objective returns is a pure function of
its inputs so the trainer can jit it with explicit shardings."""
import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from catrans import lora
from catrans.config import ModelConfig

RUN_PREFIX = "run:"
Batch = Mapping[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


class Objective:
  """Subclass and override `make_model` and `loss`; the rest has sensible defaults.

  Attributes set here: `config` (the whole experiment ConfigDict), `task`, `model_config`
  (catrans ModelConfig built from `config.model` with the task's vocabulary size)."""

  # Where the trunk's params sit in this objective's param tree (CAT nests it).
  trunk_path: tuple[str, ...] = ()
  # Whether batches may arrive cut to a shorter width (data.length_buckets).
  supports_length_buckets: bool = True
  # Whether the loss applies the model through `model_params` (so LoRA adapters take part).
  supports_lora: bool = False

  def __init__(self, config, task):
    self.config = config
    self.task = task
    model = dict(config.model)
    # model.lora_rank > 0: LoRA adapters on the kernels matching model.lora_targets, the
    # rest of the trunk frozen (catrans.lora); not ModelConfig fields.
    self.lora_rank = model.pop("lora_rank", 0) or 0
    self.lora_alpha = float(model.pop("lora_alpha", 16.0))
    self.lora_targets = model.pop("lora_targets", "") or lora.DEFAULT_TARGETS
    if self.lora_rank and not self.supports_lora:
      raise ValueError(f"model.lora_rank={self.lora_rank}: objective "
                       f"{config.objective.name!r} does not apply LoRA adapters")
    if self.lora_rank:
      lora.check_args(self.lora_rank, self.lora_alpha, self.lora_targets)
    model.setdefault("vocab_size", task.tokenizer.vocab_size)
    if model.get("vocab_size") in (None, 0):
      model["vocab_size"] = task.tokenizer.vocab_size
    if task.token_features and not model.get("token_features"):
      model["token_features"] = task.token_features
    self.init_from = config.get("init_from", "") or ""
    self._pretrained = None
    # 'run:DIR' starts every parameter from another run of the same model (e.g. SequenceMatch
    # fine-tuned from an MLE run); the trainer restores it. Anything else names a pretrained
    # LM whose architecture replaces config.model's.
    if self.init_from and not self.init_from.startswith(RUN_PREFIX):
      model = self._pretrained_architecture(model, task)
    self.model_config = ModelConfig.from_dict(model)
    self.model = self.make_model()

  # --- starting from a pretrained model ----------------------------------------------------
  def _pretrained_architecture(self, model: dict, task) -> dict:
    """config.model with the architecture of `init_from` (only max_len, dtypes, remat and
    scan_layers are kept from the config). The vocabulary may grow past the file's (e.g.
    <bkspc>)."""
    from catrans.pretrained import load_pretrained
    # scan_layers=True stacks the file's layers (catrans.pretrained.layout): one layer body
    # to compile instead of num_layers of them.
    cfg, self._pretrained = load_pretrained(self.init_from, max_len=model["max_len"],
                                            dtype=model.get("dtype", "float32"),
                                            scan_layers=bool(model.get("scan_layers")))
    if task.tokenizer.vocab_size != cfg.vocab_size:
      raise ValueError(
          f"init_from={self.init_from!r} has a {cfg.vocab_size}-token vocabulary but the task's "
          f"tokenizer has {task.tokenizer.vocab_size}; set task.tokenizer={self.init_from!r}")
    if model["vocab_size"] < cfg.vocab_size:
      raise ValueError(f"model.vocab_size {model['vocab_size']} < the pretrained "
                       f"{cfg.vocab_size}")
    keep = {k: model[k] for k in ("vocab_size", "max_len", "dtype", "param_dtype", "remat",
                                  "scan_layers") if k in model}
    arch = dataclasses.asdict(cfg)
    arch.update(keep)
    return arch

  def pretrained_trunk(self):
    """Host (numpy) trunk params from `init_from`, or None. Objectives that add vocabulary
    rows (SequenceMatch's <bkspc>) override this to initialise them."""
    return self._pretrained

  def place_pretrained(self, params, trunk):
    """params with the trunk subtree replaced by `trunk` (traceable, runs inside the jitted
    init). A pretrained table smaller than the model's (more vocabulary, or vocabulary
    padding) fills its leading block; the remaining rows keep their fresh init."""
    def put(path, dst):
      keys = tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)
      if keys[:1] == (lora.LORA_KEY,):   # adapters start fresh (B = 0: the trunk unchanged)
        return dst
      if keys[:len(self.trunk_path)] != self.trunk_path:
        return dst
      src = _lookup(trunk, keys[len(self.trunk_path):])
      if src is None:
        raise ValueError(f"pretrained trunk lacks {'/'.join(map(str, keys))}")
      if src.ndim != dst.ndim or any(s > d for s, d in zip(src.shape, dst.shape)):
        raise ValueError(f"pretrained {'/'.join(map(str, keys))} has shape {src.shape}, the "
                         f"model needs {dst.shape}")
      src = jnp.asarray(src, dst.dtype)
      if src.shape == dst.shape:
        return src
      return jax.lax.dynamic_update_slice(dst, src, (0,) * dst.ndim)
    return jax.tree_util.tree_map_with_path(put, params)

  # --- model -----------------------------------------------------------------------------
  def make_model(self) -> nn.Module:
    raise NotImplementedError

  def dummy_batch(self, batch_size: int, seq_len: int) -> dict:
    return {"inputs": jnp.zeros((batch_size, seq_len), jnp.int32),
            "positions": jnp.zeros((batch_size, seq_len), jnp.int32)}

  def init_params(self, rng: jax.Array) -> Any:
    """Boxed (nn.Partitioned) parameters: the trainer reads their logical axis names. With
    model.lora_rank, plus the (replicated) adapters under 'lora'."""
    b = self.dummy_batch(1, min(8, self.model_config.max_len))
    params = self.model.init(rng, b["inputs"], b["positions"])["params"]
    if not self.lora_rank:
      return params
    adapters = lora.init(nn.meta.unbox(params), jax.random.fold_in(rng, 0x10AA),
                         rank=self.lora_rank, targets=self.lora_targets)
    boxed = jax.tree.map(lambda x: nn.Partitioned(x, names=(None,) * x.ndim), adapters)
    return dict(params, **{lora.LORA_KEY: boxed})

  def model_params(self, params) -> Any:
    """The param tree the model applies: the LoRA-merged kernels (base frozen) when
    model.lora_rank > 0, else params itself."""
    if not self.lora_rank:
      return params
    return lora.merge(params, alpha=self.lora_alpha)

  def trainable_mask(self, params) -> Any | None:
    """A pytree of bools like params (True = trained) or None for all trainable. With LoRA
    only the adapters train (and only they get optimizer state)."""
    return lora.trainable_mask(params) if self.lora_rank else None

  def prepare_batch(self, local_batch: dict, step: int) -> dict:
    """Host-side (numpy) transformation of this process's rows before they go to devices,
    e.g. noise augmentation. Must be deterministic in (batch, step, process) so a resumed
    run sees the same batches; eval batches get negative steps."""
    return local_batch

  # --- state carried between steps (optional) --------------------------------------------
  def init_aux(self) -> Any:
    """A pytree the train step carries and checkpoints (e.g. a replay buffer), or None."""
    return None

  def update_aux(self, aux, params, batch: Batch, rng: jax.Array, step: jnp.ndarray):
    """The new aux before this step's loss (traced inside the compiled step)."""
    return aux

  def aux_batch(self, aux) -> dict:
    """Entries added to every (micro-)batch the loss sees, read from aux."""
    return {}

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


def _lookup(tree, keys):
  for k in keys:
    if not isinstance(tree, Mapping) or k not in tree:
      return None
    tree = tree[k]
  return tree
