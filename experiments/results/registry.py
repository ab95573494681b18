"""The README's Results rows: what to run for each, and how to read its figures.

A row is a `Row`: its commands (templates with {python}, {seed} and {workdir}: one fresh
workdir per seed), its seeds, its figures (each with a label, a format and the interval that
`runner --check` holds it to) and a parser that turns one seed's run (stdout, workdir) into
{figure: value}. The README cell is rendered from the row's JSON in data/ (render.py); the
hand-written text of rows not regenerated yet lives in notes.md. Adding a row: one `Row(...)`
in ROWS, reusing a parser of rows.py, and a `## id` section in notes.md if it keeps any text."""
import re

from experiments.results.rows import (Figure, Row, both, equal_perplexity, figures_line,
                                      json_file, regex, table_rows)


# --- the rows, in the README's order ---------------------------------------------------------

TRAIN = "{python} -m experiments.train --config=experiments/configs/default.py --workdir={workdir}"
# The head reads SmolLM2's state after block 20 of 30 (CATConfig.attr_layer): a logistic
# probe of each block's last-token state (3,200 reviews, 3 splits, smollm2_layer_probe) reads
# the label best at blocks 20-21 (0.822), the top block 0.794; on the top block this head
# reached 0.775 (README, SmolLM2 head), on block 20 0.808 (0.814 / 0.802 / 0.808).
FIT = ("{python} -m experiments.tools.fit_attribute --trunk=smollm2 "
       "--data=task:rotten_tomatoes:train --limit=3200 --max_len=48 --epochs=30 --batch_size=32 "
       "--branch=none --param=factorized --attr_layer=20 --learning_rate=1e-3 --name=fresh "
       "--class_names=rotten,fresh --out={workdir} --seed={seed}")
BENCH_WHY = "benchmark: rerun it on an otherwise idle machine"
# steer_sweep: each method's strengths, placed so their perplexities overlap (README, issue 25)
STEER_GAMMAS = {"weighted": "1,2,4,9,16", "director": "2,3,4,5,6", "fudge": "27,81,243,729"}
STEER_METHODS = ("weighted", "director", "fudge")


def _per_head_row(row_id, title, part, ratio_name, paper):
  """A bench/cat part that prints 'ratio <ratio_name>: full Ax, factorized Bx'."""
  line = "ratio " + re.escape(ratio_name) + ":"
  return Row(row_id, title, (f"{{python}} -m experiments.bench.cat --parts {part}",),
             regex(full=line + r" full ([\d.]+)x", factorized=line + r".*factorized ([\d.]+)x"),
             {"full": Figure("full", "{:.2f}x"), "factorized": Figure("factorized", "{:.2f}x")},
             "{full} (full), {factorized} (factorized)", seeds=(0,), expected_s=300,
             paper=paper, not_regenerated=BENCH_WHY)


MARKOV = ("{python} -m experiments.reports.markov_compare --root={workdir} --protocol=finetune "
          "--seeds={seed} --samples=8")
SEED_LINE = r"seed \d+ {}\s+invalid ([\d.]+)"
ARITH = r"seed \d+ {}\s+accuracy ([\d.]+)"
TEXT = {"data": "real text", "mle": "MLE", "bc": "MLE+backspace", "sm": "SM"}
TEXT_SMOL = dict(TEXT, pre="un-fine-tuned")

