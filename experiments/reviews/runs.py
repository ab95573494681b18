"""The five reviews runs (experiments/configs/reviews_cat.py), the sizes every reviews script
measures them at and its steering prompts, so the report and the scripts that compare against
it (smollm2_compare, steer_sweep, backtrack_eval) agree."""
import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from experiments import runs
from experiments.configs.reviews_cat import get_config
from experiments.reviews import data, steering

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
CLASS_NAMES = ("rotten", "fresh")


@dataclasses.dataclass(frozen=True)
class Sizes:
  num_reviews: int          # estimation: CAT and the classifier
  mc_reviews: tuple         # ((N, reviews), ...): Monte Carlo subsets (the first reviews)
  rows_per_call: int        # Monte Carlo rows sampled per call (memory: KV cache per row)
  ppl_reviews: int | None   # perplexity: None = the whole test split
  openings: int             # steering: neutral openings used ...
  samples_per_opening: int  # ... and samples of each
  opposite_prompts: int     # steering: openings of reviews of the other class
  prompt_words: int
  max_prompt_bytes: int
  max_new_tokens: int
  gammas: tuple


# Prompt + new tokens stay within the training length (64 tokens; tiny 24), so the judge and
# the LM read every generated token.
FULL = Sizes(num_reviews=300, mc_reviews=((16, 64), (64, 64)), rows_per_call=512,
             ppl_reviews=None, openings=6, samples_per_opening=4, opposite_prompts=24,
             prompt_words=8, max_prompt_bytes=60, max_new_tokens=40, gammas=(1.0, 3.0, 9.0))
TINY = Sizes(num_reviews=8, mc_reviews=((16, 4), (64, 4)), rows_per_call=64, ppl_reviews=16,
             openings=2, samples_per_opening=2, opposite_prompts=4, prompt_words=3,
             max_prompt_bytes=16, max_new_tokens=8, gammas=(2.0,))


def load_run(root: str, run: str, tiny: bool):
  """(Trainer, params) of root/run, training it first (or finishing it) when needed."""
  return runs.trained(get_config(run + (",tiny" if tiny else "")), os.path.join(root, run))


def steering_prompts(tok, reviews_by_class, target: int, sizes) -> tuple[list[str], list[str]]:
  """(prompt texts, prompt-set name per row): neutral openings, then openings of reviews of
  the other class."""
  neutral = [o for o in steering.NEUTRAL_OPENINGS[:sizes.openings]
             for _ in range(sizes.samples_per_opening)]
  opposite = [data.first_words(r["text"], sizes.prompt_words, sizes.max_prompt_bytes)
              for r in reviews_by_class[1 - target][:sizes.opposite_prompts]]
  return neutral + opposite, ["neutral"] * len(neutral) + ["opposite"] * len(opposite)


def steering_prompt_ids(tok, task, target: int, sizes=FULL, seed: int = 0):
  """steer_sweep's prompts for one target as arrays (the same reviews reviews_setup picks):
  (prompts [N, P] right-padded, lengths [N], prompt-set name per row [N])."""
  others = data.test_reviews(task, 10 ** 9, seed + 1)
  by_class = {c: [r for r in others if int(r["label"]) == c] for c in (0, 1)}
  texts, sets = steering_prompts(tok, by_class, target, sizes)
  ids = [[tok.bos_id] + tok.encode(x) for x in texts]
  p, lens = data.right_pad(ids, max(len(x) for x in ids), tok.pad_id)
  return jnp.asarray(p), jnp.asarray(lens), np.asarray(sets)
