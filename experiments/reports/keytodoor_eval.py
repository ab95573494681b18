"""Win rate of a trained Key-to-Door policy (CAT or an LM) in the real environment.

  python -m experiments.reports.keytodoor_eval --workdir=DIR [--episodes=1000] [--policy=auto]

policy: 'cat' (argmax over the 4 actions of P(win | s, a): one-step policy improvement
read off the attribute head), 'bc' (argmax of p(a | s)), 'sample' (a ~ p(a | s)), or 'auto'
(cat for a CAT run, bc otherwise). A Decision Transformer run (task.return_conditioned)
plays with the 'won' return token after bos. A CAT run also reports, per phase, its
estimates' mean absolute error against the exact P(win | s, a) (envs.keytodoor.
RandomPolicyValues) on the states it visits and how often its action is an exact best.
Writes DIR/keytodoor_eval.json, and for a CAT run DIR/keytodoor_credit.png: the advantage credit of every token of one winning episode,
with the key pickup and the door marked (their credit ranks go into the JSON)."""
import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from catrans.attributes import probabilities
from catrans.cat_model import CATModel, init_cat_cache
from catrans.transformer import init_cache
from experiments.envs import keytodoor as env_lib
from experiments.tasks import keytodoor as k2d

WIDTH = k2d.MAX_DT_TOKENS + 1   # room for the return tokens
ACTIONS = k2d.ACTION0 + np.arange(4)


def make_scorer(objective, policy):
  """A jitted step(params, new_tokens_BxN, cache) -> (log p(a | s) [B, 4], P(win | s, a)
  [B, 4], cache) reading the newest row: the episode's tokens go in through a KV cache, a
  few per step, instead of re-reading the whole episode at every step."""
  model = objective.model
  is_cat = isinstance(model, CATModel)
  if policy == "cat" and not is_cat:
    raise ValueError("policy 'cat' needs a CAT run (objective.name = cat)")

  @jax.jit
  def step(params, new_BxN, cache):
    b, n = new_BxN.shape
    if is_cat:
      out = model.apply({"params": params}, new_BxN, cache=cache,
                        rows_B=jnp.full((b,), n - 1), all_tokens=True)
      logits = out.logits[:, 0]
      spec = model.cat.attributes[0]
      p_win = probabilities(spec, out.attributes[spec.name][:, 0])[..., 1]   # [B, V]
    else:
      out = model.apply({"params": params}, new_BxN, cache=cache)
      logits = out.logits[:, -1]
      p_win = jnp.zeros_like(logits)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return logp[:, ACTIONS], p_win[:, ACTIONS], out.cache
  return step


def new_cache(objective, batch):
  model = objective.model
  if isinstance(model, CATModel):
    return init_cat_cache(model.cfg, model.cat, batch, WIDTH)
  return init_cache(objective.model_config, batch, WIDTH)


def play(objective, params, *, episodes=1000, seed=123, policy="auto", batch=250,
         return_conditioned=False, return_every_step=False):
  """Win rate over `episodes` fresh environments; with return_conditioned every episode's
  tokens start [bos, <won>, key, ...] (the Decision Transformer asks for a win), and with
  return_every_step a <won> precedes every observation."""
  if policy == "auto":
    policy = "cat" if isinstance(objective.model, CATModel) else "bc"
  step = make_scorer(objective, policy)
  rng = np.random.default_rng(seed)
  exact = env_lib.RandomPolicyValues() if policy == "cat" else None
  wins, errors, agree, phases = [], [], [], []
  for start in range(0, episodes, batch):
    n = min(batch, episodes - start)
    env = env_lib.KeyToDoor(n, seed=seed + start)
    obs = env.reset()
    head = [np.full(n, k2d.BOS)] + ([np.full(n, k2d.RETURN0 + 1)] if return_conditioned else [])
    new = np.stack(head + [np.array([k2d.key_token(k) for k in obs["key"]])], 1)
    cache = new_cache(objective, n)
    for t in range(env_lib.EPISODE_STEPS):
      o_t = k2d.obs_token(obs["phase"], obs["has_key"], obs["pos"], obs["key"])
      ret = [np.full((n, 1), k2d.RETURN0 + 1)] if return_every_step else []
      new = np.concatenate([new] + ret + [o_t[:, None]], 1).astype(np.int32)
      logp, p_win, cache = step(params, jnp.asarray(new), cache)
      logp, p_win = jax.device_get((logp, p_win))
      if policy == "cat":
        # Ties (e.g. four equal estimates) are broken by the behaviour policy.
        actions = np.argmax(p_win + 1e-6 * logp, axis=-1)
        # The estimate against the exact P(win | s, a) on the states this policy visits.
        live = ~env.done
        q = exact.q({k: v[live] for k, v in obs.items()})
        errors.append(np.abs(p_win[live] - q).mean(-1))
        agree.append(q[np.arange(len(q)), actions[live]] >= q.max(-1) - 1e-9)
        phases.append(env_lib.phase_of_step(obs["t"][live]))
      elif policy == "bc":
        actions = np.argmax(logp, axis=-1)
      else:
        p = np.exp(logp) / np.exp(logp).sum(-1, keepdims=True)
        actions = np.array([rng.choice(4, p=row) for row in p])
      new = (k2d.ACTION0 + actions)[:, None]
      obs, _, done = env.step(actions)
      if done.all():
        break
    wins.append(env.won)
  won = np.concatenate(wins).astype(np.float64)
  out = {"policy": ("dt" if return_conditioned else policy), "episodes": int(len(won)),
         "win_rate": float(won.mean()), "stderr": float(won.std() / np.sqrt(len(won)))}
  if exact is not None:
    errors, agree, phases = map(np.concatenate, (errors, agree, phases))
    for p in range(3):
      out[f"phase{p + 1}_mae_vs_exact"] = float(errors[phases == p].mean())
      out[f"phase{p + 1}_best_action_rate"] = float(agree[phases == p].mean())
  return out


