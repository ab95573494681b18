"""A prefix classifier P(a | x_<=t) as a trainer objective (catrans.baselines.PrefixClassifier).

It is what FUDGE rescores with, the "separately trained classifier" that estimates an
attribute from partial text, and (trained with another seed) the judge that scores steered
generations, so no evaluation ever reads the CAT head it is evaluating.

config.objective keys: name='prefix_clf', num_classes (0 = the task label's classes),
label (the batch key of the label, default 'label')."""
import jax.numpy as jnp
import optax

from catrans.baselines import PrefixClassifier, prefix_classifier_loss
from experiments.objectives.base import Objective


class PrefixClf(Objective):

  def __init__(self, config, task):
    self.label_key = config.objective.get("label", "label")
    n = int(config.objective.get("num_classes", 0) or 0)
    if not n:
      if not task.label_names or self.label_key not in task.label_names:
        raise ValueError(f"task {task.name!r} has no label {self.label_key!r}; set "
                         "objective.num_classes and objective.label")
      n = len(task.label_names[self.label_key])
    self.num_classes = n
    super().__init__(config, task)

  def make_model(self):
    return PrefixClassifier(self.model_config, self.num_classes)

  def loss(self, params, batch, rng, step):
    loss = prefix_classifier_loss(self.model, params, batch, batch[self.label_key])
    return loss, {"loss": loss, "weight": batch["weights"].sum()}

  def eval_metrics(self, params, batch):
    # A second forward pass in eval only: training reports the loss alone, so the library's
    # loss function stays the single definition of what is trained.
    labels_B = batch[self.label_key]
    logits_BxLxC, _ = self.model.apply({"params": params}, batch["inputs"],
                                       batch.get("positions"),
                                       segment_ids_BxL=batch.get("segment_ids"))
    w_BxL = batch["weights"].astype(jnp.float32) * (labels_B >= 0)[:, None]
    y_BxL = jnp.broadcast_to(jnp.maximum(labels_B, 0)[:, None], w_BxL.shape)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxC, y_BxL)
    hit_BxL = (logits_BxLxC.argmax(-1) == y_BxL).astype(jnp.float32)
    total = jnp.maximum(w_BxL.sum(), 1e-8)
    # The last counted position of each row has read the whole (truncated) review.
    last_B = jnp.maximum(w_BxL.shape[1] - 1 - jnp.argmax(w_BxL[:, ::-1] > 0, axis=1), 0)
    has_B = (w_BxL.sum(1) > 0).astype(jnp.float32)
    hit_last = jnp.take_along_axis(hit_BxL, last_B[:, None], 1)[:, 0] * has_B
    return {"loss": (ce * w_BxL).sum() / total, "accuracy": (hit_BxL * w_BxL).sum() / total,
            "accuracy_full_text": hit_last.sum() / jnp.maximum(has_B.sum(), 1.0),
            "weight": w_BxL.sum()}


def make_objective(config, task):
  return PrefixClf(config, task)
