"""Tokenizer round trips, special ids and id range checks."""
import numpy as np
import pytest

from experiments.data.tokenizers import (ByteTokenizer, SentencePieceTokenizer,
                                         Tokenizer, check_token_ids)


def test_byte_round_trip_and_specials():
  tok = ByteTokenizer()
  text = 'In base 7, what is -1403 + 265? -1105 — héllo 日本'
  ids = tok.encode(text)
  assert min(ids) >= 3 and max(ids) < tok.vocab_size == 259
  assert tok.encode('A') == [ord('A') + 3]
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id]) == text
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert isinstance(tok, Tokenizer)


def test_byte_decode_replaces_broken_utf8():
  tok = ByteTokenizer()
  assert tok.decode(tok.encode('é')[:1]) == '\ufffd'


@pytest.mark.parametrize('bad', [b'bytes', 3, None, ['a']])
def test_encode_rejects_non_str(bad):
  with pytest.raises(ValueError, match='expects a str'):
    ByteTokenizer().encode(bad)


def test_check_token_ids_names_id_and_position():
  check_token_ids(np.array([[0, 5], [258, 1]]), 259)
  with pytest.raises(ValueError, match=r'token id 259 at position \(1, 0\)'):
    check_token_ids(np.array([[0, 5], [259, 1]]), 259)
  with pytest.raises(ValueError, match=r'token id -1 at position \(2,\)'):
    check_token_ids([3, 4, -1], 259)


def test_sentencepiece_train_load_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  words = ['the', 'film', 'was', 'great', 'awful', 'plot', 'actor', 'boring']
  texts = [' '.join(rng.choice(words, 8)) for _ in range(500)]
  path = str(tmp_path / 'sp.model')
  trained = SentencePieceTokenizer.train(iter(texts), 300, path)
  loaded = SentencePieceTokenizer.load(path)
  assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (0, 1, 2)
  assert loaded.vocab_size == trained.vocab_size <= 300
  text = 'the great actor, zyx 日本'  # Unseen characters: byte fallback.
  ids = loaded.encode(text)
  assert 3 not in ids  # No unk.
  assert loaded.decode([1] + ids + [2]) == text
  check_token_ids(ids, loaded.vocab_size)
  with pytest.raises(ValueError):
    loaded.encode(b'text')
