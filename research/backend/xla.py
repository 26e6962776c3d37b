"""XLA settings of the backend: compiler options, the compilation cache, the host allocator.

`jit(fn, **kw)` is `jax.jit` with `CPU_OPTIONS` on XLA:CPU (none on GPU/TPU, with
`RESEARCH_BACKEND=plain` or with `RESEARCH_DEVICE_PATHS=accelerator`, see `on_cpu`): this jaxlib hands
convolutions to YNNPACK by default, whose weight-gradient convolutions are slower than XLA's Eigen path
on small images; we keep YNNPACK for dots and reductions.

`use_compilation_cache()` turns on JAX's persistent compilation cache, so the trials of a sweep, which
are separate processes compiling the same programs, and re-runs load compiled programs from disk.

`tune_host_allocator()` makes glibc keep freed memory for reuse: with glibc's defaults, XLA:CPU's
buffers come from fresh memory at every execution and are page-faulted in again each time.

`research.backend.setup()` calls the last two; the measured gains are in benchmarks/README.md.
"""

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

import jax

from research.core.errors import UserError, choices_message

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def compiler_options() -> dict:
  plain = os.environ.get("RESEARCH_BACKEND") == "plain"  # research.backend.ENV
  return dict(CPU_OPTIONS) if on_cpu() and not plain else {}


def jit(fn, **kwargs):
  """`jax.jit(fn, **kwargs)` with the backend's compiler options when called at top level.

  Called inside another trace (vmap, an outer jit), where JAX refuses compiler options, it is a plain
  `jax.jit` and the outer function's options apply. The backend is looked up at the first call, not
  here, so that decorating a function at import touches no device.
  """
  plain = jax.jit(fn, **kwargs)

  @functools.cache
  def fast():
    options = compiler_options()
    return jax.jit(fn, **kwargs, compiler_options=options) if options else plain

  @functools.wraps(fn)
  def call(*args, **kw):
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kw)))
    return (plain if traced else fast())(*args, **kw)

  call.lower = lambda *args, **kw: fast().lower(*args, **kw)
  return call


PATHS_ENV = "RESEARCH_DEVICE_PATHS"
PATHS_CHOICES = ("auto", "accelerator")


def paths_choice() -> str:
  """`$RESEARCH_DEVICE_PATHS` (default auto); `accelerator` takes the GPU/TPU branches on CPU too."""
  choice = os.environ.get(PATHS_ENV, "auto")
  if choice not in PATHS_CHOICES:
    raise UserError(choices_message(f"${PATHS_ENV}", choice, PATHS_CHOICES))
  return choice


def on_cpu() -> bool:
  """Whether code that branches by hardware takes its XLA:CPU branch: on the CPU backend, unless
  `$RESEARCH_DEVICE_PATHS=accelerator` forces the GPU/TPU branches (the curvature operators' `lax.scan`
  over chunks, rolled chunk loops in the train step, XLA's own convolutions and no CPU compiler options),
  so that CI runs them on CPU and compares their numbers with the CPU branches'."""
  return jax.default_backend() == "cpu" and paths_choice() == "auto"


CACHE_ENV = "RESEARCH_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "research" / "xla"
CACHE_MAX_BYTES = 4 * 2**30  # JAX evicts the least recently used programs beyond this


def use_compilation_cache() -> str | None:
  """Point JAX's persistent compilation cache at `$RESEARCH_COMPILATION_CACHE` (default
  ~/.cache/research/xla; `0` or empty: off) and return the directory used, or None.

  `JAX_COMPILATION_CACHE_DIR`, when set, wins (JAX reads it itself). Every program is stored, however
  fast it compiled: JAX's default threshold (1 s) skips most of ours on CPU, and the many small programs
  of the curvature and smoothness evaluators add up to seconds per trial (benchmarks/README.md). Call
  before anything is compiled.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  path = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE_DIR))
  if path.strip() in ("", "0"):
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
  return path


MALLOC_ENV = "RESEARCH_HOST_MALLOC"
MALLOC_CHOICES = ("tuned", "glibc")
# mallopt(3) parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TUNED = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never trim (mallopt(3))


def tune_host_allocator() -> bool:
  """On Linux with glibc and a CPU-only JAX, make malloc keep freed memory in the process for reuse:
  one arena, no `mmap` for large blocks, no returning the heap's top to the system. Returns whether it
  did; `$RESEARCH_HOST_MALLOC=glibc` (or malloc settings in `GLIBC_TUNABLES`) leaves glibc as it is.

  Why: glibc serves blocks over 32 MB and the per-thread arenas' heaps by `mmap` and gives them back on
  `free`, so XLA:CPU's buffers, allocated at each execution, are fresh pages that fault in every time
  (page faults and system time per step: benchmarks/README.md). The cost: the process keeps its peak
  heap.

  Call it before JAX runs anything: threads that have already allocated keep their own arena. Process-
  wide, so PyTorch in the same process gets it too.
  """
  if (malloc_choice() == "glibc" or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
      or sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or not _cpu_only()):
    return False
  libc = ctypes.CDLL(None)
  return all(libc.mallopt(param, value) == 1 for param, value in _TUNED)


def malloc_choice() -> str:
  """`$RESEARCH_HOST_MALLOC` (default tuned); an unknown value is a `UserError` naming the choices."""
  choice = os.environ.get(MALLOC_ENV, "tuned")
  if choice not in MALLOC_CHOICES:
    raise UserError(choices_message(f"${MALLOC_ENV}", choice, MALLOC_CHOICES))
  return choice


def _cpu_only() -> bool:
  """Whether JAX will run on the CPU, decided without initializing a backend: `jax_platforms` says
  cpu, or it is unset and no accelerator plugin (CUDA, ROCm, TPU) is installed."""
  platforms = jax.config.jax_platforms
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  plugins = importlib.metadata.entry_points(group="jax_plugins")
  return not plugins and importlib.util.find_spec("jax_plugins") is None and \
      importlib.util.find_spec("libtpu") is None
