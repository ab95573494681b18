"""Sentiment judges that read text and say P(fresh), so steering can be scored by a judge that
no one here trained on these reviews (issue 25), beside the project's own classifier.

  LexiconJudge('vader')  VADER's compound score (vaderSentiment 3.3.2; its lexicon ships in
                         the wheel, nothing is downloaded), c in [-1, 1] -> (c + 1) / 2. It has
                         never seen a Rotten Tomatoes label. A text with no lexicon word scores
                         exactly 0.5: a tie, which counts as the target for neither class.
  ClassifierJudge        the project's prefix classifier (the reviews run 'judge'), P(fresh)
                         after the last text token; trained on the same reviews' train split.

Both follow `Judge`: `p_fresh(texts) -> [N] float64 in [0, 1]`. `judge_quality` is the judge's
own accuracy / AUC on labelled held-out reviews, which belongs beside any steering score it
gives (SPEC section 6: VADER's AUC on these snippets is only about 0.68)."""
from typing import Protocol, Sequence

import jax.numpy as jnp
import numpy as np

from catrans.metrics import auc
from experiments.reviews.data import right_pad
from experiments.reviews.estimation import classifier_fresh

LEXICONS = ("vader",)


class Judge(Protocol):
  name: str
  independent: bool     # True: never trained on these reviews

  def p_fresh(self, texts: Sequence[str]) -> np.ndarray:
    ...


def check_texts(texts) -> list[str]:
  """A list of str. A bare str is an error (iterating it would judge single characters)."""
  if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
    raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
  bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
  if bad:
    raise TypeError(f"texts must be a list of str; item {bad[0]} is "
                    f"{type(texts[bad[0]]).__name__}")
  return list(texts)


class LexiconJudge:
  """P(fresh) = (compound + 1) / 2 from a sentiment lexicon shipped in a registry package."""

  independent = True

  def __init__(self, lexicon: str = "vader"):
    if lexicon not in LEXICONS:
      raise ValueError(f"lexicon={lexicon!r}; choose from {LEXICONS}")
    try:
      from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:   # an optional extra: say which one
      raise ImportError("LexiconJudge('vader') needs vaderSentiment==3.3.2: "
                        "pip install -e .[judges]") from e
    self.name = lexicon
    self._analyzer = SentimentIntensityAnalyzer()

  def compound(self, texts: Sequence[str]) -> np.ndarray:
    return np.array([self._analyzer.polarity_scores(t)["compound"]
                     for t in check_texts(texts)], np.float64)

  def p_fresh(self, texts: Sequence[str]) -> np.ndarray:
    return (self.compound(texts) + 1.0) / 2.0


class ClassifierJudge:
  """A trained prefix classifier read after each text's last token (texts cut to `width`
  tokens, BOS first, as in training)."""

  independent = False

  def __init__(self, model, params, tokenizer, *, width: int, name: str = "judge",
               batch: int = 256):
    if width < 2:
      raise ValueError(f"width must be >= 2 (BOS + one token), got {width}")
    self.model, self.params, self.tok, self.width = model, params, tokenizer, width
    self.name, self.batch = name, batch

  def p_fresh(self, texts: Sequence[str]) -> np.ndarray:
    texts = check_texts(texts)
    seqs = [[self.tok.bos_id] + self.tok.encode(t)[:self.width - 1] for t in texts]
    out = np.zeros(len(seqs), np.float64)
    for s in range(0, len(seqs), self.batch):
      chunk = seqs[s:s + self.batch]
      real = len(chunk)
      chunk = chunk + [chunk[0]] * (self.batch - real)     # one shape: one compile
      toks, lens = right_pad(chunk, self.width, self.tok.pad_id)
      probs = np.asarray(classifier_fresh(self.model, self.params, jnp.asarray(toks)))
      out[s:s + real] = probs[np.arange(real), lens[:real] - 1]
    return out


def judge_quality(judge: Judge, texts: Sequence[str], labels) -> dict:
  """The judge's own accuracy (P(fresh) > 0.5 vs label 1, ties wrong), ROC AUC, the share of
  ties (P exactly 0.5) and the number of reviews, on labelled reviews (rotten 0 / fresh 1)."""
  texts = check_texts(texts)
  y = np.asarray(labels)
  if y.shape != (len(texts),) or not np.isin(y, (0, 1)).all():
    raise ValueError(f"labels must be {len(texts)} values in {{0, 1}}, got shape {y.shape}")
  p = judge.p_fresh(texts)
  pred = np.where(p > 0.5, 1, np.where(p < 0.5, 0, -1))
  return {"judge": judge.name, "independent": judge.independent, "reviews": len(texts),
          "accuracy": float(np.mean(pred == y)), "auc": auc(p, y == 1),
          "ties": float(np.mean(p == 0.5)), "fresh_share": float(np.mean(y == 1))}
