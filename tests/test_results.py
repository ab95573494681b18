"""README's Results table and the results runner (issue 30): the table is what the JSON files
render to; the fast rows rerun through the runner and hold their stated intervals; --check
names the figure and the seed that leave one."""
import copy

import pytest

from experiments.results import registry, run, table


def test_readme_table_is_rendered_from_the_json_files():
  with open(table.README) as f:
    block = table.readme_block(f.read())
  assert block == table.render(), (
      "README's Results table differs from experiments/results/data/*.json + notes.md: run "
      "`python -m experiments.results.render --write`")


def test_every_row_renders_figures_or_handwritten_text():
  hand = table.notes()
  for row in registry.ROWS:
    # The template names only the row's figures (a typo would raise KeyError here).
    row.template.format(**{n: "x" for n in row.figures})
    result = table.load(row.id)
    assert result is not None or hand.get(row.id), f"row {row.id}: no JSON and no notes.md text"
    if result is not None:
      assert result["row"] == row.id and len(result["runs"]) == len(result["seeds"])
      assert set(result["summary"]) >= {n for n, f in row.figures.items() if f.interval()}, (
          f"row {row.id}: its JSON lacks a checked figure")


def _result(row, values_per_seed):
  runs = [{"seed": s, "figures": v} for s, v in enumerate(values_per_seed)]
  return {"runs": runs, "summary": run.summarise(runs)}


def test_check_names_the_figure_and_seed_outside_the_interval():
  row = registry.BY_ID["bits"]
  good = {"q_mae": 0.03, "q_mae_worst": 0.05, "sign_agreement": 1.0, "credit_corr": 0.99}
  assert run.check(row, _result(row, [good, good])) == []
  drifted = copy.deepcopy(good)
  drifted["q_mae"] = 0.2
  del drifted["credit_corr"]
  bad = run.check(row, _result(row, [good, drifted]))
  assert len(bad) == 2
  assert "q_mae = 0.200 in seed 1, outside in [0.000, 0.060]" in bad[0]
  assert "credit_corr missing in seed 1" in bad[1]


def test_summary_is_mean_min_max_over_the_seeds_that_report_it():
  row = registry.BY_ID["main"]
  s = run.summarise(_result(row, [{"a": 1.0, "b": 5.0}, {"a": 2.0}, {"a": 6.0}])["runs"])
  assert s["a"] == {"mean": 3.0, "min": 1.0, "max": 6.0, "n": 3}
  assert s["b"] == {"mean": 5.0, "min": 5.0, "max": 5.0, "n": 1}


def test_a_failing_command_stops_the_row_with_its_output(tmp_path):
  row = registry.Row("boom", "t", ("{python} -c \"print('went wrong'); raise SystemExit(3)\"",),
                     registry.regex(), {}, "", seeds=(0,))
  with pytest.raises(run.RunFailed, match="exited 3(.|\n)*went wrong"):
    run.run_seed(row, 0, str(tmp_path), log=lambda s: None)


@pytest.mark.parametrize("row_id", [r.id for r in registry.ROWS if r.fast])
def test_fast_row_holds_its_intervals(row_id, tmp_path):
  """The runner's --check on the row's first seed (bits: a 400-step CAT, ~30 s of CPU)."""
  row = registry.BY_ID[row_id]
  result = run.run_row(row, seeds=row.seeds[:1], work_root=str(tmp_path), log=lambda s: None)
  assert run.check(row, result) == []


def test_rerun_seeds_replace_their_records_and_finished_seeds_survive(tmp_path):
  row = registry.Row("echo", "t", ("{python} -c \"print('value', {seed} * 10)\"",),
                     registry.regex(value=r"value (\d+)"), {"value": registry.Figure("v")},
                     "{value}", seeds=(0, 1))
  first = run.run_seed(row, 1, str(tmp_path), log=lambda s: None)
  # The record a killed runner never wrote, read back from the seed's workdir.
  recovered = run.recover_seed(row, 1, first["workdir"])
  assert recovered["figures"] == first["figures"] == {"value": 10.0}
  assert 0 <= recovered["wall_s"] <= first["wall_s"] + 1
  stale = {"seed": 0, "figures": {"value": -1.0}, "wall_s": 1.0}
  partial = []
  result = run.run_row(row, seeds=[0], work_root=str(tmp_path), log=lambda s: None,
                       earlier=[stale, recovered], on_seed=partial.append)
  assert result["seeds"] == [0, 1] and len(partial) == 1
  assert [r["figures"]["value"] for r in result["runs"]] == [0.0, 10.0]
  assert result["summary"]["value"] == {"mean": 5.0, "min": 0.0, "max": 10.0, "n": 2}
