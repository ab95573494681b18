"""seqmatch.objective: L_SM and BC equal a per-transition reference built from plain forwards
of the collapsed states; schedule; divergences; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqmatch import masking, objective
from tests.seqmatch_testlib import (BKSPC, EOS, NUM_ACTIONS, plain_last_logits, random_sequences,
                              tiny_model)

GAMMA, ALPHA = 0.9, 0.5


def _lse(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def _reference(apply_fn, params, seq, pl, ln, expert, is_data, n, divergence,
               reward_backspace=True, regularize_noise=True, horizon=None):
  """Loops over transitions; every state's logits come from a plain forward of its tokens."""
  phi = {"chi2": lambda r: r, "kl": lambda r: -np.exp(-(r + 1.0))}[divergence]
  reg = {"chi2": lambda r: r * r / (4 * ALPHA), "kl": lambda r: 0.0}[divergence]
  z = sum(GAMMA ** j for j in range(horizon or n - 1))
  data_sum = 0.0
  mix_sum, reg_sum = {True: 0.0, False: 0.0}, {True: 0.0, False: 0.0}   # by is_data
  nll, n_bc = 0.0, 0
  for b in range(len(seq)):
    states = masking.collapse_states(seq[b, :ln[b]], int(pl[b]), BKSPC)
    logits = plain_last_logits(apply_fn, params, states).astype(np.float64)
    for t in range(len(states)):
      if len(states[t]) == pl[b]:
        logits[t, BKSPC] = -np.inf
    for i in range(ln[b] - pl[b]):
      t = pl[b] - 1 + i
      a = seq[b, t + 1]
      done = a == EOS or t + 1 == ln[b] - 1
      v, v_next = _lse(logits[t]), (0.0 if done else _lse(logits[t + 1]))
      r = logits[t, a] - GAMMA * v_next
      w = GAMMA ** i / z
      if is_data[b] and expert[b, t + 1]:
        if reward_backspace or a != BKSPC:
          data_sum += w * phi(r)
        nll += v - logits[t, a]
        n_bc += 1
      mix_sum[bool(is_data[b])] += w * (v - GAMMA * v_next)
      if regularize_noise or not is_data[b] or expert[b, t + 1]:
        reg_sum[bool(is_data[b])] += w * reg(r)
  n_data, n_model = sum(is_data), len(seq) - sum(is_data)
  # E_mix: half data occupancy, half model occupancy.
  e_mix = lambda d: 0.5 * d[True] / n_data + 0.5 * d[False] / n_model
  loss = -data_sum / n_data + e_mix(mix_sum) + e_mix(reg_sum)
  return loss, nll / n_bc


@pytest.fixture(scope="module")
def batch():
  apply_fn, _, params = tiny_model()
  rng = np.random.default_rng(3)
  n = 14
  seq, pl, ln = random_sequences(rng, 4, n, eos=EOS)
  seq[3, :6] = [7, 8, 9, EOS, 4, BKSPC]   # eos mid-sequence: done there, not at the end
  pl[3], ln[3] = 2, 6
  expert = rng.random(seq.shape) < 0.7
  is_data = np.array([True, True, False, True])
  one = masking.build_one_pass(seq, pl, ln, vocab_size=NUM_ACTIONS, backspace_id=BKSPC,
                               eos_id=EOS, expert_BxN=expert)
  return apply_fn, params, seq, pl, ln, expert, is_data, n, one


@pytest.mark.parametrize("divergence,reward_backspace,regularize_noise,horizon",
                         [("chi2", True, True, None), ("kl", True, True, None),
                          ("chi2", False, True, None), ("chi2", True, False, None),
                          ("chi2", True, True, 3)])
