"""Steering towards fresh / rotten, judged by models that did not steer.

Each method turns (prompts, target class) into new tokens; every generation is then read as
one text (prompt + new tokens up to EOS) by
  - the judge, a prefix classifier trained apart from every steering model: is it the target?
  - the plain LM: perplexity of the new tokens given the prompt (fluency);
and distinct-1/2 over words measure how repetitive a method's generations are."""
import collections
import dataclasses
import logging
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from catrans.baselines import fudge_decode, sample_lm
from catrans.steering import SteeringConfig, Target, steered_decode
from experiments.reviews.data import join
from experiments.reviews.estimation import classifier_fresh, token_nll

log = logging.getLogger("experiments")

NEUTRAL_OPENINGS = ("The film", "This movie", "The story", "It's a", "The director",
                    "Watching this")


@dataclasses.dataclass(frozen=True)
class Method:
  name: str                 # cat_weighted | cat_satisficing | director | fudge | unsteered ...
  strength: float | None    # gamma (weighted / FUDGE); None where it has none
  decode: Callable          # (prompts_BxP, lens_B, target, rng) -> new tokens [B, T]


def make_decoder(models: dict, params: dict, method: str, strength=None, *,
                 max_new_tokens: int, eos_id: int, pad_id: int = 0,
                 attribute: str = "label", top_k: int = 0) -> Callable:
  """(prompts_BxP, lens_B, target, rng) -> new tokens [B, T] for one method at one strength.

  method: weighted (CAT, gamma = strength) | satisficing (CAT, threshold = strength, None:
  the default 0.8) | greedy_attr (CAT) | director (gamma) | fudge (gamma) | unsteered_cat |
  unsteered_lm. models/params hold 'cat', 'director', 'lm', 'clf' (those the method uses).
  top_k > 0 samples weighted / director / unsteered_cat among the top_k scores only (FUDGE,
  satisficing and greedy_attr always choose among the LM's top candidates)."""
  kw = dict(max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)

  def steered(run, rule, gamma=1.0, **sc_kw):
    def decode(prompts, lens, target, rng):
      targets = () if rule == "none" else (Target(attribute, target, gamma),)
      sc = SteeringConfig(rule=rule, targets=targets, **sc_kw)
      return steered_decode(models[run], params[run], prompts, lens, rng, steering=sc,
                            **kw).new_tokens
    return decode

  if method == "weighted":
    return steered("cat", "weighted", gamma=strength, top_k=top_k)
  if method == "satisficing":
    return steered("cat", "satisficing", **({} if strength is None else
                                            {"threshold": strength}))
  if method == "greedy_attr":
    return steered("cat", "greedy_attr")
  if method == "director":
    return steered("director", "weighted", gamma=strength, top_k=top_k)
  if method == "unsteered_cat":
    return steered("cat", "none", top_k=top_k)
  if method == "fudge":
    def fudge(prompts, lens, target, rng):
      return fudge_decode(models["lm"], params["lm"], models["clf"], params["clf"], prompts,
                          lens, rng, target=target, gamma=strength, **kw)
    return fudge
  if method == "unsteered_lm":
    def plain_lm(prompts, lens, target, rng):
      return sample_lm(models["lm"], params["lm"], prompts, lens, rng, **kw)
    return plain_lm
  raise ValueError(f"unknown steering method {method!r}; choose from {DECODERS}")


DECODERS = ("weighted", "satisficing", "greedy_attr", "director", "fudge", "unsteered_cat",
            "unsteered_lm")


def methods(models: dict, params: dict, *, gammas, max_new_tokens: int, eos_id: int,
            pad_id: int = 0) -> list[Method]:
  """The compared decoders. models/params hold 'cat', 'director', 'lm', 'clf'."""
  kw = dict(max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)
  dec = lambda method, strength=None: make_decoder(models, params, method, strength, **kw)
  out = [Method("unsteered_cat", 0.0, dec("unsteered_cat")),
         Method("unsteered_lm", 0.0, dec("unsteered_lm")),
         Method("cat_satisficing", None, dec("satisficing"))]
  for g in gammas:
    out += [Method("cat_weighted", g, dec("weighted", g)),
            Method("director", g, dec("director", g)),
            Method("fudge", g, dec("fudge", g))]
  return out


