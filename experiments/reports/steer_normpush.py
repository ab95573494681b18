"""A probe of one non-saturating CAT push on reviews (issue 25; README, 'CAT on reviews'):
CAT's weighted push saturates once its head judges the prefix the target (steer_why). Here the
push is z-scored per step over the CAT LM's top 20 candidates C,
  score_v = log p(v | s) + gamma * (log q_v - mean_C log q) / std_C log q,  q_v = P(target | s, v),
then sampled among the top 20 scores, so every step pushes equally hard. Same prompts, 40 new
tokens, judge, VADER and plain-LM perplexity as steer_sweep; no KV cache (a full forward per
step: fine at this size).

  python -m experiments.reports.steer_normpush --workdir=/work/runs/reviews --gammas=0.5,1
      [--seeds=0,1,2]"""
import argparse
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from catrans import attributes as attr_lib
from experiments.reviews.judges import LexiconJudge
from experiments.reviews.runs import FULL, load_run
from experiments.reviews.runs import steering_prompt_ids as prompts_for
from experiments.reviews.steering import judge_and_fluency, text_judge_fn

TOP = 20


@functools.partial(jax.jit, static_argnames=("model", "target"))
def choose(model, params, seq_BxW, cur_B, rng, gamma, target: int):
  """The next token of each row (its text ends before index cur_B)."""
  out = model.apply({"params": params}, seq_BxW, all_tokens=True)
  b = jnp.arange(seq_BxW.shape[0])
  logp = jax.nn.log_softmax(out.logits[b, cur_B - 1].astype(jnp.float32), -1)
  q = attr_lib.expected_value(model.cat.spec("label"), out.attributes["label"][b, cur_B - 1],
                              target)
  logq = jnp.log(jnp.clip(q, 1e-9))
  _, cand = jax.lax.top_k(logp, TOP)
  cq = jnp.take_along_axis(logq, cand, -1)
  z = (logq - cq.mean(-1, keepdims=True)) / (cq.std(-1, keepdims=True) + 1e-6)
  top_s, top_i = jax.lax.top_k(logp + gamma * z, TOP)
  pick = jax.random.categorical(rng, top_s, -1)
  return jnp.take_along_axis(top_i, pick[:, None], -1)[:, 0]


def generate(model, params, prompts_BxP, lens_B, target, rng, *, width, eos_id, pad_id, gamma):
  n, steps = prompts_BxP.shape[0], FULL.max_new_tokens
  seq = np.full((n, width), pad_id, np.int32)
  seq[:, :prompts_BxP.shape[1]] = np.asarray(prompts_BxP)
  cur, done = np.asarray(lens_B).copy(), np.zeros(n, bool)
  new = np.full((n, steps), pad_id, np.int32)
  for t in range(steps):
    rng, key = jax.random.split(rng)
    nxt = np.asarray(choose(model, params, jnp.asarray(seq), jnp.asarray(cur), key, gamma,
                            target))
    nxt = np.where(done, pad_id, nxt)
    new[:, t] = nxt
    live = ~done & (cur < width)
    seq[np.flatnonzero(live), cur[live]] = nxt[live]
    cur = np.where(live, cur + 1, cur)
    done = done | (nxt == eos_id) | (cur >= width)
  return new


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True, help="the reviews runs (steer_sweep's)")
  ap.add_argument("--gammas", default="0.5,1")
  ap.add_argument("--seeds", default="0,1,2")
  a = ap.parse_args(argv)
  gammas = [float(g) for g in a.gammas.split(",") if g]
  if not gammas or any(not math.isfinite(g) or g < 0 for g in gammas):
    raise ValueError(f"--gammas must be finite numbers >= 0, got {a.gammas!r}")
  runs = {r: load_run(a.workdir, r, False) for r in ("cat", "lm", "judge")}
  models = {k: t.objective.model for k, (t, _) in runs.items()}
  params = {k: p for k, (_, p) in runs.items()}
  tok, task = runs["cat"][0].task.tokenizer, runs["cat"][0].task
  width = int(runs["cat"][0].config.data.seq_len)
  kw = dict(width=width, eos_id=tok.eos_id, pad_id=tok.pad_id)
  vader = text_judge_fn(LexiconJudge("vader"), tok, **kw)
  out = []
  for g in gammas:
    hits, vhits, nll, cnt = [], [], 0.0, 0.0
    for target in (1, 0):
      p, lens, _ = prompts_for(tok, task, target)
      for s in (int(x) for x in a.seeds.split(",")):
        new = jnp.asarray(generate(models["cat"], params["cat"], p, lens, target,
                                   jax.random.PRNGKey(s), gamma=g, **kw))
        pt, nll_b, cnt_b = judge_and_fluency(models["judge"], params["judge"], models["lm"],
                                             params["lm"], p, lens, new, target, **kw)
        hits += (np.asarray(pt) > 0.5).tolist()
        vhits += (np.asarray(vader(p, lens, new, target)) > 0.5).tolist()
        nll, cnt = nll + float(np.sum(nll_b)), cnt + float(np.sum(cnt_b))
    out.append({"gamma": g, "judge": float(np.mean(hits)), "vader": float(np.mean(vhits)),
                "perplexity": math.exp(nll / cnt), "n": len(hits)})
    print(f"normalised push gamma {g:g}: success judge {out[-1]['judge']:.2f}, VADER "
          f"{out[-1]['vader']:.2f}, perplexity {out[-1]['perplexity']:.1f} "
          f"({len(hits)} generations)", flush=True)
  return out


if __name__ == "__main__":
  main()
