"""The model-function protocol: how seqmatch talks to any autoregressive model.

seqmatch never imports a model library. It takes two callables:

  apply_fn(params, tokens_BxL, positions_BxL, mask_BxLxS, cache=None)
      -> (logits_BxLxA, new_cache)

    tokens_BxL: int32 ids in [0, A), A = action vocabulary (base vocabulary + <bkspc>).
    positions_BxL: int32 rotary/absolute positions of the rows (explicit: a backspace copy
      row reuses the position of the token it copies).
    mask_BxLxS: bool, True = row may attend key slot. Without a cache S == L (key slots are
      the rows themselves); with a cache S == cache length and the L new rows are written at
      the cache's next free slots (append-only: the cache index advances by L every call).
    cache: None, or an opaque pytree from init_cache_fn.
    logits_BxLxA: float32 logits over the A actions (the <bkspc> logit included).

  init_cache_fn(batch_size, cache_len) -> cache   (only needed for generation)

A catrans.Transformer fits as
  apply_fn = lambda p, t, pos, m, cache=None: (lambda o: (o.logits, o.cache))(
      model.apply(p, t, pos, m, cache=cache))
  init_cache_fn = lambda b, s: catrans.init_cache(cfg, b, s)
but that wiring lives in experiments/ or tests/, never here.
"""
from typing import Any, Protocol

import jax.numpy as jnp


class ApplyFn(Protocol):
  def __call__(self, params: Any, tokens_BxL: jnp.ndarray, positions_BxL: jnp.ndarray,
               mask_BxLxS: jnp.ndarray, cache: Any = None) -> tuple[jnp.ndarray, Any]:
    ...


class InitCacheFn(Protocol):
  def __call__(self, batch_size: int, cache_len: int) -> Any:
    ...
