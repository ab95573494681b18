"""SequenceMatch on text: MLE vs MLE + <bkspc> vs SequenceMatch fine-tuned from the same MLE
run on Shakespeare, judged on sampled continuations of held-out passages.

  python -m experiments.reports.text_seqmatch_report --root=DIR [--tiny]

The same study on a pretrained trunk (SmolLM2-135M + LoRA on Rotten Tomatoes, MAUVE over
seeds) is experiments/reports/text_seqmatch_smollm2.py, which reuses this module's sampling
and statistics.

Trains what is missing (configs/shakespeare_seqmatch.py: mle, then bc and sm from mle's
checkpoint, and the reference LM `ref`), samples continuations (temperature 1, KV cache,
<bkspc> allowed for bc and sm, masked for mle) of the first bytes of test passages, and
reports for each method and for the real continuations:
  ppl_ref      perplexity of the final text under the reference LM (it generated none of it)
  entropy-n    entropy (nats) of the pooled word n-gram distribution, n = 1, 2
  distinct-n   unique / all word n-grams over the samples, n = 1, 2, 3
  rep-4        share of a sample's word 4-grams that repeat an earlier one in it (mean)
  backspaces   <bkspc> actions / all actions, and where in the trace they fall
  mauve        MAUVE against the real continuations, on SmolLM2-135M features (the final
               hidden state at the last token of prompt + text), when `mauve-text` is
               installed (`pip install -e '.[text-metrics]'`); the featuriser is offline
with sample traces (⌫ = <bkspc>). Writes DIR/report.json, DIR/report.md and
DIR/backspace_positions.png. Reruns reuse finished runs."""
import argparse
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs.shakespeare_seqmatch import get_config
from experiments.runs import trained
from experiments.text_samples import sample, summarize

log = logging.getLogger("experiments")
METHODS = ("mle", "bc", "sm")


def train_or_load(root: str, run: str, tiny: bool):
  """(Trainer, params) of root/run, training (or finishing) it first; bc and sm start from
  mle's parameters."""
  config = get_config(run + (",tiny" if tiny else ""))
  if run in ("bc", "sm"):
    config.init_from = "run:" + os.path.join(root, "mle")
  return trained(config, os.path.join(root, run))


def prompts_and_references(task, num: int, prompt_bytes: int, continuation_bytes: int):
  """Test passages long enough for a prompt and a real continuation of the same length."""
  out = []
  for ex in task.source("test"):
    text = ex["text"]
    if len(text.encode("utf-8")) >= prompt_bytes + continuation_bytes:
      raw = text.encode("utf-8")
      out.append((raw[:prompt_bytes].decode("utf-8", "ignore"),
                  raw[prompt_bytes:prompt_bytes + continuation_bytes].decode("utf-8", "ignore")))
    if len(out) == num:
      break
  return out


def smollm2_features(texts: list[str], *, max_tokens: int = 64, batch: int = 32) -> np.ndarray:
  """[N, d] SmolLM2-135M final hidden state at each text's last token (MAUVE's features)."""
  from catrans.pretrained import load_pretrained, load_pretrained_tokenizer
  from catrans.transformer import Transformer
  cfg, params = load_pretrained("smollm2", max_len=max_tokens)
  tok = load_pretrained_tokenizer("smollm2")
  model = Transformer(cfg)
  hidden_fn = jax.jit(lambda p, x: model.apply({"params": p}, x, return_logits=False).hidden)
  out = []
  for s in range(0, len(texts), batch):
    ids = [tok.encode(t)[-max_tokens:] or [tok.eos_id] for t in texts[s:s + batch]]
    arr = np.full((len(ids), max_tokens), tok.pad_id, np.int32)
    for i, x in enumerate(ids):
      arr[i, :len(x)] = x   # right padding: causal, so the last real row never sees it
    h = np.asarray(hidden_fn(params, jnp.asarray(arr)))
    out.append(h[np.arange(len(ids)), [len(x) - 1 for x in ids]])
  return np.concatenate(out).astype(np.float32)


def mauve_scores(prompts_by_method: dict, texts_by_method: dict, reference: str = "data"):
  """{method: MAUVE(reference texts, method texts)} or None without mauve-text."""
  try:
    import mauve
  except ImportError:
    log.warning("MAUVE skipped: pip install -e '.[text-metrics]' (mauve-text)")
    return None
  feats = {m: smollm2_features([p + t for p, t in zip(prompts_by_method[m], texts)])
           for m, texts in texts_by_method.items()}
  return {m: float(mauve.compute_mauve(p_features=feats[reference], q_features=f,
                                       verbose=False, seed=25).mauve)
          for m, f in feats.items() if m != reference}