def distinct_n(texts: list[str], n: int) -> float:
  """Unique word n-grams / all word n-grams over a set of generations (1 = no repeats);
  None when the generations hold no n-gram at all (e.g. one-word outputs)."""
  return distinct_n_units([t.split() for t in texts], n)


def distinct_n_units(seqs, n: int) -> float:
  """distinct-n over sequences of any units (words, token ids)."""
  grams = collections.Counter()
  for w in seqs:
    w = list(w)
    grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
  total = sum(grams.values())
  return len(grams) / total if total else None


def new_token_nll(lm, lm_params, prompts_BxP, lens_B, new_BxT, *, width: int, eos_id: int,
                  pad_id: int = 0):
  """The LM's summed NLL of the new tokens given the prompt [B] (EOS included when
  produced, the text cut to `width` tokens) and their count [B]."""
  seq, _, total = join(prompts_BxP, lens_B, new_BxT, eos_id=eos_id, pad_id=pad_id)
  seq = seq[:, :width]
  nll = token_nll(lm, lm_params, seq)                                # [B, width-1]
  t = jnp.arange(seq.shape[1] - 1)[None]
  # Target index t + 1 is a new token when it is at or past the prompt and before the end.
  new = (t + 1 >= jnp.asarray(lens_B)[:, None]) & (t + 1 < jnp.minimum(total, width)[:, None])
  return (nll * new).sum(1), new.sum(1)


def judge_and_fluency(judge, judge_params, lm, lm_params, prompts_BxP, lens_B, new_BxT, target,
                      *, width: int, eos_id: int, pad_id: int = 0):
  """Per-row P_judge(target | whole text) [B], the LM's summed NLL of the new tokens [B]
  (EOS included when produced) and their count [B]."""
  seq, text_len, _ = join(prompts_BxP, lens_B, new_BxT, eos_id=eos_id, pad_id=pad_id)
  seq = seq[:, :width]
  last = jnp.minimum(text_len, width) - 1
  p_fresh = classifier_fresh(judge, judge_params, seq)[jnp.arange(seq.shape[0]), last]
  p_target = p_fresh if target == 1 else 1.0 - p_fresh
  nll_sum, counts = new_token_nll(lm, lm_params, prompts_BxP, lens_B, new_BxT, width=width,
                                  eos_id=eos_id, pad_id=pad_id)
  return p_target, nll_sum, counts


def generation_texts(tok, prompts_BxP, lens_B, new_BxT, *, width: int, eos_id: int,
                     pad_id: int = 0) -> list[str]:
  """Prompt + generation of each row as text, exactly the tokens the classifier judge reads
  (up to the first EOS, cut to `width` tokens, BOS left out): what a text judge reads."""
  seq, text_len, _ = join(prompts_BxP, lens_B, new_BxT, eos_id=eos_id, pad_id=pad_id)
  seq, text_len = np.asarray(seq), np.minimum(np.asarray(text_len), width)
  return [tok.decode([int(t) for t in row[1:n]]) for row, n in zip(seq, text_len)]


def text_judge_fn(judge, tok, *, width: int, eos_id: int, pad_id: int = 0) -> Callable:
  """(prompts_BxP, lens_B, new_BxT, target) -> P_judge(target) [B] for a text judge
  (experiments.reviews.judges): it reads prompt + generation as text."""
  def p_target(prompts_BxP, lens_B, new_BxT, target):
    texts = generation_texts(tok, prompts_BxP, lens_B, new_BxT, width=width, eos_id=eos_id,
                             pad_id=pad_id)
    p = judge.p_fresh(texts)
    return p if target == 1 else 1.0 - p
  return p_target


def summarize(p_target, nll_sum, counts, texts) -> dict:
  p_target = np.asarray(p_target, np.float64)
  return {"target_rate": float(np.mean(p_target > 0.5)),
          "judge_p_target": float(np.mean(p_target)),
          "perplexity": float(math.exp(np.sum(nll_sum) / max(np.sum(counts), 1))),
          "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
          "mean_new_bytes": float(np.mean([len(t.encode()) for t in texts])),
          "n": int(len(texts))}
