"""oneDNN's convolutions prove themselves on each machine before they run.

The first time a convolution signature (kind `forward` / `backward_data` / `backward_weights`, input
and kernel shapes, strides, padding, dtype) is lowered to oneDNN on a machine, it is computed once by
oneDNN and by XLA on random normal inputs (seeded by the signature) and the verdict is stored on disk:
`$RESEARCH_ONEDNN_VERDICTS` (default ~/.cache/research/onednn_verdicts) / <machine> / <signature>.json,
where <machine> hashes the CPU (model name and feature flags from /proc/cpuinfo), the oneDNN version and
the built kernels' bytes. A refused signature lowers to XLA's convolution, with a one-line warning.
One file per signature, written atomically, so parallel trials of a sweep can share the directory.

The check runs at lowering time on concrete host arrays (`jax.ensure_compile_time_eval`), keyed by
static shapes, so it works while a jitted function is being lowered.

Tolerance: |oneDNN - XLA| <= RTOL * (XLA's same convolution of |a| and |b|), element by element. The
right side is the sum of the magnitudes of the products each output adds up, which bounds the rounding
error of any summation order by (terms - 1) * 2^-24 times it (Higham 2002, ch. 4); in practice blocked
and pairwise sums are within a few hundred ulps of it even for the 10^5-term sums of a weight gradient.
RTOL = 1e-4 (about 1,700 float32 ulps of that bound) passes every correct order we measured by a wide
margin and refuses any wrong index, missing block or stale memory, whose errors are a sizeable fraction
of the bound.
"""

import dataclasses
import functools
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

ENV = "RESEARCH_ONEDNN_VERDICTS"
DEFAULT_DIR = Path.home() / ".cache" / "research" / "onednn_verdicts"
RTOL = 1e-4


@dataclasses.dataclass
class Stats:
  """What the verdict cache did in this process (for `research.backend.describe`)."""
  hits: int = 0  # verdicts found in memory or on disk
  checks: int = 0  # comparisons run
  check_seconds: float = 0.0
  refused: list = dataclasses.field(default_factory=list)  # signatures routed to XLA

  def as_dict(self) -> dict:
    return {"hits": self.hits, "checks": self.checks, "check_seconds": round(self.check_seconds, 3),
            "refused": list(self.refused)}


STATS = Stats()
_memory: dict[str, dict] = {}


def signature(kind: str, x_shape, k_shape, strides, pads, dtype: str = "float32") -> str:
  """`forward x=(n,H,W,C) k=(kh,kw,C,O) s=(sh,sw) p=((t,b),(l,r)) float32`."""
  ints = lambda t: tuple(int(a) for a in t)
  pads = tuple(ints(p) for p in pads)
  return f"{kind} x={ints(x_shape)} k={ints(k_shape)} s={ints(strides)} p={pads} {dtype}"


@functools.cache
def cpu_description() -> str:
  """The CPU's model name and feature flags (/proc/cpuinfo), '' where unreadable."""
  try:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return ""
  keep = [value.strip() for key, _, value in (line.partition(":") for line in lines)
          if key.strip() in ("model name", "flags")]
  return "\n".join(sorted(set(keep)))


@functools.cache
def machine_key(onednn_version: str, library: Path) -> str:
  """A hash of this CPU's model and features, the oneDNN version and the built kernels' bytes."""
  digest = hashlib.sha256(cpu_description().encode())
  digest.update(onednn_version.encode())
  digest.update(library.read_bytes() if library.exists() else b"")
  return digest.hexdigest()[:16]


def directory(onednn_version: str, library: Path) -> Path:
  """Where this machine's verdicts are: `$RESEARCH_ONEDNN_VERDICTS` (or the default) / machine key."""
  return Path(os.environ.get(ENV) or DEFAULT_DIR) / machine_key(onednn_version, library)


def accepted(kind: str, x_shape, k_shape, strides, pads, *, onednn: Callable, xla: Callable,
             where: Path) -> bool:
  """Whether oneDNN may run this signature here: the stored verdict, or a comparison run now and stored.

  `onednn(kind, a, b, strides, pads, shape)` and `xla(...)` compute the kind on concrete arrays
  (a, b as in `onednn_conv`: (x, k), (dy, k) or (x, dy); shape: the result's for the backward kinds).
  """
  sig = signature(kind, x_shape, k_shape, strides, pads)
  verdict = _memory.get(sig)
  path = where / (hashlib.sha256(sig.encode()).hexdigest()[:24] + ".json")
  if verdict is None and path.exists():
    try:
      verdict = json.loads(path.read_text())
    except (OSError, ValueError):
      verdict = None  # a torn or foreign file: check again
  if verdict is not None:
    STATS.hits += 1
  else:
    start = time.perf_counter()
    verdict = {"signature": sig, **compare(kind, x_shape, k_shape, strides, pads, onednn=onednn, xla=xla)}
    STATS.checks += 1
    STATS.check_seconds += time.perf_counter() - start
    _write(path, verdict)
  if sig not in _memory and not verdict["ok"]:
    STATS.refused.append(sig)
    warnings.warn(f"oneDNN convolution refused, XLA's used: {sig} differs from XLA by "
                  f"{verdict['worst']:.2g} x the rounding bound ({path})", RuntimeWarning, stacklevel=2)
  _memory[sig] = verdict
  return verdict["ok"]


def compare(kind: str, x_shape, k_shape, strides, pads, *, onednn: Callable, xla: Callable) -> dict:
  """{"ok": bool, "worst": max over elements of |oneDNN - XLA| / (RTOL * magnitude bound)}."""
  rng = np.random.default_rng(int.from_bytes(hashlib.sha256(
      signature(kind, x_shape, k_shape, strides, pads).encode()).digest()[:8], "little"))
  normal = lambda shape: rng.standard_normal(shape, dtype=np.float32)
  y_shape = jax.eval_shape(lambda x, k: xla("forward", x, k, strides, pads, None),
                           jax.ShapeDtypeStruct(x_shape, np.float32),
                           jax.ShapeDtypeStruct(k_shape, np.float32)).shape
  operands = {"forward": (x_shape, k_shape, None), "backward_data": (y_shape, k_shape, x_shape),
              "backward_weights": (x_shape, y_shape, k_shape)}[kind]
  a, b = normal(operands[0]), normal(operands[1])
  cpu = jax.devices("cpu")[0]
  with jax.ensure_compile_time_eval(), jax.default_device(cpu):
    got = np.asarray(onednn(kind, a, b, strides, pads, operands[2]))
    want = np.asarray(xla(kind, a, b, strides, pads, operands[2]))
    bound = np.asarray(xla(kind, np.abs(a), np.abs(b), strides, pads, operands[2]))
  error = np.abs(got.astype(np.float64) - want)
  excess = error / (RTOL * bound.astype(np.float64) + np.finfo(np.float32).tiny)
  worst = float(np.max(excess, initial=0.0)) if np.all(np.isfinite(got)) else float("inf")
  return {"ok": worst <= 1.0, "worst": worst}


def _write(path: Path, verdict: dict) -> None:
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(verdict) + "\n")
    tmp.replace(path)
  except OSError as e:  # a read-only home: the verdict holds for this process only
    warnings.warn(f"oneDNN verdict not stored ({e})", RuntimeWarning, stacklevel=3)