def test_losses_equal_per_transition_reference(batch, divergence, reward_backspace,
                                               regularize_noise, horizon):
  apply_fn, params, seq, pl, ln, expert, is_data, n, one = batch
  logits, _ = jax.jit(apply_fn)(params, one.tokens, one.positions, one.mask)
  opts = dict(reward_backspace=reward_backspace, regularize_noise=regularize_noise,
              horizon=horizon)
  loss, _ = objective.sequencematch_loss(logits, one, is_data, backspace_id=BKSPC, gamma=GAMMA,
                                         alpha=ALPHA, divergence=divergence, **opts)
  bc, _ = objective.bc_loss(logits, one, is_data, backspace_id=BKSPC)
  ref_loss, ref_bc = _reference(apply_fn, params, seq, pl, ln, expert, is_data, n, divergence,
                                **opts)
  if not (reward_backspace and regularize_noise) or horizon:   # an option that changes it
    plain, _ = objective.sequencematch_loss(logits, one, is_data, backspace_id=BKSPC,
                                            gamma=GAMMA, alpha=ALPHA, divergence=divergence)
    assert abs(float(plain) - float(loss)) > 1e-4
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(bc), ref_bc, rtol=1e-5)
  assert float(one.done[3, 2]) and not bool(one.is_transition[3, 5])


def test_gradient_is_finite_with_illegal_backspace_rows(batch):
  apply_fn, params, *_, one = batch
  assert bool(one.bkspc_illegal.any())

  def f(p):
    logits, _ = apply_fn(p, one.tokens, one.positions, one.mask)
    l_sm, _ = objective.sequencematch_loss(logits, one, backspace_id=BKSPC)
    l_bc, _ = objective.bc_loss(logits, one, backspace_id=BKSPC)
    return objective.combined_loss(7, l_sm, l_bc, bc_steps=5, beta=0.3)
  grads = jax.jit(jax.grad(f))(params)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


def test_chi2_is_the_spec_formula_on_given_terms():
  """With phi(r) = r and reg r^2/(4 alpha): one transition, hand-computed."""
  one = masking.build_one_pass(np.array([[1, 4, 5]]), np.array([1]), np.array([3]),
                               vocab_size=NUM_ACTIONS, backspace_id=BKSPC)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, NUM_ACTIONS)), jnp.float32)
  g, a = 0.8, 0.25
  lg = np.asarray(logits, np.float64)
  lg[0, 0, BKSPC] = -np.inf                                     # row 0 is the bare prompt
  v0, v1, v2 = (_lse(lg[0, k]) for k in range(3))
  r0, r1 = lg[0, 0, 4] - g * v1, lg[0, 1, 5]                     # the last one is done
  w0, w1 = 1 / (1 + g), g / (1 + g)
  want = -(w0 * r0 + w1 * r1) + (w0 * (v0 - g * v1) + w1 * v1) + (w0 * r0**2 + w1 * r1**2) / (4 * a)
  got, _ = objective.sequencematch_loss(logits, one, backspace_id=BKSPC, gamma=g, alpha=a)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_schedule():
  f = jax.jit(lambda s: objective.combined_loss(s, 2.0, 10.0, bc_steps=3, beta=0.25))
  assert float(f(0)) == 10.0 and float(f(2)) == 10.0
  assert float(f(3)) == pytest.approx(0.75 * 2.0 + 0.25 * 10.0)
  # A non-finite L_SM during the BC phase must not leak into the loss.
  assert float(objective.combined_loss(0, jnp.inf, 1.0, bc_steps=3, beta=0.1)) == 1.0


