"""The README's Results table, rendered from the rows' JSON files (data/ROW.json), the
registry and notes.md (what is still hand-written). render.py writes it; a test compares it
with README.md as text."""
import json
import os
import re

from experiments.results import registry
from experiments.results.run import DATA, REPO

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NOTES = os.path.join(REPO, "experiments", "results", "notes.md")
README = os.path.join(REPO, "README.md")
HEADER = ["| experiment | command | ours | paper |", "|---|---|---|---|"]


def notes(path: str = NOTES) -> dict:
  """{row id: hand-written text}: the `## id` sections of notes.md, lines joined."""
  out, current = {}, None
  with open(path) as f:
    for line in f:
      m = re.match(r"^## (\S+)\s*$", line)
      if m:
        current = m.group(1)
        out[current] = []
      elif current and line.strip():
        out[current].append(line.strip())
  return {k: " ".join(v) for k, v in out.items()}


def load(row_id: str, data_dir: str = DATA):
  path = os.path.join(data_dir, f"{row_id}.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def spread(fig: registry.Figure, s: dict) -> str:
  """'mean [min, max]' in the figure's format, or one value where every seed rounds alike."""
  low, high = fig.fmt.format(s["min"]), fig.fmt.format(s["max"])
  if s["n"] == 1 or low == high:
    return fig.fmt.format(s["mean"]) + (f" (all {s['n']} seeds)" if s["n"] > 1 else "")
  return f"{fig.fmt.format(s['mean'])} [{low}, {high}]"


def duration(low: float, high: float, unit: str | None = None) -> str:
  """'56-64 s' or '10.9-12.4 min' (one value when they round alike); unit '' : plain
  numbers to one decimal."""
  if unit is None:
    unit, scale, fmt = ("s", 1, "{:.0f}") if high < 90 else ("min", 60, "{:.1f}")
  else:
    scale, fmt = 1, "{:.1f}"
  a, b = fmt.format(low / scale), fmt.format(high / scale)
  return (f"{a} {unit}" if a == b else f"{a}-{b} {unit}").strip()


def regenerated(row: registry.Row, result: dict) -> str:
  """The cell's sentence from the row's JSON: figures, then where, when and how long."""
  values = {}
  for name, fig in row.figures.items():
    s = result["summary"].get(name)
    if fig.per_seed:
      values[name] = " / ".join(fig.fmt.format(r["figures"][name]) if name in r["figures"]
                                else "-" for r in result["runs"])
    else:
      values[name] = spread(fig, s) if s else "(not reported)"
  walls = result["wall_s_per_seed"]
  loads = result.get("load_1min", [])
  recovered = [r["seed"] for r in result["runs"] if r.get("recovered")]
  where = result["machine"].removeprefix("machine: ").split("; jax")[0]
  text = (row.template.format(**values)
          + (f" (one run, seed {result['seeds'][0]}; " if len(result["seeds"]) == 1 else
             f" (mean [min, max] over seeds {', '.join(map(str, result['seeds']))}; ")
          + f"{duration(min(walls), max(walls))} per seed on {where.replace('; ', ', ')}"
          + (f", 1-min load {duration(min(loads), max(loads), '')} at a seed's start"
             if loads else "")
          + f"; {result['date']}, commit {result['commit'][:10]}"
          + (f"; seed{'s' if len(recovered) > 1 else ''} {', '.join(map(str, recovered))} "
             "parsed from the workdir's stdout.log (run outside the runner, or finished after it "
             "stopped), load not recorded"
             if recovered else "") + ")")
  checked = [f"{fig.label} {fig.interval()}" for fig in row.figures.values() if fig.interval()]
  if checked:
    text += f"; `--check`: every seed's {', '.join(checked)}"
  return text


def cell(row: registry.Row, result, note: str) -> str:
  if result is None:
    why = row.not_regenerated or "not run yet"
    return f"**not regenerated** ({why}); hand-written: {note or '(no text)'}"
  text = regenerated(row, result)
  return text + (f". Not regenerated, hand-written: {note}" if note else "")


def command(row: registry.Row) -> str:
  shown = " && ".join(c.format(python="python", seed="S", workdir="DIR") for c in row.commands)
  return f"`{shown}` (runner: `--rows={row.id}`)"


def render(data_dir: str = DATA, notes_path: str = NOTES) -> str:
  """The block between the markers, markers excluded."""
  hand = notes(notes_path)
  lines = list(HEADER)
  for row in registry.ROWS:
    cells = [row.title, command(row), cell(row, load(row.id, data_dir), hand.get(row.id, "")),
             row.paper]
    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
  return "\n".join(lines)


def readme_block(text: str) -> str:
  """What README.md holds between the markers (one of each, in order)."""
  if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
    raise ValueError(f"README must hold {BEGIN} and then {END}, once each")
  return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n")


def replace_block(text: str, block: str) -> str:
  readme_block(text)
  return text[:text.index(BEGIN) + len(BEGIN)] + "\n" + block + "\n" + text[text.index(END):]
