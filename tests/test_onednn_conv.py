"""research.backend.native: oneDNN's convolutions against XLA's, where the library uses them, and the
verdicts that route a signature oneDNN gets wrong to XLA."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research import backend, models
from research.backend import cpu, native
from research.backend.native import onednn_conv, verdicts
from research.models import functional

ROOT = Path(__file__).resolve().parents[1]
built = pytest.mark.skipif(native.why_not() is not None or jax.default_backend() != "cpu",
                           reason=f"oneDNN convolutions off: {native.why_not()}")



@pytest.fixture(autouse=True)
def verdict_dir(tmp_path, monkeypatch):
  """Each test starts with an empty verdict cache of its own."""
  monkeypatch.setenv(verdicts.ENV, str(tmp_path / "verdicts"))
  monkeypatch.setattr(verdicts, "_memory", {})
  monkeypatch.setattr(verdicts, "STATS", verdicts.Stats())
  return tmp_path / "verdicts"


# (batch, H, W, Cin, Cout, kernel, strides, pads): 'SAME' at stride 1 and 2 (XLA's asymmetric padding
# on even sizes), 'VALID' 5x5, a 1x1, odd channel counts, a rectangular image with uneven padding, and
# padding wider than the kernel (stride-1 forward passes run as a backward-data pass unless that), a
# rectangular kernel with uneven padding.
CASES = [(2, 8, 8, 4, 6, (3, 3), (1, 1), ((1, 1), (1, 1))),
         (2, 8, 8, 5, 3, (3, 3), (2, 2), ((0, 1), (0, 1))),
         (3, 9, 9, 3, 8, (5, 5), (1, 1), ((0, 0), (0, 0))),
         (2, 6, 6, 8, 16, (1, 1), (1, 1), ((0, 0), (0, 0))),
         (2, 7, 5, 2, 3, (3, 3), (2, 1), ((1, 0), (2, 1))),
         (2, 5, 5, 3, 4, (3, 3), (1, 1), ((3, 0), (0, 2))),
         (2, 6, 7, 3, 4, (3, 5), (1, 1), ((0, 2), (1, 3)))]


def _operands(case):
  n, h, w, cin, cout, kernel, strides, pads = case
  kx, kk, ky = jax.random.split(jax.random.key(sum(case[:5])), 3)
  x = jax.random.normal(kx, (n, h, w, cin))
  k = jax.random.normal(kk, (*kernel, cin, cout))
  dy = jax.random.normal(ky, onednn_conv.reference("forward", x, k, strides=strides, pads=pads,
                                                   shape=None).shape)
  return x, k, dy, strides, pads


@built
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[1:5])) + f"_k{c[5][0]}s{c[6][0]}")
def test_each_kind_equals_xla_convolution(case):
  """forward, backward_data and backward_weights against XLA's convolution and its transposes; each
  compiled call runs twice (kernels that read memory they did not write differ between runs)."""
  x, k, dy, strides, pads = _operands(case)
  for kind, a, b, shape in (("forward", x, k, None), ("backward_data", dy, k, x.shape),
                            ("backward_weights", x, dy, k.shape)):
    params = dict(kind=kind, strides=strides, pads=pads, shape=shape)
    want = np.asarray(jax.jit(functools.partial(onednn_conv.reference, kind, strides=strides, pads=pads,
                                                shape=shape))(a, b))
    compiled = jax.jit(functools.partial(onednn_conv.primitive().bind, **params)).lower(a, b).compile()
    assert "research_onednn_conv" in compiled.as_text()
    for _ in range(2):
      np.testing.assert_allclose(compiled(a, b), want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                 err_msg=kind)


@built
def test_derivatives_equal_xla_convolution():
  """Gradients, forward-over-reverse Hessian products, linearize and vmap go through the primitive's
  transposes and batching rule and agree with XLA's convolution."""
  x, k, _, strides, pads = _operands(CASES[1])
  nhwc = ("NHWC", "HWIO", "NHWC")
  xla = lambda x, k: jax.lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=nhwc)
  ours = lambda x, k: onednn_conv.conv(x, k, strides, pads)
  loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)) ** 2)
  v = (jnp.cos(x), jnp.sin(k))
  grad = lambda conv: jax.jit(jax.grad(loss(conv), (0, 1)))(x, k)
  hvp = lambda conv: jax.jit(lambda x, k: jax.jvp(jax.grad(loss(conv), (0, 1)), (x, k), v)[1])(x, k)
  linear = lambda conv: jax.linearize(jax.grad(loss(conv), (0, 1)), x, k)[1](*v)
  for fn in (grad, hvp, linear):
    for got, want in zip(fn(ours), fn(xla)):
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())
  xs = jnp.stack([x, 2 * x, -x])  # batched activations fold into the batch; batched kernels use XLA
  np.testing.assert_allclose(jax.jit(jax.vmap(ours, (0, None)))(xs, k), jax.vmap(xla, (0, None))(xs, k),
                             rtol=1e-5, atol=1e-4)
  ks = jnp.stack([k, -k])
  np.testing.assert_allclose(jax.jit(jax.vmap(ours, (None, 0)))(x, ks), jax.vmap(xla, (None, 0))(x, ks),
                             rtol=1e-5, atol=1e-4)


