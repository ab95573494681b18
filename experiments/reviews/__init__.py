"""Pieces of the "CAT on reviews" report (experiments/reports/reviews_report.py), shared with
the scripts that compare against it (smollm2_compare, steer_sweep, backtrack_eval).

  runs        the five runs, the report's sizes and steering prompts
  data        test reviews as padded token arrays, prompts, joining prompts and generations
  estimation  P(fresh | first f of a review): CAT, a prefix classifier, Monte Carlo
  steering    steered generations scored by an independent judge, the plain LM's
              perplexity of them, distinct-n
  plots       the report's PNGs
  judges      text judges P(fresh): the independent VADER lexicon, the classifier 'judge'
  equal_ppl   steering methods compared at shared perplexities, bootstrap intervals
  sweep_setup steer_sweep's two setups (urn bits --quick; the reviews runs)
"""
