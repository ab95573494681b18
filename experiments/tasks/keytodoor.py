"""Key-to-Door trajectories as token sequences for CAT (SPEC section 4).

Vocabulary (1172 tokens): pad 0, bos 1, eos 2; actions N S W E = 3..6; the key's location
(10 cells) = 7..16; observations 17..401 = 17 + (phase * 2 + has_key - 1) * 77 + row * 11 +
col for phase 1 with the key and phases 2 and 3; observations 402..1171 = 402 + key * 77 +
row * 11 + col in phase 1 before the key is taken. Every observation thus shows the phase,
the agent's cell, possession and (while it matters) where the key lies (SPEC section 4).
A first version named the key only in the token after bos (CAT then needs attention to
find it); putting it in the observation left CAT's win rate unchanged (0.121 either way, see
the issue notes): what limits CAT here is the sparse signal, not what it can see.
Sequence: [bos, key, obs_0, act_0, obs_1, act_1, ..., obs_{T-1}, act_{T-1}, eos] (at most 243
tokens; a won episode ends at the door). Sequence attribute 'win' (0/1).

Config keys: num_train (10000; the paper's 1K setting: 1000), num_test (500), seed (0),
features (True: the model embeds observations factored, see token_features),
only_wins (False: the %BC baseline trains on the winning trajectories only),
return_conditioned (False: the Decision Transformer baseline puts a return token, 'won' or
'lost', right after bos; two extra vocabulary ids), return_every_step (False: with
return_conditioned, the return token is also put before every observation, as Decision
Transformer's (return-to-go, state, action) triples). With one terminal 0/1 reward the return to
go is the same at every step, so one token at the start carries all that DT conditions on; but
from the start the model must learn to attend ~200 tokens back to a token that flips the
action distribution of 3% of the data, and 800-1000 steps did not (win rate 0.087-0.124);
next to every observation it is one position away."""
import numpy as np

from experiments.envs import keytodoor as env_lib
from experiments.tasks import Task, in_memory_task

PAD, BOS, EOS = 0, 1, 2
ACTION0, KEY0, OBS0 = 3, 7, 17
NUM_CELLS = env_lib.ROWS * env_lib.COLS
NUM_KEYS = len(env_lib.KEY_CELLS)
SEEK0 = OBS0 + 5 * NUM_CELLS    # phase 1, key not yet taken, one block per key cell
VOCAB_SIZE = SEEK0 + NUM_KEYS * NUM_CELLS
RETURN0 = VOCAB_SIZE          # return tokens (lost, won) of the Decision Transformer variant
MAX_TOKENS = 3 + 2 * env_lib.EPISODE_STEPS
MAX_DT_TOKENS = MAX_TOKENS + 1 + env_lib.EPISODE_STEPS   # return tokens after bos and per step
DEFAULTS = dict(num_train=10000, num_test=500, seed=0, only_wins=False,
                return_conditioned=False, return_every_step=False, features=True)
FEATURE_NAMES = ("phase_and_possession", "row", "col", "key_row", "key_col", "key_drow",
                 "key_dcol")


def token_features(vocab_size: int = VOCAB_SIZE):
  """catrans ModelConfig.token_features: per token, the phase-and-possession (0..5), row and
  column of an observation, the key's row and column (observations before the pickup and
  the key token) and the key's offset from the agent (observations before the pickup, shifted
  to be >= 0); -1 where a token has no such value. What a grid encoder would give: the model
  can learn 'north of the agent' once for all cells instead of once per token, and 'the key
  is to my left' once for all pairs of cells instead of learning a comparison of two
  embeddings."""
  feats = np.full((len(FEATURE_NAMES), vocab_size), -1, np.int64)
  for tok in range(OBS0, VOCAB_SIZE):
    if tok >= SEEK0:
      key, cell = divmod(tok - SEEK0, NUM_CELLS)
      combo = 0
      feats[3:5, tok] = env_lib.KEY_CELLS[key]
      feats[5:, tok] = (env_lib.KEY_CELLS[key] - divmod(cell, env_lib.COLS)
                        + (env_lib.ROWS - 1, env_lib.COLS - 1))
    else:
      combo, cell = divmod(tok - OBS0, NUM_CELLS)
      combo += 1
    feats[0, tok] = combo
    feats[1:3, tok] = divmod(cell, env_lib.COLS)
  for key in range(NUM_KEYS):
    feats[3:5, KEY0 + key] = env_lib.KEY_CELLS[key]
  return tuple(tuple(int(v) for v in f) for f in feats)


class KeyToDoorTokenizer:
  pad_id, bos_id, eos_id = PAD, BOS, EOS

  def __init__(self, return_conditioned: bool = False):
    self.vocab_size = VOCAB_SIZE + (2 if return_conditioned else 0)

  def encode(self, text):
    raise ValueError("Key-to-Door examples carry 'tokens'; there is no text form")

  def decode(self, ids):
    return " ".join(describe(int(i)) for i in ids)


def key_token(key_rc):
  idx = [tuple(k) for k in env_lib.KEY_CELLS.tolist()].index(tuple(int(x) for x in key_rc))
  return KEY0 + idx


