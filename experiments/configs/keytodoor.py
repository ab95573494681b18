"""Key-to-Door (SPEC section 4): CAT vs behaviour cloning on uniform-random trajectories.

  python -m experiments.train --config=experiments/configs/keytodoor.py:METHOD --workdir=DIR
  python -m experiments.reports.keytodoor_eval --workdir=DIR      # win rate of the trained policy

METHOD: cat (CAT, the policy picks argmax_a P(win | s, a)), bc (plain LM, the policy picks
argmax_a p(a | s)), pbc (%BC: the LM trained on winning trajectories only), dt (Decision Transformer: the LM
trained on all trajectories with a won/lost return token after bos and before every
observation, as DT's (return-to-go, state, action) triples; it plays conditioned on 'won'; ',dt1'
puts the return token after bos only). Append ',1k' for
the 1K-trajectory dataset and ',tiny' for a seconds-long smoke run."""
from experiments.configs.base import base_config
from experiments.tasks import keytodoor


def get_config(arg: str = "cat"):
  method, *flags = (arg or "cat").split(",")
  c = base_config()
  c.task = c.task.__class__(dict(name="keytodoor", num_train=1000 if "1k" in flags else 10000,
                                 num_test=500, seed=0, only_wins=method == "pbc",
                                 return_conditioned=method == "dt",
                                 return_every_step=method == "dt" and "dt1" not in flags))
  # Return tokens: one after bos, and with return_every_step one before every observation.
  extra = ((keytodoor.MAX_DT_TOKENS - keytodoor.MAX_TOKENS) if c.task.return_every_step
           else int(method == "dt"))
  # learned_positions: the model sees absolute time, as Decision Transformer's timestep
  # embedding; what an action is worth in phase 1 depends on the steps left before the timer
  # (keytodoor_compare's count table over (state, time, action) of the 10K episodes wins
  # 0.96).
  c.model.update(dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=192,
                      max_len=keytodoor.MAX_TOKENS + 5 + extra, learned_positions=True))
  c.data.update(dict(seq_len=keytodoor.MAX_TOKENS - 1 + extra, global_batch_size=32))
  c.train.update(dict(steps=800, eval_every=400, eval_batches=4, checkpoint_every=200))
  c.optimizer.update(dict(learning_rate=3e-3, warmup_steps=50))
  if method == "cat":
    # lam 10 and 3000 steps: phase 1's decisions are carried by rare upper-room states whose
    # actions differ by a few hundredths in P(win). With lam 1 at 800 steps CAT learnt only a
    # per-action prior (always N, 0.121); a lam-10 run of 4000 steps won 0.922 at step 3000
    # and 0.829 at the end, overfitting the win labels (held-out attribute loss 0.031 ->
    # 0.044), hence 3000.
    # td_mix 0.7: bootstrapped attribute targets (CATConfig.td_mix; 0 = the paper's labels
    # only). The win label is decided by a random walk ~100 steps after phase 1, so each
    # label is a noisy sample of P(win | s, a); the bootstrap averages it out. Seeds 0-2:
    # 1.000, 1.000, 1.000 with it vs 0.906, 0.982, 0.794 without (seed 2 phase-1 MAE vs exact
    # 0.021 vs 0.059).
    # branch_mlp_dim 192 (the trunk's mlp_dim, the default before issue 29): the win rates
    # above were measured at that width. At the default (64 wide) seed 0 also won 1.000
    # (experiments/results/notes.md, bench_cat_b).
    c.objective = c.objective.__class__(dict(name="cat", param="full", branch="mlp", lam=10.0,
                                             td_mix=0.7, td_top_k=8, branch_mlp_dim=192))
    c.train.update(dict(steps=3000, eval_every=1000, checkpoint_every=500))
    # --config.optimizer.ema_decay=0.999 (evaluate a moving average of the params) is not the
    # default: seed 0 won 0.947 with it vs 0.906 without, seed 2 0.775 vs 0.794.
  elif method in ("bc", "pbc", "dt"):
    c.objective.name = "mle"
    if method == "dt" and "dt1" not in flags:
      # CAT's budget: DT (return token per step) won 0.539 at 800 steps, 0.748 at 1600 and
      # 0.947 at 3000 (seed 0; one run resumed at 800 and 1600, paper 0.946).
      c.train.update(dict(steps=3000, eval_every=1000, checkpoint_every=500))
  else:
    raise ValueError(f"keytodoor methods: cat, bc, pbc, dt; got {method!r}")
  if "tiny" in flags:
    # %BC keeps only the wins (about 1 random episode in 8): 256 leaves it a few batches.
    c.task.update(dict(num_train=256 if method == "pbc" else 64, num_test=16))
    c.model.update(dict(d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, mlp_dim=64))
    c.data.global_batch_size = 8
    c.train.update(dict(steps=4, log_every=2, eval_every=4, eval_batches=1,
                        checkpoint_every=4, peak_flops=1e11, progress=False))
  return c
