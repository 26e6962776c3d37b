"""What a dataset is without its data: `describe(name, **options) -> AbstractDataset`.

The image shape, number of classes and split sizes of the catalogue's datasets, as their TFDS dataset
cards give them (`INFO`), and the sizes `load(name, **options)` would produce from them (class subset,
`valid_size`, `num_train`, `eval_train_size`), with the same checks and error lines as `load` where they
follow from the per-class counts. Nothing is read or downloaded, so a study that needs CIFAR-10 can be
checked on a machine that has never prepared it (`research.dry_run`). Splits are `AbstractSplit`s:
a size and `jax.ShapeDtypeStruct`s of the arrays `load` would hold (images uint8 (n, H, W, C), labels
int32 (n,)); `preprocess` normalizes like `Dataset.preprocess` with placeholder statistics of the right
shape (values are not known without the data; shapes and costs do not depend on them).

Not modelled: `drop_test_duplicates` (how many training images duplicate a test image is known only
from the data: the sizes are then upper bounds, `AbstractDataset.exact` is False).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research.core.errors import UserError, choices_message
from research.data import dataset


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """A dataset card: image shape (H, W, C), classes and per-class example counts of train and test."""
  input_shape: tuple[int, int, int]
  num_classes: int
  train_per_class: tuple[int, ...] | None  # None: only the total is recorded
  test_per_class: tuple[int, ...] | None
  train_size: int
  test_size: int


def _balanced(shape, classes: int, train: int, test: int) -> DatasetInfo:
  return DatasetInfo(shape, classes, (train // classes,) * classes, (test // classes,) * classes, train, test)


# TFDS dataset cards (tensorflow.org/datasets/catalog): features and split sizes. MNIST is not balanced:
# its per-class counts are those of LeCun et al.'s files (they sum to 60,000 and 10,000).
INFO = {
    "mnist": DatasetInfo((28, 28, 1), 10,
                         (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
                         (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009), 60000, 10000),
    "fashion_mnist": _balanced((28, 28, 1), 10, 60000, 10000),
    "cifar10": _balanced((32, 32, 3), 10, 50000, 10000),
    "cifar100": _balanced((32, 32, 3), 100, 50000, 10000),
    "svhn_cropped": DatasetInfo((32, 32, 3), 10, None, None, 73257, 26032),
}


@dataclasses.dataclass(frozen=True)
class AbstractSplit:
  """A split's size and the shapes of its arrays (what `Split` holds, without the values)."""
  size: int
  input_shape: tuple[int, int, int]

  def __len__(self) -> int:
    return self.size

  @property
  def images(self) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((self.size, *self.input_shape), jnp.uint8)

  @property
  def labels(self) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((self.size,), jnp.int32)


@dataclasses.dataclass(frozen=True)
class AbstractDataset(dataset.Preprocessing):
  """`Dataset`'s metadata and split sizes; duck-types it for code that reads only those
  (`research.training.schedule_lengths`, the model and step builders)."""
  name: str
  train: AbstractSplit
  valid: AbstractSplit
  test: AbstractSplit
  eval_train: AbstractSplit
  num_classes: int
  input_shape: tuple[int, int, int]
  normalization: str
  options: dataset.LoadOptions
  exact: bool = True  # False: sizes are upper bounds (drop_test_duplicates)

  def input_statistics(self) -> dict:
    """Placeholders of `Dataset.input_statistics`' shapes (mean 0, std 1), for `preprocess`."""
    shape = self.input_shape if self.normalization == "standardize_pixel" else self.input_shape[-1:]
    return {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32)}

  def metadata(self) -> dict:
    return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.input_shape),
            "sizes": {s: len(getattr(self, s)) for s in ("train", "valid", "test", "eval_train")},
            "normalization": self.normalization, "exact": self.exact}


def info(name: str, opts: dataset.LoadOptions | None = None) -> DatasetInfo:
  """The dataset card of `name` (`synthetic`: from the options)."""
  if name == "synthetic":
    opts = opts or dataset.LoadOptions()
    k = opts.num_classes
    return DatasetInfo(tuple(opts.image_shape), k, None, None, opts.synthetic_train, opts.synthetic_test)
  if name not in INFO:
    raise UserError(choices_message("dataset with known metadata", name, sorted(INFO) + ["synthetic"]))
  return INFO[name]


def _per_class(card: DatasetInfo, name: str, split: str, classes) -> np.ndarray | None:
  counts = card.train_per_class if split == "train" else card.test_per_class
  if counts is None:
    if classes is not None:
      raise UserError(f"option 'classes' of {name!r}: its per-class counts are not recorded "
                      "(research.data.metadata.INFO)")
    return None
  return np.asarray(counts)[list(classes)] if classes is not None else np.asarray(counts)


def describe(name: str, **options) -> AbstractDataset:
  """The `AbstractDataset` that `load(name, **options)` would return: sizes from the dataset card,
  options checked as `load` checks them (steps 1 and 3-6 of `research.data.dataset`)."""
  opts = dataset.parse_options(**options)
  card = info(name, opts)
  classes = opts.classes
  if classes is not None:
    if (any(not 0 <= c < card.num_classes for c in classes) or len(set(classes)) != len(classes)
        or len(classes) < 2):
      raise UserError(f"option 'classes' must list at least 2 distinct ids in 0..{card.num_classes - 1}"
                      f", got {list(classes)}")
  train_counts = _per_class(card, name, "train", classes)
  test_counts = _per_class(card, name, "test", classes)
  num_classes = len(classes) if classes is not None else card.num_classes
  n_train = int(train_counts.sum()) if train_counts is not None else card.train_size
  n_test = int(test_counts.sum()) if test_counts is not None else card.test_size

  if opts.valid_size > n_train - num_classes:
    raise UserError(f"option 'valid_size' = {opts.valid_size} leaves too few of the "
                    f"{n_train} training examples")
  n_train -= opts.valid_size
  if opts.num_train is not None:
    if train_counts is not None:  # the most a class can lose to the stratified valid split
      left = train_counts - np.ceil(opts.valid_size * train_counts / train_counts.sum()).astype(int)
      quota = -(-opts.num_train // num_classes)
      if quota > left.min():
        raise UserError(f"num_train = {opts.num_train} needs {quota} examples of class "
                        f"{int(np.argmin(left))} but only {int(left.min())} are available")
    elif opts.num_train > n_train:
      raise UserError(f"num_train = {opts.num_train} is more than the {n_train} training examples")
    n_train = opts.num_train
  eval_size = n_test if opts.eval_train_size is None else opts.eval_train_size
  shape = tuple(card.input_shape)
  split = lambda n: AbstractSplit(int(n), shape)
  return AbstractDataset(name=name, train=split(n_train), valid=split(opts.valid_size), test=split(n_test),
                         eval_train=split(min(eval_size, n_train)), num_classes=num_classes,
                         input_shape=shape, normalization=opts.normalization, options=opts,
                         exact=opts.drop_test_duplicates == "none")
