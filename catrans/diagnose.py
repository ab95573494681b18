"""Checks to run before steering, with the numbers behind each warning.

target_share      samples the base model unsteered and measures how often the target class
                  occurs: guidance (weighted, FUDGE, Director) only reweights what the model
                  already produces, so a class the model almost never writes is reached
                  rarely or at a large cost in fluency. RareTargetWarning below `threshold`.
check_guide_vocab a guide (FUDGE's prefix classifier, another CAT, a judge) must read the
                  same token ids as the model it steers: VocabularyMismatchWarning when the
                  vocabulary sizes differ, or when two tokenizers of one size map ids to
                  different pieces (catrans.vocab_check, re-exported here)."""
import dataclasses
import logging
import warnings
from typing import Callable

import jax.numpy as jnp
import numpy as np

from catrans import inference
from catrans.baselines import sample_lm
from catrans.cat_model import CATModel
from catrans.transformer import Transformer
# The vocabulary checks live apart (baselines needs them, and this module needs baselines);
# they stay reachable here as diagnose.check_guide_vocab.
from catrans.vocab_check import (VocabularyMismatchWarning, check_guide_vocab,  # noqa: F401
                                 tokenizer_fingerprint, tokenizer_pieces, vocab_size_of)

log = logging.getLogger("catrans")


class RareTargetWarning(UserWarning):
  pass


@dataclasses.dataclass
class Diagnosis:
  share: float              # mean P(a = target | sample) (numeric: share with E[a] >= target)
  hit_rate: float           # share of samples scored > 0.5 for the target (numeric: = share)
  num_samples: int
  threshold: float
  rare: bool
  message: str | None       # the warning's text, None when the target is not rare
  scores: np.ndarray        # [num_samples] per-sample P(target) (numeric: E[a])


def _base_lm(model, params):
  if isinstance(model, Transformer):
    return model, params
  return Transformer(model.cfg), params["trunk"]


def target_share(model, params, rng, *, attribute: str | None = None, target=1,
                 prompt_ids=None, num_samples: int = 256, max_new_tokens: int = 32,
                 eos_id: int | None = None, pad_id: int = 0, temperature: float = 1.0,
                 threshold: float = 0.05, scorer: Callable | None = None,
                 batch_size: int = 16, warn: bool = True) -> Diagnosis:
  """How often the base model's own samples have attribute = target.

  model, params: a CATModel (its trunk samples; its head `attribute` scores the samples,
    P(a = target | prompt + sample) read after the last token) or a plain Transformer with a
    `scorer`.
  prompt_ids: the ids every sample continues (default [1], BOS); num_samples samples of
    max_new_tokens tokens (cut after eos_id).
  scorer(tokens_NxW, lengths_N) -> [N] P(target) (or 0/1), overrides the head.
  threshold: the share below which a RareTargetWarning (and a log line) is emitted."""
  lm, lm_params = _base_lm(model, params)
  if scorer is None:
    if not isinstance(model, CATModel):
      raise ValueError("target_share needs a CATModel (its attribute head scores the samples) "
                       "or scorer=")
    attribute = attribute or model.cat.attributes[0].name
    spec = model.cat.spec(attribute)
  else:
    spec = None
  prompt = np.asarray([1] if prompt_ids is None else prompt_ids, np.int32)
  p = len(prompt)
  prompts = jnp.asarray(np.broadcast_to(prompt, (num_samples, p)))
  new = np.asarray(sample_lm(lm, lm_params, prompts, jnp.full((num_samples,), p, jnp.int32),
                             rng, max_new_tokens=max_new_tokens, temperature=temperature,
                             eos_id=eos_id, pad_id=pad_id))
  seqs = np.concatenate([np.asarray(prompts), new], axis=1)
  lengths = np.full((num_samples,), p + max_new_tokens, np.int32)
  if eos_id is not None:
    is_eos = new == eos_id
    lengths = np.where(is_eos.any(1), p + np.argmax(is_eos, 1) + 1, lengths)
  seqs = np.where(np.arange(seqs.shape[1])[None] < lengths[:, None], seqs, pad_id)
  if scorer is not None:
    scores = np.asarray(scorer(jnp.asarray(seqs), jnp.asarray(lengths)), np.float64)
  else:
    numeric = spec.kind == "numeric"
    scores = np.zeros(num_samples)
    for start in range(0, num_samples, batch_size):   # [b, W, V, K] per chunk
      idx = np.arange(start, start + batch_size) % num_samples
      q = np.asarray(inference.estimate(model, params, jnp.asarray(seqs[idx]),
                                        attribute=attribute,
                                        target=None if numeric else int(target)).q)
      real = min(batch_size, num_samples - start)
      scores[start:start + real] = q[np.arange(real), lengths[idx[:real]] - 1]
  numeric = spec is not None and spec.kind == "numeric"
  if numeric:
    share = hit = float(np.mean(scores >= target))
    what = f"E[{attribute}] >= {target}"
  else:
    share, hit = float(np.mean(scores)), float(np.mean(scores > 0.5))
    what = f"{attribute or 'attribute'} = {target}"
  rare = share < threshold
  message = None
  if rare:
    message = (f"target {what} is rare under the base model's own samples: mean "
               f"P(target) {share:.4f}, {int(round(hit * num_samples))}/{num_samples} samples "
               f"scored as the target (threshold {threshold:g}). Guidance can only reweight "
               "what the model already produces: expect low success, or high perplexity at "
               "large strengths; consider fine-tuning the model towards the target first.")
    if warn:
      warnings.warn(message, RareTargetWarning, stacklevel=2)
      log.warning(message)
  return Diagnosis(share, hit, num_samples, threshold, rare, message, scores)
