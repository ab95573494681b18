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
          "# Appended, so XLA flags you already set are kept.\n"
          "flags = os.environ.get('XLA_FLAGS', '')\n"
          "if 'xla_force_host_platform_device_count' not in flags:\n"
          "  os.environ['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count=8'.strip()\n"
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
          "## Before the pod: will it fit?\n\n"
          "With the `tpu` extra, this CPU host compiles the real train step and decode step "
          "for any TPU slice and prints per-chip memory against HBM, FLOPs, a roofline step "
          "time and whether it fits (`--search` tries mesh splits, remat and micro-batches):\n"
          "```bash\npip install -e \".[tpu]\"\n"
          "python -m experiments.tools.aot_compile --config=experiments/configs/default.py:pod "
          "--topology=v5e:16x16 --search\n```\n"
          "`python -m experiments.tools.env_check` on a worker prints versions, devices and what "
          "each extra still lacks."),
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
          "  --num_processes=4 --process_id=$RANK\n```\n"
          "or let the scripts in `experiments/launch/` do it: `sbatch --nodes=4 "
          "experiments/launch/slurm.sbatch --config=... --workdir=...` (SLURM), "
          "`experiments/launch/worker.sh` (reads SLURM_* or MASTER_ADDR/WORLD_SIZE/RANK), "
          "`experiments/launch/tpu_pod.sh setup|ARGS` (TPU VMs). At start-up every process "
          "checks that all processes joined within `--preflight_timeout` seconds, that the "
          "devices match the mesh, the batch divides and the workdir is writable, and exits "
          "with a message instead of hanging. A checkpoint restores onto a different mesh "
          "(e.g. a smaller slice).\n\n"
          "Each host reads only its rows of every global batch; the global batch must "
          "divide `data x fsdp` (the trainer says so before compiling if it does not)."),
  ]


