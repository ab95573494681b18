"""CAT's cost against what it replaces or adds to, each ratio measured in one run (issue 3).

  python -m experiments.bench.cat [--length 16 --steps 1500 --mc_samples 64 --num_sequences 256]

(a) Estimation on random bits with an exact attribute (majority; experiments/tasks/bits.py):
    P(a | prefix) for every prefix t = 0..n of a batch of sequences, by CAT's one forward pass
    (catrans.inference.estimate) vs Monte Carlo (catrans.baselines.monte_carlo_estimate: each
    prefix prefilled once, N completions sampled from copies of its KV cache by the CAT's own
    next-token head, each scored by the exact attribute of the finished string). Both are
    checked against the binomial tails. A small CAT is trained in-process first (--steps), so
    the script stands alone.
(b) One CAT train step (CE + lambda * attribute loss) vs the plain MLE step on the trunk of
    the same model and the same batch, for the `full` and `factorized` heads.
(c) Steered decoding (steered_decode, rule 'weighted', KV cache) vs unsteered decoding of the
    same model through the same decoder (rule 'none', which skips the attribute branch).

Every part times its two contenders with experiments/bench/timing.py: after a warm-up call
each (compilation), they alternate round by round so load from other processes hits both
alike; medians are reported with their min-max spread."""
import argparse
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from catrans.attributes import AttributeSpec
from catrans.baselines import monte_carlo_estimate
from catrans.cat_model import CATConfig, CATModel
from catrans.config import ModelConfig
from catrans.inference import estimate
from catrans.objective import cat_loss
from catrans.steering import SteeringConfig, Target, steered_decode
from catrans.transformer import Transformer
from experiments.bench import timing
from experiments.data import pipeline
from experiments.objectives.mle import token_cross_entropy
from experiments.tasks import bits, get_task


def _init(model, tokens_BxL, seed):
  """CATModel params with the attribute heads; jitted (op-by-op init is slower to run)."""
  init = lambda r: model.init(r, tokens_BxL, next_tokens_BxL=tokens_BxL)["params"]
  return jax.jit(init)(jax.random.PRNGKey(seed))


# --- (a) estimation: CAT one pass vs Monte Carlo ---------------------------------------------
def train_bits_cat(length, steps, *, d_model=48, num_layers=2, batch=128, seed=0,
                   branch_mlp_dim=0, num_train=4000):
  """A small factorized CAT trained on the bits task (as in experiments/reports/cat_exactness.py).
  Returns (task, model, params, seconds spent training, final loss)."""
  task = get_task("bits", ml_collections.ConfigDict(dict(length=length, num_train=num_train,
                                                         num_test=500, seed=seed)))
  # max_len leaves room for Monte Carlo: a prompt of up to n + 1 tokens plus n new ones.
  cfg = ModelConfig(vocab_size=task.tokenizer.vocab_size, d_model=d_model,
                    num_layers=num_layers, num_heads=4, num_kv_heads=2, mlp_dim=2 * d_model,
                    max_len=2 * length + 4)
  model = CATModel(cfg, CATConfig(attributes=(AttributeSpec("label"),), param="factorized",
                                  factor_dim=16, lam=1.0, branch_mlp_dim=branch_mlp_dim))
  it = pipeline.make_train_iterator(task, "train", global_batch_size=batch, seq_len=length + 1,
                                    seed=seed, read_threads=1)
  first = {k: jnp.asarray(v) for k, v in next(it).items()}
  params = _init(model, first["inputs"], seed)
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt, batch):
    (_, m), g = jax.value_and_grad(lambda p: cat_loss(model, p, batch), has_aux=True)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, m["loss"]

  opt = tx.init(params)
  t0 = time.perf_counter()
  loss = jnp.nan
  for _ in range(steps):
    batch = {k: jnp.asarray(v) for k, v in next(it).items()}
    params, opt, loss = step(params, opt, batch)
  jax.block_until_ready(loss)
  return task, model, params, time.perf_counter() - t0, float(loss)


