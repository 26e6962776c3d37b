"""The run directory (DESIGN.md): `config.json`, `meta.json`, `metrics.jsonl`, `summary.json`.

Whole files are written atomically (a temporary file in the same folder, flushed and fsynced, then
renamed), so a kill at any moment leaves either the old or the new file. `metrics.jsonl` is appended
one line per record and flushed; on resume, `truncate_metrics(step)` drops a half-written last line and
the records after the restored checkpoint (the resumed run writes them again, identically).
"""

import datetime
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import jax
import numpy as np


def _clean(value):
  """JSON-friendly values: numpy/jax scalars to Python, non-finite floats to strings."""
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_clean(v) for v in value]
  if isinstance(value, np.ndarray | jax.Array):
    return _clean(np.asarray(value).tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # "nan", "inf": valid JSON, and readers can tell them apart
  return value


def write_json_atomic(path: Path, data: dict) -> None:
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "w") as f:
    json.dump(_clean(data), f, indent=2, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


class MetricsWriter:
  """Appends `{"step": n, **metrics}` lines to `metrics.jsonl` and keeps them in `records`.

  With `enabled=False` (a process other than the writer, `is_writer()`) it only keeps them, so every
  process can summarize the run from the same records while one writes them."""

  def __init__(self, path: Path, enabled: bool = True):
    self.path = Path(path)
    self.records: list[dict] = []
    self._file = open(self.path, "a") if enabled else None

  def write(self, step: int, metrics: dict) -> None:
    record = json.loads(json.dumps(_clean({"step": int(step), **metrics}), sort_keys=True))
    self.records.append(record)
    if self._file is not None:
      self._file.write(json.dumps(record, sort_keys=True) + "\n")
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()


def is_writer() -> bool:
  """Whether this process writes run directories: process 0 of a multi-process JAX job (DESIGN.md:
  every process computes, one writes), or the only process."""
  return jax.process_index() == 0


def read_metrics(path: Path) -> list[dict]:
  """The complete records of a `metrics.jsonl` (a half-written last line is skipped)."""
  records = []
  try:
    text = Path(path).read_text()
  except FileNotFoundError:
    return records
  for line in text.splitlines(keepends=True):
    if not line.endswith("\n"):
      break
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return records


def truncate_metrics(path: Path, last_step: int) -> list[dict]:
  """Keeps the complete records with step <= last_step; returns them."""
  kept = [r for r in read_metrics(path) if r["step"] <= last_step]
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return kept


def git_hash() -> str | None:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                         cwd=Path(__file__).resolve().parent)
    if out.returncode == 0:
      dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
      return out.stdout.strip() + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    pass
  return None


def environment() -> dict:
  """Library versions, devices and host, for meta.json."""
  import flax
  import optax
  import orbax.checkpoint
  import tensorflow_datasets

  return {
      "python": platform.python_version(),
      "versions": {"jax": jax.__version__, "jaxlib": jax.lib.__version__, "flax": flax.__version__,
                   "optax": optax.__version__, "orbax": orbax.checkpoint.__version__,
                   "tfds": tensorflow_datasets.__version__, "numpy": np.__version__},
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "device_kind": jax.devices()[0].device_kind,
      "process_count": jax.process_count(),
      "slurm_job": os.environ.get("SLURM_JOB_ID"),
      "host": platform.node(),
      "git": git_hash(),
  }


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