def key_and_door(tokens):
  """Indices of the action that picks up the key (the one before the first observation
  holding it) and of the last action (a won episode ends on the door) in one episode's
  tokens [bos, key, obs_0, act_0, ..., eos]. Observations follow deterministically from
  the action before them, so the credit belongs to the actions."""
  tokens = np.asarray(tokens)
  has_key = k2d.holds_key(tokens)
  acts = np.flatnonzero((tokens >= k2d.ACTION0) & (tokens < k2d.KEY0))
  return int(np.argmax(has_key)) - 1, int(acts[-1])


def credit_of_winning_episode(objective, params, seed=777):
  """Advantage credit (catrans.inference.estimate) of each token of the first winning
  random episode, its tokens, and the key-pickup / door indices."""
  from catrans.inference import estimate
  trajs, won = k2d.random_trajectories(400, seed)
  tokens = np.asarray(trajs[int(np.argmax(won))][:-1], np.int32)   # drop eos
  spec = objective.model.cat.attributes[0]
  est = estimate(objective.model, params, tokens[None], attribute=spec.name, target=1)
  return tokens, np.asarray(est.advantage[0]), np.asarray(est.q[0]), key_and_door(tokens)


def plot_credit(tokens, credit, q, key_idx, door_idx, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  x = np.arange(len(tokens))
  is_act = (tokens >= k2d.ACTION0) & (tokens < k2d.KEY0)
  fig, (a0, a1) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
  a0.bar(x[is_act], credit[is_act], color="tab:blue", label="action tokens", width=1.0)
  a0.bar(x[~is_act], credit[~is_act], color="tab:orange", label="observation tokens", width=1.0)
  for i, name in ((key_idx, "takes the key"), (door_idx, "door")):
    a0.annotate(name, (i, credit[i]), textcoords="offset points", xytext=(4, 6), fontsize=8)
  a0.set_ylabel("credit Q(s,x) - V(s)")
  a0.legend(fontsize=8)
  a1.plot(x, q, color="k")
  a1.set_ylabel("P(win | prefix)")
  a1.set_xlabel("token index in one winning episode")
  a1.set_ylim(0, 1.02)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--episodes", type=int, default=1000)
  ap.add_argument("--policy", default="auto", choices=("auto", "cat", "bc", "sample"))
  a = ap.parse_args(argv)
  from experiments.runs import load_trainer
  trainer = load_trainer(a.workdir)
  params = trainer.restore_params()
  result = play(trainer.objective, params, episodes=a.episodes, policy=a.policy,
                return_conditioned=bool(trainer.config.task.get("return_conditioned", False)),
                return_every_step=bool(trainer.config.task.get("return_every_step", False)))
  if isinstance(trainer.objective.model, CATModel):
    tokens, credit, q, (key_idx, door_idx) = credit_of_winning_episode(trainer.objective, params)
    # Rank 1 = the largest credit in the episode: the paper's claim is that these two stand out.
    order = np.argsort(-credit)
    result["credit_rank_key_pickup"] = int(np.flatnonzero(order == key_idx)[0]) + 1
    result["credit_rank_door"] = int(np.flatnonzero(order == door_idx)[0]) + 1
    result["credit_episode_tokens"] = int(len(tokens))
    plot_credit(tokens, credit, q, key_idx, door_idx,
                os.path.join(a.workdir, "keytodoor_credit.png"))
  with open(os.path.join(a.workdir, "keytodoor_eval.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(f"{result['policy']} policy: win rate {result['win_rate']:.3f} "
        f"+- {result['stderr']:.3f} over {result['episodes']} episodes")
  if "phase1_mae_vs_exact" in result:
    print("P(win | s, a) vs the exact random-policy value on the visited states: " + ", ".join(
        f"phase {p} MAE {result[f'phase{p}_mae_vs_exact']:.4f} best action "
        f"{result[f'phase{p}_best_action_rate']:.3f}" for p in (1, 2, 3)))


if __name__ == "__main__":
  main()