def seqmatch_demo():
  return [
      new_markdown_cell(
          "# SequenceMatch: a `<bkspc>` action and a chi-squared occupancy objective\n\n"
          "1. how one causal forward pass scores every state of an action sequence with "
          "backspaces (the attention mask, drawn), 2. training on the arithmetic task "
          "(BC warm-up, then SequenceMatch with on-policy rollouts), 3. generations that "
          "use `<bkspc>`."),
      new_code_cell(INSTALL),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "import seqmatch\n"
          "from catrans import ModelConfig, Transformer\n"
          "from experiments.data.tokenizers import ByteTokenizer\n"
          "tok = ByteTokenizer()\n"
          "vocab = seqmatch.BackspaceVocab(tok.vocab_size)      # <bkspc> = 259\n"
          "BK = vocab.backspace_id\n"
          "prompt = [tok.bos_id] + tok.encode('7+5=')\n"
          "actions = tok.encode('13') + [BK, BK] + tok.encode('12') + [tok.eos_id]\n"
          "seq = prompt + actions\n"
          "one = seqmatch.build_one_pass(jnp.array([seq]), jnp.array([len(prompt)]),\n"
          "                              jnp.array([len(seq)]), vocab_size=vocab.num_actions,\n"
          "                              backspace_id=BK, eos_id=tok.eos_id)\n"
          "def label(t):\n"
          "    return '<bk>' if t == BK else '<eos>' if t == tok.eos_id else '<bos>' if t == tok.bos_id else tok.decode([t])\n"
          "rows = [f'{label(a)} -> {label(int(x))}@{int(p)}' for a, x, p in\n"
          "        zip(seq, one.tokens[0], one.positions[0])]\n"
          "fig, ax = plt.subplots(figsize=(6, 6))\n"
          "ax.imshow(np.asarray(one.mask[0]), cmap='Greens')\n"
          "ax.set_yticks(range(len(seq))); ax.set_yticklabels(rows, fontsize=8)\n"
          "ax.set_xticks(range(len(seq))); ax.set_xticklabels([label(int(x)) for x in one.tokens[0]], fontsize=8)\n"
          "ax.set_title('row t attends to the rows alive in state t\\n(action -> input token @ position)')\n"
          "plt.show()"),
      new_markdown_cell(
          "Each `<bkspc>` row holds a copy of the token that is now last, at that token's "
          "original position; the deleted token and the superseded original are dead for "
          "all later rows. So row t's logits are those of a plain forward over the collapsed "
          "state after action t. Check it on a random model:"),
      new_code_cell(
          "cfg = ModelConfig(vocab_size=vocab.num_actions, d_model=32, num_layers=2, num_heads=2,\n"
          "                  num_kv_heads=1, mlp_dim=64, max_len=64)\n"
          "model = Transformer(cfg)\n"
          "params = model.init(jax.random.PRNGKey(0), one.tokens)['params']\n"
          "one_pass = model.apply({'params': params}, one.tokens, one.positions, one.mask).logits[0]\n"
          "worst = 0.0\n"
          "for t, state in enumerate(seqmatch.collapse_states(seq, len(prompt), BK)):\n"
          "    if t < len(prompt) - 1: continue\n"
          "    plain = model.apply({'params': params}, jnp.array([state])).logits[0, -1]\n"
          "    worst = max(worst, float(jnp.abs(plain - one_pass[t]).max()))\n"
          "print('max |one-pass - per-state forward| =', worst)"),
      new_markdown_cell("## Train on arithmetic\nThe trainer config `arithmetic_seqmatch.py:sm`: "
                        "ground-truth noise (plausible wrong digits followed by `<bkspc>`), "
                        "BC for `bc_steps`, then the SequenceMatch-chi2 mixture loss with "
                        "rollouts sampled inside the compiled step."),
      new_code_cell(
          "import tempfile\n"
          "from experiments.configs import arithmetic_seqmatch\n"
          "from experiments.trainer import Trainer\n"
          "from experiments.observe import read_metrics\n"
          "config = arithmetic_seqmatch.get_config('sm,tiny' if TINY else 'sm')\n"
          "if not TINY:  # a few minutes on a CPU runtime\n"
          "    config.train.steps, config.objective.bc_steps = 400, 250\n"
          "    config.model.update(dict(d_model=96, num_layers=3))\n"
          "config.train.progress = not TINY\n"
          "workdir = tempfile.mkdtemp()\n"
          "summary = Trainer(config, workdir).run()\n"
          "m = read_metrics(workdir)\n"
          "plt.plot([r['step'] for r in m if 'bc/nll' in r], [r['bc/nll'] for r in m if 'bc/nll' in r], label='BC nll')\n"
          "plt.axvline(config.objective.bc_steps, color='gray', ls='--', label='SequenceMatch starts')\n"
          "plt.xlabel('step'); plt.legend(); plt.show()"),
      new_markdown_cell("## Generations with `<bkspc>`\nSampled at temperature 1 so that "
                        "the model makes (and undoes) mistakes."),
      new_code_cell(
          "from experiments.reports.arithmetic_eval import evaluate\n"
          "from experiments.runs import load_trainer\n"
          "trainer = load_trainer(workdir)\n"
          "state = trainer.restore_latest()\n"
          "result = evaluate(trainer, state, max_questions=10 if TINY else 100, batch_size=10)\n"
          "print('greedy accuracy', result['accuracy'], 'backspace rate', result['backspace_rate'])\n"
          "obj = trainer.objective\n"
          "qs = list(trainer.task.source('test'))[:8]\n"
          "prompts = [[tok.bos_id] + tok.encode(q['prompt']) for q in qs]\n"
          "P = max(map(len, prompts))\n"
          "arr = np.zeros((len(qs), P), np.int32)\n"
          "for i, p in enumerate(prompts): arr[i, :len(p)] = p\n"
          "g = seqmatch.generate(obj.apply_fn, obj.init_cache_fn, state.params, jnp.array(arr),\n"
          "                      jnp.array([len(p) for p in prompts]), jax.random.PRNGKey(1),\n"
          "                      max_actions=16, backspace_id=BK, eos_id=tok.eos_id, temperature=1.0)\n"
          "show = seqmatch.BackspaceTokenizer(tok)\n"
          "for i, q in enumerate(qs):\n"
          "    acts = np.asarray(g.actions[i, :int(g.num_actions[i])])\n"
          "    print(f\"{q['prompt']}{show.decode(acts, mode='show')!r:40s} expected {q['answer']}\")"),
  ]


