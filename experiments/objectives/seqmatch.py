"""SequenceMatch on the catrans trunk: <bkspc> added to the task's vocabulary, noise
augmentation on the host, one-pass masking, the chi2 (or another divergence) occupancy loss
with optional on-policy rollouts inside the compiled step, and the BC -> mixture schedule.

config.objective keys (all optional except name):
  loss          'sm' (SequenceMatch with the BC warm-up) | 'bc' (cross-entropy on augmented
                data: "MLE + backspace")
  divergence    chi2 | kl | tv | js (seqmatch.DIVERGENCES); gamma, alpha as in the paper
  reward_backspace, regularize_noise  (True, True: the paper's) seqmatch.sequencematch_loss
  horizon       H of the gamma^i weights' normaliser; 0 = the padded length N - 1 (SPEC).
                L_BC averages over the few answer targets while L_SM's weights are spread
                over N - 1 rows, so with long padding L_SM is a small fraction of the mixture;
                a horizon near the answer's length gives it a weight comparable to L_BC's
  bc_steps, beta  k BC steps, then (1 - beta) L_SM + beta L_BC
  p_noise, noise  augmentation rate and kind: random | ground_truth (from the task module) |
                model (the current policy's own mistakes: the host picks where, the compiled
                step samples which token from the policy at that state, never the true one)
  max_items     N, the padded action-sequence length (seq_len + room for noise pairs)
  rollouts      rollouts per step (prompts from the first rows' data prefixes); 0 = none
  rollout_prompt_len, rollout_max_actions, rollout_temperature
  model_share   weight of the rollouts in E_mix when a batch has any (0.5: the mixture
                occupancy (rho_data + rho_model) / 2)
  rollout_every m: 1 = fresh rollouts inside every step; m > 1 = a replay buffer of the
                `rollouts` sequences, regenerated from the current policy every m steps
                (generation cost / m; the rows are up to m - 1 updates stale) and carried
                in the train state, so a resumed run continues with the same buffer
"""
import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import seqmatch
from catrans.transformer import Transformer, init_cache
from experiments.objectives.base import Objective

DEFAULTS = dict(loss="sm", divergence="chi2", gamma=0.998, alpha=0.01, bc_steps=100, beta=0.1,
                p_noise=0.1, noise="random", max_items=0, rollouts=0, rollout_prompt_len=40,
                rollout_max_actions=12, rollout_temperature=1.0, rollout_every=1,
                reward_backspace=True, regularize_noise=True, horizon=0, model_share=0.5)


def catrans_model_fn(model, cfg, params_fn=lambda p: p):
  """The seqmatch model-function protocol for a catrans Transformer; params_fn maps the
  trained tree to the one the model applies (Objective.model_params: LoRA merging)."""
  def apply_fn(params, tokens, positions, mask, cache=None):
    out = model.apply({"params": params_fn(params)}, tokens, positions, mask, cache=cache)
    return out.logits, out.cache

  def init_cache_fn(batch_size, cache_len):
    return init_cache(cfg, batch_size, cache_len)
  return apply_fn, init_cache_fn


def rows_to_sequences(batch):
  """Pipeline rows (inputs/targets/weights/segment_ids, padding mode) -> whole documents
  [B, L+1] with their lengths and prompt lengths (bos + the zero-weight prompt targets)."""
  inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
  live = np.asarray(batch["segment_ids"]) > 0
  if np.any(np.asarray(batch["segment_ids"]) > 1):
    raise ValueError("seqmatch needs one document per row: set data.mode='padding'")
  seqs = np.concatenate([inputs[:, :1], targets], axis=1)
  lengths = live.sum(1) + 1
  weights = np.asarray(batch["weights"]) > 0
  first_target = np.where(weights.any(1), weights.argmax(1), live.sum(1))
  return seqs, lengths.astype(np.int32), (first_target + 1).astype(np.int32)


