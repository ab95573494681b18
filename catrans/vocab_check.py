"""Can a guide read the model's token ids? A guide (FUDGE's prefix classifier, another CAT, a
judge) must share the vocabulary of the model it steers: check_guide_vocab warns
(VocabularyMismatchWarning) when the vocabulary sizes differ, or when two tokenizers of one
size map ids to different pieces. Also re-exported by catrans.diagnose."""
import hashlib
import logging
import warnings

import numpy as np

log = logging.getLogger("catrans")


class VocabularyMismatchWarning(UserWarning):
  pass


def vocab_size_of(x) -> int | None:
  """A vocabulary size from an int, a ModelConfig, a module with .cfg or a tokenizer."""
  if x is None:
    return None
  if isinstance(x, (int, np.integer)):
    return int(x)
  if hasattr(x, "cfg"):
    return int(x.cfg.vocab_size)
  return int(x.vocab_size)


def tokenizer_pieces(tokenizer) -> list[str]:
  """What every id decodes to on its own, plus the special ids: a tokenizer's identity
  through the Tokenizer protocol only (encode / decode / vocab_size / *_id)."""
  pieces = [repr(tokenizer.decode([i])) for i in range(int(tokenizer.vocab_size))]
  specials = [f"{k}={getattr(tokenizer, k, None)}" for k in ("pad_id", "bos_id", "eos_id")]
  return pieces + specials


def tokenizer_fingerprint(tokenizer) -> str:
  return hashlib.sha1("\n".join(tokenizer_pieces(tokenizer)).encode()).hexdigest()[:16]


def check_guide_vocab(model, guide, *, model_tokenizer=None, guide_tokenizer=None,
                      model_name: str = "model", guide_name: str = "guide",
                      warn: bool = True) -> list[str]:
  """Warnings (also emitted as VocabularyMismatchWarning) when the guide cannot read the
  model's token ids: different vocabulary sizes (models, configs, ints or tokenizers), or
  tokenizers of one size whose ids decode to different pieces. [] when they agree."""
  messages = []
  sizes = {}
  for who, m, t in ((model_name, model, model_tokenizer), (guide_name, guide, guide_tokenizer)):
    sizes[who] = [s for s in (vocab_size_of(m), vocab_size_of(t)) if s is not None]
  for who, s in sizes.items():
    if len(set(s)) > 1:
      messages.append(f"{who}: the model's vocabulary has {s[0]} ids but its tokenizer "
                      f"{s[1]}")
  ms, gs = sizes[model_name], sizes[guide_name]
  if ms and gs and ms[0] != gs[0]:
    messages.append(f"vocabulary sizes differ: {model_name} has {ms[0]} token ids, "
                    f"{guide_name} has {gs[0]}; the guide would score the wrong tokens "
                    "(ids past its vocabulary are clamped or out of range)")
  elif model_tokenizer is not None and guide_tokenizer is not None:
    a, b = tokenizer_pieces(model_tokenizer), tokenizer_pieces(guide_tokenizer)
    if a != b:
      diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
      i = diff[0] if diff else min(len(a), len(b))
      messages.append(
          f"tokenizers differ: {model_name} ({tokenizer_fingerprint(model_tokenizer)}) and "
          f"{guide_name} ({tokenizer_fingerprint(guide_tokenizer)}) both have "
          f"{ms[0] if ms else '?'} ids but {len(diff)} decode differently (first: id {i}: "
          f"{a[i] if i < len(a) else None} vs {b[i] if i < len(b) else None})")
  if warn:
    for m in messages:
      warnings.warn(m, VocabularyMismatchWarning, stacklevel=2)
      log.warning(m)
  return messages
