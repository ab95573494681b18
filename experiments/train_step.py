"""The pure, jitted `train_step(state, batch) -> (state, metrics)`: the objective's loss and
gradients (optionally accumulated over micro-batches), the optimizer update, and the policy for
non-finite values. The Trainer compiles it; nothing here touches the host."""
import jax
import jax.numpy as jnp
import numpy as np

from experiments.train_state import TrainState

NONFINITE_POLICIES = ("skip", "stop", "ignore")


class NonFiniteError(RuntimeError):
  pass


def nonfinite_terms(metrics: dict) -> str:
  """What went non-finite in one step's (host) metrics, for a report."""
  bad = sorted(k for k, v in metrics.items() if not np.isfinite(float(v)))
  if bad:
    return ", ".join(bad)
  if float(metrics.get("finite_update", 1.0)) < 1.0:
    return "the update (the new parameters)"
  return "the gradients"


def broken_update(step: int, metrics: dict) -> str | None:
  """A report when step `step`'s update made the parameters non-finite, else None (metrics:
  host floats or device scalars). Finite gradients cannot do that to a sound AdamW state, so
  skipping more steps would not help."""
  if float(metrics.get("finite_update", 1.0)) >= 1.0:
    return None
  return (f"the update at step {step} made the parameters non-finite from finite gradients: "
          f"the optimizer state is broken (e.g. negative second moments from a garbled "
          f"checkpoint) or the learning rate overflows. Stopping before this state is saved")


def _tree_all_finite(tree) -> jnp.ndarray:
  # x * 0 is 0 for finite x and NaN for inf or NaN (XLA does not fold a float x * 0), so the
  # sum is finite exactly when every element is: one fused read per leaf, where isfinite +
  # all wrote a boolean array per leaf and reduced it in a second pass (2.3x the CPU time).
  leaves = [jnp.isfinite(jnp.sum(x * 0)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_train_step(objective, tx, *, grad_accum_steps: int = 1, nonfinite: str = "skip",
                    microbatch_sharding=None):
  """A pure `train_step(state, batch) -> (state, metrics)`.

  With grad_accum_steps = A the global batch is split into A micro-batches (row i goes to
  micro-batch i mod A, which keeps every device's rows on that device) and the gradients of
  their mean losses are averaged: one update, A times less activation memory."""
  if nonfinite not in NONFINITE_POLICIES:
    raise ValueError(f"train.nonfinite={nonfinite!r}; choose from {NONFINITE_POLICIES}")

  def loss_and_grads(params, batch, rng, step):
    grad_fn = jax.value_and_grad(
        lambda p: objective.loss(p, batch, rng, step), has_aux=True)
    (loss, metrics), grads = grad_fn(params)
    return loss, metrics, grads

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    aux = getattr(state, "aux", None)
    extra = {}
    if aux is not None:
      # Updated before the loss from the current params (not differentiated); its rows
      # join every micro-batch unsplit.
      aux = objective.update_aux(aux, state.params, batch, jax.random.fold_in(rng, 0x5EED),
                                 state.step)
      extra = objective.aux_batch(aux)
    if grad_accum_steps == 1:
      loss, metrics, grads = loss_and_grads(state.params, dict(batch, **extra), rng,
                                            state.step)
    else:
      def split(x):
        x = x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:])
        x = jnp.swapaxes(x, 0, 1)
        if microbatch_sharding is not None:
          x = jax.lax.with_sharding_constraint(x, microbatch_sharding(x.ndim))
        return x
      micro = jax.tree.map(split, batch)

      def body(carry, mb_and_index):
        mb, i = mb_and_index
        loss, metrics, grads = loss_and_grads(state.params, dict(mb, **extra),
                                              jax.random.fold_in(rng, i), state.step)
        # A loss that is a weighted mean (metrics['weight'] = its weight sum) is combined
        # by weight, so accumulation gives exactly the full batch's gradient.
        w = metrics.get("weight", jnp.ones((), jnp.float32)).astype(jnp.float32)
        scaled = jax.tree.map(lambda x: x * w, (loss, metrics, grads))
        acc = jax.tree.map(jnp.add, carry, (scaled, w))
        return acc, None

      shapes = jax.eval_shape(loss_and_grads, state.params,
                              dict(jax.tree.map(lambda x: x[0], micro), **extra), rng,
                              state.step)
      zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
      (summed, total), _ = jax.lax.scan(
          body, (zeros, jnp.zeros((), jnp.float32)), (micro, jnp.arange(grad_accum_steps)))
      total = jnp.maximum(total, 1e-8)
      loss, metrics, grads = jax.tree.map(lambda x, s: (x / total).astype(s.dtype),
                                          summed, shapes)
      if "weight" in metrics:
        metrics = dict(metrics, weight=total)

    grad_norm = optimizer_global_norm(grads)
    # A non-finite gradient makes its squared norm non-finite (so does a norm that overflows
    # f32, |g| > 1.8e19, which the clip could not scale either): one pass over the gradients,
    # and the verdict is known before the update, so a skip is a branch, not a select.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update(s):
      updates, opt_state = tx.update(grads, s.opt_state, s.params)
      return s.replace(params=jax.tree.map(jnp.add, s.params, updates), opt_state=opt_state)

    if nonfinite == "ignore":
      new_state = apply_update(state)
    else:
      # lax.cond updates the donated state in place and leaves it untouched on a skip; a
      # where(finite, new, old) after the update kept both copies alive and cost 2.8x the
      # update itself (8 x 3M parameters, AdamW with clip and moving average).
      new_state = jax.lax.cond(finite, apply_update, lambda s: s, state)
      new_state = new_state.replace(skipped=state.skipped + (~finite).astype(jnp.int32))
    # From finite gradients and a sound state every AdamW quantity stays finite, so a
    # non-finite result means the state itself is broken (negative second moments from a
    # garbled checkpoint, an overflowing learning rate). It is applied (undoing it would need
    # the old state kept): the host stops the run before it saves such a state (Trainer).
    finite_update = _tree_all_finite(new_state.params)
    new_state = new_state.replace(step=state.step + 1)
    if aux is not None:  # The buffer refresh stands even when the update is skipped.
      new_state = new_state.replace(aux=aux)
    metrics = dict(metrics)
    metrics.update(loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32),
                   finite_update=finite_update.astype(jnp.float32), skipped=new_state.skipped)
    return new_state, metrics

  return train_step


def optimizer_global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))
