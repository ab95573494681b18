"""Ahead-of-time compile for a TPU topology this machine does not have: will it fit, how fast?

  python -m experiments.tools.aot_compile --config=experiments/configs/default.py:pod \
      --topology=v5e:16x16
  python -m experiments.tools.aot_compile --config=... --topology=v5p:4x4x8 --search

With libtpu installed (`pip install -e '.[tpu]'`), jax describes any TPU slice on a CPU host
(jax.experimental.topologies); the real train step (whatever the config's objective: MLE, CAT,
SequenceMatch with rollouts) and the decode step are lowered with sharded ShapeDtypeStructs and
compiled for it. Per chip it prints argument / output / temp / total memory against HBM, FLOPs
per step, a roofline step-time estimate and the MFU it implies, and whether it fits. --search
compiles mesh splits (data / fsdp / tensor), remat policies and micro-batching and lists those
that fit, fastest first. Nothing runs on a device: a launch that cannot fit fails here, not
after an hour in a pod queue."""
import os

# This host compiles for the TPU; it does not run on one. Without these, libtpu would claim
# the host's (absent) TPU and a second process would fail on its lockfile.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import dataclasses  # noqa: E402  (after the environment above, before jax initialises)
import itertools
import json
import logging
import re
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from experiments import hlo_bytes, sharding
from experiments.tools import kernel_costs

log = logging.getLogger("experiments")


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (bf16 dense peak, HBM capacity and bandwidth)."""
  hbm_bytes: float
  peak_flops: float
  hbm_bandwidth: float


GiB = 1024 ** 3
CHIPS = {
    "TPU v4": Chip(32 * GiB, 275e12, 1228e9),
    "TPU v5 lite": Chip(16 * GiB, 197e12, 819e9),      # v5e
    "TPU v5": Chip(95 * GiB, 459e12, 2765e9),          # v5p
    "TPU v6 lite": Chip(32 * GiB, 918e12, 1640e9),     # v6e (Trillium)
}


def topology_devices(name: str):
  """The devices of a TPU slice named the way libtpu accepts it ('v5e:16x16', 'v4:4x4x4')."""
  from jax.experimental import topologies
  try:
    topo = topologies.get_topology_desc(platform="tpu", topology_name=name)
  except Exception as e:  # libtpu absent, or a name it does not know.
    raise RuntimeError(
        f"cannot describe TPU topology {name!r}: {type(e).__name__}: {e}\nInstall libtpu with "
        f"`pip install -e '.[tpu]'`; names look like v5e:16x16, v4:4x4x4, v5p:4x4x8, v6e:8x8"
    ) from None
  return list(topo.devices)


def device_budget(devices) -> Chip:
  """Per-DEVICE figures: chips whose TensorCores appear as separate devices (v4 here) split
  the chip's HBM, FLOP/s and bandwidth between them."""
  kind = devices[0].device_kind
  if kind not in CHIPS:
    raise ValueError(f"no published figures for {kind!r}; known: {sorted(CHIPS)}")
  chip = CHIPS[kind]
  chips = len({tuple(getattr(d, "coords", (d.id,))) for d in devices})
  per = max(1, len(devices) // max(chips, 1))
  return Chip(chip.hbm_bytes / per, chip.peak_flops / per, chip.hbm_bandwidth / per)


@dataclasses.dataclass
class Report:
  name: str                  # 'train' | 'decode'
  setting: dict              # mesh, remat, grad_accum
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  flops: float               # per device per step, from XLA's cost analysis
  bytes_accessed: float
  model_flops: float         # whole step, all devices (analytic: 6N + attention)
  hbm_bytes: float
  compile_seconds: float
  out_of_memory: bool = False  # the compiler refused it: temp_bytes is what it asked for
  kernel_flops: float = 0.0    # analytic splash FLOPs / bytes per device, in flops and
  kernel_bytes: float = 0.0    # bytes_accessed too (XLA cannot see inside a Pallas call)
  hlo: str = dataclasses.field(default="", repr=False)  # optimized HLO (of its n- and n+1-
  layer_hlos: tuple = dataclasses.field(default=(), repr=False)  # layer copies, n): --breakdown

  @property
  def total_bytes(self) -> int:
    # Donated inputs alias outputs: count those buffers once.
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.hbm_bytes

  def step_seconds(self, chip: Chip, num_devices: int = 1) -> float:
    """Roofline: compute- or HBM-bound, whichever is slower. Compute counts at least the
    model's own FLOPs (XLA's count can miss some fusions). Collectives over ICI and their
    overlap are not modelled, so this is a lower bound on the real step time."""
    flops = max(self.flops, self.model_flops / num_devices)
    return max(flops / chip.peak_flops, self.bytes_accessed / chip.hbm_bandwidth)

  def mfu(self, chip: Chip, num_devices: int) -> float:
    if not self.model_flops:
      return float("nan")
    return self.model_flops / (self.step_seconds(chip, num_devices) * chip.peak_flops
                               * num_devices)


_OOM = re.compile(r"required for HLO temporaries \((?P<temp>[\d.]+)(?P<unit>[KMGT]?)")


def _compile(lowered, name, setting, model_flops, chip) -> Report:
  """Compiles; the TPU compiler refuses a program that cannot fit HBM (RESOURCE_EXHAUSTED):
  that becomes a report that does not fit, with the temporaries the message names."""
  t0 = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:
    text = str(e)
    if "RESOURCE_EXHAUSTED" not in text:
      raise
    m = _OOM.search(text)
    scale = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    temp = int(float(m["temp"]) * scale[m["unit"]]) if m else int(chip.hbm_bytes) + 1
    log.info("%s %s: out of HBM at compile time: %s", name, setting, text.splitlines()[0])
    return Report(name, setting, 0, 0, 0, temp, 0.0, 0.0, float(model_flops), chip.hbm_bytes,
                  time.perf_counter() - t0, out_of_memory=True)
  return _memory_report(name, setting, compiled, model_flops, chip, time.perf_counter() - t0)


def _memory_report(name, setting, compiled, model_flops, chip, seconds) -> Report:
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  return Report(name, setting, int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes),
                int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes),
                float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)),
                float(model_flops), chip.hbm_bytes, seconds, hlo=compiled.as_text())


