"""The run configuration: every key a run reads, with its default and type, and its validation.

A study config (`experiments/configs/<study>.py`) starts from `default_config()` and changes values;
`validate(config)` then rejects, before any work, a key that does not exist here or a value of the wrong
type, with one line naming the key and the valid keys. Free-form sections: `model.knobs` (checked by
`research.models.create`) and `data.options` (checked by `research.data.parse_options`).

Sections:
- `seed`: the root seed (init, data order, dropout, augmentation); recorded, never tuned.
- `data`: `name`, `options` (`research.data.LoadOptions` fields, e.g. num_train, valid_size,
  label_noise), `augment` (`crop_padding` pixels, `flip`).
- `model`: `name`, `knobs`; `mixed_precision` (bfloat16 compute, float32 parameters and optimizer
  state).
- `loss`: `name` (cross_entropy | mse), `label_smoothing`.
- `optimizer`: see `research.training.optimizers`; `optimizer.sam`: `rho` (0 = off), `adaptive` (ASAM),
  `eta` (ASAM's offset), `micro_batch` (m of m-sharpness, 0 = the whole batch), `bn_update` (which pass
  updates BatchNorm statistics: `clean` or `perturbed`).
- `schedule`: see `research.training.schedules`.
- `training`: `batch_size`; `full_batch` (each step is one exact gradient step on the whole training
  set); `chunk_size` (examples per forward/backward pass, gradients summed exactly over the chunks:
  accumulation for big batches, constant memory for full batch; 0 = the whole batch); `num_steps` or
  `num_epochs` (exactly one of them > 0).
- `eval`: `every_steps` or `every_epochs`, `batch_size`, `splits`; early stopping on `early_stop_metric`
  (e.g. "valid/accuracy", "" = off) with `patience` evaluations and `early_stop_mode` (max | min).
- `curvature`: the Hessian tracked during training (`curvature_config`, research/curvature/tracking.py).
- `measures`: sharpness and generalization measures (`measures_config`, research/measures/tracking.py).
- `compression`: post-training quantization and pruning at the end (`compression_config`,
  research/measures/compression_tracking.py).
- `landscape`: a loss-landscape scan at the end of training (`landscape_config`,
  research/landscape/tracking.py).
- `log_every` (steps), `checkpoint_every` (steps; 0 = at each evaluation), `keep_checkpoints`,
  `tensorboard`, `progress` (auto | bar | lines | none).
"""

import ml_collections

from research.errors import UserError
from research.training import optimizers, schedules

FREE_FORM = ("model.knobs", "data.options")


def curvature_config() -> ml_collections.ConfigDict:
  """Curvature tracked during training (research/curvature/tracking.py); off unless every_steps > 0
  or at_end. A fixed probe set: the first `num_examples` examples of `split` (0: all)."""
  return ml_collections.ConfigDict(dict(
      every_steps=0, at_end=False, split="train", num_examples=1000, chunk_size=1000, bn_mode="eval",
      k=1, tol=1e-3, max_restarts=10, lambda_min=False, trace_probes=0, trace_every=0, preconditioned=False,
      gradient=False, noise_scale=False, save_every=0, density_every=0, density_probes=3,
      density_steps=60, seed=0))


def compression_config() -> ml_collections.ConfigDict:
  """Accuracy after post-training compression of the final weights (research/measures/
  compression_tracking.py); off unless at_end. Kernels only: `bits` int-b fake quantization (per output
  `granularity`: channel | tensor), magnitude pruning to each of `sparsities` (`scope`: global | layer);
  evaluated on `splits` (train, eval_train, valid, test), the first `num_examples` of each (0: all),
  `chunk_size` examples per forward pass (0: all at once)."""
  return ml_collections.ConfigDict(dict(
      at_end=False, bits=(8, 4), sparsities=(0.5, 0.7, 0.9), scope="global", granularity="channel",
      splits=("test", "eval_train"), num_examples=0, chunk_size=1000))


def measures_config() -> ml_collections.ConfigDict:
  """Sharpness and generalization measures of the trained network (research/measures/tracking.py); off
  unless every_steps > 0 or at_end. `names`: comma-separated (research.measures.tracking.MEASURES);
  `rescale_alphas`: comma-separated alphas of Dinh et al.'s function-preserving rescaling of the layers
  `rescale_layers` ("first,second" for `rescale_kind` relu, "layer,norm" for batchnorm)."""
  return ml_collections.ConfigDict(dict(
      every_steps=0, at_end=False, names="worst_case,worst_case_adaptive", split="train",
      num_examples=1000, chunk_size=1000, bn_mode="eval", seed=0,
      rho=0.05, adaptive_rho=0.5, norm="l2", steps=20, restarts=1, m=0,
      average_rho=0.01, average_adaptive_rho=0.1, average_pairs=16,
      epsilon=1e-3, epsilon_subspace=0,
      pac_bayes_target=0.1, pac_bayes_samples=10, pac_bayes_sigma_max=2.0, pac_bayes_depth=15,
      pac_bayes_tolerance=1e-2, pac_bayes_magnitude_eps=1e-3,
      margin_percentile=10.0, lambda_max_tol=1e-3, trace_probes=20,
      rescale_alphas="", rescale_kind="relu", rescale_layers=""))


