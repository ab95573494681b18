"""SequenceMatch on text with a pretrained trunk: SmolLM2-135M + LoRA adapters fine-tuned on
Rotten Tomatoes reviews with MLE, MLE + <bkspc> (BC) and SequenceMatch-chi2 (SM), per seed,
judged by MAUVE of sampled continuations of held-out reviews against the real ones.

  python -m experiments.reports.text_seqmatch_smollm2 --root=DIR \
      [--seeds=0,1,2 --steps=16 --prompts=96]

Per seed (it sets the adapters' init, the data order, the noise and the rollouts) it trains
or reuses DIR/seedS/{mle,bc,sm} (configs/smollm2_finetune.py 'METHOD,lora', all from the
same frozen pretrained trunk), samples one continuation (temperature 1, KV cache, up to
20 actions, <bkspc> applied; masked for mle and the un-fine-tuned model 'pre') of the
first 8 tokens of each held-out review, and scores them as the byte report
does (experiments.text_samples.summarize) with the frozen pretrained SmolLM2 as both the
perplexity reference and MAUVE's featuriser. DIR/report.json and DIR/report.md hold every
seed's values, their mean, min-max and standard deviation, next to the paper's MAUVE."""
import argparse
import ast
import gc
import json
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs.smollm2_finetune import get_config
from experiments import text_samples as base
from experiments.runs import trained

log = logging.getLogger("experiments")
METHODS = ("mle", "bc", "sm")
PAPER = {"mle": 0.85, "bc": 0.84, "sm": 0.91}   # openwebtext, Llama2-7b QLoRA (SPEC section 3)


