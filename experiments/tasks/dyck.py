"""Balanced brackets of several kinds (a bounded-depth Dyck language): a generated task whose
mistakes a sampler makes now and pays for later, with an exact validity checker.

A document is `length` brackets (even), e.g. '([]{()})[]...': each step opens a random kind
with probability p_open (always at depth 0, never at max_depth or when the remaining steps
are needed to close), else closes the innermost open bracket; it ends with every bracket
closed. Whether a close is right depends on an open made arbitrarily far back, and an
opening made too late or too deep can only be closed in time by ending the text later, so a
generated text is invalid at its first close that does not match the innermost open (or
comes at depth 0), its first bracket past max_depth, a character that is not a bracket, or,
at its end, any bracket left open. The first character is the prompt.

Config keys: kinds (3), max_depth (8), length (40), p_open (0.5), num_train (4000),
num_test (200), data_seed (1)."""
from __future__ import annotations

import numpy as np

from experiments.data.tokenizers import ByteTokenizer
from experiments.tasks import Task, in_memory_task

OPEN, CLOSE = "([{<", ")]}>"
DEFAULTS = dict(kinds=3, max_depth=8, length=40, p_open=0.5, num_train=4000, num_test=200,
                data_seed=1)
_REGISTERED = {}   # the kinds of the latest make_task (ground_truth_noise needs them)


def _options(config) -> dict:
  o = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  if not 1 <= int(o["kinds"]) <= len(OPEN):
    raise ValueError(f"dyck kinds must be in [1, {len(OPEN)}], got {o['kinds']}")
  if int(o["length"]) < 2 or int(o["length"]) % 2:
    raise ValueError(f"dyck length must be even and >= 2, got {o['length']}")
  if int(o["max_depth"]) < 1 or not 0 < float(o["p_open"]) < 1:
    raise ValueError(f"dyck needs max_depth >= 1 and 0 < p_open < 1; got {o}")
  return o


def sample(num: int, length: int, kinds: int, max_depth: int, p_open: float,
           rng: np.random.Generator) -> list[str]:
  """num balanced texts of exactly `length` brackets, depth <= max_depth."""
  out = []
  for _ in range(num):
    stack, text = [], []
    for t in range(length):
      remaining = length - t
      must_close = len(stack) >= min(max_depth, remaining)
      if not stack or (not must_close and rng.random() < p_open):
        k = int(rng.integers(kinds))
        stack.append(k)
        text.append(OPEN[k])
      else:
        text.append(CLOSE[stack.pop()])
    out.append("".join(text))
  return out


def score(text: str, kinds: int = DEFAULTS["kinds"],
          max_depth: int = DEFAULTS["max_depth"]) -> dict:
  """Exact check of a generated text: 'first_invalid' = index of the first invalid character
  (len(text) when the only fault is brackets left open at the end; -1: valid), 'transitions'
  = len(text) - 1 (as markov.score, so reports treat both alike) and the final depth."""
  stack, first_bad = [], -1
  for i, ch in enumerate(text):
    if ch in OPEN[:kinds]:
      stack.append(OPEN.index(ch))
      if len(stack) > max_depth:
        first_bad = i
    elif ch in CLOSE[:kinds] and stack and stack[-1] == CLOSE.index(ch):
      stack.pop()
    else:   # a close of the wrong kind, a close at depth 0, or not a bracket of this task
      first_bad = i
    if first_bad >= 0:
      break
  if first_bad < 0 and stack:
    first_bad = len(text)
  return {"transitions": max(len(text) - 1, 0), "first_invalid": first_bad,
          "final_depth": len(stack), "loglik": 0.0}


def ground_truth_noise(prompt: str, answer_prefix: str, rng: np.random.Generator) -> str:
  """A close the grammar forbids here: of another kind than the innermost open bracket (or
  any close at depth 0): the mistake of a sampler that lost track of the nesting."""
  kinds = _REGISTERED.get("kinds")
  if kinds is None:
    raise ValueError("dyck.ground_truth_noise needs a task built by make_task first")
  stack = []
  for ch in prompt + answer_prefix:
    if ch in OPEN:
      stack.append(OPEN.index(ch))
    elif ch in CLOSE and stack:
      stack.pop()
  bad = [CLOSE[k] for k in range(kinds) if not stack or k != stack[-1]]
  if not bad:   # one kind inside an open bracket: every close is right; a non-bracket is not
    return "x"
  return bad[int(rng.integers(len(bad)))]


def make_task(config) -> Task:
  o = _options(config)
  _REGISTERED["kinds"] = int(o["kinds"])
  rng = np.random.default_rng(int(o["data_seed"]))
  splits = {}
  for name, num in (("test", int(o["num_test"])), ("train", int(o["num_train"]))):
    texts = sample(num, int(o["length"]), int(o["kinds"]), int(o["max_depth"]),
                   float(o["p_open"]), rng)
    splits[name] = [{"text": t, "prompt": t[0], "answer": t[1:]} for t in texts]
  return in_memory_task("dyck", ByteTokenizer(), {k: splits[k] for k in ("train", "test")})


def checker_of(config):
  """score(text) with the kinds and max_depth a task config describes (for evaluation)."""
  o = _options(config)
  return lambda text: score(text, int(o["kinds"]), int(o["max_depth"]))