def _abstract_batch(trainer) -> dict:
  """Global-shape stand-ins for one prepared batch: one real host batch from the task's
  pipeline gives the keys and dtypes (so the objective sees exactly what training feeds it)."""
  from experiments.data import pipeline
  d = trainer.config.data
  it = pipeline.make_train_iterator(
      trainer.task, d.get("train_split", "train"), global_batch_size=trainer.batch_size,
      seq_len=trainer.seq_len, seed=0, mode=d.get("mode", "padding"), read_threads=1)
  local = trainer.objective.prepare_batch(next(it), 0)
  sh = sharding.batch_sharding(trainer.mesh)
  return {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype, sharding=sh)
          for k, v in local.items()}


def _cache_sharding(mesh, shape):
  """KV cache leaves: [layers, B, S, kv_heads, hd] or [B, S, kv_heads, hd]; batch over
  data x fsdp, KV heads over tensor where they divide; scalars (the index) replicated."""
  if len(shape) == 5:
    spec = P(None, sharding.BATCH_AXES, None, "tensor", None)
  elif len(shape) == 4:
    spec = P(sharding.BATCH_AXES, None, "tensor", None)
  else:
    spec = P()
  return NamedSharding(mesh, sharding.fit_spec(spec, shape, mesh))


def decode_step(objective):
  """One new token per row with the KV cache, as steered / plain decoding runs it: the
  trunk (MLE, SequenceMatch) or the CAT model with the attribute of every candidate."""
  from catrans.cat_model import CATModel, init_cat_cache
  from catrans.transformer import init_cache
  model, cfg = objective.model, objective.model_config
  is_cat = isinstance(model, CATModel)

  def make_cache(batch):
    if is_cat:
      return init_cat_cache(cfg, objective.cat, batch, cfg.max_len)
    return init_cache(cfg, batch, cfg.max_len)

  def step(params, cache, tokens_Bx1):
    kw = {"all_tokens": True} if is_cat else {}
    out = model.apply({"params": params}, tokens_Bx1, cache=cache, **kw)
    extra = {k: v[:, -1] for k, v in getattr(out, "attributes", {}).items()}
    return out.logits[:, -1].argmax(-1), extra, out.cache

  return step, make_cache


