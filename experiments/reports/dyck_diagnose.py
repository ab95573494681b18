"""Why SequenceMatch's rollout term does not beat MLE + <bkspc> on brackets: exact
diagnostics of trained `markov_compare --task=dyck` runs.

  python -m experiments.reports.dyck_diagnose --runs=DIR,DIR,... [--grads] [--out=FILE]

Per run, on every state of the 200 clean test texts (teacher forcing, no sampling noise):
  invalid_mass   mean probability of a next token that breaks the text (wrong close, too
                 deep, a non-bracket, <eos> with brackets open): the per-step error rate
  predicted      1 - prod_t (1 - invalid_mass_t) averaged over texts: the invalid share a
                 sampler without undo would reach if its own states looked like the data's
                 (compare with markov_compare's on-policy share: the gap is exposure bias)
  bkspc_clean    mean <bkspc> probability on clean states (a needless undo)
  detect         mean <bkspc> probability right after one wrong close appended to a clean
                 state (the augmentation's noise): what an undo could catch
--grads (SequenceMatch runs): on 2 training batches with fresh rollouts, the gradient norm of
each part of (1 - beta) L_SM + beta L_BC, and its cosine with the gradient of invalid_mass on
test states (> 0: descending the term lowers the per-step error), plus the cosine between the
rollout terms' gradients of two rollout draws on the same data batch (their noise)."""
import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

import seqmatch
from experiments.data import pipeline
from experiments.runs import load_trainer
from experiments.tasks import dyck


def _valid_next(text, tok, kinds, max_depth, vocab):
  """bool [vocab]: the next tokens that keep `text` a valid prefix."""
  stack = []
  for ch in text:
    if ch in dyck.OPEN:
      stack.append(dyck.OPEN.index(ch))
    else:
      stack.pop()
  ok = np.zeros(vocab, bool)
  if len(stack) < max_depth:
    ok[tok.encode(dyck.OPEN[:kinds])] = True
  if stack:
    ok[tok.encode(dyck.CLOSE[stack[-1]])] = True
  else:
    ok[tok.eos_id] = True
  return ok


def _states(trainer, rng):
  """Clean test items, per-row valid-next masks, and the same rows with a wrong close."""
  tok, cfg = trainer.task.tokenizer, trainer.config.task
  kinds, depth = int(cfg.get("kinds", 3)), int(cfg.get("max_depth", 8))
  vocab = trainer.objective.vocab.num_actions
  texts = [ex["prompt"] + ex["answer"] for ex in trainer.task.source("test")]
  n = max(len(t) for t in texts) + 3
  items = np.zeros((len(texts), n), np.int32)
  valid = np.zeros((len(texts), n, vocab), bool)
  live = np.zeros((len(texts), n), bool)
  noisy, noisy_len = [], []
  for b, t in enumerate(texts):
    ids = [tok.bos_id] + tok.encode(t) + [tok.eos_id]
    items[b, :len(ids)] = ids
    for j in range(1, len(t) + 1):   # row j: state bos + t[:j]
      valid[b, j] = _valid_next(t[:j], tok, kinds, depth, vocab)
      live[b, j] = True
      wrong = dyck.ground_truth_noise(t[:1], t[1:j], rng)
      row = np.zeros(n, np.int32)
      seq = [tok.bos_id] + tok.encode(t[:j] + wrong)
      row[:len(seq)] = seq
      noisy.append(row)
      noisy_len.append(len(seq))
  lens = np.array([len(t) + 2 for t in texts], np.int32)
  return items, lens, valid, live, np.stack(noisy), np.array(noisy_len, np.int32)


def _probs(obj, params, items, lens, chunk=512):
  out = []
  for s in range(0, len(items), chunk):
    it, ln = items[s:s + chunk], lens[s:s + chunk]
    one = seqmatch.build_one_pass(it, np.full(len(it), 2, np.int32), ln,
                                  vocab_size=obj.vocab.num_actions,
                                  backspace_id=obj.vocab.backspace_id, eos_id=obj.eos_id)
    logits, _ = obj.apply_fn(params, one.tokens, one.positions, one.mask)
    logits = seqmatch.objective.mask_illegal_backspace(logits, one.bkspc_illegal,
                                                       obj.vocab.backspace_id)
    out.append(np.asarray(jax.nn.softmax(logits, -1)))
  return np.concatenate(out)


