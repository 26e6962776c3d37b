"""The built-in evaluators on abstract shapes: for each section a trial's config switches on, the checks its
`measure` makes on the data (probe sets, ghost batches, splits) and its jax functions traced and lowered
on one chunk of the configured size, with how many calls a trial makes of each (`PLANS`).

The functions are built as the evaluators build them (`research.evaluators`): the loss and logits of
`research.curvature.operators.model_functions` in the evaluator's BatchNorm mode on the trained
parameters (`params.*`), the Hessian-vector product of `operators.hessian`, the gradient of
`operators.mean_gradient`, a landscape point of `research.landscape.scan.point_functions`. What runs on
the host (Lanczos' tridiagonal algebra, norms and spectral norms of weight matrices, magnitude pruning,
random directions) is not traced and its cost is not counted.

How calls are counted (an estimate: the solvers stop on their own criteria):
- an eigen-solve for k pairs: one Krylov basis of `costs.lanczos_products(k)` = max(2k + 20, 30)
  Hessian-vector products (no restart; a warm-started solve usually needs fewer);
- Hutchinson's trace: one product per probe; a spectral density: probes x Lanczos steps;
- worst-case and epsilon-sharpness: every restart takes all its ascent steps (steps + 1 loss-and-gradient
  passes over the probe set); PAC-Bayes sigma: the bisection's full depth x samples forward passes;
- smoothness: 1 + len(multiples) loss-and-gradient passes; a landscape: one forward pass per grid point
  and split; compression: one forward pass per level and split, plus the uncompressed model.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from research.core import losses
from research.core.errors import UserError
from research.curvature import operators
from research.dry_run.costs import Cost, Program, lanczos_products, lower, measurement_steps
from research.evaluators import measures as measures_evaluator
from research.evaluators import smoothness as smoothness_evaluator
from research.landscape.model import point_model
from research.landscape.scan import point_functions
from research.measures import common
from research.measures import compression as compression_lib


def _is_parameter(name: str) -> bool:
  return name.startswith("params.")


def batch(prefix: tuple[int, ...], input_shape: tuple[int, ...]) -> dict:
  """An abstract batch as the loop and the evaluators hold it: `image` uint8 prefix + (H, W, C), `label`
  int32 and `mask` float32 of shape `prefix`."""
  return {"image": jax.ShapeDtypeStruct((*prefix, *input_shape), jnp.uint8),
          "label": jax.ShapeDtypeStruct(prefix, jnp.int32),
          "mask": jax.ShapeDtypeStruct(prefix, jnp.float32)}


def probe_set(split, num_examples: int, chunk_size: int) -> tuple[int, int, int]:
  """(examples, chunk, chunks) of `operators.first_examples(split, num_examples, chunk_size)` on one
  device: the first `num_examples` (0: all) in chunks of `chunk_size` (0: one chunk)."""
  n = len(split) if num_examples == 0 else min(num_examples, len(split))
  if n == 0:
    raise UserError("no examples to measure on")
  chunk = min(chunk_size or n, n)
  return n, chunk, -(-n // chunk)


class Functions:
  """The jax functions of one trial's model that the evaluators call, lowered once per (function, BatchNorm
  mode, chunk size) and remembered by the planner across trials with the same model."""

  def __init__(self, setting):
    self.s = setting
    self.tree = {"params": setting.state.params, "model_state": setting.state.model_state}
    leaves = jax.tree.leaves(setting.state.params)
    self.dtype = jnp.result_type(*[x.dtype for x in leaves])
    self.size = int(sum(math.prod(x.shape) for x in leaves))

  def _memo(self, kind: str, bn_mode: str, chunk: int, build: Callable[[], Program]) -> Program:
    s = self.s
    key = ("function", kind, s.model_key, bn_mode, chunk, s.config.loss.name)
    return s.planner.memo(key, build)

  def _pair(self, bn_mode: str, preprocess: bool = True):
    """(loss_fn, logits_fn) of {"params", "model_state"}, as the evaluators build them."""
    s = self.s
    pre = s.dataset.preprocess if preprocess else (lambda x: x)

    def make(want: int):
      def fn(tree, batch_):
        pair = operators.model_functions(s.graphdef, tree["model_state"], bn_mode=bn_mode, preprocess=pre,
                                         loss_name=s.config.loss.name)
        return pair[want](tree["params"], batch_)
      return fn

    loss_fn = make(0)
    loss_fn.bn_mode = bn_mode  # read by the operators (ghost batches)
    return loss_fn, make(1)

  def _chunk(self, chunk: int) -> dict:
    return batch((chunk,), self.s.dataset.input_shape)

  def _expect(self, what: str, out, shapes: list[tuple]) -> None:
    got = [tuple(x.shape) for x in jax.tree.leaves(out)]
    if got != shapes:
      raise UserError(f"{what} returns shapes {got}, expected {shapes}")

  def hvp(self, bn_mode: str, chunk: int) -> Program:
    """A Hessian-vector product of `operators.hessian` on one chunk: (d,) -> (d,)."""
    loss_fn, _ = self._pair(bn_mode)

    def product(tree, arrays, v):
      op = operators.hessian(loss_fn, tree, operators.Chunks(arrays, chunk, chunk),
                             param_filter=_is_parameter, cache_bytes=0)
      return op.matvec(v)

    def build():
      arrays = batch((1, chunk), self.s.dataset.input_shape)
      p = lower(product, self.tree, arrays, jax.ShapeDtypeStruct((self.size,), self.dtype))
      self._expect("the Hessian-vector product", p.out, [(self.size,)])
      return p

    return self._memo("hvp", bn_mode, chunk, build)

  def gradient(self, bn_mode: str, chunk: int) -> Program:
    """The flattened gradient of `operators.mean_gradient` on one chunk."""
    loss_fn, _ = self._pair(bn_mode)

    def gradient(tree, arrays):
      return operators.mean_gradient(loss_fn, tree, operators.Chunks(arrays, chunk, chunk),
                                     param_filter=_is_parameter)

    def build():
      p = lower(gradient, self.tree, batch((1, chunk), self.s.dataset.input_shape))
      self._expect("the gradient", p.out, [(self.size,)])
      return p

    return self._memo("gradient", bn_mode, chunk, build)

  def value_and_grad(self, bn_mode: str, chunk: int) -> Program:
    """(loss, flat gradient) on one chunk, as the sharpness and smoothness measures take them."""
    loss_fn, _ = self._pair(bn_mode)

    def value_and_grad(tree, chunk_batch):
      fp = common.flatten(tree, _is_parameter)
      return jax.value_and_grad(lambda flat: loss_fn(fp.params_at(flat), chunk_batch))(fp.flat)

    def build():
      p = lower(value_and_grad, self.tree, self._chunk(chunk))
      self._expect("the loss and its gradient", p.out, [(), (self.size,)])
      return p

    return self._memo("value_and_grad", bn_mode, chunk, build)

  def loss(self, bn_mode: str, chunk: int) -> Program:
    loss_fn, _ = self._pair(bn_mode)

    def build():
      p = lower(loss_fn, self.tree, self._chunk(chunk))
      self._expect("the loss", p.out, [()])
      return p

    return self._memo("loss", bn_mode, chunk, build)

  def logits(self, bn_mode: str, chunk: int, *, preprocess: bool = True) -> Program:
    _, logits_fn = self._pair(bn_mode, preprocess)

    def build():
      p = lower(logits_fn, self.tree, self._chunk(chunk))
      self._expect("the logits", p.out, [(chunk, self.s.dataset.num_classes)])
      return p

    return self._memo("logits" if preprocess else "raw_logits", bn_mode, chunk, build)

  def fisher_rao(self, bn_mode: str, chunk: int) -> Program:
    """<w, grad_w l_i> for every example of one chunk by one jvp (`research.measures.norms`)."""
    _, logits_fn = self._pair(bn_mode)
    loss_name = self.s.config.loss.name

    def directional(tree, chunk_batch):
      fp = common.flatten(tree, _is_parameter)
      per_example = lambda v: losses.per_example_loss(loss_name, logits_fn(fp.params_at(v), chunk_batch),
                                                      chunk_batch["label"])
      return jax.jvp(per_example, (fp.flat,), (fp.flat,))[1]

    def build():
      p = lower(directional, self.tree, self._chunk(chunk))
      self._expect("the Fisher-Rao directional derivative", p.out, [(chunk,)])
      return p

    return self._memo("fisher_rao", bn_mode, chunk, build)


def _count(setting, every_steps: int, at_end: bool) -> list[int]:
  return measurement_steps(every_steps, at_end, setting.total_steps)


def curvature(setting, ev) -> list[Cost]:
  """`research.evaluators.curvature`: Hessian products (and a gradient) on the fixed probe set."""
  c, s = setting.config.curvature, setting
  n, chunk, chunks = probe_set(getattr(s.dataset, c.split), c.num_examples, c.chunk_size)
  if c.bn_mode == "batch" and n % chunk:
    raise UserError(f"curvature.num_examples ({n}) must be a multiple of curvature.chunk_size ({chunk}) in "
                    "bn_mode batch: every chunk is a ghost batch whose BatchNorm statistics would include "
                    "the padding")
  if c.preconditioned and not _adam_state(s.state.opt_state):
    raise UserError(f"curvature.preconditioned needs an Adam-type optimizer state (a second moment `nu`); "
                    f"optimizer {s.config.optimizer.name!r} has none")
  fns = Functions(s)
  hvp = fns.hvp(c.bn_mode, chunk)
  steps = _count(s, ev.every_steps, ev.at_end)
  products = 0
  for step in steps:
    final = step == s.total_steps
    products += lanczos_products(c.k)
    products += lanczos_products(1) if c.lambda_min else 0
    products += lanczos_products(1) if c.preconditioned and step > 0 else 0
    if c.trace_probes and (not c.trace_every or step % c.trace_every == 0 or final):
      products += c.trace_probes
    if c.density_every and (step % c.density_every == 0 or final):
      products += c.density_probes * min(c.density_steps, fns.size)
  s.check(f"curvature: {len(steps)} measurements on {n} {c.split} examples ({chunks} chunks of {chunk}, "
          f"BatchNorm {c.bn_mode}); Hessian-vector product {fns.size:,} -> {fns.size:,}")
  costs = [Cost("curvature: Hessian-vector products", hvp.flops * chunks, products,
                f"{products / max(len(steps), 1):.0f} per measurement")]
  passes = len(steps) * (int(c.gradient) + int(c.noise_scale))
  if passes:
    grad = fns.gradient(c.bn_mode, chunk)
    costs.append(Cost("curvature: gradients", grad.flops * chunks, passes))
  return costs


def _adam_state(opt_state) -> bool:
  found = jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "nu") and hasattr(x, "count"))
  return any(hasattr(x, "nu") for x in found)


def smoothness(setting, ev) -> list[Cost]:
  """`research.evaluators.smoothness`: loss and gradient at 1 + len(multiples) points per measurement."""
  c, s = setting.config.smoothness, setting
  ghost = c.chunk_size or smoothness_evaluator.training_chunk(s.config, len(s.dataset.train))
  n, chunk, chunks = probe_set(getattr(s.dataset, c.split), c.num_examples, ghost)
  if c.bn_mode == "batch" and n % chunk:
    raise UserError(f"smoothness: with bn_mode 'batch' the probe set ({n} examples of {c.split}) must be "
                    f"whole ghost batches of {chunk}; set smoothness.num_examples to a multiple of it")
  vg = Functions(s).value_and_grad(c.bn_mode, chunk)
  steps = _count(s, ev.every_steps, ev.at_end)
  passes = len(steps) * (1 + len(c.multiples))
  s.check(f"smoothness: {len(steps)} measurements on {n} {c.split} examples ({chunks} chunks of {chunk}, "
          f"BatchNorm {c.bn_mode}), {len(c.multiples)} step multiples")
  return [Cost("smoothness: loss and gradient passes", vg.flops * chunks, passes)]


def landscape(setting, ev) -> list[Cost]:
  """`research.evaluators.landscape`: one forward pass per grid point and split."""
  c, s = setting.config.landscape, setting
  fns = Functions(s)
  splits = {}
  for name in c.splits:
    size = min(c.num_examples or len(getattr(s.dataset, name)), len(getattr(s.dataset, name)))
    if size:
      splits[name] = size
  if not splits:
    raise UserError(f"landscape.splits {', '.join(c.splits)} are all empty in this dataset")
  chunk = c.chunk_size or max(splits.values())
  num = 1 if c.kind == "1d" else 2
  stats = None
  if c.bn_mode == "recompute":
    shape = (max(c.stats_examples, c.stats_batch_size), *s.dataset.input_shape)
    stats = np.zeros(shape, np.uint8)  # the values do not change shapes or FLOPs

  def point(params, model_state, trees, coeffs, chunk_batch):
    """One grid point (`points_per_batch` 1) on one chunk: (1, 2) sums of loss and correct."""
    model = point_model(s.graphdef, model_state, bn_mode=c.bn_mode, preprocess=s.dataset.preprocess,
                        stats_images=stats, stats_batch_size=c.stats_batch_size)
    stats_fn, sums_fn = point_functions(model.logits, model.statistics, s.config.loss.name)
    return sums_fn(params, trees, coeffs, stats_fn(params, trees, coeffs), chunk_batch)

  def build():
    params = s.state.params
    coeffs = jax.ShapeDtypeStruct((1, num), jnp.result_type(jnp.float32, fns.dtype))
    p = lower(point, params, s.state.model_state, [params] * num, coeffs,
              batch((chunk,), s.dataset.input_shape))
    fns._expect("a landscape point", p.out, [(1, 2)])
    return p

  key = ("function", "landscape_point", s.model_key, c.bn_mode, chunk, num, s.config.loss.name,
         c.stats_examples, c.stats_batch_size)
  p = s.planner.memo(key, build)
  steps = _count(s, ev.every_steps, ev.at_end)
  points = c.num_points ** num
  passes = sum(-(-size // chunk) for size in splits.values())
  costs = [Cost("landscape: grid points (forward passes)", p.flops, len(steps) * points * passes,
                f"{points} points x {passes} chunks")]
  if c.directions == "eigen":
    bn = "eval" if c.bn_mode == "recompute" else c.bn_mode
    n, eig_chunk, eig_chunks = probe_set(s.dataset.eval_train, c.num_examples, c.chunk_size)
    hvp = fns.hvp(bn, eig_chunk)
    costs.append(Cost("landscape: Hessian-vector products (eigen directions)", hvp.flops * eig_chunks,
                      len(steps) * lanczos_products(num)))
  s.check(f"landscape: {c.kind} {c.directions} directions, {points} points on "
          f"{', '.join(f'{k} ({v})' for k, v in splits.items())} in chunks of {chunk}, BatchNorm {c.bn_mode}")
  s.note("landscape: the directions are drawn and normalized on the host (not traced)")
  return costs


def compression(setting, ev) -> list[Cost]:
  """`research.evaluators.compression`: the uncompressed and every compressed model on each split."""
  c, s = setting.config.compression, setting
  fns = Functions(s)
  leaves = [(operators.path_name(p), x) for p, x in jax.tree_util.tree_flatten_with_path(s.state.params)[0]]
  kernels = [(name, x) for name, x in leaves if compression_lib.is_kernel(name)]
  if not kernels:
    raise UserError("compression: the model has no kernels to compress")
  levels = compression_lib.levels(tuple(c.bits), tuple(c.sparsities))
  for bits in c.bits:  # fake quantization is a jax function of the weights; pruning runs on the host
    out = jax.eval_shape(lambda ws, b=bits: [compression_lib.fake_quantize(w, b, c.granularity) for w in ws],
                         [x for _, x in kernels])
    fns._expect(f"{bits}-bit quantization", out, [tuple(x.shape) for _, x in kernels])
  costs, described = [], []
  for name in c.splits:
    split = getattr(s.dataset, name)
    if len(split) == 0:
      raise UserError(f"compression.splits has {name!r}, which has no examples in this dataset")
    n, chunk, chunks = probe_set(split, c.num_examples, c.chunk_size)
    p = fns.logits("eval", chunk)
    costs.append(Cost(f"compression: forward passes ({name})", p.flops * chunks, 1 + len(levels)))
    described.append(f"{name} ({n} in chunks of {chunk})")
  s.check(f"compression: {len(kernels)} kernels, {len(levels)} levels on {', '.join(described)}")
  s.note("compression: magnitude pruning runs on the host (not traced)")
  return costs


# Per measure of `research.evaluators.measures`: (function, calls per parameter set) with the function one
# of value_and_grad | loss | logits | raw_logits | fisher_rao | hvp (passes over the probe set).
def _measure_calls(name: str, c) -> list[tuple[str, int]]:
  if name in ("worst_case", "worst_case_adaptive", "epsilon"):
    return [("value_and_grad", c.restarts * (c.steps + 1)), ("loss", 1)]
  if name in ("average", "average_adaptive"):
    return [("loss", 1 + 2 * c.average_pairs)]
  if name in ("pac_bayes", "pac_bayes_magnitude"):
    return [("logits", 1 + c.pac_bayes_depth * c.pac_bayes_samples)]
  if name == "margin":
    return [("logits", 1)]
  if name == "path_norm":
    return [("raw_logits", 1)]
  if name == "fisher_rao":
    return [("fisher_rao", 1)]
  if name == "lambda_max":
    return [("hvp", lanczos_products(1))]
  if name == "hessian_trace":
    return [("hvp", c.trace_probes)]
  return []  # norms, num_params: host


def measures(setting, ev) -> list[Cost]:
  """`research.evaluators.measures`: every measure of `names` on each parameter set (the trained one and
  each rescaled copy)."""
  c, s = setting.config.measures, setting
  names = measures_evaluator.parse_names(c.names)
  alphas = measures_evaluator.parse_alphas(c.rescale_alphas)
  layers = [p.strip() for p in c.rescale_layers.split(",") if p.strip()]
  n, chunk, chunks = probe_set(getattr(s.dataset, c.split), c.num_examples, c.chunk_size)
  fns = Functions(s)
  if alphas:  # Dinh et al.'s rescaling looks layers up by name: check them on placeholder values
    floating = lambda x: jnp.issubdtype(x.dtype, jnp.floating)
    placeholder = jax.tree.map(lambda x: np.zeros((), x.dtype) if floating(x) else x, fns.tree)
    for alpha in alphas:
      measures_evaluator.rescaled(c, alpha, layers, placeholder)
  sets = 1 + len(alphas)
  calls: dict[str, int] = {}
  for name in names:
    for kind, k in _measure_calls(name, c):
      calls[kind] = calls.get(kind, 0) + k * sets
  if alphas:  # the largest logit change of every rescaled copy: both models on the probe set
    calls["logits"] = calls.get("logits", 0) + 2 * len(alphas)
  steps = _count(s, ev.every_steps, ev.at_end)
  what = {"value_and_grad": "loss and gradient passes", "loss": "loss passes", "logits": "forward passes",
          "raw_logits": "path norm (one all-ones input)", "fisher_rao": "Fisher-Rao jvp passes",
          "hvp": "Hessian-vector products"}
  costs = []
  for kind, k in calls.items():
    if kind == "raw_logits":
      p, per_set = fns.logits(c.bn_mode, 1, preprocess=False), 1
    else:
      p, per_set = getattr(fns, kind)(c.bn_mode, chunk), chunks
    costs.append(Cost(f"measures: {what[kind]}", p.flops * per_set, k * len(steps)))
  s.check(f"measures: {len(names)} measures x {sets} parameter sets, {len(steps)} measurements on {n} "
          f"{c.split} examples ({chunks} chunks of {chunk}, BatchNorm {c.bn_mode})")
  if {"norms", "pac_bayes", "pac_bayes_magnitude"} & set(names):
    s.note("measures: norms, spectral norms and PAC-Bayes bounds run on the host (not traced)")
  return costs


PLANS = {"curvature": curvature, "smoothness": smoothness, "landscape": landscape, "compression": compression,
         "measures": measures}