def _oracle_score_fn(one_id, threshold, num_new):
  """score_fn for monte_carlo_estimate: the exact attribute of prompt + the first num_new
  sampled tokens (ones counted as the '1' byte; anything else the LM emits counts as 0)."""
  def score(prompts_NxP, prompt_lens_N, completions_NxT):
    del prompt_lens_N  # every prompt in one call has the same length (no padding)
    ones = (prompts_NxP == one_id).sum(-1) + (completions_NxT[:, :num_new] == one_id).sum(-1)
    return (ones >= threshold).astype(jnp.float32)
  return score


def make_mc_estimator(trunk, length, threshold, one_id, num_samples):
  """A function (params, tokens_BxL, rng) -> [B, n + 1] Monte Carlo estimates for every
  prefix t = 0..n, one jitted monte_carlo_estimate call per prefix length. Each call prefills
  its B prefixes once and samples exactly the n - t tokens each still needs, N times from the
  shared cache (Monte Carlo's cheapest fair setting)."""
  def call_for(t):
    num_new = length - t
    score = _oracle_score_fn(one_id, threshold, num_new)

    @jax.jit
    def one(params, prompts_BxP, rng):
      lens = jnp.full((prompts_BxP.shape[0],), prompts_BxP.shape[1], jnp.int32)
      # max_new_tokens >= 1: at t = n nothing is left to sample (the score ignores it).
      return monte_carlo_estimate(trunk, params, prompts_BxP, lens, rng,
                                  num_samples=num_samples, max_new_tokens=max(num_new, 1),
                                  score_fn=score)
    return one

  jitted = [call_for(t) for t in range(length + 1)]

  def run(params, tokens_BxL, rng):
    outs = [jitted[t](params, tokens_BxL[:, :t + 1], jax.random.fold_in(rng, t))
            for t in range(length + 1)]
    return jnp.stack(outs, axis=1)
  return run


def mc_token_forwards(length, num_samples):
  """Token positions Monte Carlo runs through the model per sequence: for each prefix t, one
  prefill of t + 1 tokens and N * max(n - t, 1) decode steps (CAT: n + 1 in all)."""
  return sum((t + 1) + num_samples * max(length - t, 1) for t in range(length + 1))


def bench_estimation(a):
  task, model, params, train_s, last_loss = train_bits_cat(a.length, a.steps, seed=a.seed,
                                                           branch_mlp_dim=a.branch_mlp_dim,
                                                           num_train=a.num_train)
  tok = task.tokenizer
  threshold = bits.majority_threshold(a.length)
  tests = list(task.source("test"))[:a.num_sequences]
  tokens_BxL = jnp.asarray([[tok.bos_id] + tok.encode(e["text"]) for e in tests], jnp.int32)
  exact_BxL = np.stack([bits.exact_curve([int(c) for c in e["text"]], threshold)
                        for e in tests])                                   # t = 0..n

  cat_fn = lambda: estimate(model, params, tokens_BxL, attribute="label", target=1).q
  # The CAT's token head is its trunk's logits: Monte Carlo samples from exactly that LM.
  trunk, trunk_params = Transformer(model.cfg), params["trunk"]
  mc = make_mc_estimator(trunk, a.length, threshold, tok.encode("1")[0], a.mc_samples)
  rng = jax.random.PRNGKey(a.seed + 1)
  mc_fn = lambda: mc(trunk_params, tokens_BxL, rng)

  outs = {}

  def keep(name, f):      # the timed thunk also keeps its last output, for the errors
    def go():
      outs[name] = f()
      return outs[name]
    return go

  t = timing.compare({"CAT": keep("cat", timing.repeated(cat_fn, a.cat_repeats)),
                      "Monte Carlo": keep("mc", mc_fn)}, rounds=a.est_rounds)
  t["CAT"] = timing.per_call(t["CAT"], a.cat_repeats)
  cat_q, mc_q = np.asarray(outs["cat"]), np.asarray(outs["mc"])
  return dict(train_s=train_s, train_loss=last_loss, num_prefixes=exact_BxL.size,
              cat=t["CAT"], mc=t["Monte Carlo"], cat_s=t["CAT"]["median"],
              mc_s=t["Monte Carlo"]["median"],
              speedup=t["Monte Carlo"]["median"] / t["CAT"]["median"],
              cat_mae=float(np.abs(cat_q - exact_BxL).mean()),
              mc_mae=float(np.abs(mc_q - exact_BxL).mean()),
              cat_q=cat_q, mc_q=mc_q, exact=exact_BxL, tokens=np.asarray(tokens_BxL),
              model=model, params=params)


