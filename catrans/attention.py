"""The attention core (scores, softmax, values) in interchangeable implementations.

  xla      the reference: each row's whole softmax at once; with a structured causal mask
           and no cache, in row blocks that skip the hidden triangle (xla_row_blocks).
  chunked  blockwise online softmax in plain JAX (any backend): query blocks x key blocks,
           memory O(L x block); a custom VJP recomputes the scores block by block, so the
           backward pass stores no L x S tensor either. Causal blocks above the diagonal are
           skipped (about half the FLOPs); heads-major like xla (no transposed score copy).
           In catrans/attention_chunked.py.
  splash   TPU Pallas splash kernel (GQA native, segment ids), vmapped over the batch.
  flash    TPU Pallas flash kernel (segment ids; kv heads repeated to the query heads).
  cudnn    jax.nn.dot_product_attention(implementation='cudnn'): GPU, bf16/fp16 only.
  auto     splash on TPU, cudnn on GPU where they apply, else chunked for long keys
           (S >= CHUNKED_MIN_KEYS) or xla; one log line per distinct reason for a fallback.

The mask is an AttentionMask: structured (causal slots, packing segment ids, a cache offset)
whenever the caller gave structure, so chunked builds each [bq, bk] block from O(L) inputs;
or an explicit dense bool mask (seqmatch's one-pass rows are arbitrary), which only xla and
chunked accept -- a fused kernel would silently ignore it, so asking for one is an error and
auto never picks one.
"""
import functools
import logging
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

# chunked, and the mask bias every implementation shares, live in their own module.
from catrans.attention_chunked import DEFAULT_BLOCK, MASK_BIAS, chunked_attention

IMPLS = ("xla", "chunked", "splash", "flash", "cudnn", "auto")
CHUNKED_MIN_KEYS = 1024   # auto: from this many keys the xla scores cost more than chunking
XLA_ROW_BLOCKS, XLA_MIN_BLOCK_ROWS = 8, 64   # xla, causal: at most 8 row blocks of >= 64
log = logging.getLogger("catrans")
_logged: set = set()


@struct.dataclass
class AttentionMask:
  """Which key slots each query row may attend (True = may attend).

  Structured: row i sits at key slot q_offset + i (q_offset = the cache index, 0 without
  a cache); causal: it sees slots <= its own; segment_ids_BxL (packing, no cache, S == L):
  only its own nonzero segment, and a padding row (segment 0) sees only itself so its
  softmax stays finite -- exactly catrans.masks.segment_mask / cache_causal_mask.
  Dense: `dense` bool [B or 1, L, S] overrides everything else."""
  dense: Any = None
  segment_ids: Any = None
  q_offset: Any = None
  causal: bool = struct.field(pytree_node=False, default=True)

  @property
  def structured(self) -> bool:
    return self.dense is None

  def block(self, q0, k0, bq: int, bk: int, kv_len: int):
    """bool [B or 1, bq, bk]: rows q0.., slots k0..; slots >= kv_len (padding) hidden."""
    qi = q0 + jnp.arange(bq)
    kj = k0 + jnp.arange(bk)
    if self.dense is not None:
      d = self.dense
      return jax.lax.dynamic_slice(d, (0, q0, k0), (d.shape[0], bq, bk)) & (kj < kv_len)
    slot = qi if self.q_offset is None else qi + self.q_offset
    m = (kj[None, :] < kv_len) & jnp.ones((bq, 1), bool)
    if self.causal:
      m = m & (kj[None, :] <= slot[:, None])
    m = m[None]
    if self.segment_ids is not None:
      seg = self.segment_ids
      b = seg.shape[0]
      sq = jax.lax.dynamic_slice(seg, (0, q0), (b, bq))[:, :, None]
      sk = jax.lax.dynamic_slice(seg, (0, k0), (b, bk))[:, None, :]
      same = (sq == sk) & (sq != 0) & (sk != 0)
      m = m & (same | (slot[:, None] == kj[None, :])[None])
    return m

  def to_dense(self, l: int, s: int):
    """bool [B or 1, L, S]: what the xla implementation reads."""
    if self.dense is not None:
      return self.dense.astype(bool)
    return self.block(0, 0, l, s, s)


def as_mask(mask) -> AttentionMask:
  """An AttentionMask as is; a bool array [B, L, S] / [L, S] as a dense one."""
  if isinstance(mask, AttentionMask):
    return mask
  mask = jnp.asarray(mask).astype(bool)
  return AttentionMask(dense=mask if mask.ndim == 3 else mask[None])


def check_impl(impl) -> str:
  if impl not in IMPLS:
    raise ValueError(f"attention_impl={impl!r}; choose from {' | '.join(IMPLS)}")
  return impl


def _log_once(msg: str, level=logging.WARNING):
  if msg not in _logged:
    _logged.add(msg)
    log.log(level, "%s", msg)


