"""The BPE tokenizer stored in a GGUF file (tokenizer.ggml.*), rebuilt with the Hugging Face
`tokenizers` library: GPT-2 style byte-level BPE from the vocabulary and merges, with the
digits split one by one (the 'smollm' / llama-bpe pre-tokenizers do this)."""


class GGUFTokenizer:
  """encode / decode / vocab_size / pad_id / bos_id / eos_id, plus chat_template."""

  def __init__(self, reader):
    try:
      from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    except ImportError as e:
      raise ImportError("GGUF tokenizers need the `tokenizers` package: "
                        "pip install 'catrans-seqmatch[pretrained]'") from e
    model = reader.fields["tokenizer.ggml.model"].contents()
    if model != "gpt2":
      raise ValueError(f"unsupported GGUF tokenizer model {model!r} (only byte-level BPE "
                       f"'gpt2' is supported)")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ", 1)) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    bpe.decoder = decoders.ByteLevel()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    special = [t for t, ty in zip(tokens, types) if ty == 3]   # 3 = control tokens
    bpe.add_special_tokens(special)
    self._tok = bpe
    self.vocab_size = len(tokens)
    get = lambda k, d: (reader.fields[k].contents() if k in reader.fields else d)
    self.bos_id = int(get("tokenizer.ggml.bos_token_id", 1))
    self.eos_id = int(get("tokenizer.ggml.eos_token_id", 2))
    self.pad_id = int(get("tokenizer.ggml.padding_token_id", self.eos_id))
    self.chat_template = get("tokenizer.chat_template", None)

  @classmethod
  def from_file(cls, path):
    import gguf
    return cls(gguf.GGUFReader(str(path)))

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def chat(self, user_message: str) -> str:
    """The file's chat template for one user turn, rendered for generation (ChatML)."""
    return (f"<|im_start|>user\n{user_message}<|im_end|>\n<|im_start|>assistant\n")


class HFTokenizer:
  """A Hugging Face directory's tokenizer.json (+ tokenizer_config.json for special ids)."""

  def __init__(self, directory):
    import json
    import pathlib
    from tokenizers import Tokenizer
    directory = pathlib.Path(directory)
    if not (directory / "tokenizer.json").exists():
      raise FileNotFoundError(f"{directory} has no tokenizer.json")
    self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
    conf = directory / "tokenizer_config.json"
    conf = json.loads(conf.read_text()) if conf.exists() else {}

    def special(key, default):
      tok = conf.get(key)
      tok = tok.get("content") if isinstance(tok, dict) else tok
      i = self._tok.token_to_id(tok) if tok else None
      return default if i is None else int(i)
    self.bos_id = special("bos_token", 1)
    self.eos_id = special("eos_token", 2)
    self.pad_id = special("pad_token", self.eos_id)
    self.chat_template = conf.get("chat_template")

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)