# --- (b) train step: CAT vs MLE --------------------------------------------------------------
def _random_batch(vocab, batch, seq_len, seed):
  rng = np.random.default_rng(seed)
  toks = rng.integers(3, vocab, (batch, seq_len + 1))
  return {"inputs": jnp.asarray(toks[:, :-1], jnp.int32),
          "targets": jnp.asarray(toks[:, 1:], jnp.int32),
          "weights": jnp.ones((batch, seq_len), jnp.float32),
          "positions": jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch, seq_len)),
          "label": jnp.asarray(rng.integers(0, 2, (batch,)), jnp.int32)}


def _adam_step(loss_fn, tx):
  """jit(step): one value_and_grad + Adam update; returns (params, opt, loss)."""
  def step(params, opt, batch):
    loss, g = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss
  return jax.jit(step)


def make_cat_model(a, param):
  cfg = ModelConfig(vocab_size=a.vocab, d_model=a.d_model, num_layers=a.num_layers,
                    num_heads=a.num_heads, num_kv_heads=a.num_heads // 2,
                    mlp_dim=4 * a.d_model, max_len=max(a.seq_len, a.prompt_len + a.new_tokens))
  return CATModel(cfg, CATConfig(attributes=(AttributeSpec("label"),), param=param,
                                 branch=a.branch, branch_mlp_dim=a.branch_mlp_dim))


def bench_train_step(a, param):
  model = make_cat_model(a, param)
  batch = _random_batch(a.vocab, a.batch, a.seq_len, a.seed)
  params = _init(model, batch["inputs"][:, :8], a.seed)
  trunk = Transformer(model.cfg)
  tx = optax.adam(1e-4)

  def mle_loss(p, b):
    out = trunk.apply({"params": p}, b["inputs"], b["positions"])
    return token_cross_entropy(out.logits, b["targets"], b["weights"])[0]

  cat_step = _adam_step(lambda p, b: cat_loss(model, p, b)[0], tx)
  mle_step = _adam_step(mle_loss, tx)
  # Each contender keeps its own state; the updates are real (a fixed point is not timed).
  state = {"cat": (params, tx.init(params)), "mle": (params["trunk"], tx.init(params["trunk"]))}
  losses = {}

  def run(name, step):
    def go():
      p, o, loss = step(*state[name], batch)
      state[name] = (p, o)
      losses[name] = loss
      return loss
    return go

  t = timing.compare({"MLE": run("mle", mle_step), "CAT": run("cat", cat_step)}, a.rounds)
  t_mle, t_cat = t["MLE"]["median"], t["CAT"]["median"]
  return dict(param=param, mle=t["MLE"], cat=t["CAT"], mle_s=t_mle, cat_s=t_cat,
              ratio=t_cat / t_mle,
              mle_loss=float(losses["mle"]), cat_loss=float(losses["cat"]),
              tokens=a.batch * a.seq_len)


