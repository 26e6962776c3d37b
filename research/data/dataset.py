"""`load(name, **options) -> Dataset`: the in-memory splits every experiment trains and measures on.

Images stay uint8 (n, H, W, C) on the host; conversion to float, normalization and augmentation run on
the device inside jitted code (`research.data.transforms`). Every choice below is a function of
`seed`, so two loads with the same options give the same arrays.

The order of operations on the raw TFDS splits:
1. keep a subset of classes (`classes`) and relabel them 0..k-1 in the order given;
2. drop training images that duplicate a test image (`drop_test_duplicates`: exact or also near);
3. carve `valid` from the training split with its class proportions (`valid_size` examples, may
   be 0);
4. keep a class-balanced subset of `num_train` training examples;
5. flip a fraction `label_noise` of the training labels to another class, uniformly (recorded);
6. pick `eval_train`, a fixed subset of the (possibly noisy) training split, as large as the test
   split by default, evaluated with the same code as test;
7. compute the normalization statistics from the final training split only: per channel (always), and
   per pixel for `normalization = "standardize_pixel"`; every split is normalized with them.
`test` is never touched beyond step 1.
"""

import dataclasses
import types
import typing

import numpy as np

from research.core.errors import UserError, choices_message
from research.data import leakage, sources, synthetic, transforms

NORMALIZATIONS = transforms.MODES
DEDUP_CHOICES = ("none", "exact", "near")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split in memory: images (n, H, W, C) uint8, labels (n,) int32, and where each came from."""
  images: np.ndarray
  labels: np.ndarray
  source_indices: np.ndarray  # (n,) int64 index of each example in the raw TFDS split

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, idx: np.ndarray) -> "Split":
    return Split(self.images[idx], self.labels[idx], self.source_indices[idx])

  def class_counts(self, num_classes: int) -> np.ndarray:
    return np.bincount(self.labels, minlength=num_classes)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
  """Options of `load`; every field can be given as a keyword argument or a config entry."""
  seed: int = 0  # drives valid carving, subsets, label noise and eval_train
  valid_size: int = 0  # examples carved from train (class proportions kept) for validation
  eval_train_size: int | None = None  # default: the size of the test split (capped at train)
  num_train: int | None = None  # class-balanced subset of the training split; None = all
  classes: tuple[int, ...] | None = None  # subset of the original class ids, relabelled 0..k-1
  label_noise: float = 0.0  # fraction of training labels flipped to a uniformly drawn other class
  drop_test_duplicates: str = "none"  # none | exact | near: drop train images that copy a test one
  # standardize (train mean/std per channel) | standardize_pixel (per pixel, Cohen et al. 2021) |
  # unit ([0, 1]) | none ([0, 255])
  normalization: str = "standardize"
  data_dir: str | None = None  # TFDS data dir; default $TFDS_DATA_DIR or ~/tensorflow_datasets
  image_key: str = "image"
  label_key: str = "label"
  prepare: bool = True  # prepare the dataset if it is not prepared yet
  # Synthetic data only.
  image_shape: tuple[int, int, int] = (28, 28, 1)
  num_classes: int = 10
  synthetic_train: int = 1024
  synthetic_test: int = 256


class Preprocessing:
  """`preprocess` for a dataset with a `normalization` and its `input_statistics()`."""

  def preprocess(self, images):
    """uint8 images -> float32, normalized as chosen; jit-able (numpy or jax arrays)."""
    return self.preprocess_with(self.input_statistics(), images)

  def preprocess_with(self, statistics: dict, images):
    """`preprocess` with the statistics given (`input_statistics()`, or the same arrays traced)."""
    return transforms.normalize(images, statistics["mean"], statistics["std"], self.normalization)


@dataclasses.dataclass(frozen=True)
class Dataset(Preprocessing):
  """Splits and metadata. `mean`/`std` are per-channel, in [0, 1] units, from `train` only;
  `pixel_mean`/`pixel_std` the same per pixel ((H, W, C), std floored at
  `transforms.PIXEL_STD_FLOOR`), computed only for `normalization = "standardize_pixel"`."""
  name: str
  train: Split
  valid: Split
  test: Split
  eval_train: Split
  num_classes: int
  class_names: tuple[str, ...]
  input_shape: tuple[int, int, int]
  mean: np.ndarray  # (C,) float32
  std: np.ndarray  # (C,) float32
  normalization: str
  noisy_indices: np.ndarray  # indices into `train` whose labels were flipped
  clean_train_labels: np.ndarray  # `train` labels before noise
  options: LoadOptions
  source: str  # the TFDS builder read (or `synthetic(...)`) and its data dir
  pixel_mean: np.ndarray | None = None  # (H, W, C) float32, standardize_pixel only
  pixel_std: np.ndarray | None = None  # (H, W, C) float32, floored, standardize_pixel only

  def input_statistics(self) -> dict:
    """{"mean", "std"} that `preprocess` normalizes with: (H, W, C) for `standardize_pixel`, else (C,)
    (unused by `unit` and `none`). Jitted code takes them as an argument (`preprocess_with`): as
    constants they would make its compiled program depend on the training split, which differs by seed,
    and the trials of a sweep could not share it through the persistent compilation cache."""
    if self.normalization == "standardize_pixel":
      return {"mean": self.pixel_mean, "std": self.pixel_std}
    return {"mean": self.mean, "std": self.std}

  def metadata(self) -> dict:
    """JSON-serializable description, recorded in run directories."""
    return {
        "name": self.name, "source": self.source, "num_classes": self.num_classes,
        "class_names": list(self.class_names), "input_shape": list(self.input_shape),
        "sizes": {s: len(getattr(self, s)) for s in ("train", "valid", "test", "eval_train")},
        "mean": self.mean.tolist(), "std": self.std.tolist(), "normalization": self.normalization,
        "num_noisy_labels": int(len(self.noisy_indices)),
        "options": dataclasses.asdict(self.options),
    } | self._pixel_metadata()

  def _pixel_metadata(self) -> dict:
    """A summary of the per-pixel statistics (the arrays follow from the training split and `options`)."""
    if self.pixel_std is None:
      return {}
    floor = transforms.PIXEL_STD_FLOOR
    return {"pixel_statistics": {
        "std_floor": floor, "num_floored": int(np.sum(self.pixel_std <= floor)),
        "mean_range": [float(self.pixel_mean.min()), float(self.pixel_mean.max())],
        "std_range": [float(self.pixel_std.min()), float(self.pixel_std.max())]}}


def available() -> list[str]:
  """Dataset names known to work; any other TFDS image-classification name is accepted too."""
  return sorted(sources.CATALOGUE + ("synthetic",))


def _check_type(name: str, value, annotation) -> object:
  """Returns `value` converted to the option's type, or raises a one-line UserError."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    inner = [a for a in args if a is not type(None)]
    return _check_type(name, value, inner[0])
  if origin is tuple:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value):
      raise UserError(f"option {name!r} must be a sequence of integers, got {value!r}")
    return tuple(value)
  if annotation is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
    raise UserError(f"option {name!r} must be of type {annotation.__name__}, got {value!r}")
  return value


