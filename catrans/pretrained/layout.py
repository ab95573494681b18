"""The trunk's two parameter layouts. Unrolled (scan_layers=False): one subtree per layer,
'layer_0' ... 'layer_{n-1}'. Scanned (scan_layers=True): one subtree 'layers' whose leaves
carry a leading layer axis, as nn.scan(variable_axes={'params': 0}) holds them.

Loaders read files layer by layer into the unrolled layout; `to_scanned` stacks it so a deep
pretrained model (SmolLM2-135M: 30 layers) compiles one layer body inside a loop rather than
30 copies of it, which is what makes its train step compile in minutes on a CPU."""
import numpy as np

SCANNED_KEY = "layers"


def _layer_names(num_layers):
  if not isinstance(num_layers, (int, np.integer)) or isinstance(num_layers, bool) \
      or num_layers < 1:
    raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
  return [f"layer_{i}" for i in range(num_layers)]


def _leaves(tree, prefix=()):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _leaves(tree[k], prefix + (k,))
  else:
    yield prefix, tree


def _build(paths_values):
  out: dict = {}
  for path, value in paths_values:
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  return out


def to_scanned(params, num_layers: int) -> dict:
  """Unrolled params -> scanned: layer_i's leaves become row i of the 'layers' leaves (numpy).
  Everything outside the layers (embeddings, final norm, head) is passed through. Raises if a
  layer is missing or extra, or if the layers differ in structure or shapes."""
  names = _layer_names(num_layers)
  if SCANNED_KEY in params:
    raise ValueError(f"params already hold a {SCANNED_KEY!r} subtree (scanned layout)")
  missing = [n for n in names if n not in params]
  extra = sorted(k for k in params if k.startswith("layer_") and k not in names)
  if missing or extra:
    raise ValueError(f"to_scanned(num_layers={num_layers}): missing {missing}, unexpected "
                     f"{extra}")
  layers = [dict(_leaves(params[n])) for n in names]
  for name, layer in zip(names[1:], layers[1:]):
    shapes = {p: np.shape(x) for p, x in layer.items()}
    want = {p: np.shape(x) for p, x in layers[0].items()}
    if shapes != want:
      raise ValueError(f"{name} has leaves {shapes}, layer_0 has {want}: layers of different "
                       f"structure cannot be stacked")
  stacked = _build((p, np.stack([np.asarray(layer[p]) for layer in layers]))
                   for p in layers[0])
  out = {k: v for k, v in params.items() if k not in names}
  out[SCANNED_KEY] = stacked
  return out


def to_unrolled(params) -> dict:
  """Scanned params -> unrolled (the inverse of to_scanned)."""
  if SCANNED_KEY not in params:
    raise ValueError(f"params hold no {SCANNED_KEY!r} subtree (not the scanned layout)")
  leaves = dict(_leaves(params[SCANNED_KEY]))
  counts = {np.shape(x)[0] if np.ndim(x) else 0 for x in leaves.values()}
  if len(counts) != 1 or 0 in counts:
    raise ValueError(f"the {SCANNED_KEY!r} leaves disagree on the layer axis: {sorted(counts)}")
  out = {k: v for k, v in params.items() if k != SCANNED_KEY}
  for i, name in enumerate(_layer_names(counts.pop())):
    out[name] = _build((p, np.asarray(x[i])) for p, x in leaves.items())
  return out