# --- (c) steered vs plain decoding ----------------------------------------------------------
def bench_decoding(a, param):
  model = make_cat_model(a, param)
  rng = np.random.default_rng(a.seed)
  prompts = jnp.asarray(rng.integers(3, a.vocab, (a.decode_batch, a.prompt_len)), jnp.int32)
  lens = jnp.full((a.decode_batch,), a.prompt_len, jnp.int32)
  params = _init(model, prompts[:, :8], a.seed)
  key = jax.random.PRNGKey(a.seed)
  steer = SteeringConfig(rule="weighted", targets=(Target("label", 1, gamma=a.gamma),))
  plain = SteeringConfig(rule="none")

  def dec(sc):
    return timing.repeated(lambda: steered_decode(model, params, prompts, lens, key, steering=sc,
                                                  max_new_tokens=a.new_tokens).new_tokens,
                           a.decode_repeats)
  t = timing.compare({"plain": dec(plain), "steered": dec(steer)}, a.rounds)
  t = {k: timing.per_call(v, a.decode_repeats) for k, v in t.items()}
  t_plain, t_steer = t["plain"]["median"], t["steered"]["median"]
  n_tok = a.decode_batch * a.new_tokens
  return dict(param=param, plain=t["plain"], steered=t["steered"],
              plain_tok_s=n_tok / t_plain, steer_tok_s=n_tok / t_steer,
              slowdown=t_steer / t_plain)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  g = ap.add_argument_group("(a) estimation on bits")
  # 16 bits: Monte Carlo's cost grows with the length (about N (n + 1) / 2 token positions
  # through the model per position CAT reads, each prefix prefilled once: 300x at n = 9,
  # 525x at n = 16).
  g.add_argument("--length", type=int, default=16, help="bits per sequence")
  g.add_argument("--steps", type=int, default=1500, help="CAT training steps (batch 128)")
  g.add_argument("--num_train", type=int, default=20000, help="training sequences")
  g.add_argument("--num_sequences", type=int, default=256, help="test sequences estimated")
  g.add_argument("--mc_samples", type=int, default=64, help="Monte Carlo completions/prefix")
  g.add_argument("--cat_repeats", type=int, default=10,
                 help="CAT passes per round, each waited for (its time is their mean)")
  g.add_argument("--est_rounds", type=int, default=5,
                 help="timed rounds, each --cat_repeats CAT passes and one Monte Carlo run "
                      "(medians)")
  g = ap.add_argument_group("(b) train step and (c) decoding: a random-init CAT")
  g.add_argument("--d_model", type=int, default=128)
  g.add_argument("--num_layers", type=int, default=4)
  g.add_argument("--num_heads", type=int, default=4)
  g.add_argument("--vocab", type=int, default=259)
  g.add_argument("--branch", default="mlp", help="attribute branch: mlp | block | none")
  g.add_argument("--branch_mlp_dim", type=int, default=0,
                 help="hidden width of the mlp branch (0: CATConfig's default, the trunk's d_model)")
  g.add_argument("--seq_len", type=int, default=128)
  g.add_argument("--batch", type=int, default=16)
  g.add_argument("--decode_batch", type=int, default=8)
  g.add_argument("--prompt_len", type=int, default=16)
  g.add_argument("--new_tokens", type=int, default=64)
  g.add_argument("--gamma", type=float, default=1.0)
  g.add_argument("--rounds", type=int, default=7, help="timed rounds per contender (median)")
  g.add_argument("--decode_repeats", type=int, default=5,
                 help="(c) decodes per round, each waited for (its time is their mean)")
  ap.add_argument("--params", default="full,factorized")
  ap.add_argument("--parts", default="a,b,c")
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  for name in ("cat_repeats", "decode_repeats", "est_rounds", "mc_samples", "rounds"):
    if getattr(a, name) < 1:
      ap.error(f"--{name}={getattr(a, name)}: need >= 1")
  return a


