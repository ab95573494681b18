"""Win rate of a trained Key-to-Door policy (CAT or an LM) in the real environment.

  python -m experiments.keytodoor_eval --workdir=DIR [--episodes=1000] [--policy=auto]

policy: 'cat' (argmax over the 4 actions of P(win | s, a): one-step policy improvement
read off the attribute head), 'bc' (argmax of p(a | s)), 'sample' (a ~ p(a | s)), or 'auto'
(cat for a CAT run, bc otherwise). Writes DIR/keytodoor_eval.json."""
import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from catrans.attributes import probabilities
from catrans.cat_model import CATModel
from experiments.envs import keytodoor as env_lib
from experiments.tasks import keytodoor as k2d

WIDTH = k2d.MAX_TOKENS + 1
ACTIONS = k2d.ACTION0 + np.arange(4)


def make_scorer(objective, policy):
  model = objective.model
  is_cat = isinstance(model, CATModel)
  if policy == "cat" and not is_cat:
    raise ValueError("policy 'cat' needs a CAT run (objective.name = cat)")

  @jax.jit
  def scores(params, tokens_BxW, row):
    rows = jnp.full((tokens_BxW.shape[0],), row)
    if is_cat:
      out = model.apply({"params": params}, tokens_BxW, rows_B=rows, all_tokens=True)
      logits = out.logits[:, 0]
      spec = model.cat.attributes[0]
      p_win = probabilities(spec, out.attributes[spec.name][:, 0])[..., 1]   # [B, V]
    else:
      out = model.apply({"params": params}, tokens_BxW, return_logits=False)
      hidden = out.hidden[:, row][:, None]
      logits = model.apply({"params": params}, hidden, method=model.logits)[:, 0]
      p_win = jnp.zeros_like(logits)
    logp = jax.nn.log_softmax(logits, -1)
    return logp[:, ACTIONS], p_win[:, ACTIONS]
  return scores


def play(objective, params, *, episodes=1000, seed=123, policy="auto", batch=250):
  if policy == "auto":
    policy = "cat" if isinstance(objective.model, CATModel) else "bc"
  scores = make_scorer(objective, policy)
  rng = np.random.default_rng(seed)
  wins = []
  for start in range(0, episodes, batch):
    n = min(batch, episodes - start)
    env = env_lib.KeyToDoor(n, seed=seed + start)
    obs = env.reset()
    tokens = np.zeros((n, WIDTH), np.int32)
    tokens[:, 0] = k2d.BOS
    tokens[:, 1] = [k2d.key_token(k) for k in obs["key"]]
    for t in range(env_lib.EPISODE_STEPS):
      tokens[:, 2 + 2 * t] = k2d.obs_token(obs["phase"], obs["has_key"], obs["pos"])
      logp, p_win = jax.device_get(scores(params, jnp.asarray(tokens), 2 + 2 * t))
      if policy == "cat":
        # Ties (e.g. four equal estimates) are broken by the behaviour policy.
        actions = np.argmax(p_win + 1e-6 * logp, axis=-1)
      elif policy == "bc":
        actions = np.argmax(logp, axis=-1)
      else:
        p = np.exp(logp) / np.exp(logp).sum(-1, keepdims=True)
        actions = np.array([rng.choice(4, p=row) for row in p])
      tokens[:, 3 + 2 * t] = k2d.ACTION0 + actions
      obs, _, done = env.step(actions)
      if done.all():
        break
    wins.append(env.won)
  won = np.concatenate(wins).astype(np.float64)
  return {"policy": policy, "episodes": int(len(won)), "win_rate": float(won.mean()),
          "stderr": float(won.std() / np.sqrt(len(won)))}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--episodes", type=int, default=1000)
  ap.add_argument("--policy", default="auto", choices=("auto", "cat", "bc", "sample"))
  a = ap.parse_args()
  from experiments.arithmetic_eval import load_trainer
  trainer = load_trainer(a.workdir)
  result = play(trainer.objective, trainer.restore_latest().params, episodes=a.episodes,
                policy=a.policy)
  with open(os.path.join(a.workdir, "keytodoor_eval.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(f"{result['policy']} policy: win rate {result['win_rate']:.3f} "
        f"+- {result['stderr']:.3f} over {result['episodes']} episodes")


if __name__ == "__main__":
  main()
