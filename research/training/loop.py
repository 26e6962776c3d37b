"""`train_and_evaluate(config, workdir) -> summary`: the training loop, resumable and exact.

Top to bottom: validate the config; load the data; build the model (seeded), the schedule and the
optimizer; restore the latest checkpoint of `workdir` if there is one (the run then continues exactly
where it stopped: data order and augmentation are functions of (seed, step), the dropout stream and
BatchNorm statistics are in the state); run jitted train steps with the state donated and the batch
sharded over all devices; log every `log_every` steps, evaluate and checkpoint on the eval schedule,
call the evaluators (curvature, sharpness) on theirs; stop on a non-finite loss, gradient, parameter or
update norm (status `diverged`, with what went non-finite, the step and its learning rate), on early
stopping, or at the last step; write `summary.json`.

A finished run (done, diverged, early_stopped) is never rewritten: the same config returns its summary,
another one is refused; `force=True` moves it aside first. Display settings (`DISPLAY_KEYS`) may differ
when a run resumes; the change is recorded in meta.json's resume entry.
"""

import functools
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
import tqdm
from flax import nnx

from research import backend, data, models
from research.backend import xla
from research.core import evaluator as evaluator_lib
from research.core import mesh as mesh_lib
from research.core import rundir
from research.core.errors import UserError
from research.core.evaluator import Context, Evaluator
from research.training import checkpoints, optimizers, schedules
from research.training import state as state_lib
from research.training import step as step_lib
from research.training.config import DISPLAY_KEYS, FREE_FORM, default_config, validate

FINISHED = ("done", "diverged", "early_stopped")  # statuses of a run that is never rewritten
_WATCHED = {"loss": "loss", "grad_norm": "gradient norm", "param_norm": "parameter norm",
            "update_norm": "update norm"}  # train-step metrics whose non-finite value is divergence


def _resolved(config) -> dict:
  return json.loads(config.to_json_best_effort())


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
  return out


def _check_same_run(workdir: Path, config) -> tuple[dict | None, dict]:
  """(summary, changed) for a new session in `workdir`: the summary of a finished run with this config
  (None: train), and the display keys that differ from the saved config ({key: [old, new]}).

  Raises UserError when `workdir` holds a finished or trained run with another config."""
  old = rundir.read_json(workdir / "config.json")
  status = (rundir.read_json(workdir / "meta.json") or {}).get("status")
  finished = status in FINISHED
  ckpt_dir = workdir / "checkpoints"
  trained = ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir())
  start_over = "use another workdir or --force (python -m experiments.train) to start over"
  if not finished and (old is None or not trained):  # nothing to resume: the new config replaces the old
    return None, {}
  if old is None:
    raise UserError(f"{workdir} holds a finished run ({status}) without a readable config.json; {start_over}")
  a = _flat(_with_defaults(old, _resolved(default_config())))  # keys added to the code since: at defaults
  b = _flat(_resolved(config))
  diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
  changed = {k: [a.get(k), b.get(k)] for k in diff if k in DISPLAY_KEYS}
  other = [k for k in diff if k not in DISPLAY_KEYS]
  if other:
    what = f"a finished run ({status})" if finished else "a run"
    raise UserError(f"{workdir} holds {what} with another config (differs in {', '.join(other[:5])}); "
                    f"{'a finished run is never rewritten' if finished else 'the same config resumes it'}; "
                    f"{start_over}")
  if not finished:
    return None, changed
  summary = rundir.read_json(workdir / "summary.json")
  if summary is None:
    raise UserError(f"{workdir} holds a finished run ({status}) without a readable summary.json; "
                    f"{start_over}")
  return summary | {"already_finished": True}, changed


def set_aside(workdir: Path) -> Path | None:
  """Moves `workdir` (a run directory, or whatever is at that path) to the sibling
  `<name>.replaced-<UTC time>`; nothing is deleted. Returns the new path (None: nothing there)."""
  if not workdir.exists() and not workdir.is_symlink():
    return None
  stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
  target, n = workdir.with_name(f"{workdir.name}.replaced-{stamp}"), 1
  while target.exists():
    target, n = workdir.with_name(f"{workdir.name}.replaced-{stamp}-{n}"), n + 1
  workdir.rename(target)
  return target


