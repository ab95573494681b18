"""Key-to-Door: the rules, a scripted optimal policy, the random win rate, tokenisation."""
import collections

import ml_collections
import numpy as np
import pytest

from experiments.envs import keytodoor as env_lib
from experiments.tasks import get_task
from experiments.tasks import keytodoor as k2d

N, S, W, E = range(4)


def _bfs_action(walkable, src, dst):
  """First action of a shortest path from src to dst."""
  src, dst = tuple(src), tuple(dst)
  if src == dst:
    return N
  prev = {src: None}
  queue = collections.deque([src])
  while queue:
    cur = queue.popleft()
    for a, (dr, dc) in enumerate(env_lib.MOVES):
      nxt = (cur[0] + dr, cur[1] + dc)
      if nxt not in prev and 0 <= nxt[0] < 7 and 0 <= nxt[1] < 11 and walkable[nxt]:
        prev[nxt] = (cur, a)
        queue.append(nxt)
  node, first = dst, None
  while prev[node] is not None:
    node, first = prev[node][0], prev[node][1]
  return first


def test_layout_facts():
  assert len(env_lib.KEY_CELLS) == 10 and len(env_lib.START_CELLS) == 10
  assert tuple(env_lib.DOOR) == (1, 5) and tuple(env_lib.PHASE3_START) == (3, 5)
  assert env_lib.WALKABLE[0].sum() == 23      # 2 x 10 room cells + the 3-cell gap
  assert not env_lib.WALKABLE[2][tuple(env_lib.DOOR)]
  assert env_lib.EPISODE_STEPS == 120


def test_walls_key_and_phase_changes():
  env = env_lib.KeyToDoor(1, seed=0)
  env.reset()
  env.pos[:] = [4, 3]
  env.step(np.array([W]))                     # wall to the west: stays
  assert env.pos.tolist() == [[4, 3]]
  env.key[:] = [2, 4]
  env.pos[:] = [3, 4]
  env.step(np.array([N]))
  assert env.has_key.all() and env.pos.tolist() == [[2, 4]]
  for _ in range(12):
    env.step(np.array([S]))
  assert env.observation()["phase"][0] == 0 and env.pos.tolist() == [[5, 4]]
  env.step(np.array([S]))                     # the 15th action ends phase 1
  assert env.observation()["phase"][0] == 1 and env.pos.tolist() == [[3, 5]]


def test_door_needs_the_key():
  env = env_lib.KeyToDoor(2, seed=0)
  env.reset()
  env.has_key[:] = [True, False]
  env.t[:] = 105                              # phase 3 begins at the fixed start
  env.pos[:] = env_lib.PHASE3_START
  env.step(np.array([N, N]))
  _, reward, done = env.step(np.array([N, N]))
  assert reward.tolist() == [1.0, 0.0] and done.tolist() == [True, False]
  assert env.pos.tolist() == [[1, 5], [2, 5]]   # without the key the door is a wall


def test_scripted_policy_always_wins():
  env = env_lib.KeyToDoor(200, seed=3)
  obs = env.reset()
  while not env.done.all():
    actions = []
    for i in range(200):
      phase = obs["phase"][i]
      if phase == 0 and not obs["has_key"][i]:
        actions.append(_bfs_action(env_lib.WALKABLE[0], obs["pos"][i], obs["key"][i]))
      elif phase == 2:
        actions.append(N)
      else:
        actions.append(E)
    obs, _, _ = env.step(np.array(actions))
  assert env.won.all()


def test_random_policy_win_rate():
  _, won = k2d.random_trajectories(20000, seed=7)
  # Measured 0.0277 over 100,000 episodes (SPEC: about 2.8-3.1%); 4 standard errors here.
  se = np.sqrt(0.028 * 0.972 / 20000)
  assert abs(won.mean() - 0.028) < 4 * se


