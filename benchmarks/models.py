"""Train-step throughput of our small CNNs on CPU, JAX/XLA against exact PyTorch twins. Run by hand:

  .venv/bin/pip install -r benchmarks/requirements.txt   # torch==2.13.0, a CPU wheel
  .venv/bin/python -m benchmarks.models [--repeats 7] [--batch 128] [--models simple_cnn,resnet20]
  .venv/bin/python -m benchmarks.models --check_xla_flags   # also re-runs JAX under XLA_FLAGS

About 4 minutes on 2 cores (most of it ResNet-20's slow default step and compilations).

What is timed: one full SGD train step at batch 128 (forward, softmax cross-entropy, gradients, parameter
update; BatchNorm in training mode with its running statistics carried in the state, as PyTorch's
`model.train()` does), for `simple_cnn` (default knobs, 28x28x1) and `resnet20` (32x32x3), 10 classes.
JAX: `research.models.create`, `functional.split`, a pure `step(state, x, y)` jitted once with the state
(params, BatchNorm statistics) donated. PyTorch: twins with the same layers and parameter counts
(checked), and the same function: our weights are copied in and the logits compared before timing.

Contenders, timed round-robin (one step of each in turn, `--repeats` rounds, median reported) so that
load from other processes hits all of them alike; every JAX step blocks on its result:
- `jax (default XLA flags)`: XLA:CPU as shipped (jaxlib 0.10.2 hands convolutions, dots and reductions
  to YNNPACK by default);
- `jax, ynn conv off`: the same step compiled with
  `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` (YNNPACK keeps dots and reductions,
  convolutions go back to XLA's Eigen path), passed per compilation through `compiler_options` as the
  equivalent explicit list (the same DebugOptions field XLA_FLAGS sets); `--check_xla_flags` re-runs the
  JAX steps in a subprocess with the flag in XLA_FLAGS to confirm;
- `jax, ynn conv off, pool grad, taps` (simple_cnn) and `jax, ynn conv off, materialize, taps`
  (resnet20): also the CPU operations of `research.backend` installed (`backend.installed()`, what
  `backend.setup()` installs): `backend.cpu.max_pool_2x2` (an elementwise-gradient JVP rule),
  `backend.cpu.materialize` on each ResNet block output (the residual stream computed once, not
  recomputed inside the weight-gradient transposes), the first convolution (3x3x1 or 3x3x3) as a sum of
  shifted products and the others through oneDNN (`backend.cpu.conv_router`; `, xla convs`: without
  oneDNN). The two other JAX lines use the model zoo's plain operations (`research.core.ops`: a
  reshape-and-max pool, no materialize, XLA's convolutions; same values and gradients, checked). The
  last line is how the library trains on CPU (the oneDNN verdicts are computed while it compiles);
- `torch` (NCHW, the default layout) and `torch channels_last`, `torch.get_num_threads()` threads (the
  default: one per core).

Before anything runs, glibc's malloc is tuned as `research.backend.setup()` does (`host_allocator`, for
both frameworks in this process); `RESEARCH_HOST_MALLOC=glibc` keeps glibc's defaults (printed).

FLOPs: XLA's cost analysis of the compiled default JAX step (`compiled.cost_analysis()["flops"]`),
the same count for every contender. The matmul reference is a jitted float32 4096x4096 matmul timed in
the same rounds.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from research import backend, models
from research.backend import cpu, native, xla
from research.core import ops
from research.models import functional

SHAPES = {"simple_cnn": (28, 28, 1), "resnet20": (32, 32, 3)}
NUM_CLASSES = 10
LEARNING_RATE = 0.01
MATMUL_SIZE = 4096
# YNNPACK keeps the dots and reductions (its default list minus convolutions); convolutions go back to
# XLA's Eigen path (see README: YNNPACK's weight-gradient convolutions are 2-7x slower here).
YNN_CONV_OFF_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
YNN_CONV_OFF = {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
# The last JAX line of each model: the flag plus the layers as the library has them.
LIBRARY_LABEL = {"simple_cnn": "jax, ynn conv off, pool grad, taps",
                 "resnet20": "jax, ynn conv off, materialize, taps"}


def convolutions() -> str:
  """Which convolutions the backend runs on CPU in this process (research/backend/native)."""
  reason = native.why_not()
  return f"oneDNN {native.onednn_version()}" if reason is None else f"XLA's ({reason})"


def host_allocator() -> str:
  """Tunes glibc's malloc as `research.backend.setup()` does (`backend.xla.tune_host_allocator`, before
  JAX runs anything; it holds for PyTorch in this process too) and says what is in effect."""
  if xla.tune_host_allocator():
    return "tuned by research.backend.xla.tune_host_allocator (RESEARCH_HOST_MALLOC=glibc: glibc's defaults)"
  return f"glibc as configured (RESEARCH_HOST_MALLOC={os.environ.get('RESEARCH_HOST_MALLOC', '')!r}, " \
         f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r})"


# ---------------------------------------------------------------------------------------------------
# JAX


def jax_train_step(model: nnx.Module):
  """(step, state): `step(state, x, y) -> (state, loss)`, one SGD step; state = (params, rest).

  `rest` holds the BatchNorm running statistics (and RNG counters); the step updates them from the
  batch, as in training.
  """
  graphdef, params, rest = functional.split(model)

  def loss_fn(params, rest, images, labels):
    model = nnx.merge(graphdef, params, rest, copy=True)
    functional.set_modes(model, use_running_average=False, deterministic=True)
    logits = model(images)
    new_rest = nnx.state(model, nnx.Not(nnx.Param))
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_rest

  def step(state, images, labels):
    params, rest = state
    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, images, labels)
    params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
    return (params, rest), loss

  return step, (params, rest)


class JaxRunner:
  """A compiled train step and its (donated) state; calling it runs one step and blocks."""

  def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, compiler_options=None,
               library_layers: bool = False, onednn: bool = True):
    model = models.create(name, num_classes=NUM_CLASSES, input_shape=SHAPES[name], rngs=nnx.Rngs(0))
    step, self.state = jax_train_step(model)
    self.images, self.labels = jnp.asarray(images), jnp.asarray(labels)
    # the model calls research.core.ops when traced, i.e. when lowered: plain, or the backend's
    with backend.installed(onednn=onednn) if library_layers else contextlib.nullcontext():
      lowered = jax.jit(step, donate_argnums=0).lower(self.state, self.images, self.labels)
    self.compiled = lowered.compile(compiler_options=compiler_options or {})
    self.flops = self.compiled.cost_analysis()["flops"]

  def __call__(self) -> None:
    self.state, loss = self.compiled(self.state, self.images, self.labels)
    loss.block_until_ready()


class MatmulRunner:
  def __init__(self, n: int = MATMUL_SIZE):
    key_a, key_b = jax.random.split(jax.random.key(0))
    self.a = jax.random.normal(key_a, (n, n), jnp.float32)
    self.b = jax.random.normal(key_b, (n, n), jnp.float32)
    self.f = jax.jit(jnp.matmul)
    self.flops = 2.0 * n**3

  def __call__(self) -> None:
    self.f(self.a, self.b).block_until_ready()


# ---------------------------------------------------------------------------------------------------
# PyTorch twins (torch is imported lazily: it is a benchmark-only dependency)


def torch_twin(name: str):
  """The PyTorch twin of our model `name` (NCHW), computing the same function."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  class SimpleCNN(nn.Module):
    """conv 32, relu, pool, conv 64, relu, pool, dense 128, relu, dense 10 (our simple_cnn defaults)."""

    def __init__(self, in_ch: int, size: int):
      super().__init__()
      self.conv1 = nn.Conv2d(in_ch, 32, 3, padding=1)
      self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
      self.fc = nn.Linear(64 * (size // 4) ** 2, 128)
      self.head = nn.Linear(128, NUM_CLASSES)

    def forward(self, x):
      x = F.max_pool2d(F.relu(self.conv1(x)), 2)
      x = F.max_pool2d(F.relu(self.conv2(x)), 2)
      return self.head(F.relu(self.fc(x.flatten(1))))

  def bn(ch):  # our BatchNorm: momentum 0.9 (PyTorch's 0.1), epsilon 1e-5
    return nn.BatchNorm2d(ch, eps=1e-5, momentum=0.1)

  class Conv3x3(nn.Module):
    """3x3 conv with XLA's 'SAME' padding: stride 2 on even sizes pads 0 before and 1 after."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
      super().__init__()
      self.stride = stride
      self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, padding=1 if stride == 1 else 0, bias=False)

    def forward(self, x):
      return self.conv(x if self.stride == 1 else F.pad(x, (0, 1, 0, 1)))

  class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
      super().__init__()
      self.conv1, self.norm1 = Conv3x3(in_ch, out_ch, stride), bn(out_ch)
      self.conv2, self.norm2 = Conv3x3(out_ch, out_ch, 1), bn(out_ch)
      self.stride, self.pad = stride, out_ch - in_ch

    def forward(self, x):
      out = F.relu(self.norm1(self.conv1(x)))
      out = self.norm2(self.conv2(out))
      if self.stride != 1 or self.pad:  # option A: subsample, zero-pad the new channels on both sides
        lo = self.pad // 2
        x = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, lo, self.pad - lo))
      return F.relu(out + x)

  class ResNet20(nn.Module):
    def __init__(self, in_ch: int):
      super().__init__()
      self.stem, self.stem_norm = Conv3x3(in_ch, 16, 1), bn(16)
      blocks, ch = [], 16
      for i, width in enumerate((16, 32, 64)):
        for j in range(3):
          blocks.append(BasicBlock(ch, width, 2 if i > 0 and j == 0 else 1))
          ch = width
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(ch, NUM_CLASSES)

    def forward(self, x):
      x = self.blocks(F.relu(self.stem_norm(self.stem(x))))
      return self.head(x.mean((2, 3)))

  h, _, c = SHAPES[name]
  torch.manual_seed(0)
  return {"simple_cnn": lambda: SimpleCNN(c, h), "resnet20": lambda: ResNet20(c)}[name]()


def _pairs(name: str, ours: nnx.Module, twin):
  """(our module, twin module) for every layer with parameters."""
  if name == "simple_cnn":
    return [(ours.convs[0], twin.conv1), (ours.convs[1], twin.conv2), (ours.fc, twin.fc),
            (ours.head, twin.head)]
  pairs = [(ours.stem, twin.stem.conv), (ours.stem_norm, twin.stem_norm), (ours.head, twin.head)]
  for block, twin_block in zip(ours.blocks, twin.blocks):
    pairs += [(block.conv1, twin_block.conv1.conv), (block.norm1, twin_block.norm1),
              (block.conv2, twin_block.conv2.conv), (block.norm2, twin_block.norm2)]
  return pairs


def copy_into_twin(name: str, ours: nnx.Module, twin) -> None:
  """Copies our parameters and BatchNorm running statistics into the twin (kernels to PyTorch's layouts)."""
  import torch

  def put(dst, value):
    dst.copy_(torch.from_numpy(np.array(value)))

  with torch.no_grad():
    for module, theirs in _pairs(name, ours, twin):
      if isinstance(module, nnx.BatchNorm):
        put(theirs.weight, module.scale[...])
        put(theirs.bias, module.bias[...])
        put(theirs.running_mean, module.mean[...])  # for eval-mode comparisons (curvature benchmark)
        put(theirs.running_var, module.var[...])
        continue
      kernel = np.asarray(module.kernel[...])
      if kernel.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
        kernel = kernel.transpose(3, 2, 0, 1)
      elif module is getattr(ours, "fc", None):  # NHWC flatten (h, w, c) -> NCHW flatten (c, h, w)
        c = ours.convs[-1].out_features
        hw = int(round((kernel.shape[0] // c) ** 0.5))
        kernel = kernel.reshape(hw, hw, c, -1).transpose(3, 2, 0, 1).reshape(kernel.shape[1], -1)
      else:
        kernel = kernel.T
      put(theirs.weight, kernel)
      if module.bias is not None:
        put(theirs.bias, module.bias[...])


class TorchRunner:
  """The twin's train step (SGD, same learning rate, `model.train()`); calling it runs one step."""

  def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, channels_last: bool = False):
    import torch

    self.torch = torch
    self.model = torch_twin(name)
    self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    self.labels = torch.from_numpy(labels.astype(np.int64))
    if channels_last:
      self.model = self.model.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    self.model.train()
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE)

  def __call__(self) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    loss = self.torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
    loss.backward()
    self.optimizer.step()


def check_twin(name: str, images: np.ndarray) -> tuple[int, float]:
  """(parameter count, max |logit difference|) of our model and its twin on the same weights."""
  import torch

  ours = models.create(name, num_classes=NUM_CLASSES, input_shape=SHAPES[name], rngs=nnx.Rngs(0))
  twin = torch_twin(name)
  count = models.num_params(ours)
  twin_count = sum(p.numel() for p in twin.parameters())
  if twin_count != count:
    raise AssertionError(f"{name}: PyTorch twin has {twin_count} parameters, ours {count}")
  copy_into_twin(name, ours, twin)
  _, params, rest = functional.split(ours)
  graphdef = nnx.graphdef(ours)
  logits = functional.apply_fn(graphdef, rest, bn_mode="batch")(params, jnp.asarray(images[:32]))
  twin.train()
  with torch.no_grad():
    twin_logits = twin(torch.from_numpy(images[:32].transpose(0, 3, 1, 2).copy())).numpy()
  return count, float(np.max(np.abs(np.asarray(logits) - twin_logits)))


def check_pool_gradient() -> float:
  """Max |difference| of the values, gradients and Hessian-vector products (forward-over-reverse) of
  backend.cpu.max_pool_2x2 (elementwise-gradient JVP rule) and the plain reshape-and-max, on ReLU outputs
  (many tied zeros) and odd sizes."""
  x = jax.nn.relu(jax.random.normal(jax.random.key(1), (4, 9, 7, 3)))
  v = jax.random.normal(jax.random.key(2), x.shape)
  out = []
  for pool in (ops.plain_max_pool_2x2, cpu.max_pool_2x2):
    loss = lambda x, pool=pool: jnp.sum(jnp.sin(pool(x)) * jnp.arange(3.0))
    out.append((pool(x), jax.grad(loss)(x), jax.jvp(jax.grad(loss), (x,), (v,))[1]))
  return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(*out))


# ---------------------------------------------------------------------------------------------------
# Timing


def round_robin(runners: dict[str, Callable[[], None]], repeats: int, warmup: int = 2) -> dict[str, float]:
  """Median seconds per call of each runner, timed in turn for `repeats` rounds."""
  for run in runners.values():
    for _ in range(warmup):
      run()
  times = {key: [] for key in runners}
  for _ in range(repeats):
    for key, run in runners.items():
      start = time.perf_counter()
      run()
      times[key].append(time.perf_counter() - start)
  return {key: statistics.median(t) for key, t in times.items()}


def synthetic_batch(name: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, *SHAPES[name]), dtype=np.float32)
  return images, rng.integers(0, NUM_CLASSES, batch).astype(np.int32)


def bench_model(name: str, args, jax_variants: dict[str, tuple], with_torch: bool = True) -> dict:
  """Times the JAX variants {label: (compiler options, library layers[, oneDNN convolutions])} and the
  twins."""
  images, labels = synthetic_batch(name, args.batch)
  runners: dict[str, Callable[[], None]] = {"matmul": MatmulRunner()}
  flops = None
  for label, (options, library, *onednn) in jax_variants.items():
    runner = JaxRunner(name, images, labels, options, library_layers=library, onednn=all(onednn))
    flops = flops or runner.flops
    runners[label] = runner
  if with_torch:
    runners["torch"] = TorchRunner(name, images, labels)
    runners["torch channels_last"] = TorchRunner(name, images, labels, channels_last=True)
  seconds = round_robin(runners, args.repeats)
  return {"seconds": seconds, "flops": flops, "matmul_flops": runners["matmul"].flops}


def report(name: str, result: dict, batch: int) -> None:
  seconds, flops = result["seconds"], result["flops"]
  matmul = result["matmul_flops"] / seconds["matmul"]
  torch_best = min((s for k, s in seconds.items() if k.startswith("torch")), default=None)
  print(f"\n{name}: batch {batch}, {flops / 1e9:.2f} GFLOP per train step (XLA cost analysis); "
        f"float32 {MATMUL_SIZE}x{MATMUL_SIZE} matmul in the same rounds: {matmul / 1e9:.0f} GFLOP/s")
  width = max(len(key) for key in seconds)
  print(f"  {'contender':{width}s} {'ms/step':>8s} {'img/s':>7s} {'GFLOP/s':>8s} {'of matmul':>9s} "
        f"{'vs best torch':>13s}")
  for key, s in seconds.items():
    if key == "matmul":
      continue
    ratio = f"{torch_best / s:12.2f}x" if torch_best else ""
    print(f"  {key:{width}s} {s * 1e3:8.1f} {batch / s:7.0f} {flops / s / 1e9:8.1f} "
          f"{flops / s / matmul:9.2f} {ratio:>13s}")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--models", default="simple_cnn,resnet20")
  parser.add_argument("--check_xla_flags", action="store_true",
                      help="also re-run the JAX steps in a subprocess with the flag set in XLA_FLAGS")
  parser.add_argument("--jax_only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  names = args.models.split(",")
  allocator = host_allocator()

  if args.jax_only:  # the subprocess of --check_xla_flags: JAX under the XLA_FLAGS it was given
    for name in names:
      label = f"jax, XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}'"
      report(name, bench_model(name, args, {label: ({}, False)}, with_torch=False), args.batch)
    return

  import torch

  print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; host malloc: {allocator}; "
        f"library convolutions: {convolutions()}")
  for name in names:
    count, diff = check_twin(name, synthetic_batch(name, args.batch)[0])
    print(f"{name}: {count:,} parameters in both; max |logit difference| of the twins on our weights: "
          f"{diff:.1e}")
  print(f"max |difference| of the two 2x2 max-pools (values, gradients, HVPs): {check_pool_gradient():.1e}")
  for name in names:
    variants = {"jax (default XLA flags)": ({}, False), "jax, ynn conv off": (YNN_CONV_OFF, False)}
    variants[LIBRARY_LABEL[name] + ", xla convs"] = (YNN_CONV_OFF, True, False)
    if native.why_not() is None:
      variants[LIBRARY_LABEL[name]] = (YNN_CONV_OFF, True)
    report(name, bench_model(name, args, variants), args.batch)
  print(f"\nynn conv off = {YNN_CONV_OFF_FLAGS}; pool grad = backend.cpu.max_pool_2x2 with its "
        "elementwise JVP rule; materialize = backend.cpu.materialize on each ResNet block output; taps = "
        "the first convolution as a sum of shifted products (backend.cpu.conv_router) (the other lines: "
        "research.core.ops' plain pool, no materialize, XLA's convolutions; same values)")
  print(f"backend verdicts so far: {backend.describe()['onednn_verdicts']}")
  if args.check_xla_flags:
    cmd = [sys.executable, "-m", "benchmarks.models", "--jax_only", "--models", args.models,
           "--repeats", str(args.repeats), "--batch", str(args.batch)]
    for flags in ("", YNN_CONV_OFF_FLAGS):
      print(f"\n--- subprocess with XLA_FLAGS='{flags}' (JAX only; its own matmul reference)")
      subprocess.run(cmd, env=dict(os.environ, XLA_FLAGS=flags), check=True)


if __name__ == "__main__":
  main()
