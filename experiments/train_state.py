"""The train state: what one step reads and writes, and what a checkpoint holds."""
from typing import Any

import flax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray          # int32 scalar: updates applied so far
  params: Any
  opt_state: Any
  rng: jnp.ndarray           # base PRNG key; step s uses fold_in(rng, s)
  skipped: jnp.ndarray       # int32 scalar: updates skipped for non-finite values


@flax.struct.dataclass
class AuxTrainState(TrainState):
  """TrainState plus an objective-owned pytree carried from step to step and checkpointed
  (e.g. SequenceMatch's replay buffer of rollouts). Checkpoints keep it as a separate item,
  so runs without one keep exactly the TrainState layout on disk."""
  aux: Any = None


def with_aux(state: TrainState, aux) -> TrainState:
  if aux is None:
    return state
  return AuxTrainState(step=state.step, params=state.params, opt_state=state.opt_state,
                       rng=state.rng, skipped=state.skipped, aux=aux)


def split_aux(state):
  """(plain TrainState, aux or None): checkpoints store the two as separate items."""
  aux = getattr(state, "aux", None)
  if aux is None:
    return state, None
  return TrainState(step=state.step, params=state.params, opt_state=state.opt_state,
                    rng=state.rng, skipped=state.skipped), aux
