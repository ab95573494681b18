"""Hugging Face Llama-architecture checkpoints (config.json + *.safetensors in a local
directory) -> catrans trunk. The safetensors format is read directly (an 8-byte header
length, a JSON header, raw little-endian tensors), so no extra dependency is needed; bf16
goes through ml_dtypes (installed with JAX). HF q/k weights are already rotate-half."""
import json
import pathlib
import struct

import numpy as np

from catrans.config import ModelConfig
from catrans.pretrained.gguf_loader import expected_shape, trunk_params_from_linear

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
           "I32": np.int32}

HF_NAMES = {"embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight",
            "unembed": "lm_head.weight", "q": "model.layers.{}.self_attn.q_proj.weight",
            "k": "model.layers.{}.self_attn.k_proj.weight",
            "v": "model.layers.{}.self_attn.v_proj.weight",
            "o": "model.layers.{}.self_attn.o_proj.weight",
            "gate": "model.layers.{}.mlp.gate_proj.weight",
            "up": "model.layers.{}.mlp.up_proj.weight",
            "down": "model.layers.{}.mlp.down_proj.weight",
            "attn_norm": "model.layers.{}.input_layernorm.weight",
            "mlp_norm": "model.layers.{}.post_attention_layernorm.weight"}


def _dtype(name):
  if name == "BF16":
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(_DTYPES[name]) if name in _DTYPES else None


def read_safetensors(path, shapes: dict[str, tuple] | None = None) -> dict[str, np.ndarray]:
  """Tensors of one .safetensors file as float32. The header is checked before any tensor is
  materialised: its length, each tensor's dtype, offsets inside the file, byte count equal to
  the shape's, and (when `shapes` maps names to expected shapes) the shapes themselves."""
  path = pathlib.Path(path)
  size = path.stat().st_size
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise ValueError(f"{path}: too short to be a safetensors file ({size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > min(size - 8, 100 << 20):
      raise ValueError(f"{path}: header length {n} exceeds the file ({size} bytes): "
                       "truncated or not a safetensors file")
    try:
      header = json.loads(f.read(n))
    except ValueError as e:
      raise ValueError(f"{path}: unreadable safetensors header ({e})") from e
  body = size - 8 - n
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dt = _dtype(info.get("dtype"))
    if dt is None:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
    start, end = info["data_offsets"]
    want = int(np.prod(info["shape"], dtype=np.int64)) * dt.itemsize
    if not 0 <= start <= end <= body or end - start != want:
      raise ValueError(f"{path}: tensor {name} offsets {start}..{end} do not hold shape "
                       f"{info['shape']} {info['dtype']} inside {body} data bytes (truncated?)")
    if shapes and name in shapes and tuple(info["shape"]) != tuple(shapes[name]):
      raise ValueError(f"{path}: tensor {name!r} has shape {tuple(info['shape'])}, but the "
                       f"config implies {tuple(shapes[name])}")
  data = (np.memmap(path, np.uint8, mode="r", offset=8 + n, shape=(body,)) if body
          else np.zeros(0, np.uint8))
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    arr = np.asarray(data[start:end]).view(_dtype(info["dtype"]))
    out[name] = arr.reshape(info["shape"]).astype(np.float32)
  return out


def write_safetensors(path, tensors: dict[str, np.ndarray]):
  """float32 tensors -> a .safetensors file (for tests and exports)."""
  header, offset, blobs = {}, 0, []
  for name, arr in tensors.items():
    b = np.ascontiguousarray(arr, np.float32).tobytes()
    header[name] = {"dtype": "F32", "shape": list(arr.shape),
                    "data_offsets": [offset, offset + len(b)]}
    offset += len(b)
    blobs.append(b)
  h = json.dumps(header).encode()
  pathlib.Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def config_from_hf(hf: dict, max_len: int | None = None, dtype="float32") -> ModelConfig:
  arch = (hf.get("architectures") or ["?"])[0]
  if hf.get("model_type") != "llama" and arch != "LlamaForCausalLM":
    raise ValueError(f"unsupported architecture {hf.get('model_type')!r} / {arch!r}; "
                     f"only Llama-architecture checkpoints are supported")
  if hf.get("rope_scaling"):
    raise ValueError(f"rope_scaling {hf['rope_scaling']} is not supported")
  heads = hf["num_attention_heads"]
  return ModelConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      num_layers=hf["num_hidden_layers"], num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads", heads),
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      mlp_dim=hf["intermediate_size"],
      max_len=max_len or hf.get("max_position_embeddings", 2048),
      rope_theta=float(hf.get("rope_theta", 10000.0)), norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), dtype=dtype)


def load_hf_llama(directory, *, max_len: int | None = 2048, dtype="float32"):
  """(ModelConfig, params) from a local HF Llama checkpoint directory."""
  directory = pathlib.Path(directory)
  cfg_path = directory / "config.json"
  if not cfg_path.exists():
    raise FileNotFoundError(f"{directory} has no config.json")
  cfg = config_from_hf(json.loads(cfg_path.read_text()), max_len, dtype)
  files = sorted(directory.glob("*.safetensors"))
  if not files:
    raise FileNotFoundError(f"{directory} has no *.safetensors files")
  shapes = {HF_NAMES[k].format(i): expected_shape(cfg, k)
            for k in HF_NAMES for i in range(cfg.num_layers)}
  tensors = {}
  for f in files:
    tensors.update(read_safetensors(f, shapes))

  def get(kind, layer):
    name = HF_NAMES[kind].format(layer)
    if name not in tensors:
      raise ValueError(f"checkpoint lacks tensor {name!r}")
    return tensors[name]
  return cfg, trunk_params_from_linear(cfg, get)
