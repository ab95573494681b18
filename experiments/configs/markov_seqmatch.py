"""Compounding error on a known sparse Markov chain (the SequenceMatch issue): MLE vs
MLE + <bkspc> (BC on augmented data) vs SequenceMatch, same model, data and steps.

  python -m experiments.reports.markov_compare --root=DIR       # all three, then the report
  python -m experiments.train --config=experiments/configs/markov_seqmatch.py:METHOD \
      --workdir=DIR

METHOD: mle | bc | sm (as in arithmetic_seqmatch.py). The noise is 'ground_truth': a letter
the chain forbids after the last state, the mistake a sampler makes. A small model and few
steps on purpose: a learner that has not fully learned the chain is where compounding errors
show. Append ',tiny' for a seconds-long smoke run, ',ft' for the fine-tuning protocol (300
more steps at a lower rate from an MLE run given as --config.init_from=run:DIR; SequenceMatch
then warms up with 100 BC steps): every method then starts from the same model, as in the
paper. `markov_compare --protocol=finetune` runs it. Append ',dyck' for the same study on
balanced brackets (experiments/tasks/dyck.py: 3 kinds, depth <= 8, 40 brackets; the noise a
close of the wrong kind), where a mistake is a close that an open made many tokens earlier
rules out (`markov_compare --task=dyck`)."""
from experiments.configs.base import base_config


def get_config(arg: str = "sm"):
  method, *flags = (arg or "sm").split(",")
  if method not in ("mle", "bc", "sm") or set(flags) - {"tiny", "ft", "dyck"}:
    raise ValueError(f"markov_seqmatch variants: mle|bc|sm[,ft][,tiny][,dyck]; got {arg!r}")
  c = base_config()
  c.task.update(dict(name="markov", num_states=12, branching=3, length=40, num_train=4000,
                     num_test=200, seed=0))
  if "dyck" in flags:
    c.task = c.task.__class__(dict(name="dyck", kinds=3, max_depth=8, length=40, p_open=0.5,
                                   num_train=4000, num_test=200, data_seed=1))
  c.model.update(dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=192,
                      max_len=128))
  c.objective = c.objective.__class__(dict(
      name="seqmatch", loss="sm", divergence="chi2", gamma=0.998, alpha=1.0, bc_steps=300,
      beta=0.5, p_noise=0.1, noise="ground_truth", max_items=56, rollouts=8,
      rollout_prompt_len=8, rollout_max_actions=24, rollout_temperature=1.0,
      rollout_every=1, reward_backspace=True, regularize_noise=True, horizon=0,
      model_share=0.5))
  c.data.update(dict(seq_len=48, global_batch_size=32))
  c.train.update(dict(steps=600, eval_every=300, checkpoint_every=200, progress=False))
  c.optimizer.update(dict(learning_rate=2e-3, warmup_steps=30))
  if method == "mle":
    c.objective.update(dict(loss="bc", p_noise=0.0, rollouts=0))
  elif method == "bc":
    c.objective.update(dict(loss="bc", rollouts=0))
  if "ft" in flags:
    c.train.update(dict(steps=300, eval_every=150, checkpoint_every=150))
    c.optimizer.update(dict(learning_rate=1e-3, warmup_steps=20))
    c.objective.bc_steps = 100
  if "tiny" in flags:
    c.task.update(dict(num_train=64, num_test=8, length=12))
    c.model.update(dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=64,
                        max_len=48))
    c.data.update(dict(seq_len=16, global_batch_size=8))
    c.objective.update(dict(max_items=24, bc_steps=2, rollouts=min(c.objective.rollouts, 4),
                            rollout_max_actions=6))
    c.train.update(dict(steps=4, log_every=2, eval_every=4, eval_batches=1,
                        checkpoint_every=4, peak_flops=1e11))
    c.optimizer.warmup_steps = 1
  return c
