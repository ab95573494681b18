"""Random bit strings with an analytic attribute: the ground truth for CAT's estimates.

A sequence is n fair coin flips written as text ('0110...'); its attribute is whether the
count of ones reaches `threshold` (default: the majority, ceil((n+1)/2)). After a prefix with
k ones in t flips, P(a = 1 | prefix) = P(Binomial(n - t, 1/2) >= threshold - k) exactly.

Config keys: length (9), threshold (0 = majority), num_train (20000), num_test (500), seed."""
import math

import numpy as np

from experiments.data.tokenizers import ByteTokenizer
from experiments.tasks import Task, in_memory_task

DEFAULTS = dict(length=9, threshold=0, num_train=20000, num_test=500, seed=0)


def majority_threshold(length: int) -> int:
  return length // 2 + 1


def exact_probability(prefix_bits, length: int, threshold: int) -> float:
  """P(count of ones >= threshold | the given prefix), the rest fair coin flips."""
  t, k = len(prefix_bits), int(np.sum(prefix_bits))
  need, rest = threshold - k, length - t
  if need <= 0:
    return 1.0
  if need > rest:
    return 0.0
  return sum(math.comb(rest, j) for j in range(need, rest + 1)) / 2.0 ** rest


def exact_curve(bits, threshold: int) -> np.ndarray:
  """[n + 1]: P(a = 1 | first t bits) for t = 0..n."""
  n = len(bits)
  return np.array([exact_probability(bits[:t], n, threshold) for t in range(n + 1)])


def make_task(config) -> Task:
  opts = {k: config.get(k, v) for k, v in DEFAULTS.items()}
  n = int(opts["length"])
  if n < 1:
    raise ValueError(f"bits length must be >= 1, got {n}")
  threshold = int(opts["threshold"]) or majority_threshold(n)
  rng = np.random.default_rng(int(opts["seed"]))
  total = int(opts["num_train"]) + int(opts["num_test"])
  bits = rng.integers(0, 2, size=(total, n))
  examples = [{"text": "".join(map(str, row)), "label": int(row.sum() >= threshold)}
              for row in bits]
  splits = {"train": examples[int(opts["num_test"]):], "test": examples[:int(opts["num_test"])]}

  return in_memory_task("bits", ByteTokenizer(), splits,
                        label_names={"label": ("below", "reached")})
