"""Data layer: offline builder, TFDS mock path, splits, noise, normalization, batching, augmentation,
leakage check and error messages."""

import gzip
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from research import data
from research.core.errors import UserError
from research.data import fashion_mnist_offline, leakage, sources, transforms

IDX_PRESENT = all(
    (fashion_mnist_offline.idx_dir() / f).is_file()
    for pair in fashion_mnist_offline.SPLIT_FILES.values() for f in pair[:2])
# CI installs Debian's dataset-fashion-mnist, so there the builder tests must run, not skip.
needs_idx = pytest.mark.skipif(not IDX_PRESENT and not os.environ.get("CI"),
                               reason="Debian's dataset-fashion-mnist is not installed")


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  """A TFDS data dir where our offline builder prepared Fashion-MNIST (about 6 s)."""
  data_dir = tmp_path_factory.mktemp("tfds")
  sources.resolve("fashion_mnist", data_dir=str(data_dir))
  return data_dir


@needs_idx
def test_offline_builder_counts_and_class_histograms(prepared_dir):
  raw = sources.read("fashion_mnist", data_dir=str(prepared_dir), prepare_if_missing=False)
  assert raw.name == "fashion_mnist_offline"
  assert raw.train_images.shape == (60_000, 28, 28, 1) and raw.train_images.dtype == np.uint8
  assert raw.test_images.shape == (10_000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(raw.train_labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(raw.test_labels), [1000] * 10)
  # The stored examples are the IDX files' examples (TFDS shuffles their order).
  idx_images, idx_labels = fashion_mnist_offline.read_split(fashion_mnist_offline.idx_dir(), "test")
  assert sorted(raw.test_images.reshape(10_000, -1).sum(1).tolist()) == sorted(
      idx_images.reshape(10_000, -1).sum(1).tolist())
  # Published training-set statistics of Fashion-MNIST: mean 0.2860, std 0.3530.
  ds = data.load("fashion_mnist", data_dir=str(prepared_dir), prepare=False)
  np.testing.assert_allclose(ds.mean, [0.2860], atol=1e-4)
  np.testing.assert_allclose(ds.std, [0.3530], atol=1e-4)


@needs_idx
def test_corrupt_prepared_dataset_names_the_fix_and_reprepare_keeps_other_files(prepared_dir,
                                                                                 tmp_path):
  data_dir = tmp_path / "tfds"
  shutil.copytree(prepared_dir, data_dir)
  keep = data_dir / "my_notes.txt"
  keep.write_text("precious")
  record = next((data_dir / "fashion_mnist_offline" / "1.0.0").glob("*train.array_record*"))
  record.write_bytes(record.read_bytes()[:1000])
  with pytest.raises(UserError, match="unreadable.*prepare fashion_mnist --force"):
    data.load("fashion_mnist", data_dir=str(data_dir), prepare=False)
  sources.resolve("fashion_mnist", data_dir=str(data_dir), force=True)
  assert len(data.load("fashion_mnist", data_dir=str(data_dir), prepare=False).train) == 60_000
  assert keep.read_text() == "precious"


def test_missing_prepared_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(UserError, match="not prepared.*python -m research.data prepare fashion_mnist"):
    data.load("fashion_mnist", data_dir=str(tmp_path), prepare=False)


def test_read_idx_rejects_corrupt_files(tmp_path):
  good = tmp_path / "good.gz"
  header = bytes([0, 0, 8, 2]) + (3).to_bytes(4, "big") + (2).to_bytes(4, "big")
  good.write_bytes(gzip.compress(header + bytes(range(6))))
  np.testing.assert_array_equal(fashion_mnist_offline.read_idx(good), np.arange(6).reshape(3, 2))
  short = tmp_path / "short.gz"
  short.write_bytes(gzip.compress(header + bytes(5)))
  with pytest.raises(ValueError, match="header says shape"):
    fashion_mnist_offline.read_idx(short)
  garbage = tmp_path / "garbage.gz"
  garbage.write_bytes(b"not gzip at all")
  with pytest.raises(ValueError, match="cannot read IDX"):
    fashion_mnist_offline.read_idx(garbage)


def test_tfds_mock_cifar10_through_the_same_loader():
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load("cifar10", valid_size=8, seed=1)
  assert ds.input_shape == (32, 32, 3) and ds.num_classes == 10
  assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int32
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (32, 8, 40)
  assert len(ds.class_names) == 10
  assert set(ds.train.labels.tolist()) <= set(range(10))


def _synthetic(**options):
  return data.load("synthetic", synthetic_train=600, synthetic_test=200, image_shape=(8, 8, 3),
                   num_classes=4, **options)


def test_synthetic_data_is_seeded_and_learnable():
  a, b, c = _synthetic(seed=3), _synthetic(seed=3), _synthetic(seed=4)
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert not np.array_equal(a.train.images, c.train.images)
  assert a.train.images.shape == (600, 8, 8, 3) and a.num_classes == 4
  # Nearest class mean, fitted on train, classifies test far above chance (0.25).
  x_train = a.train.images.reshape(600, -1).astype(float)
  means = np.stack([x_train[a.train.labels == k].mean(0) for k in range(4)])
  x_test = a.test.images.reshape(200, -1).astype(float)
  predicted = ((x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
  assert (predicted == a.test.labels).mean() > 0.6


def test_splits_are_deterministic_disjoint_and_balanced():
  ds = _synthetic(seed=0, valid_size=100, num_train=200, eval_train_size=50)
  again = _synthetic(seed=0, valid_size=100, num_train=200, eval_train_size=50)
  other = _synthetic(seed=1, valid_size=100, num_train=200, eval_train_size=50)
  for split in ("train", "valid", "eval_train"):
    np.testing.assert_array_equal(getattr(ds, split).source_indices,
                                  getattr(again, split).source_indices)
  assert not np.array_equal(ds.valid.source_indices, other.valid.source_indices)
  assert not set(ds.train.source_indices) & set(ds.valid.source_indices)
  assert set(ds.eval_train.source_indices) <= set(ds.train.source_indices)
  np.testing.assert_array_equal(ds.train.class_counts(4), [50] * 4)
  np.testing.assert_array_equal(ds.valid.class_counts(4), [25] * 4)  # proportions of a balanced set
  assert (len(ds.train), len(ds.valid), len(ds.eval_train), len(ds.test)) == (200, 100, 50, 200)
  # The test split is never touched.
  np.testing.assert_array_equal(ds.test.source_indices, np.arange(200))


def test_class_subset_relabels_in_given_order():
  full, sub = _synthetic(seed=0), _synthetic(seed=0, classes=(3, 1))
  assert sub.num_classes == 2 and sub.class_names == ("class_3", "class_1")
  np.testing.assert_array_equal(sub.train.labels, (full.train.labels[sub.train.source_indices] == 1))
  assert len(sub.test) == (full.test.labels == 3).sum() + (full.test.labels == 1).sum()


def test_label_noise_is_seeded_exact_and_recorded():
  ds = _synthetic(seed=0, label_noise=0.25)
  again = _synthetic(seed=0, label_noise=0.25)
  n = len(ds.train)
  assert len(ds.noisy_indices) == round(0.25 * n)
  np.testing.assert_array_equal(ds.noisy_indices, again.noisy_indices)
  changed = np.flatnonzero(ds.train.labels != ds.clean_train_labels)
  np.testing.assert_array_equal(changed, ds.noisy_indices)  # every flip goes to another class
  clean = _synthetic(seed=0)
  np.testing.assert_array_equal(ds.clean_train_labels, clean.train.labels)
  np.testing.assert_array_equal(ds.test.labels, clean.test.labels)


def test_normalization_statistics_come_from_train_only():
  ds = _synthetic(seed=0, valid_size=100)
  expected = ds.train.images.reshape(-1, 3).astype(np.float64) / 255.0
  np.testing.assert_allclose(ds.mean, expected.mean(0), rtol=1e-6)
  np.testing.assert_allclose(ds.std, expected.std(0), rtol=1e-6)
  everything = np.concatenate([ds.train.images, ds.valid.images, ds.test.images])
  assert not np.allclose(ds.mean, everything.reshape(-1, 3).mean(0) / 255.0, rtol=1e-6, atol=0)
  x = np.asarray(ds.preprocess(ds.train.images))
  np.testing.assert_allclose(x.reshape(-1, 3).mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(x.reshape(-1, 3).std(0), 1.0, atol=1e-4)
  unit = np.asarray(data.normalize(ds.train.images, ds.mean, ds.std, "unit"))
  assert unit.min() >= 0.0 and unit.max() <= 1.0


def test_per_pixel_standardization_uses_training_pixels_only(monkeypatch):
  """standardize_pixel: (H, W, C) mean and std of the training split (numpy float64 here), applied to
  every split by `preprocess`; a pixel constant over the training split is divided by the floor."""
  from research.data import dataset as dataset_module
  original = dataset_module.raw_splits

  def blank_corner(name, opts):  # pixel (0, 0) black in every training image (std 0), as MNIST's borders
    raw = original(name, opts)
    raw.train_images[:, 0, 0, :] = 0
    raw.test_images[:5, 0, 0, :] = 255
    return raw

  monkeypatch.setattr(dataset_module, "raw_splits", blank_corner)
  ds = _synthetic(seed=0, valid_size=100, normalization="standardize_pixel")
  assert ds.pixel_mean.shape == ds.pixel_std.shape == ds.input_shape == (8, 8, 3)
  train = ds.train.images.astype(np.float64) / 255.0
  np.testing.assert_allclose(ds.pixel_mean, train.mean(0), rtol=1e-6, atol=1e-7)
  raw_std = train.std(0)
  floor = transforms.PIXEL_STD_FLOOR
  np.testing.assert_allclose(ds.pixel_std, np.maximum(raw_std, floor), rtol=1e-6)
  assert raw_std[0, 0].max() == 0.0 and (raw_std[1:, 1:] > floor).all()

  x = np.asarray(ds.preprocess(ds.train.images), np.float64)
  live = raw_std > floor
  np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.std(0)[live], 1.0, atol=1e-5)
  assert (x[:, 0, 0, :] == 0).all()  # constant pixel: (0 - 0) / floor
  # Valid and test use the training statistics, not their own (no leakage).
  for split in (ds.valid, ds.test):
    y = np.asarray(ds.preprocess(split.images), np.float64)
    by_hand = (split.images.astype(np.float64) / 255.0 - train.mean(0)) / np.maximum(raw_std, floor)
    np.testing.assert_allclose(y, by_hand, rtol=1e-5, atol=1e-5)
    assert np.isfinite(y).all()
    assert not np.allclose(y.mean(0), 0.0, atol=1e-3)
  y = np.asarray(ds.preprocess(ds.test.images[:5]))
  np.testing.assert_allclose(y[:, 0, 0, :], 255.0, rtol=1e-6)  # 1.0 / (1 / 255): finite
  stats = ds.metadata()["pixel_statistics"]
  assert stats["num_floored"] == 3 and stats["std_floor"] == floor
  # Per channel stays what `standardize` means; the per-pixel arrays exist only when asked for.
  plain = _synthetic(seed=0, valid_size=100)
  assert plain.pixel_mean is None and "pixel_statistics" not in plain.metadata()


def test_augmentation_is_deterministic_and_crops_shifted_windows():
  images = jax.random.randint(jax.random.key(0), (6, 8, 8, 3), 0, 256).astype(np.uint8)
  key = jax.random.key(7)
  augment = jax.jit(data.augment, static_argnames=("crop_padding", "flip"))
  out = np.asarray(augment(key, images, crop_padding=2))
  np.testing.assert_array_equal(out, np.asarray(augment(key, images, crop_padding=2)))
  assert out.shape == images.shape and out.dtype == np.uint8
  assert not np.array_equal(out, np.asarray(augment(jax.random.key(8), images, crop_padding=2)))
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  for img, res in zip(padded, out):
    windows = [img[i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
    windows += [w[:, ::-1] for w in windows]
    assert any(np.array_equal(res, w) for w in windows)
  np.testing.assert_array_equal(np.asarray(data.augment(key, images, crop_padding=0, flip=False)),
                                np.asarray(images))


def test_batches_are_a_function_of_seed_and_step():
  ds = _synthetic(seed=0, num_train=100)
  run = list(data.train_batches(ds.train, 32, seed=5, num_steps=9))
  resumed = list(data.train_batches(ds.train, 32, seed=5, start_step=4, num_steps=5))
  for a, b in zip(run[4:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert data.steps_per_epoch(100, 32) == 3
  epoch = np.concatenate([data.batch_indices(100, 32, s, seed=5, drop_remainder=False)
                          for s in range(4)])
  np.testing.assert_array_equal(np.sort(epoch), np.arange(100))
  assert not np.array_equal(data.batch_indices(100, 32, 0, seed=5),
                            data.batch_indices(100, 32, 3, seed=5))  # next epoch, new order
  full = next(data.train_batches(ds.train, None, seed=5))
  assert len(full["label"]) == 100
  evals = list(data.eval_batches(ds.train, 32))
  assert all(len(b["label"]) == 32 for b in evals) and sum(b["mask"].sum() for b in evals) == 100
  np.testing.assert_array_equal(np.concatenate([b["label"][b["mask"] > 0] for b in evals]),
                                ds.train.labels)


def test_leakage_check_finds_planted_duplicates_and_load_drops_them():
  base = _synthetic(seed=0)
  train, test = base.train.images.copy(), base.test.images.copy()
  train[10] = test[3]  # exact copy across
  train[20] = np.clip(test[5].astype(int) + 2, 0, 255).astype(np.uint8)  # near copy across
  train[30] = train[31]  # exact copy within train
  report = leakage.find_duplicates(train, test)
  np.testing.assert_array_equal(report.exact_across, [[3, 10]])
  np.testing.assert_array_equal(report.near_across, [[5, 20]])
  assert [g.tolist() for g in report.exact_within_train] == [[30, 31]]
  assert report.exact_within_test == []
  assert "1 pairs" in report.summary()
  np.testing.assert_array_equal(report.train_indices_to_drop(near=True), [10, 20])


def test_load_option_drops_test_duplicates(monkeypatch):
  from research.data import dataset as dataset_module
  original = dataset_module.raw_splits

  def planted(name, opts):
    raw = original(name, opts)
    raw.train_images[7] = raw.test_images[0]
    return raw

  monkeypatch.setattr(dataset_module, "raw_splits", planted)
  ds = _synthetic(seed=0, drop_test_duplicates="exact")
  assert len(ds.train) == 599 and 7 not in ds.train.source_indices


@pytest.mark.parametrize("call, message", [
    (lambda: data.load("imagenet_foo"), "unknown dataset 'imagenet_foo'; valid choices: cifar10"),
    (lambda: data.load("synthetic", valid_sz=3), "unknown dataset option 'valid_sz'; valid choices"),
    (lambda: data.load("synthetic", valid_size="many"), "'valid_size' must be of type int"),
    (lambda: data.load("synthetic", normalization="zca"),
     "unknown normalization 'zca'; valid choices: standardize, standardize_pixel, unit, none"),
    (lambda: data.load("synthetic", label_noise=1.5), "'label_noise' must be in"),
    (lambda: data.load("synthetic", classes=(0, 42)), "'classes' must list"),
    (lambda: data.load("synthetic", synthetic_train=20, num_train=1000), "num_train = 1000 needs"),
])
def test_bad_input_is_one_line_with_choices(call, message):
  with pytest.raises(UserError) as info:
    call()
  text = str(info.value)
  assert message in text and "\n" not in text


def test_cli_exits_non_zero_with_one_line():
  result = subprocess.run([sys.executable, "-m", "research.data", "info", "no_such_set"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: unknown dataset 'no_such_set'")
  assert "fashion_mnist" in result.stderr