def run_config(method: str, seed: int, steps: int, overrides: dict | None = None):
  """configs/smollm2_finetune.py 'METHOD,lora' for one seed, `steps` long, no eval (the
  report judges samples) and one checkpoint at the end; then `overrides` ({'objective.alpha':
  10.0}: for diagnostics, named in the report)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
  c = get_config(method + ",lora")
  c.seed = int(seed)
  c.train.update(dict(steps=steps, eval_every=0, checkpoint_every=steps, log_every=10,
                      progress=False))
  c.optimizer.warmup_steps = min(int(c.optimizer.warmup_steps), max(1, steps // 10))
  c.objective.bc_steps = min(int(c.objective.bc_steps), steps // 5)
  if overrides:
    c.update_from_flattened_dict(dict(overrides))
  return c


def parse_overrides(text: str) -> dict:
  """'objective.alpha=10,objective.beta=0.9' -> {'objective.alpha': 10, ...} (Python
  literals; anything else stays a string)."""
  out = {}
  for item in filter(None, (text or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--sm_set items are KEY=VALUE, got {item!r}")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def held_out(tokenizer, num: int, prompt_tokens: int, new: int):
  """(prompt, real continuation) text of the first `num` test reviews with at least
  prompt_tokens + 8 tokens: the prompt is their first prompt_tokens tokens, the continuation
  the next (up to) `new`."""
  from experiments.tasks import get_task
  c = get_config("mle,lora")
  out = []
  for ex in get_task(c.task.name, c.task).source("test"):
    ids = tokenizer.encode(ex["text"])
    if len(ids) >= prompt_tokens + 8:
      out.append((tokenizer.decode(ids[:prompt_tokens]),
                  tokenizer.decode(ids[prompt_tokens:prompt_tokens + new])))
    if len(out) == num:
      break
  return out


def pretrained_scorer(width: int = 40, batch: int = 64):
  """score(prompts, texts) -> (perplexity, [N, d] features) under the frozen SmolLM2-135M, one
  forward pass for both: BOS + prompt + text cut to `width` tokens; the perplexity is over
  the text's tokens given what precedes them, the feature (MAUVE's) is the final hidden state
  at the last token. Fixed [batch, width] shapes: one compile."""
  from catrans.pretrained import load_pretrained, load_pretrained_tokenizer
  from catrans.transformer import Transformer
  cfg, params = load_pretrained("smollm2", max_len=width)
  tok = load_pretrained_tokenizer("smollm2")
  model = Transformer(cfg)

  @jax.jit
  def forward(x_BxW):
    out = model.apply({"params": params}, x_BxW[:, :-1])
    logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    nll = -jnp.take_along_axis(logp, x_BxW[:, 1:, None], -1)[..., 0]
    return nll, out.hidden

  def score(prompts, texts):
    seqs = [([tok.bos_id] + tok.encode(p), tok.encode(t)) for p, t in zip(prompts, texts)]
    total, count, feats = 0.0, 0, []
    for s in range(0, len(seqs), batch):
      chunk = seqs[s:s + batch]
      arr = np.full((batch, width + 1), tok.pad_id, np.int32)
      w = np.zeros((batch, width), np.float32)
      last = np.zeros(batch, np.int32)
      for i, (p, t) in enumerate(chunk):
        row = (p + t)[:width + 1]
        arr[i, :len(row)] = row      # right padding: causal, the real rows never see it
        w[i, len(p) - 1:len(row) - 1] = 1.0
        last[i] = min(len(row), width) - 1
      nll, hidden = map(np.asarray, forward(jnp.asarray(arr)))
      total += float((nll * w).sum())
      count += float(w.sum())
      feats.append(hidden[np.arange(len(chunk)), last[:len(chunk)]])
    return math.exp(total / max(count, 1.0)), np.concatenate(feats).astype(np.float32)
  return tok, score


def mauve(p_features, q_features) -> float | None:
  try:
    import mauve as mauve_lib
  except ImportError:
    log.warning("MAUVE skipped: pip install -e '.[text-metrics]' (mauve-text)")
    return None
  return float(mauve_lib.compute_mauve(p_features=p_features, q_features=q_features,
                                       verbose=False, seed=25, device_id=-1).mauve)


def seed_report(root: str, seed: int, *, steps: int, pairs, new: int, score, data: dict,
                with_pre: bool, methods=METHODS, sm_set: dict | None = None) -> dict:
  """Trains (or reuses) the three runs of `seed`, samples and scores them (and, with_pre, the
  un-fine-tuned trunk) against `data` (the real continuations' summary and features);
  cached in root/seedS/summary.json."""
  out_dir = os.path.join(root, f"seed{seed}")
  path = os.path.join(out_dir, "summary.json")
  if os.path.exists(path):
    return json.load(open(path))
  prompts = [p for p, _ in pairs]
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  rows, train_s, sampler = {}, {}, None
  for m in methods:
    t0 = time.perf_counter()
    trainer, params = trained(run_config(m, seed, steps, sm_set if m == "sm" else None),
                              os.path.join(out_dir, m))
    train_s[m] = time.perf_counter() - t0
    if sampler is None:   # one architecture: the first trainer's compiled sampler serves all
      sampler = trainer
      if with_pre:
        params0 = jax.tree.map(np.asarray, trainer.eval_params(trainer.init_state()))
    log.info("seed %d: %s trained/loaded in %.0f s; sampling %d prompts", seed, m, train_s[m],
             len(prompts))
    rows[m] = base.sample(sampler, params, prompts, max_actions=new, rng=rng,
                          allow_backspace=(m != "mle"), samples_per_prompt=1)
    del trainer, params
    gc.collect()   # a 135M trainer is ~1 GB of host arrays: keep at most two alive
  if with_pre:   # the un-fine-tuned trunk: adapters at their init (B = 0), <bkspc> masked
    rows["pre"] = base.sample(sampler, params0, prompts, max_actions=new, rng=rng,
                              allow_backspace=False, samples_per_prompt=1)
  bk = sampler.objective.vocab.backspace_id
  summary = {"seed": seed, "train_seconds": train_s, "methods": {"data": data["summary"]},
             "samples": {}}
  features = {}
  for m, r in rows.items():
    summary["methods"][m] = base.summarize(r, None, None, bk)
    ppl, feats = score([x["prompt"] for x in r], [x["text"] for x in r])
    summary["methods"][m].update(ppl_ref=ppl, mauve=mauve(data["features"], feats))
    features[m] = feats
    summary["samples"][m] = [{k: x[k] for k in ("prompt", "text", "trace")} for x in r[:6]]
    log.info("seed %d %s: %s", seed, m, {k: summary["methods"][m].get(k) for k in KEYS})
  summary["texts"] = {m: [x["text"] for x in r] for m, r in rows.items()}
  os.makedirs(out_dir, exist_ok=True)
  np.savez(os.path.join(out_dir, "features.npz"), **features)   # for later bootstraps
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def aggregate(values: list) -> dict:
  """mean, min, max and (n > 1) sample standard deviation of the finite values."""
  v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
  if not len(v):
    return {"n": 0}
  return {"n": int(len(v)), "mean": float(v.mean()), "min": float(v.min()),
          "max": float(v.max()), "std": float(v.std(ddof=1)) if len(v) > 1 else None}


KEYS = ("mauve", "ppl_ref", "distinct_2", "rep_4", "entropy_2", "backspace_rate")


def bootstrap_mauve(data_NxD, q_NxD, *, resamples: int, seed: int = 0) -> list:
  """[2.5%, 97.5%] of MAUVE over `resamples` paired resamplings of the prompts (the same
  indices for the real and the sampled continuations of those prompts)."""
  if not isinstance(resamples, int) or resamples < 2:
    raise ValueError(f"resamples must be an integer >= 2, got {resamples!r}")
  if len(data_NxD) != len(q_NxD):
    raise ValueError(f"paired features need equal counts, got {len(data_NxD)} and {len(q_NxD)}")
  rng = np.random.default_rng(seed)
  vals = []
  for _ in range(resamples):
    i = rng.integers(0, len(q_NxD), len(q_NxD))
    vals.append(mauve(data_NxD[i], q_NxD[i]))
  return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def add_bootstrap(root: str, seeds, resamples: int) -> dict:
  """{seed: {method: [lo, hi]}} from the saved features, cached in root/bootstrap.json."""
  path = os.path.join(root, "bootstrap.json")
  done = json.load(open(path)) if os.path.exists(path) else {}
  if done.get("resamples") != resamples:
    done = {"resamples": resamples}
  data = np.load(os.path.join(root, "data_features.npz"))["data"]
  for s in seeds:
    feats = np.load(os.path.join(root, f"seed{s}", "features.npz"))
    for m in feats.files:
      if m not in done.setdefault(str(s), {}):
        done[str(s)][m] = bootstrap_mauve(data, feats[m], resamples=resamples, seed=s)
        with open(path, "w") as f:
          json.dump(done, f, indent=1)
  return done


def make_report(root: str, *, seeds=(0, 1, 2), steps: int = 16, prompts: int = 96,
                prompt_tokens: int = 8, new: int = 20, command: str = "",
                bootstrap: int = 0, methods=METHODS, sm_set: dict | None = None,
                pre: bool = True) -> dict:
  if not methods or set(methods) - set(METHODS):
    raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}")
  os.makedirs(root, exist_ok=True)
  t0 = time.perf_counter()
  tok, score = pretrained_scorer(width=prompt_tokens + new + 2)
  pairs = held_out(tok, prompts, prompt_tokens, new)
  rows = [{"prompt": p, "text": c} for p, c in pairs]
  ppl, feats = score([p for p, _ in pairs], [c for _, c in pairs])
  data = {"summary": dict(base.summarize(rows, None, None, -1), ppl_ref=ppl), "features": feats}
  np.savez(os.path.join(root, "data_features.npz"), data=feats)
  # What two halves of the real continuations score against each other: MAUVE's ceiling and
  # noise at this sample size (half of it).
  half = len(feats) // 2
  data["summary"]["mauve_split_half"] = mauve(feats[:half], feats[half:])
  per_seed = {}
  for s in seeds:
    per_seed[s] = seed_report(root, s, steps=steps, pairs=pairs, new=new, score=score,
                              data=data, with_pre=pre and s == seeds[0], methods=methods,
                              sm_set=sm_set)
    _write(root, per_seed, steps=steps, pairs=pairs, new=new, prompt_tokens=prompt_tokens,
           command=command, seconds=time.perf_counter() - t0, sm_set=sm_set)
  if bootstrap:
    boot = add_bootstrap(root, seeds, bootstrap)
    _write(root, per_seed, steps=steps, pairs=pairs, new=new, prompt_tokens=prompt_tokens,
           command=command, seconds=time.perf_counter() - t0, boot=boot, sm_set=sm_set)
  return json.load(open(os.path.join(root, "report.json")))


def _write(root, per_seed, *, steps, pairs, new, prompt_tokens, command, seconds, boot=None,
           sm_set=None):
  names = [m for m in ("data", *METHODS, "pre")
           if any(m in r["methods"] for r in per_seed.values())]
  report = {"command": command, "steps": steps, "num_prompts": len(pairs),
            "prompt_tokens": prompt_tokens, "max_actions": new, "seeds": list(per_seed),
            "seconds": seconds, "paper_mauve": PAPER, "sm_set": sm_set or {},
            "data_mauve_split_half": per_seed[list(per_seed)[0]]["methods"]["data"].get(
                "mauve_split_half"),
            "per_seed": {s: {m: {k: r["methods"][m].get(k) for k in KEYS}
                             for m in names if m in r["methods"]}
                         for s, r in per_seed.items()},
            "train_seconds": {s: r["train_seconds"] for s, r in per_seed.items()},
            "methods": {m: {k: aggregate([r["methods"][m].get(k) for r in per_seed.values()
                                          if m in r["methods"]])
                            for k in KEYS} for m in names}}
  if boot:   # per seed, the bootstrap interval over prompts of each method's MAUVE
    report["mauve_bootstrap"] = boot
    for s, r in report["per_seed"].items():
      for m, v in r.items():
        if m in boot.get(str(s), {}):
          v["mauve_boot"] = boot[str(s)][m]
  last = per_seed[list(per_seed)[-1]]
  report["samples"] = last["samples"]
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  _markdown(os.path.join(root, "report.md"), report)


def _cell(a: dict, spec: str) -> str:
  if not a.get("n"):
    return "-"
  if a["n"] == 1:
    return format(a["mean"], spec)
  return (f"{a['mean']:{spec}} [{a['min']:{spec}}, {a['max']:{spec}}]")


def _seed_cell(v: dict) -> str:
  if v.get("mauve") is None:
    return "-"
  lo_hi = v.get("mauve_boot")
  return f"{v['mauve']:.3f}" + (f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")


def _markdown(path, report):
  seeds = report["seeds"]
  lines = ["# SequenceMatch on text: SmolLM2-135M + LoRA on Rotten Tomatoes", "",
           f"`{report['command']}`: {report['steps']} LoRA steps per run (8 x 32 tokens), "
           f"{report['num_prompts']} held-out reviews, prompt = their first "
           f"{report['prompt_tokens']} tokens, one continuation each of up to "
           f"{report['max_actions']} actions at temperature 1; seeds {seeds}. "
           f"Cells: mean [min, max] over seeds. This invocation {report['seconds']:.0f} s "
           f"(finished seeds are reused; training seconds per run: report.json)."
           + (f" **Diagnostic: the sm runs with {report['sm_set']}.**" if report["sm_set"] else ""),
           "",
           "| | MAUVE | paper MAUVE | ppl under SmolLM2 | distinct-2 | rep-4 | entropy-2 "
           "| backspace rate |", "|---" * 8 + "|"]
  for m, r in report["methods"].items():
    paper = report["paper_mauve"].get(m)
    lines.append(f"| {m} | {_cell(r['mauve'], '.3f')} | {'-' if paper is None else paper} | "
                 f"{_cell(r['ppl_ref'], '.1f')} | {_cell(r['distinct_2'], '.3f')} | "
                 f"{_cell(r['rep_4'], '.3f')} | {_cell(r['entropy_2'], '.2f')} | "
                 f"{_cell(r['backspace_rate'], '.3f')} |")
  boot = report.get("mauve_bootstrap", {}).get("resamples")
  lines += ["", "MAUVE per seed" + (f" [95% bootstrap over the prompts, {boot} resamples]"
                                    if boot else "") + ":", "", "| | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---" * (len(seeds) + 1) + "|"]
  for m in [m for m in report["methods"] if m != "data"]:
    vals = [report["per_seed"][s].get(m, {}) for s in seeds]
    lines.append(f"| {m} | " + " | ".join(_seed_cell(v) for v in vals) + " |")
  half = report["data_mauve_split_half"]
  lines += ["", f"MAUVE of one half of the real continuations against the other half: "
            f"{'-' if half is None else format(half, '.3f')} (the noise at this sample size).",
            "", "'data': the real continuations (MAUVE's reference); 'pre': the un-fine-tuned "
            "SmolLM2, which is also the perplexity reference (so its own ppl is favoured). "
            "Samples of the last seed (⌫ = <bkspc>):"]
  for m, rows in report["samples"].items():
    lines += ["", f"**{m}**", ""]
    lines += [f"- `{r['prompt']!r}` → `{r.get('trace', r['text'])!r}`" for r in rows[:3]]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--seeds", default="0,1,2", help="comma-separated")
  ap.add_argument("--steps", type=int, default=16, help="LoRA steps per run")
  ap.add_argument("--prompts", type=int, default=96, help="held-out reviews (one sample each)")
  ap.add_argument("--methods", default=",".join(METHODS), help="a subset of mle,bc,sm")
  ap.add_argument("--sm_set", default="",
                  help="config overrides of the sm runs, KEY=VALUE,...; a diagnostic: use its own --root")
  ap.add_argument("--no_pre", action="store_true", help="skip the un-fine-tuned model")
  ap.add_argument("--bootstrap", type=int, default=0,
                  help="> 0: also a per-seed bootstrap interval of MAUVE with this many resamples")
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  seeds = tuple(int(s) for s in a.seeds.split(","))
  command = "python -m experiments.reports.text_seqmatch_smollm2 " + " ".join(
      sys.argv[1:] if argv is None else argv)
  report = make_report(a.root, seeds=seeds, steps=a.steps, prompts=a.prompts, command=command,
                       bootstrap=a.bootstrap, methods=tuple(a.methods.split(",")),
                       sm_set=parse_overrides(a.sm_set), pre=not a.no_pre)
  print(open(os.path.join(a.root, "report.md")).read())
  return report


if __name__ == "__main__":
  main()
