"""The two setups of experiments.reports.steer_sweep: what is steered, by which guides, judged
how.

  quick_setup    Polya-urn bits (experiments/tiny_lm): a tiny LM trained here, CAT and Director
                 heads fitted on its frozen trunk, FUDGE's classifier a linear probe; judged
                 by the exact attribute
  reviews_setup  the reviews runs of experiments/configs/reviews_cat.py, judged by the
                 'judge' classifier and by the independent VADER lexicon (judges.py), each
                 with its own accuracy on the labelled test reviews"""
import dataclasses
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from catrans.attributes import AttributeSpec
from catrans.baselines import PrefixClassifier
from catrans.fit import cache_features, fit_attribute
from experiments import figures, tiny_lm
from experiments.reviews import data as rdata

QUICK_N = 9


@dataclasses.dataclass
class Setup:
  models: dict              # 'cat', 'director', 'lm', 'clf' (+ 'judge' for reviews)
  params: dict
  tokenizer: object
  width: int                # tokens the judge and the LM read (prompt + generation)
  max_new_tokens: int
  prompts: dict             # target -> (list of prompt id lists, list of prompt-set names)
  judge: Callable           # (prompts_BxP, lens_B, new_BxT, target) -> P(target) [B]
  class_names: tuple
  unsteered: tuple          # unsteered decoders to include
  info: dict                # what was trained / fitted, for the report
  judge_name: str = "judge"
  # More judges beside `judge`, same signature (reviews: an independent lexicon judge).
  extra_judges: dict = dataclasses.field(default_factory=dict)


# --- quick: everything trained here on urn bits ----------------------------------------------
def fit_linear_probe(lm, lm_params, tokens_NxL, labels_N, *, epochs: int = 20, seed: int = 0):
  """A PrefixClassifier sharing the LM's frozen trunk: its Dense layer trained on the cached
  trunk features at every position (FUDGE's guide, cheap)."""
  batch = {"inputs": tokens_NxL[:, :-1]}
  weights = (tokens_NxL[:, 1:] != 0).astype(np.float32)
  hidden = cache_features(lm, lm_params, batch["inputs"])
  clf = PrefixClassifier(lm.cfg, num_classes=2)
  dense = clf.init(jax.random.PRNGKey(seed), jnp.asarray(tokens_NxL[:1, :-1]))["params"]
  dense = {"classify": dense["classify"]}
  tx = optax.adam(1e-2)
  y = jnp.asarray(labels_N)

  def loss_fn(p, h, y, w):
    logits = h @ p["classify"]["kernel"] + p["classify"]["bias"]
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y[:, None], logits.shape[:2]))
    return (ce * w).sum() / w.sum()

  @jax.jit
  def train(p):
    def step(carry, _):
      p, opt = carry
      g = jax.grad(loss_fn)(p, hidden, y, jnp.asarray(weights))
      updates, opt = tx.update(g, opt, p)
      return (optax.apply_updates(p, updates), opt), None
    return jax.lax.scan(step, (p, tx.init(p)), None, length=epochs * 10)[0][0]

  return clf, dict(train(dense), trunk=lm_params)


