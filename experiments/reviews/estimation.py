"""P(fresh | the first f of a review) three ways, with their wall time.

  CAT           q_k read off one forward pass (catrans.inference.estimate): every prefix of
                every review at once
  classifier    a separately trained prefix classifier, also one pass for all prefixes
  Monte Carlo   N completions of each prefix sampled from the plain LM (KV cache) and scored
                by the classifier at the end of the completed review; one sampling run per
                fraction

Times come from block_until_ready around each call, so they are device time, not dispatch."""
import functools
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from catrans.baselines import monte_carlo_estimate
from catrans.inference import estimate
from experiments.reviews.data import join, right_pad

log = logging.getLogger("experiments")
FRESH = 1


def timed(fn, *args, **kw):
  """(result, seconds) with the result ready on the host side."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kw))
  return out, time.perf_counter() - start


def cat_q_and_value(model, params, tokens_NxW, batch: int = 256):
  """CAT's P(fresh | s_t, x_t+1) at the token read (q) and V(s_t) = P(fresh | s_t) for every
  row and position, [N, W] each, computed `batch` rows at a time."""
  q, v = [], []
  for s in range(0, len(tokens_NxW), batch):
    est = estimate(model, params, jnp.asarray(tokens_NxW[s:s + batch]), attribute="label",
                   target=FRESH)
    q.append(np.asarray(est.q))
    v.append(np.asarray(est.value))
  return np.concatenate(q), np.concatenate(v)


def cat_prefix_probs(model, params, tokens_NxW, ends_NxF):
  """[N, F] CAT's q at each prefix end (q_k = P(fresh | x_<=k)), one forward pass."""
  est = estimate(model, params, jnp.asarray(tokens_NxW), attribute="label", target=FRESH)
  return jnp.take_along_axis(est.q, jnp.asarray(ends_NxF), axis=1)


@functools.partial(jax.jit, static_argnames=("model",))
def classifier_fresh(model, params, tokens_NxW):
  """[N, W] P_clf(fresh | x_<=k) for every k: row k of a causal classifier reads x_<=k."""
  logits, _ = model.apply({"params": params}, tokens_NxW)
  return jax.nn.softmax(logits, -1)[..., FRESH]


def clf_prefix_probs(model, params, tokens_NxW, ends_NxF):
  probs = classifier_fresh(model, params, jnp.asarray(tokens_NxW))
  return jnp.take_along_axis(probs, jnp.asarray(ends_NxF), axis=1)


def make_clf_scorer(model, params, *, width: int, eos_id: int, pad_id: int = 0):
  """score_fn for monte_carlo_estimate: P_clf(fresh) after the last text token of prompt +
  completion, the text cut to `width` tokens (the length the classifier was trained on)."""
  @jax.jit
  def score(prompts_NxP, prompt_lens_N, completions_NxT):
    seq, text_len, _ = join(prompts_NxP, prompt_lens_N, completions_NxT, eos_id=eos_id,
                            pad_id=pad_id)
    last_N = jnp.minimum(text_len, width) - 1
    probs = classifier_fresh(model, params, seq[:, :width])
    return probs[jnp.arange(seq.shape[0]), last_N]
  return score


def monte_carlo_probs(lm, lm_params, score_fn, tokens_NxW, ends_N, rng, *, num_samples: int,
                      rows_per_call: int, eos_id: int, pad_id: int = 0, desc: str = "MC"):
  """([N] MC estimate of P(fresh | x_<=end), [per-call seconds]).

  Prompts are right-padded to the full width W and every call samples the same number of
  rows and W - 1 new tokens (enough to complete a one-token prefix to a whole review), so
  one compiled program serves every fraction and chunk; a prefix that is the whole review
  samples nothing (its estimate is then exactly the classifier's probability)."""
  tokens_NxW, ends_N = np.asarray(tokens_NxW), np.asarray(ends_N)
  n, w = tokens_NxW.shape
  keep = np.arange(w)[None] <= ends_N[:, None]
  prompts_NxW = np.where(keep, tokens_NxW, pad_id).astype(np.int32)
  lens_N = (ends_N + 1).astype(np.int32)
  # Whole reviews have nothing to complete: no sampling (and no wasted compile).
  complete = bool(np.all(ends_N == (tokens_NxW != pad_id).sum(1) - 1))
  new_tokens = 0 if complete else w - 1
  per_call = max(1, rows_per_call // num_samples)
  out, seconds = np.zeros(n, np.float32), []
  for c, start in enumerate(tqdm(range(0, n, per_call), desc=desc, leave=False)):
    idx = np.arange(start, start + per_call) % n  # wrap to keep the shape fixed
    est, sec = timed(monte_carlo_estimate, lm, lm_params, jnp.asarray(prompts_NxW[idx]),
                     jnp.asarray(lens_N[idx]), jax.random.fold_in(rng, c),
                     num_samples=num_samples, max_new_tokens=new_tokens, score_fn=score_fn,
                     eos_id=eos_id, pad_id=pad_id)
    real = min(per_call, n - start)
    out[start:start + real] = np.asarray(est)[:real]
    seconds.append(sec)
  return out, seconds


def accuracy_and_log_loss(p_fresh_N, labels_N) -> dict:
  p = np.clip(np.asarray(p_fresh_N, np.float64), 1e-6, 1 - 1e-6)
  y = np.asarray(labels_N)
  return {"accuracy": float(np.mean((p > 0.5) == (y == FRESH))),
          "log_loss": float(np.mean(-np.where(y == FRESH, np.log(p), np.log1p(-p))))}


def steady_seconds_per_call(seconds: list[float]) -> float:
  """Per-call time without the first call (which includes compilation) when there is more
  than one call."""
  return float(np.mean(seconds[1:]) if len(seconds) > 1 else seconds[0])


# --- perplexity ------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("model",))
def token_nll(model, params, tokens_NxW):
  """[N, W-1] -log p(x_{t+1} | x_<=t) (the plain LM and CAT both return .logits)."""
  out = model.apply({"params": params}, tokens_NxW[:, :-1])
  logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
  return -jnp.take_along_axis(logp, tokens_NxW[:, 1:, None], -1)[..., 0]


def perplexity_on(model, params, tokenizer, texts, *, width: int, batch: int = 64) -> dict:
  """Per-token NLL of BOS + text + EOS cut to width + 1 tokens, as in training, and bits per
  byte of the text those tokens spell (the EOS counts as one byte), which compares across
  tokenizers."""
  seqs = [([tokenizer.bos_id] + tokenizer.encode(t) + [tokenizer.eos_id])[:width + 1]
          for t in texts]
  num_bytes = sum(len(tokenizer.decode([i for i in s[1:] if i != tokenizer.eos_id]).encode())
                  + (s[-1] == tokenizer.eos_id) for s in seqs)
  total, count = 0.0, 0
  for start in range(0, len(seqs), batch):
    chunk = seqs[start:start + batch]
    chunk = chunk + [chunk[0]] * (batch - len(chunk))  # fixed shape: one compile
    toks, lens = right_pad(chunk, width + 1, tokenizer.pad_id)
    nll = np.asarray(token_nll(model, params, jnp.asarray(toks)))
    real = min(batch, len(seqs) - start)
    mask = np.arange(width)[None] < (lens[:real, None] - 1)
    total += float((nll[:real] * mask).sum())
    count += int(mask.sum())
  nats = total / count
  return {"nats_per_token": nats, "bits_per_byte": total / num_bytes / math.log(2),
          "perplexity": math.exp(nats), "tokens": count, "bytes": int(num_bytes),
          "reviews": len(seqs)}

