"""Batched generation with <bkspc> on an append-only KV cache, inside one lax.while_loop.

(Named decoding, not generate, so that the package-level function seqmatch.generate does
not shadow the module.)

Every step appends one cache slot per sequence (the cache index is shared by the batch).
A token action writes its row at slot k with position len(state); a <bkspc> only changes
liveness: the popped token's slot is marked dead in every later mask. The restored state's
logits are known already: with reuse_logits=True (SPEC) they are read from a per-slot logits
store [B, S, A]; with reuse_logits=False the step instead writes a copy row of the restored
last token at its original position (the one-pass construction of masking.py), which needs no
[B, S, A] store (memory O(B S) instead of O(B S A), useful for large vocabularies). Slots of
backspace-in-reuse steps and of finished sequences are dead rows that attend only themselves.

<bkspc> is illegal (logit -inf) while the state is the bare prompt. <eos> (when eos_id is
given) is appended to the state and ends the sequence. At most max_actions actions are taken.

ban_undone=True: a token that <bkspc> erased gets logit -inf at the state it was erased back
to, for the rest of the generation (written into the stored logits of that state). The state
after a <bkspc> is the state before the token, so a greedy decoder would choose the same token
again and loop "x<bkspc>x<bkspc>..." until max_actions; with the ban it tries the next one.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqmatch import checks
from seqmatch.masking import fit_width


class Generation(NamedTuple):
  actions: jnp.ndarray        # int32 [B, T] action trace, pad_action after the end
  num_actions: jnp.ndarray    # int32 [B]
  tokens: jnp.ndarray         # int32 [B, P+T] final collapsed state (prompt included), pad_id after
  lengths: jnp.ndarray        # int32 [B] final state lengths
  sequences: jnp.ndarray      # int32 [B, P+T] prompt + actions, the layout masking.py consumes
  sequence_lengths: jnp.ndarray  # int32 [B] prompt_len + num_actions
  finished: jnp.ndarray       # bool [B] ended with <eos>


def sample_actions(logits_BxA, rng, temperature: float = 1.0):
  """Greedy (temperature == 0) or softmax(logits / temperature) sampling; [B] int32."""
  if temperature == 0:
    return jnp.argmax(logits_BxA, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, logits_BxA / temperature, axis=-1).astype(jnp.int32)


def mask_backspace(logits_BxA, at_prompt_B, backspace_id: int):
  """-inf on the <bkspc> logit where the state is the bare prompt."""
  hit = at_prompt_B[:, None] & (jnp.arange(logits_BxA.shape[-1]) == backspace_id)
  return jnp.where(hit, -jnp.inf, logits_BxA)


def _validate(prompts_BxP, prompt_lens_B, *, backspace_id, max_actions, temperature, eos_id,
              pad_id, pad_action, reuse_logits, ban_undone, max_len):
  """The host-side checks of generate (seqmatch.checks), on the caller's arrays before any
  cast. The ids that need the model's action count A are checked in _check_actions."""
  dtype, shape = checks.dtype_and_shape(prompts_BxP, "prompts_BxP")
  if len(shape) != 2:
    raise ValueError(f"prompts_BxP must be [B, P], got shape {shape}")
  b, p = shape
  checks.check_int_array(prompts_BxP, "prompts_BxP")      # dtype (no float ids), int32 range
  checks.check_int_array(prompt_lens_B, "prompt_lens_B", shape=(b,))
  if not checks.is_int(max_actions) or max_actions < 1:
    raise ValueError(f"max_actions must be >= 1 (an integer), got {max_actions!r}")
  if max_len is not None and p + max_actions > checks.check_int(max_len, "max_len", lo=1):
    raise ValueError(f"prompt width {p} + max_actions {max_actions} exceeds max_len {max_len}")
  checks.check_number(temperature, "temperature", lo=0.0)
  checks.check_int(pad_action, "pad_action")
  checks.check_bool(reuse_logits, "reuse_logits")
  checks.check_bool(ban_undone, "ban_undone")
  if ban_undone and not reuse_logits:
    raise ValueError("ban_undone writes into the stored logits: it needs reuse_logits=True")
  if not checks.is_concrete(prompts_BxP, prompt_lens_B):
    return
  pr, pl = np.asarray(prompts_BxP), np.asarray(prompt_lens_B)
  if np.any(pl < 1) or np.any(pl > p):
    raise ValueError(f"prompt_lens_B must be in [1, P={p}], got {pl.tolist()}")
  inside = np.arange(p)[None] < pl[:, None]
  if np.any(inside & ((pr < 0) | (pr == backspace_id))):
    raise ValueError(f"prompt ids must be >= 0 and not <bkspc> ({backspace_id})")


