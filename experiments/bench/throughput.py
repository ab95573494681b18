"""Train-step throughput of experiments' trainer vs a plain linen transformer, as a fraction
of this machine's measured matmul peak (MFU), in one run.

  python -m experiments.bench.throughput [--d_model 512 --num_layers 8 --seq_len 512]
  python -m experiments.bench.throughput --part=long   # L=2048: attention impls (long_context)

Three contenders at the same width, depth, length, batch and tokens:
  plain linen    the straightforward model a user would write (nn.SelfAttention, LayerNorm,
                 GELU MLP, untied output) with a hand-written optax.adamw step;
  catrans trunk  catrans.Transformer (SwiGLU at the same FLOPs, untied output) with the same
                 hand-written step: the trunk alone;
  trainer        what `python -m experiments.train` runs: experiments.trainer.Trainer built
                 from experiments/configs/default.py with these sizes, its compiled train_step
                 (the config's AdamW with clipping and schedule, a parameter moving average,
                 the non-finite check, the MLE loss with positions and segment ids).
They are timed with experiments/bench/timing.py: alternated round by round after warm-up,
with the matmul peak (the best of the same rounds' large matmuls) interleaved; medians with
their min-max spread. FLOPs per token come from one formula for all (flops_per_token).
The ratio lines are what to compare across machines; absolute numbers depend on the host."""
import argparse
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from catrans import Transformer
from experiments import sharding
from experiments.bench import long_context, timing
from experiments.configs import default
from experiments.trainer import Trainer


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


def flops_per_token(*, d, layers, vocab, seq_len, attn_weights, mlp_weights):
  """Training FLOPs per token (forward + backward = 3x forward), matmuls only: 2 per weight of
  every per-layer matrix and of the output layer over the real vocabulary, plus causal
  attention scores and values (half of the L x L square). Norms and the embedding lookup
  are not matmuls and are not counted. The one formula for every contender."""
  dense = layers * (attn_weights + mlp_weights) + d * vocab
  attn = 2 * layers * d * seq_len / 2
  return 3.0 * 2.0 * (dense + attn)


def _adamw_step(loss_fn, tx):
  def step(state, batch):
    params, opt = state
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), loss
  return jax.jit(step, donate_argnums=(0,))


def _stateful(step, state, batch):
  """A thunk doing one step on its own state; it returns everything the step produced, so
  the timer waits for the whole update, not only the loss."""
  holder = [state]

  def go():
    holder[0], out = step(holder[0], batch)
    return holder[0], out
  return go


