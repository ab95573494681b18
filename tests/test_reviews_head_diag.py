"""experiments.reports.reviews_head_diag: variant parsing and config overrides (no training)."""
import numpy as np
import pytest

from experiments.reports import reviews_head_diag as diag
from experiments.reviews.probes import logistic_probe, parse_table_variant


def test_variants_parse_and_apply():
  name, ov = diag.parse_variant("mine:objective.lam=3;objective.branch=block;"
                                "objective.td_mix=0.5")
  assert name == "mine" and ov == {"objective.lam": 3, "objective.branch": "block",
                                   "objective.td_mix": 0.5}
  c = diag.variant_config(ov, steps=123, tiny=False)
  assert (c.objective.lam, c.objective.branch, c.objective.td_mix, c.train.steps) == (
      3, "block", 0.5, 123)
  name, ov = diag.parse_variant("paper")   # the paper's head, whatever the config's default
  c = diag.variant_config(ov, steps=800, tiny=False)
  assert (c.objective.branch, c.objective.lam, c.train.steps) == ("mlp", 0.15, 800)
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    diag.parse_variant("nope")
  with pytest.raises(ValueError, match="unknown config key 'optimizer.lr'"):
    diag.variant_config({"optimizer.lr": 1.0}, steps=10, tiny=False)
  assert diag.variant_config({"seed": 7}, steps=10, tiny=False).seed == 7   # top level
  with pytest.raises(ValueError, match="unknown config key 'sed'"):
    diag.variant_config({"sed": 7}, steps=10, tiny=False)
  assert parse_table_variant("a", {"a": {"x": 1}}) == ("a", {"x": 1})   # another table


def test_probe_separates_separable_features():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 400)
  x = np.stack([y * 2.0 - 1.0 + 0.1 * rng.standard_normal(400), rng.standard_normal(400)], 1)
  m = logistic_probe(x[:300], y[:300], x[300:], y[300:])
  assert m["accuracy"] == 1.0 and m["auc"] == 1.0
