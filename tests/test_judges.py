"""experiments.reviews.judges: the independent lexicon judge on sentences whose VADER scores are
known, the judge's own quality on a labelled set (exact values), and argument validation."""
import numpy as np
import pytest

from experiments.reviews.judges import LexiconJudge, check_texts, judge_quality


@pytest.fixture(scope="module")
def vader():
  return LexiconJudge("vader")


def test_known_sentences(vader):
  p = vader.p_fresh(["A great, moving film.", "A dull, tedious mess.", "The film", "not good"])
  # VADER 3.3.2 compound scores: 0.6249, -0.6369, 0 (no lexicon word), -0.3412 (negation).
  np.testing.assert_allclose(p, (np.array([0.6249, -0.6369, 0.0, -0.3412]) + 1) / 2, atol=1e-4)
  assert p[2] == 0.5


def test_quality_counts_ties_as_wrong(vader):
  q = judge_quality(vader, ["a great film", "a terrible film", "the film"], [1, 0, 1])
  # The tie (0.5) is neither class: accuracy 2/3; both positives rank above the negative.
  assert q["accuracy"] == pytest.approx(2 / 3) and q["ties"] == pytest.approx(1 / 3)
  assert q["auc"] == 1.0 and q["independent"] and q["reviews"] == 3


def test_inputs_are_validated(vader):
  with pytest.raises(TypeError, match="texts must be a list of str, got str"):
    vader.p_fresh("a great film")
  with pytest.raises(TypeError, match="item 1 is int"):
    check_texts(["fine", 3])
  with pytest.raises(ValueError, match="lexicon='afinn'"):
    LexiconJudge("afinn")
  with pytest.raises(ValueError, match="labels must be 2 values"):
    judge_quality(vader, ["good", "bad"], [1, 2])