def _load_data(config) -> data.Dataset:
  options = dict(config.data.options)
  options.setdefault("seed", config.seed)
  return data.load(config.data.name, **options)


class _Progress:
  def __init__(self, mode: str, total: int, initial: int):
    if mode == "auto":
      mode = "bar" if sys.stderr.isatty() else "lines"
    self.mode = mode
    self.bar = (tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
                if mode == "bar" else None)

  def update(self, step: int, metrics: dict | None) -> None:
    if self.bar is not None:
      self.bar.update(1)
      if metrics:
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in metrics.items()
                              if k in ("train/loss", "train/accuracy", "test/accuracy")})
    elif self.mode == "lines" and metrics:
      shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
      print(f"step {step}: {shown}", flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def evaluate(eval_step, state, split: data.Split, batch_size: int, sharding, num_classes: int,
             prefix: str) -> dict:
  """Exact means over a split: `{prefix}/loss`, `/accuracy`, `/class_accuracy` (list).

  Each process places only its devices' share of every batch (`mesh.global_batch`); the sums come back
  replicated, the same on every process."""
  sums = None
  for idx, mask in data.eval_indices(len(split), batch_size):
    batch = mesh_lib.global_batch(split.images, split.labels, idx, mask, sharding)
    out = eval_step(state.params, state.model_state, batch)
    out = jax.tree.map(lambda x: np.asarray(x, np.float64), out)
    sums = out if sums is None else jax.tree.map(np.add, sums, out)
  class_acc = sums["class_correct"] / np.maximum(sums["class_count"], 1)
  return {f"{prefix}/loss": float(sums["loss"] / sums["count"]),
          f"{prefix}/accuracy": float(sums["correct"] / sums["count"]),
          f"{prefix}/class_accuracy": [float(a) for a in class_acc]}


def _gaps(metrics: dict) -> dict:
  out = {}
  if "eval_train/accuracy" in metrics and "test/accuracy" in metrics:
    out["gap/accuracy"] = metrics["eval_train/accuracy"] - metrics["test/accuracy"]
    out["gap/loss"] = metrics["test/loss"] - metrics["eval_train/loss"]
  return out


def _finite(metrics: dict) -> bool:
  return all(math.isfinite(v) for k, v in metrics.items() if isinstance(v, float))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       evaluators: Sequence[Evaluator] | None = None, *, launch: dict | None = None,
                       force: bool = False) -> dict:
  """Trains as `config` says, writing the run directory `workdir`; resumes from its checkpoints.

  `evaluators` run on their step schedules (`research.core.evaluator`); None: the ones the config's
  sections switch on (`evaluator.build_all(config)`). `launch` (the command line, from the entry point)
  goes to `meta.json` as `launch`, for reports to show how to reproduce the run. Returns the summary
  (also in `summary.json`): status (done | diverged | early_stopped), steps, final and best metrics,
  generalization gaps, wall time; `divergence` (what went non-finite, step, lr) when diverged.

  A finished run in `workdir` is returned as it is (`already_finished`), nothing trained or written;
  another config for it is a UserError. `force`: first move whatever is at `workdir` to
  `<workdir>.replaced-<UTC time>` (`set_aside`) and start over.
  """
  config = validate(config)
  evaluators = evaluator_lib.build_all(config) if evaluators is None else tuple(evaluators)
  workdir = Path(workdir)
  writer = rundir.is_writer()  # every process trains; process 0 alone writes the run directory
  aside = None
  if force:
    aside = set_aside(workdir) if writer else None
    if jax.process_count() > 1:  # the others look at the workdir after process 0 has moved it
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("research.training.loop.set_aside")
  if writer:
    try:
      workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create the run directory {workdir}: {e.strerror or e}") from None
  finished, changed = _check_same_run(workdir, config)
  if finished is not None:  # a finished run is never rewritten
    return finished
  meta = rundir.read_json(workdir / "meta.json") or {"created": rundir.now(), "resumed": []}
  if aside is not None:
    meta["replaced_run"] = str(aside)
  meta.update(status="running", seed=config.seed, **rundir.environment(), backend_setup=backend.describe())
  meta.pop("error", None)
  if launch is not None:
    meta["launch"] = launch
  write_meta = lambda m: rundir.write_json_atomic(workdir / "meta.json", m) if writer else None
  if writer:
    rundir.write_json_atomic(workdir / "config.json", _resolved(config))
  write_meta(meta)
  try:
    summary = _run(config, workdir, meta, evaluators, write_meta, writer, changed)
  except BaseException as e:  # only an unfinished run gets here: finished ones returned above
    meta.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0], ended=rundir.now())
    write_meta(meta)
    raise
  if "divergence" in summary:
    meta["divergence"] = summary["divergence"]
  # again at the end, with the oneDNN verdicts of this run's compilations
  meta.update(status=summary["status"], ended=rundir.now(), backend_setup=backend.describe())
  write_meta(meta)
  return summary


