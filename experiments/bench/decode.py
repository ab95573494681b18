"""Decoding speed of a 135M model: KV-cache decoding vs recomputing the whole sequence at
every step, and prefill throughput, in one run.

  python -m experiments.bench.decode [--batch_sizes 1,16 --new_tokens 256 --prompt_len 16]

The model is SmolLM2-135M (catrans.pretrained, fetched once through pip); `--random` uses a
randomly initialised trunk of the same shape when the file cannot be had. Both decoders are
greedy, jitted, and compared on the same prompts (their first tokens must agree).

The recompute decoder is the usual fixed-shape one: one compiled step runs the full forward
over a [B, prompt + new] buffer and writes the argmax at the next slot, so every step costs
the same. It is timed over `--recompute_steps` steps and scaled to `--new_tokens` (exact up to
timing noise because the steps are identical); `--full_recompute` times all of them."""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from catrans import ModelConfig, Transformer
from catrans.baselines import prefill, sample_lm

SMOLLM2_SHAPE = dict(vocab_size=49152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
                     mlp_dim=1536, rope_theta=100000.0, tie_embeddings=True)


def load_model(max_len: int, random: bool):
  if not random:
    from catrans.pretrained import load_gguf, smollm2_gguf_path
    try:
      cfg, params = load_gguf(smollm2_gguf_path(), max_len=max_len)
      return "SmolLM2-135M (GGUF)", cfg, jax.tree.map(jnp.asarray, params)
    except RuntimeError as e:
      print(f"SmolLM2 unavailable ({e}); using a random trunk of the same shape")
  cfg = ModelConfig(max_len=max_len, **SMOLLM2_SHAPE)
  params = Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
  return "random 135M-shaped trunk", cfg, jax.tree.map(jnp.asarray, params)


def make_recompute_step(model):
  @jax.jit
  def step(params, buf_BxS, lens_B):
    logits = model.apply({"params": params}, buf_BxS).logits            # causal, no cache
    nxt = jnp.argmax(logits[jnp.arange(buf_BxS.shape[0]), lens_B - 1], -1).astype(jnp.int32)
    return buf_BxS.at[jnp.arange(buf_BxS.shape[0]), lens_B].set(nxt), lens_B + 1
  return step


def _timed(fn, *args):
  jax.block_until_ready(fn(*args))      # compile and warm up
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def bench(model, params, batch, prompt_len, new_tokens, recompute_steps, prefill_len):
  rng = np.random.default_rng(batch)
  vocab = model.cfg.vocab_size
  prompts = jnp.asarray(rng.integers(0, vocab, (batch, prompt_len)), jnp.int32)
  lens = jnp.full((batch,), prompt_len, jnp.int32)

  cached = lambda: sample_lm(model, params, prompts, lens, jax.random.PRNGKey(0),
                             max_new_tokens=new_tokens, temperature=0.0)
  toks, t_cached = _timed(cached)

  step = make_recompute_step(model)
  buf = jnp.zeros((batch, prompt_len + new_tokens), jnp.int32).at[:, :prompt_len].set(prompts)
  b, l = step(params, buf, lens)        # compile
  jax.block_until_ready(b)
  b, l = buf, lens
  t0 = time.perf_counter()
  for _ in range(recompute_steps):
    b, l = step(params, b, l)
  jax.block_until_ready(b)
  t_recompute = (time.perf_counter() - t0) * new_tokens / recompute_steps
  agree = bool(np.array_equal(np.asarray(b[:, prompt_len:prompt_len + recompute_steps]),
                              np.asarray(toks[:, :recompute_steps])))

  ptoks = jnp.asarray(rng.integers(0, vocab, (batch, prefill_len)), jnp.int32)
  plens = jnp.full((batch,), prefill_len, jnp.int32)
  prefill_fn = jax.jit(lambda p, t, n: prefill(model, p, t, n, prefill_len + 1)[0])
  _, t_prefill = _timed(prefill_fn, params, ptoks, plens)
  return dict(batch=batch, cached_tok_s=batch * new_tokens / t_cached,
              recompute_tok_s=batch * new_tokens / t_recompute,
              speedup=t_recompute / t_cached, prefill_tok_s=batch * prefill_len / t_prefill,
              greedy_agree=agree)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch_sizes", default="1,16")
  ap.add_argument("--prompt_len", type=int, default=16)
  ap.add_argument("--new_tokens", type=int, default=256)
  ap.add_argument("--prefill_len", type=int, default=256)
  ap.add_argument("--recompute_steps", type=int, default=8)
  ap.add_argument("--full_recompute", action="store_true")
  ap.add_argument("--random", action="store_true")
  a = ap.parse_args(argv)
  steps = a.new_tokens if a.full_recompute else min(a.recompute_steps, a.new_tokens)
  name, cfg, params = load_model(max(a.prompt_len + a.new_tokens, a.prefill_len + 1),
                                 a.random)
  model = Transformer(cfg)
  print(f"{name}: {cfg.num_layers} layers, d={cfg.d_model}, {jax.devices()[0].platform}; "
        f"prompt {a.prompt_len}, {a.new_tokens} new tokens (greedy); recompute timed over "
        f"{steps} steps")
  rows = []
  for bs in (int(x) for x in a.batch_sizes.split(",")):
    r = bench(model, params, bs, a.prompt_len, a.new_tokens, steps, a.prefill_len)
    rows.append(r)
    print(f"batch {bs:3d}: KV cache {r['cached_tok_s']:8.1f} tok/s | recompute "
          f"{r['recompute_tok_s']:7.2f} tok/s | speedup {r['speedup']:6.1f}x | prefill "
          f"({a.prefill_len} tokens) {r['prefill_tok_s']:8.1f} tok/s | greedy tokens agree: "
          f"{r['greedy_agree']}", flush=True)
  return rows


if __name__ == "__main__":
  main()
