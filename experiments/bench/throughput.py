"""Train-step throughput of the catrans trunk vs a plain linen transformer, as a fraction
of this machine's measured matmul peak (MFU), in one run.

  python -m experiments.bench.throughput [--d_model 512 --num_layers 8 --seq_len 512]

The baseline is the straightforward linen model a user would write (nn.SelfAttention,
LayerNorm, GELU MLP, untied output) at the same width, depth and length; both are timed
with the same optimizer (AdamW) and the same number of steps. The ratio line is what to
compare across machines; absolute numbers depend on the host."""
import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from catrans import ModelConfig, Transformer
from experiments import observe


class PlainBlock(nn.Module):
  d: int
  heads: int
  mlp: int

  @nn.compact
  def __call__(self, x, mask):
    h = nn.LayerNorm()(x)
    x = x + nn.SelfAttention(num_heads=self.heads, qkv_features=self.d)(h, mask=mask)
    h = nn.LayerNorm()(x)
    return x + nn.Dense(self.d)(nn.gelu(nn.Dense(self.mlp)(h)))


class PlainLM(nn.Module):
  vocab: int
  d: int
  layers: int
  heads: int
  mlp: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.d)(tokens)
    mask = nn.make_causal_mask(tokens)
    for _ in range(self.layers):
      x = PlainBlock(self.d, self.heads, self.mlp)(x, mask)
    return nn.Dense(self.vocab)(nn.LayerNorm()(x))


def plain_flops_per_token(vocab, d, layers, mlp, seq_len):
  dense = layers * (4 * d * d + 2 * d * mlp) + d * vocab
  attn = 2 * layers * d * seq_len / 2   # causal QK^T and AV, half the square
  return 3.0 * 2.0 * (dense + attn)


def _time_steps(step, state, batch, steps):
  state, loss = step(state, batch)          # compile + warm-up
  jax.block_until_ready(loss)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, loss = step(state, batch)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), float(loss)


def _make_step(apply_loss, tx):
  def step(state, batch):
    params, opt = state
    loss, grads = jax.value_and_grad(apply_loss)(params, batch)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), loss
  return jax.jit(step, donate_argnums=(0,))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--d_model", type=int, default=512)
  p.add_argument("--num_layers", type=int, default=8)
  p.add_argument("--num_heads", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=512)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--vocab", type=int, default=259)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--remat", default="none")
  a = p.parse_args()
  mlp = 4 * a.d_model
  peak = observe.measure_peak_flops(jnp.float32)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (a.batch, a.seq_len + 1), 3, a.vocab)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  tx = optax.adamw(1e-4)

  cfg = ModelConfig(vocab_size=a.vocab, d_model=a.d_model, num_layers=a.num_layers,
                    num_heads=a.num_heads, num_kv_heads=a.num_heads,
                    mlp_dim=int(mlp * 2 / 3) // 64 * 64,  # SwiGLU at the same FLOPs
                    max_len=a.seq_len, remat=a.remat, tie_embeddings=False)
  ours = Transformer(cfg)
  params = ours.init(jax.random.PRNGKey(1), batch["inputs"][:, :8])["params"]
  params = nn.meta.unbox(params)

  def ours_loss(params, b):
    logits = ours.apply({"params": params}, b["inputs"]).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"]).mean()

  plain = PlainLM(a.vocab, a.d_model, a.num_layers, a.num_heads, mlp)
  pparams = plain.init(jax.random.PRNGKey(1), batch["inputs"][:, :8])["params"]

  def plain_loss(params, b):
    logits = plain.apply({"params": params}, b["inputs"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"]).mean()

  n_tok = a.batch * a.seq_len
  rows = []
  for name, loss_fn, prm, fpt in (
      ("plain linen", plain_loss, pparams,
       plain_flops_per_token(a.vocab, a.d_model, a.num_layers, mlp, a.seq_len)),
      ("catrans trunk", ours_loss, params, cfg.flops_per_token(a.seq_len))):
    sec, _ = _time_steps(_make_step(loss_fn, tx), (prm, tx.init(prm)), batch, a.steps)
    mfu = fpt * n_tok / sec / (peak * jax.local_device_count())
    rows.append((name, sec, n_tok / sec, mfu))
  print(f"device: {jax.local_device_count()} x {jax.devices()[0].device_kind}; measured f32 "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s per device")
  print(f"model: d={a.d_model} layers={a.num_layers} L={a.seq_len} batch={a.batch}")
  print(f"{'model':<15}{'step s':>9}{'tokens/s':>11}{'MFU':>8}")
  for name, sec, tps, mfu in rows:
    print(f"{name:<15}{sec:>9.3f}{tps:>11,.0f}{mfu:>8.1%}")
  print(f"ratio catrans / plain tokens/s: {rows[1][2] / rows[0][2]:.2f}x; "
        f"MFU {rows[1][3]:.1%} vs {rows[0][3]:.1%}")


if __name__ == "__main__":
  main()
