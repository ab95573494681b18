"""Steering methods compared at equal perplexity, with bootstrap intervals (issue 25).

A cell is one (method, strength): per generation a 0/1 success under each judge, the LM's
summed NLL of its new tokens and their count. A method's curve is success against
log-perplexity through its strengths; two methods are compared where their perplexity
ranges overlap, at a few shared perplexities, by linear interpolation in log-perplexity
between the strengths that bracket each point (no extrapolation: a point outside a method's
measured range has no value for it). Intervals: percentile bootstrap over generations,
resampled within each cell, then the same interpolation per replicate."""
import math

import numpy as np


def cell_stats(hits_N, nll_N, count_N) -> dict:
  """Success share and pooled perplexity of one cell."""
  hits, nll, cnt = (np.asarray(a, np.float64) for a in (hits_N, nll_N, count_N))
  if not (hits.shape == nll.shape == cnt.shape) or hits.ndim != 1 or hits.size == 0:
    raise ValueError(f"hits, nll and counts need one non-empty 1-D shape, got {hits.shape}, "
                     f"{nll.shape}, {cnt.shape}")
  return {"success": float(hits.mean()),
          "perplexity": math.exp(nll.sum() / max(cnt.sum(), 1.0))}


def bootstrap_cells(cells: dict, judge: str, *, replicates: int = 1000, seed: int = 0):
  """{key: (success [R], perplexity [R])}: each cell's generations resampled with
  replacement. cells: key -> {'hits': {judge: [N]}, 'nll': [N], 'tokens': [N]}."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, c in cells.items():
    hits = np.asarray(c["hits"][judge], np.float64)
    nll, cnt = np.asarray(c["nll"], np.float64), np.asarray(c["tokens"], np.float64)
    idx = rng.integers(0, len(hits), size=(replicates, len(hits)))
    ppl = np.exp(nll[idx].sum(1) / np.maximum(cnt[idx].sum(1), 1.0))
    out[key] = (hits[idx].mean(1), ppl)
  return out


def interpolate(points_S, perplexity_S, at_P) -> np.ndarray:
  """Success at the perplexities at_P by linear interpolation in log-perplexity through a
  method's strengths (sorted by perplexity); NaN outside the measured range."""
  x, y = np.log(np.asarray(perplexity_S, np.float64)), np.asarray(points_S, np.float64)
  order = np.argsort(x)
  x, y = x[order], y[order]
  at = np.log(np.asarray(at_P, np.float64))
  out = np.interp(at, x, y)
  return np.where((at < x[0] - 1e-9) | (at > x[-1] + 1e-9), np.nan, out)


def shared_points(ranges: dict, num: int = 3) -> list[float]:
  """`num` perplexities spread geometrically over the range every method covers
  (ranges: method -> (lowest, highest) perplexity); [] when the ranges do not overlap, one
  point when they touch."""
  if num < 1:
    raise ValueError(f"num must be >= 1, got {num}")
  lo = max(r[0] for r in ranges.values())
  hi = min(r[1] for r in ranges.values())
  if lo > hi:
    return []
  if num == 1 or hi / lo < 1.0 + 1e-6:
    return [math.sqrt(lo * hi)]
  # Inside the ends (5% in log), so every method has strengths on both sides of each point.
  a, b = math.log(lo), math.log(hi)
  pad = 0.05 * (b - a)
  return [math.exp(v) for v in np.linspace(a + pad, b - pad, num)]


