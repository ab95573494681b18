"""SequenceMatch's cost against MLE on the same model and batch, in one run (issue 4).

  python -m experiments.bench.seqmatch [--rounds 5 --every 1,4,16]

The setting is experiments/configs/arithmetic_seqmatch.py ('sm': d=128, 4 layers, batch 32,
N = 64 action slots, 8 rollouts of up to 12 actions from 40-token data prompts); flags
override the model size. Timed with experiments/bench/timing.py: after compilation,
alternating round by round, medians with their min-max spread:

  train steps   MLE (cross-entropy on the clean rows, [B, seq_len])
                SM without rollouts (augmented data only, one-pass masked forward, [B, N])
                SM with rollouts generated inside the compiled step (the objective as trained)
                SM on stored rollouts (a replay buffer: the same [B + R, N] loss, no sampling)
                rollout generation alone
  amortised     rollouts refreshed every m steps: rollout / m + stored-rollout step
  forward       one-pass masked forward (given tokens / positions / liveness mask) and
                build_one_pass + forward (its closed form, and the step-by-step scan), vs a plain
                causal forward over the same [B, N] rows.

All SM steps are at step > bc_steps, so the mixture loss (not BC) is what is timed.

  python -m experiments.bench.seqmatch --part=smollm2 [--rounds 3 --every 8]

times SmolLM2-135M fine-tuned with LoRA (configs/smollm2_finetune.py 'sm,lora' against an
MLE run of the same adapters, rows and batch), as trained: each contender is one cycle of m
real Trainer steps (host noise augmentation, the compiled step with its optimizer update; for
SequenceMatch one replay-buffer refresh per cycle), so the ratio is the amortised cost."""
import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

import seqmatch
from experiments.bench import timing
from experiments.configs import arithmetic_seqmatch
from experiments.data import pipeline
from experiments.objectives.mle import token_cross_entropy
from experiments.objectives.seqmatch import SequenceMatch
from experiments.tasks import get_task


