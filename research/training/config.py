"""The run configuration: every key a run reads, with its default and type, and its validation.

A study config (`experiments/configs/<study>.py`) starts from `default_config()` and changes values;
`validate(config)` then rejects, before any work, a key that does not exist here, a value of the wrong
type or out of its domain (`RANGES`: intervals such as "[1, inf)"; every float finite in float32, every
int within int32), with one line naming the key and the valid keys or range. Free-form sections: `model.knobs`
(checked by `research.models.create`) and `data.options` (checked by `research.data.parse_options`).

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
- one section per registered evaluator (`research.core.evaluator`), its schema owned by the evaluator's
  module: `curvature`, `measures`, `compression`, `landscape`, `smoothness` (`research/evaluators/`) and
  any a user registers.
- `log_every` (steps), `checkpoint_every` (steps; 0 = at each evaluation), `keep_checkpoints`,
  `tensorboard`, `progress` (auto | bar | lines | none).
"""

import dataclasses
import math

import ml_collections

from research.core import evaluator
from research.core.errors import UserError
from research.training import optimizers, schedules

FREE_FORM = ("model.knobs", "data.options")
INT_LIMIT = 2**31  # step counters, seeds and sizes are int32 on the device
FLOAT32_MAX = 3.4028234663852886e38  # floats reach the device as float32
# Keys that change what a run shows, not what it computes: they may differ when a run is resumed.
DISPLAY_KEYS = ("progress", "tensorboard")


@dataclasses.dataclass(frozen=True)
class Interval:
  """A number's domain, written "[low, high)" (brackets: inclusive, parentheses: exclusive); `note`
  says what a special value means (e.g. "0: off")."""
  low: float
  high: float
  low_open: bool
  high_open: bool
  note: str = ""

  @classmethod
  def parse(cls, text: str) -> "Interval":
    interval, _, note = text.partition(";")
    low, high = (float(x) for x in interval.strip()[1:-1].split(","))
    return cls(low, high, interval.strip()[0] == "(", interval.strip()[-1] == ")", note.strip())

  def __contains__(self, x) -> bool:
    above = x > self.low if self.low_open else x >= self.low
    below = x < self.high if self.high_open else x <= self.high
    return above and below

  def __str__(self) -> str:
    fmt = lambda x: str(int(x)) if float(x).is_integer() else str(x)
    if self.high == math.inf:
      text = f"{'>' if self.low_open else '>='} {fmt(self.low)}"
    else:
      text = (f"in {'(' if self.low_open else '['}{fmt(self.low)}, {fmt(self.high)}"
              f"{')' if self.high_open else ']'}")
    return f"{text} ({self.note})" if self.note else text


# The domain of every numeric key of the run config (a tuple's entries each); the optimizer's, the
# schedule's and each evaluator's are declared in their modules.
RANGES = {
    "seed": "[0, inf)",
    "data.augment.crop_padding": "[0, inf)",
    "loss.label_smoothing": "[0, 1)",
    "optimizer.sam.rho": "[0, inf); 0: off",
    "optimizer.sam.eta": "[0, inf)",
    "optimizer.sam.micro_batch": "[0, inf); 0: the whole batch",
    "training.batch_size": "[1, inf)",
    "training.chunk_size": "[0, inf); 0: the whole batch",
    "training.num_steps": "[0, inf); 0: use num_epochs",
    "training.num_epochs": "[0, inf); 0: use num_steps",
    "eval.every_steps": "[0, inf); 0: off",
    "eval.every_epochs": "[0, inf); 0: off",
    "eval.batch_size": "[1, inf)",
    "eval.patience": "[0, inf); 0: off",
    "log_every": "[1, inf)",
    "checkpoint_every": "[0, inf); 0: at each evaluation",
    "keep_checkpoints": "[1, inf)",
} | {f"optimizer.{k}": v for k, v in optimizers.RANGES.items()} | {
    f"schedule.{k}": v for k, v in schedules.RANGES.items()}


def check_value(path: str, value, interval: str | None = None) -> None:
  """Raises UserError unless the number `value` (each entry of a tuple) is finite, within int32 and in
  `interval` (`Interval.parse` syntax)."""
  for x in (value if isinstance(value, tuple | list) else (value,)):
    if isinstance(x, bool) or not isinstance(x, int | float):
      continue
    if isinstance(x, float) and not math.isfinite(x):
      raise UserError(f"config key {path!r} must be finite, got {x!r}")
    if isinstance(x, float) and abs(x) > FLOAT32_MAX:
      raise UserError(f"config key {path!r} must be finite in float32 (|x| <= {FLOAT32_MAX:.4g}), got {x!r}")
    if isinstance(x, int) and not -INT_LIMIT < x < INT_LIMIT:
      raise UserError(f"config key {path!r} must be < {INT_LIMIT} in magnitude (int32), got {x!r}")
    if interval is not None and x not in Interval.parse(interval):
      raise UserError(f"config key {path!r} must be {Interval.parse(interval)}, got {x!r}")


def check_ranges(section: str, config: ml_collections.ConfigDict, ranges: dict[str, str]) -> None:
  """`check_value` for each key of `ranges` ({key: interval}) in the config section named `section`
  (an evaluator's `_check` calls this with its own table)."""
  for key, interval in ranges.items():
    check_value(f"{section}.{key}", config[key], interval)


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
  for section, registration in evaluator.registered().items():  # each evaluator's own section
    c[section] = registration.default_config()
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


# Keys renamed after release: old dotted path -> new one. A section's module registers its own with
# `rename_key`, so an old config gets one line naming the new key, not the generic unknown-key message.
RENAMED_KEYS: dict[str, str] = {}


def rename_key(old: str, new: str) -> None:
  """Records that config key `old` (dotted path) is now `new`."""
  RENAMED_KEYS[old] = new


def unknown_key_message(path: str, reference: dict | None = None) -> str:
  """`unknown config key 'a.b'; valid keys here: a.c, a.d` (the keys of the same section), or
  `config key 'a.b' was renamed to 'a.c'` for a key in `RENAMED_KEYS`."""
  if path in RENAMED_KEYS:
    return f"config key {path!r} was renamed to {RENAMED_KEYS[path]!r}; set that key instead"
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
    if isinstance(expected, int | float) and not isinstance(expected, bool) and isinstance(value, bool):
      ok = False
    if not ok:
      raise UserError(f"config key {path!r} must be {type(expected).__name__}, got {value!r}")
    check_value(path, value, RANGES.get(path))
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