def schedule_lengths(config, ds: data.Dataset) -> tuple[int, int]:
  """(steps_per_epoch, total_steps) of a config on its dataset."""
  n_train = len(ds.train)
  full_batch = config.training.full_batch
  try:
    spe = data.steps_per_epoch(n_train, None if full_batch else config.training.batch_size)
  except ValueError as e:
    raise UserError(f"training.batch_size: {e}") from None
  return spe, config.training.num_steps or config.training.num_epochs * spe


def batch_chunking(config, num_train: int) -> tuple[int, int]:
  """(batch size, chunk size) of a train step: the examples per step (the training set when full-batch)
  and per forward/backward pass (SAM's micro-batch, else `training.chunk_size`, else the batch)."""
  t_cfg, sam = config.training, config.optimizer.sam
  batch_size = num_train if t_cfg.full_batch else t_cfg.batch_size
  chunk = sam.micro_batch if (sam.rho > 0 and sam.micro_batch > 0) else (t_cfg.chunk_size or batch_size)
  chunk = min(chunk, batch_size)
  if not t_cfg.full_batch and batch_size % chunk:
    raise UserError(f"batch_size {batch_size} is not a multiple of the chunk size {chunk} "
                    "(training.chunk_size or optimizer.sam.micro_batch)")
  return batch_size, chunk


def make_steps(config, ds: data.Dataset, graphdef, optimizer, schedule) -> tuple[Callable, Callable, dict]:
  """(train_step(state, batch, constants), eval_step(params, model_state, batch, constants), constants),
  not jitted (`research.training.step`): what the loop jits and calls with `constants`.

  `constants` holds the arrays the steps read besides their state and batch: the augmentation key (from
  `config.seed`) and the input statistics of the training split. As arguments rather than values baked
  into the program, the compiled steps are the same for every seed, so a sweep's trials share them
  through the persistent compilation cache.
  """
  sam = config.optimizer.sam
  constants = {"augment_key": jax.random.fold_in(jax.random.key(config.seed), 2),
               "inputs": ds.input_statistics()}

  def train_step(state, batch, constants):
    step = step_lib.make_train_step(
        graphdef, optimizer, schedule, loss_name=config.loss.name,
        label_smoothing=config.loss.label_smoothing,
        preprocess=functools.partial(ds.preprocess_with, constants["inputs"]),
        augment_key=constants["augment_key"], crop_padding=config.data.augment.crop_padding,
        flip=config.data.augment.flip, sam_rho=sam.rho, sam_adaptive=sam.adaptive, sam_eta=sam.eta,
        sam_micro_batch=sam.micro_batch, sam_bn_update=sam.bn_update)
    return step(state, batch)

  def eval_step(params, model_state, batch, constants):
    step = step_lib.make_eval_step(graphdef, loss_name=config.loss.name, num_classes=ds.num_classes,
                                   preprocess=functools.partial(ds.preprocess_with, constants["inputs"]))
    return step(params, model_state, batch)

  return train_step, eval_step, constants


def build_state(config, ds: data.Dataset, total_steps: int, steps_per_epoch: int):
  """(graphdef, state at step 0, optimizer, schedule): the seeded model and its optimizer.

  One root key from `config.seed`, split into named streams (STYLE.md 6): 0 initialization, 1 dropout,
  2 augmentation.
  """
  root = jax.random.key(config.seed)
  knobs = dict(config.model.knobs)
  if config.model.mixed_precision:
    knobs["dtype"] = "bfloat16"
  model = models.create(config.model.name, num_classes=ds.num_classes, input_shape=ds.input_shape,
                        rngs=nnx.Rngs(params=jax.random.fold_in(root, 0),
                                      dropout=jax.random.fold_in(root, 1)), **knobs)
  schedule = schedules.make_schedule(config.schedule, total_steps=total_steps,
                                     steps_per_epoch=steps_per_epoch)
  optimizer = optimizers.make_optimizer(config.optimizer, schedule)
  graphdef, state = state_lib.create(model, optimizer)
  return graphdef, state, optimizer, schedule


