"""Fit an attribute on your data onto a trained or pretrained trunk, in one command
(catrans.fit.fit_attribute on cached frozen-trunk features).

  python -m experiments.tools.fit_attribute --trunk=WORKDIR|smollm2|FILE.gguf|HF_DIR \
      --data=FILE.jsonl|task:NAME[:SPLIT] --out=DIR [--text_key=text] [--label_key=label] \
      [--kind=categorical|binary|numeric] [--num_classes=2] [--class_names=neg,pos] \
      [--limit=N] [--max_len=64] [--epochs=30] [--branch=mlp] [--param=full|factorized] \
      [--attr_layer=K]

--trunk: a workdir of experiments.train (its config.json and newest checkpoint; its
tokenizer), or a pretrained model as catrans.pretrained.load_pretrained takes it.
--data: JSON lines with a text and a label per line, or the split of a registered task.
Writes OUT/fit.json (held-out accuracy / AUC / ECE, the model's own prior per class, the
label share, timing: one trunk pass, cached epochs, one epoch re-running the trunk, and the
speed-up), OUT/reliability.png (whole texts), OUT/reliability_prefixes.png (every prefix)
and OUT/head.msgpack (branch + head parameters only; the trunk stays where it was). With
--diagnose_samples > 0 it also samples the model and warns when a class is rare."""
import argparse
import json
import logging
import os
import sys

import jax
import numpy as np
from flax import serialization

from catrans import diagnose
from catrans.attributes import AttributeSpec
from catrans.fit import fit_attribute
from experiments import figures

log = logging.getLogger("experiments")


def load_trunk(spec: str, max_len: int):
  """(model, params, tokenizer) from a training workdir or a pretrained model."""
  if os.path.isfile(os.path.join(spec, "config.json")):
    from experiments.runs import load_trainer
    trainer = load_trainer(spec)
    return trainer.objective.model, trainer.restore_params(), trainer.task.tokenizer
  from catrans.pretrained import load_pretrained, load_pretrained_tokenizer
  from catrans.transformer import Transformer
  cfg, params = load_pretrained(spec, max_len=max_len + 1)
  return Transformer(cfg), params, load_pretrained_tokenizer(spec)


