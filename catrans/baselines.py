"""Baselines CAT is compared with, in the same library:

  Monte Carlo   P(a | prefix) estimated by sampling N completions from a plain LM (each
                prefix prefilled once, its N completions decoded from copies of its KV
                cache) and scoring each with an oracle or classifier: what CAT replaces.
  Director      a per-token sigmoid head (CATConfig with one binary attribute,
                binary_style='sigmoid'), decoded with log p + gamma log sigmoid: see
                `director_config`; decoding is steering.steered_decode with rule 'weighted'.
  FUDGE         a separate prefix classifier P(a | x_<=t) rescoring the top-k candidates of
                the plain LM at every step: `PrefixClassifier`, `fudge_decode`.
"""
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from catrans import sampling
from catrans.attributes import AttributeSpec
from catrans.cat_model import CATConfig
from catrans.config import ModelConfig
from catrans.transformer import Transformer, init_cache
from catrans.vocab_check import check_guide_vocab


def director_config(name: str = "attribute", branch: str = "mlp", lam: float = 1.0) -> CATConfig:
  """Director (Arora et al.): one sigmoid logit per candidate token for a binary attribute."""
  return CATConfig(attributes=(AttributeSpec(name, kind="binary", binary_style="sigmoid"),),
                   param="full", branch=branch, lam=lam)


# --- plain LM sampling (shared by Monte Carlo and FUDGE) --------------------------------------
def prefill(model, params, prompts_BxP, prompt_lens_B, total_len):
  """The prompts through the model into a fresh KV cache of total_len slots: (the logits at
  each prompt's last token [B, V], the cache)."""
  b, p = prompts_BxP.shape
  slots, rows = jnp.arange(total_len), jnp.arange(p)
  pl = prompt_lens_B.astype(jnp.int32)
  pmask = (slots[None, None] <= rows[None, :, None]) & (
      (slots[None, None] < pl[:, None, None]) | (slots[None, None] == rows[None, :, None]))
  cache = init_cache(model.cfg, b, total_len)
  out = model.apply({"params": params}, prompts_BxP,
                    jnp.broadcast_to(rows.astype(jnp.int32), (b, p)), pmask, cache=cache)
  return out.logits[jnp.arange(b), pl - 1], out.cache


def _sample_after_prefill(model, params, logits_BxV, cache, prompt_lens_B, prompt_width, rng,
                          max_new_tokens, temperature, eos_id, pad_id):
  """The decoding loop of sample_lm from a filled cache whose prompts are prompt_width wide."""
  b, p = logits_BxV.shape[0], prompt_width
  pl = prompt_lens_B.astype(jnp.int32)
  slots = jnp.arange(cache["k"].shape[2])

  def step(carry, i):
    cache, logits, done = carry
    tok = sampling.choose(logits, jax.random.fold_in(rng, i), temperature=temperature)
    tok = jnp.where(done, pad_id, tok)
    mask = (slots[None] < pl[:, None]) | ((slots[None] >= p) & (slots[None] <= p + i))
    o = model.apply({"params": params}, tok[:, None], (pl + i)[:, None], mask[:, None],
                    cache=cache)
    done = done | ((tok == eos_id) if eos_id is not None else False)
    return (o.cache, o.logits[:, 0], done), tok

  _, toks = jax.lax.scan(step, (cache, logits_BxV, jnp.zeros((b,), bool)),
                         jnp.arange(max_new_tokens))
  return toks.T


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature",
                                             "eos_id", "pad_id"))
def sample_lm(model, params, prompts_BxP, prompt_lens_B, rng, *, max_new_tokens: int,
              temperature: float = 1.0, eos_id: int | None = None, pad_id: int = 0):
  """Plain LM sampling with a KV cache: new tokens [B, T] (pad_id after eos)."""
  p = prompts_BxP.shape[1]
  logits, cache = prefill(model, params, prompts_BxP, prompt_lens_B, p + max_new_tokens)
  return _sample_after_prefill(model, params, logits, cache, prompt_lens_B, p, rng,
                               max_new_tokens, temperature, eos_id, pad_id)


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "max_new_tokens",
                                             "temperature", "eos_id", "pad_id"))
def sample_lm_shared_prefix(model, params, prompts_BxP, prompt_lens_B, rng, *,
                            num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                            eos_id: int | None = None, pad_id: int = 0):
  """num_samples continuations of every prompt, [B * num_samples, T] (row b * N + j is
  prompt b's j-th): each prompt is prefilled once and its KV cache copied to its N rows.

  The same draws as sample_lm on the prompts repeated N times (jnp.repeat order) with the
  same rng, without recomputing each prompt N times."""
  p = prompts_BxP.shape[1]
  logits, cache = prefill(model, params, prompts_BxP, prompt_lens_B, p + max_new_tokens)
  rep = lambda x, axis=0: jnp.repeat(x, num_samples, axis=axis)
  cache = dict(cache, k=rep(cache["k"], 1), v=rep(cache["v"], 1))   # [layers, B*N, S, ...]
  return _sample_after_prefill(model, params, rep(logits), cache, rep(prompt_lens_B), p, rng,
                               max_new_tokens, temperature, eos_id, pad_id)


