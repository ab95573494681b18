"""Decoding under composable steerers (catrans.steerers): sampling, greedy and beam search,
each one jit-compiled lax.scan over the new tokens with the KV cache.

Token score at state s:  score(v) = log p(v | s) + steerer(logits, attrs, hidden, step)(v).
  sample  temperature / top-k / top-p sampling of softmax(score)
  greedy  argmax score
  beam    width W per prompt; a beam's score is the sum of its tokens' scores; each step keeps
          the W best (beam, token) extensions of all W x V, and the cache rows, histories and
          lengths of the kept beams are gathered from their parents. A beam that emitted EOS is
          finished: its one continuation is pad at an unchanged score, so it keeps its place
          while live beams must beat it. The answer is the beam with the best
          score / new_tokens ** length_penalty (0: the raw sum; EOS counts as a token).
Prompts are right-padded to P; row r's new token i goes to cache slot P + i at position
prompt_len_r + i (as in catrans.steering)."""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from catrans import sampling, validation
from catrans import steerers as st
from catrans.cat_model import init_cat_cache

MODES = ("sample", "greedy", "beam")


class SearchResult(NamedTuple):
  tokens: jnp.ndarray        # [B, P + T] prompt (right-padded) then the chosen new tokens
  new_tokens: jnp.ndarray    # [B, T] (pad_id after EOS)
  lengths: jnp.ndarray       # [B] new tokens (EOS included)
  score: jnp.ndarray         # [B] sum of the chosen tokens' scores (log p + steerer)
  beams: jnp.ndarray         # [B, W, T] every final beam (W = 1 unless beam), best first
  beam_scores: jnp.ndarray   # [B, W] their ranking scores (length-normalised if asked)
  beam_lengths: jnp.ndarray  # [B, W]


def reorder_cache(cache, rows_R):
  """The CAT cache with its batch rows gathered (beam parents). Trunk k/v are
  [layers, B, S, H, D]; the 'block' branch's k/v are [B, S, H, D]; the index is shared."""
  trunk = dict(cache["trunk"], k=cache["trunk"]["k"][:, rows_R],
               v=cache["trunk"]["v"][:, rows_R])
  attr = cache["attr"]
  if attr is not None:
    attr = {"k": attr["k"][rows_R], "v": attr["v"][rows_R]}
  return {"trunk": trunk, "attr": attr}


def token_scores(steerer, logits_RxV, attrs, hidden_RxD, step):
  """log p(v | s) + steerer score: [R, V] float32."""
  logp = jax.nn.log_softmax(logits_RxV.astype(jnp.float32), axis=-1)
  return logp + steerer(logits_RxV, attrs, hidden_RxD, step)


def decode(model, params, prompts_BxP, prompt_lens_B, rng=None, *, steerer=None,
           mode: str = "sample", max_new_tokens: int, eos_id: int | None = None,
           pad_id: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           beam_width: int = 4, length_penalty: float = 0.0) -> SearchResult:
  """Decodes max_new_tokens per prompt with a CATModel (or any model whose apply returns a
  CATOutput) under `steerer` (default: none) in `mode` (module doc). rng: needed by 'sample'.

  Checked on the host before jit (catrans.validation): mode; steerer a Steerer reading
  attributes of the model; prompts as steered_decode (integer ids [B, P], prompt_lens_B in
  [1, P], P + max_new_tokens <= max_len); eos_id / pad_id integers in [0, vocab_size);
  temperature finite >= 0, top_k an integer >= 0, top_p in (0, 1]; beam_width an integer
  >= 1; length_penalty finite; rng a PRNG key."""
  validation.check_choice(mode, "mode", MODES)
  if mode == "beam":
    validation.check_positive(beam_width, "beam_width")
  if mode == "sample" and rng is None:
    raise ValueError("mode='sample' needs an rng")
  steerer = st.none() if steerer is None else steerer
  if not isinstance(steerer, st.Steerer):
    raise TypeError(f"steerer must be a catrans.steerers.Steerer, got {type(steerer).__name__}")
  for name in steerer.attributes:
    validation.check_attribute(model, name, "steerer attribute")
  validation.check_prompts(prompts_BxP, prompt_lens_B, model.cfg.vocab_size,
                           model.cfg.max_len, max_new_tokens)
  validation.check_decode_ids(model.cfg.vocab_size, eos_id, pad_id)
  validation.check_sampling(temperature, top_k, top_p)
  validation.check_finite_number(length_penalty, "length_penalty")
  if rng is not None:
    validation.check_rng(rng)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  return _decode(model, params, jnp.asarray(prompts_BxP), jnp.asarray(prompt_lens_B), rng,
                 steerer=steerer, mode=mode, max_new_tokens=max_new_tokens, eos_id=eos_id,
                 pad_id=pad_id, temperature=float(temperature), top_k=top_k,
                 top_p=float(top_p), width=beam_width if mode == "beam" else 1,
                 length_penalty=float(length_penalty))


@functools.partial(jax.jit, static_argnames=(
    "model", "steerer", "mode", "max_new_tokens", "eos_id", "pad_id", "temperature", "top_k",
    "top_p", "width", "length_penalty"))
