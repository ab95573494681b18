"""What a Results row is (`Row`, `Figure`) and the parsers that turn one seed's run (stdout,
workdir) into {figure: value}; the rows themselves are in registry.py."""
import dataclasses
import json
import os
import re
from typing import Callable, Optional


@dataclasses.dataclass(frozen=True)
class Figure:
  label: str                  # how the README names it
  fmt: str = "{:.3f}"
  low: Optional[float] = None   # the interval --check holds every seed's value to (None: open)
  high: Optional[float] = None
  per_seed: bool = False      # the README lists every seed's value ('0 / 0 / 1'), no mean

  def interval(self) -> str:
    if self.low is None and self.high is None:
      return ""
    if self.low is None:
      return f"<= {self.fmt.format(self.high)}"
    if self.high is None:
      return f">= {self.fmt.format(self.low)}"
    return f"in [{self.fmt.format(self.low)}, {self.fmt.format(self.high)}]"


@dataclasses.dataclass(frozen=True)
class Row:
  id: str
  title: str                  # the README's 'experiment' cell
  commands: tuple             # templates; {python} {seed} {workdir}
  parse: Callable[[str, str], dict]   # (stdout of all commands, workdir) -> {figure: value}
  figures: dict               # name -> Figure, in the order the README cell lists them
  template: str               # the cell's regenerated sentence, {name} = 'mean [min, max]'
  seeds: tuple = (0, 1, 2)
  expected_s: float = 60.0    # one seed on a 2-core CPU
  ok_returncodes: tuple = (0,)
  paper: str = "-"
  not_regenerated: str = ""   # why, while no JSON exists (slow, GPU, needs another run)

  @property
  def fast(self) -> bool:
    """Under a minute per seed: the default test suite reruns it with --check."""
    return self.expected_s < 60


# --- parsers: each returns a function (stdout, workdir) -> {figure: float} --------------------

def regex(**patterns):
  """The last match of each pattern's first group in stdout, as a float ('1,088' -> 1088)."""
  def parse(stdout, workdir):
    out = {}
    for name, pattern in patterns.items():
      found = re.findall(pattern, stdout)
      if found:
        out[name] = float(str(found[-1]).replace(",", ""))
    return out
  return parse


def figures_line(*names):
  """The JSON after 'figures: ' on the last such stdout line (reports that print one)."""
  def parse(stdout, workdir):
    lines = [l for l in stdout.splitlines() if l.startswith("figures: ")]
    if not lines:
      return {}
    d = json.loads(lines[-1][len("figures: "):])
    return {n: float(d[n]) for n in names if d.get(n) is not None}
  return parse


def _read(workdir, path):
  with open(os.path.join(workdir, path)) as f:
    return json.load(f)


def json_file(path, **keys):
  """Values at keys of workdir/path: 'metrics.heldout.ece', or a tuple of keys where a key
  holds a dot ('estimation', '0.25', 'accuracy'); booleans as 0/1; absent keys are left out."""
  def parse(stdout, workdir):
    d, out = _read(workdir, path), {}
    for name, where in keys.items():
      v = d
      for k in (where.split(".") if isinstance(where, str) else where):
        v = v.get(k) if isinstance(v, dict) else None
      if v is not None:
        out[name] = float(v)
    return out
  return parse


def table_rows(path, list_key, **picks):
  """Values from a list of dicts in workdir/path: picks[name] = ({key: value, ...} that
  selects the one row, the value's key)."""
  def parse(stdout, workdir):
    rows, out = _read(workdir, path)[list_key], {}
    for name, (match, key) in picks.items():
      found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
      if len(found) == 1 and found[0].get(key) is not None:
        out[name] = float(found[0][key])
    return out
  return parse


def equal_perplexity(path, judges, methods, points: int = 3):
  """steer_sweep's equal-perplexity comparison in workdir/path: p{i}_ppl (the i-th shared
  perplexity), p{i}_{judge}_{method} (success there; absent outside the method's range)."""
  def parse(stdout, workdir):
    eq, out = _read(workdir, path).get("equal_perplexity") or {}, {}
    for i, ppl in enumerate((eq.get("points") or [])[:points]):
      out[f"p{i}_ppl"] = float(ppl)
      for j in judges:
        for m in methods:
          v = eq["judges"].get(j, {}).get("by_method", {}).get(m, [{}] * (i + 1))[i]
          if v.get("success") is not None:
            out[f"p{i}_{j}_{m}"] = float(v["success"])
    return out
  return parse


def both(a, b):
  """Two parsers' figures together."""
  return lambda stdout, workdir: {**a(stdout, workdir), **b(stdout, workdir)}