def parse_options(**options) -> LoadOptions:
  """Validates keyword options against `LoadOptions`; unknown names or wrong types are one line."""
  fields = {f.name: f for f in dataclasses.fields(LoadOptions)}
  hints = typing.get_type_hints(LoadOptions)
  for key in options:
    if key not in fields:
      raise UserError(choices_message("dataset option", key, sorted(fields)))
  opts = LoadOptions(**{k: _check_type(k, v, hints[k]) for k, v in options.items()})
  if opts.normalization not in NORMALIZATIONS:
    raise UserError(choices_message("normalization", opts.normalization, NORMALIZATIONS))
  if opts.drop_test_duplicates not in DEDUP_CHOICES:
    raise UserError(choices_message("drop_test_duplicates", opts.drop_test_duplicates,
                                    DEDUP_CHOICES))
  if not 0.0 <= opts.label_noise <= 1.0:
    raise UserError(f"option 'label_noise' must be in [0, 1], got {opts.label_noise}")
  for key in ("valid_size", "eval_train_size", "num_train"):
    value = getattr(opts, key)
    if value is not None and value < 0:
      raise UserError(f"option {key!r} must be non-negative, got {value}")
  return opts


def _pick_per_class(rng: np.random.Generator, labels: np.ndarray, per_class: np.ndarray,
                    what: str) -> np.ndarray:
  """Sorted indices with `per_class[k]` examples of each class k, drawn without replacement."""
  picked = []
  for k, quota in enumerate(per_class):
    members = np.flatnonzero(labels == k)
    if quota > len(members):
      raise UserError(f"{what} needs {quota} examples of class {k} but only {len(members)} are "
                      "available")
    picked.append(rng.choice(members, size=quota, replace=False))
  return np.sort(np.concatenate(picked)).astype(np.int64)


