"""The Conditional Attribute Transformer: the trunk plus an attribute branch.

hidden h_t -> g_t = branch(h_t) ('mlp': a residual SwiGLU MLP, 'block': one extra transformer
block with its own KV cache, 'none') -> one AttributeHead per attribute. The token head is
the trunk's own logits, so a pretrained trunk keeps its language model."""
import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from catrans import validation
from catrans.attributes import AttributeSpec
from catrans.config import ModelConfig
from catrans.heads import PARAMS, AttributeHead
from catrans.layers import Block, RMSNorm, SwiGLU
from catrans.transformer import Transformer, init_cache, resolve_positions_and_attention

BRANCHES = ("mlp", "block", "none")
MODES = ("joint", "finetune", "attr_only")


@dataclasses.dataclass(frozen=True)
class CATConfig:
  attributes: tuple[AttributeSpec, ...]
  param: str = "full"            # full | factorized
  branch: str = "mlp"            # mlp | block | none
  factor_dim: int = 64
  # Hidden width of the 'mlp' branch; 0: the trunk's d_model. The branch is CAT's only extra
  # work per training token: at bench_cat's d=128, 4 layers, a branch as wide as the trunk's
  # mlp_dim (512) made the CAT step 1.16x the MLE step, d_model (128) 1.04x (CPU time, issue
  # 29). The bits estimates held at the narrower width: MAE vs the exact tails 0.027 / 0.019
  # (seeds 0 / 1) at 48 against 0.030 / 0.020 at 96 (tests/test_cat_exactness.py's setup).
  branch_mlp_dim: int = 0
  lam: float = 0.15              # weight of the attribute loss (reported best)
  mode: str = "joint"            # joint | finetune | attr_only (trunk frozen)
  # Bootstrapped attribute targets (ours; 0 = the paper's): the target at row t becomes
  # (1 - td_mix) * label + td_mix * the model's own class distribution at row t + 1 (no
  # gradient), V(s_{t+1}) = sum_v p(v | s_{t+1}) P(a | s_{t+1}, v) over the token head's
  # td_top_k most likely v (renormalised). Both have the same expectation under the data's
  # policy, but the bootstrap averages over futures, so a sparse, noisy outcome (a win decided
  # by a random walk 100 steps later) gives much less noisy targets, as TD does for RL values.
  td_mix: float = 0.0
  td_top_k: int = 8
  # The trunk state the branch reads: the trunk's final norm of the residual stream after
  # this many blocks (None: after the last one, the token head's own state). A frozen
  # pretrained trunk can hold an attribute more linearly in a middle layer than at its top,
  # which is tuned to predict the next token; the token head still reads the last block.
  attr_layer: int | None = None

  def __post_init__(self):
    if not self.attributes:
      raise ValueError("CATConfig needs at least one attribute")
    names = [a.name for a in self.attributes]
    if len(set(names)) != len(names):
      raise ValueError(f"attribute names must be unique, got {names}")
    if not 0.0 <= self.td_mix <= 1.0 or self.td_top_k < 1:
      raise ValueError(f"CATConfig: td_mix must be in [0, 1] and td_top_k >= 1; got "
                       f"{self.td_mix}, {self.td_top_k}")
    validation.check_optional_int(self.attr_layer, "CATConfig.attr_layer", lo=1)
    if self.td_mix and any(a.kind == "numeric" for a in self.attributes):
      raise ValueError("CATConfig.td_mix bootstraps class distributions; it does not support "
                       "numeric attributes")
    for field, value, allowed in (("param", self.param, PARAMS),
                                  ("branch", self.branch, BRANCHES),
                                  ("mode", self.mode, MODES)):
      if value not in allowed:
        raise ValueError(f"CATConfig.{field}={value!r}; choose from {allowed}")

  def spec(self, name: str) -> AttributeSpec:
    for a in self.attributes:
      if a.name == name:
        return a
    raise KeyError(f"no attribute {name!r}; attributes: {[a.name for a in self.attributes]}")

  @classmethod
  def from_dict(cls, d) -> "CATConfig":
    d = dict(d)
    attrs = tuple(a if isinstance(a, AttributeSpec) else AttributeSpec.from_dict(a)
                  for a in d.pop("attributes", ()))
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown CAT config keys {unknown}; known: {sorted(known)}")
    return cls(attributes=attrs, **d)


class CATOutput(NamedTuple):
  logits: jnp.ndarray               # [B, L, V] next-token logits
  attributes: dict[str, jnp.ndarray]  # name -> [B, L, K] (at next tokens) or [B, L, V, K]
  hidden: jnp.ndarray               # [B, L, D] trunk hidden (after the final norm)
  cache: Any
  # With candidates_top_k=C: (token ids [B, L, C] of the token head's C most likely next
  # tokens, {name: [B, L, C, K]} the attribute outputs there).
  candidates: Any = None


def init_cat_cache(cfg: ModelConfig, cat: CATConfig, batch_size: int, cache_len: int):
  """{'trunk': trunk cache, 'attr': the branch block's k/v (or None)}."""
  trunk = init_cache(cfg, batch_size, cache_len)
  attr = None
  if cat.branch == "block":
    one = init_cache(cfg.replace(num_layers=1), batch_size, cache_len)
    attr = {"k": one["k"][0], "v": one["v"][0]}
  return {"trunk": trunk, "attr": attr}