@built
def test_library_layers_route_only_what_onednn_does_right():
  """The backend's convolution sends float32, ungrouped, undilated 2-D convolutions to oneDNN;
  float64, bfloat16, grouped, dilated, empty and strided 1x1 ones (oneDNN 2.6's weight gradient of a
  strided 1x1 is wrong for channel counts that are not multiples of 8) stay on XLA."""
  router = cpu.conv_router(taps=True, onednn=True)

  def uses_onednn(x, k, **kw):
    conv = lambda x, k: router(x, k, kw.pop("strides", (1, 1)), "SAME",
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)
    return "research_onednn_conv" in jax.jit(jax.grad(lambda x, k: conv(x, k).sum(), (0, 1))).lower(
        x, k).as_text()
  x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
  assert uses_onednn(x, k) and uses_onednn(x, k, strides=(2, 2))
  assert not uses_onednn(x[..., :1], k[:, :, :1])  # few taps: shifted products (cpu._taps_conv)
  assert not uses_onednn(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  assert not uses_onednn(x, k[:, :, :2], feature_group_count=2)
  assert not uses_onednn(x, k, rhs_dilation=(2, 2))
  assert not uses_onednn(x, k[:1, :1], strides=(2, 2)) and uses_onednn(x, k[:1, :1])
  assert not uses_onednn(x[:0], k)  # an empty batch
  with mock.patch.object(cpu, "_onednn_takes", lambda *args: True):
    assert not uses_onednn(x, k[:1, :1], strides=(2, 2))  # the primitive's lowering checks too
  def valid(x, k, strides):  # an empty output: oneDNN rejects it, its input gradient is not empty
    conv = lambda x, k: router(x, k, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return "research_onednn_conv" in jax.jit(jax.grad(lambda x, k: conv(x, k).sum(), (0, 1))).lower(
        x, k).as_text()
  assert not valid(x[:, :1, :1], k, (1, 1)) and not valid(x[:, :2, :2], k, (2, 2)) and valid(x, k, (2, 2))
  with mock.patch.object(jax, "default_backend", lambda: "gpu"):  # other backends: XLA's convolutions
    assert not uses_onednn(x, k)


@built
def test_resnet_gradients_equal_with_xla_convolutions():
  """A small ResNet (strided blocks, BatchNorm in batch mode): loss and gradients with oneDNN's
  convolutions equal those with XLA's."""
  model = models.create("resnet20", num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0), width=0.5)
  graphdef, params, rest = functional.split(model)
  apply = functional.apply_fn(graphdef, rest, bn_mode="batch")
  images = jax.random.normal(jax.random.key(1), (8, 16, 16, 3))
  labels = jnp.arange(8) % 10

  def loss(params):
    return -jnp.mean(jax.nn.log_softmax(apply(params, images))[jnp.arange(8), labels])

  def run(onednn: bool):
    lowered = jax.jit(jax.value_and_grad(loss)).lower(params)
    assert ("research_onednn_conv" in lowered.as_text()) == onednn
    return lowered.compile()(params)

  with backend.installed():
    ours = run(True)
  want = run(False)  # the plain implementations: XLA's convolutions
  for got, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(expected).max())))


MULTI_DEVICE = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from research.backend.native import onednn_conv
x = jax.random.normal(jax.random.key(0), (4, 6, 6, 3)); k = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
conv = jax.jit(lambda x, k: onednn_conv.conv(x, k, (1, 1), ((1, 1), (1, 1))))
one = conv(x, k)
mesh = Mesh(np.array(jax.devices()), ("data",))
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
text = conv.lower(xs, k).as_text()
print(jax.device_count(), "research_onednn_conv" in text, float(np.abs(conv(xs, k) - one).max()))
"""


@built
def test_several_devices_use_xla_convolution():
  """XLA cannot partition a custom call: a computation over several devices lowers to XLA's convolution
  (same values), one device to oneDNN's."""
  env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", MULTI_DEVICE], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  assert out[:2] == ["2", "False"] and float(out[2]) < 1e-5


def test_conv_choice_and_info():
  env = {k: v for k, v in os.environ.items() if k != native.CONV_ENV}
  run = lambda value: subprocess.run([sys.executable, "-m", "research.backend.native", "info"], cwd=ROOT,
                                     text=True, env=env | {native.CONV_ENV: value}, capture_output=True,
                                     timeout=60)
  off = run("xla")
  assert off.returncode == 0 and off.stdout.strip() == "oneDNN convolutions: off: RESEARCH_CONV=xla"
  bad = run("mkl")
  assert bad.returncode == 2
  assert bad.stderr.strip() == "error: unknown $RESEARCH_CONV 'mkl'; valid choices: onednn, xla"
  with mock.patch.dict(os.environ, {native.CONV_ENV: "xla"}):
    assert native.why_not() == "RESEARCH_CONV=xla"