def _decode(model, params, prompts_BxP, prompt_lens_B, rng, *, steerer, mode, max_new_tokens,
            eos_id, pad_id, temperature, top_k, top_p, width, length_penalty):
  b, p = prompts_BxP.shape
  w, t_max = width, max_new_tokens
  r = b * w
  names = steerer.attributes
  s = p + t_max
  slots = jnp.arange(s)
  # Every prompt is prefilled once per beam (W rows): simpler than copying cache rows, and
  # the prompt is read once per decode.
  prompts_RxP = jnp.repeat(prompts_BxP, w, axis=0)
  pl_R = jnp.repeat(prompt_lens_B.astype(jnp.int32), w)
  rows = jnp.arange(p)
  pmask = (slots[None, None] <= rows[None, :, None]) & (
      (slots[None, None] < pl_R[:, None, None]) | (slots[None, None] == rows[None, :, None]))
  out = model.apply({"params": params}, prompts_RxP,
                    jnp.broadcast_to(rows.astype(jnp.int32), (r, p)), pmask,
                    cache=init_cat_cache(model.cfg, model.cat, r, s), all_tokens=bool(names))
  ri = jnp.arange(r)
  last = pl_R - 1
  state = (out.logits[ri, last], {n: out.attributes[n][ri, last] for n in names},
           out.hidden[ri, last])
  # Beam k > 0 starts at -inf so the first step extends beam 0 only (no W copies of a path).
  cum_BxW = jnp.where(jnp.arange(w)[None] == 0, 0.0, -jnp.inf) * jnp.ones((b, 1))
  vocab = state[0].shape[-1]

  def step(carry, i):
    cache, (logits, attrs, hidden), cum_BxW, done_R, len_R, hist_RxT = carry
    score_RxV = token_scores(steerer, logits, attrs, hidden, i)
    if mode == "beam":
      # A finished beam has one continuation, pad, at no cost.
      fin = jnp.where(jnp.arange(vocab)[None] == pad_id, 0.0, -jnp.inf)
      cont = jnp.where(done_R[:, None], fin, score_RxV).reshape(b, w, vocab)
      total_BxWV = (cum_BxW[..., None] + cont).reshape(b, w * vocab)
      cum_BxW, pick_BxW = jax.lax.top_k(total_BxWV, w)
      parent_R = (jnp.arange(b)[:, None] * w + pick_BxW // vocab).reshape(r)
      tok_R = (pick_BxW % vocab).reshape(r).astype(jnp.int32)
      cache = reorder_cache(cache, parent_R)
      done_R, len_R, hist_RxT = done_R[parent_R], len_R[parent_R], hist_RxT[parent_R]
    else:
      tok_R = sampling.choose(score_RxV, jax.random.fold_in(rng, i),
                              temperature=0.0 if mode == "greedy" else temperature,
                              top_k=top_k, top_p=top_p)
      gained = jnp.take_along_axis(score_RxV, tok_R[:, None], -1)[:, 0]
      cum_BxW = cum_BxW + jnp.where(done_R, 0.0, gained).reshape(b, w)
      tok_R = jnp.where(done_R, pad_id, tok_R)
    hist_RxT = hist_RxT.at[:, i].set(tok_R)
    len_R = len_R + (~done_R).astype(jnp.int32)
    done_R = done_R | ((tok_R == eos_id) if eos_id is not None else False)
    mask = (slots[None] < pl_R[:, None]) | ((slots[None] >= p) & (slots[None] <= p + i))
    o = model.apply({"params": params}, tok_R[:, None], (pl_R + i)[:, None], mask[:, None],
                    cache=cache, all_tokens=bool(names))
    new_state = (o.logits[:, 0], {n: o.attributes[n][:, 0] for n in names}, o.hidden[:, 0])
    return (o.cache, new_state, cum_BxW, done_R, len_R, hist_RxT), None

  init = (out.cache, state, cum_BxW, jnp.zeros((r,), bool), jnp.zeros((r,), jnp.int32),
          jnp.full((r, t_max), pad_id, jnp.int32))
  (_, _, cum_BxW, _, len_R, hist_RxT), _ = jax.lax.scan(step, init, jnp.arange(t_max))
  len_BxW = len_R.reshape(b, w)
  rank_BxW = cum_BxW / len_BxW.astype(jnp.float32) ** length_penalty if length_penalty \
      else cum_BxW
  order_BxW = jnp.argsort(-rank_BxW, axis=-1)
  beams = jnp.take_along_axis(hist_RxT.reshape(b, w, t_max), order_BxW[..., None], 1)
  rank_BxW = jnp.take_along_axis(rank_BxW, order_BxW, 1)
  len_BxW = jnp.take_along_axis(len_BxW, order_BxW, 1)
  best_cum = jnp.take_along_axis(cum_BxW, order_BxW[:, :1], 1)[:, 0]
  new = beams[:, 0]
  return SearchResult(jnp.concatenate([prompts_BxP, new], axis=1), new, len_BxW[:, 0],
                      best_cum, beams, rank_BxW, len_BxW)
