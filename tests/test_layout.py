"""The import graph keeps the shape docs/architecture.md describes, read from the code (AST, no
imports run): a script (a module with a `__main__` block) never imports another script;
seqmatch never imports catrans; neither library imports experiments; no module imports or
reads another module's _private names; no import cycles."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("catrans", "seqmatch", "experiments")


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
TREES = {m: ast.parse(p.read_text(), str(p)) for m, p in MODULES.items()}


def _is_script(tree) -> bool:
  """Has `if __name__ == "__main__":` at top level."""
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__"
                for c in node.test.comparators)):
      return True
  return False


SCRIPTS = {m for m, t in TREES.items() if _is_script(t)}


def _known(name: str) -> str | None:
  """The project module `name` is, or lies in (a.b.c -> a.b when c is a name in a.b)."""
  parts = name.split(".")
  while parts and ".".join(parts) not in MODULES:
    parts = parts[:-1]
  return ".".join(parts) or None


def _from_base(module: str, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ""
  package = module.split(".")
  if not MODULES[module].name == "__init__.py":
    package = package[:-1]
  package = package[:len(package) - (node.level - 1)]
  return ".".join(package + ([node.module] if node.module else []))


def imports_of(module: str):
  """(imported project module, names taken from it, aliases bound to a module) of a module,
  function-level imports included."""
  edges, private, aliases = set(), [], {}
  for node in ast.walk(TREES[module]):
    if isinstance(node, ast.Import):
      for a in node.names:
        target = _known(a.name)
        if target:
          edges.add(target)
          if a.asname:
            aliases[a.asname] = target
          elif a.name in MODULES:
            aliases[a.name.split(".")[0]] = a.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom):
      base = _from_base(module, node)
      for a in node.names:
        full = f"{base}.{a.name}"
        if full in MODULES:       # `from pkg import submodule`
          edges.add(full)
          aliases[a.asname or a.name] = full
        elif _known(base):
          edges.add(_known(base))
          if a.name.startswith("_") and not a.name.startswith("__"):
            private.append(f"{module} imports {base}.{a.name}")
  edges.discard(module)
  return edges, private, aliases


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_scan_sees_the_project():
  assert {"experiments.train", "experiments.reports.reviews_report"} <= SCRIPTS
  assert "experiments.trainer" in MODULES and "experiments.trainer" not in SCRIPTS
  assert "experiments.trainer" in GRAPH["experiments.runs"][0]


def test_no_script_imports_another_script():
  bad = [f"{m} imports {d}" for m in SCRIPTS for d in GRAPH[m][0] if d in SCRIPTS]
  assert not bad, "shared code belongs in the core (experiments/runs.py, reviews/, ...):\n" + (
      "\n".join(sorted(bad)))


@pytest.mark.parametrize("library,forbidden", [("seqmatch", ("catrans", "experiments")),
                                               ("catrans", ("experiments",))])
def test_library_imports_stay_inside(library, forbidden):
  bad = [f"{m} imports {d}" for m in MODULES if m.split(".")[0] == library
         for d in GRAPH[m][0] if d.split(".")[0] in forbidden]
  assert not bad, "\n".join(sorted(bad))


def test_no_cross_module_private_names():
  bad = [p for m in MODULES for p in GRAPH[m][1]]
  for m in MODULES:   # module._name read through an imported module
    aliases = GRAPH[m][2]
    for node in ast.walk(TREES[m]):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in aliases and node.attr.startswith("_")
          and not node.attr.startswith("__")):
        bad.append(f"{m} reads {aliases[node.value.id]}.{node.attr}")
  assert not bad, "make the name public where it has an outside user:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
  # A package's __init__ importing its own modules (and they it) is not a cycle of design.
  def edges(m):
    return [d for d in GRAPH[m][0] if not d.startswith(m + ".") and not m.startswith(d + ".")]
  state, cycles = {}, []

  def visit(m, stack):
    state[m] = 1
    stack.append(m)
    for d in edges(m):
      if state.get(d) == 1:
        cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
      elif not state.get(d):
        visit(d, stack)
    stack.pop()
    state[m] = 2
  for m in sorted(MODULES):
    if not state.get(m):
      visit(m, [])
  assert not cycles, "\n".join(cycles)
