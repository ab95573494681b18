"""Key-to-Door (the sparse-reward task of the Decision Transformer and CAT papers), batched
in numpy.

A 7 x 11 grid, actions N, S, W, E, three phases with fixed timers 15 / 90 / 15 steps:
  1. two 5x2 rooms joined by a 3-cell gap; the key lies on one of the 10 upper cells, the
     agent starts on one of the 10 lower cells (both uniform); stepping on the key takes it;
  2. an empty room (nothing to do, no reward): a long distraction between cause and effect;
  3. a small room whose door is two cells north of the fixed start; the door is a wall
     without the key; stepping on it with the key gives reward 1, the win, and ends the
     episode.
A move into a wall leaves the agent in place. At each phase change the agent is placed at
the phase's start (phase 2: the middle of its room)."""
import numpy as np

PHASE1 = ("  #######  ",
          "  #kkkkk#  ",
          "  #kkkkk#  ",
          "  ##   ##  ",
          "  #+++++#  ",
          "  #+++++#  ",
          "  #######  ")
PHASE2 = ("           ",
          "  #######  ",
          "  #     #  ",
          "  #  +  #  ",
          "  #     #  ",
          "  #######  ",
          "           ")
PHASE3 = ("           ",
          "   ##d##   ",
          "   #   #   ",
          "   # + #   ",
          "   #   #   ",
          "   #####   ",
          "           ")
ROWS, COLS = 7, 11
TIMERS = (15, 90, 15)
EPISODE_STEPS = sum(TIMERS)
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])   # N, S, W, E
ACTION_NAMES = ("N", "S", "W", "E")


def _cells(layout, chars):
  return [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch in chars]


def _walkable(layout):
  """Interior cells: everything inside the walls that is not a wall (the door is handled
  separately)."""
  w = np.zeros((ROWS, COLS), bool)
  for r, c in _cells(layout, " k+"):
    # Only cells enclosed by walls count: a blank cell with a wall on both sides of its row.
    row = layout[r]
    if "#" in row[:c] and "#" in row[c + 1:]:
      w[r, c] = True
  return w


KEY_CELLS = np.array(_cells(PHASE1, "k"))
START_CELLS = np.array(_cells(PHASE1, "+"))
PHASE2_START = np.array(_cells(PHASE2, "+")[0])
PHASE3_START = np.array(_cells(PHASE3, "+")[0])
DOOR = np.array(_cells(PHASE3, "d")[0])
WALKABLE = np.stack([_walkable(PHASE1), _walkable(PHASE2), _walkable(PHASE3)])


def phase_of_step(t):
  """Phase index 0, 1, 2 of time step t (0-based)."""
  t = np.asarray(t)
  return (t >= TIMERS[0]).astype(np.int32) + (t >= TIMERS[0] + TIMERS[1]).astype(np.int32)


class KeyToDoor:
  """A batch of independent episodes. reset() -> observation dict; step(actions) ->
  (observation, reward, done). Observations: phase [B], pos [B, 2], has_key [B],
  key [B, 2] (the key's cell, fixed per episode), t [B]."""

  def __init__(self, batch_size: int, seed: int = 0):
    self.batch_size = batch_size
    self.rng = np.random.default_rng(seed)

  def reset(self):
    b = self.batch_size
    self.key = KEY_CELLS[self.rng.integers(len(KEY_CELLS), size=b)]
    self.pos = START_CELLS[self.rng.integers(len(START_CELLS), size=b)].copy()
    self.has_key = np.zeros(b, bool)
    self.t = np.zeros(b, np.int32)
    self.done = np.zeros(b, bool)
    self.won = np.zeros(b, bool)
    return self.observation()

  def observation(self):
    return {"phase": phase_of_step(np.minimum(self.t, EPISODE_STEPS - 1)), "pos": self.pos.copy(),
            "has_key": self.has_key.copy(), "key": self.key.copy(), "t": self.t.copy()}

  def step(self, actions):
    actions = np.asarray(actions)
    if actions.shape != (self.batch_size,) or np.any((actions < 0) | (actions > 3)):
      raise ValueError(f"actions must be [{self.batch_size}] ints in 0..3, got {actions}")
    live = ~self.done
    phase = phase_of_step(self.t)
    target = self.pos + MOVES[actions]
    r, c = np.clip(target[:, 0], 0, ROWS - 1), np.clip(target[:, 1], 0, COLS - 1)
    free = WALKABLE[phase, r, c]
    at_door = (phase == 2) & (r == DOOR[0]) & (c == DOOR[1])
    win = live & at_door & self.has_key
    move = live & (free | win)
    self.pos = np.where(move[:, None], np.stack([r, c], 1), self.pos)
    got_key = live & (phase == 0) & np.all(self.pos == self.key, axis=1)
    self.has_key = self.has_key | got_key
    self.won = self.won | win
    self.t = np.where(live, self.t + 1, self.t)
    # Phase changes put the agent at the new phase's start.
    new_phase = phase_of_step(np.minimum(self.t, EPISODE_STEPS - 1))
    entered2 = live & (new_phase == 1) & (phase == 0)
    entered3 = live & (new_phase == 2) & (phase == 1)
    self.pos = np.where(entered2[:, None], PHASE2_START, self.pos)
    self.pos = np.where(entered3[:, None], PHASE3_START, self.pos)
    self.done = self.done | win | (self.t >= EPISODE_STEPS)
    return self.observation(), win.astype(np.float32), self.done.copy()