def make_config(a) -> ml_collections.ConfigDict:
  c = arithmetic_seqmatch.get_config("sm")
  for k in ("d_model", "num_layers", "num_heads", "mlp_dim"):
    if getattr(a, k):
      c.model[k] = getattr(a, k)
  if a.num_heads:
    c.model.num_kv_heads = max(1, a.num_heads // 2)
  if a.batch:
    c.data.global_batch_size = a.batch
  if a.rollouts:
    c.objective.rollouts = a.rollouts
  return c


def _stateful_step(loss_fn, params, tx, batch, losses, name):
  """A thunk doing one jitted value_and_grad + Adam update on its own copy of the state."""
  @jax.jit
  def step(params, opt, batch):
    loss, g = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  state = [params, tx.init(params)]

  def go():
    state[0], state[1], loss = step(state[0], state[1], batch)
    losses[name] = loss
    return loss
  return go


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--d_model", type=int, default=0, help="0 = the config's (128)")
  ap.add_argument("--num_layers", type=int, default=0, help="0 = the config's (4)")
  ap.add_argument("--num_heads", type=int, default=0, help="0 = the config's (4)")
  ap.add_argument("--mlp_dim", type=int, default=0, help="0 = the config's (512)")
  ap.add_argument("--batch", type=int, default=0, help="0 = the config's (32)")
  ap.add_argument("--rollouts", type=int, default=0, help="0 = the config's (8)")
  ap.add_argument("--every", default="", help="rollout refresh intervals m (default 1,4,16; "
                  "--part=smollm2: the last one, default the config's 8)")
  ap.add_argument("--seq_len", type=int, default=0,
                  help="--part=smollm2: row length (0 = the config's 32)")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--part", default="small", choices=("small", "smollm2"),
                  help="small: the arithmetic model (above); smollm2: 135M + LoRA")
  a = ap.parse_args(argv)
  if a.part == "smollm2":
    return smollm2_lora(a)
  a.every = a.every or "1,4,16"

  c = make_config(a)
  task = get_task(c.task.name, c.task)
  with_rollouts = SequenceMatch(c, task)
  no_rollouts_cfg = ml_collections.ConfigDict(c.to_dict())
  no_rollouts_cfg.objective.rollouts = 0
  no_rollouts = SequenceMatch(no_rollouts_cfg, task)
  model = with_rollouts.model                 # one Transformer (vocabulary + <bkspc>)
  params = jax.jit(lambda r: nn.meta.unbox(with_rollouts.init_params(r)))(
      jax.random.PRNGKey(c.seed))

  rows = next(pipeline.make_train_iterator(task, "train", global_batch_size=c.data.global_batch_size,
                                           seq_len=c.data.seq_len, seed=c.seed, read_threads=1))
  sm_step = int(c.objective.bc_steps) + 1     # past the BC warm-up: the mixture loss
  sm_batch = {k: jnp.asarray(v) for k, v in with_rollouts.prepare_batch(rows, sm_step).items()}
  mle_batch = {k: jnp.asarray(rows[k]) for k in ("inputs", "targets", "weights", "positions",
                                                 "segment_ids")}
  rng, step = jax.random.PRNGKey(1), jnp.asarray(sm_step, jnp.int32)

  # The objective's own rollout sampler, timed alone and used to fill the replay batch.
  rollout_fn = jax.jit(lambda p, b, r: with_rollouts._rollouts(p, b, r))
  r_items, r_pl, r_lens = jax.block_until_ready(rollout_fn(params, sm_batch, rng))
  # What the trainer adds to the batch from the replay buffer (objective.aux_batch) when
  # objective.rollout_every > 1: the same loss on stored rows, no sampling.
  stored_batch = dict(sm_batch, replay_items=r_items, replay_prompt_lens=r_pl,
                      replay_lengths=r_lens)

  def mle_loss(p, b):
    out = model.apply({"params": p}, b["inputs"], b["positions"],
                      segment_ids_BxL=b["segment_ids"])
    return token_cross_entropy(out.logits, b["targets"], b["weights"])[0]

  sm_loss = lambda obj: (lambda p, b: obj.loss(p, b, rng, step)[0])
  tx = optax.adam(1e-4)
  losses = {}
  thunks = {
      "MLE": _stateful_step(mle_loss, params, tx, mle_batch, losses, "MLE"),
      "SM, no rollouts": _stateful_step(sm_loss(no_rollouts), params, tx, sm_batch, losses,
                                        "SM, no rollouts"),
      "SM, rollouts in step": _stateful_step(sm_loss(with_rollouts), params, tx, sm_batch,
                                             losses, "SM, rollouts in step"),
      "SM, stored rollouts": _stateful_step(sm_loss(with_rollouts), params, tx, stored_batch,
                                            losses,
                                            "SM, stored rollouts"),
      "rollout generation": lambda: rollout_fn(params, sm_batch, rng)[0],
  }
  timed = timing.compare(thunks, a.rounds)
  times = {k: v["median"] for k, v in timed.items()}

  # Forward passes over the same [B, N] rows: one-pass masked vs plain causal.
  one = seqmatch.build_one_pass(sm_batch["items"], sm_batch["prompt_lens"], sm_batch["lengths"],
                                vocab_size=with_rollouts.vocab.num_actions,
                                backspace_id=with_rollouts.vocab.backspace_id,
                                eos_id=with_rollouts.eos_id, expert_BxN=sm_batch["expert"])
  fwd = jax.jit(lambda p, t, pos, m: model.apply({"params": p}, t, pos, m).logits)
  plain = jax.jit(lambda p, t: model.apply({"params": p}, t).logits)

  @functools.partial(jax.jit, static_argnums=2)
  def build_and_fwd(p, b, method):
    o = seqmatch.build_one_pass(b["items"], b["prompt_lens"], b["lengths"],
                                vocab_size=with_rollouts.vocab.num_actions,
                                backspace_id=with_rollouts.vocab.backspace_id,
                                eos_id=with_rollouts.eos_id, method=method)
    return model.apply({"params": p}, o.tokens, o.positions, o.mask).logits

  names = ("plain causal", "one-pass masked", "build (parallel) + masked",
           "build (scan) + masked")
  fwd_timed = timing.compare(dict(zip(names, (
      lambda: plain(params, sm_batch["items"]),
      lambda: fwd(params, one.tokens, one.positions, one.mask),
      lambda: build_and_fwd(params, sm_batch, "parallel"),
      lambda: build_and_fwd(params, sm_batch, "scan")))), a.rounds)
  fwd_times = [fwd_timed[n]["median"] for n in names]

  b, n = sm_batch["items"].shape
  m = c.model
  print(timing.machine())
  print(f"model: d={m.d_model} layers={m.num_layers} vocab={with_rollouts.vocab.num_actions}; "
        f"batch {b}; MLE rows [{b}, {c.data.seq_len}]; SM rows [{b}, {n}] (+{r_items.shape[0]} "
        f"rollouts of up to {c.objective.rollout_max_actions} actions); medians of {a.rounds}")
  print(f"\n{'train step':<24}{'seconds, median (min-max)':>28}{'loss':>10}{'x MLE':>9}")
  base = times["MLE"]
  for name, sec in times.items():
    loss = f"{float(losses[name]):10.3f}" if name in losses else " " * 10
    print(f"{name:<24}{timing.spread(timed[name]):>28}{loss}{sec / base:>8.2f}x")
  print(f"ratio SM / MLE step: no rollouts {times['SM, no rollouts'] / base:.2f}x, rollouts "
        f"in step {times['SM, rollouts in step'] / base:.2f}x (paper 1.5-8x, goal <= 2x "
        f"amortised)")
  amort = []
  for every in (int(x) for x in a.every.split(",")):
    sec = times["rollout generation"] / every + times["SM, stored rollouts"]
    amort.append((every, sec / base))
  print("ratio SM / MLE step with rollouts refreshed every m steps (rollout / m + stored-"
        "rollout step): " + ", ".join(f"m={e} {r:.2f}x" for e, r in amort))
  print(f"\n{'forward over [%d, %d] rows' % (b, n):<30}{'seconds, median (min-max)':>28}"
        f"{'x plain':>9}")
  for name, sec in zip(names, fwd_times):
    print(f"{name:<30}{timing.spread(fwd_timed[name]):>28}{sec / fwd_times[0]:>8.3f}x")
  print(f"ratio one-pass masked / plain causal forward: {fwd_times[1] / fwd_times[0]:.3f}x "
        f"(with the mask construction: scan {fwd_times[3] / fwd_times[0]:.3f}x, parallel "
        f"{fwd_times[2] / fwd_times[0]:.3f}x; goal <= 1.1x)")
  return dict(times=times, losses={k: float(v) for k, v in losses.items()}, amortised=amort,
              forward=dict(zip(names, fwd_times)))