def per_head(params, bench, row, summary: str, ratio_key: str, goal: str) -> list[dict]:
  """bench(p) for every head parametrisation p, a printed row each, then the ratios."""
  results = []
  for p in params:
    results.append(bench(p))
    print(row(p, results[-1]), flush=True)
  print(f"{summary}: " + ", ".join(f"{r['param']} {r[ratio_key]:.3f}x" for r in results)
        + f" (goal {goal})")
  return results


def main(argv=None):
  a = parse_args(argv)
  parts = set(a.parts.split(","))
  params = a.params.split(",")
  print(timing.machine())
  out = {}
  if "a" in parts:
    r = bench_estimation(a)
    out["estimation"] = r
    print(f"\n(a) P(a | prefix) on bits (n={a.length}, majority), {a.num_sequences} sequences x "
          f"{a.length + 1} prefixes = {r['num_prefixes']} estimates; CAT trained {a.steps} "
          f"steps in {r['train_s']:.1f} s (final loss {r['train_loss']:.3f})")
    print(f"{'method':<26}{'seconds, median (min-max)':>30}{'per prefix':>13}"
          f"{'MAE vs exact':>14}")
    for name, t, mae in (("CAT one pass", r["cat"], r["cat_mae"]),
                         (f"Monte Carlo N={a.mc_samples}", r["mc"], r["mc_mae"])):
      print(f"{name:<26}{timing.spread(t):>30}{t['median'] / r['num_prefixes'] * 1e6:>11.1f}us"
            f"{mae:>14.4f}")
    work = mc_token_forwards(a.length, a.mc_samples) / (a.length + 1)
    print(f"ratio Monte Carlo / CAT time (medians of {a.est_rounds} alternated rounds, CAT "
          f"the mean of {a.cat_repeats} passes per round): "
          f"{r['speedup']:,.0f}x at {'equal or lower' if r['cat_mae'] <= r['mc_mae'] else 'HIGHER'}"
          f" CAT error (goal >= 1000x at equal or lower error); token positions through the "
          f"model, Monte Carlo / CAT: {work:,.0f}x")
  if "b" in parts:
    print(f"\n(b) train step, d={a.d_model} layers={a.num_layers} L={a.seq_len} "
          f"batch={a.batch} vocab={a.vocab} branch={a.branch} branch_mlp_dim="
          f"{a.branch_mlp_dim or a.d_model} (medians of {a.rounds})")
    print(f"{'head':<12}{'MLE s (min-max)':>24}{'CAT s (min-max)':>24}{'MLE loss':>10}"
          f"{'CAT loss':>10}{'ratio':>8}")
    out["train_step"] = per_head(
        params, lambda p: bench_train_step(a, p),
        lambda p, r: (f"{p:<12}{timing.spread(r['mle']):>24}{timing.spread(r['cat']):>24}"
                      f"{r['mle_loss']:>10.3f}{r['cat_loss']:>10.3f}{r['ratio']:>7.3f}x"),
        "ratio CAT / MLE step time", "ratio", "<= 1.10x")
  if "c" in parts:
    print(f"\n(c) decoding {a.decode_batch} x {a.new_tokens} new tokens after a {a.prompt_len}-"
          f"token prompt, KV cache; weighted steering (gamma={a.gamma}) vs rule 'none'; "
          f"medians of {a.rounds} alternated rounds, each the mean of {a.decode_repeats} decodes")
    print(f"{'head':<12}{'plain tok/s':>13}{'steered tok/s':>15}{'plain s (min-max)':>26}"
          f"{'steered s (min-max)':>26}{'slowdown':>10}")
    out["decoding"] = per_head(
        params, lambda p: bench_decoding(a, p),
        lambda p, r: (f"{p:<12}{r['plain_tok_s']:>13,.0f}{r['steer_tok_s']:>15,.0f}"
                      f"{timing.spread(r['plain']):>26}{timing.spread(r['steered']):>26}"
                      f"{r['slowdown']:>9.3f}x"),
        "ratio steered / plain decoding time", "slowdown", "<= 1.3x")
  return out


if __name__ == "__main__":
  main()
