"""The Trainer: builds the sharded state and the jitted step from a config, and runs the loop
(`run`): batch -> objective.prepare_batch -> bucket -> train_step -> log / eval / checkpoint,
resuming from the newest checkpoint and stopping cleanly on a signal. Objective-agnostic: the
loss comes from `experiments.objectives`, the step from `experiments.train_step`."""
import dataclasses
import logging
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import config_checks, observe, optim, sharding
from experiments.buckets import bucket_width, check_length_buckets, trim_to_bucket
from experiments.checkpointing import Checkpointer, param_shapes
from experiments.compiles import CompileWatch
from experiments.data import pipeline
from experiments.objectives import get_objective
from experiments.objectives.base import RUN_PREFIX
from experiments.resume import init_from_run, resume_data_position  # noqa: F401 (tests import it here)
from experiments.preflight import check_fresh_start
from experiments.signals import SignalFlag
from experiments.skip_watch import SkipWatch
from experiments.tasks import get_task
from experiments.train_state import TrainState, with_aux
from experiments.train_step import (NonFiniteError, broken_update, make_train_step,
                                    nonfinite_terms)

log = logging.getLogger("experiments")

@dataclasses.dataclass
class RunSummary:
  workdir: str
  steps: int
  final_metrics: dict
  eval_metrics: dict
  unigram_baseline: float | None
  interrupted: bool = False