ROWS = [
    Row("main", "Main job (default)",
        (TRAIN + " --config.seed={seed} --config.train.progress=false",),
        regex(eval_loss=r"eval loss\s+([\d.]+)", unigram=r"unigram baseline ([\d.]+)",
              train_loss=r"train loss\s+([\d.]+)"),
        {"eval_loss": Figure("eval loss", "{:.3f}", 1.0, 1.3),
         "unigram": Figure("unigram", "{:.3f}", 2.19, 2.21),
         "train_loss": Figure("train loss", "{:.3f}")},
        "eval loss {eval_loss} nats/token vs unigram {unigram} (train loss {train_loss}; "
        "600 steps)", expected_s=180),
    Row("bits", "CAT estimates vs exact (bits, n=9, majority)",
        ("{python} -m experiments.reports.cat_exactness --seed={seed}",),
        figures_line("q_mae", "q_mae_worst", "sign_agreement", "credit_corr"),
        {"q_mae": Figure("q_t MAE", "{:.3f}", 0.0, 0.06),
         "q_mae_worst": Figure("worst position", "{:.3f}", 0.0, 0.12),
         "sign_agreement": Figure("credit sign agreement", "{:.3f}", 0.95, 1.0),
         "credit_corr": Figure("credit correlation", "{:.3f}", 0.9, 1.0)},
        "q_t MAE {q_mae} (worst position {q_mae_worst}; answering 0.5 scores about 0.35); "
        "credit sign agreement {sign_agreement}, correlation with the exact advantage "
        "{credit_corr}", expected_s=35),
    Row("keytodoor", "Key-to-Door win rate (10K random trajectories, 1000 episodes per seed)",
        ("{python} -m experiments.reports.keytodoor_compare --root={workdir} --seeds={seed}",),
        regex(cat=r"cat  seed \d+: win rate ([\d.]+)", bc=r"bc   seed \d+: win rate ([\d.]+)",
              pbc=r"pbc  seed \d+: win rate ([\d.]+)",
              dt=r"dt   seed \d+: win rate ([\d.]+)"),
        {"cat": Figure("CAT", "{:.3f}", 0.95, 1.0), "bc": Figure("BC"), "pbc": Figure("%BC"),
         "dt": Figure("DT")},
        "CAT (lam 10, 3000 steps, td_mix 0.7) {cat}, BC {bc}, %BC {pbc}, DT {dt}",
        expected_s=3 * 3600,
        paper="CAT 0.999, BC 0.016, %BC 0.951, DT 0.946",
        not_regenerated="slow: four trainings per seed, CAT's of 3000 steps, about 3 h per "
                        "seed on 2 cores"),
    Row("arithmetic", "Arithmetic accuracy (2-digit; 200 test questions, greedy with erased "
        "tokens banned)",
        ("{python} -m experiments.reports.arithmetic_compare --root={workdir} --protocol=finetune"
         " --seeds={seed} --methods=mle,sm,bc --noise=0.1,0.25 --sm_flags=reward_backspace=false,"
         "regularize_noise=false --sm_tag=nbnr",),
        regex(start=ARITH.format("start"), mle=ARITH.format("mle_ft"),
              sm_p01=ARITH.format("sm_nbnr_p0.1_ft"), sm_p025=ARITH.format("sm_nbnr_p0.25_ft"),
              bc_p01=ARITH.format("bc_p0.1_ft"), bc_p025=ARITH.format("bc_p0.25_ft")),
        {"start": Figure("start"), "mle": Figure("MLE"),
         "sm_p01": Figure("SequenceMatch p 0.1"), "sm_p025": Figure("SequenceMatch p 0.25"),
         "bc_p01": Figure("MLE+backspace p 0.1"), "bc_p025": Figure("MLE+backspace p 0.25")},
        "fine-tuning protocol: start {start}, MLE {mle}, SequenceMatch p 0.1 {sm_p01}, p 0.25 "
        "{sm_p025}, MLE+backspace p 0.1 {bc_p01}, p 0.25 {bc_p025}",
        expected_s=3600, paper="SM above MLE",
        not_regenerated="slow: six runs of 8-13 min per seed on 2 cores"),
    Row("markov", "Markov chain: sequences with an invalid transition",
        (MARKOV + " --methods=mle,bc,sm --alphas=1,10,100",
         MARKOV + " --methods=sm --alphas=10 --sm_flags=reward_backspace=false,"
         "regularize_noise=false --sm_tag=nbnr"),
        regex(mle=SEED_LINE.format("mle"), bc=SEED_LINE.format("bc"),
              sm_a1=SEED_LINE.format("sm_a1"), sm_a10=SEED_LINE.format("sm_a10"),
              sm_a100=SEED_LINE.format("sm_a100"), sm_a10_nbnr=SEED_LINE.format("sm_a10_nbnr")),
        {"mle": Figure("MLE"), "bc": Figure("MLE+backspace"),
         "sm_a1": Figure("SequenceMatch alpha 1"), "sm_a10": Figure("alpha 10"),
         "sm_a100": Figure("alpha 100"), "sm_a10_nbnr": Figure("alpha 10 nbnr", high=0.05)},
        "every method 300 steps from the same MLE run, 1600 samples per seed: MLE {mle}, "
        "MLE+backspace {bc}, SequenceMatch alpha 1 {sm_a1}, alpha 10 {sm_a10}, alpha 100 "
        "{sm_a100}; alpha 10 with `reward_backspace=false,regularize_noise=false` (second "
        "command) {sm_a10_nbnr}", expected_s=900, paper="SM fewer",
        not_regenerated="not rerun yet: 7 trainings of 1-2 min per seed on an idle 2-core CPU, "
                        "4-5x longer on the shared machine of this session"),
    Row("dyck", "Brackets (Dyck, 3 kinds, depth <= 8): sequences with an invalid bracket",
        (MARKOV.replace("--samples=8", "--samples=4") + " --task=dyck --methods=mle,bc,sm",
         MARKOV.replace("--samples=8", "--samples=4") + " --task=dyck --methods=sm "
         "--sm_flags=rollouts=0 --sm_tag=norollout"),
        regex(mle=SEED_LINE.format("mle"), bc=SEED_LINE.format("bc"),
              sm=SEED_LINE.format("sm"), sm_norollout=SEED_LINE.format("sm_norollout")),
        {"mle": Figure("MLE"), "bc": Figure("MLE+backspace"), "sm": Figure("SequenceMatch"),
         "sm_norollout": Figure("SequenceMatch without rollouts")},
        "MLE 600 steps, then every method 300 more, 800 samples per seed: MLE {mle}, "
        "MLE+backspace {bc}, SequenceMatch {sm}, without rollouts {sm_norollout}",
        expected_s=900, paper="SM fewer",
        not_regenerated="measured in one markov_compare run over seeds 0-2 on a loaded machine "
                        "(2.5-3 min per training), not yet through the runner"),
    Row("bench_cat_a", "CAT vs Monte Carlo N=64, time to estimate every prefix",
        ("{python} -m experiments.bench.cat --parts a",),
        regex(speedup=r"ratio Monte Carlo / CAT time[^:]*: ([\d,]+)x",
              cat_mae=r"(?m)^CAT one pass.*?([\d.]+)$"),
        {"speedup": Figure("Monte Carlo / CAT time", "{:,.0f}x"),
         "cat_mae": Figure("CAT MAE vs exact", "{:.3f}")},
        "{speedup} faster, CAT MAE {cat_mae}", seeds=(0,), expected_s=300,
        paper=">= 1000x at equal or lower error",
        not_regenerated=BENCH_WHY),
    Row("bench_cat_a64", "CAT vs Monte Carlo N=64 at 64 bits, time to estimate every prefix",
        ("{python} -m experiments.bench.cat --parts a --length 64 --num_sequences 64 "
         "--est_rounds 3 --steps 4000 --num_train 100000",),
        regex(speedup=r"ratio Monte Carlo / CAT time[^:]*: ([\d,]+)x",
              cat_mae=r"(?m)^CAT one pass.*?([\d.]+)$",
              mc_mae=r"(?m)^Monte Carlo N=\d+.*?([\d.]+)$"),
        {"speedup": Figure("Monte Carlo / CAT time", "{:,.0f}x"),
         "cat_mae": Figure("CAT MAE vs exact", "{:.3f}"),
         "mc_mae": Figure("Monte Carlo MAE vs exact", "{:.3f}")},
        "{speedup} faster, CAT MAE {cat_mae} vs Monte Carlo {mc_mae}", seeds=(0,),
        expected_s=1500, paper=">= 1000x at equal or lower error",
        not_regenerated=BENCH_WHY),
    _per_head_row("bench_cat_b", "CAT train step / MLE step", "b", "CAT / MLE step time",
                  "<= 1.10x"),
    _per_head_row("bench_cat_c", "Steered / plain decoding", "c",
                  "steered / plain decoding time", "<= 1.3x"),
    Row("bench_seqmatch", "SequenceMatch step / MLE step",
        ("{python} -m experiments.bench.seqmatch",),
        regex(rollouts=r"rollouts\s+in step ([\d.]+)x", one_pass=r"forward: ([\d.]+)x"),
        {"rollouts": Figure("with in-step rollouts", "{:.2f}x"),
         "one_pass": Figure("one-pass mask", "{:.3f}x")},
        "{rollouts} with in-step rollouts; one-pass mask {one_pass}", seeds=(0,),
        expected_s=300, paper="<= 2x; <= 1.1x",
        not_regenerated=BENCH_WHY),
    Row("bench_seqmatch_135m", "SequenceMatch step / MLE step, SmolLM2-135M + LoRA (scanned)",
        ("{python} -m experiments.bench.seqmatch --part=smollm2 --rounds=3",),
        regex(ratio=r"ratio SM / MLE step \(135M \+ LoRA[^:]*: ([\d.]+)x",
              mle=r"(?m)^MLE\s+([\d.]+)", sm=r"(?m)^SM\s+([\d.]+)"),
        {"ratio": Figure("SM / MLE step", "{:.2f}x", high=2.0),
         "mle": Figure("MLE + LoRA, s per step", "{:.1f} s"),
         "sm": Figure("SM + LoRA, s per step", "{:.1f} s")},
        "SM / MLE step {ratio}: {sm} vs {mle} per step (batch 8 x 32 tokens, LoRA rank 8, "
        "2 rollouts refreshed every 8 steps)", seeds=(0,), expected_s=600,
        paper="<= 2x (the issue's goal)", not_regenerated=BENCH_WHY),
    Row("bench_throughput", "Trainer throughput",
        ("{python} -m experiments.bench.throughput",),
        regex(trainer=r"ratio trainer / plain tokens/s: ([\d.]+)x",
              trunk=r"ratio catrans trunk / plain tokens/s: ([\d.]+)x",
              trainer_mfu=r"ratio trainer / plain tokens/s: [\d.]+x; MFU ([\d.]+)%",
              plain_mfu=r"ratio trainer / plain tokens/s: [\d.]+x; MFU [\d.]+% vs ([\d.]+)%"),
        {"trainer": Figure("trainer / plain linen tokens/s", "{:.2f}x"),
         "trunk": Figure("catrans trunk / plain linen", "{:.2f}x"),
         "trainer_mfu": Figure("trainer MFU %", "{:.1f}%"),
         "plain_mfu": Figure("plain MFU %", "{:.1f}%")},
        "tokens/s of the trainer step / a plain linen model {trainer} (catrans trunk alone "
        "{trunk}); model FLOP/s against the 2048^3 matmul probe of the same rounds: trainer "
        "{trainer_mfu}, plain {plain_mfu}", seeds=(0,), expected_s=300,
        not_regenerated=BENCH_WHY),
    Row("bench_long", "Long context, chunked vs xla attention (L=2048, d 256, 2 layers, f32)",
        ("{python} -m experiments.bench.throughput --part=long --seq_len=2048 --d_model=256 "
         "--num_layers=2 --num_heads=4 --batch=1",),
        regex(attn_mem=r"chunked vs xla: attention memory ([\d.]+)x less",
              step_mem=r"step memory ([\d.]+)x less", speed=r"(?m)less, tokens/s ([\d.]+)x\s*$"),
        {"attn_mem": Figure("attention memory, xla / chunked", "{:.1f}x", low=4.0),
         "step_mem": Figure("step memory", "{:.1f}x"),
         "speed": Figure("tokens/s, chunked / xla", "{:.2f}x", low=1.0)},
        "chunked uses {attn_mem} less attention memory (compiled temp bytes) and {step_mem} less "
        "step memory, at {speed} the tokens/s of xla", seeds=(0,), expected_s=60,
        paper=">= 4x less memory at >= 1x tokens/s (the issue's goal)",
        not_regenerated=BENCH_WHY),
    Row("smollm2_compare", "SmolLM2-135M + fitted CAT head vs the from-scratch reviews CAT (same "
        "300 test reviews, same prompts, same judge)",
        ("{python} -m experiments.reports.smollm2_compare --reviews=/work/runs/reviews "
         "--out={workdir} --limit=600",),
        json_file("report.json", **{f"est_{int(f * 100)}": ("estimation", str(f), "accuracy")
                                    for f in (0.25, 0.5, 0.75, 1.0)},
                  fit_accuracy="fit.heldout.accuracy"),
        {**{f"est_{q}": Figure(f"estimate accuracy at {q}%", "{:.2f}") for q in (25, 50, 75, 100)},
         "fit_accuracy": Figure("fitted head's held-out accuracy", "{:.2f}")},
        "estimate accuracy at 25/50/75/100%: {est_25} / {est_50} / {est_75} / {est_100} (fitted "
        "head's held-out accuracy {fit_accuracy}); steering rates not parsed yet", seeds=(0,),
        expected_s=1200,
        not_regenerated="needs the trained reviews runs (/work/runs/reviews, 25 min), then 20 min"),
    Row("bench_decode", "KV-cache vs fixed-shape recompute decoding, SmolLM2-135M, 256 new tokens",
        ("{python} -m experiments.bench.decode",),
        regex(batch1=r"batch\s+1: .*speedup\s+([\d.]+)x",
              batch16=r"batch\s+16: .*speedup\s+([\d.]+)x"),
        {"batch1": Figure("batch 1", "{:.1f}x"), "batch16": Figure("batch 16", "{:.1f}x")},
        "{batch1} (batch 1), {batch16} (batch 16)", seeds=(0,), expected_s=600, paper=">= 10x",
        not_regenerated="not re-measured with the alternated timing: every recompute step of 256 tokens at "
                        "batch 1 and 16 is timed, about 40 min per run on 2 cores; this row held when rerun earlier"),
    Row("text", "SequenceMatch on text (Shakespeare bytes, 0.45M-parameter model; MLE 2000 steps, "
        "then BC and SM fine-tuned 300 steps from it; 64 test prompts x 2 samples, 96 actions)",
        ("{python} -m experiments.reports.text_seqmatch_report --root={workdir}",),
        json_file("report.json", **{f"ppl_{m}": ("methods", m, "ppl_ref") for m in TEXT},
                  **{f"mauve_{m}": ("methods", m, "mauve") for m in list(TEXT)[1:]}),
        {**{f"ppl_{m}": Figure(f"perplexity {n}", "{:.2f}") for m, n in TEXT.items()},
         **{f"mauve_{m}": Figure(f"MAUVE {n}", "{:.2f}") for m, n in list(TEXT.items())[1:]}},
        "perplexity under the reference LM: real text {ppl_data}, MLE {ppl_mle}, MLE+backspace "
        "{ppl_bc}, SM {ppl_sm}; MAUVE MLE {mauve_mle}, MLE+backspace {mauve_bc}, SM {mauve_sm}",
        seeds=(0,), expected_s=3600, paper="MAUVE SM 0.91 vs MLE 0.85 (openwebtext, Llama2-7b)",
        not_regenerated="slow: four trainings, about an hour on 2 cores"),
    Row("text_smollm2", "SequenceMatch on text, pretrained: SmolLM2-135M + LoRA (rank 8) on "
        "Rotten Tomatoes; MLE, MLE+backspace and SM 16 steps each of 8 x 32 tokens from the same "
        "trunk; 96 held-out reviews, 8-token prompts, 20 actions; MAUVE on frozen SmolLM2 features",
        ("{python} -m experiments.reports.text_seqmatch_smollm2 --root={workdir} --seeds={seed}",),
        json_file("report.json", **{f"mauve_{m}": ("methods", m, "mauve", "mean")
                                    for m in ("mle", "bc", "sm", "pre")},
                  **{f"ppl_{m}": ("methods", m, "ppl_ref", "mean") for m in TEXT_SMOL},
                  bkspc_sm=("methods", "sm", "backspace_rate", "mean")),
        {**{f"mauve_{m}": Figure(f"MAUVE {n}") for m, n in TEXT_SMOL.items() if m != "data"},
         **{f"ppl_{m}": Figure(f"perplexity {n}", "{:.1f}") for m, n in TEXT_SMOL.items()},
         "bkspc_sm": Figure("SM backspace rate")},
        "MAUVE against the real continuations: MLE {mauve_mle}, MLE+backspace {mauve_bc}, SM "
        "{mauve_sm}, un-fine-tuned {mauve_pre}; perplexity under the frozen SmolLM2: real "
        "{ppl_data}, MLE {ppl_mle}, MLE+backspace {ppl_bc}, SM {ppl_sm}, un-fine-tuned "
        "{ppl_pre}; SM backspace rate {bkspc_sm}", expected_s=900,
        paper="MAUVE SM 0.91 vs MLE 0.85 (openwebtext, Llama2-7b)",
        not_regenerated="not run through the runner: the three seeds ran in one invocation "
                        "(--seeds=0,1,2) on the shared machine, 7-20 min per seed"),
    Row("fit", "Fit a sentiment head on frozen SmolLM2-135M, read after block 20 of 30 (3,200 "
        "reviews, 48 tokens, up to 30 epochs, the epoch picked on a 10% validation split)",
        (FIT,),
        json_file("fit.json", accuracy="metrics.heldout.accuracy", ece="metrics.heldout.ece",
                  log_loss="metrics.heldout.log_loss",
                  log_loss_prior="metrics.heldout.log_loss_prior",
                  beats_prior="metrics.heldout.beats_prior", best_epoch="metrics.best_epoch",
                  speedup="timing.speedup_per_epoch"),
        # Held per seed to 0.78: one 640-review split has a standard error of about 0.016, and
        # the 0.80 is met by the mean (0.811 over seeds 0-2; seed 1 read 0.794).
        {"accuracy": Figure("held-out accuracy", "{:.3f}", 0.78, 1.0),
         "ece": Figure("ECE", "{:.3f}", 0.0, 0.10),
         "log_loss": Figure("log loss"), "log_loss_prior": Figure("constant prior's log loss"),
         "beats_prior": Figure("beats the prior", "{:.0f}", per_seed=True),
         "best_epoch": Figure("chosen epoch", "{:.0f}", per_seed=True),
         "speedup": Figure("cached / trunk epoch speed-up", "{:.1f}x")},
        "--seed picks the 3,200 texts and the split (640 held out): held-out accuracy {accuracy}, "
        "ECE {ece}, log loss {log_loss} against the constant prior's {log_loss_prior}; per "
        "seed, the head beats the prior (1) or the CLI reports `failed` and exits 2 (0): "
        "{beats_prior}, at the epoch the validation loss chose: {best_epoch}; cached epochs "
        "{speedup} faster than re-running the trunk", expected_s=900, ok_returncodes=(0, 2),
        paper="issue 25: >= 0.80 on a SmolLM2-135M trunk",
        not_regenerated="slow: a trunk pass over 3,200 reviews and one timing epoch per "
                        "seed, about 4 min a seed on an idle 2-core CPU"),
    Row("steer_sweep", "Steering on reviews at equal perplexity: CAT vs Director vs FUDGE "
        "(96 generations per cell and sampling seed, 3 sampling seeds, top 20)",
        ("{python} -m experiments.reports.steer_sweep --workdir=/work/runs/reviews --top_k=20 "
         "--seeds=0,1,2 --methods=weighted,director,fudge --cat_gammas=" + STEER_GAMMAS["weighted"]
         + " --director_gammas=" + STEER_GAMMAS["director"] + " --fudge_gammas="
         + STEER_GAMMAS["fudge"] + " --out={workdir}",),
        both(equal_perplexity("sweep.json", ("judge", "vader"), STEER_METHODS),
              table_rows("sweep.json", "table", **{
                  f"{m}_{j}": ({"method": m, "strength": None}, k)
                  for m in ("unsteered_cat", "unsteered_lm")
                  for j, k in (("judge", "success"), ("vader", "success_vader"))})),
        {**{f"p{i}_ppl": Figure(f"shared perplexity {i + 1}", "{:.0f}") for i in range(3)},
         **{f"p{i}_{j}_{m}": Figure(f"{m} success ({j}) at shared perplexity {i + 1}", "{:.2f}")
            for j in ("judge", "vader") for i in range(3) for m in STEER_METHODS
            if m != "fudge" or i == 0},
         **{f"{m}_{j}": Figure(f"{m} success ({j})", "{:.2f}")
            for m in ("unsteered_cat", "unsteered_lm") for j in ("judge", "vader")}},
        "success at the shared perplexities {p0_ppl} / {p1_ppl} / {p2_ppl}, judge classifier: "
        "CAT {p0_judge_weighted} / {p1_judge_weighted} / {p2_judge_weighted}, Director "
        "{p0_judge_director} / {p1_judge_director} / {p2_judge_director}, FUDGE "
        "{p0_judge_fudge} at the first (its perplexity stays below the others: it only picks among "
        "the LM's top 20); VADER: CAT {p0_vader_weighted} / {p1_vader_weighted} / "
        "{p2_vader_weighted}, Director {p0_vader_director} / {p1_vader_director} / "
        "{p2_vader_director}, FUDGE {p0_vader_fudge}; unsteered CAT / LM {unsteered_cat_judge} / "
        "{unsteered_lm_judge} "
        "(VADER {unsteered_cat_vader} / {unsteered_lm_vader})", seeds=(0,), expected_s=600,
        paper="CAT 0.64/0.77 vs Director 0.58/0.65 at perplexity ~45 (Amazon, 1/5 stars)",
        not_regenerated="needs the trained reviews runs (/work/runs/reviews, about 35-50 min of "
                        "training on 2 cores), then about 9 min"),
    Row("backtrack", "Attribute-aware backtracking on reviews (192 generations per row, "
        "max_retries 1)",
        ("{python} -m experiments.reports.backtrack_eval --root=/work/runs/reviews "
         "--out={workdir} --gammas=1,3 --thresholds=0.05,0.15 --seeds=2 --max_retries=1",),
        table_rows("backtrack.json", "table", **{
            f"g1_{t}_{k}": ({"method": "cat_weighted", "strength": 1.0, "threshold": th}, k)
            for t, th in (("plain", None), ("t015", 0.15))
            for k in ("target_rate", "perplexity")}),
        {f"g1_{t}_{k}": Figure(f"gamma 1 {t} {k}", "{:.2f}" if k == "target_rate" else "{:.0f}")
         for t in ("plain", "t015") for k in ("target_rate", "perplexity")},
        "weighted gamma 1: {g1_plain_target_rate} -> {g1_t015_target_rate} (threshold 0.15) at "
        "perplexity {g1_plain_perplexity} -> {g1_t015_perplexity}", seeds=(0,),
        expected_s=3600, paper="(new)",
        not_regenerated="needs the trained reviews runs (/work/runs/reviews), then about an hour"),
]

BY_ID = {r.id: r for r in ROWS}
assert len(BY_ID) == len(ROWS), "row ids must be unique"
