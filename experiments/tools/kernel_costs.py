"""Analytic FLOPs and HBM bytes of the splash attention kernel in one train step.

XLA's cost analysis does not see inside a Pallas custom call (a v5e compile of splash
forward + gradient at L=2048 reports ~1e7 FLOPs where the matmuls are ~1e11), so
experiments.tools.aot_compile adds these counts to its roofline when the program holds
the kernel. Counted for splash_attention_kernel as catrans.attention_kernels calls it
(causal mask, block_q = block_kv = `block`, separate dq and dkv backward kernels):

  FLOPs: each of the kernel's L x S x H matmuls costs 2 L S H per head, over the causal
    fraction of blocks it visits, (nb + 1) / (2 nb) with nb = L / block (diagonal blocks are
    computed whole). Forward 2 matmuls (QK^T, PV); dq kernel 3 (QK^T, dO V^T, dS K); dkv
    kernel 4 (QK^T, dO V^T, P^T dO, dS^T Q); with remat the forward runs twice (a custom call
    is not a dot, so no remat policy saves its output).
  Bytes: every block the kernel visits is read from HBM: the streamed operand once per
    visiting block row, so (nb + 1) / 2 times on average, per query head (the kv head of
    a GQA group is re-read for each of its query heads); the other operands and the
    results once; the f32 row statistics (logsumexp, dO.O) per row.
XLA's own count of the custom call's operands and results stays in the total, so the
in/out traffic is counted about twice: the bytes, and so the roofline time, err high."""
import numpy as np


def splash_train_cost(*, examples: float, seq_len: int, num_heads: int, head_dim: int,
                      block: int, layers: int, remat: bool, dtype_bytes: int = 2):
  """(FLOPs, bytes) of all splash calls of one train step over `examples` sequences."""
  l, n, h, e = seq_len, num_heads, head_dim, dtype_bytes
  nb = max(1, -(-l // min(block, l)))
  frac = (nb + 1) / (2 * nb)
  reread = (nb + 1) / 2
  matmul = 2.0 * l * l * h * n * frac
  fwd_passes = 2 if remat else 1
  flops = matmul * (2 * fwd_passes + 3 + 4)
  tile = l * n * h * e                      # one [L, heads, H] operand
  stats = l * n * 4                         # one f32 per row and head
  fwd = tile + 2 * reread * tile + tile + 2 * stats
  dq = 2 * tile + 2 * reread * tile + 2 * stats + tile
  dkv = 2 * tile + 2 * reread * tile + 2 * reread * stats + 2 * tile
  nbytes = fwd * fwd_passes + dq + dkv
  return examples * layers * flops, examples * layers * nbytes


def splash_in_step(trainer, lowered, num_devices: int):
  """Per-device (FLOPs, bytes) of the splash calls in a lowered train step of an
  experiments Trainer, or None when the program holds no Pallas call."""
  if "tpu_custom_call" not in lowered.as_text():
    return None
  cfg = trainer.objective.model_config
  flops, nbytes = splash_train_cost(
      examples=trainer.batch_size, seq_len=trainer.seq_len, num_heads=cfg.num_heads,
      head_dim=cfg.dim_per_head, block=cfg.attention_block, layers=cfg.num_layers,
      remat=cfg.remat != "none", dtype_bytes=np.dtype(cfg.compute_dtype).itemsize)
  return flops / num_devices, nbytes / num_devices


def note(name: str, flops: float, nbytes: float) -> str:
  """The line aot_compile prints for a program whose counts include the kernel."""
  return (f"{name}: FLOPs and bytes include the splash attention kernel counted analytically "
          f"({flops / 1e12:.3g} TFLOP, {nbytes / 1024 ** 3:.3g} GiB per device; "
          f"experiments/tools/kernel_costs.py): XLA's cost analysis does not see inside a "
          f"Pallas call.")
