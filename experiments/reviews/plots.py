"""The report's figures (matplotlib, Agg: no display needed)."""
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STEERED = ("cat_weighted", "director", "fudge")


def estimate_accuracy(path, estimation: dict):
  """Accuracy vs prefix fraction, one line per method (Monte Carlo on its subset)."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, m in estimation["methods"].items():
    fr = sorted(m["by_fraction"], key=float)
    ax.plot([float(f) for f in fr], [m["by_fraction"][f]["accuracy"] for f in fr],
            marker="o", label=f"{name} (n={m['num_reviews']})")
  ax.set_xlabel("fraction of the review read")
  ax.set_ylabel("accuracy of P(fresh | prefix) > 0.5")
  ax.set_title("Sentiment from partial reviews")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def steering_strength(path, rows: list[dict]):
  """gamma vs target rate and vs LM perplexity (averaged over targets and prompt sets), the
  unsteered and satisficing decoders as horizontal reference lines."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, key, label in ((axes[0], "target_rate", "judge: generations of the target class"),
                         (axes[1], "perplexity", "plain-LM perplexity of the new tokens")):
    for name in STEERED:
      gammas = sorted({r["strength"] for r in rows if r["method"] == name})
      ys = [np.mean([r[key] for r in rows if r["method"] == name and r["strength"] == g
                     and r[key] is not None]) for g in gammas]
      ax.plot(gammas, ys, marker="o", label=name)
    for name, style in (("unsteered_cat", "--"), ("unsteered_lm", ":"),
                        ("cat_satisficing", "-.")):
      ys = [r[key] for r in rows if r["method"] == name]
      if ys:
        ax.axhline(np.mean(ys), linestyle=style, color="gray", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("steering strength gamma")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle("Steering towards fresh / rotten (mean over targets and prompt sets)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def credit_heatmap(path, pieces: list[str], advantage, difference, q, label: str,
                   width: int = 12):
  """One review, a cell per token coloured by its advantage credit c_t (green: towards fresh,
  red: towards rotten), with q_t = P(fresh | x_<=t) along the bottom."""
  chars = list(pieces)
  rows = int(np.ceil(len(chars) / width))
  grid = np.full((rows, width), np.nan)
  adv = np.asarray(advantage, np.float64)[:len(chars)]
  grid.flat[:len(adv)] = adv
  lim = max(float(np.nanmax(np.abs(grid))), 1e-3)
  fig = plt.figure(figsize=(12, 1.0 + 0.45 * rows + 2.2))
  ax = fig.add_axes([0.03, 2.4 / (3.2 + 0.45 * rows), 0.86, 0.45 * rows / (3.2 + 0.45 * rows)])
  im = ax.imshow(grid, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
  for i, ch in enumerate(chars):
    ax.text(i % width, i // width, ch, ha="center", va="center", fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title("\n".join(textwrap.wrap(
      f"advantage credit c_t = Q(s_t-1, x_t) - V(s_t-1) per token; label: {label}", 120)),
      fontsize=10)
  cax = fig.add_axes([0.91, ax.get_position().y0, 0.015, ax.get_position().height])
  fig.colorbar(im, cax=cax)
  ax2 = fig.add_axes([0.06, 0.12, 0.83, 1.6 / (3.2 + 0.45 * rows)])
  t = np.arange(1, len(chars) + 1)
  ax2.plot(t, np.asarray(q)[:len(chars)], label="q_t = P(fresh | x_<=t)")
  ax2.bar(t, np.asarray(difference)[:len(chars)], color="gray", alpha=0.6,
          label="difference credit q_t - q_t-1")
  ax2.axhline(0.5, color="k", lw=0.5)
  ax2.set_xlim(0, len(chars) + 1)
  ax2.set_xlabel("token t")
  ax2.legend(fontsize=8, loc="upper left")
  fig.savefig(path, dpi=110)
  plt.close(fig)