def run_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The validated config of a run directory (keys added to the code since the run: at their defaults)."""
  raw = rundir.read_json(Path(workdir) / "config.json")
  if raw is None:
    raise UserError(f"{workdir} is not a run directory (no readable config.json)")
  return validate(ml_collections.ConfigDict(_tuples(_with_defaults(raw, default_config().to_dict()))))


def initial_state(config):
  """(dataset, graphdef, state at step 0) of a config: the seeded model and optimizer state that a
  checkpoint of its run restores into."""
  ds = _load_data(config)
  spe, total = schedule_lengths(config, ds)
  graphdef, state, _, _ = build_state(config, ds, total, spe)
  return ds, graphdef, state


def load_run(workdir: str | Path, step: int | None = None):
  """(config, dataset, graphdef, state, step) of a run directory's checkpoint (default: the latest).

  For measuring a trained model afterwards (curvature, sharpness, landscapes).
  """
  workdir = Path(workdir)
  config = run_config(workdir)
  ckpt_dir = workdir / "checkpoints"
  steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
  if not steps:
    raise UserError(f"{workdir} has no checkpoint to load")
  if step is not None and step not in steps:
    raise UserError(f"no checkpoint at step {step} in {workdir}; available: {', '.join(map(str, steps))}")
  ds, graphdef, state = initial_state(config)
  state = mesh_lib.put(state, mesh_lib.replicated(mesh_lib.data_mesh()))  # as training holds it
  ckpt = checkpoints.Checkpointer(ckpt_dir, keep=config.keep_checkpoints)
  step = steps[-1] if step is None else step
  state = ckpt.restore(state, step)
  ckpt.close()
  return config, ds, graphdef, state, step


def _with_defaults(raw: dict, defaults: dict, prefix: str = "") -> dict:
  """A saved config with the keys it lacks (added to the code after the run was made) at their defaults."""
  out = dict(defaults)
  for key, value in raw.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict) and isinstance(defaults.get(key), dict) and path not in FREE_FORM:
      out[key] = _with_defaults(value, defaults[key], path + ".")
    else:
      out[key] = value
  return out


def _tuples(value):
  """JSON lists back to tuples, as configs hold them."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _run(config, workdir: Path, meta: dict, evaluators: Sequence[Evaluator], write_meta: Callable,
         writer_process: bool, changed: dict) -> dict:
  t_start = time.time()
  ds = _load_data(config)
  t_cfg, e_cfg = config.training, config.eval
  n_train = len(ds.train)
  full_batch = t_cfg.full_batch
  batch_size, chunk = batch_chunking(config, n_train)
  spe, total_steps = schedule_lengths(config, ds)
  mesh = mesh_lib.data_mesh()
  n_dev = mesh.size
  if chunk % n_dev or e_cfg.batch_size % n_dev:
    raise UserError(f"the chunk size {chunk} and eval.batch_size {e_cfg.batch_size} must be multiples "
                    f"of the number of devices ({n_dev})")
  eval_every = e_cfg.every_steps or (e_cfg.every_epochs * spe if e_cfg.every_epochs else 0)
  ckpt_every = config.checkpoint_every or eval_every or total_steps

  graphdef, state, optimizer, schedule = build_state(config, ds, total_steps, spe)
  state = mesh_lib.put(state, mesh_lib.replicated(mesh))
  ckpt = checkpoints.Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
  start = ckpt.latest_step()
  kept_step = -1  # the records kept from an earlier session: those up to the restored checkpoint
  if start is not None:
    state = ckpt.restore(state, start)
    meta.setdefault("resumed", []).append({"step": start, "at": rundir.now()}
                                          | ({"changed": changed} if changed else {}))
    kept_step = start
  else:
    start = 0
  metrics_path = workdir / "metrics.jsonl"
  records = (rundir.truncate_metrics(metrics_path, kept_step) if writer_process
             else [r for r in rundir.read_metrics(metrics_path) if r["step"] <= kept_step])
  write_meta(meta | {"total_steps": total_steps})

  train_fn, eval_fn, constants = make_steps(config, ds, graphdef, optimizer, schedule)
  constants = mesh_lib.put(constants, mesh_lib.replicated(mesh))
  train_step = functools.partial(xla.jit(train_fn, donate_argnums=0), constants=constants)
  eval_step = functools.partial(xla.jit(eval_fn), constants=constants)
  train_sharding = mesh_lib.batch_sharding(mesh, axis=1)
  eval_sharding = mesh_lib.batch_sharding(mesh, axis=0)

  def chunked_batch(idx: np.ndarray):
    """The examples `idx` as (num_chunks, chunk) on the devices; each process places its share only."""
    positions, mask = data.chunk_indices(len(idx), chunk)
    return mesh_lib.global_batch(ds.train.images, ds.train.labels, idx[positions], mask, train_sharding)

  if full_batch:  # the whole training set, padded to whole chunks, on the devices once
    fixed_batch = chunked_batch(np.arange(n_train))

  def batch_at(step: int):
    if full_batch:
      return fixed_batch
    return chunked_batch(data.batch_indices(n_train, batch_size, step, seed=config.seed))

  splits = {"eval_train": ds.eval_train, "valid": ds.valid, "test": ds.test}

  def run_eval(state, step: int) -> dict:
    out = {}
    for name in e_cfg.splits:
      if len(splits[name]):
        out |= evaluate(eval_step, state, splits[name], e_cfg.batch_size, eval_sharding, ds.num_classes,
                        name)
    return out | _gaps(out)

  def initial_params():
    return build_state(config, ds, total_steps, spe)[1].params

  def context(step: int, state) -> Context:
    return Context(step, state, graphdef, ds, config, workdir, total_steps=total_steps,
                   initial_params_fn=initial_params, is_writer=writer_process)

  def run_evaluators(state, step: int) -> dict:
    out = {}
    for ev in evaluators:
      if ev.due(step, total_steps):
        out |= ev.fn(context(step, state))
    return out

  # Early stopping and best values are recomputed from the records, so they resume exactly.
  metric, mode, patience = e_cfg.early_stop_metric, e_cfg.early_stop_mode, e_cfg.patience
  better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
  best, since_best = None, 0
  for r in records:
    if metric and metric in r:
      if best is None or better(r[metric], best):
        best, since_best = r[metric], 0
      else:
        since_best += 1

  writer = rundir.MetricsWriter(metrics_path, enabled=writer_process)
  tb = None
  if config.tensorboard and writer_process:
    from tensorboardX import SummaryWriter  # imported only when asked for

    tb = SummaryWriter(str(workdir / "tensorboard"))
  progress = _Progress(config.progress if writer_process else "none", total_steps, start)
  status, last_finite, diverged_step, divergence = "done", None, None, None
  step = start
  t_loop = t_first = time.time()

  def finish_step(done_step: int, metrics: dict, state) -> str | None:
    """Host side of a finished step: divergence check, logging, eval, checkpoint. Returns a status."""
    nonlocal best, since_best, last_finite, divergence
    metrics = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
    bad = [k for k in _WATCHED if f"train/{k}" in metrics and not math.isfinite(metrics[f"train/{k}"])]
    if bad:
      lr = metrics.get("train/lr")
      divergence = {"step": done_step, "non_finite": bad, "lr": lr,
                    "message": f"non-finite {', '.join(_WATCHED[k] for k in bad)} at step {done_step}"
                               + (f" (learning rate {lr:.4g})" if lr is not None else "")}
      writer.write(done_step, metrics | {"epoch": done_step / spe, "diverged": True})
      return "diverged"
    last_finite = (done_step, metrics)
    record = {}
    if done_step % config.log_every == 0 or done_step == total_steps:
      record |= metrics | {"epoch": done_step / spe}
    is_eval = (eval_every and done_step % eval_every == 0) or done_step == total_steps
    if is_eval:
      record |= run_eval(state, done_step) | {"epoch": done_step / spe}
    extra = run_evaluators(state, done_step)
    if extra:
      record |= extra | {"epoch": done_step / spe}
    if record:
      writer.write(done_step, record)
      if tb is not None:
        for k, v in record.items():
          if isinstance(v, float):
            tb.add_scalar(k, v, done_step)
    progress.update(done_step, record or None)
    stop = None
    if is_eval and metric and metric in record:
      if best is None or better(record[metric], best):
        best, since_best = record[metric], 0
      else:
        since_best += 1
        if patience and since_best >= patience:
          stop = "early_stopped"
    if done_step % ckpt_every == 0 or done_step == total_steps or stop:
      ckpt.save(done_step, state)
    return stop

  def needs_state(s: int) -> bool:
    """Whether the host work after step s reads the state (evaluation, checkpoint, evaluators)."""
    return bool((eval_every and s % eval_every == 0) or s == total_steps or s % ckpt_every == 0
                or any(ev.every_steps and s % ev.every_steps == 0 for ev in evaluators))

  if start == 0 and any(ev.every_steps for ev in evaluators):  # the initialization, once
    initial = {}
    for ev in evaluators:
      if ev.every_steps:
        initial |= ev.fn(context(0, state))
    if initial:
      writer.write(0, initial | {"epoch": 0.0})

  # Host work overlaps the next step: a plain step's metrics are checked while the next step runs (the
  # state is donated, so steps that need it are finished before the next one is dispatched). A
  # non-finite loss is thus caught one step late; the diverged state is never saved.
  pending = None
  try:
    while step < total_steps and status == "done":
      batch = batch_at(step)
      state, metrics = train_step(state, batch)
      step += 1
      finished = []
      if pending is not None:
        finished.append((*pending, None))
        pending = None
      if needs_state(step):
        finished.append((step, metrics, state))
      else:
        pending = (step, metrics)
      for done_step, done_metrics, done_state in finished:
        outcome = finish_step(done_step, done_metrics, done_state)
        if outcome == "diverged":
          status, diverged_step = "diverged", done_step
          break
        if outcome == "early_stopped":
          status = "early_stopped"
          break
      if step == start + 1:
        t_first = time.time()  # after the first step, which includes compilation
  finally:
    progress.close()
    writer.close()
    if tb is not None:
      tb.close()
    ckpt.close()
  wall = time.time() - t_start
  steps_run = step - start
  all_records = records + writer.records
  summary = _summary(all_records, status=status, step=diverged_step or step, total_steps=total_steps,
                     spe=spe,
                     diverged_step=diverged_step, last_finite=last_finite, best_metric=metric,
                     mode=mode, divergence=divergence)
  steady = max(steps_run - 1, 0) / max(time.time() - t_first, 1e-9)  # steps/s after the first step
  summary |= {"wall_time_s": wall, "loop_time_s": time.time() - t_loop, "steps_this_session": steps_run,
              "steps_per_s": steady, "examples_per_s": steady * batch_size,
              "num_params": models.num_params(nnx.merge(graphdef, state.params, state.model_state)),
              "num_train": n_train, "batch_size": batch_size, "devices": n_dev}
  if writer_process:
    rundir.write_json_atomic(workdir / "summary.json", summary)
  return summary


