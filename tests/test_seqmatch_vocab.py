"""seqmatch.vocab: tokenizer wrapper, growing a pretrained model's vocabulary by <bkspc>."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import catrans
from experiments.data.tokenizers import ByteTokenizer
from seqmatch import vocab


def test_tokenizer_wrapper():
  tok = vocab.BackspaceTokenizer(ByteTokenizer())
  bk = tok.backspace_id
  assert bk == ByteTokenizer.vocab_size and tok.vocab_size == bk + 1
  assert tok.eos_id == ByteTokenizer.eos_id
  ids = tok.encode("cat") + [bk, bk] + tok.encode("ow")
  assert tok.decode(ids) == "cow"
  assert tok.decode(ids, mode="show") == "cat<bkspc><bkspc>ow"
  assert tok.decode([bk] + tok.encode("a")) == "a"     # nothing to delete: ignored
  with pytest.raises(ValueError, match="neither a base token"):
    tok.decode([bk + 1])
  with pytest.raises(ValueError, match="decode mode"):
    tok.decode(ids, mode="raw")
  with pytest.raises(ValueError, match="collides with the base vocabulary"):
    vocab.BackspaceVocab(10, backspace_id=3)


def test_extend_rows_pure_and_padded():
  table = jnp.arange(12.0).reshape(4, 3)
  grown = vocab.extend_rows(table, 4)
  assert grown.shape == (5, 3)
  np.testing.assert_array_equal(grown[:4], table)
  np.testing.assert_allclose(grown[4], table.mean(0))
  inplace = vocab.extend_rows(table, 2, init="zeros")        # rows 2..3 are padding
  assert inplace.shape == (4, 3)
  np.testing.assert_array_equal(inplace[2], 0.0)
  np.testing.assert_array_equal(np.asarray(inplace)[[0, 1, 3]], np.asarray(table)[[0, 1, 3]])
  head = vocab.extend_rows(table.T, 4, axis=1)                # logits head [D, V]
  np.testing.assert_allclose(head[:, 4], table.mean(0))
  with pytest.raises(ValueError, match="num_real_rows must be in"):
    vocab.extend_rows(table, 5)
  with pytest.raises(ValueError, match="needs rng"):
    vocab.extend_rows(table, 4, init="normal")


@pytest.mark.parametrize("tie", [True, False])
def test_pretrained_model_grows_a_backspace_action(tie):
  """Old-token logits are unchanged; the <bkspc> logit is h . mean embedding (tied) or the
  mean head column (untied), i.e. the mean of the old logits."""
  cfg = catrans.ModelConfig(vocab_size=13, d_model=32, num_layers=1, num_heads=4,
                            num_kv_heads=2, mlp_dim=64, max_len=16, vocab_pad_multiple=8,
                            tie_embeddings=tie)
  model = catrans.Transformer(cfg)
  toks = jnp.array([[1, 5, 7, 2, 9]])
  params = nn.unbox(model.init(jax.random.key(0), toks))
  old = model.apply(params, toks).logits
  p = jax.tree_util.tree_map(lambda x: x, params)
  emb = p["params"]["embed"]["embedding"]
  p["params"]["embed"]["embedding"] = vocab.extend_rows(emb, 13)
  if not tie:
    p["params"]["unembed"] = vocab.extend_rows(p["params"]["unembed"], 13, axis=1)
  new = catrans.Transformer(cfg.replace(vocab_size=14)).apply(p, toks).logits
  assert new.shape == (1, 5, 14)
  np.testing.assert_allclose(new[..., :13], old, atol=1e-6)
  np.testing.assert_allclose(new[..., 13], old.mean(-1), atol=1e-5)


def test_seqmatch_never_imports_catrans_or_experiments():
  """Import rule: run in a fresh interpreter so other tests' imports do not mask a leak."""
  import subprocess
  import sys
  code = ("import sys, seqmatch; bad = [m for m in sys.modules if m.split('.')[0] in "
          "('catrans', 'experiments')]; assert not bad, bad; "
          "assert all(hasattr(seqmatch, n) for n in seqmatch.__all__)")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=__file__.rsplit("/tests/", 1)[0])
