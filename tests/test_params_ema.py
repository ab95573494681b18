"""optimizer.ema_decay: a moving average of the params kept in the optimizer state, sharded
and checkpointed like the params, and used by evaluation and restore_params."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.optim import ParamsEmaState, eval_params, with_params_ema


def test_ema_follows_its_recursion_with_warmup():
  lr, decay = 0.1, 0.9
  tx = with_params_ema(optax.sgd(lr), decay)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  state = tx.init(params)
  p_ref = np.asarray(params["w"], np.float64)
  e_ref = p_ref.copy()
  for n in range(6):
    g = rng.normal(size=(3, 2)).astype(np.float32)
    updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
    p_ref = p_ref - lr * g
    d = min(decay, (1 + n) / (10 + n))   # the warm-up: 0.1, 0.18, ... then 0.9
    e_ref = d * e_ref + (1 - d) * p_ref
  np.testing.assert_allclose(params["w"], p_ref, rtol=1e-5)
  np.testing.assert_allclose(eval_params(params, state)["w"], e_ref, rtol=1e-5)
  assert int(state.count) == 6
  # Without an average, evaluation reads the params themselves.
  assert eval_params(params, optax.sgd(lr).init(params)) is params


def test_bad_decay_and_missing_params_are_errors():
  with pytest.raises(ValueError, match="ema_decay"):
    with_params_ema(optax.sgd(0.1), 1.0)
  tx = with_params_ema(optax.sgd(0.1), 0.9)
  p = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="params"):
    tx.update(p, tx.init(p))


def test_trainer_evaluates_checkpoints_and_restores_the_average(tmp_path):
  from experiments.configs.default import get_config
  from experiments.trainer import Trainer
  c = get_config("tiny")
  c.optimizer.ema_decay = 0.5
  c.train.update(dict(steps=4, eval_every=4, checkpoint_every=2))
  t = Trainer(c, str(tmp_path), progress=False)
  t.run()
  # The average is sharded like the params it mirrors, not replicated.
  ema_specs = jax.tree.map(lambda s: s.spec, t.state_shardings.opt_state.ema)
  assert ema_specs == jax.tree.map(lambda s: s.spec, t.params_shardings)
  state = t.restore_latest()
  assert isinstance(state.opt_state, ParamsEmaState) and int(state.opt_state.count) == 4
  ema, last = t.restore_params(), state.params
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), ema, last)
  assert max(jax.tree.leaves(diff)) > 0   # the average is not the last iterate ...
  jax.tree.map(np.testing.assert_array_equal, ema, state.opt_state.ema)   # ... it is the EMA
  # The logged eval at step 4 is that of the average.
  rows = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  logged = [r["eval_loss"] for r in rows if r.get("step") == 4 and "eval_loss" in r][-1]
  np.testing.assert_allclose(t.evaluate(ema, c.train.eval_batches)["loss"], logged, rtol=1e-5)
  # An older checkpoint by step; one that was not kept is a named error.
  assert int(t.restore_latest(2).step) == 2
  with pytest.raises(FileNotFoundError, match="kept steps"):
    t.restore_latest(3)

  # init_from=run: starts from the source's average, with a fresh optimizer of this config's
  # own structure (no EMA here, so the source's optimizer state could not be read into it).
  ft = get_config("tiny")
  ft.init_from = "run:" + str(tmp_path)
  fresh = Trainer(ft, str(tmp_path / "ft"), progress=False).init_state()
  assert int(fresh.step) == 0 and not isinstance(fresh.opt_state, ParamsEmaState)
  jax.tree.map(np.testing.assert_array_equal, fresh.params, ema)
  other = get_config("tiny")
  other.model.d_model *= 2
  other.init_from = "run:" + str(tmp_path)
  with pytest.raises(ValueError, match="different model"):
    Trainer(other, str(tmp_path / "other"), progress=False).init_state()