def make_report(root: str, *, tiny: bool = False, seed: int = 0, command: str = "",
                mauve: bool = True) -> dict:
  os.makedirs(root, exist_ok=True)
  num, per = (4, 2) if tiny else (64, 2)
  prompt_bytes, new = (8, 8) if tiny else (32, 96)
  t0 = time.perf_counter()
  # --tiny is a smoke test of the pipeline: the mle run stands in for the reference LM.
  runs = {run: train_or_load(root, run, tiny) for run in METHODS + (() if tiny else ("ref",))}
  train_s = time.perf_counter() - t0
  mle_trainer = runs["mle"][0]
  bk = mle_trainer.objective.vocab.backspace_id
  pairs = prompts_and_references(mle_trainer.task, num, prompt_bytes, new)
  prompts = [p for p, _ in pairs]
  ref, ref_params = runs["mle" if tiny else "ref"]
  report = {"command": command, "train_seconds": train_s, "num_prompts": len(prompts),
            "samples_per_prompt": per, "max_actions": new, "methods": {}, "samples": {}}
  data_rows = [{"prompt": p, "text": c} for p, c in pairs]
  report["methods"]["data"] = summarize(data_rows, ref, ref_params, bk)
  all_rows = {"data": data_rows}
  rng = jax.random.PRNGKey(seed)
  for m in METHODS:
    trainer, params = runs[m]
    rows = sample(trainer, params, prompts, max_actions=new, rng=jax.random.fold_in(rng, 1),
                  allow_backspace=(m != "mle"), samples_per_prompt=per)
    report["methods"][m] = summarize(rows, ref, ref_params, bk)
    report["samples"][m] = [{k: r[k] for k in ("prompt", "text", "trace")} for r in rows[:6]]
    all_rows[m] = rows
  report["texts"] = {m: [{"prompt": r["prompt"], "text": r["text"]} for r in rows]
                     for m, rows in all_rows.items()}
  if mauve:
    scores = mauve_scores({m: [r["prompt"] for r in rows] for m, rows in all_rows.items()},
                          {m: [r["text"] for r in rows] for m, rows in all_rows.items()})
    for m, v in (scores or {}).items():
      report["methods"][m]["mauve"] = v
  report["seconds"] = time.perf_counter() - t0
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  _write_markdown(os.path.join(root, "report.md"), report)
  _plot_positions(os.path.join(root, "backspace_positions.png"), report)
  return report


def _fmt(x, spec=".3f"):
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _write_markdown(path, report):
  lines = ["# SequenceMatch on Shakespeare: MLE vs MLE + <bkspc> vs SequenceMatch", "",
           f"`{report['command']}`: {report['num_prompts']} held-out prompts x "
           f"{report['samples_per_prompt']} samples, up to {report['max_actions']} actions, "
           f"temperature 1. Training {report['train_seconds']:.0f} s, total "
           f"{report['seconds']:.0f} s.", "",
           "| | ppl under ref | entropy-1 | entropy-2 | distinct-1 | distinct-2 | distinct-3 "
           "| rep-4 | bytes | backspace rate | MAUVE |", "|---" * 11 + "|"]
  for name, r in report["methods"].items():
    lines.append(f"| {name} | {_fmt(r['ppl_ref'], '.2f')} | {_fmt(r['entropy_1'])} | "
                 f"{_fmt(r['entropy_2'])} | {_fmt(r['distinct_1'])} | {_fmt(r['distinct_2'])} | "
                 f"{_fmt(r['distinct_3'])} | {_fmt(r['rep_4'])} | {_fmt(r['mean_bytes'], '.0f')} "
                 f"| {_fmt(r['backspace_rate'])} | {_fmt(r.get('mauve'))} |")
  lines += ["", "'data' is the real continuation of the same passages. Samples (⌫ = <bkspc>):"]
  for m, rows in report["samples"].items():
    lines += ["", f"**{m}**", ""]
    lines += [f"- `{r['prompt']!r}` → `{r['trace']!r}`" for r in rows[:3]]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _plot_positions(path, report):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 3.5))
  drawn = False
  for m in ("bc", "sm"):
    pos = report["methods"][m]["backspace_positions"]
    if pos:
      ax.hist(pos, bins=20, range=(0, 1), alpha=0.6, label=f"{m} ({len(pos)} backspaces)")
      drawn = True
  ax.set_xlabel("position in the action trace (0 = first action, 1 = last)")
  ax.set_ylabel("backspaces")
  ax.set_title("Where backspaces happen" + ("" if drawn else " (none were taken)"))
  if drawn:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--tiny", action="store_true", help="seconds-long smoke settings")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--no_mauve", action="store_true", help="skip MAUVE (needs SmolLM2 features)")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  command = "python -m experiments.reports.text_seqmatch_report " + " ".join(
      sys.argv[1:] if argv is None else argv)
  report = make_report(a.root, tiny=a.tiny, seed=a.seed, mauve=not a.no_mauve,
                       command=command)
  print(open(os.path.join(a.root, "report.md")).read())
  return report


if __name__ == "__main__":
  main()