def test_exact_random_policy_values():
  """The dynamic programme behind the CAT diagnostics: its random win rate matches the
  sampled one, its Q is 1 on the door step and 0 without the key, and acting greedily on it
  (what CAT does with perfect estimates) wins every episode."""
  v = env_lib.RandomPolicyValues()
  _, won = k2d.random_trajectories(20000, seed=7)
  assert abs(v.win_rate() - won.mean()) < 4 * np.sqrt(0.028 * 0.972 / 20000)
  assert 0.02 < v.win_rate() < 0.035
  env = env_lib.KeyToDoor(200, seed=3)
  obs = env.reset()
  q = v.q(obs)
  assert np.all((q > 0) & (q < v.win_after_key))    # the key still has to be found
  for _ in range(env_lib.EPISODE_STEPS):
    q = v.q(obs)
    phase3 = obs["t"] >= 105
    below_door = phase3 & obs["has_key"] & (obs["pos"] == env_lib.DOOR + [1, 0]).all(1)
    assert np.all(q[below_door, N] == 1.0)
    assert np.all(q[phase3 & ~obs["has_key"]] == 0.0)
    obs, _, done = env.step(np.argmax(q, axis=-1))
    if done.all():
      break
  assert env.won.all()


def _q_reference(v, obs):
  """RandomPolicyValues.q one observation and action at a time, from _next_cell."""
  out = np.zeros((len(obs["t"]), 4))
  for i, (t, (r, c), has_key) in enumerate(zip(obs["t"], obs["pos"], obs["has_key"])):
    phase = int(env_lib.phase_of_step(min(t, env_lib.EPISODE_STEPS - 1)))
    left = (env_lib.EPISODE_STEPS if phase == 2 else env_lib.TIMERS[0]) - t - 1
    j = k2d.key_index(obs["key"][i])
    for a in range(4):
      nr, nc, door = env_lib._next_cell(phase, r, c, a)
      if phase == 0 and not has_key:
        got = (nr, nc) == tuple(obs["key"][i])
        out[i, a] = v.win_after_key * (1.0 if got else v.key[j, left, nr, nc])
      elif phase == 2 and has_key:
        out[i, a] = 1.0 if door else v.door[left, nr, nc]
      else:
        out[i, a] = v.win_after_key if has_key else 0.0
  return out


def test_exact_q_table_lookup_equals_the_per_state_reference():
  v = env_lib.RandomPolicyValues()
  env = env_lib.KeyToDoor(64, seed=11)
  obs, rng = env.reset(), np.random.default_rng(0)
  seen = set()
  for _ in range(env_lib.EPISODE_STEPS):
    np.testing.assert_array_equal(v.q(obs), _q_reference(v, obs))
    seen |= set(zip(env_lib.phase_of_step(obs["t"]).tolist(), obs["has_key"].tolist()))
    obs, _, done = env.step(rng.integers(0, 4, 64))
    if done.all():
      break
  assert seen == {(p, k) for p in range(3) for k in (False, True)}   # every case checked


def test_factored_observation_features_name_each_state():
  """token_features gives every observation its phase/possession, row and column, and the
  key's cell and its offset from the agent where the observation names the key; the trainer
  hands them to the model."""
  feats = np.array(k2d.token_features())
  for ph, hk, (r, c), key in ((0, 0, (4, 3), (1, 5)), (0, 1, (2, 4), (2, 4)),
                              (1, 1, (3, 5), (1, 3)), (2, 0, (2, 5), (1, 3))):
    t = int(k2d.obs_token(ph, hk, np.array([r, c]), np.array(key)))
    seeking = ph == 0 and not hk
    want = [ph * 2 + hk, r, c] + (list(key) + [key[0] - r + 6, key[1] - c + 10] if seeking
                                  else [-1] * 4)
    assert feats[:, t].tolist() == want
  assert feats[:, k2d.ACTION0:k2d.KEY0].max() == -1
  assert feats[3:5, k2d.KEY0 + 2].tolist() == env_lib.KEY_CELLS[2].tolist()
  assert feats[5:, k2d.KEY0 + 2].tolist() == [-1, -1]
  task = get_task("keytodoor", ml_collections.ConfigDict(dict(num_train=4, num_test=2)))
  assert task.token_features == k2d.token_features()
  off = get_task("keytodoor", ml_collections.ConfigDict(dict(num_train=4, num_test=2,
                                                              features=False)))
  assert off.token_features == ()


