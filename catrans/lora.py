"""LoRA adapters as a transform of a parameter pytree (no change to any module).

For every kernel W whose path ('layer_3/attn/q') matches `targets`, viewed as a matrix
[d_in, d_out] (its first `fan_in` axes are the input), the adapter holds A [d_in, r] (random)
and B [r, d_out] (zero), and the model runs on the merged kernel
    W' = W + (A @ B) * alpha / r.
With B = 0 the merged tree is the base tree exactly, so step 0 of a fine-tune is the
pretrained model. A scanned trunk (scan_layers=True) stacks its layers' kernels along a
leading layer axis ('layers/attn/q' is [layers, d, heads, head_dim]); its adapters carry the
same leading axis (A [layers, d_in, r], B [layers, r, d_out]), one independent adapter per
layer as in the unrolled trunk. The adapters live in their own subtree `params['lora']`,
mirroring the paths of the kernels they adapt; `merge` strips it, so any code that applies a
plain param tree (a Transformer, a seqmatch model function) works unchanged on merge(params).

Gradients: merge stops the gradient into the base tree, so only A and B are trained; a
frozen base also needs no optimizer state (`trainable_mask`). The backward pass still forms
the merged kernel's gradient (x^T dy, then A^T and B^T of it): LoRA saves optimizer memory
and update work here, not the weight-gradient matmuls (an adapter inside the layer would)."""
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

LORA_KEY = "lora"
# Every projection of a catrans block (attention q/k/v/o and the SwiGLU MLP).
DEFAULT_TARGETS = r"attn/(q|k|v|o)$|mlp/(gate|up|down)$"


def trunk_fan_in(path: str, shape: tuple) -> int:
  """Input axes of one layer's catrans kernel (shape without any leading layer axis): the
  attention output [heads, head_dim, d] has two, every other projection ([d, heads,
  head_dim], [d, mlp], [mlp, d]) one."""
  return len(shape) - 1 if path.endswith("attn/o") else 1


def trunk_layer_axes(path: str, shape: tuple) -> int:
  """Leading layer axes of a catrans kernel: 1 inside a scanned trunk's 'layers' subtree
  (nn.scan stacks every layer's kernel along axis 0), else 0."""
  return 1 if "layers" in path.split("/") else 0


def _paths(tree, prefix=()):
  """(path tuple, leaf) for every leaf of a nested dict."""
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for k, v in tree.items():
      yield from _paths(v, prefix + (k,))
  else:
    yield prefix, tree


def check_args(rank, alpha, targets):
  """Raises ValueError naming the bad argument; returns the compiled targets pattern."""
  if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1:
    raise ValueError(f"lora rank must be an integer >= 1, got {rank!r}")
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f"lora alpha must be a finite number > 0, got {alpha!r}")
  try:
    return re.compile(targets)
  except (re.error, TypeError) as e:
    raise ValueError(f"lora targets {targets!r} is not a regular expression: {e}") from None


def target_paths(params, targets: str = DEFAULT_TARGETS) -> list[tuple]:
  """Paths of the kernels (ndim >= 2) under `params` whose 'a/b/c' path matches `targets`
  (re.search), in tree order; the 'lora' subtree itself is never a target."""
  pattern = check_args(1, 1.0, targets)
  return [p for p, x in _paths(params) if p[:1] != (LORA_KEY,) and np.ndim(x) >= 2
          and pattern.search("/".join(map(str, p)))]


def init(params, rng: jax.Array, *, rank: int, targets: str = DEFAULT_TARGETS,
         fan_in: Callable[[str, tuple], int] = trunk_fan_in,
         layer_axes: Callable[[str, tuple], int] = trunk_layer_axes) -> dict:
  """The adapter subtree for `params`: {path...: {'a': [*layers, d_in, r], 'b': [*layers, r,
  d_out]}}, A ~ N(0, 1/d_in) and B = 0, in each kernel's dtype; `layers` is the kernel's
  leading layer_axes(path, shape) axes (scanned trunks), fan_in(path, per-layer shape) its
  input axes after them. Raises if nothing matches `targets`."""
  check_args(rank, 1.0, targets)
  paths = target_paths(params, targets)
  if not paths:
    raise ValueError(f"lora targets {targets!r} match no kernel; kernel paths look like "
                     f"{['/'.join(map(str, p)) for p, x in _paths(params) if np.ndim(x) >= 2][:4]}")
  out: dict = {}
  for i, path in enumerate(paths):
    w, name = _get(params, path), "/".join(map(str, path))
    lead = layer_axes(name, tuple(w.shape))
    if not 0 <= lead <= w.ndim - 2:
      raise ValueError(f"layer_axes gave {lead} leading axes for {name} of shape {w.shape}")
    stack, layer_shape = tuple(w.shape[:lead]), tuple(w.shape[lead:])
    k = fan_in(name, layer_shape)
    if not 1 <= k < len(layer_shape):
      raise ValueError(f"fan_in gave {k} input axes for {name}'s per-layer shape "
                       f"{layer_shape}")
    d_in, d_out = int(np.prod(layer_shape[:k])), int(np.prod(layer_shape[k:]))
    a = jax.random.normal(jax.random.fold_in(rng, i), stack + (d_in, rank),
                          jnp.float32) * d_in ** -0.5
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = {"a": a.astype(w.dtype), "b": jnp.zeros(stack + (rank, d_out), w.dtype)}
  return out


def add(params, rng: jax.Array, *, rank: int, targets: str = DEFAULT_TARGETS,
        fan_in: Callable[[str, tuple], int] = trunk_fan_in,
        layer_axes: Callable[[str, tuple], int] = trunk_layer_axes) -> dict:
  """params plus a fresh 'lora' subtree (see init)."""
  if LORA_KEY in params:
    raise ValueError("params already hold a 'lora' subtree")
  return dict(params, **{LORA_KEY: init(params, rng, rank=rank, targets=targets,
                                        fan_in=fan_in, layer_axes=layer_axes)})


def merge(params, *, alpha: float, stop_base_gradient: bool = True) -> Any:
  """The plain param tree with W + (A @ B) * alpha / r at every adapted kernel (layer by
  layer for stacked adapters: a batched matmul). Without a 'lora' subtree, params unchanged.
  stop_base_gradient: the base kernels get no gradient."""
  if LORA_KEY not in params:
    return params
  check_args(1, alpha, "")
  adapters = params[LORA_KEY]
  base = {k: v for k, v in params.items() if k != LORA_KEY}
  if stop_base_gradient:
    base = jax.lax.stop_gradient(base)

  def visit(node, ad):
    out = dict(node)
    for key, sub in ad.items():
      if key not in node:
        raise ValueError(f"lora adapter {key!r} has no kernel in the params")
      if isinstance(sub, dict) and set(sub) == {"a", "b"} and not isinstance(node[key], dict):
        w, a, b = node[key], sub["a"], sub["b"]
        if a.shape[:-2] != b.shape[:-2] or a.shape[:-2] != w.shape[:a.ndim - 2]:
          raise ValueError(f"lora adapter {key!r}: A {a.shape} and B {b.shape} do not "
                           f"match the leading layer axes of the kernel {w.shape}")
        delta = (a @ b) * (alpha / a.shape[-1])
        out[key] = w + delta.reshape(w.shape).astype(w.dtype)
      else:
        out[key] = visit(node[key], sub)
    return out
  return visit(base, adapters)


def trainable_mask(params) -> Any:
  """True on the adapter leaves, False on everything else (the frozen base)."""
  return {k: jax.tree.map(lambda _: k == LORA_KEY, v) for k, v in params.items()}


def num_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params.get(LORA_KEY, {}))))


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree
