"""The decoder-only trunk shared by catrans and (through a model function) seqmatch.

Call: tokens, explicit positions, an explicit mask (or segment ids), an explicit KV cache
in and out. Returns logits over the real vocabulary, the final hidden states and the cache."""
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from catrans import token_loss, validation
from catrans.attention import AttentionMask
from catrans.config import ModelConfig
from catrans.layers import Block, RMSNorm


class TransformerOutput(NamedTuple):
  logits: jnp.ndarray | None   # [B, L, V] float32, None when return_logits=False
  hidden: jnp.ndarray          # [B, L, D] after the final norm
  cache: Any                   # updated cache, or None
  # [B, L, D] the final norm of the state after tap_layer blocks (None without tap_layer).
  tapped: jnp.ndarray | None = None


def init_cache(cfg: ModelConfig, batch_size: int, cache_len: int | None = None, dtype=None):
  """An empty KV cache: k, v [layers, B, S, kv_heads, head_dim] and the next free slot."""
  s = cache_len or cfg.max_len
  shape = (cfg.num_layers, batch_size, s, cfg.num_kv_heads, cfg.dim_per_head)
  dtype = dtype or cfg.compute_dtype
  return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
          "index": jnp.zeros((), jnp.int32)}


def _remat_policy(name):
  if name == "dots":
    return jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
  return None


def resolve_positions_and_attention(tokens_BxL, positions_BxL=None, mask=None,
                                    segment_ids_BxL=None, cache=None):
  """The defaults of Transformer.__call__: positions 0..L-1 (after the cache's index) and
  the mask as an AttentionMask, structured when the caller gave no explicit mask (causal,
  within segment ids, or causal over the cache from its index): implementations that work
  block by block build each block from these O(L) inputs. An explicit bool mask [B, L, S]
  or [L, S] becomes a dense one; an AttentionMask passes through."""
  b, l = tokens_BxL.shape
  index = None if cache is None else cache["index"]
  if positions_BxL is None:
    positions_BxL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    if index is not None:
      positions_BxL = positions_BxL + index
  if isinstance(mask, AttentionMask):
    return positions_BxL, mask
  if mask is not None:
    mask = jnp.asarray(mask).astype(bool)
    return positions_BxL, AttentionMask(dense=mask if mask.ndim == 3 else mask[None])
  if cache is not None:
    if segment_ids_BxL is not None:
      raise ValueError("segment_ids_BxL with a cache is unsupported; pass an explicit mask")
    return positions_BxL, AttentionMask(q_offset=index)
  return positions_BxL, AttentionMask(segment_ids=segment_ids_BxL)


