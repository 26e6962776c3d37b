"""Backend-specific compiler options, kept in one place so that GPU/TPU keep XLA's defaults.

On XLA:CPU this jaxlib hands convolutions to YNNPACK by default, whose weight-gradient convolutions are
2-7x slower than XLA's Eigen path on small images (benchmarks/models.py: ResNet-20's train step 1.7x
faster, simple_cnn's 1.2-1.3x with them kept on Eigen). We keep YNNPACK for dots and reductions only.
`jit(fn, **kw)` is `jax.jit` with these options on CPU.

`use_compilation_cache()` turns on JAX's persistent compilation cache for the entry points (training,
post-hoc measurement, the curvature CLI), so the trials of a sweep, which are separate processes
compiling the same programs, and re-runs load compiled programs from disk instead of compiling them.
"""

import functools
import os
from pathlib import Path

import jax

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
               "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def compiler_options() -> dict:
  return dict(CPU_OPTIONS) if jax.default_backend() == "cpu" else {}


def jit(fn, **kwargs):
  """`jax.jit(fn, **kwargs)` with the backend's compiler options when called at top level.

  Called inside another trace (vmap, an outer jit), where JAX refuses compiler options, it is a plain
  `jax.jit` and the outer function's options apply.
  """
  options = compiler_options()
  plain = jax.jit(fn, **kwargs)
  if not options:
    return plain
  fast = jax.jit(fn, **kwargs, compiler_options=options)

  @functools.wraps(fn)
  def call(*args, **kw):
    traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kw)))
    return (plain if traced else fast)(*args, **kw)

  call.lower = fast.lower
  return call


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


CACHE_ENV = "RESEARCH_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "research" / "xla"
CACHE_MAX_BYTES = 4 * 2**30  # JAX evicts the least recently used programs beyond this


def use_compilation_cache() -> str | None:
  """Point JAX's persistent compilation cache at `$RESEARCH_COMPILATION_CACHE` (default
  ~/.cache/research/xla; `0` or empty: off) and return the directory used, or None.

  `JAX_COMPILATION_CACHE_DIR`, when set, wins (JAX reads it itself). Programs that took at least 0.2 s
  to compile are stored (JAX's default threshold, 1 s, would skip most of ours on CPU). Call before
  anything is compiled.
  """
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  path = os.environ.get(CACHE_ENV, str(DEFAULT_CACHE_DIR))
  if path.strip() in ("", "0"):
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
  return path