def compile_config(config, devices, *, what=("train", "decode"), decode_batch: int = 0,
                   workdir: str | None = None) -> list[Report]:
  """Compiles the config's train step (and decode step) for `devices` (real or abstract
  topology devices); returns one Report per program.

  XLA counts a while body once, so with scan_layers FLOPs and bytes come from the model
  unrolled at 2 and 3 layers (1 and 2 if L = 2), extrapolated to L; memory is the real
  program's. Not 1 and 2: a 1-layer program slices the fsdp embedding table differently,
  booked as a layer's (0.13B, L=2048, v5e-256: 1.48 GB a layer from 1-2, 1.17 from 2-3)."""
  reports, kernel = _compile_config(config, devices, what, decode_batch, workdir)
  layers = int(config.model.num_layers)
  if config.model.get("scan_layers") and layers > 1 and not any(r.out_of_memory
                                                                  for r in reports):
    n, small = (2 if layers >= 3 else 1), []
    for k in (n, n + 1):
      c = config.copy_and_resolve_references()
      c.model.update(dict(num_layers=k, scan_layers=False))
      small.append(_compile_config(c, devices, what, decode_batch, None)[0])
    for r, a, b in zip(reports, *small):
      r.flops = a.flops + (layers - n) * (b.flops - a.flops)
      r.bytes_accessed = a.bytes_accessed + (layers - n) * (b.bytes_accessed - a.bytes_accessed)
      r.layer_hlos = (a.hlo, b.hlo, n)
  for r in reports:
    if r.name == "train" and kernel is not None and not r.out_of_memory:
      r.kernel_flops, r.kernel_bytes = kernel
      r.flops += r.kernel_flops
      r.bytes_accessed += r.kernel_bytes
  return reports


def _compile_config(config, devices, what, decode_batch, workdir):
  from experiments.trainer import Trainer
  chip = device_budget(devices)
  workdir = workdir or tempfile.mkdtemp(prefix="compile_")
  trainer = Trainer(config, workdir, devices=devices, progress=False)
  setting = {"mesh": dict(trainer.mesh.shape), "remat": config.model.remat,
             "grad_accum": trainer.accum}
  reports, kernel = [], None
  if "train" in what:
    batch = _abstract_batch(trainer)
    model_flops = (trainer.objective.model_config.flops_per_token(trainer.seq_len)
                   * trainer.batch_size * trainer.seq_len)
    with trainer.context():
      lowered = trainer.jitted_train_step.lower(trainer.abstract_state, batch)
      reports.append(_compile(lowered, "train", setting, model_flops, chip))
      kernel = kernel_costs.splash_in_step(trainer, lowered, len(devices))
  if "decode" in what:
    step, make_cache = decode_step(trainer.objective)
    b = decode_batch or trainer.batch_size
    sharding.check_batch(b, trainer.mesh)
    cache = jax.eval_shape(lambda: make_cache(b))
    cache = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=_cache_sharding(trainer.mesh, x.shape)), cache)
    params = trainer.abstract_state.params
    tokens = jax.ShapeDtypeStruct((b, 1), np.int32,
                                  sharding=sharding.batch_sharding(trainer.mesh))
    cfg = trainer.objective.model_config
    model_flops = 2 * (cfg.num_params(include_embeddings=False) + cfg.d_model * cfg.vocab_size) * b
    with trainer.context():
      lowered = jax.jit(step, donate_argnums=(1,)).lower(params, cache, tokens)
      reports.append(_compile(lowered, "decode", dict(setting, batch=b), model_flops, chip))
  return reports, kernel