def smollm2_lora(a):
  """SM / MLE train-step cost of SmolLM2-135M with LoRA adapters (module doc)."""
  import tempfile

  from catrans import lora
  from experiments.configs import smollm2_finetune
  from experiments.trainer import Trainer
  import time
  every = int(a.every.split(",")[-1]) if a.every else 0
  configs = {}
  mle = smollm2_finetune.get_config("mle,lora")
  mle.objective = ml_collections.ConfigDict({"name": "mle"})   # plain CE on [B, seq_len]
  configs["MLE"] = mle
  sm = smollm2_finetune.get_config("sm,lora")
  every = every or int(sm.objective.rollout_every)
  sm.objective.update(dict(bc_steps=0, rollout_every=every))   # the mixture loss throughout
  configs["SM"] = sm
  for c in configs.values():
    if a.batch:
      c.data.global_batch_size = a.batch
    if a.seq_len:
      c.data.seq_len = a.seq_len
  thunks, info, first = {}, {}, {}
  tmp = tempfile.mkdtemp(prefix="bench_smlora_")
  for name, c in configs.items():
    c.train.progress = False
    # Setup and compile time, phase by phase, printed as it goes (a step that never compiles
    # shows where it stuck). The first step's wall time is its compilation plus one step.
    t0 = time.perf_counter()
    t = Trainer(c, f"{tmp}/{name}", progress=False)       # reads the gguf
    t1 = time.perf_counter()
    holder = {"state": jax.block_until_ready(t.init_state()), "step": 0}
    t2 = time.perf_counter()
    it = pipeline.make_train_iterator(t.task, "train", global_batch_size=t.batch_size,
                                      seq_len=t.seq_len, seed=0, read_threads=1)
    batches = [next(it) for _ in range(every)]
    t3 = time.perf_counter()
    holder["state"], m = t.train_step(holder["state"], batches[0], 0)
    jax.block_until_ready(m["loss"])
    holder["step"] = 1   # any m consecutive steps hold one buffer refresh (step % m == 0)
    first[name] = (t2 - t1, time.perf_counter() - t3)
    print(f"{name}: Trainer (reads the gguf) {t1 - t0:.1f} s; init_state (place the trunk, "
          f"compile init) {t2 - t1:.1f} s; first train step (compile + 1 step) "
          f"{first[name][1]:.1f} s", flush=True)
    n_lora = lora.num_params(holder["state"].params)

    def cycle(t=t, batches=batches, holder=holder):
      for b in batches:     # one buffer refresh per cycle: state.step runs k*m .. k*m + m-1
        holder["state"], m = t.train_step(holder["state"], b, holder["step"])
        holder["step"] += 1
      return m["loss"]
    thunks[name] = cycle
    info[name] = (t.objective.lora_rank, t.num_params, t.seq_len, n_lora)
  timed = timing.compare(thunks, a.rounds)
  per_step = {k: v["median"] / every for k, v in timed.items()}
  print(timing.machine())
  rank, n_params, seq_len, n_lora = info["SM"]
  print(f"SmolLM2-135M ({n_params:,} parameters, {n_lora:,} of them trained), LoRA rank "
        f"{rank} on every attention and MLP projection; batch {sm.data.global_batch_size} x {seq_len} "
        f"tokens; SM: N = {sm.objective.max_items} action slots, {sm.objective.rollouts} "
        f"rollouts of up to {sm.objective.rollout_max_actions} actions refreshed every "
        f"{every} steps; medians of {a.rounds} rounds of {every}-step cycles")
  print(f"{'train step':<12}{'seconds per step, median (min-max)':>38}"
        f"{'init s':>9}{'first step s':>14}")
  for name in timed:
    print(f"{name:<12}{timing.spread(timed[name], 1.0 / every):>38}{first[name][0]:>9.1f}"
          f"{first[name][1]:>14.1f}")
  ratio = per_step["SM"] / per_step["MLE"]
  print(f"ratio SM / MLE step (135M + LoRA, rollouts every {every}): {ratio:.2f}x (goal <= 2x)")
  return dict(per_step=per_step, ratio=ratio, every=every, first=first)


if __name__ == "__main__":
  main()
