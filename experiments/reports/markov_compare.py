"""Compounding error on a known Markov chain: MLE vs MLE + <bkspc> vs SequenceMatch.

  python -m experiments.reports.markov_compare --root=DIR [--methods=mle,bc,sm] [--samples=4]
      [--protocol=scratch|finetune] [--seeds=0,1,2] [--alphas=1,10] [--noise=0.02,0.1]
      [--task=markov|dyck]

--task=dyck runs the same study on balanced brackets (experiments/tasks/dyck.py, configs
markov_seqmatch.py:METHOD,dyck), scored by its exact checker (no likelihood: that column is 0).

Trains configs/markov_seqmatch.py:METHOD in DIR/METHOD (finished runs are skipped, killed
ones resume), then samples (temperature 1, KV cache, <bkspc> allowed) `samples`
continuations of every test prompt, up to twice the training length, and scores the final
text after backspaces exactly under the true chain: the share of sequences with an invalid
transition, where the first one happens, the log-likelihood per valid transition, the
length, the backspace rate and (undo_counts) how often the sampler undoes its own first
mistake and how often it undoes a valid text. Writes DIR/report.md, DIR/report.json and DIR/survival.png
(share of sequences still valid after t transitions).

protocol=finetune: train MLE in DIR/mle first, then each method 300 more steps from it
(configs/markov_seqmatch.py:METHOD,ft with init_from=run:DIR/mle) in DIR/METHOD_ft, so all
start from the same model and get the same extra steps (the row 'mle' there is MLE
continued).

seeds: each seed is --config.seed (model init, data order, rollouts) on the same chain; with
several, DIR/sSEED/... holds each seed's runs and the report gives mean [min, max]. alphas:
one SequenceMatch variant per chi2 alpha (sm_aALPHA); noise: one bc and sm variant per
p_noise (..._pNOISE)."""
import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import seqmatch
from experiments.compare_runs import run_logged, seed_root, spread, variants
from experiments.runs import load_trainer
from experiments.tasks import dyck, markov


def scorer(task_config):
  """text -> markov.score-style dict, exact for the run's task (markov chain or dyck)."""
  if task_config.name == "dyck":
    return dyck.checker_of(task_config)
  p = markov.chain_of(task_config)
  return lambda text: markov.score(p, text)


def evaluate(trainer, params, *, samples=4, seed=0, batch_size=100):
  """Generations from every test prompt, scored exactly under the run's task."""
  obj, tok = trainer.objective, trainer.task.tokenizer
  score = scorer(trainer.config.task)
  length = int(trainer.config.task.get("length", markov.DEFAULTS["length"]))
  prompts = [[tok.bos_id] + tok.encode(ex["prompt"]) for ex in trainer.task.source("test")]
  prompts = [x for x in prompts for _ in range(samples)]
  gen = jax.jit(functools.partial(
      seqmatch.generate, obj.apply_fn, obj.init_cache_fn, max_actions=2 * length,
      backspace_id=obj.vocab.backspace_id, eos_id=tok.eos_id, temperature=1.0))
  rows, backspaces, actions, undo = [], 0, 0, np.zeros(4, np.int64)
  rng = jax.random.PRNGKey(seed)
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    arr = np.full((batch_size, 2), tok.bos_id, np.int32)
    arr[:len(chunk)] = chunk
    lens = np.full((batch_size,), 2, np.int32)
    rng, sub = jax.random.split(rng)
    g = jax.device_get(gen(params, jnp.asarray(arr), jnp.asarray(lens), sub))
    for i in range(len(chunk)):
      final = [int(t) for t in g.tokens[i, 1:g.lengths[i]] if t != tok.eos_id]
      text = tok.decode(final)
      acts = g.actions[i, :g.num_actions[i]]
      backspaces += int((acts == obj.vocab.backspace_id).sum())
      actions += int(g.num_actions[i])
      undo += undo_counts(acts, tok, score, obj.vocab.backspace_id, chunk[i][1:])
      rows.append(dict(score(text), text=text))
  bad = [r for r in rows if r["first_invalid"] >= 0]
  valid_transitions = sum(r["first_invalid"] - 1 if r["first_invalid"] >= 0
                          else r["transitions"] for r in rows)
  return {
      "sequences": len(rows),
      "invalid_share": len(bad) / len(rows),
      "first_invalid_mean": float(np.mean([r["first_invalid"] for r in bad])) if bad else None,
      # invalid only at the end (dyck: brackets left open; never for the chain)
      "invalid_at_end_share": float(np.mean([r["first_invalid"] == len(r["text"]) > 0
                                             for r in rows])),
      "loglik_per_valid_transition": sum(r["loglik"] for r in rows) / max(valid_transitions, 1),
      "mean_transitions": float(np.mean([r["transitions"] for r in rows])),
      "backspace_rate": backspaces / max(actions, 1),
      # does the undo catch the sampler's own mistakes? <bkspc> right after the first invalid
      # token, against <bkspc> where the text so far is valid (a needless undo)
      "bkspc_after_error": float(undo[1] / max(undo[0], 1)), "errors_made": int(undo[0]),
      "bkspc_when_valid": float(undo[3] / max(undo[2], 1)),
      "first_invalid_positions": [r["first_invalid"] for r in rows],
      "samples": [r["text"] for r in rows[:6]],
  }


