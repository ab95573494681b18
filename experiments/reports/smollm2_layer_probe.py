"""Which SmolLM2-135M layer reads review sentiment best (issue 25)? One pass of the frozen
trunk over N Rotten Tomatoes training reviews (the same fixed subset as smollm2_head_diag and
fit_attribute --limit with this seed) keeps every layer's residual state; then, on each of
the held-out splits fit_attribute uses (split_indices(N, 0.2, seed)), an L2 logistic probe
of each layer's state at the last text token (RMS-normalised, as the attribute branch's
out_norm sees it).

  python -m experiments.reports.smollm2_layer_probe --root=DIR [--texts=3200] [--max_len=48]
      [--seeds=0,1,2] [--seed=0]

Writes DIR/layers_{trunk}_{N}_{max_len}_{seed}.f16 ([layers + 1, N, L, D] float16: state
after k blocks, k = 0 the embeddings; the input for fits at layer k), DIR/layer_probe.json
and DIR/layer_probe.md."""
import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from catrans.fit_data import split_indices
from catrans.layers import Block
from experiments.reviews.probes import logistic_probe, review_sequences

HELDOUT = 0.2


def layer_states(model, params, inputs_NxL, out, batch_size: int = 32):
  """Fills out[k] ([layers + 1, N, L, D]) with the residual stream after k blocks."""
  def is_block(mdl, method_name):
    return isinstance(mdl, Block) and method_name == "__call__"

  @jax.jit
  def states(p, x_BxL):
    _, inter = model.apply({"params": p}, x_BxL, return_logits=False,
                           capture_intermediates=is_block, mutable=["intermediates"])
    inter = inter["intermediates"]
    blocks = [inter[f"layer_{i}"]["__call__"][0][0] for i in range(model.cfg.num_layers)]
    embeds = model.apply({"params": p}, x_BxL, method=type(model).embed_tokens)
    return jnp.stack([embeds] + blocks)                # [layers + 1, B, L, D]

  n = inputs_NxL.shape[0]
  b = min(batch_size, n)
  for start in range(0, n, b):
    idx = np.arange(start, start + b) % n              # wrap the last batch: one shape
    h = np.asarray(states(params, jnp.asarray(inputs_NxL[idx])))
    out[:, start:start + min(b, n - start)] = h[:, :min(b, n - start)].astype(out.dtype)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--trunk", default="smollm2")
  ap.add_argument("--texts", type=int, default=3200)
  ap.add_argument("--max_len", type=int, default=48)
  ap.add_argument("--seed", type=int, default=0, help="picks the texts")
  ap.add_argument("--seeds", default="0,1,2", help="held-out splits (fit_attribute's seeds)")
  a = ap.parse_args(argv)
  root = os.path.abspath(a.root)
  os.makedirs(root, exist_ok=True)
  model, params, seqs, data, labels = review_sequences(a.trunk, a.texts, a.max_len, a.seed)
  shape = (model.cfg.num_layers + 1, *data["inputs"].shape, model.cfg.d_model)
  path = os.path.join(root, f"layers_{a.trunk}_{a.texts}_{a.max_len}_{a.seed}.f16")
  t0, pass_s = time.perf_counter(), None
  if os.path.exists(path) and os.path.getsize(path) == np.prod(shape) * 2:
    states = np.memmap(path, np.float16, "r", shape=shape)
  else:
    states = np.memmap(path + ".part", np.float16, "w+", shape=shape)
    layer_states(model, params, data["inputs"], states)
    states.flush()
    os.replace(path + ".part", path)
    pass_s = time.perf_counter() - t0
    states = np.memmap(path, np.float16, "r", shape=shape)
  last = data["lengths"] - 1                           # the row of the last text token
  x_KxNxD = np.asarray(states[:, np.arange(len(last)), last], np.float64)
  x_KxNxD /= np.sqrt(np.mean(x_KxNxD ** 2, -1, keepdims=True) + 1e-6)
  seeds = [int(s) for s in a.seeds.split(",")]
  report = {"command": "python -m experiments.reports.smollm2_layer_probe " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "texts": len(labels), "pass_s": pass_s, "layers": {}}
  for k in range(shape[0]):
    per_split = []
    for s in seeds:
      tr, he = split_indices(len(labels), HELDOUT, s)
      # Newton's method on an L2-regularised logistic loss settles within ~10 steps.
      per_split.append(logistic_probe(x_KxNxD[k, tr], labels[tr], x_KxNxD[k, he], labels[he],
                                      iters=15))
    report["layers"][k] = {m: [r[m] for r in per_split] for m in ("accuracy", "log_loss", "ece")}
    print(k, np.round(report["layers"][k]["accuracy"], 3), flush=True)
  with open(os.path.join(root, "layer_probe.json"), "w") as f:
    json.dump(report, f, indent=1)
  lines = [f"# SmolLM2-135M: logistic probe of each layer's last-token state "
           f"({report['texts']} reviews, splits {seeds})", "", f"`{report['command']}`", "",
           "| layer | acc per split | mean acc | mean log-loss | mean ECE |", "|---|---|---|---|---|"]
  for k, r in report["layers"].items():
    lines.append(f"| {k} | {' / '.join(f'{v:.3f}' for v in r['accuracy'])} | "
                 f"{np.mean(r['accuracy']):.3f} | {np.mean(r['log_loss']):.3f} | "
                 f"{np.mean(r['ece']):.3f} |")
  md = "\n".join(lines + [""])
  with open(os.path.join(root, "layer_probe.md"), "w") as f:
    f.write(md)
  print(md)


if __name__ == "__main__":
  main()
