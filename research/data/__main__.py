"""Dataset command line.

  python -m research.data list                      names known to work
  python -m research.data prepare NAME [--force]    prepare the TFDS copy (offline for fashion_mnist)
  python -m research.data info NAME [--set k=v ...] sizes, class histograms, channel mean/std
  python -m research.data check NAME                exact and near duplicates within/across splits

`--data_dir` chooses the TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
Errors are one line on stderr and exit status 2.
"""

import argparse
import ast
import sys

from research.core.errors import UserError
from research.data import dataset, leakage, sources


def _parse_sets(items: list[str]) -> dict:
  options = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep:
      raise UserError(f"--set takes key=value, got {item!r}")
    try:
      options[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      options[key] = text
  return options


def _histogram(split: dataset.Split, num_classes: int) -> str:
  counts = split.class_counts(num_classes)
  if len(set(counts.tolist())) == 1:
    return f"{num_classes} classes of {counts[0]}"
  return "per class " + " ".join(map(str, counts))


def info(name: str, **options) -> str:
  ds = dataset.load(name, **options)
  lines = [f"dataset {ds.name}: {ds.source}",
           f"input shape {'x'.join(map(str, ds.input_shape))}, {ds.num_classes} classes: "
           + ", ".join(ds.class_names)]
  for split in ("train", "valid", "test", "eval_train"):
    part = getattr(ds, split)
    if len(part):
      lines.append(f"{split:<10} {len(part):>7} examples, {_histogram(part, ds.num_classes)}")
  lines.append(f"train {len(ds.train)} / test {len(ds.test)}")
  lines.append("channel mean (train, [0,1] units): " + " ".join(f"{m:.4f}" for m in ds.mean))
  lines.append("channel std  (train, [0,1] units): " + " ".join(f"{s:.4f}" for s in ds.std))
  if len(ds.noisy_indices):
    lines.append(f"label noise: {len(ds.noisy_indices)} flipped training labels")
  return "\n".join(lines)


def check(name: str, data_dir: str | None = None) -> str:
  raw = dataset.raw_splits(name, dataset.parse_options(data_dir=data_dir))
  report = leakage.find_duplicates(raw.train_images, raw.test_images)
  head = (f"leakage check of {name} ({raw.source}): {len(raw.train_labels)} train, "
          f"{len(raw.test_labels)} test images")
  return head + "\n" + report.summary()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m research.data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("command", choices=["list", "prepare", "info", "check"])
  parser.add_argument("name", nargs="?")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--force", action="store_true", help="prepare: delete and prepare again")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="info: a load option, e.g. --set valid_size=5000")
  args = parser.parse_args(argv)
  try:
    if args.command == "list":
      print("\n".join(dataset.available()))
      print("(any other TFDS image-classification dataset name works too)")
      return 0
    if not args.name:
      raise UserError(f"'{args.command}' needs a dataset name; valid choices: "
                      + ", ".join(dataset.available()))
    if args.command == "prepare":
      if args.name == "synthetic":
        raise UserError("'synthetic' is generated in memory; there is nothing to prepare")
      builder = sources.resolve(args.name, data_dir=args.data_dir, force=args.force)
      split_sizes = {s: v.num_examples for s, v in builder.info.splits.items()}
      print(f"{args.name}: prepared as {builder.name} in {builder.data_dir} {split_sizes}")
    elif args.command == "info":
      print(info(args.name, data_dir=args.data_dir, **_parse_sets(args.set)))
    elif args.command == "check":
      print(check(args.name, args.data_dir))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