def undo_counts(actions, tok, score, backspace_id, prompt=()):
  """Replays one generation's actions: [states just after the first invalid token, <bkspc>
  taken there, states whose text is valid so far, <bkspc> taken there]. A state counts as
  erroneous when score() puts its first invalid character inside the text (brackets only
  left open are no error yet)."""
  out, state, bad_at = np.zeros(4, np.int64), [int(t) for t in prompt], None
  for a in (int(x) for x in actions):
    if bad_at is None:
      out[2] += 1
      out[3] += a == backspace_id
    elif bad_at == len(state) - 1:   # the last token is the first mistake
      out[0] += 1
      out[1] += a == backspace_id
    if a == tok.eos_id:
      break
    if a == backspace_id:
      state = state[:-1]
    else:
      state.append(a)
    text = tok.decode(state)
    first = score(text)["first_invalid"]
    bad_at = first if 0 <= first < len(text) else None
  return out


def _train(workdir, variant, extra):
  """Trains configs/markov_seqmatch.py:VARIANT in workdir unless it finished before."""
  if os.path.exists(os.path.join(workdir, "train_done.json")):
    return
  t0 = time.time()
  print(f"training {variant} in {workdir} ...", flush=True)
  os.makedirs(workdir, exist_ok=True)
  run_logged([sys.executable, "-m", "experiments.train",
        f"--config=experiments/configs/markov_seqmatch.py:{variant}", f"--workdir={workdir}",
        "--config.train.progress=false"] + extra, os.path.join(workdir, "stdout.log"))
  with open(os.path.join(workdir, "train_done.json"), "w") as f:
    json.dump({"train_seconds": time.time() - t0}, f)


