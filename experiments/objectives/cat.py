"""CAT as a trainer objective: CE + lambda * attribute loss on a CATModel.

config.objective keys: name='cat', attributes (a tuple of dicts with AttributeSpec fields;
default one categorical attribute per task label), param (full|factorized), branch
(mlp|block|none), branch_mlp_dim (0: the trunk's d_model), factor_dim, lam (0.15), mode (joint|finetune|attr_only; attr_only trains
the attribute branch only, the trunk frozen)."""
import jax

from catrans.cat_model import CATConfig, CATModel
from catrans.objective import cat_loss
from experiments.objectives.base import Objective


def cat_config_from(objective_config, task) -> CATConfig:
  d = {k: v for k, v in objective_config.items() if k != "name"}
  attrs = d.pop("attributes", None)
  if not attrs:
    if not task.label_names:
      raise ValueError(f"task {task.name!r} has no labels; set objective.attributes")
    attrs = [dict(name=k, kind="categorical", num_classes=len(v))
             for k, v in task.label_names.items()]
  d["attributes"] = [dict(a) for a in attrs]
  return CATConfig.from_dict(d)


class CAT(Objective):
  trunk_path = ("trunk",)

  def __init__(self, config, task):
    self.cat = cat_config_from(config.objective, task)
    super().__init__(config, task)

  def make_model(self):
    return CATModel(self.model_config, self.cat)

  def init_params(self, rng):
    b = self.dummy_batch(1, min(8, self.model_config.max_len))
    return self.model.init(rng, b["inputs"], b["positions"],
                           next_tokens_BxL=b["inputs"])["params"]

  def trainable_mask(self, params):
    if self.cat.mode != "attr_only":
      return None
    return {k: jax.tree.map(lambda _: k != "trunk", v) for k, v in params.items()}

  def loss(self, params, batch, rng, step):
    return cat_loss(self.model, params, batch)


def make_objective(config, task):
  return CAT(config, task)
