"""Device mesh, logical-axis rules and shardings for params, optimizer state and batches.

Three mesh axes: `data` (pure data parallel), `fsdp` (data parallel whose parameters and
optimizer state are sharded too) and `tensor` (Megatron-style model parallel). Model code
names logical axes (see catrans); the config's rules map them onto mesh axes. Every check
here runs before compilation so bad settings fail with a message, not an XLA error."""
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axes. Weights shard their d_model ('embed') axis over fsdp and their
# head / hidden axes over tensor; activations shard the batch over data and fsdp.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
    ("attr_classes", None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; one of them may be -1 meaning 'all remaining devices'."""
  sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh axis sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes ({fixed} devices) "
                       f"do not divide the {num_devices} available devices")
    sizes[sizes.index(-1)] = num_devices // fixed
  total = int(np.prod(sizes))
  if total > num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {total} devices but only "
                     f"{num_devices} are available ({jax.devices()[0].platform})")
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A GSPMD (Auto axis types) mesh over `devices` (default: all devices of all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  used = int(np.prod(shape))
  # Process-major device order keeps each host's devices contiguous along the batch axes, so
  # a host's local batch rows live on its own devices.
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))[:used]
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_rules(config_rules=None) -> tuple:
  """Rules from the config (a sequence of (logical, mesh axes)) or the defaults.

  Config rules override defaults per logical axis; mesh axes must be known names."""
  rules = dict(DEFAULT_RULES)
  for logical, mesh_axes in (config_rules or ()):
    axes = mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
    for a in axes:
      if a is not None and a not in MESH_AXES:
        raise ValueError(f"logical axis rule {logical!r} -> {mesh_axes!r}: unknown mesh axis "
                         f"{a!r}; mesh axes are {MESH_AXES}")
    rules[logical] = tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes
  return tuple(rules.items())


def fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (e.g. 3 KV heads on tensor=2):
  such a dimension is replicated instead of failing at device_put."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    kept, size = [], 1
    for name in names:
      if dim % (size * mesh.shape[name]) == 0:
        kept.append(name)
        size *= mesh.shape[name]
    out.append(None if not kept else (kept[0] if len(kept) == 1 else tuple(kept)))
  return P(*out)


def strip_boxes(tree: Any) -> Any:
  """Removes nn.Partitioned boxes without applying sharding constraints (safe anywhere)."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
  return jax.tree.map(lambda x: x.unbox(apply_constraint=False) if is_box(x) else x, tree,
                      is_leaf=is_box)


def tree_shardings(abstract_boxed_tree: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree whose leaves may be nn.Partitioned boxes (logical names).

  The result has the structure of the UNBOXED tree."""
  logical_specs = nn.get_partition_spec(abstract_boxed_tree)
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  shapes = strip_boxes(abstract_boxed_tree)
  return jax.tree.map(
      lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)),
      mesh_specs, shapes, is_leaf=lambda s: isinstance(s, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp; everything else replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1):
  """Fails before compilation when the batch cannot be split over the mesh."""
  check_batch_split(global_batch_size, mesh.shape["data"], mesh.shape["fsdp"],
                    grad_accum_steps)


def check_batch_split(global_batch_size: int, data: int, fsdp: int, grad_accum_steps: int = 1):
  """The same check from the mesh's batch axis sizes (the start-up preflight has no mesh)."""
  shards = data * fsdp
  if global_batch_size % grad_accum_steps:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by "
                     f"grad_accum_steps={grad_accum_steps}")
  micro = global_batch_size // grad_accum_steps
  if micro % shards:
    raise ValueError(
        f"batch of {micro} rows (global batch {global_batch_size} / grad_accum_steps "
        f"{grad_accum_steps}) does not divide the mesh's {shards} batch shards "
        f"(data={data} x fsdp={fsdp})")
  if global_batch_size % jax.process_count():
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes")


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy rows -> global jax.Arrays sharded along the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def _path_keys(path) -> tuple:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def like_params_shardings(abstract_tree: Any, params_shardings: Any, params_shapes: Any,
                          mesh: Mesh) -> Any:
  """Shardings for a tree (an optimizer state) whose leaves mirror parameters.

  A leaf whose path ends with a parameter's path and has its shape gets that parameter's
  sharding (Adam moments, momentum); anything else (counts, factored statistics) is
  replicated. Works for any optax optimizer without knowing its state classes."""
  by_path = {}
  for (path, s), (_, x) in zip(jax.tree_util.tree_flatten_with_path(params_shardings)[0],
                               jax.tree_util.tree_flatten_with_path(params_shapes)[0]):
    by_path[_path_keys(path)] = (s, tuple(x.shape))
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    keys = _path_keys(path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[1] == tuple(leaf.shape):
        return hit[0]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_tree)
