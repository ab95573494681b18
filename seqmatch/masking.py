"""One-pass inputs for action sequences with <bkspc>, and action-to-state collapse.

Sequence layout used everywhere in seqmatch (data, noise augmentation, rollouts):
  sequences_BxN: item t of [prompt tokens ..., actions ..., padding]; the prompt is
    prompt_lens_B[b] >= 1 items, the valid part lengths_B[b] items (prompt + actions).
  Row t of the one-pass forward holds item t and its logits are l(.|s_t), s_t = the collapsed
  state after items 0..t. Row t is also transition i = t - (prompt_len - 1): state s_t,
  action item t+1, next state s_{t+1} (whose logits are row t+1's).

Construction (SPEC 3): a token action a_t becomes a row with token a_t at position
len(state) - 1; a <bkspc> becomes a row holding a copy of the token that is now last, at that
token's original position; every row attends only the rows alive in its own state (the
deleted token and the superseded row that the copy replaces are dead for all later rows).
The copy row is needed because the restored state's logits must be produced *at row t*; the
original row is killed so that the token is not seen twice.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqmatch import checks


class OnePass(NamedTuple):
  """Inputs and per-row bookkeeping of the one-pass forward; all [B, N] unless noted."""
  tokens: jnp.ndarray            # int32 model input ids
  positions: jnp.ndarray         # int32 positions
  mask: jnp.ndarray              # bool [B, N, N], True = row may attend row
  state_len: jnp.ndarray         # int32 len(s_t) (prompt included)
  valid: jnp.ndarray             # bool, t < length
  is_backspace: jnp.ndarray      # bool, item t is a <bkspc> action
  bkspc_illegal: jnp.ndarray     # bool, len(s_t) == prompt_len: <bkspc> logit -> -inf at row t
  is_transition: jnp.ndarray     # bool, prompt_len - 1 <= t <= length - 2
  next_action: jnp.ndarray       # int32 item t+1 (0 where not a transition)
  transition_index: jnp.ndarray  # int32 i = t - (prompt_len - 1) (0 where not a transition)
  done: jnp.ndarray              # bool, transition whose action is <eos> or is the last one
  expert: jnp.ndarray            # bool, transition whose action is an expert target


# ----------------------------------------------------------------------------- reference
def collapse(sequence, prompt_len: int, backspace_id: int) -> list[int]:
  """Reference (numpy/Python) collapse of one sequence: apply each <bkspc> to the state.

  Raises ValueError on a <bkspc> inside the prompt or at the prompt boundary."""
  return collapse_states(sequence, prompt_len, backspace_id)[-1]


def collapse_states(sequence, prompt_len: int, backspace_id: int) -> list[list[int]]:
  """Reference: the state s_t after every item t (list of len(sequence) token lists)."""
  seq = [int(x) for x in np.asarray(sequence).reshape(-1)]
  if not 1 <= prompt_len <= len(seq):
    raise ValueError(f"prompt_len must be in [1, {len(seq)}], got {prompt_len}")
  state, states = [], []
  for t, a in enumerate(seq):
    if a == backspace_id:
      if t < prompt_len:
        raise ValueError(f"<bkspc> (id {backspace_id}) inside the prompt at item {t}")
      if len(state) <= prompt_len:
        raise ValueError(f"<bkspc> at item {t} would delete a prompt token (state length "
                         f"{len(state)} == prompt_len {prompt_len})")
      state.pop()
    else:
      state.append(a)
    states.append(list(state))
  return states


# ----------------------------------------------------------------------------- validation
def validate(sequences_BxN, prompt_lens_B, lengths_B, *, vocab_size: int,
             backspace_id: int, eos_id: int | None = None) -> None:
  """The checks of build_one_pass (seqmatch.checks), on the caller's arrays before any cast:
  vocab_size an integer >= 1; backspace_id and eos_id (or None) integers in [0, vocab_size);
  sequences_BxN an integer [B, N] array; prompt_lens_B and lengths_B integer [B] arrays.
  When concrete: 1 <= prompt_lens_B <= lengths_B <= N, the ids inside lengths_B in
  [0, vocab_size) and no illegal <bkspc> (inside the prompt, or deleting a prompt token)."""
  checks.check_int(vocab_size, "vocab_size", lo=1)
  if not checks.is_int(backspace_id) or not 0 <= backspace_id < vocab_size:
    raise ValueError(f"backspace_id {backspace_id!r} outside the action vocabulary "
                     f"[0, {vocab_size})")
  if eos_id is not None:
    checks.check_int(eos_id, "eos_id", 0, vocab_size - 1)
  dtype, shape = checks.dtype_and_shape(sequences_BxN, "sequences_BxN")
  if len(shape) != 2:
    raise ValueError(f"sequences_BxN must be [B, N], got shape {shape}")
  checks.check_int_array(sequences_BxN, "sequences_BxN")   # dtype; int32 range
  b, n = shape
  for name, x in (("prompt_lens_B", prompt_lens_B), ("lengths_B", lengths_B)):
    checks.check_int_array(x, name, shape=(b,))
  if not checks.is_concrete(sequences_BxN, prompt_lens_B, lengths_B):
    return
  seq, pl, ln = (np.asarray(x) for x in (sequences_BxN, prompt_lens_B, lengths_B))
  if np.any(pl < 1) or np.any(pl > ln) or np.any(ln > n):
    raise ValueError(f"need 1 <= prompt_lens_B <= lengths_B <= N={n}; got prompt_lens "
                     f"{pl.tolist()}, lengths {ln.tolist()}")
  inside = np.arange(n)[None] < ln[:, None]
  bad = inside & ((seq < 0) | (seq >= vocab_size))
  if bad.any():
    bi, ti = np.argwhere(bad)[0]
    raise ValueError(f"sequences_BxN: action id {int(seq[bi, ti])} at [{bi}, {ti}] outside "
                     f"the action vocabulary [0, {vocab_size})")
  for bi in range(b):
    collapse_states(seq[bi, :ln[bi]], int(pl[bi]), backspace_id)  # raises on illegal <bkspc>


# ----------------------------------------------------------------------------- jit version
def _scan_one(seq_N, prompt_len, length, backspace_id):
  """Runs the construction over one sequence. Returns per-row outputs and the final carry."""
  n = seq_N.shape[0]
  rows = jnp.arange(n)

  def step(carry, inp):
    stack, h, alive, tok, pos = carry
    t, a = inp
    valid = t < length
    is_bk = valid & (t >= prompt_len) & (a == backspace_id)
    is_tok = valid & ~is_bk
    # <bkspc>: pop the top (never below the prompt; an illegal one only re-copies the top).
    pop = is_bk & (h > prompt_len)
    alive = jnp.where(pop, alive.at[stack[h - 1]].set(False), alive)
    h_bk = jnp.where(pop, h - 1, h)
    r = stack[h_bk - 1]                      # row now holding the last token
    # token action: push row t at position h.
    new_tok = jnp.where(is_bk, tok[r], jnp.where(is_tok, a, 0))
    new_pos = jnp.where(is_bk, pos[r], jnp.where(is_tok, h, 0))
    alive = jnp.where(is_bk, alive.at[r].set(False), alive)
    alive = jnp.where(valid, alive.at[t].set(True), alive)
    slot = jnp.where(is_bk, h_bk - 1, h)
    stack = jnp.where(valid, stack.at[slot].set(t), stack)
    h = jnp.where(is_bk, h_bk, jnp.where(is_tok, h + 1, h))
    tok, pos = tok.at[t].set(new_tok), pos.at[t].set(new_pos)
    # Padding rows see only themselves so their softmax stays finite; nobody sees them.
    row_mask = jnp.where(valid, alive, rows == t)
    return (stack, h, alive, tok, pos), (new_tok, new_pos, row_mask, h, is_bk)

  zeros = jnp.zeros((n,), jnp.int32)
  init = (zeros, jnp.zeros((), jnp.int32), jnp.zeros((n,), bool), zeros, zeros)
  return jax.lax.scan(step, init, (rows, seq_N.astype(jnp.int32)))


def _parallel_one(seq_N, prompt_len, length, backspace_id):
  """The construction of _scan_one in closed form, O(N^2) array ops and no sequential loop
  (a scan of N dependent steps is what an accelerator runs worst). Same per-row outputs.

  The state height h_t is the running sum of +1 (token) / -1 (<bkspc>) with a floor at the
  prompt (an illegal <bkspc> changes nothing): a reflected walk, S_t + max(0, max_s pl - S_s).
  Every valid row t writes stack level slot_t = h_t - 1 at position slot_t (a token pushes
  there; a <bkspc> copies the level that is now on top), so row u is alive in state t iff
  u <= t, its level is still inside the state and no later row up to t wrote that level."""
  n = seq_N.shape[0]
  t = jnp.arange(n)
  a = seq_N.astype(jnp.int32)
  valid = t < length
  is_bk = valid & (t >= prompt_len) & (a == backspace_id)
  is_tok = valid & ~is_bk
  walk = jnp.cumsum(jnp.where(is_tok, 1, jnp.where(is_bk, -1, 0)))
  below = jnp.where(t >= prompt_len - 1, prompt_len - walk, 0)
  h = walk + jnp.maximum(jax.lax.cummax(below), 0)
  slot = jnp.where(valid, h - 1, -1)
  later_u_v = (t[None, :] > t[:, None]) & (slot[None, :] == slot[:, None]) & valid[None, :]
  next_writer = jnp.min(jnp.where(later_u_v, t[None, :], n), axis=1)              # [u]
  alive_t_u = ((t[None, :] <= t[:, None]) & valid[None, :]
               & (slot[None, :] <= h[:, None] - 1) & (next_writer[None, :] > t[:, None]))
  mask = jnp.where(valid[:, None], alive_t_u, t[None, :] == t[:, None])
  pushed_t_u = (t[None, :] < t[:, None]) & is_tok[None, :] & (slot[None, :] == slot[:, None])
  last_push = jnp.max(jnp.where(pushed_t_u, t[None, :], 0), axis=1)
  tok = jnp.where(is_bk, a[last_push], jnp.where(is_tok, a, 0))
  pos = jnp.where(valid, slot, 0)
  return tok, pos, mask, h, is_bk


def collapse_jax(sequences_BxN, prompt_lens_B, lengths_B, *, backspace_id: int,
                 pad_id: int = 0):
  """jit-compatible collapse: (states_BxN int32 padded with pad_id, state_lens_B int32)."""
  def one(seq, pl, ln):
    (stack, h, _, tok, _), _ = _scan_one(seq, pl, ln, backspace_id)
    idx = jnp.arange(seq.shape[0])
    return jnp.where(idx < h, tok[stack], pad_id), h
  return jax.vmap(one)(jnp.asarray(sequences_BxN), jnp.asarray(prompt_lens_B),
                       jnp.asarray(lengths_B))


def build_one_pass(sequences_BxN, prompt_lens_B, lengths_B, *, vocab_size: int,
                   backspace_id: int, eos_id: int | None = None,
                   expert_BxN=None, method: str = "scan") -> OnePass:
  """Model inputs and per-row info for a batch of padded action sequences (see module doc).

  Args:
    sequences_BxN: int ids in [0, vocab_size) (vocab_size = actions incl. <bkspc>).
    prompt_lens_B, lengths_B: int32, 1 <= prompt_len <= length <= N.
    eos_id: an <eos> action ends the episode (done = 1) when given.
    expert_BxN: bool aligned with the items (from noise.augment); default all True. Row t's
      transition is expert iff item t+1 is.
    method: 'scan' (step by step over the items) or 'parallel' (the same rows in closed form,
      O(N^2) array ops and no loop; tested equal). On a 2-core CPU the scan is faster
      (bench_seqmatch); 'parallel' is for accelerators, where a loop of N dependent steps is
      the slow part (not yet measured on one).
  Returns OnePass; feed apply_fn(params, out.tokens, out.positions, out.mask).
  Checked before any cast (validate, with errors naming the argument): integer arrays
  (float lengths are not truncated, int64 ids not wrapped), shapes, vocab_size, backspace_id
  and eos_id in the vocabulary, expert_BxN a bool [B, N] array, method; values (lengths, ids,
  illegal <bkspc>) only on concrete inputs: under jit an illegal <bkspc> (at the prompt
  boundary) leaves the state unchanged (its row re-copies the last token).
  """
  if method not in ("parallel", "scan"):
    raise ValueError(f"build_one_pass method must be 'parallel' or 'scan', got {method!r}")
  validate(sequences_BxN, prompt_lens_B, lengths_B, vocab_size=vocab_size,
           backspace_id=backspace_id, eos_id=eos_id)
  b, n = np.shape(sequences_BxN)
  if expert_BxN is not None:
    checks.check_bool_array(expert_BxN, "expert_BxN", shape=(b, n))
  sequences_BxN = jnp.asarray(sequences_BxN)
  prompt_lens_B, lengths_B = jnp.asarray(prompt_lens_B), jnp.asarray(lengths_B)
  expert_BxN = jnp.ones((b, n), bool) if expert_BxN is None else jnp.asarray(expert_BxN)

  def one(seq, pl, ln):
    if method == "parallel":
      return _parallel_one(seq, pl, ln, backspace_id)
    _, (tok, pos, mask, h, is_bk) = _scan_one(seq, pl, ln, backspace_id)
    return tok, pos, mask, h, is_bk
  tok, pos, mask, h, is_bk = jax.vmap(one)(sequences_BxN, prompt_lens_B, lengths_B)

  t = jnp.arange(n)[None]
  pl, ln = prompt_lens_B[:, None], lengths_B[:, None]
  valid = t < ln
  is_tr = (t >= pl - 1) & (t <= ln - 2)
  nxt = jnp.concatenate([sequences_BxN[:, 1:], jnp.zeros((b, 1), sequences_BxN.dtype)], 1)
  nxt = jnp.where(is_tr, nxt, 0).astype(jnp.int32)
  done = is_tr & (t == ln - 2)
  if eos_id is not None:
    done = done | (is_tr & (nxt == eos_id))
  exp_next = jnp.concatenate([expert_BxN[:, 1:], jnp.zeros((b, 1), bool)], 1)
  return OnePass(
      tokens=tok, positions=pos, mask=mask, state_len=h, valid=valid,
      is_backspace=is_bk, bkspc_illegal=h <= pl, is_transition=is_tr, next_action=nxt,
      transition_index=jnp.where(is_tr, t - (pl - 1), 0).astype(jnp.int32), done=done,
      expert=is_tr & exp_next.astype(bool))


def fit_width(sequences_BxN, lengths_B, width: int, *, pad_id: int = 0):
  """Cuts or pads a batch of sequences to `width` items (lengths clipped, tails = pad_id),
  e.g. to concatenate rollouts with a data batch. A cut sequence simply ends there (its last
  transition gets done = 1). jit-compatible; returns (sequences_BxW int32, lengths_B int32)."""
  if width < 1:
    raise ValueError(f"width must be >= 1, got {width}")
  seqs = jnp.asarray(sequences_BxN)
  n = seqs.shape[1]
  seqs = seqs[:, :width] if n >= width else jnp.pad(seqs, ((0, 0), (0, width - n)),
                                                    constant_values=pad_id)
  lens = jnp.minimum(jnp.asarray(lengths_B, jnp.int32), width)
  return jnp.where(jnp.arange(width)[None] < lens[:, None], seqs, pad_id).astype(jnp.int32), lens
