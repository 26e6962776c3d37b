"""Backend-specific compiler options, kept in one place so that GPU/TPU keep XLA's defaults.

On XLA:CPU this jaxlib hands convolutions to YNNPACK by default, whose weight-gradient convolutions are
2-7x slower than XLA's Eigen path on small images (benchmarks/models.py: ResNet-20's train step 1.7x
faster, simple_cnn's 1.2-1.3x with them kept on Eigen). We keep YNNPACK for dots and reductions only.
`jit(fn, **kw)` is `jax.jit` with these options on CPU.
"""

import functools

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
