"""Where a run starts from: the data position a resumed run continues at (also when the
global batch size changed), and another run's parameters (init_from='run:DIR')."""
import json
import logging
import os

import jax
import ml_collections

from experiments import optim
from experiments.checkpointing import describe_mismatch

log = logging.getLogger("experiments")


def resume_data_position(data_state: dict, global_batch_size: int) -> dict:
  """The iterator state to resume from. Grain's counts batches, so a run resumed with another
  global batch size moves to the batch that starts at the same example (rounded down: a few
  examples are seen twice rather than skipped)."""
  data_state = dict(data_state)
  saved = int(data_state.pop("global_batch_size", global_batch_size))
  if saved == global_batch_size:
    return data_state
  if "next_index" not in data_state:
    log.warning("global batch size changed %d -> %d and this iterator's position cannot be "
                "translated; it resumes at its saved position", saved, global_batch_size)
    return data_state
  data_state["next_index"] = int(data_state["next_index"]) * saved // global_batch_size
  log.warning("global batch size changed %d -> %d: data resumes at example %d (batch %d)",
              saved, global_batch_size, data_state["next_index"] * global_batch_size,
              data_state["next_index"])
  return data_state


def init_from_run(trainer, workdir: str):
  """Fresh optimizer, step 0 and this config's seed, with the evaluation params of
  `workdir`'s newest checkpoint (its moving average when it kept one). The source is read
  through its own config, so its optimizer and objective may differ from this run's (an
  EMA or a masked optimizer there, none here); the model must be the same (a different one
  is a named error listing the shapes)."""
  workdir = os.path.abspath(workdir)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise FileNotFoundError(f"init_from='run:{workdir}': no config.json there (not a "
                            "workdir of experiments.train)")
  with open(os.path.join(workdir, "config.json")) as f:
    source_config = ml_collections.ConfigDict(json.load(f))
  source_config.mesh = trainer.config.mesh  # The source may have run on another topology.
  source = type(trainer)(source_config, workdir, devices=list(trainer.mesh.devices.flat),
                   progress=False)
  mismatch = describe_mismatch(source.meta["param_shapes"], trainer.meta["param_shapes"])
  if mismatch:
    raise ValueError(f"init_from='run:{workdir}' is a different model; parameter shapes "
                     f"differ:\n{mismatch}")
  try:
    source_state = source.restore_latest()
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init_from='run:{workdir}': {e}") from None
  averaged = isinstance(source_state.opt_state, optim.ParamsEmaState)
  params = jax.device_put(source.eval_params(source_state), trainer.params_shardings)
  log.info("initialising every parameter from %s (step %d%s)", workdir,
           int(source_state.step), ", its moving average" if averaged else "")
  with trainer.context():
    fresh = trainer._init(jax.random.PRNGKey(int(trainer.config.seed)), None)
    init_opt = jax.jit(trainer.tx.init, out_shardings=trainer.state_shardings.opt_state)
    return fresh.replace(params=params, opt_state=init_opt(params))