def landscape_config() -> ml_collections.ConfigDict:
  """A loss-landscape scan of the trained parameters (research/landscape/tracking.py); off unless
  at_end or every_steps > 0. `kind` 1d | 2d, `num_points` per axis (odd: the centre is on the grid),
  coefficients in [-span, span] along `directions` (random: Gaussian, `normalization` filter | layer |
  none, Li et al. 2018; eigen: the top Hessian eigenvectors, unit norm), on the first `num_examples`
  examples of each of `splits` (0: all), BatchNorm in `bn_mode` (eval | batch | recompute; recompute
  uses the first `stats_examples` training images in batches of `stats_batch_size`)."""
  return ml_collections.ConfigDict(dict(
      at_end=False, every_steps=0, kind="2d", num_points=11, span=1.0, directions="random",
      normalization="filter", splits=("eval_train", "test"), num_examples=512, chunk_size=512,
      bn_mode="eval", stats_examples=1024, stats_batch_size=256, seed=0))


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.study = ""  # the study a run belongs to (experiments/configs/<study>.py); picks the report template
  c.seed = 0
  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist"
  c.data.options = ml_collections.ConfigDict()
  c.data.augment = ml_collections.ConfigDict(dict(crop_padding=0, flip=False))
  c.model = ml_collections.ConfigDict()
  c.model.name = "simple_cnn"
  c.model.knobs = ml_collections.ConfigDict()
  c.model.mixed_precision = False
  c.loss = ml_collections.ConfigDict(dict(name="cross_entropy", label_smoothing=0.0))
  c.optimizer = optimizers.default_optimizer_config()
  c.optimizer.sam = ml_collections.ConfigDict(dict(rho=0.0, adaptive=False, eta=0.01, micro_batch=0,
                                                   bn_update="perturbed"))
  c.schedule = schedules.default_schedule_config()
  c.training = ml_collections.ConfigDict(dict(batch_size=128, full_batch=False, chunk_size=0,
                                              num_steps=0, num_epochs=1))
  c.eval = ml_collections.ConfigDict(dict(every_steps=0, every_epochs=1, batch_size=1000,
                                          splits=("eval_train", "valid", "test"), early_stop_metric="",
                                          early_stop_mode="max", patience=0))
  c.curvature = curvature_config()
  c.compression = compression_config()
  c.measures = measures_config()
  c.landscape = landscape_config()
  c.log_every = 50
  c.checkpoint_every = 0
  c.keep_checkpoints = 2
  c.tensorboard = False
  c.progress = "auto"
  return c


SAM_BN_UPDATES = ("clean", "perturbed")
EVAL_SPLITS = ("eval_train", "valid", "test")
PROGRESS = ("auto", "bar", "lines", "none")


def _walk(config, prefix=""):
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      yield from _walk(value, path + ".")
    else:
      yield path, value


def config_keys() -> dict:
  """{dotted path: default} of every key of `default_config()` (free-form sections as one key)."""
  return dict(_walk(default_config()))


def unknown_key_message(path: str, reference: dict | None = None) -> str:
  """`unknown config key 'a.b'; valid keys here: a.c, a.d` (the keys of the same section)."""
  reference = config_keys() if reference is None else reference
  section = path.rsplit(".", 1)[0] + "." if "." in path else ""
  valid = sorted(k for k in reference if k.startswith(section) and "." not in k[len(section):])
  return f"unknown config key {path!r}; valid keys here: {', '.join(valid) or 'none'}"


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks keys and types against `default_config()`; returns `config`. Raises UserError."""
  reference = config_keys()
  for path, value in _walk(config):
    if path not in reference:
      raise UserError(unknown_key_message(path, reference))
    expected = reference[path]
    if path in FREE_FORM:
      if not isinstance(value, ml_collections.ConfigDict | dict):
        raise UserError(f"config key {path!r} must be a dict of options, got {value!r}")
      continue
    ok = (isinstance(value, type(expected))
          or (isinstance(expected, float) and isinstance(value, int) and not isinstance(value, bool))
          or (isinstance(expected, tuple) and isinstance(value, list)))
    if isinstance(expected, int) and not isinstance(expected, bool) and isinstance(value, bool):
      ok = False
    if not ok:
      raise UserError(f"config key {path!r} must be {type(expected).__name__}, got {value!r}")
  t, e, s = config.training, config.eval, config.optimizer.sam
  if (t.num_steps > 0) == (t.num_epochs > 0):
    raise UserError(f"set exactly one of training.num_steps and training.num_epochs > 0, got "
                    f"{t.num_steps} and {t.num_epochs}")
  if (e.every_steps > 0) and (e.every_epochs > 0):
    raise UserError("set at most one of eval.every_steps and eval.every_epochs > 0")
  for split in e.splits:
    if split not in EVAL_SPLITS:
      raise UserError(f"unknown eval split {split!r}; valid choices: {', '.join(EVAL_SPLITS)}")
  if s.bn_update not in SAM_BN_UPDATES:
    raise UserError(f"unknown optimizer.sam.bn_update {s.bn_update!r}; valid choices: "
                    f"{', '.join(SAM_BN_UPDATES)}")
  if config.progress not in PROGRESS:
    raise UserError(f"unknown progress {config.progress!r}; valid choices: {', '.join(PROGRESS)}")
  if e.early_stop_mode not in ("max", "min"):
    raise UserError(f"unknown eval.early_stop_mode {e.early_stop_mode!r}; valid choices: max, min")
  if e.early_stop_metric and e.early_stop_metric.split("/")[0] not in e.splits:
    raise UserError(f"eval.early_stop_metric {e.early_stop_metric!r} needs its split in eval.splits "
                    f"({', '.join(e.splits)})")
  return config
