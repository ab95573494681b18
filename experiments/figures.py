"""Figures of the attribute-fitting and steering-sweep tools (matplotlib, Agg: no display).
Kept out of catrans so the library never needs matplotlib."""
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def reliability_diagram(path, reliability: dict, title: str = "held-out reliability"):
  """Accuracy vs mean confidence per bin (catrans.metrics.reliability), bar width = the bin, the
  diagonal = perfect calibration, the count per bin underneath."""
  edges = np.asarray(reliability["edges"])
  count = np.asarray(reliability["count"])
  acc, conf = np.asarray(reliability["accuracy"]), np.asarray(reliability["confidence"])
  used = count > 0
  fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5, 5.5), sharex=True,
                                gridspec_kw={"height_ratios": [3, 1]})
  centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
  ax.bar(centers[used], acc[used], width=width[used], edgecolor="k", alpha=0.7,
         label="accuracy")
  ax.plot(conf[used], acc[used], "o", color="C3", label="(mean confidence, accuracy)")
  ax.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
  ax.set_ylabel("accuracy")
  ax.set_title(f"{title}: ECE {reliability['ece']:.3f}")
  ax.legend(fontsize=8, loc="upper left")
  ax.grid(alpha=0.3)
  ax2.bar(centers, count, width=width, edgecolor="k", color="gray")
  ax2.set_xlabel("confidence of the predicted class")
  ax2.set_ylabel("count")
  ax2.set_xlim(0, 1)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tradeoff(path, table: list[dict], x: str, y: str = "success", *, xlabel: str, title: str,
             log_x: bool = False, ylabel: str = "attribute success (judge: target class)"):
  """One line per method through its strengths (labelled), single points for methods without
  a strength; rows with x or y None are left out."""
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  methods = list(dict.fromkeys(r["method"] for r in table))
  for i, m in enumerate(methods):
    rows = [r for r in table if r["method"] == m and r[x] is not None and r[y] is not None]
    rows.sort(key=lambda r: -1 if r["strength"] is None else r["strength"])
    if not rows:
      continue
    xs, ys = [r[x] for r in rows], [r[y] for r in rows]
    ax.plot(xs, ys, marker="o", linestyle="-" if len(rows) > 1 else "none", color=f"C{i}",
            label=m)
    if all(r.get(f"{y}_ci") for r in rows):   # bootstrap intervals, where the table has them
      lo, hi = (np.array([r[f"{y}_ci"][j] for r in rows]) for j in (0, 1))
      ax.errorbar(xs, ys, yerr=[np.subtract(ys, lo), np.subtract(hi, ys)], fmt="none",
                  ecolor=f"C{i}", alpha=0.5, capsize=2)
    for r, xv, yv in zip(rows, xs, ys):
      if r["strength"] is not None and len(rows) > 1:
        ax.annotate(f"{r['strength']:g}", (xv, yv), textcoords="offset points", xytext=(4, 3),
                    fontsize=7, color=f"C{i}")
  if log_x:
    ax.set_xscale("log")
    # Plain numbers: a perplexity range rarely spans a decade, so 10^x labels would clash.
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
