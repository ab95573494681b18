"""Shared defaults for every experiment config; configs override what differs.

Every section is a ConfigDict so `--config.train.steps=100` style overrides are checked:
an unknown key is an error, not a silent no-op."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # '' = random init; 'smollm2', a .gguf file or a Hugging Face Llama directory = start the
  # trunk from that model (its architecture replaces config.model's; pair it with
  # task.tokenizer set to the same value).
  c.init_from = ""
  c.task = ml_collections.ConfigDict({"name": "arithmetic"})
  # catrans.ModelConfig fields; vocab_size 0 = the task tokenizer's vocabulary.
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=0, d_model=128, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=512,
      max_len=128, tie_embeddings=True, dtype="float32", param_dtype="float32",
      remat="none", scan_layers=False,
      # > 0: LoRA adapters of this rank on the kernels whose path matches lora_targets
      # ('' = every attention and MLP projection), the rest frozen (catrans.lora).
      lora_rank=0, lora_alpha=16.0, lora_targets=""))
  c.objective = ml_collections.ConfigDict({"name": "mle"})
  # Mesh axis sizes; -1 = all remaining devices. data x fsdp shard the batch, fsdp also the
  # weights, tensor the heads / MLP / vocabulary.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # (logical axis, mesh axes) pairs overriding experiments.sharding.DEFAULT_RULES.
  c.logical_rules = ()
  c.data = ml_collections.ConfigDict(dict(
      mode="padding", seq_len=64, global_batch_size=32, train_split="train",
      eval_split="test", read_threads=2,
      # e.g. (16, 32, 64): padded batches are cut to the smallest width holding their longest
      # row, one compiled train step per width (padding mode; () = always seq_len).
      length_buckets=()))
  c.train = ml_collections.ConfigDict(dict(
      steps=1000, grad_accum_steps=1, log_every=50, eval_every=500, eval_batches=8,
      checkpoint_every=500, keep_checkpoints=3, async_checkpoint=True,
      peak_flops=0.0,          # FLOP/s per device for MFU; 0 = measure with a matmul probe
      nonfinite="skip",        # skip | stop | ignore: what a NaN/Inf loss, gradient or update does
      max_consecutive_skips=10,  # skip: this many skipped updates in a row stop the run
      start_over=False,        # True: start afresh in a workdir whose checkpoints are gone
      progress=True))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-3, schedule="cosine", warmup_steps=50,
      end_lr_fraction=0.1, weight_decay=0.01, b1=0.9, b2=0.95, eps=1e-8, grad_clip=1.0,
      # > 0: also keep a moving average of the params (decay per step), which evaluation,
      # reports and decoding use in place of the last iterate (optim.with_params_ema).
      ema_decay=0.0))
  return c
