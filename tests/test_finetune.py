"""Starting a run from a pretrained model (config.init_from): the trunk arrives exactly as the
file holds it, for the MLE, CAT and SequenceMatch objectives; SequenceMatch's <bkspc> row is
the mean of the pretrained rows; a tokenizer that does not match the file is refused."""
import jax
import numpy as np
import pytest

from catrans import ModelConfig
from catrans.pretrained import load_gguf, to_scanned
from experiments.configs import arithmetic_seqmatch, bits_cat, default
from experiments.trainer import Trainer
from tests.test_pretrained import _linear_weights, _random_trunk, _write_gguf

BYTE_VOCAB = 259     # the byte tokenizer of the arithmetic and bits tasks
FILE_CFG = ModelConfig(vocab_size=BYTE_VOCAB, d_model=32, num_layers=2, num_heads=4,
                       num_kv_heads=2, mlp_dim=48, max_len=64, rope_theta=5000.0)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("pre") / "tiny.gguf"
  _write_gguf(path, _linear_weights(FILE_CFG, _random_trunk(FILE_CFG)), cfg=FILE_CFG)
  return str(path)


def _init(config, path, tmp_path):
  config.init_from = path
  config.model.max_len = 64
  t = Trainer(config, str(tmp_path), progress=False)
  return t, jax.device_get(t.init_state().params)


def _assert_same(a, b):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  assert len(flat_a) == len(flat_b)
  for k, v in flat_a:
    np.testing.assert_array_equal(np.asarray(v), np.asarray(flat_b[k]), err_msg=str(k))


def test_mle_run_starts_from_the_file(gguf_file, tmp_path):
  t, params = _init(default.get_config("tiny"), gguf_file, tmp_path)
  assert (t.objective.model_config.d_model, t.objective.model_config.num_layers) == (32, 2)
  _assert_same(params, load_gguf(gguf_file, max_len=64)[1])


def test_cat_run_starts_its_trunk_from_the_file(gguf_file, tmp_path):
  # In the scanned layout (as configs/smollm2_finetune.py runs it): the file's layers stacked.
  config = bits_cat.get_config("tiny")
  config.model.scan_layers = True
  _, params = _init(config, gguf_file, tmp_path)
  _assert_same(params["trunk"], to_scanned(load_gguf(gguf_file, max_len=64)[1], 2))
  assert set(params) - {"trunk"}, "the attribute branch is fresh, beside the trunk"


def test_seqmatch_run_adds_a_mean_backspace_row(gguf_file, tmp_path):
  t, params = _init(arithmetic_seqmatch.get_config("sm,tiny"), gguf_file, tmp_path)
  assert t.objective.model_config.vocab_size == BYTE_VOCAB + 1
  table = params["embed"]["embedding"]
  file_table = load_gguf(gguf_file, max_len=64)[1]["embed"]["embedding"][:BYTE_VOCAB]
  np.testing.assert_array_equal(table[:BYTE_VOCAB], file_table)
  np.testing.assert_allclose(table[BYTE_VOCAB], file_table.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(params["layer_1"]["mlp"]["down"],
                                load_gguf(gguf_file, max_len=64)[1]["layer_1"]["mlp"]["down"])


def test_a_tokenizer_that_does_not_match_the_file_is_refused(tmp_path):
  cfg = FILE_CFG.replace(vocab_size=300)
  path = tmp_path / "other.gguf"
  _write_gguf(path, _linear_weights(cfg, _random_trunk(cfg)), cfg=cfg)
  with pytest.raises(ValueError, match="300-token vocabulary but the task's tokenizer has 259"):
    _init(default.get_config("tiny"), str(path), tmp_path / "run")


def test_unknown_pretrained_spec(tmp_path):
  with pytest.raises(FileNotFoundError, match="'no-such-model'"):
    _init(default.get_config("tiny"), "no-such-model", tmp_path)