def test_tokenisation_round_trip_and_determinism():
  seqs, won = k2d.random_trajectories(50, seed=1)
  again, won2 = k2d.random_trajectories(50, seed=1)
  assert seqs == again and won.tolist() == won2.tolist()
  for seq, w in zip(seqs, won):
    assert seq[0] == k2d.BOS and seq[-1] == k2d.EOS and len(seq) <= k2d.MAX_TOKENS
    assert all(0 <= t < k2d.VOCAB_SIZE for t in seq)
    assert k2d.describe(seq[1]).startswith("key@")
    words = k2d.KeyToDoorTokenizer().decode(seq[2:8]).split()
    assert words[0].startswith("p1@") and words[1] in env_lib.ACTION_NAMES
    # A win ends at the door: the last observation before it is next to the door with the key.
    if w:
      assert k2d.describe(seq[-3]) in ("p3K@2,5",)
  task = get_task("keytodoor", ml_collections.ConfigDict(dict(num_train=40, num_test=10)))
  ex = task.source("train")[0]
  assert ex["tokens"][0] >= k2d.KEY0 and ex["label"] in (0, 1)
  wins = get_task("keytodoor", ml_collections.ConfigDict(dict(num_train=400, num_test=10,
                                                              only_wins=True)))
  assert all(e["label"] == 1 for e in wins.source("train"))


def test_bad_actions():
  env = env_lib.KeyToDoor(2)
  env.reset()
  with pytest.raises(ValueError, match="ints in 0..3"):
    env.step(np.array([0, 4]))


def _scripted_winning_tokens(seed=5):
  """One scripted winning episode as tokens [bos, key, obs_0, act_0, ..., eos] and the step at
  which the key was taken."""
  env = env_lib.KeyToDoor(1, seed=seed)
  obs = env.reset()
  toks, key_step = [k2d.BOS, k2d.key_token(obs["key"][0])], None
  for t in range(env_lib.EPISODE_STEPS):
    toks.append(int(k2d.obs_token(obs["phase"], obs["has_key"], obs["pos"], obs["key"])[0]))
    if obs["phase"][0] == 0 and not obs["has_key"][0]:
      a = _bfs_action(env_lib.WALKABLE[0], obs["pos"][0], obs["key"][0])
    else:
      a = N if obs["phase"][0] == 2 else E
    toks.append(k2d.ACTION0 + a)
    had = bool(obs["has_key"][0])
    obs, _, done = env.step(np.array([a]))
    if obs["has_key"][0] and not had:
      key_step = t
    if done[0]:
      break
  assert env.won[0]
  return toks + [k2d.EOS], key_step


def test_key_and_door_indices():
  from experiments.reports.keytodoor_eval import key_and_door
  toks, key_step = _scripted_winning_tokens()
  key_idx, door_idx = key_and_door(toks)
  assert key_idx == 3 + 2 * key_step           # the action token of the pickup step
  assert door_idx == len(toks) - 2             # the last action, right before eos
  assert k2d.describe(toks[key_idx + 1]).startswith("p1K@")


def test_decision_transformer_task_and_compare_table(tmp_path):
  """The DT task variant, and the compare command end to end on it: it trains, plays with
  the 'won' token, and its table holds the exact random rate and the exact-estimate ceiling."""
  import json
  import os
  from experiments.configs.keytodoor import get_config
  from experiments.reports.keytodoor_compare import main
  c = get_config("dt,tiny")
  task = get_task("keytodoor", c.task)
  assert task.tokenizer.vocab_size == k2d.VOCAB_SIZE + 2
  ex = task.source("train")
  plain = get_task("keytodoor", get_config("bc,tiny").task).source("train")
  for e, p in zip(ex, plain):
    ret = k2d.RETURN0 + e["label"]
    t = e["tokens"]
    assert t[0] == ret
    # DT's triples: the return token right before every observation, nothing else added.
    is_obs = (t >= k2d.OBS0) & (t < k2d.VOCAB_SIZE)
    assert (t[np.flatnonzero(is_obs) - 1] == ret).all()
    np.testing.assert_array_equal(t[t != ret], p["tokens"])
  assert k2d.describe(k2d.RETURN0 + 1) == "<won>"
  assert c.data.seq_len == get_config("bc,tiny").data.seq_len + 1 + env_lib.EPISODE_STEPS
  once = get_config("dt,tiny,dt1")
  assert once.data.seq_len == get_config("bc,tiny").data.seq_len + 1
  assert all(e["tokens"][0] == k2d.RETURN0 + e["label"] and (e["tokens"][1:] < k2d.RETURN0).all()
             for e in get_task("keytodoor", once.task).source("train"))
  rows = main([f"--root={tmp_path}", "--methods=dt", "--seeds=0", "--episodes=8", "--tiny"])
  r = json.load(open(os.path.join(tmp_path, "dt_s0", "keytodoor_eval.json")))
  assert r["policy"] == "dt" and r["episodes"] == 8 and rows["dt"] == [r["win_rate"]]
  assert rows["random"] == [env_lib.RandomPolicyValues().win_rate()]
  assert rows["exact"] == [1.0]
  assert 0.0 <= rows["table"][0] <= 1.0
  assert "Decision Transformer" in open(os.path.join(tmp_path, "report.md")).read()
  with pytest.raises(ValueError, match="keytodoor methods"):
    get_config("decision")


