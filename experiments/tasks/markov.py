"""A known sparse Markov chain written as letters: the compounding-error task of the
SequenceMatch issue (generated, no download).

States are the letters 'a', 'b', ...; each state has `branching` allowed successors with
Dirichlet(1) probabilities, all other transitions have probability 0, so every generated
sequence can be scored exactly: its log-likelihood under the true chain and the position of
its first invalid transition. The first state is uniform and is the prompt, e.g.
{'prompt': 'f', 'answer': 'kcfaj...'}; a document holds `length` states.

Config keys: num_states (12), branching (3), length (40), num_train (4000), num_test (200),
seed (0: the chain), data_seed (1: the sampled sequences)."""
from __future__ import annotations

import string

import numpy as np

from experiments.data.tokenizers import ByteTokenizer
from experiments.tasks import Task, in_memory_task

ALPHABET = string.ascii_lowercase
DEFAULTS = dict(num_states=12, branching=3, length=40, num_train=4000, num_test=200, seed=0,
                data_seed=1)
# The chain of the most recent make_task: ground_truth_noise needs it to pick a transition
# the chain forbids, and the trainer builds the task before it asks for noise.
_REGISTERED = {}


def transition_matrix(num_states: int, branching: int, seed: int) -> np.ndarray:
  """P [S, S]: row s has exactly `branching` non-zero entries summing to 1."""
  if not 1 <= branching < num_states <= len(ALPHABET):
    raise ValueError(f"need 1 <= branching < num_states <= {len(ALPHABET)}; got "
                     f"branching={branching}, num_states={num_states}")
  rng = np.random.default_rng(seed)
  p = np.zeros((num_states, num_states))
  for s in range(num_states):
    nxt = rng.choice(num_states, size=branching, replace=False)
    p[s, nxt] = rng.dirichlet(np.ones(branching))
  return p


def sample_states(p: np.ndarray, num: int, length: int, rng: np.random.Generator):
  """num sequences [num, length] of states: uniform start, then the chain."""
  s = np.zeros((num, length), np.int64)
  s[:, 0] = rng.integers(0, len(p), size=num)
  cum = np.cumsum(p, axis=1)
  for t in range(1, length):
    u = rng.random(num)[:, None]
    s[:, t] = np.minimum((u > cum[s[:, t - 1]]).sum(1), len(p) - 1)
  return s


def to_text(states) -> str:
  return "".join(ALPHABET[int(s)] for s in states)


def score(p: np.ndarray, text: str) -> dict:
  """Exact scoring of a generated text under the chain: number of transitions, index of the
  first invalid one (a non-state character or a zero-probability transition; -1 if none)
  and the log-likelihood of the transitions before it."""
  states = [ALPHABET.find(ch) for ch in text]
  first_bad, loglik = -1, 0.0
  if states and not 0 <= states[0] < len(p):
    first_bad = 0
  for t in range(1, len(states) if first_bad < 0 else 0):
    a, b = states[t - 1], states[t]
    if not 0 <= b < len(p) or p[a, b] == 0:
      first_bad = t
      break
    loglik += float(np.log(p[a, b]))
  return {"transitions": max(len(states) - 1, 0), "first_invalid": first_bad,
          "loglik": loglik}


def ground_truth_noise(prompt: str, answer_prefix: str, rng: np.random.Generator) -> str:
  """A transition the chain forbids: a letter that cannot follow the last state."""
  p = _REGISTERED.get("p")
  if p is None:
    raise ValueError("markov.ground_truth_noise needs a task built by make_task first")
  last = ALPHABET.find((prompt + answer_prefix)[-1:])
  bad = np.flatnonzero(p[last] == 0) if last >= 0 else np.arange(len(p))
  return ALPHABET[int(bad[rng.integers(len(bad))])]


def make_task(config) -> Task:
  o = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  p = transition_matrix(int(o["num_states"]), int(o["branching"]), int(o["seed"]))
  _REGISTERED["p"] = p
  rng = np.random.default_rng(int(o["data_seed"]))
  splits = {}
  for name, num in (("test", int(o["num_test"])), ("train", int(o["num_train"]))):
    texts = [to_text(s) for s in sample_states(p, num, int(o["length"]), rng)]
    splits[name] = [{"text": t, "prompt": t[0], "answer": t[1:]} for t in texts]

  # Test first above (so it stays the same when num_train changes), train first in the Task.
  return in_memory_task("markov", ByteTokenizer(), {k: splits[k] for k in ("train", "test")})


def chain_of(config) -> np.ndarray:
  """The transition matrix a task config describes (for evaluation)."""
  o = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  return transition_matrix(int(o["num_states"]), int(o["branching"]), int(o["seed"]))