class SequenceMatch(Objective):
  # Its action sequences (noise, backspaces) and rollout prompts are laid out on seq_len.
  supports_length_buckets = False
  supports_lora = True

  def __init__(self, config, task):
    opts = dict(DEFAULTS)
    unknown = sorted(set(config.objective) - set(DEFAULTS) - {"name"})
    if unknown:
      raise ValueError(f"unknown seqmatch objective keys {unknown}; known: {sorted(DEFAULTS)}")
    opts.update({k: v for k, v in config.objective.items() if k != "name"})
    self.opts = ml_collections.ConfigDict(opts)
    if self.opts.loss not in ("sm", "bc"):
      raise ValueError(f"objective.loss={self.opts.loss!r}; choose 'sm' or 'bc'")
    self.vocab = seqmatch.BackspaceVocab(task.tokenizer.vocab_size)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.vocab_size = self.vocab.num_actions
    super().__init__(config, task)
    self.n_items = int(self.opts.max_items or config.data.seq_len + 1)
    self.apply_fn, self.init_cache_fn = catrans_model_fn(self.model, self.model_config,
                                                         self.model_params)
    self.eos_id = task.tokenizer.eos_id
    self._ground_truth = None
    if self.opts.noise not in seqmatch.noise.KINDS:
      raise ValueError(f"objective.noise={self.opts.noise!r}; known: {seqmatch.noise.KINDS}")
    if self.opts.noise == "ground_truth":
      module = importlib.import_module(f"experiments.tasks.{task.name}")
      if not hasattr(module, "ground_truth_noise"):
        raise ValueError(f"task {task.name!r} has no ground_truth_noise(); use noise=random")
      self._ground_truth = self._token_noise(module.ground_truth_noise)

  def make_model(self):
    return Transformer(self.model_config)

  def pretrained_trunk(self):
    """The pretrained trunk with a <bkspc> row (mean of the real rows) in its embedding and,
    if untied, its logits head: seqmatch.extend_rows."""
    trunk = super().pretrained_trunk()
    if trunk is None:
      return None
    n = self.vocab.backspace_id            # == the pretrained vocabulary size
    trunk = dict(trunk)
    trunk["embed"] = {"embedding": np.asarray(seqmatch.extend_rows(
        trunk["embed"]["embedding"], n, axis=0))}
    if "unembed" in trunk:
      trunk["unembed"] = np.asarray(seqmatch.extend_rows(trunk["unembed"], n, axis=1))
    return trunk

  def _token_noise(self, text_noise):
    """Adapts a task's text-level noise(prompt, answer_prefix, rng) -> char to token ids."""
    tok = self.task.tokenizer

    def fn(prefix_tokens, true_next, rng, prompt_len):
      prefix = [int(t) for t in prefix_tokens[1:]]  # drop bos
      prompt = tok.decode(prefix[:prompt_len - 1])
      answer = tok.decode(prefix[prompt_len - 1:])
      ids = tok.encode(text_noise(prompt, answer, rng))
      return ids[0] if ids else int(rng.integers(3, tok.vocab_size))
    return fn

  # --- host side ---------------------------------------------------------------------------
  def prepare_batch(self, local_batch, step):
    seqs, lengths, prompt_lens = rows_to_sequences(local_batch)
    n = self.n_items
    clean, clean_lens = map(np.asarray, seqmatch.fit_width(seqs, lengths, n))
    if step < 0 or self.opts.p_noise <= 0:  # eval: the clean expert data
      expert = np.arange(n)[None] < clean_lens[:, None]
      return {"items": clean, "expert": expert, "lengths": clean_lens,
              "prompt_lens": prompt_lens}
    rng = np.random.default_rng([int(self.config.seed), int(step), jax.process_index()])
    if self._ground_truth is not None:
      items, expert, lens = seqmatch.augment_batch(
          seqs, lengths, prompt_lens, rng, max_len=n, p_noise=self.opts.p_noise,
          backspace_id=self.vocab.backspace_id, kind="ground_truth",
          prompt_ground_truth_fn=self._ground_truth)
    else:
      # 'model': token 0 holds each noise slot until fill_model_noise writes the policy's own
      # mistake there on device (the host has no parameters).
      placeholder = np.zeros_like(seqs) if self.opts.noise == "model" else None
      items, expert, lens = seqmatch.augment_batch(
          seqs, lengths, prompt_lens, rng, max_len=n, p_noise=self.opts.p_noise,
          backspace_id=self.vocab.backspace_id, kind=self.opts.noise,
          base_vocab_size=self.vocab.base_vocab_size, model_tokens_BxL=placeholder)
    out = {"items": items, "expert": expert, "lengths": lens, "prompt_lens": prompt_lens}
    if self.opts.noise == "model":
      out.update(clean_items=clean, clean_lengths=clean_lens,
                 noise_source=seqmatch.noise_sources(items, expert, prompt_lens, lens,
                                                     self.vocab.backspace_id))
    return out

  def fill_model_noise(self, params, batch, rng):
    """noise='model': every noise slot gets a token sampled from the current policy at the
    clean state it was inserted into, never the true next token (seqmatch.model_noise_tokens
    on a gradient-free forward over the clean sequences). Returns the batch with new items."""
    clean, src = batch["clean_items"], batch["noise_source"]
    one = seqmatch.build_one_pass(clean, batch["prompt_lens"], batch["clean_lengths"],
                                  vocab_size=self.vocab.num_actions,
                                  backspace_id=self.vocab.backspace_id, eos_id=self.eos_id)
    logits, _ = self.apply_fn(jax.lax.stop_gradient(params), one.tokens, one.positions,
                              one.mask)
    z = seqmatch.model_noise_tokens(logits, clean, rng,
                                    base_vocab_size=self.vocab.base_vocab_size)
    picked = jnp.take_along_axis(z, jnp.maximum(src, 0), axis=1)
    return dict(batch, items=jnp.where(src >= 0, picked, batch["items"]))

  # --- device side -------------------------------------------------------------------------
  def _rollouts(self, params, batch, rng):
    r, p = int(self.opts.rollouts), int(self.opts.rollout_prompt_len)
    prompts = batch["items"][:r, :p]
    prompt_lens = jnp.minimum(batch["prompt_lens"][:r], p)
    seqs, pl, lens = seqmatch.rollout(
        self.apply_fn, params, prompts, prompt_lens, rng, init_cache_fn=self.init_cache_fn,
        max_actions=int(self.opts.rollout_max_actions), backspace_id=self.vocab.backspace_id,
        eos_id=self.eos_id, temperature=float(self.opts.rollout_temperature))
    n = self.n_items
    width = seqs.shape[1]
    if width < n:
      seqs = jnp.pad(seqs, ((0, 0), (0, n - width)))
    seqs, lens = seqs[:, :n], jnp.minimum(lens, n)
    seqs = jnp.where(jnp.arange(n)[None] < lens[:, None], seqs, 0)
    return seqs, pl, lens

  # --- replay buffer (rollout_every > 1) ----------------------------------------------------
  def _uses_buffer(self) -> bool:
    return (self.opts.loss == "sm" and int(self.opts.rollouts) > 0
            and int(self.opts.rollout_every) > 1)

  def init_aux(self):
    if not self._uses_buffer():
      return None
    r = int(self.opts.rollouts)
    return {"items": jnp.zeros((r, self.n_items), jnp.int32),
            "prompt_lens": jnp.ones((r,), jnp.int32), "lengths": jnp.ones((r,), jnp.int32),
            "refreshed_at": jnp.full((), -1, jnp.int32)}

  def update_aux(self, aux, params, batch, rng, step):
    def refresh(aux):
      seqs, pl, lens = self._rollouts(jax.lax.stop_gradient(params), batch, rng)
      return {"items": seqs.astype(jnp.int32), "prompt_lens": pl.astype(jnp.int32),
              "lengths": lens.astype(jnp.int32), "refreshed_at": step.astype(jnp.int32)}
    return jax.lax.cond(step % int(self.opts.rollout_every) == 0, refresh, lambda a: a, aux)

  def aux_batch(self, aux):
    return {"replay_items": aux["items"], "replay_prompt_lens": aux["prompt_lens"],
            "replay_lengths": aux["lengths"]}

  def loss(self, params, batch, rng, step):
    if "noise_source" in batch:
      rng, noise_rng = jax.random.split(rng)
      batch = self.fill_model_noise(params, batch, noise_rng)
    items, pl, lens = batch["items"], batch["prompt_lens"], batch["lengths"]
    expert = batch["expert"]
    b = items.shape[0]
    is_data = jnp.ones((b,), bool)
    use_sm = self.opts.loss == "sm"
    if use_sm and "replay_items" in batch:
      r_seqs, r_pl, r_lens = (batch["replay_items"], batch["replay_prompt_lens"],
                              batch["replay_lengths"])
    elif use_sm and self.opts.rollouts:
      r_seqs, r_pl, r_lens = self._rollouts(params, batch, rng)
    if use_sm and (self.opts.rollouts or "replay_items" in batch):
      items = jnp.concatenate([items, r_seqs])
      pl, lens = jnp.concatenate([pl, r_pl]), jnp.concatenate([lens, r_lens])
      expert = jnp.concatenate([expert, jnp.zeros_like(r_seqs, bool)])
      is_data = jnp.concatenate([is_data, jnp.zeros((r_seqs.shape[0],), bool)])
    one = seqmatch.build_one_pass(items, pl, lens, vocab_size=self.vocab.num_actions,
                                  backspace_id=self.vocab.backspace_id, eos_id=self.eos_id,
                                  expert_BxN=expert)
    logits, _ = self.apply_fn(params, one.tokens, one.positions, one.mask)
    bc, bc_metrics = seqmatch.bc_loss(logits, one, is_data, backspace_id=self.vocab.backspace_id)
    metrics = dict(bc_metrics, weight=bc_metrics["bc/num_targets"].astype(jnp.float32))
    if not use_sm:
      return bc, dict(metrics, loss=bc)
    sm, sm_metrics = seqmatch.sequencematch_loss(
        logits, one, is_data, backspace_id=self.vocab.backspace_id, gamma=self.opts.gamma,
        alpha=self.opts.alpha, divergence=self.opts.divergence,
        reward_backspace=bool(self.opts.reward_backspace),
        regularize_noise=bool(self.opts.regularize_noise),
        horizon=int(self.opts.horizon) or None, model_share=float(self.opts.model_share))
    total = seqmatch.combined_loss(step, sm, bc, bc_steps=int(self.opts.bc_steps),
                                   beta=float(self.opts.beta))
    metrics.update(sm_metrics)
    return total, dict(metrics, loss=total, **{"sm/loss": sm})

  def eval_metrics(self, params, batch):
    one = seqmatch.build_one_pass(batch["items"], batch["prompt_lens"], batch["lengths"],
                                  vocab_size=self.vocab.num_actions,
                                  backspace_id=self.vocab.backspace_id, eos_id=self.eos_id,
                                  expert_BxN=batch["expert"])
    logits, _ = self.apply_fn(params, one.tokens, one.positions, one.mask)
    bc, m = seqmatch.bc_loss(logits, one, backspace_id=self.vocab.backspace_id)
    return {"loss": bc, "weight": m["bc/num_targets"].astype(jnp.float32)}


def make_objective(config, task):
  return SequenceMatch(config, task)