def monte_carlo_estimate(model, params, prompts_BxP, prompt_lens_B, rng, *, num_samples: int,
                         max_new_tokens: int, score_fn: Callable, temperature: float = 1.0,
                         eos_id: int | None = None, pad_id: int = 0):
  """[B] mean of score_fn over num_samples sampled completions of each prefix.

  score_fn(prompts_NxP, prompt_lens_N, completions_NxT) -> [N] scores (an oracle, e.g. the
  exact attribute of a finished sequence, or a classifier's probability). Each prefix is
  prefilled once and its N completions sampled from copies of its KV cache
  (sample_lm_shared_prefix): what a user would write, and the fastest fair baseline."""
  b = prompts_BxP.shape[0]
  rep = lambda x: jnp.repeat(x, num_samples, axis=0)
  completions = sample_lm_shared_prefix(model, params, prompts_BxP, prompt_lens_B, rng,
                                        num_samples=num_samples,
                                        max_new_tokens=max_new_tokens,
                                        temperature=temperature, eos_id=eos_id, pad_id=pad_id)
  scores = score_fn(rep(prompts_BxP), rep(prompt_lens_B), completions)
  return jnp.asarray(scores, jnp.float32).reshape(b, num_samples).mean(-1)


# --- FUDGE -----------------------------------------------------------------------------------
class PrefixClassifier(nn.Module):
  """P(a | x_<=t) at every position: a trunk plus a linear classifier on its hidden states."""
  cfg: ModelConfig
  num_classes: int = 2

  def setup(self):
    self.trunk = Transformer(self.cfg)
    self.classify = nn.Dense(self.num_classes, name="classify")

  def __call__(self, tokens_BxL, positions_BxL=None, mask=None, segment_ids_BxL=None,
               cache=None):
    out = self.trunk(tokens_BxL, positions_BxL, mask, segment_ids_BxL, cache,
                     return_logits=False)
    return self.classify(out.hidden).astype(jnp.float32), out.cache


def prefix_classifier_loss(model, params, batch, labels_B):
  """Mean CE of the prefix classifier at every counted position (weights > 0)."""
  logits, _ = model.apply({"params": params}, batch["inputs"], batch.get("positions"),
                          segment_ids_BxL=batch.get("segment_ids"))
  w = batch["weights"].astype(jnp.float32) * (labels_B >= 0)[:, None]
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.broadcast_to(jnp.maximum(labels_B, 0)[:, None], logits.shape[:2]))
  return (ce * w).sum() / jnp.maximum(w.sum(), 1e-8)


@functools.partial(jax.jit, static_argnames=("lm", "classifier", "max_new_tokens", "top_k",
                                             "target", "gamma", "temperature", "eos_id",
                                             "pad_id"))
def fudge_decode(lm, lm_params, classifier, clf_params, prompts_BxP, prompt_lens_B, rng, *,
                 target: int, max_new_tokens: int, top_k: int = 20, gamma: float = 1.0,
                 temperature: float = 1.0, eos_id: int | None = None, pad_id: int = 0):
  """FUDGE: at each step the LM's top_k candidates are rescored by
  log p(v|s) + gamma log P_clf(a = target | s, v), the classifier reading each candidate as a
  tentative next row of its own KV cache (all k in one call), then sampled or argmax'ed.
  A classifier over another vocabulary warns (vocab_check.VocabularyMismatchWarning)."""
  check_guide_vocab(lm, classifier, model_name="lm", guide_name="classifier")
  b, p = prompts_BxP.shape
  s = p + max_new_tokens + top_k
  pl = prompt_lens_B.astype(jnp.int32)
  lm_logits, lm_cache = prefill(lm, lm_params, prompts_BxP, prompt_lens_B, s)
  slots, rows = jnp.arange(s), jnp.arange(p)
  pmask = (slots[None, None] <= rows[None, :, None]) & (
      (slots[None, None] < pl[:, None, None]) | (slots[None, None] == rows[None, :, None]))
  _, clf_cache = classifier.apply({"params": clf_params}, prompts_BxP,
                                  jnp.broadcast_to(rows.astype(jnp.int32), (b, p)), pmask,
                                  cache=init_cache(classifier.cfg, b, s))

  def step(carry, i):
    lm_cache, clf_cache, logits, done = carry
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    cand_lp, cand = jax.lax.top_k(logp, top_k)                      # [B, k]
    base = (slots[None] < pl[:, None]) | ((slots[None] >= p) & (slots[None] < p + i))
    # Candidate j is a tentative row at slot p+i+j that sees the prefix and itself only.
    own = slots[None, None] == (p + i + jnp.arange(top_k))[None, :, None]
    cmask = base[:, None] | own
    probe_cache = dict(clf_cache)
    clf_logits, _ = classifier.apply({"params": clf_params}, cand,
                                     jnp.broadcast_to((pl + i)[:, None], (b, top_k)), cmask,
                                     cache=probe_cache)
    score = cand_lp + gamma * jax.nn.log_softmax(clf_logits, -1)[..., target]
    j = sampling.choose(score, jax.random.fold_in(rng, i), temperature=temperature)
    tok = jnp.where(done, pad_id, cand[jnp.arange(b), j])
    mask = (base | (slots[None] == p + i))[:, None]
    o = lm.apply({"params": lm_params}, tok[:, None], (pl + i)[:, None], mask, cache=lm_cache)
    _, new_clf = classifier.apply({"params": clf_params}, tok[:, None], (pl + i)[:, None], mask,
                                  cache=clf_cache)
    done = done | ((tok == eos_id) if eos_id is not None else False)
    return (o.cache, new_clf, o.logits[:, 0], done), tok

  _, toks = jax.lax.scan(step, (lm_cache, clf_cache, lm_logits, jnp.zeros((b,), bool)),
                         jnp.arange(max_new_tokens))
  return toks.T
