"""Answer accuracy on the arithmetic test questions by generation with <bkspc>.

  python -m experiments.reports.arithmetic_eval --workdir=DIR [--max_questions=200] [--no_ban]

Reads the run's config.json, restores its newest checkpoint, decodes every test prompt
greedily (KV cache, <bkspc> allowed, at most max_actions actions) and scores the final
text after backspaces against the exact answer. Writes DIR/arithmetic_eval.json.

Greedy decoding alone cannot use a backspace: the state after '<bkspc>' is the state before
the erased token, so the same token comes again ('1<bkspc>1<bkspc>...' until max_actions).
By default a token erased back to a state is banned there (seqmatch.generate(ban_undone=
True)), so a retry is the next-best token; the accuracy without the ban is reported beside it
(accuracy_without_ban). A model that never backspaces decodes the same either way.
accuracy_no_backspace decodes with <bkspc> forbidden: the difference to accuracy is what the
model's own undoing is worth, with everything else (its token choices) the same."""
import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import seqmatch
from experiments.runs import load_trainer
from experiments.tasks import arithmetic


def evaluate(trainer, state, *, max_questions=200, max_actions=16, batch_size=50,
             ban_undone=True):
  """Accuracy, <bkspc> rate and samples of greedy decoding (ban_undone: see the module doc;
  with it, also accuracy_without_ban), and accuracy_no_backspace: the same decoding with the
  <bkspc> logit at -inf, so accuracy - accuracy_no_backspace is what undoing buys."""
  r = _evaluate(trainer, state, max_questions, max_actions, batch_size, ban_undone)
  if ban_undone:
    plain = _evaluate(trainer, state, max_questions, max_actions, batch_size, False)
    r.update(accuracy_without_ban=plain["accuracy"],
             backspace_rate_without_ban=plain["backspace_rate"])
  r["accuracy_no_backspace"] = _evaluate(trainer, state, max_questions, max_actions,
                                         batch_size, False, forbid_backspace=True)["accuracy"]
  return r


def _forbidding_backspace(apply_fn, backspace_id):
  def apply(params, tokens, positions, mask, cache=None):
    logits, cache = apply_fn(params, tokens, positions, mask, cache=cache)
    return logits.at[..., backspace_id].set(-jnp.inf), cache
  return apply


def _evaluate(trainer, state, max_questions, max_actions, batch_size, ban_undone,
              forbid_backspace=False):
  obj = trainer.objective
  tok = trainer.task.tokenizer
  questions = list(trainer.task.source("test"))[:max_questions]
  prompts = [[tok.bos_id] + tok.encode(q["prompt"]) for q in questions]
  p = max(len(x) for x in prompts)
  apply_fn = (_forbidding_backspace(obj.apply_fn, obj.vocab.backspace_id) if forbid_backspace
              else obj.apply_fn)
  gen = jax.jit(functools.partial(
      seqmatch.generate, apply_fn, obj.init_cache_fn, max_actions=max_actions,
      backspace_id=obj.vocab.backspace_id, eos_id=tok.eos_id, temperature=0.0,
      ban_undone=ban_undone))
  correct, backspaces, actions, rows = 0, 0, 0, []
  params = trainer.eval_params(state)
  show = seqmatch.BackspaceTokenizer(tok, obj.vocab.backspace_id)
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    pad = batch_size - len(chunk)
    arr = np.zeros((batch_size, p), np.int32)
    for i, x in enumerate(chunk):
      arr[i, :len(x)] = x
    lens = np.array([len(x) for x in chunk] + [1] * pad, np.int32)
    g = jax.device_get(gen(params, jnp.asarray(arr), jnp.asarray(lens), jax.random.PRNGKey(0)))
    for i, q in enumerate(questions[start:start + len(chunk)]):
      final = [int(t) for t in g.tokens[i, lens[i]:g.lengths[i]] if t != tok.eos_id]
      answer = tok.decode(final)
      acts = g.actions[i, :g.num_actions[i]]
      ok = arithmetic.score(q, answer)
      correct += ok
      backspaces += int((acts == obj.vocab.backspace_id).sum())
      actions += int(g.num_actions[i])
      rows.append({"prompt": q["prompt"], "answer": q["answer"], "generated": answer,
                   "correct": bool(ok), "trace": show.decode(acts.tolist(), mode="show")})
  n = len(questions)
  return {"accuracy": correct / n, "num_questions": n, "ban_undone": ban_undone,
          "backspace_rate": backspaces / max(actions, 1), "samples": rows[:20]}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--max_questions", type=int, default=200)
  ap.add_argument("--max_actions", type=int, default=16)
  ap.add_argument("--no_ban", action="store_true",
                  help="plain greedy decoding (an erased token may come straight back)")
  a = ap.parse_args()
  trainer = load_trainer(a.workdir)
  result = evaluate(trainer, trainer.restore_latest(), max_questions=a.max_questions,
                    max_actions=a.max_actions, ban_undone=not a.no_ban)
  with open(os.path.join(a.workdir, "arithmetic_eval.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(f"accuracy {result['accuracy']:.3f} on {result['num_questions']} questions "
        f"(without the ban: {result.get('accuracy_without_ban', result['accuracy']):.3f}; "
        f"<bkspc> forbidden: {result['accuracy_no_backspace']:.3f}); "
        f"backspace rate {result['backspace_rate']:.3f}")


if __name__ == "__main__":
  main()