def test_bad_inputs(batch):
  *_, one = batch
  with pytest.raises(ValueError, match=r"logits_BxNxA must be \[B, N, A\]"):
    objective.sequencematch_loss(jnp.zeros((4, 3, NUM_ACTIONS)), one, backspace_id=BKSPC)
  with pytest.raises(ValueError, match="unknown divergence 'hellinger'"):
    objective.sequencematch_loss(jnp.zeros(one.tokens.shape + (NUM_ACTIONS,)), one,
                                 backspace_id=BKSPC, divergence="hellinger")
  with pytest.raises(ValueError, match="is_data_B must have shape"):
    objective.sequencematch_loss(jnp.zeros(one.tokens.shape + (NUM_ACTIONS,)), one,
                                 np.ones(3, bool), backspace_id=BKSPC)
  with pytest.raises(ValueError, match=r"model_share = 2.0 is outside \[0.0, 1.0\]"):
    objective.sequencematch_loss(jnp.zeros(one.tokens.shape + (NUM_ACTIONS,)), one,
                                 backspace_id=BKSPC, model_share=2.0)
  with pytest.raises(ValueError, match="horizon must be >= 1"):
    objective.sequencematch_loss(jnp.zeros(one.tokens.shape + (NUM_ACTIONS,)), one,
                                 backspace_id=BKSPC, horizon=0)
  with pytest.raises(ValueError, match="beta must be in"):
    objective.schedule_weights(0, bc_steps=1, beta=1.5)


def test_gradient_finite_for_extreme_non_expert_reward():
  """phi(r) of a non-expert row must not overflow into a NaN gradient (kl: exp(-r)):
  row 0's action has logit -1000, so r_0 ~ -1000; the expert row 1 stays moderate."""
  one = masking.build_one_pass(np.array([[1, 4, 5]]), np.array([1]), np.array([3]),
                               vocab_size=NUM_ACTIONS, backspace_id=BKSPC,
                               expert_BxN=np.array([[0, 0, 1]], bool))
  logits = jax.random.normal(jax.random.key(0), (1, 3, NUM_ACTIONS)).at[0, 0, 4].set(-1000.0)
  loss, g = jax.value_and_grad(lambda x: objective.sequencematch_loss(
      x, one, backspace_id=BKSPC, divergence="kl")[0])(logits)
  assert bool(jnp.isfinite(loss)) and bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.abs(g).max()) > 0


def test_value_term_telescopes_to_the_prompt_state():
  """With done only at each sequence's last transition, E_mix's value term is
  sum_b seq_w_b V(prompt_b) / Z: a rollout's actions after its prompt never enter it, only
  the regulariser sees them (why the rollout term acts through alpha alone)."""
  apply_fn, _, params = tiny_model()
  rng = np.random.default_rng(5)
  n = 12
  seq, pl, ln = random_sequences(rng, 4, n, eos=EOS, min_prompt=2)
  assert (ln > pl).all()   # every row has a transition (this seed)
  is_data = jnp.asarray([True, True, False, False])

  @jax.jit
  def loss_terms(one):
    logits, _ = apply_fn(params, one.tokens, one.positions, one.mask)
    _, m = objective.sequencematch_loss(logits, one, is_data, backspace_id=BKSPC, gamma=GAMMA,
                                        alpha=ALPHA, model_share=0.3)
    return m["sm/value_term"], m["sm/reg_term"], logits

  def terms(seq):
    one = masking.build_one_pass(seq, pl, ln, vocab_size=NUM_ACTIONS, backspace_id=BKSPC,
                                 eos_id=EOS)
    value, reg, logits = loss_terms(one)
    return float(value), float(reg), np.asarray(logits, np.float64)

  value, reg, logits = terms(seq)
  z = sum(GAMMA ** j for j in range(n - 1))
  seq_w = [0.7 / 2, 0.7 / 2, 0.3 / 2, 0.3 / 2]
  v0 = [_lse(np.delete(logits[b, pl[b] - 1], BKSPC)) for b in range(4)]  # <bkspc> illegal
  np.testing.assert_allclose(value, sum(w * v / z for w, v in zip(seq_w, v0)), rtol=1e-5)
  other = seq.copy()   # the rollouts take other tokens after their prompts
  for b in (2, 3):
    for t in range(pl[b], ln[b]):
      if seq[b, t] not in (BKSPC, EOS):
        other[b, t] = 3 + (seq[b, t] - 3 + 1 + rng.integers(5)) % (BKSPC - 3)
  assert (other != seq).any()
  value2, reg2, _ = terms(other)
  np.testing.assert_allclose(value2, value, rtol=1e-5)
  assert abs(reg2 - reg) > 1e-4
