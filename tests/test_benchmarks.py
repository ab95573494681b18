"""Smoke runs of the benchmark scripts with tiny settings: they run end to end and what they
time is the real computation (no speed is asserted here; the scripts print ratios)."""
import numpy as np
import pytest

from catrans.inference import estimate
from experiments.bench import cat as bench_cat, decode as bench_decode, seqmatch as bench_seqmatch
from experiments.bench import throughput as bench_throughput, timing
from experiments.data.tokenizers import ByteTokenizer
from experiments.tasks import bits

TINY_CAT = ("--length 1 --steps 2 --num_train 64 --num_sequences 4 --mc_samples 4 --est_rounds 1 "
            "--cat_repeats 2 --d_model 16 --num_layers 1 --num_heads 2 --seq_len 8 --batch 2 "
            "--decode_batch 2 --decode_repeats 2 --prompt_len 2 --new_tokens 3 --rounds 1 "
            "--params factorized").split()


def test_bench_cat_times_the_library_estimates_and_finite_steps():
  out = bench_cat.main(TINY_CAT)
  est = out["estimation"]
  # The CAT column is catrans.inference.estimate's q, for every prefix t = 0..n.
  again = estimate(est["model"], est["params"], est["tokens"], attribute="label", target=1).q
  np.testing.assert_allclose(est["cat_q"], np.asarray(again), rtol=1e-6, atol=1e-6)
  assert est["cat_q"].shape == est["mc_q"].shape == est["exact"].shape == (4, 2)
  # Monte Carlo averages 0/1 oracle scores; with every bit given (t = n) it is exact.
  assert np.all((est["mc_q"] >= 0) & (est["mc_q"] <= 1))
  np.testing.assert_array_equal(est["mc_q"][:, -1], est["exact"][:, -1])
  ones = (est["tokens"][:, 1:] == ByteTokenizer().encode("1")[0]).sum(1)
  np.testing.assert_array_equal(est["exact"][:, -1], ones >= bits.majority_threshold(1))
  assert np.isfinite(est["mc_mae"]) and np.isfinite(est["cat_mae"]) and est["speedup"] > 0
  (step,) = out["train_step"]
  assert np.isfinite(step["mle_loss"]) and np.isfinite(step["cat_loss"])
  assert step["cat_loss"] > step["mle_loss"] > 0   # CE + lambda * attribute loss
  (dec,) = out["decoding"]
  assert dec["plain_tok_s"] > 0 and dec["steer_tok_s"] > 0


def test_bench_seqmatch_steps_are_finite_and_amortising_helps():
  out = bench_seqmatch.main("--d_model 16 --num_layers 1 --num_heads 2 --mlp_dim 32 --batch 2 "
                            "--rollouts 2 --rounds 1 --every 1,8".split())
  assert set(out["losses"]) == {"MLE", "SM, no rollouts", "SM, rollouts in step",
                                "SM, stored rollouts"}
  assert all(np.isfinite(v) for v in out["losses"].values())
  (m1, r1), (m8, r8) = out["amortised"]
  assert (m1, m8) == (1, 8) and r8 < r1
  assert all(t > 0 for t in out["forward"].values())


def test_timing_alternates_rounds_and_measures_the_peak_in_them():
  calls = []
  thunk = lambda name: (lambda: calls.append(name) or np.zeros(1))
  t = timing.compare({"a": thunk("a"), "b": thunk("b")}, rounds=3, warmup=1, peak_size=32)
  assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]   # warm-up, then rotated rounds
  for name in ("a", "b", timing.PEAK):
    e = t[name]
    assert len(e["all"]) == 3 and e["min"] <= e["median"] <= e["max"]
  assert t[timing.PEAK]["flops"] == 2 * 32 ** 3 / t[timing.PEAK]["min"]
  # A thunk repeated 4 times (each call waited for), read per call.
  calls.clear()
  timing.repeated(thunk("c"), 4)()
  assert calls == ["c"] * 4
  per = timing.per_call(t["a"], 4)
  assert per["median"] == t["a"]["median"] / 4 and per["all"] == [x / 4 for x in t["a"]["all"]]
  with pytest.raises(ValueError, match="calls=0"):
    timing.per_call(t["a"], 0)
  assert "cores" in timing.machine()


def test_bench_throughput_times_the_trainer_step_beside_plain_linen():
  out = bench_throughput.main("--d_model 16 --num_layers 1 --num_heads 2 --seq_len 8 --batch 2 "
                              "--rounds 1 --peak_size 64".split())
  rows = out["rows"]
  assert set(rows) == {"plain linen", "catrans trunk", "trainer"}
  assert all(r["tokens_s"] > 0 and 0 < r["mfu"] for r in rows.values())
  # One formula: the trainer runs the trunk, so their FLOPs per token are the same number.
  assert rows["trainer"]["flops_per_token"] == rows["catrans trunk"]["flops_per_token"] > 0
  assert out["peak_flops"] > 0


def test_bench_decode_compares_every_greedy_token():
  (r,) = bench_decode.main("--tiny --batch_sizes 2 --prompt_len 3 --new_tokens 5 "
                           "--prefill_len 8 --rounds 1".split())
  assert r["greedy_agree"] and r["agree_frac"] == 1.0 and r["first_disagreement"] is None
  assert r["cached_tok_s"] > 0 and r["recompute_tok_s"] > 0 and r["prefill_tok_s"] > 0