def _summary(records: list[dict], *, status, step, total_steps, spe, diverged_step, last_finite,
             best_metric, mode, divergence=None) -> dict:
  evals = [r for r in records if any(k.endswith("/accuracy") and not k.startswith("train/") for k in r)]
  final = {k: v for k, v in (evals[-1] if evals else {}).items()}
  best = {}
  for r in evals:
    for k, v in r.items():
      if not isinstance(v, float | int) or k in ("step", "epoch") or k.startswith(("gap/", "smooth/")):
        continue
      if k.endswith("/accuracy") or k.endswith("/loss"):
        key = f"best_{k}"
        pick = max if k.endswith("/accuracy") else min
        if key not in best or pick(v, best[key]) != best[key]:
          best[key], best[f"{key}_step"] = v, r["step"]
  out = {"status": status, "step": step, "total_steps": total_steps, "epochs": step / spe,
         "final": final, "best": best, "gaps": _gaps(final)}
  if best_metric:
    vals = [(r[best_metric], r["step"]) for r in evals if best_metric in r]
    if vals:
      pick = max if mode == "max" else min
      v, s = pick(vals, key=lambda t: t[0])
      out["early_stopping"] = {"metric": best_metric, "best": v, "best_step": s}
  if status == "diverged":
    out["diverged_step"] = diverged_step
    out["divergence"] = divergence
    out["last_finite"] = {"step": last_finite[0], **last_finite[1]} if last_finite else None
  return out