def chain_reference(config, num=2000, seed=5):
  """Log-likelihood per transition of the chain's own samples (its entropy rate, negated)."""
  if config.name != "markov":
    return 0.0
  p = markov.chain_of(config)
  length = int(config.get("length", markov.DEFAULTS["length"]))
  s = markov.sample_states(p, num, length, np.random.default_rng(seed))
  return float(np.log(p[s[:, :-1], s[:, 1:]]).mean())


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--root", required=True)
  ap.add_argument("--methods", default="mle,bc,sm")
  ap.add_argument("--samples", type=int, default=4, help="generations per test prompt")
  ap.add_argument("--tiny", action="store_true", help="seconds-long smoke settings")
  ap.add_argument("--protocol", default="scratch", choices=("scratch", "finetune"))
  ap.add_argument("--seeds", default="0",
                  help="model/data-order seeds (--config.seed); the chain stays the same")
  ap.add_argument("--alphas", default="",
                  help="SequenceMatch's chi2 alpha, one 'sm' variant each (default: config's)")
  ap.add_argument("--noise", default="",
                  help="p_noise of bc and sm, one variant each (default: config's)")
  ap.add_argument("--sm_flags", default="",
                  help="objective KEY=VALUE,... for every sm variant (e.g. reward_backspace=false)")
  ap.add_argument("--sm_tag", default="", help="suffix of the sm variants' names")
  ap.add_argument("--task", default="markov", choices=("markov", "dyck"))
  a = ap.parse_args(argv)
  os.makedirs(a.root, exist_ok=True)
  seeds = [int(x) for x in a.seeds.split(",")]
  results, trainer = {}, None
  tiny = (",tiny" if a.tiny else "") + ("" if a.task == "markov" else f",{a.task}")
  for seed in seeds:
    root = seed_root(a.root, seed, seeds)
    seed_arg = [f"--config.seed={seed}"]
    if a.protocol == "finetune":
      _train(os.path.join(root, "mle"), f"mle{tiny}", seed_arg)
    for name, method, extra, _ in variants(a.methods, a.alphas, a.noise, a.sm_flags, a.sm_tag):
      if a.protocol == "finetune":
        workdir = os.path.join(root, f"{name}_ft")
        _train(workdir, f"{method},ft{tiny}",
               [f"--config.init_from=run:{os.path.join(root, 'mle')}"] + seed_arg + extra)
      else:
        workdir = os.path.join(root, name)
        _train(workdir, f"{method}{tiny}", seed_arg + extra)
      trainer = load_trainer(workdir)
      r = evaluate(trainer, trainer.restore_params(), samples=a.samples)
      with open(os.path.join(workdir, "train_done.json")) as f:
        r.update(json.load(f))
      results.setdefault(name, []).append(r)
      print(f"seed {seed} {name:8s} invalid {r['invalid_share']:.3f}  loglik/transition "
            f"{r['loglik_per_valid_transition']:.3f}  backspace rate "
            f"{r['backspace_rate']:.3f}", flush=True)
  ref = chain_reference(trainer.config.task)
  _report(a.root, results, ref, seeds)
  return results, ref


def _report(root, results, ref, seeds=(0,)):
  """results: name -> one evaluation per seed (in `seeds` order)."""
  lines = ["# Compounding error on a known task (Markov chain or brackets)", "",
           f"True chain's own samples: log-likelihood {ref:.3f} per transition.",
           f"Seeds {', '.join(map(str, seeds))}; with several, a cell is the mean [min, max] "
           "over seeds.", "",
           "| method | sequences per seed | with an invalid transition | per seed | "
           "mean first invalid at | loglik / valid transition | mean transitions | "
           "backspace rate | train s |",
           "|---|---|---|---|---|---|---|---|---|"]
  for m, runs in results.items():
    firsts = [r["first_invalid_mean"] for r in runs if r["first_invalid_mean"] is not None]
    per_seed = " ".join(f"{r['invalid_share']:.3f}" for r in runs)
    lines.append(
        f"| {m} | {runs[0]['sequences']} | {spread([r['invalid_share'] for r in runs])} | "
        f"{per_seed} | "
        f"{spread(firsts, '{:.1f}') if firsts else '-'} | "
        f"{spread([r['loglik_per_valid_transition'] for r in runs])} | "
        f"{spread([r['mean_transitions'] for r in runs], '{:.1f}')} | "
        f"{spread([r['backspace_rate'] for r in runs])} | "
        f"{np.mean([r['train_seconds'] for r in runs]):.0f} |")
  lines += ["", "Samples (final text after backspaces, first seed):", ""]
  for m, runs in results.items():
    lines += [f"- {m}: `{s}`" for s in runs[0]["samples"][:3]]
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(root, "report.json"), "w") as f:
    json.dump({"chain_loglik_per_transition": ref, "seeds": list(seeds), "methods": results},
              f, indent=1)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for m, runs in results.items():   # seeds pooled
    fi = np.concatenate([np.asarray(r["first_invalid_positions"]) for r in runs])
    t = np.arange(0, max(int(np.mean([r["mean_transitions"] for r in runs]) * 2), 2))
    alive = [np.mean((fi < 0) | (fi > x)) for x in t]
    ax.plot(t, alive, label=m)
  ax.set_xlabel("transitions generated")
  ax.set_ylabel("share of sequences still valid")
  ax.set_ylim(0, 1.02)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(root, "survival.png"), dpi=100)
  print(f"report: {os.path.join(root, 'report.md')}")


if __name__ == "__main__":
  main()