class CATModel(nn.Module):
  cfg: ModelConfig
  cat: CATConfig

  def setup(self):
    cfg, cat = self.cfg, self.cat
    self.trunk = Transformer(cfg)
    if cat.branch == "block":
      self.branch = Block(cfg)
    elif cat.branch == "mlp":
      self.branch_norm = RMSNorm(cfg.norm_eps, cfg.weight_dtype)
      self.branch = SwiGLU(cfg.replace(mlp_dim=cat.branch_mlp_dim or cfg.d_model))
    self.out_norm = RMSNorm(cfg.norm_eps, cfg.weight_dtype)
    self.heads = {a.name: AttributeHead(
        vocab_size=cfg.vocab_size, padded_vocab_size=cfg.padded_vocab_size,
        num_outputs=a.num_outputs, d_model=cfg.d_model, parameterization=cat.param,
        factor_dim=cat.factor_dim, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
        name=f"head_{a.name}") for a in cat.attributes}

  def __call__(self, tokens_BxL, positions_BxL=None, mask=None, segment_ids_BxL=None,
               cache=None, *, next_tokens_BxL=None, all_tokens: bool = False,
               stop_trunk_gradient: bool = False, rows_B=None,
               return_logits: bool = True, candidates_top_k: int = 0) -> CATOutput:
    """next_tokens_BxL: attribute outputs at those tokens ([B, L, K], training);
    all_tokens=True: for every candidate ([B, L, V, K], inference); neither: no attributes.
    rows_B: compute logits and attributes at one row per sequence only (L becomes 1): a
    policy reading the newest row of a long, fixed-width input.
    return_logits=False: logits is None (no [B, L, V] token head; attributes only).
    candidates_top_k=C: also the attribute outputs at each row's C most likely next tokens
    (CATOutput.candidates; what a bootstrapped target averages over).
    Checked first: the trunk's inputs (Transformer.__call__), next_tokens_BxL integer ids
    [B, L] in the vocabulary, rows_B integer [B] in [0, L)."""
    trunk_cache = None if cache is None else cache["trunk"]
    b, l = validation.check_trunk_inputs(self.cfg, tokens_BxL, positions_BxL, mask,
                                         segment_ids_BxL, trunk_cache)
    if next_tokens_BxL is not None:
      validation.check_int_array(next_tokens_BxL, "next_tokens_BxL", shape=(b, l), lo=0,
                                 hi=self.cfg.vocab_size)
    if rows_B is not None:
      validation.check_int_array(rows_B, "rows_B", shape=(b,), lo=0, hi=l)
    positions_BxL, mask_BxLxS = resolve_positions_and_attention(
        tokens_BxL, positions_BxL, mask, segment_ids_BxL, trunk_cache)
    validation.check_tap_layer(self.cfg, self.cat.attr_layer, "CATConfig.attr_layer")
    out = self.trunk(tokens_BxL, positions_BxL, mask_BxLxS, cache=trunk_cache,
                     return_logits=return_logits and rows_B is None,
                     tap_layer=self.cat.attr_layer)
    h = out.hidden if out.tapped is None else out.tapped
    h = jax.lax.stop_gradient(h) if stop_trunk_gradient else h
    layer_cache = None if cache is None else cache["attr"]
    index = None if cache is None else trunk_cache["index"]
    g, attr_cache = self._branch(h, positions_BxL, mask_BxLxS, layer_cache, index)
    logits = out.logits
    if rows_B is not None:
      pick = lambda x: x[jnp.arange(x.shape[0]), rows_B][:, None]
      g = pick(g)
      logits = self.trunk.logits(pick(out.hidden)) if return_logits else None
      if next_tokens_BxL is not None:
        next_tokens_BxL = pick(next_tokens_BxL)
    attrs = {}
    if next_tokens_BxL is not None or all_tokens:
      for name, head in self.heads.items():
        attrs[name] = head.all_tokens(g) if all_tokens else head.at_tokens(g, next_tokens_BxL)
    candidates = None
    if candidates_top_k:
      if logits is None:
        raise ValueError("candidates_top_k needs the token head (return_logits=True, no rows_B)")
      _, top_BxLxC = jax.lax.top_k(jax.lax.stop_gradient(logits), candidates_top_k)
      candidates = (top_BxLxC, {name: head.at_candidates(g, top_BxLxC)
                                for name, head in self.heads.items()})
    new_cache = None if cache is None else {"trunk": out.cache, "attr": attr_cache}
    return CATOutput(logits, attrs, out.hidden, new_cache, candidates)

  def _branch(self, h_BxLxD, positions_BxL, mask_BxLxS, layer_cache=None, index=None):
    """g = out_norm(branch(h)) and the branch block's new cache (None unless 'block')."""
    attr_cache = None
    if self.cat.branch == "block":
      g, attr_cache = self.branch(h_BxLxD, layer_cache, positions_BxL, mask_BxLxS, index)
    elif self.cat.branch == "mlp":
      g = h_BxLxD + self.branch(self.branch_norm(h_BxLxD))
    else:
      g = h_BxLxD
    return self.out_norm(g), attr_cache

  def attributes_from_hidden(self, hidden_BxLxD, next_tokens_BxL=None, positions_BxL=None,
                             mask=None, *, all_tokens: bool = False):
    """The attribute outputs of __call__ computed from given trunk hidden states (no trunk
    run, no cache; the state cat.attr_layer names, as cache_features returns it): {name: [B, L, K]} at next_tokens_BxL, or [B, L, V, K] with all_tokens.
    Lets catrans.fit train the branch and heads on trunk features computed once.
    positions / mask default to 0..L-1 and causal, as in __call__ (only 'block' reads them)."""
    tokens_BxL = jnp.zeros(hidden_BxLxD.shape[:2], jnp.int32)
    positions_BxL, mask_BxLxS = resolve_positions_and_attention(tokens_BxL, positions_BxL, mask)
    g, _ = self._branch(hidden_BxLxD, positions_BxL, mask_BxLxS)
    return {name: head.all_tokens(g) if all_tokens else head.at_tokens(g, next_tokens_BxL)
            for name, head in self.heads.items()}
