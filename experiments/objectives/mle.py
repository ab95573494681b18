"""Maximum likelihood: token cross-entropy on the catrans trunk."""
import jax.numpy as jnp
import optax

from catrans.transformer import Transformer
from experiments.objectives.base import Objective


def token_cross_entropy(logits_BxLxV, targets_BxL, weights_BxL):
  """Weighted mean cross-entropy (nats/token), the weight sum and the accuracy."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)
  total = jnp.maximum(weights_BxL.sum(), 1e-8)
  correct = (logits_BxLxV.argmax(-1) == targets_BxL) * weights_BxL
  return (ce_BxL * weights_BxL).sum() / total, weights_BxL.sum(), correct.sum() / total


class MLE(Objective):
  supports_lora = True

  def make_model(self):
    return Transformer(self.model_config)

  def loss(self, params, batch, rng, step):
    variables = {"params": self.model_params(params)}
    # The loss from the hidden states (Transformer.token_nll): the same values as
    # token_cross_entropy(out.logits, ...) without the [B, L, V] f32 logits in HBM.
    out = self.model.apply(variables, batch["inputs"], batch["positions"],
                           segment_ids_BxL=batch.get("segment_ids"), return_logits=False)
    nll_BxL, correct_BxL = self.model.apply(variables, out.hidden, batch["targets"],
                                            method=Transformer.token_nll)
    w = batch["weights"]
    total = jnp.maximum(w.sum(), 1e-8)
    ce, acc = (nll_BxL * w).sum() / total, (correct_BxL * w).sum() / total
    return ce, {"loss": ce, "ce": ce, "accuracy": acc, "weight": w.sum()}


def make_objective(config, task):
  return MLE(config, task)
