"""Where a resumed run's data iterator continues, also when the global batch size changed."""
import logging

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
