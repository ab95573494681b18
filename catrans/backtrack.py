"""Attribute-aware backtracking: decoding that takes <bkspc> when CAT's estimate of the target
attribute drops too far after a token (neither the CAT nor the SequenceMatch paper has it).

State s (length h), its estimate q(s): P(a = target | s) read the CAT way, at the token that
made s (q(s_{t-1} + v) = P(a | s_{t-1}, v) from the attribute head at candidate v); for the bare
prompt, the marginal sum_v p(v | s) P(a | s, v). One action per step:
  - pending forced <bkspc> (the previous token dropped q by more than `threshold`): pop that
    token, restore the state, and ban the token at that state so the decoder does not loop;
  - otherwise the policy (a steerer + sample/greedy, or a catrans.steering.SteeringConfig rule)
    picks among the unbanned tokens. With a SequenceMatch-trained model (`backspace_id` inside
    its vocabulary) it may pick <bkspc> itself (never at the bare prompt): a pop without ban.
A pushed token v is flagged when q(s) - P(a | s, v) > threshold; the next action undoes it. If
every token of a state is banned, the bans are lifted there and the token is kept unchecked;
with max_retries, after that many undos at a state the next token there is kept unchecked.
A row ends after EOS or max_new_tokens kept tokens (and no pending undo), or when the batch
has taken max_actions actions; `unresolved` marks rows that stopped with an undo pending.

The cache follows seqmatch.decoding: append-only, one slot per action for the whole batch; a
pop only marks the token's slot dead in later masks, and the restored state's outputs (logits,
attributes, hidden) are read from a per-slot store, so a <bkspc> step writes a dead row that
attends only itself. seqmatch itself never imports catrans; this module is the glue."""
import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from catrans import attributes as attr_lib
from catrans import sampling, validation
from catrans import steerers as st
from catrans.cat_model import init_cat_cache
from catrans.search import token_scores
from catrans.steering import SteeringConfig, check_steering, choose_token


@dataclasses.dataclass(frozen=True)
class BacktrackRule:
  """Force <bkspc> when P(attribute = value) drops by more than threshold after a token
  (threshold None: never force; only a SequenceMatch model's own <bkspc> backtracks)."""
  attribute: str
  value: int = 1
  threshold: float | None = 0.1
  max_retries: int | None = None   # force at most this many undos per state, then accept:
                                   # unbounded retries ban every likely token of a state and
                                   # keep an unlikely one (fluency collapses)

  def __post_init__(self):
    # The class range needs the model: backtrack_decode checks value there.
    if self.threshold is not None:
      validation.check_number(self.threshold, "BacktrackRule.threshold", lo=0.0)
    validation.check_optional_int(self.max_retries, "BacktrackRule.max_retries", lo=0)


@dataclasses.dataclass(frozen=True)
class SamplePolicy:
  """Token choice from log p + steerer: temperature 0 = greedy, else top-k / top-p sampling."""
  steerer: st.Steerer = st.none()
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not isinstance(self.steerer, st.Steerer):
      raise TypeError(f"SamplePolicy.steerer must be a Steerer, got {self.steerer!r}")
    validation.check_sampling(self.temperature, self.top_k, self.top_p)


class BacktrackResult(NamedTuple):
  tokens: jnp.ndarray          # [B, P + T] prompt (right-padded) then the kept new tokens
  new_tokens: jnp.ndarray      # [B, T] the final state's new tokens (pad_id after)
  lengths: jnp.ndarray         # [B] kept new tokens (EOS included)
  actions: jnp.ndarray         # [B, A] action trace: tokens and backspace_id; -1 after the end
  num_actions: jnp.ndarray     # [B]
  num_backspaces: jnp.ndarray  # [B] forced and chosen
  unresolved: jnp.ndarray      # [B] stopped (action budget) with a forced undo pending
  q: jnp.ndarray               # [B] estimate of the final state


def policy_attributes(policy) -> tuple:
  if isinstance(policy, SteeringConfig):
    return tuple(t.name for t in policy.targets)
  return policy.steerer.attributes