def load_examples(spec: str, text_key: str, label_key: str, limit: int | None, seed: int):
  """(texts, labels): JSON lines, or task:NAME[:SPLIT] (a fixed random subset of `limit`)."""
  if spec.startswith("task:"):
    import ml_collections
    from experiments.tasks import get_task
    _, name, *split = spec.split(":")
    rows = list(get_task(name, ml_collections.ConfigDict({})).source(split[0] if split
                                                                      else "train"))
  else:
    with open(spec) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  for i, r in enumerate(rows[:1]):
    for k in (text_key, label_key):
      if k not in r:
        raise SystemExit(f"{spec}: row {i} has no key {k!r} (keys: {sorted(r)}); set "
                         "--text_key / --label_key")
  if limit and limit < len(rows):
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))[:limit]]
  return [r[text_key] for r in rows], [r[label_key] for r in rows]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--trunk", required=True)
  ap.add_argument("--data", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--name", default="attribute")
  ap.add_argument("--text_key", default="text")
  ap.add_argument("--label_key", default="label")
  ap.add_argument("--kind", default="categorical", choices=("categorical", "binary", "numeric"))
  ap.add_argument("--num_classes", type=int, default=2)
  ap.add_argument("--class_names", default="")
  ap.add_argument("--limit", type=int, default=0)
  ap.add_argument("--max_len", type=int, default=64)
  ap.add_argument("--epochs", type=int, default=30)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--learning_rate", type=float, default=3e-3)
  ap.add_argument("--branch", default=None, choices=(None, "mlp", "block", "none"))
  ap.add_argument("--param", default=None, choices=(None, "full", "factorized"))
  ap.add_argument("--attr_layer", type=int, default=None,
                  help="the branch reads the trunk state after this many blocks "
                       "(CATConfig.attr_layer; default the last)")
  ap.add_argument("--heldout", type=float, default=0.2)
  ap.add_argument("--validation", type=float, default=0.1,
                  help="share of the training texts that picks the epoch (and calibrates a "
                       "numeric head's variance)")
  ap.add_argument("--patience", type=int, default=5,
                  help="stop after this many epochs without a better validation loss (0: run "
                       "every epoch, still keep the best)")
  ap.add_argument("--diagnose_samples", type=int, default=0)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, stream=sys.stdout, force=True,
                      format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
  log.setLevel(logging.INFO)
  os.makedirs(a.out, exist_ok=True)
  model, params, tok = load_trunk(a.trunk, a.max_len)
  texts, labels = load_examples(a.data, a.text_key, a.label_key, a.limit, a.seed)
  names = tuple(a.class_names.split(",")) if a.class_names else None
  spec = AttributeSpec(a.name, kind=a.kind, num_classes=len(names) if names else a.num_classes)
  log.info("fitting %s on %d texts onto %s", spec, len(texts), a.trunk)
  r = fit_attribute(model, params, spec, labels, texts=texts, tokenizer=tok, class_names=names,
                    branch=a.branch, param=a.param, attr_layer=a.attr_layer,
                    heldout=a.heldout,
                    validation=a.validation, patience=a.patience or None, epochs=a.epochs,
                    batch_size=a.batch_size, learning_rate=a.learning_rate,
                    max_len=a.max_len, seed=a.seed, pad_id=getattr(tok, "pad_id", 0) or 0)
  report = {"command": "python -m experiments.tools.fit_attribute " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
            "attribute": spec.__dict__, "cat": {"branch": r.model.cat.branch,
                                                "param": r.model.cat.param,
                                                "attr_layer": r.model.cat.attr_layer},
            "metrics": r.metrics, "timing": r.timing, "history": r.history,
            "verdict": verdict(r.metrics)}
  if spec.kind != "numeric":
    figures.reliability_diagram(os.path.join(a.out, "reliability.png"), r.reliability,
                                f"{spec.name}: held-out whole texts")
    figures.reliability_diagram(os.path.join(a.out, "reliability_prefixes.png"),
                                r.reliability_prefixes, f"{spec.name}: held-out prefixes")
  if a.diagnose_samples:
    report["diagnosis"] = {}
    classes = range(2 if spec.kind == "binary" else spec.num_classes)
    for c in ([] if spec.kind == "numeric" else classes):
      d = diagnose.target_share(r.model, r.params, jax.random.PRNGKey(a.seed + c), target=c,
                                prompt_ids=[tok.bos_id], num_samples=a.diagnose_samples,
                                max_new_tokens=a.max_len - 1, eos_id=tok.eos_id,
                                pad_id=getattr(tok, "pad_id", 0) or 0)
      report["diagnosis"][str(c)] = {"share": d.share, "hit_rate": d.hit_rate, "rare": d.rare}
  with open(os.path.join(a.out, "head.msgpack"), "wb") as f:
    f.write(serialization.to_bytes({k: v for k, v in r.params.items() if k != "trunk"}))
  with open(os.path.join(a.out, "fit.json"), "w") as f:
    json.dump(report, f, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
  m, t = r.metrics["heldout"], r.timing
  print(json.dumps({"verdict": report["verdict"], "best_epoch": r.metrics["best_epoch"],
                    "heldout": m, "prior_at_start": r.metrics["prior_at_start"],
                    "label_share": r.metrics["data"]["label_share"],
                    **{k: t.get(k) for k in ("cache_features_s", "cached_epoch_s", "trunk_epoch_s",
                                             "speedup_per_epoch", "speedup_total")}}, indent=1))
  return report


def verdict(metrics) -> str:
  """'ok', or why the head is no result: a class head whose held-out log loss is not below
  the constant guess's (the training label shares) has learnt nothing usable."""
  held = metrics["heldout"]
  if "log_loss_prior" in held and not held["beats_prior"]:
    return (f"failed: held-out log loss {held['log_loss']:.4f} is not below the constant "
            f"prior's {held['log_loss_prior']:.4f}")
  return "ok"


if __name__ == "__main__":
  if main()["verdict"] != "ok":
    sys.exit(2)
