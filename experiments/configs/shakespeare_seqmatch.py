"""SequenceMatch on text (the text-task issue, item 3): Shakespeare, byte-level.

  python -m experiments.reports.text_seqmatch_report --root=DIR [--tiny]   # everything + the report
  python -m experiments.train --config=experiments/configs/shakespeare_seqmatch.py:RUN \
      --workdir=DIR [--config.init_from=run:MLE_DIR]

RUN:
  mle   cross-entropy on the plays (the <bkspc> row exists but is never a target)
  bc    MLE + <bkspc>: cross-entropy on augmented data (random wrong bytes followed by
        <bkspc>), fine-tuned from the mle run
  sm    SequenceMatch-chi2 with on-policy rollouts, fine-tuned from the mle run (a short BC
        warm-up, then (1 - beta) L_SM + beta L_BC)
  ref   the reference LM that scores every method's samples (another seed, larger, longer):
        perplexity under a model that generated none of them
All share one architecture (vocabulary + <bkspc>), so bc and sm start from mle's parameters
with `init_from=run:DIR`. Append ',tiny' for a seconds-long smoke run; ',pod' for a pod-sized
version."""
from experiments.configs.base import base_config

RUNS = ("mle", "bc", "sm", "ref")


def get_config(arg: str = "mle"):
  run, *flags = (arg or "mle").split(",")
  if run not in RUNS or set(flags) - {"tiny", "pod"}:
    raise ValueError(f"shakespeare_seqmatch variants: {'|'.join(RUNS)}[,tiny|,pod]; got {arg!r}")
  c = base_config()
  c.task = c.task.__class__(dict(name="shakespeare", tokenizer="byte"))
  c.model.update(dict(d_model=96, num_layers=3, num_heads=4, num_kv_heads=2, mlp_dim=384,
                      max_len=160))
  c.data.update(dict(seq_len=96, global_batch_size=16, eval_split="validation"))
  c.objective = c.objective.__class__(dict(
      name="seqmatch", loss="bc", divergence="chi2", gamma=0.998, alpha=1.0, bc_steps=100,
      beta=0.5, p_noise=0.0, noise="random", max_items=112, rollouts=0,
      rollout_prompt_len=32, rollout_max_actions=48, rollout_temperature=1.0))
  c.train.update(dict(steps=2000, log_every=50, eval_every=500, eval_batches=8,
                      checkpoint_every=500, progress=False))
  c.optimizer.update(dict(learning_rate=3e-3, warmup_steps=50))
  if run == "ref":
    c.seed = 1
    c.model.update(dict(d_model=128, num_layers=4, mlp_dim=512))
    c.train.steps = 1500
  elif run in ("bc", "sm"):
    # Fine-tuning from mle: fewer steps, a lower rate.
    c.objective.update(dict(loss=run, p_noise=0.1))
    c.train.update(dict(steps=300, eval_every=150, checkpoint_every=150))
    c.optimizer.update(dict(learning_rate=1e-3, warmup_steps=20))
    if run == "sm":
      c.objective.rollouts = 8
  if "tiny" in flags:
    c.model.update(dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=64,
                        max_len=48))
    c.data.update(dict(seq_len=24, global_batch_size=8))
    c.objective.update(dict(max_items=32, bc_steps=2, rollout_prompt_len=8,
                            rollout_max_actions=8, rollouts=min(c.objective.rollouts, 4)))
    c.train.update(dict(steps=4, log_every=2, eval_every=0, checkpoint_every=4,
                        peak_flops=1e11))   # no eval: one compile less per run (smoke only)
    c.optimizer.warmup_steps = 1
  elif "pod" in flags:
    c.model.update(dict(d_model=1024, num_layers=16, num_heads=16, num_kv_heads=8,
                        mlp_dim=4096, max_len=1024, dtype="bfloat16", remat="dots"))
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    c.data.update(dict(seq_len=512, global_batch_size=256))
    c.objective.update(dict(max_items=576, rollout_prompt_len=128, rollout_max_actions=256))
    c.train.update(dict(steps=c.train.steps * 10, eval_every=1000, checkpoint_every=1000))
  return c
