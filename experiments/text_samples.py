"""Sampling continuations with <bkspc> (applied, or masked) and the text statistics the
SequenceMatch text reports compute (experiments/reports/text_seqmatch_report.py on bytes,
text_seqmatch_smollm2.py on SmolLM2 + LoRA)."""
import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import seqmatch
from experiments.reviews.estimation import token_nll
from experiments.reviews.steering import distinct_n


@functools.lru_cache(maxsize=8)
def generator(obj, max_actions: int, eos_id: int, allow_backspace: bool):
  """One jitted sampler per (objective, settings): runs sharing an architecture (the LoRA
  fine-tunes) reuse its compile by passing their own params."""
  bk = obj.vocab.backspace_id
  apply_fn = obj.apply_fn
  if not allow_backspace:
    def apply_fn(params, tokens, positions, mask, cache=None):  # noqa: F811 (MLE: no <bkspc>)
      logits, cache = obj.apply_fn(params, tokens, positions, mask, cache=cache)
      return logits.at[..., bk].set(-jnp.inf), cache
  return jax.jit(functools.partial(seqmatch.generate, apply_fn, obj.init_cache_fn,
                                   max_actions=max_actions, backspace_id=bk, eos_id=eos_id,
                                   temperature=1.0))


def sample(trainer, params, prompts: list[str], *, max_actions: int, rng, allow_backspace: bool,
           samples_per_prompt: int):
  obj, tok = trainer.objective, trainer.task.tokenizer
  bk = obj.vocab.backspace_id
  ids = [[tok.bos_id] + tok.encode(p) for p in prompts for _ in range(samples_per_prompt)]
  width = max(map(len, ids))
  arr = np.zeros((len(ids), width), np.int32)
  for i, x in enumerate(ids):
    arr[i, :len(x)] = x
  lens = np.array([len(x) for x in ids], np.int32)
  gen = generator(obj, max_actions, tok.eos_id, allow_backspace)
  g = jax.device_get(gen(params, jnp.asarray(arr), jnp.asarray(lens), rng))
  show = seqmatch.BackspaceTokenizer(tok, bk)
  rows = []
  for i in range(len(ids)):
    final = [int(t) for t in g.tokens[i, lens[i]:g.lengths[i]] if t != tok.eos_id]
    acts = [int(a) for a in g.actions[i, :g.num_actions[i]]]
    rows.append({"prompt": prompts[i // samples_per_prompt], "text": tok.decode(final),
                 "actions": acts, "trace": show.decode(acts, mode="show")})
  return rows


def ngram_entropy(texts: list[str], n: int) -> float:
  grams = collections.Counter()
  for t in texts:
    w = t.split()
    grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
  total = sum(grams.values())
  return -sum(c / total * math.log(c / total) for c in grams.values()) if total else float("nan")


def repetition(texts: list[str], n: int = 4) -> float:
  rates = []
  for t in texts:
    w = t.split()
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if grams:
      rates.append(1 - len(set(grams)) / len(grams))
  return float(np.mean(rates)) if rates else float("nan")


def reference_ppl(trainer, params, prompts: list[str], texts: list[str], *, batch: int = 64):
  """exp(mean NLL) of each text's tokens given BOS + its prompt, under the reference LM."""
  tok = trainer.task.tokenizer
  seqs = [([tok.bos_id] + tok.encode(p), tok.encode(t)) for p, t in zip(prompts, texts)]
  width = trainer.objective.model_config.max_len
  nll_fn = jax.jit(functools.partial(token_nll, trainer.objective.model))
  total, count = 0.0, 0
  for s in range(0, len(seqs), batch):
    chunk = seqs[s:s + batch]
    arr = np.zeros((len(chunk), width + 1), np.int32)
    w = np.zeros((len(chunk), width), np.float32)
    for i, (p, t) in enumerate(chunk):
      row = (p + t)[:width + 1]
      arr[i, :len(row)] = row
      w[i, len(p) - 1:len(row) - 1] = 1.0   # predictions of the text's tokens only
    nll = np.asarray(nll_fn(params, jnp.asarray(arr)))
    total += float((nll * w).sum())
    count += float(w.sum())
  return math.exp(total / max(count, 1.0))


def summarize(rows, ref, ref_params, backspace_id) -> dict:
  """Text statistics of rows; ppl_ref under (ref, ref_params), None when ref is None."""
  texts = [r["text"] for r in rows]
  actions = [a for r in rows for a in r.get("actions", [])]
  positions = [i / max(len(r["actions"]) - 1, 1) for r in rows
               for i, a in enumerate(r.get("actions", [])) if a == backspace_id]
  return {
      "ppl_ref": (reference_ppl(ref, ref_params, [r["prompt"] for r in rows], texts)
                  if ref is not None else None),
      "entropy_1": ngram_entropy(texts, 1), "entropy_2": ngram_entropy(texts, 2),
      "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
      "distinct_3": distinct_n(texts, 3), "rep_4": repetition(texts),
      "mean_bytes": float(np.mean([len(t.encode("utf-8")) for t in texts])),
      "backspace_rate": (sum(a == backspace_id for a in actions) / len(actions)
                         if actions else None),
      "backspace_positions": positions,
  }
