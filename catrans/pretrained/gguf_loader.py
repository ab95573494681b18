"""GGUF (llama.cpp) -> catrans trunk: config from the llama.* metadata, tensors dequantised
with the `gguf` package's numpy code.

Two layout facts matter. GGUF lists tensor dims fastest-first, so a Linear weight arrives as
numpy [out, in]. And llama.cpp's converter permutes the rows of attn_q / attn_k from the
Hugging Face rotate-half layout (feature pairs (i, i + H/2)) to interleaved pairs (2i, 2i+1);
the catrans trunk rotates (i, i + H/2) like Hugging Face, so the permutation is undone."""
import numpy as np

from catrans.config import ModelConfig

SUPPORTED_ARCHITECTURES = ("llama",)


def _field(reader, key, default=None):
  f = reader.fields.get(key)
  if f is None:
    if default is not None:
      return default
    raise ValueError(f"GGUF file has no {key!r} metadata")
  return f.contents()


def _f32(x) -> float:
  # GGUF stores float32: 1e-5 comes back as 9.9999997e-06. Its shortest float32 decimal
  # is the value the model was written with.
  return float(str(np.float32(x)))


def read_gguf_config(reader, *, max_len: int | None = None, dtype="float32") -> ModelConfig:
  arch = _field(reader, "general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"unsupported GGUF architecture {arch!r}; supported: "
                     f"{SUPPORTED_ARCHITECTURES}")
  d = int(_field(reader, "llama.embedding_length"))
  heads = int(_field(reader, "llama.attention.head_count"))
  names = {t.name for t in reader.tensors}
  if "llama.vocab_size" in reader.fields:
    vocab = int(_field(reader, "llama.vocab_size"))
  elif "tokenizer.ggml.tokens" in reader.fields:
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
  else:
    raise ValueError("GGUF file has neither llama.vocab_size nor tokenizer.ggml.tokens")
  return ModelConfig(
      vocab_size=vocab, d_model=d, num_layers=int(_field(reader, "llama.block_count")),
      num_heads=heads, num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)),
      head_dim=int(_field(reader, "llama.rope.dimension_count", d // heads)),
      mlp_dim=int(_field(reader, "llama.feed_forward_length")),
      max_len=int(max_len or _field(reader, "llama.context_length")),
      rope_theta=_f32(_field(reader, "llama.rope.freq_base", 10000.0)),
      norm_eps=_f32(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings="output.weight" not in names, dtype=dtype, param_dtype="float32")


def unpermute_rotary(w_out_in: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation: interleaved pairs -> rotate-half pairs."""
  out, inp = w_out_in.shape
  h = out // num_heads
  return w_out_in.reshape(num_heads, h // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def permute_rotary(w_out_in: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's permutation (rotate-half -> interleaved), for writing GGUF files."""
  out, inp = w_out_in.shape
  h = out // num_heads
  return w_out_in.reshape(num_heads, 2, h // 2, inp).swapaxes(1, 2).reshape(out, inp)


def _dequantize(tensor) -> np.ndarray:
  import gguf
  try:
    arr = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as e:
    raise ValueError(f"tensor {tensor.name}: unsupported quantisation "
                     f"{tensor.tensor_type.name}") from e
  shape = tuple(int(x) for x in reversed(tensor.shape.tolist()))
  return np.asarray(arr, np.float32).reshape(shape)


def expected_shape(cfg: ModelConfig, kind: str) -> tuple[int, ...]:
  """Shape of a Linear weight ([out, in]) or norm scale the trunk needs, so loaders can check
  a file's declared shapes before reading (or allocating for) any tensor data."""
  d, h = cfg.d_model, cfg.dim_per_head
  return {"embed": (cfg.vocab_size, d), "unembed": (cfg.vocab_size, d), "final_norm": (d,),
          "attn_norm": (d,), "mlp_norm": (d,), "q": (cfg.num_heads * h, d),
          "k": (cfg.num_kv_heads * h, d), "v": (cfg.num_kv_heads * h, d),
          "o": (d, cfg.num_heads * h), "gate": (cfg.mlp_dim, d), "up": (cfg.mlp_dim, d),
          "down": (d, cfg.mlp_dim)}[kind]


def check_shape(cfg: ModelConfig, kind: str, name: str, shape) -> None:
  want, shape = expected_shape(cfg, kind), tuple(int(x) for x in shape)
  if shape != want:
    raise ValueError(f"tensor {name!r} has shape {shape}, but the model's metadata "
                     f"implies {want}")


def trunk_params_from_linear(cfg: ModelConfig, get) -> dict:
  """The trunk's param pytree from Linear weights in [out, in] layout (HF / GGUF names are
  mapped by the caller's `get(kind, layer)`). kinds: embed, final_norm, unembed, q, k, v, o,
  gate, up, down, attn_norm, mlp_norm. q and k must already be in rotate-half layout."""
  n, kv, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head, cfg.d_model
  emb = get("embed", None)
  table = np.zeros((cfg.padded_vocab_size, d), np.float32)
  table[:emb.shape[0]] = emb
  params = {"embed": {"embedding": table}, "final_norm": {"scale": get("final_norm", None)}}
  if not cfg.tie_embeddings:
    un = np.zeros((d, cfg.padded_vocab_size), np.float32)
    un[:, :emb.shape[0]] = get("unembed", None).T
    params["unembed"] = un
  for i in range(cfg.num_layers):
    params[f"layer_{i}"] = {
        "attn": {"q": get("q", i).T.reshape(d, n, h), "k": get("k", i).T.reshape(d, kv, h),
                 "v": get("v", i).T.reshape(d, kv, h), "o": get("o", i).T.reshape(n, h, d)},
        "attn_norm": {"scale": get("attn_norm", i)},
        "mlp": {"gate": get("gate", i).T, "up": get("up", i).T, "down": get("down", i).T},
        "mlp_norm": {"scale": get("mlp_norm", i)}}
  return params


GGUF_NAMES = {"embed": "token_embd.weight", "final_norm": "output_norm.weight",
              "unembed": "output.weight", "q": "blk.{}.attn_q.weight",
              "k": "blk.{}.attn_k.weight", "v": "blk.{}.attn_v.weight",
              "o": "blk.{}.attn_output.weight", "gate": "blk.{}.ffn_gate.weight",
              "up": "blk.{}.ffn_up.weight", "down": "blk.{}.ffn_down.weight",
              "attn_norm": "blk.{}.attn_norm.weight", "mlp_norm": "blk.{}.ffn_norm.weight"}


def load_gguf(path, *, max_len: int | None = 2048, dtype="float32"):
  """(ModelConfig, params) of the catrans trunk from a llama-architecture GGUF file.

  Params use the trunk's unrolled layout (scan_layers=False). max_len caps the context used
  (the file's context_length by default when None)."""
  import gguf
  reader = gguf.GGUFReader(str(path))
  cfg = read_gguf_config(reader, max_len=max_len, dtype=dtype)
  tensors = {t.name: t for t in reader.tensors}

  def get(kind, layer):
    name = GGUF_NAMES[kind].format(layer)
    if name not in tensors:
      raise ValueError(f"GGUF file lacks tensor {name!r}")
    # Declared shape first: a corrupt or mismatched file fails before any dequantisation.
    check_shape(cfg, kind, name, reversed(tensors[name].shape.tolist()))
    w = _dequantize(tensors[name])
    if kind == "q":
      w = unpermute_rotary(w, cfg.num_heads)
    elif kind == "k":
      w = unpermute_rotary(w, cfg.num_kv_heads)
    return w
  return cfg, trunk_params_from_linear(cfg, get)