def key_index(key_rc):
  """Index (0..9) of the key cell(s) key_rc [..., 2] among env_lib.KEY_CELLS."""
  hit = (np.asarray(key_rc)[..., None, :] == env_lib.KEY_CELLS).all(-1)
  if not hit.any(-1).all():
    raise ValueError(f"not a key cell: {np.asarray(key_rc).tolist()}")
  return hit.argmax(-1)


def obs_token(phase, has_key, pos, key_rc):
  """Observation token(s) of the phase, possession, agent cell and key cell (batched)."""
  phase, has_key = np.asarray(phase), np.asarray(has_key, np.int32)
  cell = np.asarray(pos)[..., 0] * env_lib.COLS + np.asarray(pos)[..., 1]
  seeking = (phase == 0) & (has_key == 0)
  return np.where(seeking, SEEK0 + key_index(key_rc) * NUM_CELLS + cell,
                  OBS0 + (phase * 2 + has_key - 1) * NUM_CELLS + cell)


def holds_key(tokens):
  """True for observation tokens in which the agent holds the key."""
  t = np.asarray(tokens)
  return (t >= OBS0) & (t < SEEK0) & (((t - OBS0) // NUM_CELLS) % 2 == 0)


def describe(token: int) -> str:
  if token in (PAD, BOS, EOS):
    return ("<pad>", "<bos>", "<eos>")[token]
  if token in (RETURN0, RETURN0 + 1):
    return ("<lost>", "<won>")[token - RETURN0]
  if ACTION0 <= token < KEY0:
    return env_lib.ACTION_NAMES[token - ACTION0]
  if KEY0 <= token < OBS0:
    r, c = env_lib.KEY_CELLS[token - KEY0].tolist()
    return f"key@{r},{c}"
  if token >= SEEK0:
    key, cell = divmod(token - SEEK0, NUM_CELLS)
    r, c = divmod(cell, env_lib.COLS)
    kr, kc = env_lib.KEY_CELLS[key].tolist()
    return f"p1@{r},{c}(key@{kr},{kc})"
  combo, cell = divmod(token - OBS0, NUM_CELLS)
  ph, has_key = divmod(combo + 1, 2)
  r, c = divmod(cell, env_lib.COLS)
  return f"p{ph + 1}{'K' if has_key else ''}@{r},{c}"


def random_trajectories(num: int, seed: int):
  """num uniform-random episodes as token lists and win labels."""
  env = env_lib.KeyToDoor(num, seed=seed)
  rng = np.random.default_rng(seed + 1)
  obs = env.reset()
  cols = [np.full(num, BOS), np.array([key_token(k) for k in obs["key"]])]
  live = [np.ones(num, bool), np.ones(num, bool)]
  for _ in range(env_lib.EPISODE_STEPS):
    alive = ~env.done
    actions = rng.integers(0, 4, size=num)
    cols += [obs_token(obs["phase"], obs["has_key"], obs["pos"], obs["key"]), ACTION0 + actions]
    live += [alive, alive]
    obs, _, _ = env.step(actions)
  tokens, live = np.stack(cols, 1), np.stack(live, 1)
  out = []
  for i in range(num):
    seq = tokens[i][live[i]].tolist() + [EOS]
    out.append(seq)
  return out, env.won.astype(np.int32)


def with_returns(tokens, won, every_step: bool):
  """Decision Transformer's input: the return token (RETURN0 + won) first and, with
  every_step, again before every observation token."""
  ret = RETURN0 + int(won)
  out = [ret]
  for tok in tokens:
    if every_step and OBS0 <= tok < VOCAB_SIZE:
      out.append(ret)
    out.append(tok)
  return out


def make_task(config) -> Task:
  opts = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  test, test_won = random_trajectories(int(opts["num_test"]), int(opts["seed"]) + 10_000)
  train, won = random_trajectories(int(opts["num_train"]), int(opts["seed"]))
  if opts["only_wins"]:
    train = [t for t, w in zip(train, won) if w]
    if not train:
      raise ValueError(f"only_wins: none of the num_train={opts['num_train']} random "
                       "trajectories won; raise num_train")
    won = np.ones(len(train), np.int32)
  if opts["return_every_step"] and not opts["return_conditioned"]:
    raise ValueError("return_every_step needs return_conditioned=True")
  # bos and eos are the pipeline's to add.
  body = (lambda t, w: with_returns(t[1:-1], w, opts["return_every_step"])
          ) if opts["return_conditioned"] else (lambda t, w: t[1:-1])
  splits = {
      name: [{"tokens": np.asarray(body(t, w), np.int32), "label": int(w)}
             for t, w in zip(trajs, wins)]
      for name, trajs, wins in (("train", train, won), ("test", test, test_won))
  }

  tokenizer = KeyToDoorTokenizer(bool(opts["return_conditioned"]))
  return in_memory_task("keytodoor", tokenizer, splits, label_names={"label": ("lose", "win")},
                        token_features=(token_features(tokenizer.vocab_size)
                                        if opts["features"] else ()))
