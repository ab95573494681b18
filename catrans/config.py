"""Model hyper-parameters: one frozen dataclass, hashable so it can be a static jit arg."""
import dataclasses

import jax.numpy as jnp

from catrans import attention

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64,
           "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 4
  head_dim: int | None = None        # default d_model // num_heads
  mlp_dim: int = 1024
  max_len: int = 512                  # largest position / cache length used
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  dtype: str = "float32"              # compute dtype of activations and matmuls
  param_dtype: str = "float32"
  remat: str = "none"                 # none | full | dots (save matmul outputs only)
  scan_layers: bool = False
  vocab_pad_multiple: int = 128       # embedding rows are padded so 'vocab' shards evenly
  embed_scale: bool = False           # multiply embeddings by sqrt(d_model) (Gemma style)
  # Factored input embeddings for structured tokens (e.g. an RL observation = phase, row,
  # col): one tuple per feature, of length vocab_size, holding each token's value of that
  # feature (-1: none). A token's input embedding is its own row plus one learnt row per
  # feature value, so tokens that share a value share what is learnt about it.
  token_features: tuple = ()
  # A learnt embedding of the absolute position added to the input (as Decision Transformer's
  # timestep embedding), on top of rotary attention: for tasks where the time since the
  # start, not only the distance between tokens, decides the answer (a phase timer).
  learned_positions: bool = False
  # Attention core (catrans.attention): xla (full scores, the reference) | chunked
  # (blockwise online softmax, O(L x block) memory) | splash | flash (TPU) | cudnn (GPU) |
  # auto (the fused kernel where it applies, else xla, or chunked for long keys).
  attention_impl: str = "auto"
  attention_block: int = 512          # chunked: query and key block size

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.head_dim is None and self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by num_heads="
                       f"{self.num_heads}; set head_dim explicitly")
    if (self.head_dim or self.d_model // self.num_heads) % 2:
      raise ValueError("head_dim must be even for rotary embeddings")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat must be none|full|dots, got {self.remat!r}")
    attention.check_impl(self.attention_impl)
    if not isinstance(self.attention_block, int) or self.attention_block < 1:
      raise ValueError(f"attention_block must be an integer >= 1, got {self.attention_block!r}")
    feats = tuple(tuple(int(v) for v in f) for f in self.token_features)
    for i, f in enumerate(feats):
      if len(f) != self.vocab_size or min(f) < -1:
        raise ValueError(f"token_features[{i}] must hold one value >= -1 per token "
                         f"(vocab_size={self.vocab_size}); got {len(f)} values, min {min(f)}")
    object.__setattr__(self, "token_features", feats)
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}; choose from {sorted(_DTYPES)}")

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return _DTYPES[self.param_dtype]

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_dict(cls, d) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
    return cls(**dict(d))

  def num_params(self, include_embeddings: bool = True) -> int:
    d, h, kv = self.d_model, self.dim_per_head, self.num_kv_heads
    attn = d * self.num_heads * h * 2 + d * kv * h * 2
    mlp = 3 * d * self.mlp_dim
    per_layer = attn + mlp + 2 * d
    emb = self.padded_vocab_size * d * (1 if self.tie_embeddings else 2)
    emb += sum(max(f) + 1 for f in self.token_features) * d
    emb += self.max_len * d if self.learned_positions else 0
    return self.num_layers * per_layer + d + (emb if include_embeddings else 0)

  def flops_per_token(self, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), matmuls only.

    Counts the dense weights (2 FLOPs per multiply-add), the output projection over the
    real vocabulary and causal attention scores/values (half of the full L x L)."""
    dense = 2 * self.num_params(include_embeddings=False)
    logits = 2 * self.d_model * self.vocab_size
    attn = 2 * 2 * self.num_layers * self.num_heads * self.dim_per_head * seq_len / 2
    return 3.0 * (dense + logits + attn)