class Trainer:
  """Builds everything from a config; `run()` trains with resume, eval and checkpoints."""

  def __init__(self, config, workdir: str, *, devices=None, progress: bool | None = None):
    _check_config(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    self.task = get_task(config.task.name, config.task)
    self.objective = get_objective(config, self.task)
    self.mesh = sharding.make_mesh(config.mesh, devices)
    self.rules = sharding.logical_rules(config.get("logical_rules"))
    t = config.train
    self.steps = int(t.steps)
    self.accum = int(t.get("grad_accum_steps", 1))
    self.batch_size = int(config.data.global_batch_size)
    self.seq_len = int(config.data.seq_len)
    sharding.check_batch(self.batch_size, self.mesh, self.accum)
    self.buckets = check_length_buckets(config.data.get("length_buckets", ()), self.seq_len,
                                        self.objective)
    if self.seq_len > self.objective.model_config.max_len:
      raise ValueError(f"data.seq_len={self.seq_len} exceeds model.max_len="
                       f"{self.objective.model_config.max_len}")
    self.progress_enabled = t.get("progress", True) if progress is None else progress
    self._build()

  # --- compilation ---------------------------------------------------------------------
  def context(self):
    """The mesh and logical-axis rules every jitted call of this trainer runs under."""
    mesh, rules = self.mesh, self.rules

    class _Ctx:
      def __enter__(self_inner):
        self_inner.a = jax.set_mesh(mesh)
        self_inner.b = nn.logical_axis_rules(rules)
        self_inner.a.__enter__()
        self_inner.b.__enter__()

      def __exit__(self_inner, *exc):
        self_inner.b.__exit__(*exc)
        self_inner.a.__exit__(*exc)
    return _Ctx()

  def _build(self):
    cfg, obj = self.config, self.objective
    rng = jax.random.PRNGKey(int(cfg.seed))
    with self.context():
      boxed = jax.eval_shape(obj.init_params, rng)
      self.params_shardings = sharding.tree_shardings(boxed, self.mesh, self.rules)
    abstract_params = sharding.strip_boxes(boxed)
    mask = obj.trainable_mask(abstract_params)
    self.tx, self.schedule = optim.make_optimizer(cfg.optimizer, self.steps, mask)
    abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
    replicated = NamedSharding(self.mesh, P())
    abstract_aux = jax.eval_shape(obj.init_aux)
    self.state_shardings = with_aux(TrainState(
        step=replicated, params=self.params_shardings,
        opt_state=sharding.like_params_shardings(abstract_opt, self.params_shardings,
                                                 abstract_params, self.mesh),
        rng=replicated, skipped=replicated),
        None if abstract_aux is None else jax.tree.map(lambda _: replicated, abstract_aux))
    self.meta = {"param_shapes": param_shapes(abstract_params),
                 "model": dataclasses.asdict(obj.model_config),
                 "objective": cfg.objective.name, "task": cfg.task.name}
    self.num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params)))

    def init(rng, pretrained=None):
      params = sharding.strip_boxes(obj.init_params(rng))
      if pretrained is not None:
        params = obj.place_pretrained(params, pretrained)
      return with_aux(TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=self.tx.init(params), rng=rng,
                                 skipped=jnp.zeros((), jnp.int32)), obj.init_aux())

    self._init = jax.jit(init, out_shardings=self.state_shardings)
    self.abstract_state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        jax.eval_shape(init, rng), self.state_shardings)
    batch_sh = sharding.batch_sharding(self.mesh)

    def micro_sharding(ndim):
      return NamedSharding(self.mesh, P(None, sharding.BATCH_AXES))

    step_fn = make_train_step(obj, self.tx, grad_accum_steps=self.accum,
                              nonfinite=cfg.train.get("nonfinite", "skip"),
                              microbatch_sharding=micro_sharding)
    self.jitted_train_step = jax.jit(step_fn, in_shardings=(self.state_shardings, batch_sh),
                                     out_shardings=(self.state_shardings, replicated),
                                     donate_argnums=(0,))
    self._eval_step = jax.jit(obj.eval_metrics, in_shardings=(self.params_shardings, batch_sh),
                              out_shardings=replicated)

  def restore_latest(self, step: int | None = None) -> TrainState:
    """The newest readable checkpoint of this workdir, or that of `step` (for evaluation
    and analysis)."""
    ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), async_save=False)
    try:
      with self.context():
        restored = ckpt.restore(self.abstract_state, self.meta, step)
    finally:
      ckpt.close()
    if restored is None:
      raise FileNotFoundError(f"no checkpoint in {self.workdir}/checkpoints")
    return restored[0]

  def eval_params(self, state: TrainState):
    """The parameters to evaluate and serve: the moving average when optimizer.ema_decay
    keeps one, else the last iterate."""
    return optim.eval_params(state.params, state.opt_state)

  def restore_params(self, step: int | None = None):
    """eval_params of the newest checkpoint (or of `step`)."""
    return self.eval_params(self.restore_latest(step))

  def trained_params(self):
    """The eval_params of this workdir's final step, training (or finishing: run() resumes) first
    when the final checkpoint is missing. For reports that need finished runs."""
    ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), async_save=False)
    try:
      done = self.steps in ckpt.all_steps()
    finally:
      ckpt.close()
    if not done:
      log.info("training %s (%d steps) in %s", self.config.objective.name, self.steps,
               self.workdir)
      start = time.perf_counter()
      if self.run().interrupted:
        raise SystemExit(f"training in {self.workdir} was interrupted; rerun to resume")
      log.info("trained %s in %.0f s", self.workdir, time.perf_counter() - start)
    return self.restore_params()

  def init_state(self) -> TrainState:
    if self.objective.init_from.startswith(RUN_PREFIX):
      return init_from_run(self, self.objective.init_from[len(RUN_PREFIX):])
    trunk = self.objective.pretrained_trunk()
    if trunk is not None:
      log.info("initialising the trunk from %s", self.objective.init_from)
    with self.context():
      return self._init(jax.random.PRNGKey(int(self.config.seed)), trunk)

  def train_step(self, state, local_batch, step: int | None = None):
    """One update from host-local numpy rows: checked, prepared by the objective (host-side
    work such as noise augmentation, seeded by `step`), then assembled into global arrays."""
    self.check_batch(local_batch)
    if step is None:
      step = int(jax.device_get(state.step))
    local_batch = self.objective.prepare_batch(local_batch, step)
    if self.buckets:
      local_batch = trim_to_bucket(local_batch, self.buckets)
    with self.context():
      return self.jitted_train_step(state, sharding.global_batch(local_batch, self.mesh))

  def _width(self, local_batch) -> int:
    """The length the train step will see for this batch (its bucket, or seq_len)."""
    return bucket_width(local_batch, self.buckets) if self.buckets else self.seq_len

  def check_batch(self, local_batch):
    vocab = self.objective.model_config.vocab_size
    local_rows = self.batch_size // jax.process_count()
    for key in ("inputs", "targets"):
      x = np.asarray(local_batch[key])
      if x.shape != (local_rows, self.seq_len):
        raise ValueError(f"batch['{key}'] has shape {x.shape}; expected (local rows "
                         f"{local_rows}, seq_len {self.seq_len})")
      if x.size and (x.min() < 0 or x.max() >= vocab):
        bad = x[(x < 0) | (x >= vocab)]
        raise ValueError(f"batch['{key}'] holds token ids outside the vocabulary [0, {vocab})"
                         f": e.g. {bad[:5].tolist()}")

  # --- eval ------------------------------------------------------------------------------
  def evaluate(self, params, max_batches: int | None = None) -> dict:
    d = self.config.data
    it = pipeline.make_eval_iterator(
        self.task, d.get("eval_split", "test"), global_batch_size=self.batch_size,
        seq_len=self.seq_len, process_index=jax.process_index(),
        process_count=jax.process_count(), mode=d.get("mode", "padding"),
        read_threads=d.get("read_threads", 2))
    sums, total = {}, 0.0
    with self.context():
      for i, local in enumerate(it):
        if max_batches is not None and i >= max_batches:
          break
        local = self.objective.prepare_batch(local, -1 - i)
        m = jax.device_get(self._eval_step(params, sharding.global_batch(local, self.mesh)))
        w = float(m.get("weight", 1.0))
        total += w
        for k, v in m.items():
          if k != "weight":
            sums[k] = sums.get(k, 0.0) + float(v) * w
    return {k: v / max(total, 1e-8) for k, v in sums.items()}

  # --- the loop --------------------------------------------------------------------------
  def run(self, until: int | None = None) -> RunSummary:
    """Trains to train.steps (resuming from the workdir's newest checkpoint), or stops early
    at step `until` with a checkpoint there; the schedule is always that of train.steps, so
    a later run() (on any mesh) continues exactly."""
    cfg, t, d = self.config, self.config.train, self.config.data
    os.makedirs(self.workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"),
                        keep=t.get("keep_checkpoints", 3),
                        async_save=t.get("async_checkpoint", True))
    train_it = pipeline.make_train_iterator(
        self.task, d.get("train_split", "train"), global_batch_size=self.batch_size,
        seq_len=self.seq_len, seed=int(cfg.seed), process_index=jax.process_index(),
        process_count=jax.process_count(), mode=d.get("mode", "padding"),
        read_threads=d.get("read_threads", 2))
    try:
      restored = ckpt.restore(self.abstract_state, self.meta)
      if restored is None:
        check_fresh_start(self.workdir, bool(t.get("start_over", False)))
    except BaseException:
      ckpt.close(quiet=True)
      raise
    if restored is None:
      state, start = self.init_state(), 0
      log.info("fresh run: %s parameters, %d steps", f"{self.num_params:,}", self.steps)
    else:
      state, data_state, start = restored
      train_it.set_state(resume_data_position(data_state, self.batch_size))
      dropped = observe.drop_metrics_after(self.workdir, start)
      log.info("resumed from step %d in %s%s", start, ckpt.directory,
               f" (dropped {dropped} metrics rows past it: those steps are redone)"
               if dropped else "")
    if jax.process_index() == 0:  # After the checks above: a refused run changes nothing.
      with open(os.path.join(self.workdir, "config.json"), "w") as f:
        f.write(cfg.to_json_best_effort(indent=2))

    writer = observe.MetricWriter(self.workdir)
    baseline = self._unigram_baseline()
    flops_per_step = (self.objective.model_config.flops_per_token(self.seq_len)
                      * self.batch_size * self.seq_len)
    peak = float(t.get("peak_flops", 0.0)) or observe.measure_peak_flops()
    progress = observe.Progress(self.steps, start, self.batch_size * self.seq_len,
                                enabled=self.progress_enabled)
    stop = SignalFlag()
    watch = CompileWatch()
    log_every, ckpt_every = int(t.get("log_every", 50)), int(t.get("checkpoint_every", 500))
    eval_every = int(t.get("eval_every", 0))
    last_metrics, eval_metrics, interrupted = {}, {}, False
    tick, tick_step = time.perf_counter(), start
    step = logged_step = start
    policy = t.get("nonfinite", "skip")
    skips = SkipWatch(t.get("max_consecutive_skips", 10)) if policy == "skip" else None
    finished = False
    try:
      last = self.steps if until is None else min(int(until), self.steps)
      while step < last:
        ckpt.check_saves()  # A background save that failed stops the run here.
        batch = next(train_it)
        with watch.phase(("train", self._width(batch)), f"in train step {step + 1}"):
          state, metrics = self.train_step(state, batch, step)
        step += 1
        if policy == "stop":  # One host sync per step: the price of stopping at once.
          self._check_finite(jax.device_get(metrics), step, ckpt)
        elif skips is not None:
          self._stop_if(skips.push(step, metrics), ckpt)
        if step % log_every == 0 or step == last:
          with watch.phase("log", f"logging step {step}"):
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            lr = float(self.schedule(step - 1))
          now = time.perf_counter()
          sps = (step - tick_step) / max(now - tick, 1e-9)
          metrics.update(steps_per_sec=sps, tokens_per_sec=sps * self.batch_size * self.seq_len,
                         mfu=observe.mfu(flops_per_step, 1 / max(sps, 1e-9), peak,
                                         self.mesh.size),
                         learning_rate=lr, recompiles=len(watch.recompiles))
          tick, tick_step = now, step
          writer.write(step, metrics)
          progress.update(step - logged_step, sps, loss=metrics["loss"])
          logged_step = step
          last_metrics = metrics
        if eval_every and (step % eval_every == 0 or step == last):
          with watch.phase("eval", f"in eval at step {step}"):
            eval_metrics = self.evaluate(self.eval_params(state), t.get("eval_batches"))
          writer.write(step, eval_metrics, prefix="eval_")
          log.info("step %d: eval %s", step, _fmt(eval_metrics))
        if step % ckpt_every == 0 or step == last or stop.raised:
          if policy != "ignore":  # Never save parameters a broken update made non-finite.
            self._stop_if(broken_update(step, metrics), ckpt)
          with watch.phase("checkpoint", f"saving step {step}"):
            ckpt.save(step, state, dict(train_it.get_state(),
                                        global_batch_size=self.batch_size),
                      self.meta, force=stop.raised)
        if stop.raised:
          interrupted = True
          log.warning("signal %s: saved a checkpoint at step %d, exiting", stop.signum, step)
          break
      if skips is not None and not interrupted:
        self._stop_if(skips.flush(), ckpt)
      finished = True
    finally:
      watch.close()
      self.compile_watch = watch
      log.info("XLA compilations: %d at warm-up (%.1f s), %d recompile(s) after",
               watch.warmup_compiles, sum(sec for _, sec in watch.events),
               len(watch.recompiles))
      # When the run is failing, a second error from closing must not replace the first.
      ckpt.close(quiet=not finished)
      progress.close()
      writer.close(quiet=not finished)
      stop.restore()
    if jax.process_index() == 0:
      observe.plot_metrics(self.workdir, baseline=baseline)
    return RunSummary(self.workdir, step, last_metrics, eval_metrics, baseline, interrupted)

  def _stop_if(self, report, ckpt):
    if report is None:
      return
    ckpt.wait()
    last = ckpt.all_steps()
    raise NonFiniteError(f"{report}; the last checkpoint is step "
                         f"{last[-1] if last else 'none (no checkpoint yet)'} in "
                         f"{ckpt.directory}. Lower the learning rate, check the data, or "
                         f"resume from an earlier checkpoint.")

  def _check_finite(self, metrics, step, ckpt):
    self._stop_if(broken_update(step, metrics), ckpt)
    if float(metrics.get("finite", 1.0)) >= 1.0:
      return
    ckpt.wait()
    last = ckpt.all_steps()
    raise NonFiniteError(
        f"non-finite values at step {step} in: {nonfinite_terms(metrics)} "
        f"(the update was not applied). Stopping; the last good checkpoint is step "
        f"{last[-1] if last else 'none (no checkpoint yet)'} in {ckpt.directory}")

  def _unigram_baseline(self):
    try:
      return pipeline.unigram_entropy(self.task, self.config.data.get("train_split", "train"),
                                      max_examples=2000)
    except Exception as e:  # A baseline is a courtesy; never fail a run over it.
      log.warning("no unigram baseline: %s", e)
      return None


def _fmt(metrics: dict) -> str:
  return " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


KNOWN_SECTIONS = {"seed", "init_from", "task", "model", "objective", "mesh", "logical_rules", "data",
                  "train", "optimizer"}


def _check_config(config):
  unknown = sorted(set(config.keys()) - KNOWN_SECTIONS)
  if unknown:
    raise ValueError(f"unknown config keys {unknown}; known top-level keys: "
                     f"{sorted(KNOWN_SECTIONS)}")
  config_checks.check(config)