def _balanced_pick(rng, labels, n: int, num_classes: int, what: str) -> np.ndarray:
  """n examples, equally many per class (the remainder to randomly chosen classes)."""
  per_class = np.full(num_classes, n // num_classes)
  per_class[rng.permutation(num_classes)[: n % num_classes]] += 1
  return _pick_per_class(rng, labels, per_class, f"{what} = {n}")


def _stratified_pick(rng, labels, n: int, num_classes: int, what: str) -> np.ndarray:
  """n examples with the class proportions of `labels` (largest-remainder rounding)."""
  counts = np.bincount(labels, minlength=num_classes)
  exact = n * counts / max(len(labels), 1)
  per_class = np.floor(exact).astype(int)
  remainder = exact - per_class + rng.uniform(0, 1e-9, num_classes)  # random tie-breaking
  per_class[np.argsort(-remainder)[: n - per_class.sum()]] += 1
  return _pick_per_class(rng, labels, per_class, f"{what} = {n}")


def _flip_labels(rng: np.random.Generator, labels: np.ndarray, fraction: float,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """Labels with round(fraction * n) entries moved to a uniformly drawn different class."""
  idx = np.sort(rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False))
  noisy = labels.copy()
  offsets = rng.integers(1, num_classes, size=len(idx))
  noisy[idx] = (labels[idx] + offsets) % num_classes
  return noisy, idx


def raw_splits(name: str, opts: LoadOptions) -> sources.RawSplits:
  """The untouched train and test splits of `name` (synthetic data is generated here)."""
  if name == "synthetic":
    try:
      return synthetic.make_synthetic(
          num_train=opts.synthetic_train, num_test=opts.synthetic_test,
          image_shape=opts.image_shape, num_classes=opts.num_classes, seed=opts.seed)
    except ValueError as e:
      raise UserError(f"synthetic dataset: {e}") from None
  return sources.read(name, data_dir=opts.data_dir, image_key=opts.image_key,
                      label_key=opts.label_key, prepare_if_missing=opts.prepare)


def load(name: str, **options) -> Dataset:
  """Loads dataset `name` (see `available()`) into memory; options are the fields of LoadOptions."""
  opts = parse_options(**options)
  raw = raw_splits(name, opts)
  # Separate streams so that changing one option does not reshuffle what another chose.
  rng_valid, rng_subset, rng_noise, rng_eval = (
      np.random.default_rng([opts.seed, stream]) for stream in range(4))

  train = Split(raw.train_images, raw.train_labels.astype(np.int32),
                np.arange(len(raw.train_labels), dtype=np.int64))
  test = Split(raw.test_images, raw.test_labels.astype(np.int32),
               np.arange(len(raw.test_labels), dtype=np.int64))
  class_names = raw.class_names
  if opts.classes is not None:
    bad = [c for c in opts.classes if not 0 <= c < len(class_names)]
    if bad or len(set(opts.classes)) != len(opts.classes) or len(opts.classes) < 2:
      raise UserError(f"option 'classes' must list at least 2 distinct ids in 0..{len(class_names) - 1}"
                      f", got {list(opts.classes)}")
    relabel = np.full(len(class_names), -1, np.int32)
    relabel[list(opts.classes)] = np.arange(len(opts.classes))

    def keep(split):
      kept = split.take(np.flatnonzero(relabel[split.labels] >= 0))
      return dataclasses.replace(kept, labels=relabel[kept.labels])

    train, test = keep(train), keep(test)
    class_names = tuple(class_names[c] for c in opts.classes)
  num_classes = len(class_names)

  if opts.drop_test_duplicates != "none":
    report = leakage.find_duplicates(train.images, test.images)
    drop = report.train_indices_to_drop(near=opts.drop_test_duplicates == "near")
    train = train.take(np.setdiff1d(np.arange(len(train)), drop))

  if opts.valid_size > len(train) - num_classes:
    raise UserError(f"option 'valid_size' = {opts.valid_size} leaves too few of the "
                    f"{len(train)} training examples")
  valid_idx = _stratified_pick(rng_valid, train.labels, opts.valid_size, num_classes, "valid_size")
  valid = train.take(valid_idx)
  train = train.take(np.setdiff1d(np.arange(len(train)), valid_idx))

  if opts.num_train is not None:
    train = train.take(_balanced_pick(rng_subset, train.labels, opts.num_train, num_classes,
                                      "num_train"))

  clean_labels = train.labels
  noisy_idx = np.zeros(0, np.int64)
  if opts.label_noise > 0:
    noisy_labels, noisy_idx = _flip_labels(rng_noise, train.labels, opts.label_noise, num_classes)
    train = dataclasses.replace(train, labels=noisy_labels)

  eval_size = len(test) if opts.eval_train_size is None else opts.eval_train_size
  eval_idx = np.sort(rng_eval.choice(len(train), size=min(eval_size, len(train)), replace=False))
  eval_train = train.take(eval_idx)

  mean, std = transforms.channel_stats(train.images)
  pixel_mean = pixel_std = None
  if opts.normalization == "standardize_pixel":
    pixel_mean, pixel_std = transforms.pixel_stats(train.images)
    pixel_mean = pixel_mean.astype(np.float32)
    pixel_std = np.maximum(pixel_std, transforms.PIXEL_STD_FLOOR).astype(np.float32)
  return Dataset(
      name=name, train=train, valid=valid, test=test, eval_train=eval_train,
      num_classes=num_classes, class_names=class_names,
      input_shape=tuple(int(d) for d in train.images.shape[1:]),
      mean=mean.astype(np.float32), std=np.maximum(std, 1e-8).astype(np.float32),
      normalization=opts.normalization, noisy_indices=noisy_idx, clean_train_labels=clean_labels,
      options=opts, source=f"{raw.name} ({raw.source})", pixel_mean=pixel_mean, pixel_std=pixel_std)
