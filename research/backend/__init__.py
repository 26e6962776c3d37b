"""Hardware-specific speed-ups, applied in one place: `setup()`, called first by the entry points.

On XLA:CPU (Linux, glibc) `setup()`
- tunes glibc's malloc to keep freed memory for reuse (`xla.tune_host_allocator`);
- turns on JAX's persistent compilation cache (`xla.use_compilation_cache`);
- registers the oneDNN convolution primitive (`native.onednn_conv`, when built by `make setup`) and
  installs the CPU implementations of `research.core.ops` (`cpu`): convolutions routed to oneDNN or,
  for a first layer with few taps, to a sum of shifted products; a 2x2 max-pool with an elementwise
  gradient; each residual block output materialized once.
`xla.jit` adds the CPU compiler options (YNNPACK kept off convolutions) wherever the library jits.
Every one of them leaves values and derivatives as they are up to float rounding; the gains are
measured in benchmarks/README.md.

Settings (environment; a bad value is a `UserError` naming the choices):
- `RESEARCH_BACKEND=auto|plain`: `plain` turns all of the above off (JAX and XLA as installed, the
  model zoo's plain implementations, no compiler options) except the compilation cache;
- `RESEARCH_CONV=onednn|xla`: `xla` keeps XLA's convolutions (the shifted-products first layer stays);
- `RESEARCH_HOST_MALLOC=tuned|glibc`: `glibc` keeps glibc's defaults;
- `RESEARCH_DEVICE_PATHS=auto|accelerator`: `accelerator` takes every branch written for GPU/TPU on CPU
  too (`xla.on_cpu()` is False: no CPU compiler options or CPU ops, `lax.scan` over curvature chunks),
  for tests that compare them with the CPU branches;
- `RESEARCH_COMPILATION_CACHE=DIR|0`, `RESEARCH_ONEDNN_VERDICTS=DIR`: where the caches live.

Without `setup()` (tests, notebooks) models run the plain implementations. `describe()` says what is in
effect; the training loop records it in meta.json as `backend_setup` (`backend` there is JAX's
platform). Importing this package registers
nothing and touches no device.
"""

import contextlib
import os

from research.backend import cpu, native, xla
from research.backend.native import onednn_conv, verdicts
from research.core import ops
from research.core.errors import UserError, choices_message

ENV = "RESEARCH_BACKEND"
CHOICES = ("auto", "plain")
_state = {"setup": False, "compilation_cache": None, "allocator_tuned": False}


def choice() -> str:
  """`$RESEARCH_BACKEND` (default auto)."""
  value = os.environ.get(ENV, "auto")
  if value not in CHOICES:
    raise UserError(choices_message(f"${ENV}", value, CHOICES))
  return value


def check_settings() -> str:
  """Validates every backend setting before any work; returns the backend choice."""
  value = choice()
  native.conv_choice()
  xla.malloc_choice()
  xla.paths_choice()
  return value


def setup() -> None:
  """Applies the backend (see the module docstring). Call first: before JAX runs anything and before
  any model is traced (the allocator setting holds only for threads that have not allocated yet). It
  touches no device, so `jax.distributed.initialize` may follow it."""
  plain = check_settings() == "plain"
  _state.update(setup=True, allocator_tuned=False if plain else xla.tune_host_allocator())
  _state["compilation_cache"] = xla.use_compilation_cache()
  if not plain:
    install()


def install(*, taps: bool = True, onednn: bool | None = None, pool: bool = True,
            materialize: bool = True) -> dict:
  """Installs the CPU implementations of `research.core.ops` (each one checks for XLA:CPU when traced);
  oneDNN convolutions when `onednn` (default: built and `$RESEARCH_CONV` is onednn), which registers
  the primitive. Returns the previous implementations (`ops.install(**previous)` restores them)."""
  if onednn is None:
    onednn = native.why_not() is None
  if onednn:
    onednn_conv.primitive()
  conv = cpu.conv_router(taps=taps, onednn=onednn) if (taps or onednn) else None
  return ops.install(conv_general_dilated=conv, max_pool_2x2=cpu.max_pool_2x2 if pool else None,
                     residual_stream=cpu.materialize if materialize else None)


@contextlib.contextmanager
def installed(**choices):
  """`install(**choices)` for the duration of a `with` block (tests, benchmarks)."""
  previous = install(**choices)
  try:
    yield
  finally:
    ops.install(**previous)


def describe() -> dict:
  """What is in effect (JSON-ready): choice, convolutions, taps, pool, materialize, allocator, compiler
  options, compilation cache, oneDNN version and the verdict cache's hits, checks and refusals so far."""
  impl = ops.installed()
  conv = impl["conv_general_dilated"]
  onednn = getattr(conv, "onednn", False)
  reason = native.why_not()
  return {
      "choice": choice() if _state["setup"] else "not set up",
      "convolutions": ("onednn" if onednn and onednn_conv.registered() else "xla"),
      "onednn_off_because": None if onednn else (reason or "not installed"),
      "first_layer_taps": getattr(conv, "taps", False),
      "max_pool_elementwise_gradient": impl["max_pool_2x2"] is cpu.max_pool_2x2,
      "materialize_residual_stream": impl["residual_stream"] is cpu.materialize,
      "allocator": "tuned" if _state["allocator_tuned"] else "as configured",
      "compiler_options": xla.compiler_options(),
      "device_paths": xla.paths_choice(),
      "compilation_cache": _state["compilation_cache"],
      "onednn_version": native.onednn_version() if reason is None else None,
      "onednn_verdicts": {"dir": str(verdicts.directory(native.onednn_version(), native.LIBRARY))
                          if reason is None else None, **verdicts.STATS.as_dict()},
  }