def _check_actions(a, prompts_BxP, prompt_lens_B, *, backspace_id, eos_id, pad_id):
  """backspace_id, eos_id (or None) and pad_id integers in [0, A) (A: the model's action
  count), and the prompts' ids too when concrete."""
  if not checks.is_int(backspace_id) or not 0 <= backspace_id < a:
    raise ValueError(f"backspace_id {backspace_id!r} outside the model's {a} actions")
  if eos_id is not None:
    checks.check_int(eos_id, "eos_id", 0, a - 1)
  checks.check_int(pad_id, "pad_id", 0, a - 1)
  if checks.is_concrete(prompts_BxP, prompt_lens_B):
    pr, p = np.asarray(prompts_BxP), np.shape(prompts_BxP)[1]
    bad = (np.arange(p)[None] < np.asarray(prompt_lens_B)[:, None]) & (pr >= a)
    if bad.any():
      raise ValueError(f"prompt id {int(pr[bad][0])} outside the model's {a} actions")


def generate(apply_fn, init_cache_fn, params, prompts_BxP, prompt_lens_B, rng, *,
             max_actions: int, backspace_id: int, eos_id: int | None = None,
             temperature: float = 1.0, reuse_logits: bool = True, pad_id: int = 0,
             pad_action: int = -1, ban_undone: bool = False,
             max_len: int | None = None) -> Generation:
  """Decodes up to max_actions actions per prompt (see module doc). jit with
  functools.partial over the non-array arguments.

  Args:
    apply_fn, init_cache_fn: the model function (seqmatch.model_fn).
    prompts_BxP: int32 prompts, left-aligned, padded to P; prompt_lens_B in [1, P].
    rng: PRNG key; step s samples with jax.random.fold_in(rng, s).
    max_len: the model's position limit; when given, P + max_actions must fit (positions
      reach P + max_actions - 1). seqmatch cannot read it from the model function.

  Checked before any work (seqmatch.checks), errors naming the argument: prompts_BxP an
  integer [B, P] array (dtype read before any cast), prompt_lens_B an integer [B] array;
  max_actions an integer >= 1 (and P + max_actions <= max_len when given); temperature a
  finite number >= 0; backspace_id, eos_id (or None) and pad_id integers in [0, A), A = the
  model's actions (read from the model function's output shape, no compute); pad_action an
  integer; reuse_logits / ban_undone bools. When concrete: prompt_lens_B in [1, P] and the
  prompt ids in [0, A), not <bkspc>. Traced inputs are checked for dtype and shape only.
  """
  _validate(prompts_BxP, prompt_lens_B, backspace_id=backspace_id, max_actions=max_actions,
            temperature=temperature, eos_id=eos_id, pad_id=pad_id, pad_action=pad_action,
            reuse_logits=reuse_logits, ban_undone=ban_undone, max_len=max_len)
  prompts_BxP, prompt_lens_B = jnp.asarray(prompts_BxP), jnp.asarray(prompt_lens_B)
  b, p = prompts_BxP.shape
  t_max = max_actions
  s = p + t_max
  idx_s = jnp.arange(s)
  pl = prompt_lens_B.astype(jnp.int32)
  # Prompt padding may hold any value (e.g. -1); feed id 0 there so no out-of-range gather
  # (NaN embeddings in dead cache slots would still poison attention via 0 * NaN).
  prompts_BxP = jnp.where(jnp.arange(p)[None] < pl[:, None], prompts_BxP, 0).astype(jnp.int32)

  # Prefill: prompt rows see earlier prompt rows; padding rows see only themselves.
  rows = jnp.arange(p)
  pmask = (idx_s[None, None, :] <= rows[None, :, None]) & (
      (idx_s[None, None, :] < pl[:, None, None]) | (idx_s[None, None, :] == rows[None, :, None]))
  cache = init_cache_fn(b, s)
  positions = jnp.broadcast_to(rows.astype(jnp.int32), (b, p))
  # The action count from shapes only (no compute), so bad input fails before any work.
  a = jax.eval_shape(lambda *x: apply_fn(*x, cache=cache)[0], params, prompts_BxP, positions,
                     pmask).shape[-1]
  _check_actions(a, prompts_BxP, pl, backspace_id=backspace_id, eos_id=eos_id, pad_id=pad_id)
  logits_BxPxA, cache = apply_fn(params, prompts_BxP, positions, pmask, cache=cache)
  logits_BxPxA = logits_BxPxA.astype(jnp.float32)
  cur = logits_BxPxA[jnp.arange(b), pl - 1]
  if reuse_logits:
    store = jnp.zeros((b, s, a), jnp.float32).at[:, :p].set(logits_BxPxA)
  else:
    store = jnp.zeros((b, 0, a), jnp.float32)   # unused

  alive = idx_s[None] < pl[:, None]
  stack = jnp.broadcast_to(idx_s, (b, s)).astype(jnp.int32)   # prompt slot j holds token j
  slot_tok = jnp.zeros((b, s), jnp.int32).at[:, :p].set(prompts_BxP)
  slot_pos = jnp.broadcast_to(idx_s, (b, s)).astype(jnp.int32)
  seqs = jnp.where(idx_s[None] < pl[:, None], slot_tok, pad_id)
  bidx = jnp.arange(b)

  def cond(c):
    return (c["step"] < t_max) & ~jnp.all(c["done"])

  def body(c):
    step, h = c["step"], c["h"]
    logits = mask_backspace(c["cur"], h <= pl, backspace_id)
    act = sample_actions(logits, jax.random.fold_in(rng, step), temperature)
    active = ~c["done"]
    is_bk = active & (act == backspace_id)
    is_tok = active & ~is_bk
    k = p + step
    alive, stack = c["alive"], c["stack"]
    top = stack[bidx, h - 1]
    # <bkspc>: the popped token's slot dies.
    alive = alive.at[bidx, top].set(jnp.where(is_bk, False, alive[bidx, top]))
    h_new = jnp.where(is_bk, h - 1, jnp.where(is_tok, h + 1, h))
    restored = stack[bidx, h_new - 1]
    if reuse_logits:
      row_tok = jnp.where(is_tok, act, 0)
      row_pos = jnp.where(is_tok, h, 0)
      live_row = is_tok
      stack = stack.at[bidx, h].set(jnp.where(is_tok, k, stack[bidx, h]))
    else:
      # Copy row of the restored last token at its position; the original slot dies.
      row_tok = jnp.where(is_tok, act, jnp.where(is_bk, c["slot_tok"][bidx, restored], 0))
      row_pos = jnp.where(is_tok, h, jnp.where(is_bk, c["slot_pos"][bidx, restored], 0))
      live_row = active
      alive = alive.at[bidx, restored].set(jnp.where(is_bk, False, alive[bidx, restored]))
      slot = jnp.where(is_bk, h_new - 1, h)
      stack = stack.at[bidx, slot].set(jnp.where(active, k, stack[bidx, slot]))
    alive = alive.at[:, k].set(live_row)
    row_mask = jnp.where(live_row[:, None], alive, idx_s[None] == k)
    out, cache = apply_fn(params, row_tok[:, None], row_pos[:, None], row_mask[:, None],
                          cache=c["cache"])
    out = out[:, 0].astype(jnp.float32)
    if reuse_logits:
      store = c["store"].at[:, k].set(out)
      if ban_undone:   # The erased token, at the restored state's slot.
        erased = c["slot_tok"][bidx, top]
        store = store.at[bidx, restored, erased].set(
            jnp.where(is_bk, -jnp.inf, store[bidx, restored, erased]))
      new_cur = jnp.where(is_tok[:, None], out,
                          jnp.where(is_bk[:, None], store[bidx, restored], c["cur"]))
    else:
      store = c["store"]
      new_cur = jnp.where(active[:, None], out, c["cur"])
    n = c["n"]
    actions = c["actions"].at[:, step].set(jnp.where(active, act, pad_action))
    wpos = jnp.minimum(pl + n, s - 1)
    seqs = c["seqs"].at[bidx, wpos].set(jnp.where(active, act, c["seqs"][bidx, wpos]))
    done = c["done"] | (active & (act == eos_id) if eos_id is not None else c["done"])
    return dict(step=step + 1, h=h_new, alive=alive, stack=stack,
                slot_tok=c["slot_tok"].at[:, k].set(row_tok),
                slot_pos=c["slot_pos"].at[:, k].set(row_pos), cur=new_cur, store=store,
                cache=cache, actions=actions, seqs=seqs, n=n + active.astype(jnp.int32),
                done=done, finished=c["finished"] | (done & ~c["done"]))

  init = dict(step=jnp.zeros((), jnp.int32), h=pl, alive=alive, stack=stack,
              slot_tok=slot_tok, slot_pos=slot_pos, cur=cur, store=store, cache=cache,
              actions=jnp.full((b, t_max), pad_action, jnp.int32), seqs=seqs,
              n=jnp.zeros((b,), jnp.int32), done=jnp.zeros((b,), bool),
              finished=jnp.zeros((b,), bool))
  c = jax.lax.while_loop(cond, body, init)
  tokens = jnp.where(idx_s[None] < c["h"][:, None],
                     jnp.take_along_axis(c["slot_tok"], c["stack"], axis=1), pad_id)
  return Generation(actions=c["actions"], num_actions=c["n"], tokens=tokens, lengths=c["h"],
                    sequences=c["seqs"], sequence_lengths=pl + c["n"], finished=c["finished"])