def resolve_positions_and_mask(tokens_BxL, positions_BxL=None, mask=None,
                               segment_ids_BxL=None, cache=None):
  """resolve_positions_and_attention with the mask made dense (masks.causal_mask /
  segment_mask / cache_causal_mask). Returns (positions_BxL, mask_BxLxS bool)."""
  positions_BxL, spec = resolve_positions_and_attention(tokens_BxL, positions_BxL, mask,
                                                        segment_ids_BxL, cache)
  b, l = tokens_BxL.shape
  s = l if cache is None else cache["k"].shape[2]
  return positions_BxL, jnp.broadcast_to(spec.to_dense(l, s), (b, l, s))


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(
        cfg.padded_vocab_size, cfg.d_model, dtype=cfg.compute_dtype,
        param_dtype=cfg.weight_dtype,
        # Tied: the table is also the output layer, so rows of norm ~1 keep the initial
        # logits O(1) (a std-1 table gives logits of std sqrt(d) and a huge first loss).
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(cfg.d_model ** -0.5 if cfg.tie_embeddings else 1.0),
            ("vocab", "embed")))
    self.feature_embeds = [
        nn.Embed(max(f) + 1, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(cfg.d_model ** -0.5), (None, "embed")),
                 name=f"feature_embed_{i}")
        for i, f in enumerate(cfg.token_features)]
    if cfg.learned_positions:
      self.position_embed = nn.Embed(
          cfg.max_len, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
          embedding_init=nn.with_logical_partitioning(
              nn.initializers.normal(cfg.d_model ** -0.5), (None, "embed")))
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=_remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    else:
      self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = RMSNorm(cfg.norm_eps, cfg.weight_dtype)
    if not cfg.tie_embeddings:
      self.unembed = self.param(
          "unembed", nn.with_logical_partitioning(
              nn.initializers.normal(cfg.d_model ** -0.5), ("embed", "vocab")),
          (cfg.d_model, cfg.padded_vocab_size), cfg.weight_dtype)

  def embed_tokens(self, tokens_BxL):
    x = self.embed(tokens_BxL)
    for table, values in zip(self.feature_embeds, self.cfg.token_features):
      value_BxL = jnp.asarray(values, jnp.int32)[tokens_BxL]
      x = x + jnp.where((value_BxL >= 0)[..., None], table(jnp.maximum(value_BxL, 0)), 0)
    if self.cfg.embed_scale:
      x = x * jnp.asarray(self.cfg.d_model ** 0.5, x.dtype)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))

  def logits(self, hidden_BxLxD):
    """[B, L, V] float32 logits over the real (unpadded) vocabulary."""
    if self.cfg.tie_embeddings:
      logits = self.embed.attend(hidden_BxLxD.astype(self.cfg.compute_dtype))
    else:
      logits = hidden_BxLxD @ self.unembed.astype(self.cfg.compute_dtype)
    logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
    return logits[..., :self.cfg.vocab_size].astype(jnp.float32)

  def token_nll(self, hidden_BxLxD, targets_BxL):
    """(nll [B, L] f32, target is the argmax [B, L]) of the next tokens from the final
    hidden states (TransformerOutput.hidden) without materialising f32 logits
    (catrans.token_loss): what the dense logits + softmax cross-entropy give, for less HBM."""
    v = self.cfg.vocab_size
    if self.cfg.tie_embeddings:
      table_VxD = self.embed.embedding[:v]
    else:
      table_VxD = self.unembed[:, :v].T
    hidden = hidden_BxLxD.astype(self.cfg.compute_dtype)
    return token_loss.token_nll(hidden, table_VxD.astype(self.cfg.compute_dtype), targets_BxL)

  def __call__(self, tokens_BxL, positions_BxL=None, mask=None, segment_ids_BxL=None,
               cache=None, *, return_logits: bool = True,
               tap_layer: int | None = None) -> TransformerOutput:
    """Args:
      tokens_BxL: int token ids in [0, vocab_size).
      positions_BxL: rotary positions; default 0..L-1 (offset by cache['index'] with a cache).
      mask: bool, True = may attend. [B, L, S] or [L, S]; S = L without a cache, S = cache
        length with one; or a catrans.attention.AttentionMask. Default: causal (within
        segments when segment_ids_BxL is given), kept structured for the attention core.
      segment_ids_BxL: packed-document ids, 0 = padding (not with a cache).
      cache: from init_cache; new rows are written at cache['index'] and the index advances.
      tap_layer: k in [1, num_layers]: also return (as .tapped) the final norm of the
        residual state after block k, the read-out the last block's state gets (unrolled
        layers only).

    Checked before any work (catrans.validation.check_trunk_inputs; values only when
    concrete, so under jit only dtypes and shapes): integer ids in the vocabulary, at most
    max_len of them without a cache; integer positions [B, L] in [0, max_len); a bool mask
    [B, L, S] or [L, S]; integer segment ids [B, L]; new rows that fit a cache.
    """
    validation.check_trunk_inputs(self.cfg, tokens_BxL, positions_BxL, mask, segment_ids_BxL,
                                  cache)
    validation.check_tap_layer(self.cfg, tap_layer)
    b, l = tokens_BxL.shape
    index = None if cache is None else cache["index"]
    positions_BxL, mask_BxLxS = resolve_positions_and_attention(
        tokens_BxL, positions_BxL, mask, segment_ids_BxL, cache)

    x = self.embed_tokens(tokens_BxL)
    if self.cfg.learned_positions:
      x = x + self.position_embed(jnp.minimum(positions_BxL, self.cfg.max_len - 1))
    new_cache, tapped = None, None
    if self.cfg.scan_layers:
      layer_caches = None if cache is None else {"k": cache["k"], "v": cache["v"]}
      x, kv = self.layers(x, layer_caches, positions_BxL, mask_BxLxS, index)
      if cache is not None:
        new_cache = dict(kv, index=index + l)
    else:
      kvs = []
      for i, layer in enumerate(self.layers):
        layer_cache = None if cache is None else {"k": cache["k"][i], "v": cache["v"][i]}
        x, kv = layer(x, layer_cache, positions_BxL, mask_BxLxS, index)
        kvs.append(kv)
        if i + 1 == tap_layer:
          tapped = self.final_norm(x)
      if cache is not None:
        new_cache = {"k": jnp.stack([c["k"] for c in kvs]),
                     "v": jnp.stack([c["v"] for c in kvs]), "index": index + l}
    hidden = self.final_norm(x)
    logits = self.logits(hidden) if return_logits else None
    return TransformerOutput(logits, hidden, new_cache, tapped)