def choose_action(model, policy, logits_BxV, attrs, hidden_BxD, step, rng):
  """[B] int32: the policy's choice (the caller masks banned / illegal actions in logits)."""
  if isinstance(policy, SteeringConfig):
    return choose_token(model, logits_BxV, attrs, rng, policy)[0]
  score = token_scores(policy.steerer, logits_BxV, attrs, hidden_BxD, step)
  return sampling.choose(score, rng, temperature=policy.temperature, top_k=policy.top_k,
                         top_p=policy.top_p)


def target_probs(model, rule: BacktrackRule, attrs):
  """P(a = value | s, v) for every candidate v: [B, V]."""
  return attr_lib.probabilities(model.cat.spec(rule.attribute), attrs[rule.attribute])[
      ..., int(rule.value)]


def prompt_estimate(model, rule, logits_BxV, attrs):
  """q of a bare prompt: sum_v p(v | s) P(a | s, v)."""
  p = jax.nn.softmax(logits_BxV.astype(jnp.float32), axis=-1)
  return (p * target_probs(model, rule, attrs)).sum(-1)


def decide(model, policy, rule, logits_BxV, attrs, hidden_BxD, banned_BxV, at_prompt_B, step,
           rng, backspace_id):
  """One decision at the current states: (action [B], unchecked [B], P(a | s, action) [B]).
  Shared by the fast decoder and the tests' from-scratch reference."""
  all_banned = banned_BxV.all(-1)
  if rule.max_retries is not None:   # out of retries: keep whatever comes, unchecked
    all_banned = all_banned | (banned_BxV.sum(-1) >= rule.max_retries)
  banned_BxV = banned_BxV & ~banned_BxV.all(-1)[:, None]
  logits = jnp.where(banned_BxV, sampling.NEG, logits_BxV.astype(jnp.float32))
  v = jnp.arange(logits.shape[-1])
  if backspace_id is not None and backspace_id < logits.shape[-1]:
    logits = jnp.where(at_prompt_B[:, None] & (v == backspace_id)[None], sampling.NEG, logits)
  act = choose_action(model, policy, logits, attrs, hidden_BxD, step, rng)
  q_next = jnp.take_along_axis(target_probs(model, rule, attrs), act[:, None], -1)[:, 0]
  return act, all_banned, q_next


def backtrack_decode(model, params, prompts_BxP, prompt_lens_B, rng, *, policy, rule,
                     max_new_tokens: int, max_actions: int, eos_id: int | None = None,
                     backspace_id: int | None = None, pad_id: int = 0) -> BacktrackResult:
  """Decodes with attribute-aware backtracking (module doc). model: a CATModel with the
  rule's attribute; policy: SamplePolicy or SteeringConfig; backspace_id: the model's own
  <bkspc> action (a SequenceMatch vocabulary), or None: forced <bkspc> only, recorded in the
  trace as id vocab_size.

  Checked on the host before jit (catrans.validation): rule a BacktrackRule on a class
  attribute of the model with value a class in its range; policy a SamplePolicy (fields
  checked when built) or a SteeringConfig (targets checked as in steered_decode); prompts as
  steered_decode; max_actions an integer >= max_new_tokens; eos_id / pad_id integers in
  [0, vocab_size); backspace_id None or an integer in [0, vocab_size); rng a PRNG key."""
  if not isinstance(rule, BacktrackRule):
    raise TypeError(f"rule must be a BacktrackRule, got {type(rule).__name__}")
  spec = validation.check_attribute(model, rule.attribute, "rule.attribute")
  if spec.kind == "numeric":
    raise ValueError("backtracking reads a class probability; the attribute is numeric")
  rule = dataclasses.replace(rule, value=validation.check_class(
      spec, rule.value, "rule.value (BacktrackRule.value)", integral_floats=True))
  if isinstance(policy, SteeringConfig):
    policy = check_steering(model, policy)
  elif not isinstance(policy, SamplePolicy):
    raise TypeError(f"policy must be a SamplePolicy or a SteeringConfig, got "
                    f"{type(policy).__name__}")
  for name in policy_attributes(policy):
    validation.check_attribute(model, name, "policy attribute")
  validation.check_prompts(prompts_BxP, prompt_lens_B, model.cfg.vocab_size,
                           model.cfg.max_len, max_new_tokens)
  validation.check_int(max_actions, "max_actions", lo=max_new_tokens)
  validation.check_decode_ids(model.cfg.vocab_size, eos_id, pad_id)
  validation.check_optional_int(backspace_id, "backspace_id", 0, model.cfg.vocab_size - 1)
  validation.check_rng(rng)
  return _backtrack(model, params, jnp.asarray(prompts_BxP), jnp.asarray(prompt_lens_B), rng,
                    policy=policy, rule=rule, max_new_tokens=max_new_tokens,
                    max_actions=max_actions, eos_id=eos_id, backspace_id=backspace_id,
                    pad_id=pad_id)


