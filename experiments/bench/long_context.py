"""Long context on this host: attention memory and train-step tokens/s of the attention
implementations (catrans.attention), chunked against the xla reference, in one run.

  python -m experiments.bench.throughput --part=long [--seq_len 2048 --impls xla,chunked]

Memory is XLA's own account of the compiled programs (compiled.memory_analysis(): temp
bytes = everything the program allocates besides its arguments and outputs), for
  the attention core alone: d/d(q, k, v) of one attend call at [batch, L, heads, head_dim],
  the train step: the trunk's loss, gradients and an AdamW update (what a step holds).
Speed: the train steps alternated round by round (experiments/bench/timing.py), medians with
their min-max spread; tokens/s = batch * L / step seconds."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from catrans import Transformer, attention
from catrans.config import ModelConfig
from experiments.bench import timing

MiB = 2 ** 20


def _temp_bytes(jitted, *args) -> int:
  return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def _core(impl, block):
  def loss(q, k, v):
    out = attention.attend(q, k, v, attention.AttentionMask(), impl=impl, block=block)
    return out.astype(jnp.float32).sum()
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _train_step(cfg, tx):
  model = Transformer(cfg)

  def loss(params, tokens):
    logits = model.apply({"params": params}, tokens[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  def step(state, tokens):
    params, opt = state
    value, grads = jax.value_and_grad(loss)(params, tokens)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), value
  return model, jax.jit(step, donate_argnums=(0,))


def run(a) -> dict:
  impls = a.impls.split(",")
  for impl in impls:
    attention.check_impl(impl)
  l, b = a.seq_len, a.batch
  heads = a.num_heads
  kv_heads = a.num_kv_heads or heads
  base = ModelConfig(vocab_size=a.vocab, d_model=a.d_model, num_layers=a.num_layers,
                     num_heads=heads, num_kv_heads=kv_heads, mlp_dim=4 * a.d_model,
                     max_len=l, attention_block=a.block)
  h = base.dim_per_head
  tokens = jax.random.randint(jax.random.key(0), (b, l + 1), 0, a.vocab)
  qkv = [jax.ShapeDtypeStruct((b, l, n, h), jnp.float32) for n in (heads, kv_heads, kv_heads)]
  tx = optax.adamw(1e-4)
  rows, thunks = {}, {}
  for impl in impls:
    cfg = base.replace(attention_impl=impl)
    model, step = _train_step(cfg, tx)
    params = nn.unbox(model.init(jax.random.key(1), tokens[:, :8]))["params"]
    state = (params, tx.init(params))
    rows[impl] = dict(core_temp=_temp_bytes(_core(impl, a.block), *qkv),
                      step_temp=_temp_bytes(step, state, tokens))
    holder = [state]

    def go(step=step, holder=holder):
      holder[0], value = step(holder[0], tokens)
      return holder[0], value
    thunks[impl] = go
  t = timing.compare(thunks, a.rounds)

  print(f"long context: L={l} batch={b} d={a.d_model} layers={a.num_layers} heads={heads} "
        f"kv_heads={kv_heads} head_dim={h} block={a.block} f32; medians of {a.rounds} "
        f"alternated rounds")
  print(f"{'impl':<9}{'attention temp MiB':>20}{'step temp MiB':>15}"
        f"{'step s, median (min-max)':>28}{'tokens/s':>10}")
  for impl in impls:
    r = rows[impl]
    r.update(step_s=t[impl]["median"], spread=(t[impl]["min"], t[impl]["max"]),
             tokens_s=b * l / t[impl]["median"])
    print(f"{impl:<9}{r['core_temp'] / MiB:>20.1f}{r['step_temp'] / MiB:>15.1f}"
          f"{timing.spread(t[impl]):>28}{r['tokens_s']:>10,.0f}")
  if "xla" in rows:
    ref = rows["xla"]
    for impl in (i for i in impls if i != "xla"):
      r = rows[impl]
      print(f"{impl} vs xla: attention memory {ref['core_temp'] / r['core_temp']:.1f}x less, "
            f"step memory {ref['step_temp'] / r['step_temp']:.1f}x less, tokens/s "
            f"{r['tokens_s'] / ref['tokens_s']:.2f}x")
  return dict(rows=rows, timing=t)


def add_flags(p):
  g = p.add_argument_group("--part=long")
  g.add_argument("--impls", default="xla,chunked", help="attention_impl values to compare")
  g.add_argument("--block", type=int, default=512, help="chunked block size")
  g.add_argument("--num_kv_heads", type=int, default=0, help="0 = num_heads")