def quick_setup(workdir: str, seed: int) -> Setup:
  n, maj = QUICK_N, QUICK_N // 2 + 1
  tok = tiny_lm.TOKENIZER
  t0 = time.perf_counter()
  lm, lm_params, lm_ce = tiny_lm.train_lm(n, steps=150, seed=seed)
  b, toks = tiny_lm.bit_sequences(2000, n, seed + 1)
  y = tiny_lm.labels(b, maj)
  fit_kw = dict(tokens=list(toks), epochs=20, learning_rate=1e-2, seed=seed)
  cat = fit_attribute(lm, lm_params, AttributeSpec("label"), y, **fit_kw)
  director = fit_attribute(lm, lm_params, AttributeSpec("label", kind="binary",
                                                        binary_style="sigmoid"), y,
                           measure_speedup=False, **fit_kw)
  clf, clf_params = fit_linear_probe(lm, lm_params, toks, y, seed=seed)
  figures.reliability_diagram(os.path.join(workdir, "reliability_cat.png"),
                              cat.reliability_prefixes, "CAT head on the frozen bits LM, "
                              "held-out q_t at every prefix")

  def judge(prompts, lens, new, target):
    seq, _, _ = rdata.join(prompts, lens, new, eos_id=tok.eos_id, pad_id=tok.pad_id)
    reached = tiny_lm.count_ones(np.asarray(seq)) >= maj
    return (reached if target == 1 else ~reached).astype(np.float32)

  zeros_or_ones = lambda t: [tok.bos_id] + tok.encode(str(1 - t) * 3)
  prompts = {t: ([[tok.bos_id]] * 32 + [zeros_or_ones(t)] * 32,
                 ["neutral"] * 32 + ["opposite"] * 32) for t in (0, 1)}
  info = {"task": f"Polya-urn bits, length {n}, attribute: count of ones >= {maj}",
          "lm_train_ce": lm_ce, "setup_s": time.perf_counter() - t0,
          "fit_cat": _fit_summary(cat), "fit_director": _fit_summary(director)}
  return Setup({"cat": cat.model, "director": director.model, "lm": lm, "clf": clf},
               {"cat": cat.params, "director": director.params, "lm": lm_params,
                "clf": clf_params}, tok, width=4 + n + 1, max_new_tokens=n + 1,
               prompts=prompts, judge=judge, class_names=("below", "reached"),
               unsteered=("unsteered_lm",), info=info, judge_name="exact")


def _fit_summary(r) -> dict:
  return {"heldout": r.metrics["heldout"], "prior_at_start": r.metrics["prior_at_start"],
          "timing": r.timing}


# --- the reviews runs ----------------------------------------------------------------------------
def reviews_setup(workdir: str, tiny: bool, seed: int, cat_workdir: str | None = None,
                  lexicon: bool = True) -> Setup:
  from experiments.configs.reviews_cat import RUNS
  from experiments.reviews import judges
  from experiments.reviews.runs import FULL, TINY, load_run, steering_prompts
  from experiments.reviews.steering import judge_and_fluency, text_judge_fn
  sizes = TINY if tiny else FULL
  trainers, params = {}, {}
  for run in RUNS:
    trainers[run], params[run] = load_run(workdir, run, tiny)
  if cat_workdir:     # another CAT run (e.g. a head tuned by reviews_head_diag), same tokenizer
    from experiments.runs import load_trainer
    trainers["cat"] = load_trainer(cat_workdir)
    params["cat"] = trainers["cat"].trained_params()
  models = {k: t.objective.model for k, t in trainers.items()}
  task, tok = trainers["cat"].task, trainers["cat"].task.tokenizer
  width = int(trainers["cat"].config.data.seq_len)
  others = rdata.test_reviews(task, 10 ** 9, seed + 1)
  by_class = {c: [r for r in others if int(r["label"]) == c] for c in (0, 1)}
  prompts = {}
  for t in (0, 1):
    texts, sets = steering_prompts(tok, by_class, t, sizes)
    prompts[t] = ([[tok.bos_id] + tok.encode(x) for x in texts], sets)

  def judge(p, lens, new, target):
    return judge_and_fluency(models["judge"], params["judge"], models["lm"], params["lm"], p,
                             lens, new, target, width=width, eos_id=tok.eos_id,
                             pad_id=tok.pad_id)[0]

  # Each judge's own accuracy on the labelled test reviews (the judge run never saw them).
  heldout = rdata.test_reviews(task, 10 ** 9, seed)
  texts, labels = [r["text"] for r in heldout], [int(r["label"]) for r in heldout]
  quality = {"judge": judges.judge_quality(
      judges.ClassifierJudge(models["judge"], params["judge"], tok, width=width), texts, labels)}
  extra = {}
  if lexicon:
    vader = judges.LexiconJudge("vader")
    quality["vader"] = judges.judge_quality(vader, texts, labels)
    extra["vader"] = text_judge_fn(vader, tok, width=width, eos_id=tok.eos_id,
                                   pad_id=tok.pad_id)
  info = {"task": "Rotten Tomatoes reviews (experiments/configs/reviews_cat.py"
                  + (", tiny)" if tiny else ")"),
          "runs": {r: trainers[r].workdir for r in RUNS}, "judge_quality": quality}
  return Setup(models, params, tok, width=width, max_new_tokens=sizes.max_new_tokens,
               prompts=prompts, judge=judge, class_names=("rotten", "fresh"),
               unsteered=("unsteered_cat", "unsteered_lm"), info=info, extra_judges=extra)
