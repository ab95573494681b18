"""Writes the colab/*.ipynb files from the cell lists below (outputs empty).

Notebooks are generated so that reviewing a change means reading Python, not JSON:
edit a cell list here, run `python colab/build_notebooks.py`, commit both."""
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Install the library (Colab); locally, `pip install -e .` in a clone does the same.
import os, subprocess, sys
REPO = os.environ.get("CATRANS_REPO", "https://github.com/catrans-seqmatch/catrans-seqmatch")
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"git+{REPO}"], check=True)
# Tiny settings (CI executes every notebook this way): CATRANS_NOTEBOOK_TINY=1.
TINY = os.environ.get("CATRANS_NOTEBOOK_TINY", "0") == "1"'''


def launch():
  return [
      new_markdown_cell(
          "# Launching catrans / seqmatch training: CPU, multi-GPU, TPU pods\n\n"
          "One program runs everywhere: a `jax.sharding.Mesh` with three axes "
          "(`data`, `fsdp`, `tensor`), logical-axis rules in the config, and a pure jitted "
          "`train_step(state, batch)`. This notebook shows the mesh, the config overrides "
          "and checkpoint resume on whatever runtime you have (on a CPU runtime it "
          "simulates 8 devices)."),
      new_code_cell(INSTALL),
      new_code_cell(
          "# On a CPU runtime, simulate 8 devices (must happen before JAX starts).\n"
          "os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')\n"
          "import jax\n"
          "print(jax.device_count(), 'devices:', jax.devices()[0].device_kind)"),
      new_markdown_cell(
          "## The mesh and where each parameter lives\n"
          "`config.mesh` gives the axis sizes (`-1` = the remaining devices); "
          "`experiments.sharding.DEFAULT_RULES` maps the model's logical axes "
          "(`embed`, `heads`, `mlp`, `vocab`, ...) onto mesh axes, and "
          "`config.logical_rules` overrides them."),
      new_code_cell(
          "import experiments.configs.default as default\n"
          "from experiments import sharding\n"
          "from experiments.trainer import Trainer\n"
          "import tempfile\n"
          "n = jax.device_count()\n"
          "config = default.get_config('tiny')\n"
          "config.model.num_kv_heads = 2\n"
          "config.mesh.update(dict(data=-1, fsdp=2 if n % 2 == 0 else 1,\n"
          "                        tensor=2 if n % 4 == 0 else 1))\n"
          "trainer = Trainer(config, tempfile.mkdtemp(), progress=False)\n"
          "print('mesh:', dict(trainer.mesh.shape))\n"
          "flat = jax.tree_util.tree_flatten_with_path(trainer.params_shardings)[0]\n"
          "for path, s in flat:\n"
          "    print(f\"{jax.tree_util.keystr(path):45s} {s.spec}\")"),
      new_markdown_cell(
          "## Train from the command line, with overrides\n"
          "Every config value can be overridden with `--config.section.key=value`; an "
          "unknown key is an error. The run prints where its metrics, TensorBoard events, "
          "plot and checkpoints are."),
      new_code_cell(
          "import experiments.configs, subprocess\n"
          "CONFIGS = os.path.dirname(experiments.configs.__file__)\n"
          "WORKDIR = tempfile.mkdtemp()\n"
          "steps = 6 if TINY else 200\n"
          "def train(*overrides, steps=steps):\n"
          "    cmd = [sys.executable, '-m', 'experiments.train',\n"
          "           f'--config={CONFIGS}/default.py:tiny', f'--workdir={WORKDIR}',\n"
          "           f'--config.train.steps={steps}', '--config.train.checkpoint_every=3',\n"
          "           '--config.mesh.data=-1', '--config.mesh.fsdp=2', *overrides]\n"
          "    out = subprocess.run(cmd, capture_output=True, text=True)\n"
          "    print(out.stdout[-1500:]); assert out.returncode == 0, out.stderr[-3000:]\n"
          "train()"),
      new_markdown_cell(
          "## Resume\nRe-running the same command with the same `--workdir` resumes from the "
          "newest readable checkpoint (params, optimizer, step, RNG and the data "
          "iterator's position), so a preempted job continues bit-for-bit. SIGTERM "
          "(what TPU preemption and `kill` send) saves a checkpoint before exiting."),
      new_code_cell("train(steps=steps + 3)\n"
                    "print(open(os.path.join(WORKDIR, 'train.log')).read()[-600:])"),
      new_markdown_cell(
          "## The exact commands on real hardware\n\n"
          "**One machine, several GPUs** (all devices are used; shard weights with FSDP):\n"
          "```bash\npip install -e \".[gpu]\"\n"
          "python -m experiments.train --config=experiments/configs/default.py:pod \\\n"
          "  --workdir=/ckpt/run1 --config.mesh.fsdp=-1 --config.mesh.data=1\n```\n\n"
          "**A TPU pod slice** (the same command on every worker; JAX finds the cluster):\n"
          "```bash\ngcloud compute tpus tpu-vm ssh my-v5e-64 --worker=all --command=\"\\\n"
          "  cd catrans-seqmatch && pip install -e '.[tpu]' && \\\n"
          "  python -m experiments.train --config=experiments/configs/default.py:pod \\\n"
          "    --workdir=gs://my-bucket/run1 --config.mesh.fsdp=16 --config.mesh.tensor=1\"\n```\n\n"
          "**Several GPU hosts** (explicit coordinator; run on every host with its id):\n"
          "```bash\npython -m experiments.train --config=experiments/configs/default.py:pod \\\n"
          "  --workdir=/shared/run1 --coordinator_address=host0:1234 \\\n"
          "  --num_processes=4 --process_id=$RANK\n```\n\n"
          "Each host reads only its rows of every global batch; the global batch must "
          "divide `data x fsdp` (the trainer says so before compiling if it does not)."),
  ]


NOTEBOOKS = {"launch_on_pods.ipynb": launch}


def build(names=None):
  for name, cells in NOTEBOOKS.items():
    if names and name not in names:
      continue
    nb = new_notebook(cells=cells())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["accelerator"] = "TPU"
    nbformat.write(nb, os.path.join(HERE, name))


if __name__ == "__main__":
  build(sys.argv[1:])
