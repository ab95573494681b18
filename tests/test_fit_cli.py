"""python -m experiments.tools.fit_attribute on a trained workdir's trunk and a JSON-lines file:
the files it writes, and its head restores onto the fitted model."""
import json

import numpy as np
from flax import serialization

from experiments.tools import fit_attribute


def test_fit_cli_on_a_workdir_and_jsonl(tmp_path):
  from experiments.configs import default
  from experiments.trainer import Trainer
  c = default.get_config("tiny")
  c.train.update(dict(steps=2, eval_every=0, checkpoint_every=2))
  Trainer(c, str(tmp_path / "run"), progress=False).run()
  rng = np.random.default_rng(0)
  rows = [{"text": f"{a}+{b}", "big": int(a + b >= 100)}
          for a, b in rng.integers(0, 100, size=(60, 2))]
  with open(tmp_path / "data.jsonl", "w") as f:
    f.write("\n".join(json.dumps(r) for r in rows))
  out = tmp_path / "fit"
  report = fit_attribute.main([f"--trunk={tmp_path / 'run'}", f"--data={tmp_path / 'data.jsonl'}",
                               "--label_key=big", "--class_names=small,big", "--epochs=2",
                               "--max_len=16", "--diagnose_samples=8", "--attr_layer=1",
                               f"--out={out}"])
  for name in ("fit.json", "reliability.png", "reliability_prefixes.png", "head.msgpack"):
    assert (out / name).stat().st_size > 100, name
  saved = json.loads((out / "fit.json").read_text())
  assert saved["cat"]["attr_layer"] == 1
  assert saved["metrics"]["data"]["examples"] == 60 and saved["metrics"]["class_names"] == [
      "small", "big"]
  assert 0.0 <= saved["metrics"]["heldout"]["accuracy"] <= 1.0
  held = saved["metrics"]["heldout"]
  # The verdict compares the head with the constant guess (the training label shares).
  assert saved["verdict"] == fit_attribute.verdict(saved["metrics"])
  assert saved["verdict"].startswith("ok" if held["log_loss"] < held["log_loss_prior"] else
                                     "failed: held-out log loss")
  assert 1 <= saved["metrics"]["best_epoch"] <= 2
  assert set(saved["diagnosis"]) == {"0", "1"} and report["timing"]["speedup_per_epoch"] > 0
  head = serialization.msgpack_restore((out / "head.msgpack").read_bytes())
  assert set(head) == {"branch", "branch_norm", "out_norm", "head_attribute"}


def test_missing_key_is_named(tmp_path):
  (tmp_path / "d.jsonl").write_text('{"review": "good", "label": 1}\n')
  try:
    fit_attribute.load_examples(str(tmp_path / "d.jsonl"), "text", "label", None, 0)
  except SystemExit as e:
    assert "no key 'text'" in str(e) and "['label', 'review']" in str(e)
  else:
    raise AssertionError("no error")


def test_verdict_fails_a_head_worse_than_the_prior():
  worse = {"heldout": {"log_loss": 0.9, "log_loss_prior": 0.69, "beats_prior": False}}
  assert fit_attribute.verdict(worse) == ("failed: held-out log loss 0.9000 is not below the "
                                          "constant prior's 0.6900")
  assert fit_attribute.verdict({"heldout": {"log_loss": 0.5, "log_loss_prior": 0.69,
                                            "beats_prior": True}}) == "ok"
  assert fit_attribute.verdict({"heldout": {"mae": 0.1}}) == "ok"     # numeric: no prior
