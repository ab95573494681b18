"""python -m experiments.tools.env_check: versions, devices, and what each extra still needs.

Run it on a fresh pod worker or laptop before a long job. It reads the requirements from the
installed package's own metadata (setup.py is the one place they are written), so it never
drifts from what `pip install -e '.[EXTRA]'` would install. Exit status 1 when a core
requirement is missing or off its pin."""
import importlib.metadata as md
import platform
import re
import sys

DIST = "catrans-seqmatch"
_REQ = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.\-]+)(?:\[(?P<extras>[^\]]+)\])?\s*"
                  r"(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.*))?$")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def parse(requirement: str) -> tuple[str, tuple[str, ...], str, str | None]:
  """'jax[tpu]==0.10.2; extra == "tpu"' -> ('jax', ('tpu',), '==0.10.2', 'tpu')."""
  m = _REQ.match(requirement)
  if not m:
    raise ValueError(f"cannot read requirement {requirement!r}")
  extras = tuple(e.strip() for e in (m["extras"] or "").split(",") if e.strip())
  marker = m["marker"] or ""
  extra = _EXTRA.search(marker)
  return m["name"], extras, m["spec"].strip(), extra.group(1) if extra else None


def _marker_applies(marker: str) -> bool:
  """Environment markers other than `extra` (python_version, sys_platform): the common
  comparisons only; anything else counts as applying (reported, never hidden)."""
  for cond in re.split(r"\s+and\s+", marker):
    m = re.match(r"""\s*(python_version|sys_platform)\s*(==|!=|<|>|<=|>=)\s*["']([^"']+)["']""",
                 cond)
    if not m:
      continue
    key, op, value = m.groups()
    here = (".".join(map(str, sys.version_info[:2])) if key == "python_version"
            else sys.platform)
    if key == "python_version":
      here, value = tuple(map(int, here.split("."))), tuple(map(int, value.split(".")))
    ok = {"==": here == value, "!=": here != value, "<": here < value, ">": here > value,
          "<=": here <= value, ">=": here >= value}[op]
    if not ok:
      return False
  return True


def check(requirement: str, depth: int = 0) -> list[str]:
  """Problems with one requirement (and the extras it asks of its own package)."""
  name, extras, spec, _ = parse(requirement)
  try:
    version = md.version(name)
  except md.PackageNotFoundError:
    return [f"{name}{'[' + ','.join(extras) + ']' if extras else ''}{spec}: not installed"]
  problems = []
  pin = re.match(r"^==\s*([^,\s]+)$", spec)
  wanted = pin.group(1) if pin else ""
  if pin and not (version == wanted or (wanted.endswith(".*") and
                                        (version + ".").startswith(wanted[:-1]))):
    problems.append(f"{name}: installed {version}, pinned {pin.group(1)}")
  for extra in extras if depth < 2 else ():
    for sub in md.requires(name) or ():
      requirement_text, _, marker = sub.partition(";")
      if parse(sub)[3] == extra and _marker_applies(marker):
        problems += check(requirement_text, depth + 1)
  return problems


def requirements() -> dict[str, list[str]]:
  """{'core': [...], extra: [...]} from the installed metadata."""
  out: dict[str, list[str]] = {"core": []}
  for req in md.requires(DIST) or ():
    _, _, _, extra = parse(req)
    out.setdefault(extra or "core", []).append(req.split(";")[0].strip())
  return out


def report() -> tuple[list[str], bool]:
  lines = [f"python {platform.python_version()} ({sys.executable})"]
  try:
    reqs = requirements()
  except md.PackageNotFoundError:
    return lines + [f"{DIST} is not installed: run `pip install -e .` in the repository"], False
  core_ok = True
  for group, items in reqs.items():
    problems = [p for r in items for p in check(r)]
    if group == "core":
      core_ok = not problems
    status = "ok" if not problems else "; ".join(problems)
    lines.append(f"{group:<10} {status}" + (f"   (pip install -e '.[{group}]')"
                                            if problems and group != "core" else ""))
  for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
              "tensorflow-datasets", "ml-collections", "chex"):
    try:
      lines.append(f"  {pkg:<20} {md.version(pkg)}")
    except md.PackageNotFoundError:
      lines.append(f"  {pkg:<20} MISSING")
  try:
    import jax
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    lines.append(f"devices    {len(devices)} x {', '.join(kinds)} ({devices[0].platform}); "
                 f"{jax.process_count()} process(es), {jax.local_device_count()} local")
  except Exception as e:  # A broken backend is exactly what this command should show.
    lines.append(f"devices    unavailable: {type(e).__name__}: {e}")
    core_ok = False
  return lines, core_ok


def main():
  lines, ok = report()
  print("\n".join(lines))
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