# --- search ------------------------------------------------------------------------------
def mesh_candidates(num_devices: int, num_heads: int, max_tensor: int = 8):
  """(data, fsdp, tensor) splits: tensor a power of two dividing the heads, fsdp a power of
  two, data the rest. Sharding weights is what makes big models fit, so fsdp-heavy first."""
  out = []
  for tensor in (t for t in (1, 2, 4, 8, 16) if t <= max_tensor and num_heads % t == 0):
    if num_devices % tensor:
      continue
    rest = num_devices // tensor
    fsdp = rest
    while fsdp >= 1:
      if rest % fsdp == 0:
        out.append((rest // fsdp, fsdp, tensor))
      fsdp //= 2
  return out


def search(config, devices, *, max_candidates: int = 16, remats=("none", "dots", "full"),
           accums=(1, 2, 4, 8), progress=print) -> list[Report]:
  """For each mesh split (at most max_candidates), the cheapest setting that fits: remat
  none < dots < full, then micro-batches. Returns every compiled setting, fitting first,
  then by estimated step time."""
  chip = device_budget(devices)
  results = []
  meshes = mesh_candidates(len(devices), int(config.model.num_heads))[:max_candidates]
  batch = int(config.data.global_batch_size)
  for data, fsdp, tensor in meshes:
    for remat, accum in itertools.product(remats, accums):
      if batch % accum or (batch // accum) % (data * fsdp):
        continue
      c = config.copy_and_resolve_references()
      c.mesh.update(dict(data=data, fsdp=fsdp, tensor=tensor))
      c.model.remat = remat
      c.train.grad_accum_steps = accum
      try:
        (r,) = compile_config(c, devices, what=("train",))
      except Exception as e:  # One bad split must not end the search.
        progress(f"  data={data} fsdp={fsdp} tensor={tensor} remat={remat} accum={accum}: "
                 f"failed to compile ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
        break
      results.append(r)
      progress(f"  {_setting_str(r.setting)}: {_gib(r.total_bytes)} GiB of "
               f"{_gib(chip.hbm_bytes)} -> {'fits' if r.fits else 'does not fit'}")
      if r.fits:
        break
  results.sort(key=lambda r: (not r.fits, r.step_seconds(chip, len(devices))))
  return results


# --- printing ----------------------------------------------------------------------------
def _setting_str(s: dict) -> str:
  m = s["mesh"]
  out = f"data={m['data']} fsdp={m['fsdp']} tensor={m['tensor']} remat={s['remat']}"
  out += f" accum={s['grad_accum']}"
  return out + (f" batch={s['batch']}" if "batch" in s else "")


def _gib(n: float) -> str:
  return f"{n / GiB:.3g}"


def format_table(reports: list[Report], chip: Chip, num_devices: int) -> str:
  head = ("| program | setting | args GiB | out GiB | temp GiB | total GiB | HBM GiB | fits "
          "| TFLOP/step/device | est. step ms | MFU bound |")
  rows = [head, "|" + "---|" * 11]
  for r in reports:
    if r.out_of_memory:
      rows.append(f"| {r.name} | {_setting_str(r.setting)} | | | >= {_gib(r.temp_bytes)} | "
                  f">= {_gib(r.total_bytes)} | {_gib(r.hbm_bytes)} | NO (compiler: out of HBM) "
                  f"| | | |")
      continue
    rows.append(
        f"| {r.name} | {_setting_str(r.setting)} | {_gib(r.argument_bytes)} | "
        f"{_gib(r.output_bytes)} | {_gib(r.temp_bytes)} | {_gib(r.total_bytes)} | "
        f"{_gib(r.hbm_bytes)} | {'yes' if r.fits else 'NO'} | {r.flops / 1e12:.3g} | "
        f"{r.step_seconds(chip, num_devices) * 1e3:.3g} | {r.mfu(chip, num_devices):.2f} |")
  return "\n".join(rows)


_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file[:arg]",
                                          lock_config=False)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:16x16, v4:4x4x4")
_SEARCH = flags.DEFINE_bool("search", False, "search mesh splits / remat / micro-batches")
_MAX = flags.DEFINE_integer("max_candidates", 12, "mesh splits to try with --search")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 0, "decode batch (0 = the train batch)")
_JSON = flags.DEFINE_string("json", None, "also write the reports to this JSON file")
_PROGRAMS = flags.DEFINE_list("programs", ["train", "decode"], "programs to compile")
_BREAKDOWN = flags.DEFINE_integer("breakdown", 0, "> 0: this many groups of HBM bytes by op")


def main(argv):
  del argv
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
  if not _TOPOLOGY.value:
    raise app.UsageError("--topology is required (e.g. v5e:16x16)")
  devices = topology_devices(_TOPOLOGY.value)
  chip = device_budget(devices)
  print(f"{_TOPOLOGY.value}: {len(devices)} x {devices[0].device_kind}, per device "
        f"{chip.hbm_bytes / GiB:.1f} GiB HBM, {chip.peak_flops / 1e12:.0f} TFLOP/s bf16, "
        f"{chip.hbm_bandwidth / 1e9:.0f} GB/s")
  config = _CONFIG.value
  if _SEARCH.value:
    reports = search(config, devices, max_candidates=_MAX.value)
    fitting = [r for r in reports if r.fits]
    print(f"\n{len(fitting)} of {len(reports)} compiled settings fit, fastest first:")
    reports = fitting or reports
  else:
    unknown = sorted(set(_PROGRAMS.value) - {"train", "decode"})
    if unknown:
      raise app.UsageError(f"--programs: unknown {unknown}; choose from train, decode")
    reports = compile_config(config, devices, what=tuple(_PROGRAMS.value),
                             decode_batch=_DECODE_BATCH.value)
  print(format_table(reports, chip, len(devices)) + "\nest. step: roofline max(FLOPs / peak, "
        "bytes / HBM bandwidth) per device; collectives over ICI are not modelled.")
  for r in reports:
    if r.kernel_flops:
      print(kernel_costs.note(r.name, r.kernel_flops, r.kernel_bytes))
    if _BREAKDOWN.value:
      print(hlo_bytes.report(r.name, r.hlo, r.layer_hlos, _BREAKDOWN.value, r.bytes_accessed))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump([dict({k: v for k, v in dataclasses.asdict(r).items() if "hlo" not in k},
                      total_bytes=r.total_bytes, fits=r.fits,
                      step_seconds=r.step_seconds(chip, len(devices)), mfu=r.mfu(chip, len(devices)))
                 for r in reports], f, indent=2)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
