"""Render README.md's Results table from experiments/results/data/*.json.

  python -m experiments.results.render [--write]

Prints the table; --write puts it between README's `<!-- results:begin -->` and
`<!-- results:end -->` markers. Exit 1 without --write when README differs from it (the test
suite checks the same)."""
import argparse
import sys

from experiments.results import table


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--write", action="store_true", help="rewrite README.md's block")
  a = ap.parse_args(argv)
  block = table.render()
  with open(table.README) as f:
    text = f.read()
  if a.write:
    with open(table.README, "w") as f:
      f.write(table.replace_block(text, block))
    print(f"wrote the Results table into {table.README}")
    return 0
  print(block)
  if table.readme_block(text) != block:
    print("README.md's Results table differs from the JSON files: run with --write",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