def rollout(apply_fn, params, prompts_BxP, prompt_lens_B, rng, *, init_cache_fn,
            max_actions: int, backspace_id: int, eos_id: int | None = None,
            temperature: float = 1.0, reuse_logits: bool = True, width: int | None = None,
            pad_id: int = 0):
  """Training rollouts from the current policy, gradient-free (params are stop_gradient'ed).

  Returns (sequences_BxN, prompt_lens_B, lengths_B) ready for masking.build_one_pass (with
  is_data_B = False in the objective). N = P + max_actions, or `width` when given: sequences
  are then cut or padded to width (lengths clipped; a cut rollout simply ends, done = 1 at its
  last transition) so they concatenate with a data batch of that width."""
  params = jax.lax.stop_gradient(params)
  g = generate(apply_fn, init_cache_fn, params, prompts_BxP, prompt_lens_B, rng,
               max_actions=max_actions, backspace_id=backspace_id, eos_id=eos_id,
               temperature=temperature, reuse_logits=reuse_logits, pad_id=pad_id)
  seqs, lens = g.sequences, g.sequence_lengths
  pl = jnp.asarray(prompt_lens_B, jnp.int32)
  if width is not None:
    if width < prompts_BxP.shape[1]:
      raise ValueError(f"width {width} is shorter than the prompts ({prompts_BxP.shape[1]})")
    seqs, lens = fit_width(seqs, lens, width, pad_id=pad_id)
  return jax.lax.stop_gradient(seqs), pl, jax.lax.stop_gradient(lens)