@functools.partial(jax.jit, static_argnames=("model", "policy", "rule", "max_new_tokens",
                                             "max_actions", "eos_id", "backspace_id", "pad_id"))
def _backtrack(model, params, prompts_BxP, prompt_lens_B, rng, *, policy, rule, max_new_tokens,
               max_actions, eos_id, backspace_id, pad_id):
  b, p = prompts_BxP.shape
  names = tuple(dict.fromkeys(policy_attributes(policy) + (rule.attribute,)))
  bk_id = model.cfg.vocab_size if backspace_id is None else backspace_id
  s = p + max_actions
  depth = p + max_new_tokens + 2          # state lengths 0 .. P + T, and one spare
  slots = jnp.arange(s)
  bi = jnp.arange(b)
  pl = prompt_lens_B.astype(jnp.int32)
  rows = jnp.arange(p)
  pmask = (slots[None, None] <= rows[None, :, None]) & (
      (slots[None, None] < pl[:, None, None]) | (slots[None, None] == rows[None, :, None]))
  out = model.apply({"params": params}, prompts_BxP,
                    jnp.broadcast_to(rows.astype(jnp.int32), (b, p)), pmask,
                    cache=init_cat_cache(model.cfg, model.cat, b, s), all_tokens=True)

  def pad_slots(x_BxPx):   # per-slot store: prompt rows now, one row per action later
    return jnp.zeros((b, s) + x_BxPx.shape[2:], x_BxPx.dtype).at[:, :p].set(x_BxPx)

  store = {"logits": pad_slots(out.logits.astype(jnp.float32)), "hidden": pad_slots(out.hidden),
           "attrs": {n: pad_slots(out.attributes[n]) for n in names}}
  last = pl - 1
  cur = jax.tree.map(lambda x: x[bi, last], store)
  q0 = prompt_estimate(model, rule, cur["logits"], cur["attrs"])
  vocab = cur["logits"].shape[-1]

  def cond(c):
    return (c["step"] < max_actions) & ~jnp.all(c["done"])

  def body(c):
    step, h, cur = c["step"], c["h"], c["cur"]
    active = ~c["done"]
    banned_now = c["banned"][bi, h]
    act, lifted, q_next = decide(model, policy, rule, cur["logits"], cur["attrs"],
                                 cur["hidden"], banned_now, h <= pl, h - pl,
                                 jax.random.fold_in(rng, step), backspace_id)
    forced = active & c["pending"]
    chosen_bk = active & ~forced & (act == bk_id)
    is_bk = forced | chosen_bk
    is_tok = active & ~is_bk
    flag = is_tok & ~lifted & ((c["q"][bi, h] - q_next > rule.threshold)
                               if rule.threshold is not None else False)
    k = p + step
    stack, alive, banned, qd = c["stack"], c["alive"], c["banned"], c["q"]
    # <bkspc>: the top token's slot dies; a forced undo bans that token at the restored state.
    top = stack[bi, h - 1]
    alive = alive.at[bi, top].set(jnp.where(is_bk, False, alive[bi, top]))
    popped = c["slot_tok"][bi, top]
    banned = banned.at[bi, h - 1, popped].set(banned[bi, h - 1, popped] | forced)
    # A token: a live row at slot k, position h; the state h + 1 is new, so are its bans.
    stack = stack.at[bi, h].set(jnp.where(is_tok, k, stack[bi, h]))
    qd = qd.at[bi, h + 1].set(jnp.where(is_tok, q_next, qd[bi, h + 1]))
    banned = banned.at[bi, h + 1].set(jnp.where(is_tok[:, None], False, banned[bi, h + 1]))
    alive = alive.at[:, k].set(is_tok)
    h_new = jnp.where(is_bk, h - 1, jnp.where(is_tok, h + 1, h))
    row_tok = jnp.where(is_tok, act, 0)
    row_mask = jnp.where(is_tok[:, None], alive, slots[None] == k)
    o = model.apply({"params": params}, row_tok[:, None], jnp.where(is_tok, h, 0)[:, None],
                    row_mask[:, None], cache=c["cache"], all_tokens=True)
    new = {"logits": o.logits[:, 0].astype(jnp.float32), "hidden": o.hidden[:, 0],
           "attrs": {n: o.attributes[n][:, 0] for n in names}}
    store = jax.tree.map(lambda st_, x: st_.at[:, k].set(x), c["store"], new)
    restored = jax.tree.map(lambda st_: st_[bi, stack[bi, h_new - 1]], store)
    pick = lambda a, b_, c_: jnp.where(
        is_tok.reshape((-1,) + (1,) * (a.ndim - 1)), a,
        jnp.where(is_bk.reshape((-1,) + (1,) * (a.ndim - 1)), b_, c_))
    cur = jax.tree.map(pick, new, restored, cur)
    kept = is_tok & ~flag
    ended = kept & (((act == eos_id) if eos_id is not None else False)
                    | (h_new - pl >= max_new_tokens))
    return dict(step=step + 1, h=h_new, stack=stack, alive=alive, banned=banned, q=qd,
                slot_tok=c["slot_tok"].at[:, k].set(row_tok), store=store, cur=cur,
                cache=o.cache, pending=flag, done=c["done"] | ended,
                actions=c["actions"].at[:, step].set(
                    jnp.where(active, jnp.where(is_bk, bk_id, act), -1)),
                n=c["n"] + active.astype(jnp.int32),
                n_bk=c["n_bk"] + is_bk.astype(jnp.int32))

  init = dict(step=jnp.zeros((), jnp.int32), h=pl,
              stack=jnp.broadcast_to(jnp.arange(depth), (b, depth)).astype(jnp.int32),
              alive=slots[None] < pl[:, None], banned=jnp.zeros((b, depth, vocab), bool),
              q=jnp.zeros((b, depth), jnp.float32).at[bi, pl].set(q0),
              slot_tok=jnp.zeros((b, s), jnp.int32).at[:, :p].set(prompts_BxP), store=store,
              cur=cur, cache=out.cache, pending=jnp.zeros((b,), bool),
              done=jnp.zeros((b,), bool), actions=jnp.full((b, max_actions), -1, jnp.int32),
              n=jnp.zeros((b,), jnp.int32), n_bk=jnp.zeros((b,), jnp.int32))
  c = jax.lax.while_loop(cond, body, init)
  # The final state: depth j >= P_b holds the token of slot stack[j].
  j = jnp.arange(max_new_tokens)
  d_BxT = jnp.minimum(pl[:, None] + j[None], depth - 1)
  toks = jnp.take_along_axis(c["slot_tok"], jnp.take_along_axis(c["stack"], d_BxT, 1), 1)
  n_new = c["h"] - pl
  new = jnp.where(j[None] < n_new[:, None], toks, pad_id)
  return BacktrackResult(jnp.concatenate([prompts_BxP, new], axis=1), new, n_new,
                         c["actions"], c["n"], c["n_bk"], c["pending"] & ~c["done"],
                         c["q"][bi, c["h"]])