def make_trainer(a, workdir):
  c = default.get_config()
  mlp = max(64, int(4 * a.d_model * 2 / 3) // 64 * 64)  # SwiGLU at the plain MLP's FLOPs
  c.model.update(dict(vocab_size=a.vocab, d_model=a.d_model, num_layers=a.num_layers,
                      num_heads=a.num_heads, num_kv_heads=a.num_heads, mlp_dim=mlp,
                      max_len=a.seq_len, remat=a.remat, tie_embeddings=False))
  c.data.update(dict(seq_len=a.seq_len, global_batch_size=a.batch))
  c.task.update(dict(num_train=64, num_test=8))          # the rows are random tokens here
  c.optimizer.ema_decay = a.ema_decay
  c.train.progress = False
  # One device, like the hand-written steps: a data-parallel trainer on a multi-device host
  # would be divided by one device's peak against their one device.
  return Trainer(c, workdir, devices=jax.local_devices()[:1], progress=False)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--d_model", type=int, default=512)
  p.add_argument("--num_layers", type=int, default=8)
  p.add_argument("--num_heads", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=512)
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--vocab", type=int, default=259)
  p.add_argument("--rounds", type=int, default=5, help="timed rounds (medians)")
  p.add_argument("--remat", default="none")
  p.add_argument("--ema_decay", type=float, default=0.999,
                 help="the trainer's parameter moving average (0 = none)")
  p.add_argument("--peak_size", type=int, default=2048, help="matmul side of the peak probe")
  p.add_argument("--part", choices=("contenders", "long"), default="contenders",
                 help="long: chunked vs xla attention at --seq_len (default 2048 there)")
  long_context.add_flags(p)
  a = p.parse_args(argv)
  if a.part == "long":
    if "--seq_len" not in (argv or __import__("sys").argv):
      a.seq_len = 2048
    print(timing.machine())
    return long_context.run(a)
  print(timing.machine())
  tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (a.batch, a.seq_len + 1), 3,
                                         a.vocab), np.int32)
  rows = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
          "weights": np.ones((a.batch, a.seq_len), np.float32),
          "positions": np.broadcast_to(np.arange(a.seq_len, dtype=np.int32),
                                       (a.batch, a.seq_len)).copy(),
          "segment_ids": np.ones((a.batch, a.seq_len), np.int32)}
  batch = {k: jnp.asarray(rows[k]) for k in ("inputs", "targets")}
  tx = optax.adamw(1e-4)
  mlp = 4 * a.d_model

  with tempfile.TemporaryDirectory() as workdir:
    trainer = make_trainer(a, workdir)
    cfg = trainer.objective.model_config
    state = trainer.init_state()
    global_rows = sharding.global_batch(trainer.objective.prepare_batch(rows, 0), trainer.mesh)

    def trainer_step(state, b):
      with trainer.context():
        return trainer.jitted_train_step(state, b)

    trunk = Transformer(cfg)
    tparams = nn.meta.unbox(jax.jit(lambda r: trunk.init(r, batch["inputs"][:, :8]))(
        jax.random.PRNGKey(1))["params"])
    plain = PlainLM(a.vocab, a.d_model, a.num_layers, a.num_heads, mlp)
    pparams = jax.jit(lambda r: plain.init(r, batch["inputs"][:, :8]))(
        jax.random.PRNGKey(1))["params"]

    def ce(logits, b):
      return optax.softmax_cross_entropy_with_integer_labels(logits, b["targets"]).mean()

    trunk_loss = lambda prm, b: ce(trunk.apply({"params": prm}, b["inputs"]).logits, b)
    plain_loss = lambda prm, b: ce(plain.apply({"params": prm}, b["inputs"]), b)
    contenders = {
        "plain linen": _stateful(_adamw_step(plain_loss, tx), (pparams, tx.init(pparams)),
                                 batch),
        "catrans trunk": _stateful(_adamw_step(trunk_loss, tx), (tparams, tx.init(tparams)),
                                   batch),
        "trainer": _stateful(trainer_step, state, global_rows),
    }
    t = timing.compare(contenders, a.rounds, peak_size=a.peak_size)

  peak = t[timing.PEAK]["flops"]
  h = cfg.dim_per_head
  fpt = {"plain linen": flops_per_token(d=a.d_model, layers=a.num_layers, vocab=a.vocab,
                                        seq_len=a.seq_len, attn_weights=4 * a.d_model ** 2,
                                        mlp_weights=2 * a.d_model * mlp)}
  fpt["catrans trunk"] = fpt["trainer"] = flops_per_token(
      d=a.d_model, layers=a.num_layers, vocab=a.vocab, seq_len=a.seq_len,
      attn_weights=2 * a.d_model * h * (cfg.num_heads + cfg.num_kv_heads),
      mlp_weights=3 * a.d_model * cfg.mlp_dim)
  n_tok = a.batch * a.seq_len
  rows_out = {}
  print(f"f32 matmul peak {peak / 1e9:.1f} GFLOP/s on the one device every contender runs "
        f"on (best of {a.rounds} {a.peak_size}^3 matmuls in the same rounds; per matmul "
        f"{timing.spread(t[timing.PEAK], 1e3, '.1f')} ms)")
  print(f"model: d={a.d_model} layers={a.num_layers} L={a.seq_len} batch={a.batch} "
        f"vocab={a.vocab}; trainer: ema_decay={a.ema_decay}, nonfinite="
        f"{trainer.config.train.nonfinite}; medians of {a.rounds} alternated rounds")
  print(f"{'contender':<15}{'step s, median (min-max)':>28}{'tokens/s':>11}{'FLOPs/token':>13}"
        f"{'MFU':>8}")
  for name in contenders:
    sec = t[name]["median"]
    rows_out[name] = dict(step_s=sec, spread=(t[name]["min"], t[name]["max"]),
                          tokens_s=n_tok / sec, flops_per_token=fpt[name],
                          mfu=fpt[name] * n_tok / sec / peak)
    r = rows_out[name]
    print(f"{name:<15}{timing.spread(t[name]):>28}{r['tokens_s']:>11,.0f}"
          f"{r['flops_per_token']:>13.3g}{r['mfu']:>8.1%}")
  base = rows_out["plain linen"]
  for name in ("trainer", "catrans trunk"):
    r = rows_out[name]
    print(f"ratio {name} / plain tokens/s: {r['tokens_s'] / base['tokens_s']:.2f}x; MFU "
          f"{r['mfu']:.1%} vs {base['mfu']:.1%}")
  return dict(rows=rows_out, peak_flops=peak, timing=t)


if __name__ == "__main__":
  main()