def _next_cell(phase, r, c, a):
  """(row, col, stepped_on_door) after action a from (r, c) in `phase` (door: phase 3)."""
  nr, nc = min(max(r + MOVES[a][0], 0), ROWS - 1), min(max(c + MOVES[a][1], 0), COLS - 1)
  if phase == 2 and (nr, nc) == tuple(DOOR):
    return nr, nc, True
  return (nr, nc, False) if WALKABLE[phase, nr, nc] else (r, c, False)


# NEXT_CELL[i][phase, r, c, a]: _next_cell's row, column and door flag as tables, so that
# RandomPolicyValues.q is array indexing (keytodoor_eval calls it at every step).
_NEXT = np.array([[[[_next_cell(ph, r, c, a) for a in range(4)] for c in range(COLS)]
                   for r in range(ROWS)] for ph in range(3)], np.int64)   # [3, R, C, 4, 3]
NEXT_CELL = (_NEXT[..., 0], _NEXT[..., 1], _NEXT[..., 2].astype(bool))


class RandomPolicyValues:
  """Exact Q(s, a) = P(win | s, a, then uniform-random actions): the quantity CAT estimates
  from random trajectories, by dynamic programming over (steps left, cell, key cell).

  door[k, r, c]: P(win) holding the key in phase 3 with k steps left; key[j, k, r, c]:
  P(taking key j within k phase-1 steps); win_after_key: door[15] from the phase-3 start."""

  def __init__(self):
    t1, _, t3 = TIMERS
    self.door = np.zeros((t3 + 1, ROWS, COLS))
    for k in range(1, t3 + 1):
      for r, c in zip(*np.nonzero(WALKABLE[2])):
        nxt = [_next_cell(2, r, c, a) for a in range(4)]
        self.door[k, r, c] = np.mean([1.0 if d else self.door[k - 1, nr, nc]
                                      for nr, nc, d in nxt])
    self.win_after_key = self.door[t3][tuple(PHASE3_START)]
    self.key = np.zeros((len(KEY_CELLS), t1 + 1, ROWS, COLS))
    for j, kc in enumerate(map(tuple, KEY_CELLS)):
      for k in range(1, t1 + 1):
        for r, c in zip(*np.nonzero(WALKABLE[0])):
          nxt = [_next_cell(0, r, c, a)[:2] for a in range(4)]
          self.key[j, k, r, c] = np.mean([1.0 if n == kc else self.key[j, k - 1][n]
                                          for n in nxt])

  def win_rate(self):
    """P(win) of the uniform-random policy."""
    j = np.arange(len(KEY_CELLS))[:, None]
    return float(self.key[j, TIMERS[0], START_CELLS[:, 0], START_CELLS[:, 1]].mean()
                 * self.win_after_key)

  def q(self, obs):
    """[B, 4] exact P(win | s, a) for a batch of observations (KeyToDoor.observation())."""
    t = np.asarray(obs["t"])
    phase = phase_of_step(np.minimum(t, EPISODE_STEPS - 1))
    # Steps left after this action (phase 1: of its timer; phase 3: of the episode).
    left = np.clip(np.where(phase == 2, EPISODE_STEPS - t - 1, TIMERS[0] - t - 1), 0, None)
    r, c = obs["pos"][:, 0], obs["pos"][:, 1]
    nr, nc, door = (x[phase, r, c] for x in NEXT_CELL)                   # [B, 4] each
    key_idx = (obs["key"][:, None, :] == KEY_CELLS).all(-1).argmax(-1)
    got = (nr == obs["key"][:, :1]) & (nc == obs["key"][:, 1:])
    left_col, j = np.minimum(left, TIMERS[0])[:, None], key_idx[:, None]
    seeking = self.win_after_key * np.where(got, 1.0, self.key[j, left_col, nr, nc])
    at_door = np.where(door, 1.0, self.door[np.minimum(left, TIMERS[2])[:, None], nr, nc])
    has_key = obs["has_key"][:, None]
    return np.where((phase == 0)[:, None] & ~has_key, seeking,
                    np.where((phase == 2)[:, None] & has_key, at_door,
                             np.where(has_key, self.win_after_key, 0.0)))