def platform() -> str:
  """The platform being compiled for: the ambient mesh's (set by jax.set_mesh, also for an
  AOT compile against TPU topology devices on a CPU host), else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  p = None if mesh.empty else getattr(getattr(mesh, "abstract_device", None), "platform", None)
  return p or jax.default_backend()


# --------------------------------------------------------------------------- reference
def _softmax_attention(q_BxKxGxCxH, k_BxKxSxH, v_BxKxSxH, mask_BxCxS, scale: float):
  """softmax(q k^T scale, hidden slots at MASK_BIAS) v for C query rows: [B, K, G, C, H]."""
  b, kh, g, c, h = q_BxKxGxCxH.shape
  # Heads-major, M = G*C rows: the matmuls write [B, K, M, S|H] in place ('blkgh,bskh->bkgls'
  # made XLA:CPU copy the scores and their gradient transposed). Softmax on a 4-D view: its
  # CPU backward fusions cost half the 5-D layout's (both: the throughput bench's profile).
  scores = jnp.einsum("bkmh,bksh->bkms", q_BxKxGxCxH.reshape(b, kh, g * c, h), k_BxKxSxH,
                      preferred_element_type=jnp.float32) * scale
  scores_BxNxCxS = scores.reshape(b, kh * g, c, k_BxKxSxH.shape[2])
  scores_BxNxCxS = jnp.where(mask_BxCxS[:, None], scores_BxNxCxS, MASK_BIAS)
  probs = jax.nn.softmax(scores_BxNxCxS, axis=-1).astype(q_BxKxGxCxH.dtype)
  out = jnp.einsum("bkms,bksh->bkmh", probs.reshape(scores.shape), v_BxKxSxH)
  return out.reshape(b, kh, g, c, h)


def _causal_no_cache(mask: AttentionMask, l: int, s: int) -> bool:
  return mask.structured and mask.causal and mask.q_offset is None and l == s


def xla_row_blocks(mask: AttentionMask, l: int, s: int) -> int:
  """xla's default row blocks: 1 unless the mask is structured causal without a cache."""
  return min(XLA_ROW_BLOCKS, max(1, l // XLA_MIN_BLOCK_ROWS)) if _causal_no_cache(mask, l, s) else 1


def xla_attention(q_BxLxKxGxH, k_BxSxKxH, v_BxSxKxH, mask: AttentionMask, scale: float,
                  row_blocks: int | None = None):
  """Each row's softmax in one piece; row_blocks > 1 (structured causal, no cache): blocks
  of rows reading keys up to their last row only (the rest have probability exactly 0). At
  L=512, 8 blocks (9/16 of the square) took the core to 0.59x the unsplit CPU time."""
  b, l, kh, g, h = q_BxLxKxGxH.shape
  s = k_BxSxKxH.shape[1]
  row_blocks = xla_row_blocks(mask, l, s) if row_blocks is None else row_blocks
  if not isinstance(row_blocks, int) or row_blocks < 1 or (
      row_blocks > 1 and not _causal_no_cache(mask, l, s)):
    raise ValueError(f"row_blocks={row_blocks!r}: need an integer >= 1, and 1 unless the mask "
                     f"is structured causal without a cache (here L={l}, S={s})")
  q_BxKxGxLxH = jnp.transpose(q_BxLxKxGxH, (0, 2, 3, 1, 4))
  k_BxKxSxH, v_BxKxSxH = (jnp.transpose(x, (0, 2, 1, 3)) for x in (k_BxSxKxH, v_BxSxKxH))
  if row_blocks == 1:
    out = _softmax_attention(q_BxKxGxLxH, k_BxKxSxH, v_BxKxSxH, mask.to_dense(l, s), scale)
  else:
    n = -(-l // row_blocks)   # rows [q0, q0 + n) see keys [0, q0 + n)
    starts = list(range(0, l, n))
    # Split once into row (query) and column (key, value) blocks and re-join the columns each
    # row block reads. The gradient of a split is one concatenate and of a join slices, so
    # every block's gradient is a sum of slices. Slicing [q0, q0 + n) and [0, q0 + n)
    # instead gives each row block a zero-padded full-length gradient, all summed: 3 x 8
    # passes over dQ, dK, dV per layer (the trainer step was 1.11x slower at L=512).
    q_rows = jnp.split(q_BxKxGxLxH, starts[1:], axis=3)
    k_cols, v_cols = (jnp.split(x, starts[1:], axis=2) for x in (k_BxKxSxH, v_BxKxSxH))
    out = jnp.concatenate([_softmax_attention(
        q_rows[i], jnp.concatenate(k_cols[:i + 1], 2), jnp.concatenate(v_cols[:i + 1], 2),
        mask.block(q0, 0, min(n, l - q0), min(l, q0 + n), s), scale)
        for i, q0 in enumerate(starts)], axis=3)
  return jnp.transpose(out, (0, 3, 1, 2, 4))


# --------------------------------------------------------------------------- choice
def kernel_obstacle(impl: str, mask: AttentionMask, l: int, s: int, head_dim: int, dtype,
                    plat: str) -> str | None:
  """Why a fused kernel cannot run this call (None: it can). Only what each kernel takes:
  a dense mask is never one of them (it would be ignored, silently)."""
  if mask.dense is not None:
    return "an explicit per-row mask (e.g. seqmatch one-pass) is not a mask the kernel takes"
  if not mask.causal:
    return "a non-causal mask"
  if impl in ("splash", "flash"):
    if plat not in ("tpu", "cpu"):
      return f"{impl} is a TPU kernel and the platform is {plat}"
    if mask.q_offset is not None:
      return "a KV-cache call (decode): the TPU kernels take no query offset"
    if l != s or l % 128:
      return f"L={l}, S={s}: the kernel needs S == L, a multiple of 128"
  if impl == "cudnn":
    if plat != "gpu":
      return f"cudnn needs a CUDA GPU with cuDNN; the platform is {plat}"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
      return f"cudnn takes bf16/fp16 only, the compute dtype is {jnp.dtype(dtype).name}"
    if head_dim % 8 or head_dim > 128:
      return f"cudnn needs head_dim a multiple of 8 up to 128, got {head_dim}"
    if mask.segment_ids is not None:
      return "packed segment ids: cudnn has no public segment-id input"
    if mask.q_offset is not None and l != 1:
      return "a multi-row KV-cache call: cudnn's causal mask has no query offset"
  return None


def _impossible(impl: str, mask: AttentionMask, plat: str) -> str | None:
  """What makes an explicit kernel request an error rather than a logged fallback: a mask
  the kernel would ignore, or a platform it does not run on. (A call of the wrong shape --
  the trainer's short init batch, a decode step -- falls back with a log line.)"""
  if mask.dense is not None:
    return kernel_obstacle(impl, mask, 128, 128, 128, jnp.bfloat16, plat)
  why = kernel_obstacle(impl, AttentionMask(), 128, 128, 128, jnp.bfloat16, plat)
  return why if why and "platform" in why else None


def choose(impl: str, mask: AttentionMask, l: int, s: int, head_dim: int, dtype) -> str:
  """The implementation `impl` resolves to for this call, logging (once per reason) when a
  kernel does not apply and xla / chunked runs instead. Raises for an explicit kernel that
  cannot honour the mask or does not run on this platform."""
  check_impl(impl)
  if impl in ("xla", "chunked"):
    return impl
  plat = platform()
  fallback = "chunked" if s >= CHUNKED_MIN_KEYS else "xla"
  if impl != "auto":
    fatal = _impossible(impl, mask, plat)
    if fatal:
      raise ValueError(f"attention_impl={impl!r} cannot run this call: {fatal}; use "
                       f"'chunked', 'xla' or 'auto'")
    kernel = impl
  else:
    kernel = {"tpu": "splash", "gpu": "cudnn"}.get(plat)
  if kernel is None:
    # INFO, not WARNING: on a CPU nothing better exists, so there is nothing to fix.
    _log_once(f"attention_impl='auto': no fused kernel on {plat}; using {fallback} "
              f"(chunked from {CHUNKED_MIN_KEYS} keys)", logging.INFO)
    return fallback
  why = kernel_obstacle(kernel, mask, l, s, head_dim, dtype, plat)
  if why:
    _log_once(f"attention_impl={impl!r}: {kernel} not used ({why}); using {fallback}")
    return fallback
  return kernel


def attend(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, *, impl: str = "auto",
           block: int = DEFAULT_BLOCK, interpret: bool | None = None):
  """softmax(q k^T / sqrt(H) + mask) v with grouped kv heads: [B, L, N, H] out.

  interpret: run splash/flash in the Pallas interpreter (default: when the platform is not
  a TPU, so they are testable on CPU)."""
  mask = as_mask(mask)
  b, l, n, h = q_BxLxNxH.shape
  s, kh = k_BxSxKxH.shape[1], k_BxSxKxH.shape[2]
  scale = h ** -0.5
  which = choose(impl, mask, l, s, h, q_BxLxNxH.dtype)
  from catrans import attention_kernels as kernels   # imports Pallas only when needed
  if which in ("splash", "flash"):
    interp = platform() != "tpu" if interpret is None else interpret
    fn = kernels.splash_attention if which == "splash" else kernels.flash_attention
    return fn(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, scale, interpret=interp)
  if which == "cudnn":
    return kernels.cudnn_attention(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, scale)
  q = q_BxLxNxH.reshape(b, l, kh, n // kh, h)
  fn = xla_attention if which == "xla" else functools.partial(chunked_attention, block=block)
  return fn(q, k_BxSxKxH, v_BxSxKxH, mask, scale).reshape(b, l, n, h)
