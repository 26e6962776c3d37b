"""TFDS builder that prepares Fashion-MNIST offline from IDX files, without TensorFlow.

The official `fashion_mnist` builder downloads from the internet and encodes its images as PNG
(`tfds.features.Image`), which needs TensorFlow. This builder reads the four IDX files (as shipped,
gzip-compressed, by Debian's `dataset-fashion-mnist` package, or by the dataset's authors) from a
manual directory and stores raw `uint8` tensors in `array_record` files, which TFDS writes and reads
without TensorFlow. Labels and split sizes are those of Xiao et al. 2017 (arXiv:1708.07747):
60,000 training and 10,000 test images of 28x28x1, 6,000 / 1,000 per class.

Prepare with `python -m research.data prepare fashion_mnist`; the files then live under
`<TFDS data dir>/fashion_mnist_offline/1.0.0/`.
"""

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

# Where Debian's `dataset-fashion-mnist` puts the IDX files. `$FASHION_MNIST_IDX_DIR` overrides it.
DEBIAN_IDX_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
_IDX_DTYPE_UINT8 = 0x08


def idx_dir() -> Path:
  """The folder that holds the four IDX `.gz` files."""
  return Path(os.environ.get("FASHION_MNIST_IDX_DIR", DEBIAN_IDX_DIR))


def read_idx(path: Path) -> np.ndarray:
  """Reads a (gzip-compressed) IDX file of unsigned bytes into an array of its stated shape.

  The IDX header is two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then one
  big-endian uint32 per dimension (LeCun's MNIST format).
  """
  opener = gzip.open if path.suffix == ".gz" else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read IDX file {path}: {e}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_DTYPE_UINT8:
    raise ValueError(f"{path} is not an IDX file of unsigned bytes")
  ndim = data[3]
  header = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
  if len(data) - header != int(np.prod(shape)):
    raise ValueError(f"{path}: header says shape {shape} but holds {len(data) - header} bytes")
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images (n, 28, 28, 1) uint8 and labels (n,) uint8 of one split, checked for size and range."""
  image_file, label_file, expected = SPLIT_FILES[split]
  images = read_idx(folder / image_file)
  labels = read_idx(folder / label_file)
  if images.shape != (expected, 28, 28) or labels.shape != (expected,):
    raise ValueError(
        f"{folder}: {split} split has images {images.shape} and labels {labels.shape}, "
        f"expected ({expected}, 28, 28) and ({expected},)")
  if labels.max() >= len(CLASS_NAMES):
    raise ValueError(f"{folder}: {split} labels go up to {labels.max()}, expected 0-9")
  return images[..., None], labels


class FashionMnistOffline(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from local IDX files, stored as raw uint8 tensors."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Raw uint8 tensors from the IDX files; array_record storage."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Install Debian's `dataset-fashion-mnist` package (apt-get install dataset-fashion-mnist), "
      "or put the four IDX .gz files of Fashion-MNIST in a folder named by $FASHION_MNIST_IDX_DIR.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al. 2017) prepared offline from IDX files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=(28, 28, 1), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul, Vollgraf. Fashion-MNIST. arXiv:1708.07747, 2017.",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The files are local; nothing is downloaded.
    folder = idx_dir()
    return {split: self._generate_examples(folder, split) for split in SPLIT_FILES}

  def _generate_examples(self, folder: Path, split: str):
    images, labels = read_split(folder, split)
    for i in range(len(labels)):
      yield i, {"image": images[i], "label": int(labels[i])}