def cat_demo():
  return [
      new_markdown_cell(
          "# Conditional Attribute Transformer: credit, counterfactuals, steering\n\n"
          "A CAT gives, in one forward pass, p(next token | prefix) and, for *every* "
          "candidate next token, P(attribute | prefix, token). We train a small one on random "
          "bit strings whose attribute is the majority (so the exact answer is a binomial "
          "tail and we can check it), then read per-token credit, counterfactuals and steer "
          "generation."),
      new_code_cell(INSTALL),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np, tempfile\n"
          "import matplotlib.pyplot as plt\n"
          "from experiments.configs import bits_cat\n"
          "from experiments.trainer import Trainer\n"
          "from experiments.tasks import bits\n"
          "config = bits_cat.get_config('tiny' if TINY else None)\n"
          "if not TINY:\n"
          "    config.train.steps = 400\n"
          "config.train.progress = not TINY\n"
          "trainer = Trainer(config, tempfile.mkdtemp())\n"
          "summary = trainer.run()\n"
          "model, params = trainer.objective.model, trainer.restore_params()\n"
          "tok = trainer.task.tokenizer\n"
          "print(summary.final_metrics.get('attr_acc/label'))"),
      new_markdown_cell("## Estimates vs the exact probability, and per-token credit\n"
                        "`catrans.inference.estimate` returns q_t = P(a | x_<=t), the value "
                        "V(s_t) and the advantage credit c_t = Q(s_{t-1}, x_t) - V(s_{t-1}) "
                        "for every position at once."),
      new_code_cell(
          "from catrans.inference import estimate, counterfactuals\n"
          "examples = list(trainer.task.source('test'))[:6]\n"
          "tokens = jnp.asarray([[tok.bos_id] + tok.encode(e['text']) for e in examples])\n"
          "est = estimate(model, params, tokens, attribute='label', target=1)\n"
          "n = len(examples[0]['text'])\n"
          "exact = bits.exact_curve([int(c) for c in examples[0]['text']], bits.majority_threshold(n))\n"
          "plt.plot(np.asarray(est.q[0]), marker='o', label='CAT q_t')\n"
          "plt.plot(exact, marker='x', label='exact P(majority | prefix)')\n"
          "plt.xlabel('t (bits read)'); plt.legend(); plt.show()"),
      new_code_cell(
          "from IPython.display import HTML\n"
          "def heat(text, credit):\n"
          "    cells = []\n"
          "    for ch, c in zip(text, credit):\n"
          "        r, g = (255, int(255 * (1 - min(1, -c * 3)))) if c < 0 else (int(255 * (1 - min(1, c * 3))), 255)\n"
          "        cells.append(f'<span style=\"background: rgb({r},{g},{min(r, g)}); padding: 2px; font-family: monospace\">{ch}</span>')\n"
          "    return ''.join(cells)\n"
          "rows = [heat(e['text'], np.asarray(est.advantage[i, 1:])) + f\"&nbsp; label={e['label']}\"\n"
          "        for i, e in enumerate(examples)]\n"
          "HTML('<br>'.join(rows))"),
      new_markdown_cell("## Counterfactuals at one position\nWhat would P(majority) be if "
                        "token t had been something else (here: the top-3 tokens by p)?"),
      new_code_cell(
          "cf = counterfactuals(model, params, tokens[:1], jnp.array([4]), attribute='label', top_k=3, target=1)\n"
          "print(f\"actual token {tok.decode([int(tokens[0, 4])])!r}: P(majority) = {float(cf.actual_q[0]):.3f}\")\n"
          "for v, q, p, d in zip(cf.tokens[0], cf.q[0], cf.token_probs[0], cf.delta[0]):\n"
          "    print(f'  if {tok.decode([int(v)])!r:8s} (p={float(p):.2f}): P(majority) = {float(q):.3f}  ({float(d):+.3f})')"),
      new_markdown_cell("## Steered decoding\nWeighted steering adds gamma log "
                        "P(a = target | s, v) to log p(v | s); the attribute estimate of each "
                        "chosen token is returned, so we can watch it over time."),
      new_code_cell(
          "from catrans.steering import SteeringConfig, Target, steered_decode\n"
          "prompts = jnp.full((64, 1), tok.bos_id)\n"
          "fig, ax = plt.subplots()\n"
          "for gamma in (0.0, 1.0, 4.0):\n"
          "    sc = SteeringConfig(rule='weighted', targets=(Target('label', 1, gamma),), temperature=1.0)\n"
          "    d = steered_decode(model, params, prompts, jnp.ones((64,), jnp.int32), jax.random.PRNGKey(0),\n"
          "                       steering=sc, max_new_tokens=n)\n"
          "    texts = [tok.decode([int(t) for t in row]) for row in d.new_tokens]\n"
          "    ones = np.mean([t.count('1') >= bits.majority_threshold(n) for t in texts])\n"
          "    ax.plot(np.asarray(d.attr_trace).mean(0), label=f'gamma={gamma}: majority in {ones:.0%}')\n"
          "    print(gamma, texts[:3])\n"
          "ax.set_xlabel('generated token'); ax.set_ylabel('mean P(majority | s, chosen token)')\n"
          "ax.legend(); plt.show()"),
  ]


NOTEBOOKS = {"cat_credit_and_steering.ipynb": cat_demo, "launch_on_pods.ipynb": launch, "seqmatch_arithmetic.ipynb": seqmatch_demo}


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
