"""AOT compilation for TPU topologies this machine does not have (experiments.tools.aot_compile).

libtpu describes a v5e slice on a CPU host; every objective's real train step and the decode
step compile for it, sharding shrinks what each chip holds, an oversized model is refused
with the memory it asked for, and the search returns fitting settings fastest first."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu", reason="libtpu absent: install the '.[tpu]' extra to compile "
                                     "for TPU topologies")

from experiments.tools import aot_compile as aot  # noqa: E402
from experiments.configs import arithmetic_seqmatch, bits_cat, default  # noqa: E402

TOPOLOGY = "v5e:2x2"


@pytest.fixture(scope="module")
def devices():
  return aot.topology_devices(TOPOLOGY)


def test_topology_and_budget(devices):
  assert len(devices) == 4 and devices[0].device_kind == "TPU v5 lite"
  chip = aot.device_budget(devices)
  assert chip.hbm_bytes == 16 * aot.GiB and chip.peak_flops == 197e12


@pytest.mark.parametrize("make", [
    lambda: default.get_config("tiny"),                 # MLE
    lambda: bits_cat.get_config("tiny"),                # CAT (decode: attributes of all V)
    lambda: arithmetic_seqmatch.get_config("sm,tiny"),  # SequenceMatch, rollouts compiled in
], ids=["mle", "cat", "seqmatch_rollouts"])
def test_every_objective_compiles_train_and_decode(devices, make, tmp_path):
  config = make()
  if config.objective.name == "seqmatch":
    assert config.objective.rollouts > 0
  reports = aot.compile_config(config, devices, workdir=str(tmp_path))
  assert [r.name for r in reports] == ["train", "decode"]
  for r in reports:
    assert r.fits and not r.out_of_memory
    assert r.argument_bytes > 0 and r.flops > 0 and r.bytes_accessed > 0
  train = reports[0]
  # XLA's count covers at least the analytic matmul FLOPs of forward + backward.
  assert train.flops * len(devices) >= 0.5 * train.model_flops


def test_fsdp_shards_parameters_and_optimizer_state(devices, tmp_path):
  args = {}
  for name, mesh in (("data", dict(data=4, fsdp=1)), ("fsdp", dict(data=1, fsdp=4))):
    c = default.get_config("tiny")
    c.mesh.update(mesh)
    (r,) = aot.compile_config(c, devices, what=("train",), workdir=str(tmp_path / name))
    args[name] = r.argument_bytes
  # The state dominates the arguments; fsdp=4 holds about a quarter of it per chip.
  assert args["fsdp"] < 0.5 * args["data"]


def test_scanned_layers_cost_matches_unrolled(devices, tmp_path):
  # XLA counts a scan body once; the report extrapolates from unrolled 1- and 2-layer copies.
  flops = {}
  for scan in (True, False):
    c = default.get_config("tiny")
    c.model.update(dict(num_layers=4, scan_layers=scan))
    (r,) = aot.compile_config(c, devices, what=("train",), workdir=str(tmp_path / str(scan)))
    flops[scan] = r.flops
  assert flops[True] == pytest.approx(flops[False], rel=0.05)


def test_oversized_model_is_refused_with_its_memory(devices, tmp_path):
  c = default.get_config("tiny")
  # ~1.6B parameters replicated on every chip: params, grads and Adam moments > 16 GiB.
  c.model.update(dict(d_model=8192, num_layers=1, mlp_dim=65536, num_heads=8, num_kv_heads=8))
  c.mesh.update(dict(data=4, fsdp=1))
  (r,) = aot.compile_config(c, devices, what=("train",), workdir=str(tmp_path))
  assert r.out_of_memory and not r.fits
  assert r.total_bytes > 16 * aot.GiB
  assert "NO (compiler: out of HBM)" in aot.format_table([r], aot.device_budget(devices), 4)


def test_mesh_candidates_cover_the_devices():
  cands = aot.mesh_candidates(16, num_heads=4)
  assert all(d * f * t == 16 for d, f, t in cands)
  assert {t for _, _, t in cands} == {1, 2, 4}          # tensor must divide the 4 heads
  assert cands[0] == (1, 16, 1)                          # fsdp-heavy first


def test_search_cli_lists_fitting_settings_fastest_first(tmp_path):
  out = tmp_path / "fit.json"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.tools.aot_compile",
       "--config=experiments/configs/default.py:tiny",
       f"--topology={TOPOLOGY}", "--search", "--max_candidates=2", f"--json={out}"],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| train |" in proc.stdout and "fit, fastest first" in proc.stdout
  rows = json.loads(out.read_text())
  assert len(rows) == 2 and all(r["fits"] for r in rows)
  times = [r["step_seconds"] for r in rows]
  assert times == sorted(times)


def test_unknown_topology_names_the_fix():
  with pytest.raises(RuntimeError, match=r"v5e:16x16"):
    aot.topology_devices("v99:1x1")