def teacher_forced(trainer, params, seed=0):
  obj = trainer.objective
  items, lens, valid, live, noisy, noisy_len = _states(trainer, np.random.default_rng(seed))
  p = _probs(obj, params, items, lens)
  bk = obj.vocab.backspace_id
  inv = np.where(live, 1.0 - (p * valid).sum(-1) - p[..., bk], 0.0)
  pn = _probs(obj, params, noisy, noisy_len)
  detect = pn[np.arange(len(noisy)), noisy_len - 1, bk]
  return {"invalid_mass": float(inv.sum() / live.sum()),
          "predicted_invalid_share": float(np.mean(1.0 - np.prod(1.0 - inv, axis=1))),
          "bkspc_clean": float(np.where(live, p[..., bk], 0.0).sum() / live.sum()),
          "detect": float(detect.mean())}


def _invalid_mass_fn(trainer):
  """params -> mean invalid mass on the test states (differentiable), on 64 texts."""
  obj = trainer.objective
  items, lens, valid, live, _, _ = _states(trainer, np.random.default_rng(0))
  items, lens, valid, live = items[:64], lens[:64], valid[:64], live[:64]
  one = seqmatch.build_one_pass(items, np.full(len(items), 2, np.int32), lens,
                                vocab_size=obj.vocab.num_actions,
                                backspace_id=obj.vocab.backspace_id, eos_id=obj.eos_id)
  bk = obj.vocab.backspace_id

  def fn(params):
    logits, _ = obj.apply_fn(params, one.tokens, one.positions, one.mask)
    logits = seqmatch.objective.mask_illegal_backspace(logits, one.bkspc_illegal, bk)
    p = jax.nn.softmax(logits, -1)
    inv = 1.0 - (p * valid).sum(-1) - p[..., bk]
    return jnp.sum(jnp.where(live, inv, 0.0)) / live.sum()
  return fn


def _one_pass(obj, batch, rollouts):
  """The one-pass rows of a data batch followed by rollouts (as the trainer builds them)."""
  r_seqs, r_pl, r_lens = rollouts
  items = jnp.concatenate([batch["items"], r_seqs])
  pl = jnp.concatenate([batch["prompt_lens"], r_pl])
  lens = jnp.concatenate([batch["lengths"], r_lens])
  expert = jnp.concatenate([batch["expert"], jnp.zeros_like(r_seqs, bool)])
  return seqmatch.build_one_pass(items, pl, lens, vocab_size=obj.vocab.num_actions,
                                 backspace_id=obj.vocab.backspace_id, eos_id=obj.eos_id,
                                 expert_BxN=expert)


def loss_parts(obj, b, r):
  """(params, one) -> the parts of the trainer's loss after the warm-up for b data rows then
  r rollouts: (1 - beta) * [-expert, value over data, value over rollouts, reg over data
  expert rows, reg over data noise rows, reg over rollouts] and beta * BC; they sum to the
  trainer's loss."""
  o = obj.opts
  is_data = jnp.arange(b + r) < b
  div = seqmatch.objective.get_divergence(o.divergence, o.alpha)
  horizon = int(o.horizon) or None
  ws, wb = 1.0 - float(o.beta), float(o.beta)

  def parts(params, one):
    logits, _ = obj.apply_fn(params, one.tokens, one.positions, one.mask)
    t = seqmatch.transition_terms(logits, one, backspace_id=obj.vocab.backspace_id,
                                  gamma=o.gamma, horizon=horizon)
    w, rr = t["w"], t["r"]
    ex = one.expert & is_data[:, None]
    if not o.reward_backspace:
      ex &= one.next_action != obj.vocab.backspace_id
    ex_term = jnp.sum(w * ex * div.phi(jnp.where(ex, rr, 0.0))) / b
    seq_w = jnp.where(is_data, (1.0 - o.model_share) / b, o.model_share / r)[:, None]
    val = seq_w * w * (t["v"] - o.gamma * t["v_next"])
    reg = seq_w * w * div.reg(rr)
    data, noise = is_data[:, None], is_data[:, None] & ~one.expert
    bc, _ = seqmatch.bc_loss(logits, one, is_data, backspace_id=obj.vocab.backspace_id)
    return {"-expert": -ws * ex_term,
            "value_data": ws * jnp.sum(jnp.where(data, val, 0.0)),
            "value_rollout": ws * jnp.sum(jnp.where(data, 0.0, val)),
            "reg_data_clean": ws * jnp.sum(jnp.where(data & ~noise, reg, 0.0)),
            "reg_data_noise": (ws * jnp.sum(jnp.where(noise, reg, 0.0))
                               if o.regularize_noise else jnp.zeros(())),
            "reg_rollout": ws * jnp.sum(jnp.where(data, 0.0, reg)),
            "bc": wb * bc}
  return parts


