"""Reading the landscape files of run and sweep directories: the scans that training's landscape
evaluator writes (`<run>/landscape/step<S>_<kind>.npz`, research/landscape/tracking.py) and the
interpolations of a sweep's post step (`<sweep>/interpolation/<runA>__<runB>.npz`,
research/landscape/between_runs.py). Read with NumPy only (the .npz of `ScanResult.save`: `axis_<i>`,
`<split>/<metric>`, `info` as JSON); an unreadable file becomes a `runs.Problem`, never an exception.
"""

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from analysis import runs


@dataclasses.dataclass(frozen=True)
class Scan:
  """A saved grid: `axes` (one 1-D array per direction), `values[split][metric]` of the grid's shape
  (`[i, j]` at (axes[0][i], axes[1][j])), `info` (settings), `path` (the .npz)."""
  axes: tuple
  values: dict
  info: dict
  path: Path


def read_scan(path: Path, run: str, problems: list) -> Scan | None:
  try:
    with np.load(path) as z:
      axes = tuple(z[f"axis_{i}"] for i in range(sum(k.startswith("axis_") for k in z.files)))
      values: dict = {}
      for k in z.files:
        if "/" in k:
          split, metric = k.split("/", 1)
          values.setdefault(split, {})[metric] = np.asarray(z[k], np.float64)
      info = json.loads(str(z["info"])) if "info" in z.files else {}
  except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
    problems.append(runs.Problem(run, path.name, f"unreadable ({type(e).__name__})"))
    return None
  return Scan(axes, values, info, path)


def latest_scan(run: runs.Run, kind: str) -> Scan | None:
  """The scan of the largest step under `<run>/landscape/` of `kind` ("1d" or "2d"), or None."""
  found = []
  for p in (run.path / "landscape").glob(f"step*_{kind}.npz"):
    step = p.stem[len("step"):-len(f"_{kind}")]
    if step.isdigit():
      found.append((int(step), p))
  for _, p in sorted(found, reverse=True):
    scan = read_scan(p, run.name, run.problems)
    if scan is not None:
      return scan
  return None


def interpolations(root: Path, problems: list) -> dict[str, Scan]:
  """`<pair name>` -> the interpolation curve, for every `<root>/interpolation/*.npz`."""
  out = {}
  for p in sorted((Path(root) / "interpolation").glob("*.npz")):
    scan = read_scan(p, "interpolation", problems)
    if scan is not None:
      out[p.stem] = scan
  return out
