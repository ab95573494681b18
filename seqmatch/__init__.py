"""seqmatch: SequenceMatch (imitation learning with a <bkspc> action) for any model function.

Never imports catrans or experiments: models enter through the model-function protocol
(seqmatch.model_fn). Pieces, one file each:
  vocab      <bkspc> ids, tokenizer wrapper, growing a pretrained embedding/head by one row
  masking    action-to-state collapse and the one-pass inputs (tokens, positions, mask, info)
  noise      data augmentation (noise token + <bkspc>) with the expert mask
  objective  SequenceMatch loss (pluggable divergence), BC loss, BC -> mix schedule
  decoding   batched KV-cache generation with <bkspc> (lax.while_loop) and rollouts
  prefixes   rollout prompts cut from (collapsed) data prefixes
"""
from seqmatch.decoding import Generation, generate, mask_backspace, rollout, sample_actions
from seqmatch.masking import (OnePass, build_one_pass, collapse, collapse_jax, collapse_states,
                              fit_width, validate)
from seqmatch.model_fn import ApplyFn, InitCacheFn
from seqmatch.noise import augment, augment_batch, model_noise_tokens, noise_sources
from seqmatch.prefixes import data_prefix_prompts
from seqmatch.objective import (DIVERGENCES, Divergence, bc_loss, chi2, combined_loss,
                                get_divergence, jensen_shannon, kl, mask_illegal_backspace,
                                schedule_weights, sequencematch_loss, total_variation,
                                transition_terms)
from seqmatch.vocab import BackspaceTokenizer, BackspaceVocab, extend_rows

__all__ = [
    "ApplyFn", "BackspaceTokenizer", "BackspaceVocab", "DIVERGENCES", "Divergence",
    "Generation", "InitCacheFn", "OnePass", "augment", "augment_batch", "bc_loss",
    "build_one_pass", "data_prefix_prompts", "chi2", "collapse", "collapse_jax", "collapse_states", "combined_loss",
    "extend_rows", "fit_width", "generate", "get_divergence", "jensen_shannon", "kl", "mask_backspace",
    "mask_illegal_backspace", "model_noise_tokens", "noise_sources", "rollout", "sample_actions", "schedule_weights",
    "sequencematch_loss", "total_variation", "transition_terms", "validate",
]