def _cached_policy_scores_equal_full_forward(objective, params):
  """The evaluator feeds episodes through a KV cache; its scores must equal a forward pass
  over the whole prefix read at the newest row."""
  import jax
  import jax.numpy as jnp
  from catrans.attributes import probabilities
  from experiments.reports.keytodoor_eval import ACTIONS, make_scorer, new_cache
  seqs, _ = k2d.random_trajectories(3, seed=4)
  n = min(len(x) for x in seqs) - 1
  tokens = np.stack([x[:n] for x in seqs]).astype(np.int32)
  step, cache = make_scorer(objective, "cat"), new_cache(objective, 3)
  spec = objective.model.cat.attributes[0]
  full = objective.model.apply({"params": params}, jnp.asarray(tokens), all_tokens=True)
  ref_logp = jax.nn.log_softmax(full.logits, -1)[..., ACTIONS]
  ref_win = probabilities(spec, full.attributes[spec.name])[..., 1][..., ACTIONS]
  for row in range(2, 12, 2):                   # rows of observations 0..4
    new = tokens[:, :3] if row == 2 else tokens[:, row - 1:row + 1]
    logp, p_win, cache = step(params, jnp.asarray(new), cache)
    np.testing.assert_allclose(logp, ref_logp[:, row], atol=2e-5)
    np.testing.assert_allclose(p_win, ref_win[:, row], atol=2e-5)


def test_cat_eval_writes_credit_plot_of_a_winning_episode(tmp_path):
  import json
  import os
  from experiments.configs.keytodoor import get_config
  from experiments.reports.keytodoor_eval import main
  from experiments.trainer import Trainer
  t = Trainer(get_config("cat,tiny"), str(tmp_path), progress=False)
  t.run()
  _cached_policy_scores_equal_full_forward(t.objective, t.restore_latest().params)
  main([f"--workdir={tmp_path}", "--episodes=8"])
  r = json.load(open(os.path.join(tmp_path, "keytodoor_eval.json")))
  assert r["policy"] == "cat" and 0.0 <= r["win_rate"] <= 1.0
  for k in ("credit_rank_key_pickup", "credit_rank_door"):
    assert 1 <= r[k] <= r["credit_episode_tokens"]
  for p in (1, 2, 3):     # estimates against the exact values on the states it visited
    assert 0.0 <= r[f"phase{p}_mae_vs_exact"] <= 1.0
    assert 0.0 <= r[f"phase{p}_best_action_rate"] <= 1.0
  assert os.path.getsize(os.path.join(tmp_path, "keytodoor_credit.png")) > 10_000


def test_every_observation_token_decodes_to_its_state():
  """Phase, cell, possession and (before the pickup) the key cell are readable from each
  observation token alone, and no two states share a token."""
  seen = {}
  for ph in range(3):
    for hk in (0, 1):
      for r in range(env_lib.ROWS):
        for c in range(env_lib.COLS):
          for key in env_lib.KEY_CELLS:
            t = int(k2d.obs_token(ph, hk, np.array([r, c]), key))
            state = (ph, hk, r, c, tuple(key) if ph == 0 and not hk else None)
            assert seen.setdefault(t, state) == state
            assert bool(k2d.holds_key(t)) == bool(hk)
            assert k2d.describe(t).startswith(f"p{ph + 1}{'K' if hk else ''}@{r},{c}")
  assert sorted(seen) == list(range(k2d.OBS0, k2d.VOCAB_SIZE))
  with pytest.raises(ValueError, match="not a key cell"):
    k2d.obs_token(0, 0, np.array([4, 4]), np.array([0, 0]))
