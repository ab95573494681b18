"""The bracket task (experiments/tasks/dyck.py): its checker against hand-made texts, its
samples, and its ground-truth noise (always a character the grammar forbids right there)."""
import ml_collections
import numpy as np
import pytest

from experiments.configs import markov_seqmatch
from experiments.tasks import dyck, get_task


@pytest.mark.parametrize("text, first_invalid, depth", [
    ("", -1, 0), ("()", -1, 0), ("([]{()})[]", -1, 0),
    ("(]", 1, 1),            # a close of the wrong kind
    ("())", 2, 0),           # a close at depth 0
    (")", 0, 0),
    ("([)]", 2, 2),          # crossing: ')' while '[' is innermost
    ("(()", 3, 1),           # ends with one bracket open: invalid at the end
    ("((((((((()))))))))", 8, 9),   # a 9th level (max_depth 8)
    ("(a)", 1, 1),           # not a bracket
    ("<>", 0, 0),            # a 4th kind, not among the task's 3
])
def test_checker_on_hand_made_texts(text, first_invalid, depth):
  r = dyck.score(text, kinds=3, max_depth=8)
  assert r["first_invalid"] == first_invalid
  assert r["final_depth"] == depth
  assert r["transitions"] == max(len(text) - 1, 0)


def test_checker_follows_its_kinds_and_depth():
  assert dyck.score("{}", kinds=2)["first_invalid"] == 0
  assert dyck.score("<>", kinds=4)["first_invalid"] == -1
  assert dyck.score("((()))", max_depth=2)["first_invalid"] == 2


def test_samples_are_valid_balanced_and_use_every_depth():
  rng = np.random.default_rng(0)
  texts = dyck.sample(300, 40, 3, 8, 0.5, rng)
  assert all(len(t) == 40 and dyck.score(t)["first_invalid"] == -1 for t in texts)
  depth = [max(np.cumsum([1 if c in dyck.OPEN else -1 for c in t])) for t in texts]
  assert max(depth) == 8 and min(depth) >= 1
  assert set("".join(texts)) == set("()[]{}")


def test_ground_truth_noise_is_forbidden_where_it_is_inserted():
  c = ml_collections.ConfigDict(dict(name="dyck", num_train=50, num_test=10))
  task = get_task("dyck", c)
  rng = np.random.default_rng(1)
  for ex in list(task.source("train"))[:50]:
    assert ex["prompt"] + ex["answer"] == ex["text"]
    cut = int(rng.integers(0, len(ex["answer"])))
    prefix = ex["answer"][:cut]
    noise = dyck.ground_truth_noise(ex["prompt"], prefix, rng)
    assert noise in dyck.CLOSE[:3]
    assert dyck.score(ex["prompt"] + prefix + noise)["first_invalid"] == 1 + cut


def test_config_runs_the_dyck_task_and_refuses_bad_options():
  c = markov_seqmatch.get_config("sm,ft,dyck")
  assert c.task.name == "dyck" and c.objective.noise == "ground_truth"
  with pytest.raises(ValueError, match="even"):
    dyck.make_task(ml_collections.ConfigDict(dict(length=7)))
  with pytest.raises(ValueError, match="kinds"):
    dyck.make_task(ml_collections.ConfigDict(dict(kinds=5)))


def test_valid_next_tokens_agree_with_the_checker():
  from experiments.data.tokenizers import ByteTokenizer
  from experiments.reports.dyck_diagnose import _valid_next
  tok = ByteTokenizer()
  chars = dyck.OPEN[:3] + dyck.CLOSE[:3]
  for text in dyck.sample(20, 16, 3, 3, 0.5, np.random.default_rng(2)):
    for j in range(len(text) + 1):
      ok = _valid_next(text[:j], tok, 3, 3, 300)
      assert ok[tok.eos_id] == (dyck.score(text[:j], max_depth=3)["final_depth"] == 0)
      for ch in chars:   # valid iff the checker finds no fault inside the longer text
        first = dyck.score(text[:j] + ch, max_depth=3)["first_invalid"]
        assert ok[tok.encode(ch)[0]] == (first < 0 or first == j + 1), (text[:j], ch)
      assert ok.sum() == sum(ok[tok.encode(c)[0]] for c in chars) + ok[tok.eos_id]


def test_undo_counts_replay_the_actions():
  from experiments.data.tokenizers import ByteTokenizer
  from experiments.reports.markov_compare import undo_counts
  tok, bk = ByteTokenizer(), 299
  score = dyck.score
  # '(' then '[', ']', a wrong '}', undone, ')', eos: 5 valid states, one mistake, caught
  acts = tok.encode("[]}") + [bk] + tok.encode(")") + [tok.eos_id]
  assert undo_counts(acts, tok, score, bk, tok.encode("(")).tolist() == [1, 1, 5, 0]
  # not undone: counting stops at the mistake; a needless undo at a valid state counts
  acts = tok.encode("[") + [bk] + tok.encode("]}") + tok.encode(")")
  assert undo_counts(acts, tok, score, bk, tok.encode("(")).tolist() == [1, 0, 3, 1]



def test_part_gradients_equal_one_vjp_per_part():
  """dyck_diagnose.part_gradients (one jit(jacrev) for all loss parts) must give each part its
  own gradient. jaxlib 0.10.2's XLA:CPU gets every part but the first wrong in plain
  jit(jacrev) once the vmapped RMSNorm backward is big enough for a YNN reduce fusion
  (experiments/tools/ynn_reduce_check.py): 3 parts of a norm over 2240 x 16 rows is (relative
  error 0.4 there; 512 rows is exact), the dyck model's 40 x 56 one-pass rows were too."""
  import jax
  import jax.numpy as jnp

  from catrans.layers import RMSNorm
  from experiments.reports.dyck_diagnose import part_gradients

  rng = np.random.default_rng(0)
  x_RxD = jnp.asarray(rng.normal(size=(2240, 16)), jnp.float32)
  r_PxRxD = jnp.asarray(rng.normal(size=(3, 2240, 16)), jnp.float32)
  norm = RMSNorm()
  params = {"w": jnp.asarray(rng.normal(size=16), jnp.float32),
            "norm": norm.init(jax.random.key(0), x_RxD)["params"]}

  def parts(p, x):
    y = norm.apply({"params": p["norm"]}, x * p["w"])
    return {f"part{i}": jnp.sum(r * y) for i, r in enumerate(r_PxRxD)}

  jac = part_gradients(parts)(params, x_RxD)
  # Reference: one VJP per part, its one-hot cotangent an argument (one compile, and an
  # unbatched cotangent: nothing for the miscompiled fusion to see).
  vec = lambda p: jnp.stack([parts(p, x_RxD)[f"part{i}"] for i in range(3)])
  vjp_row = jax.jit(lambda p, e: jax.vjp(vec, p)[1](e)[0])
  flat = lambda t: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)])
  for i in range(3):
    want, got = flat(vjp_row(params, jnp.eye(3)[i])), flat(jac[f"part{i}"])
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want), i