def compare(cells: dict, methods: dict, judges, *, num_points: int = 3,
            replicates: int = 1000, seed: int = 0,
            anchors=("weighted", "director")) -> dict:
  """Success of each method at shared perplexities, per judge, with 95% bootstrap intervals,
  and for every pair with 'weighted' the bootstrap share of replicates where CAT is higher.
  cells: (method, strength) -> cell (see bootstrap_cells); methods: method -> [strengths].
  The points are spread over the range the `anchors` share (all methods when fewer than two
  anchors are present); another method has a value only where its own range reaches."""
  point_stats = {k: cell_stats(c["hits"][judges[0]], c["nll"], c["tokens"])
                 for k, c in cells.items()}
  ranges = {m: (min(point_stats[(m, s)]["perplexity"] for s in ss),
                max(point_stats[(m, s)]["perplexity"] for s in ss))
            for m, ss in methods.items() if ss}
  anchored = {m: r for m, r in ranges.items() if m in anchors}
  pts = shared_points(anchored if len(anchored) >= 2 else ranges, num_points)
  out = {"ranges": ranges, "points": pts, "judges": {}}
  for judge in judges:
    boot = bootstrap_cells(cells, judge, replicates=replicates, seed=seed)
    per_method = {}
    for m, ss in methods.items():
      succ = [cell_stats(cells[(m, s)]["hits"][judge], cells[(m, s)]["nll"],
                         cells[(m, s)]["tokens"])["success"] for s in ss]
      ppl = [point_stats[(m, s)]["perplexity"] for s in ss]
      est = interpolate(succ, ppl, pts)
      reps = np.stack([interpolate([boot[(m, s)][0][r] for s in ss],
                                   [boot[(m, s)][1][r] for s in ss], pts)
                       for r in range(replicates)])                     # [R, P]
      per_method[m] = {"success": est, "replicates": reps}
    res = {m: [{"perplexity": p, "success": _num(v["success"][i]),
                "ci": _ci(v["replicates"][:, i])} for i, p in enumerate(pts)]
           for m, v in per_method.items()}
    wins = {}
    if "weighted" in per_method:
      for m in per_method:
        if m == "weighted":
          continue
        d = per_method["weighted"]["replicates"] - per_method[m]["replicates"]
        wins[m] = [_num(np.mean(d[:, i][~np.isnan(d[:, i])] > 0))
                   if np.any(~np.isnan(d[:, i])) else None for i in range(len(pts))]
    out["judges"][judge] = {"by_method": res, "p_cat_higher": wins}
  return out


def _num(v):
  return None if v is None or not np.isfinite(v) else float(v)


def _ci(x):
  x = np.asarray(x)[~np.isnan(x)]
  return None if x.size < 10 else [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))]


def markdown_lines(eq, paper: dict) -> list[str]:
  """The report's section: a table per judge, and the paper's figures (paper: method ->
  {'success': (1-star, 5-star), 'perplexity': (...)})."""
  if not eq:
    return []
  lines = ["", "## Equal perplexity: CAT vs Director vs FUDGE", "",
           "Success interpolated in log-perplexity between the strengths that bracket each "
           "shared perplexity (none outside a method's measured range); ranges: "
           + ", ".join(f"{m} {lo:.1f}-{hi:.1f}" for m, (lo, hi) in eq["ranges"].items()) + "."]
  if not eq["points"]:
    lines += ["", "**CAT's and Director's perplexity ranges do not overlap: no shared point.** "
              "Choose strengths (--cat_gammas / --director_gammas / --fudge_gammas) so that "
              "they do."]
  for judge, res in eq["judges"].items() if eq["points"] else ():
    methods = list(res["by_method"])
    lines += ["", f"Judge `{judge}`:", "", "| perplexity | " + " | ".join(methods)
              + " | " + " | ".join(f"P(CAT > {m})" for m in res["p_cat_higher"]) + " |",
              "|---|" + "---|" * (len(methods) + len(res["p_cat_higher"]))]
    for i, p in enumerate(eq["points"]):
      cell = lambda v: ("-" if v["success"] is None else f"{v['success']:.2f}"
                        + (f" [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]" if v["ci"] else ""))
      lines.append(f"| {p:.1f} | " + " | ".join(cell(res["by_method"][m][i]) for m in methods)
                   + " | " + " | ".join("-" if w[i] is None else f"{w[i]:.2f}"
                                        for w in res["p_cat_higher"].values()) + " |")
  lines += ["", "The paper (Amazon reviews, 3-star prefix to 1 / 5 stars, nanoGPT-style models "
            "of 7M-1B parameters; SPEC section 2, reported): CAT "
            + "/".join(f"{v:.2f}" for v in paper["weighted"]["success"]) + " at perplexity "
            + "/".join(f"{v:g}" for v in paper["weighted"]["perplexity"]) + ", Director "
            + "/".join(f"{v:.2f}" for v in paper["director"]["success"]) + " at "
            + "/".join(f"{v:g}" for v in paper["director"]["perplexity"])
            + ": CAT ahead by 0.06 / 0.12 at about equal perplexity."]
  return lines