# jaxlib 0.10.2's XLA:CPU miscompiles a reduce that YNNPACK fuses between broadcasts along a
# new leading axis (experiments/tools/ynn_reduce_check.py): jacrev vmaps the VJP over the parts,
# so RMSNorm's backward x * sum(x * g_part) is exactly that, and jit(jacrev(parts)) came out
# wrong for every part but the first (relative error 0.5-40 on the dyck model; per-part
# jit(grad) and eager jacrev were right). Compiled without YNN fusions it is exact.
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def part_gradients(parts):
  """(params, one) -> {part: its gradient}: jit(jacrev(parts)), without YNN fusions on CPU."""
  opts = NO_YNN if jax.default_backend() == "cpu" else None
  return jax.jit(jax.jacrev(parts), compiler_options=opts)


def _check_sum(obj, params, one, key, vals):
  """The parts must add up to the library's loss (else the split is wrong)."""
  o = obj.opts
  logits, _ = obj.apply_fn(params, one.tokens, one.positions, one.mask)
  is_data = jnp.arange(sum(key)) < key[0]
  sm, _ = seqmatch.sequencematch_loss(
      logits, one, is_data, backspace_id=obj.vocab.backspace_id, gamma=o.gamma, alpha=o.alpha,
      divergence=o.divergence, reward_backspace=bool(o.reward_backspace),
      regularize_noise=bool(o.regularize_noise), horizon=int(o.horizon) or None,
      model_share=float(o.model_share))
  bc, _ = seqmatch.bc_loss(logits, one, is_data, backspace_id=obj.vocab.backspace_id)
  want = (1 - o.beta) * float(sm) + o.beta * float(bc)
  if not np.isclose(sum(vals.values()), want, rtol=1e-4, atol=1e-5):
    raise AssertionError(f"loss parts sum to {sum(vals.values())}, the loss is {want}")


def _flat(tree):
  return jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(tree)])


def _cos(a, b):
  return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30))


def gradients(trainer, params, batches=2, seed=0):
  obj = trainer.objective
  it = pipeline.make_train_iterator(trainer.task, "train", global_batch_size=trainer.batch_size,
                                    seq_len=trainer.seq_len, seed=seed + 100, read_threads=1)
  g_inv = _flat(jax.grad(_invalid_mass_fn(trainer))(params))
  rng = jax.random.PRNGKey(seed)
  acc, noise_cos, fns = {}, [], {}
  for i in range(batches):
    batch = {k: jnp.asarray(v) for k, v in obj.prepare_batch(next(it), 1000 + i).items()}
    grads = []
    for _ in range(2):   # two rollout draws on the same data batch
      rng, sub = jax.random.split(rng)
      ro = obj._rollouts(params, batch, sub)
      one = _one_pass(obj, batch, ro)
      key = (batch["items"].shape[0], ro[0].shape[0])
      if key not in fns:
        parts = loss_parts(obj, *key)
        fns[key] = (jax.jit(parts), part_gradients(parts))
      vals = {k: float(v) for k, v in fns[key][0](params, one).items()}
      _check_sum(obj, params, one, key, vals)
      g = {k: _flat(v) for k, v in fns[key][1](params, one).items()}
      grads.append(g)
      for k in vals:
        a = acc.setdefault(k, {"value": [], "grad_norm": [], "cos_invalid": []})
        a["value"].append(vals[k])
        a["grad_norm"].append(float(jnp.linalg.norm(g[k])))
        a["cos_invalid"].append(_cos(g[k], g_inv))
      total = sum(g.values())
      a = acc.setdefault("total", {"value": [], "grad_norm": [], "cos_invalid": []})
      a["value"].append(sum(vals.values()))
      a["grad_norm"].append(float(jnp.linalg.norm(total)))
      a["cos_invalid"].append(_cos(total, g_inv))
    roll = [g["value_rollout"] + g["reg_rollout"] for g in grads]
    noise_cos.append(_cos(roll[0], roll[1]))
  out = {k: {m: float(np.mean(v)) for m, v in a.items()} for k, a in acc.items()}
  out["rollout_draws_cos"] = float(np.mean(noise_cos))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--runs", required=True, help="comma-separated run dirs")
  ap.add_argument("--grads", action="store_true")
  ap.add_argument("--grads_at", default="",
                  help="run dir whose params the --grads are taken at (default: each run's)")
  ap.add_argument("--out", default="")
  a = ap.parse_args(argv)
  res = {}
  for run in a.runs.split(","):
    trainer = load_trainer(run)
    params = trainer.restore_params()
    r = teacher_forced(trainer, params)
    print(run, " ".join(f"{k} {v:.4f}" for k, v in r.items()), flush=True)
    if a.grads and trainer.objective.opts.loss == "sm":
      at = load_trainer(a.grads_at).restore_params() if a.grads_at else params
      r["grads"] = gradients(trainer, at)
      for k, v in r["grads"].items():
        print("   ", k, v, flush=True)
    res[run] = r
  if a.out:
    with open(a.out, "w") as f:
      json.dump(res, f, indent=1)


if __name__ == "__main__":
  main()