def _train_step_and_eval(name, shape, batch, eval_batch):
  """Lowers a model's gradient at `batch` and its forward pass at `eval_batch` (BatchNorm in batch mode)."""
  model = models.create(name, num_classes=10, input_shape=shape, rngs=nnx.Rngs(0))
  graphdef, params, rest = functional.split(model)
  apply = functional.apply_fn(graphdef, rest, bn_mode="batch")
  loss = lambda p, x: jnp.mean(apply(p, x) ** 2)
  texts = [jax.jit(jax.grad(loss)).lower(params, jnp.zeros((batch, *shape))).as_text(),
           jax.jit(apply).lower(params, jnp.zeros((eval_batch, *shape))).as_text()]
  return all("research_onednn_conv" in t for t in texts)


@built
def test_zoo_signatures_pass_their_verdicts(verdict_dir):
  """Every convolution signature of simple_cnn and resnet20 at their default inputs and the quick
  configs' batch sizes (train 128: all three kinds; eval 1000: forward) is checked once against XLA
  and passes on this machine; a second lowering runs no comparison."""
  with backend.installed():
    for name, shape in (("simple_cnn", (28, 28, 1)), ("resnet20", (32, 32, 3))):
      assert _train_step_and_eval(name, shape, 128, 1000), name
  stats = verdicts.STATS.as_dict()
  print(f"verdicts: {stats['checks']} checks in {stats['check_seconds']:.1f} s; refused: {stats['refused']}")
  assert stats["checks"] == len(list(verdict_dir.glob("*/*.json"))) >= 3 + 18 and stats["refused"] == []
  kinds = {json.loads(f.read_text())["signature"].split()[0] for f in verdict_dir.glob("*/*.json")}
  assert kinds == {"forward", "backward_data", "backward_weights"}


@built
def test_a_wrong_kernel_is_refused_and_routed_to_xla(monkeypatch):
  """A corrupted oneDNN result (one element off by 1% of the output's scale) is refused with a one-line
  warning; that signature lowers to XLA's convolution, and the refusal is cached."""
  real = onednn_conv.run_onednn

  def corrupted(kind, a, b, strides, pads, shape):
    out = np.array(real(kind, a, b, strides, pads, shape))
    out.reshape(-1)[7] += 0.01 * np.abs(out).max()
    return out

  monkeypatch.setattr(onednn_conv, "run_onednn", corrupted)
  x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
  conv = lambda x, k: onednn_conv.conv(x, k, (1, 1), ((1, 1), (1, 1)))
  with pytest.warns(RuntimeWarning, match="oneDNN convolution refused, XLA's used: forward") as caught:
    assert "research_onednn_conv" not in jax.jit(conv).lower(x, k).as_text()
  assert len(caught) == 1 and "\n" not in str(caught[0].message)
  assert verdicts.STATS.refused == [verdicts.signature("forward", x.shape, k.shape, (1, 1), ((1, 1), (1, 1)))]
  monkeypatch.setattr(onednn_conv, "run_onednn", real)
  np.testing.assert_allclose(jax.jit(conv)(x, k), jax.lax.conv_general_dilated(
      x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")), rtol=1e-6)
  monkeypatch.setattr(verdicts, "_memory", {})  # a new process: the refusal is read from disk
  assert "research_onednn_conv" not in jax.jit(lambda x, k: conv(x, k) + 0).lower(x, k).as_text()


@built
def test_verdicts_are_reused_across_processes(monkeypatch):
  """The second lowering of the same signatures (memory cleared, as in a new process) reads the stored
  verdicts and runs no comparison; another machine key (CPU, oneDNN or kernels) checks anew."""
  x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
  loss = lambda x, k: jnp.sin(onednn_conv.conv(x, k, (2, 2), ((0, 1), (0, 1)))).sum()
  grad = lambda: jax.jit(jax.grad(loss, (0, 1))).lower(x, k).as_text()
  assert "research_onednn_conv" in grad() and verdicts.STATS.checks == 3
  monkeypatch.setattr(verdicts, "_memory", {})
  monkeypatch.setattr(verdicts, "compare", mock.Mock(side_effect=AssertionError("compared again")))
  assert "research_onednn_conv" in grad() and verdicts.STATS.checks == 3 and verdicts.STATS.hits == 3
  monkeypatch.setattr(verdicts, "_memory", {})
  monkeypatch.setattr(verdicts, "cpu_description", lambda: "another CPU")
  verdicts.machine_key.cache_clear()
  try:
    with pytest.raises(AssertionError, match="compared again"):
      grad()
  finally:
    verdicts.machine_key.cache_clear()


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI installs g++ and libdnnl-dev: checked there")
def test_ci_built_the_kernels():
  assert native.why_not() is None and native.onednn_version()
