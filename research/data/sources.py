"""Where raw splits come from: TFDS datasets by name, read whole into memory as uint8 arrays.

TFDS is both the catalogue and the storage. A dataset is read through `tfds.data_source` from the
`array_record` files of a prepared copy in the TFDS data dir (`data_dir`, else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets`); no TensorFlow is needed to read. `fashion_mnist` has an offline fallback, our
own builder (`fashion_mnist_offline.py`) that prepares it from local IDX files.

Reading is done once, in bulk: the records of a split are fetched together and, for features stored as
raw bytes (our offline builder), decoded straight into one array; for encoded images (PNG/JPEG of the
official builders) each example goes through TFDS's own NumPy decoder.
"""

import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from research.core.errors import UserError, choices_message
from research.data import fashion_mnist_offline

# Image-classification datasets known to work (any other TFDS image-classification name works too).
CATALOGUE = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
OFFLINE_NAME = "fashion_mnist_offline"
_READ_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class RawSplits:
  """The untouched splits of a dataset: images (n, H, W, C) uint8 and labels (n,) int32."""
  name: str  # the TFDS builder actually read, e.g. `fashion_mnist_offline`
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  source: str  # where the arrays came from, for records and error messages


def _builder(name: str, data_dir: str | None):
  if name == OFFLINE_NAME:
    return fashion_mnist_offline.FashionMnistOffline(data_dir=data_dir, file_format="array_record")
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(choices_message("dataset", name, sorted(CATALOGUE + ("synthetic",))) +
                    " (or any TFDS image-classification dataset)") from None


def _check_image_classification(builder, image_key: str, label_key: str) -> None:
  features = builder.info.features
  keys = list(features.keys()) if hasattr(features, "keys") else []
  if image_key not in keys or label_key not in keys:
    raise UserError(
        f"dataset {builder.name!r} is not image classification with keys {image_key!r} and "
        f"{label_key!r}; its features are: {', '.join(keys)}")
  if not isinstance(features[label_key], tfds.features.ClassLabel):
    raise UserError(f"feature {label_key!r} of {builder.name!r} is not a class label; "
                    f"choose label_key among: {', '.join(keys)}")


def _reprepare_hint(name: str) -> str:
  return f"re-prepare it with `python -m research.data prepare {name} --force`"


def _is_raw_bytes(feature) -> bool:
  """True for a `tfds.features.Tensor` stored as raw bytes (decoded with `np.frombuffer`)."""
  return (isinstance(feature, tfds.features.Tensor)
          and feature._encoding != tfds.features.Encoding.NONE)  # pylint: disable=protected-access


def _read_split(builder, split: str, image_key: str, label_key: str):
  """All images and labels of one prepared split, in storage order."""
  features = builder.info.features
  image_feature = features[image_key]
  if _is_raw_bytes(image_feature):
    source = builder.as_data_source(
        split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    n = len(source)
    blobs, labels = [], np.empty(n, np.int32)
    for start in range(0, n, _READ_CHUNK):
      for i, record in enumerate(source.__getitems__(list(range(start, min(n, start + _READ_CHUNK))))):
        feature = tf_example_pb2.Example.FromString(record).features.feature
        blobs.append(feature[image_key].bytes_list.value[0])
        labels[start + i] = feature[label_key].int64_list.value[0]
    flat = np.frombuffer(b"".join(blobs), dtype=image_feature.np_dtype)
    images = flat.reshape((n,) + tuple(image_feature.shape))
  else:
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e[image_key]) for e in examples])
    labels = np.array([e[label_key] for e in examples], dtype=np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


def _read(builder, name: str, image_key: str, label_key: str) -> RawSplits:
  _check_image_classification(builder, image_key, label_key)
  splits = set(builder.info.splits.keys())
  if splits and not {"train", "test"} <= splits:  # (empty: not known before reading)
    raise UserError(f"dataset {name!r} needs 'train' and 'test' splits; it has: {', '.join(splits)}")
  try:
    train = _read_split(builder, "train", image_key, label_key)
    test = _read_split(builder, "test", image_key, label_key)
  except UserError:
    raise
  except Exception as e:  # A truncated or corrupt file raises many kinds of errors.
    first_line = (str(e).strip().splitlines() or [""])[0][:200]
    raise UserError(f"prepared dataset {name!r} in {builder.data_dir} is unreadable "
                    f"({type(e).__name__}: {first_line}); {_reprepare_hint(name)}") from None
  label_names = tuple(builder.info.features[label_key].names)
  return RawSplits(builder.name, *train, *test, class_names=label_names, source=str(builder.data_dir))


def read(name: str, *, data_dir: str | None = None, image_key: str = "image",
         label_key: str = "label", prepare_if_missing: bool = True) -> RawSplits:
  """Reads the train and test splits of a TFDS image-classification dataset into memory.

  For `fashion_mnist`: a prepared official copy if there is one, else our offline builder (prepared
  from the Debian package's IDX files on first use), else a TFDS download. Other names: the prepared
  copy, else a TFDS download and preparation (needs internet and TensorFlow).
  """
  return _read(resolve(name, data_dir=data_dir, prepare_if_missing=prepare_if_missing),
               name, image_key, label_key)


def resolve(name: str, *, data_dir: str | None = None, prepare_if_missing: bool = True,
            force: bool = False):
  """The prepared TFDS builder to read `name` from, preparing it first where needed and allowed."""
  builder = _builder(name, data_dir)
  if force:
    _remove_prepared(builder)
    if name == "fashion_mnist":
      _remove_prepared(_builder(OFFLINE_NAME, data_dir))
  if builder.is_prepared():
    return builder
  if name == "fashion_mnist":
    offline = _builder(OFFLINE_NAME, data_dir)
    if offline.is_prepared():
      return offline
    if not prepare_if_missing:
      raise UserError(f"dataset 'fashion_mnist' is not prepared in {offline.data_dir_root}; "
                      "run `python -m research.data prepare fashion_mnist`")
    if _idx_files_present():
      return _prepare(offline, OFFLINE_NAME)
  elif not prepare_if_missing:
    raise UserError(f"dataset {name!r} is not prepared in {builder.data_dir_root}; "
                    f"run `python -m research.data prepare {name}`")
  return _prepare(builder, name)


def _idx_files_present() -> bool:
  folder = fashion_mnist_offline.idx_dir()
  return all((folder / f).is_file() for pair in fashion_mnist_offline.SPLIT_FILES.values()
             for f in pair[:2])


def _prepare(builder, name: str):
  how = ("from the IDX files in " + str(fashion_mnist_offline.idx_dir()) if name == OFFLINE_NAME else
         "with a TFDS download (needs internet; can take minutes to fail without it)")
  print(f"preparing dataset {name!r} in {builder.data_dir_root} {how}", file=sys.stderr)
  try:
    builder.download_and_prepare(file_format="array_record")
  except Exception as e:
    first_line = (str(e).strip().splitlines() or [""])[0][:200]
    what = (
        "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set "
        "$FASHION_MNIST_IDX_DIR to a folder with its IDX files"
        if name in ("fashion_mnist", OFFLINE_NAME) else
        "on a machine with internet access run `pip install tensorflow` and "
        f"`python -m research.data prepare {name}`, or set $TFDS_DATA_DIR to where it is prepared")
    raise UserError(f"cannot prepare dataset {name!r} ({type(e).__name__}: {first_line}); "
                    f"{what}") from None
  return builder


def _remove_prepared(builder) -> None:
  """Deletes one prepared version of one dataset (and nothing else in the data dir)."""
  path = Path(builder.data_dir)
  if path.is_dir():
    shutil.rmtree(path)
