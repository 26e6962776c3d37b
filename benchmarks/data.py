"""Time to load the prepared default dataset (Fashion-MNIST) into memory. Run by hand:

  .venv/bin/python -m benchmarks.data [--repeats 3]

Prints, from one run: the raw read of the array_record records (the I/O floor), our bulk decode of
both splits, the whole `research.data.load` (splits, eval_train subset, normalization statistics),
and TFDS's generic per-example decoding of the same records for comparison. Target: load under 5 s.
"""

import argparse
import statistics
import time

import tensorflow_datasets as tfds

from research import data
from research.data import sources


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args()
  builder = sources.resolve("fashion_mnist", data_dir=args.data_dir)
  print(f"dataset: {builder.name} in {builder.data_dir}")

  def raw_records():
    for split in ("train", "test"):
      src = builder.as_data_source(split=split,
                                   deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
      src.__getitems__(list(range(len(src))))

  def tfds_generic_decode():
    for split in ("train", "test"):
      src = builder.as_data_source(split=split)
      src.__getitems__(list(range(len(src))))

  raw = _median_seconds(raw_records, args.repeats)
  read = _median_seconds(lambda: sources.read("fashion_mnist", data_dir=args.data_dir), args.repeats)
  load = _median_seconds(lambda: data.load("fashion_mnist", data_dir=args.data_dir), args.repeats)
  generic = _median_seconds(tfds_generic_decode, 1)
  print(f"raw array_record records (70,000):         {raw:6.2f} s")
  print(f"sources.read (bulk decode, both splits):   {read:6.2f} s  ({read / raw:.2f}x the raw read)")
  print(f"research.data.load (whole Dataset):         {load:6.2f} s  (target < 5 s: "
        f"{'met' if load < 5 else 'MISSED'})")
  print(f"TFDS generic per-example decode:            {generic:6.2f} s  "
        f"(our read is {generic / read:.1f}x faster)")


if __name__ == "__main__":
  main()
