"""Model zoo: published parameter counts, shapes, gradients, seeds, BatchNorm modes, knobs, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research import models
from research.core.errors import UserError


def _abstract(name, shape=(32, 32, 3), num_classes=10, **knobs):
  num_classes = 1000 if shape == (224, 224, 3) else num_classes
  return nnx.eval_shape(lambda: models.create(name, num_classes=num_classes, input_shape=shape,
                                              rngs=nnx.Rngs(0), **knobs))


@pytest.mark.parametrize("name, knobs, shape, expected, tolerance, source", [
    ("lenet5", {}, (32, 32, 1), 61_706, 0, "LeCun et al. 1998 layout; 61,706 for 10 classes"),
    ("resnet20", {}, (32, 32, 3), 0.27e6, 0.005e6, "He et al. 2016, Table 6"),
    ("resnet32", {}, (32, 32, 3), 0.46e6, 0.005e6, "He et al. 2016, Table 6"),
    ("resnet44", {}, (32, 32, 3), 0.66e6, 0.005e6, "He et al. 2016, Table 6"),
    ("resnet56", {}, (32, 32, 3), 0.85e6, 0.005e6, "He et al. 2016, Table 6"),
    ("resnet110", {}, (32, 32, 3), 1.7e6, 0.05e6, "He et al. 2016, Table 6"),
    ("wide_resnet", {"depth": 28, "widen_factor": 10}, (32, 32, 3), 36.5e6, 0.05e6,
     "Zagoruyko & Komodakis 2016, Table 1"),
    ("wide_resnet", {"depth": 16, "widen_factor": 4}, (32, 32, 3), 2.7e6, 0.05e6,
     "Zagoruyko & Komodakis 2016, Table 1"),
    ("preact_resnet18", {}, (32, 32, 3), 11.2e6, 0.05e6, "He et al. 2016b, CIFAR variant"),
    ("vgg16", {}, (32, 32, 3), 14.7e6, 0.05e6,
     "the common CIFAR VGG-16-BN with one linear classifier (Simonyan & Zisserman config D): 14.7M"),
    ("alexnet", {}, (28, 28, 3), 1_387_786, 0, "Zhang et al. 2017, Table 1 (small Alexnet)"),
    ("convnext", {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), "patch_size": 4}, (224, 224, 3),
     28.6e6, 0.05e6, "Liu et al. 2022, ConvNeXt-T, 1000 classes"),
    ("vit", {"patch_size": 16, "dim": 768, "depth": 12, "heads": 12}, (224, 224, 3), 86.6e6, 0.05e6,
     "ViT-B/16, Dosovitskiy et al. 2021 Table 1 (86M); 86,567,656 in the reference code"),
])
def test_published_parameter_counts(name, knobs, shape, expected, tolerance, source):
  count = models.num_params(_abstract(name, shape, **knobs))
  assert abs(count - expected) <= tolerance, f"{name}: {count} vs {expected} ({source})"


SMALL = {  # Small versions that keep each family's structure, so that tests compile quickly.
    "mlp": {"width": 32},
    "lenet5": {},
    "simple_cnn": {"channels": 8, "dense": 16},
    "resnet20": {"width": 0.25},
    "resnet32": {"width": 0.25},
    "resnet44": {"width": 0.25},
    "resnet56": {"width": 0.25},
    "resnet110": {"width": 0.25},
    "preact_resnet18": {"width": 0.125},
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    **{f"vgg{d}": {"width": 0.0625} for d in (11, 13, 16, 19)},
    "alexnet": {"channels": 8, "dense": (16, 8)},
    "convnext": {"depths": (1, 1, 1, 1), "dims": (8, 8, 16, 16), "drop_path": 0.2},
    "vit": {"dim": 12, "depth": 2, "heads": 2},
}


def test_every_model_is_in_the_small_table():
  assert sorted(SMALL) == models.available()


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_output_shapes(name, shape):
  model = _abstract(name, shape, num_classes=7, **SMALL[name])
  graphdef, params, rest = models.split(model)
  out = jax.eval_shape(lambda p, r, x: models.apply_fn(graphdef, r)(p, x), params, rest,
                       jax.ShapeDtypeStruct((3,) + shape, jnp.float32))
  assert out.shape == (3, 7)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "simple_cnn", "alexnet", "resnet20",
                                  "preact_resnet18", "wide_resnet", "vgg11", "convnext", "vit"])
def test_finite_gradients_and_seeded_init(name):
  make = lambda seed: models.create(name, num_classes=10, input_shape=(28, 28, 1),
                                    rngs=nnx.Rngs(seed), **SMALL[name])
  model = make(0)
  _, params, _ = models.split(model)
  _, same, _ = models.split(make(0))
  _, other, _ = models.split(make(1))
  jax.tree.map(np.testing.assert_array_equal, params, same)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other)))
  graphdef, params, rest = models.split(model)
  apply = models.apply_fn(graphdef, rest, bn_mode="batch")
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  labels = jnp.arange(4)

  def loss(p):
    logits = apply(p, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  grads = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_batchnorm_modes():
  model = models.create("resnet20", num_classes=10, input_shape=(8, 8, 3), rngs=nnx.Rngs(0),
                        width=0.25)
  graphdef, params, rest = models.split(model)
  # Make the running statistics differ from a fresh batch's statistics.
  rest = jax.tree.map(lambda v: v + 0.3 if v.dtype == jnp.float32 else v, rest)
  stats = lambda r: [np.array(v) for v in jax.tree.leaves(r) if jnp.issubdtype(v.dtype, jnp.floating)]
  before = stats(rest)
  x = jax.random.normal(jax.random.key(1), (6, 8, 8, 3))
  evaluate = jax.jit(models.apply_fn(graphdef, rest, bn_mode="eval"))
  batch = jax.jit(models.apply_fn(graphdef, rest, bn_mode="batch"))
  # eval: each example's output is independent of the rest of the batch.
  np.testing.assert_allclose(evaluate(params, x)[:2], evaluate(params, x[:2]), rtol=1e-5, atol=1e-5)
  # batch: outputs depend on the batch, and the running statistics are never written back.
  assert not np.allclose(batch(params, x)[:2], batch(params, x[:2]), atol=1e-4)
  assert not np.allclose(batch(params, x), evaluate(params, x), atol=1e-4)
  for a, b in zip(before, stats(rest), strict=True):
    np.testing.assert_array_equal(a, b)


def _shapes(model):
  return jax.tree.map(lambda v: v.shape, nnx.state(model, nnx.Param))


def test_knobs_change_what_they_say():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))

  def run(**knobs):
    m = models.create("resnet20", num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0),
                      **({"width": 0.25} | knobs))
    g, p, r = models.split(m)
    return m, models.apply_fn(g, r)(p, x)

  base, out = run()
  noskip, out_noskip = run(skip=False)
  assert _shapes(base) == _shapes(noskip)  # the no-skip twin has the same parameters
  assert not np.allclose(out, out_noskip)
  tanh, out_tanh = run(activation="tanh")
  assert _shapes(base) == _shapes(tanh) and not np.allclose(out, out_tanh)
  kinds = lambda m: {type(mod).__name__ for _, mod in m.iter_modules()}
  assert "BatchNorm" in kinds(base)
  assert {"LayerNorm"} <= kinds(run(norm="layer")[0]) and "BatchNorm" not in kinds(run(norm="layer")[0])
  assert "GroupNorm" in kinds(run(norm="group")[0])
  none = run(norm="none")[0]
  assert not {"BatchNorm", "LayerNorm", "GroupNorm"} & kinds(none)
  zero = run(zero_init_last_norm=True)[0]
  np.testing.assert_array_equal(zero.blocks[0].norm2.scale[...], 0.0)
  assert models.num_params(run(width=0.5)[0]) > models.num_params(base)
  momentum = models.create("resnet20", num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0),
                           bn_momentum=0.5, bn_epsilon=1e-3)
  assert momentum.stem_norm.momentum == 0.5 and momentum.stem_norm.epsilon == 1e-3
  bf16 = models.create("simple_cnn", num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0),
                       dtype=jnp.bfloat16, **SMALL["simple_cnn"])
  g, p, r = models.split(bf16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p))
  assert models.apply_fn(g, r)(p, x).dtype == jnp.bfloat16


def test_convnext_and_vit_knobs():
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  make = lambda name, **k: models.create(name, num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0),
                                         **(SMALL[name] | k))
  base, noskip = make("convnext"), make("convnext", skip=False)
  assert _shapes(base) == _shapes(noskip)
  np.testing.assert_allclose(base.stages[0][0].gamma[...], 1e-6)  # layer scale starts at its init
  # Stochastic depth: rates rise linearly to drop_path; active only when dropout is switched on.
  assert [s[0].drop_path.rate for s in base.stages] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3, 0.2])
  scaled = make("convnext", layer_scale_init=1.0)  # so that a dropped branch shows in the output
  g, p, r = models.split(scaled)
  np.testing.assert_array_equal(models.apply_fn(g, r)(p, x), models.apply_fn(g, r)(p, x))
  scaled.set_attributes(deterministic=False)
  keyed = [scaled(x) for _ in range(2)]
  assert not np.allclose(keyed[0], keyed[1])
  vit_cls, vit_mean = make("vit"), make("vit", pool="mean")
  assert vit_cls.cls is not None and vit_mean.cls is None
  assert vit_cls.pos.shape == (1, 4 * 4 + 1, 12) and vit_mean.pos.shape == (1, 16, 12)
  assert _shapes(make("vit", skip=False)) == _shapes(vit_cls)


def test_initializers():
  def kernel(name="mlp", **k):
    m = models.create(name, num_classes=10, input_shape=(16, 16, 3), rngs=nnx.Rngs(0),
                      **({"width": 256} if name == "mlp" else SMALL[name]) | k)
    return m, m.hidden[1].kernel[...] if name == "mlp" else None

  # Standard deviations against the formulas, on a (256, 256) kernel: fan_in = fan_out = 256.
  stds = {init: float(jnp.std(kernel(initializer=init)[1]))
          for init in ("lecun_normal", "he_normal", "he_uniform", "xavier_uniform", "torch")}
  np.testing.assert_allclose(stds["lecun_normal"], (1 / 256) ** 0.5, rtol=0.03)
  np.testing.assert_allclose(stds["he_normal"], (2 / 256) ** 0.5, rtol=0.03)
  np.testing.assert_allclose(stds["he_uniform"], (2 / 256) ** 0.5, rtol=0.03)
  np.testing.assert_allclose(stds["xavier_uniform"], (2 / 512) ** 0.5, rtol=0.03)
  np.testing.assert_allclose(stds["torch"], (1 / 256 / 3) ** 0.5, rtol=0.03)
  np.testing.assert_array_equal(kernel(initializer="he_normal")[1], kernel(initializer="he_normal")[1])
  m, _ = kernel(initializer="torch")
  assert float(jnp.abs(m.head.bias[...]).max()) > 0  # PyTorch also draws biases
  _, w = kernel(initializer="orthogonal")
  np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), atol=1e-5)
  assert models.knobs("resnet20")["initializer"] == "he_normal"
  m, _ = kernel("resnet20", zero_init_last_norm=True, initializer="xavier_normal")
  np.testing.assert_array_equal(m.blocks[0].norm2.scale[...], 0.0)  # norms keep their own init


def test_max_pool_derivatives_equal_plain_autodiff():
  """The backend's pooling (a custom JVP rule) against autodiff of the plain reshape-and-max
  (`core.ops`' default), ties and odd sizes."""
  from research.backend import cpu
  from research.core import ops

  plain = lambda x: x[:, :4, :4].reshape(2, 2, 2, 2, 2, 3).max(axis=(2, 4))
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 5, 5, 3)))  # zeros give tied maxima
  v = jax.random.normal(jax.random.key(1), x.shape)
  w = jax.random.normal(jax.random.key(2), (2, 2, 2, 3))
  np.testing.assert_array_equal(cpu.max_pool_2x2(x), plain(x))
  for pool_fn in (cpu.max_pool_2x2, plain, ops.plain_max_pool_2x2):
    assert pool_fn(x).shape == (2, 2, 2, 3)
  f = lambda pool_fn: lambda x: jnp.sum(w * jnp.tanh(pool_fn(x)))
  np.testing.assert_allclose(jax.grad(f(cpu.max_pool_2x2))(x), jax.grad(f(plain))(x), atol=1e-6)
  np.testing.assert_array_equal(jax.grad(f(ops.plain_max_pool_2x2))(x), jax.grad(f(plain))(x))
  hvp = lambda g: jax.jvp(jax.grad(g), (x,), (v,))[1]
  np.testing.assert_allclose(hvp(f(cpu.max_pool_2x2)), hvp(f(plain)), atol=1e-6)


def test_max_pool_gradient_behind_the_shifted_products_layer_is_that_of_plain_pooling():
  """Regression: a first layer of shifted products, ReLU and the backend's pooling, jitted with the input
  statistics as arguments (as the train step takes them). Its ties, once counted on strided slices,
  were miscompiled by XLA:CPU there (windows with no tie: NaN gradients); the gradient must equal that
  of the plain reshape-and-max."""
  from research.backend import cpu
  from research.data import transforms

  conv = cpu.conv_router(taps=True, onednn=False)
  plain = lambda h: h.reshape(128, 14, 2, 14, 2, 32).max(axis=(2, 4))
  images = jax.random.randint(jax.random.key(0), (128, 28, 28, 1), 0, 256).astype(jnp.uint8)
  params = (0.3 * jax.random.normal(jax.random.key(1), (3, 3, 1, 32)),
            0.1 * jax.random.normal(jax.random.key(2), (32,)))
  mean, std = np.array([0.286], np.float32), np.array([0.353], np.float32)

  def loss(params, images, mean, std, pool):
    x = transforms.normalize(images, mean, std, "standardize")
    h = conv(x, params[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + params[1])
    return jnp.sum(jnp.tanh(pool(h)))

  ours, reference = (jax.jit(jax.grad(functools.partial(loss, pool=pool)))(params, images, mean, std)
                     for pool in (cpu.max_pool_2x2, plain))
  for a, b in zip(ours, reference, strict=True):
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.usefixtures("float64")
def test_materialize_is_an_exact_identity_for_values_and_derivatives():
  """The backend's materialize (an identity matmul on CPU) changes nothing: values bit for bit in float32,
  bfloat16 and float64; a ResNet's gradients and forward-over-reverse products (float64) equal those
  without it (the plain residual stream)."""
  from unittest import mock

  from research import backend
  from research.backend import cpu
  from research.models import functional

  for dtype in (jnp.float32, jnp.bfloat16, jnp.float64):
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 5), dtype) * 100
    np.testing.assert_array_equal(jax.jit(cpu.materialize)(x), x)
  v = jax.random.normal(jax.random.key(1), x.shape, x.dtype)
  np.testing.assert_array_equal(jax.jvp(cpu.materialize, (x,), (v,))[1], v)
  np.testing.assert_array_equal(jax.vjp(cpu.materialize, x)[1](v)[0], v)

  model = models.create("resnet20", num_classes=3, input_shape=(8, 8, 3), rngs=nnx.Rngs(0), width=0.25)
  graphdef, params, rest = functional.split(model)
  to64 = lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a
  params, rest = jax.tree.map(to64, (params, rest))
  images = jax.random.normal(jax.random.key(2), (4, 8, 8, 3), jnp.float64)
  loss = lambda p: jnp.sum(jnp.sin(functional.apply_fn(graphdef, rest, bn_mode="batch")(p, images)))
  tangent = jax.tree.map(jnp.ones_like, params)
  derivatives = lambda p: (jax.grad(loss)(p), jax.jvp(jax.grad(loss), (p,), (tangent,))[1])
  plain = jax.jit(lambda p: derivatives(p))(params)  # a new function each time: traced anew
  with mock.patch.object(cpu, "materialize", wraps=cpu.materialize) as spy, \
       backend.installed(taps=False, onednn=False, pool=False):
    ours = jax.jit(lambda p: derivatives(p))(params)
  assert spy.call_count == 2 * 10  # two traces (gradient, product) x (the stem and 9 block outputs)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ours)):  # two programs: rounding only
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_derivatives(conv, x, k, v, padding):
  """Values, gradients in (x, k) and a forward-over-reverse product in k of a loss through `conv`."""
  apply = lambda x, k: conv(x, k, (1, 1), padding, dimension_numbers=_NHWC)
  loss = lambda x, k: jnp.sum(jnp.tanh(apply(x, k)) ** 2)
  return apply(x, k), jax.grad(loss, (0, 1))(x, k), jax.jvp(jax.grad(lambda k: loss(x, k)), (k,), (v,))[1]


@pytest.mark.usefixtures("float64")
def test_few_tap_convolution_equals_the_native_one():
  """The backend's convolution, a sum of shifted products for a first layer on CPU, equals
  lax.conv_general_dilated (float64): values, gradients in both arguments, forward-over-reverse products;
  SAME, VALID and explicit padding; and the models send exactly their few-tap convolutions through it."""
  from unittest import mock

  from research import backend
  from research.backend import cpu
  from research.models import functional

  taps_conv = cpu.conv_router(taps=True, onednn=False)

  cases = (((2, 7, 6, 1), (3, 3, 1, 4), "SAME"), ((2, 9, 9, 3), (3, 3, 3, 5), "SAME"),
           ((2, 12, 12, 1), (5, 5, 1, 3), "VALID"), ((1, 6, 5, 2), (2, 3, 2, 3), "SAME"),
           ((1, 5, 6, 1), (3, 2, 1, 2), ((1, 0), (2, 1))))
  for x_shape, k_shape, padding in cases:
    x, k, v = (jax.random.normal(jax.random.key(i), s, jnp.float64)
               for i, s in enumerate((x_shape, k_shape, k_shape)))
    derivatives = jax.jit(_conv_derivatives, static_argnums=(0, 4))
    native = derivatives(jax.lax.conv_general_dilated, x, k, v, padding)
    with mock.patch.object(cpu, "_taps_conv", wraps=cpu._taps_conv) as spy:
      ours = derivatives(taps_conv, x, k, v, padding)
    assert spy.call_count >= 3  # not the native path
    for a, b in zip(jax.tree.leaves(native), jax.tree.leaves(ours), strict=True):
      np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
  x, k = jnp.ones((2, 5, 5, 1), jnp.bfloat16), jnp.ones((3, 3, 1, 2), jnp.bfloat16)
  assert taps_conv(x, k, (1, 1), "SAME", dimension_numbers=_NHWC).dtype == jnp.bfloat16

  shapes = {"simple_cnn": (28, 28, 1), "lenet5": (28, 28, 1), "resnet20": (8, 8, 3), "vgg11": (32, 32, 3)}
  for name, shape in shapes.items():  # only the first layer is few-tap (3x3x1, 5x5x1, 3x3x3)
    knobs = {} if name == "lenet5" else {"width": 0.25}
    graphdef, params, rest = functional.split(_abstract(name, shape, **knobs))
    with mock.patch.object(cpu, "_taps_conv", wraps=cpu._taps_conv) as spy, \
         backend.installed(onednn=False):  # traced, not run
      apply = lambda p, r, x, g=graphdef: functional.apply_fn(g, r, bn_mode="eval")(p, x)
      jax.eval_shape(apply, params, rest, jnp.zeros((1, *shape)))
    assert spy.call_count == 1, name


@pytest.mark.parametrize("call, message", [
    (lambda: models.create("resnet21", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0)),
     "unknown model 'resnet21'; valid choices: alexnet, convnext, lenet5, mlp"),
    (lambda: models.create("resnet20", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0),
                           nrom="batch"), "unknown knob of resnet20 'nrom'; valid choices:"),
    (lambda: models.create("resnet20", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0),
                           norm="instance"), "unknown norm 'instance'; valid choices: none, batch"),
    (lambda: models.create("lenet5", num_classes=10, input_shape=(64, 64, 1), rngs=nnx.Rngs(0)),
     "lenet5 takes square inputs of size 28 or 32"),
    (lambda: models.create("vgg11", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0),
                           depth=19), "unknown knob of vgg11 'depth'"),
    (lambda: models.create("mlp", num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0),
                           activation="swish"), "unknown activation 'swish'"),
    (lambda: models.create("mlp", num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0),
                           initializer="kaiming"), "unknown initializer 'kaiming'; valid choices: lecun"),
    (lambda: models.create("mlp", num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0),
                           dtype="bf16"), "unknown dtype 'bf16'; valid choices: float32, bfloat16"),
    (lambda: models.create("vit", num_classes=10, input_shape=(30, 30, 3), rngs=nnx.Rngs(0)),
     "vit: input (30, 30, 3) is not a multiple of patch_size 4"),
])
def test_bad_input_is_one_line(call, message):
  with pytest.raises(UserError) as info:
    call()
  assert message in str(info.value) and "\n" not in str(info.value)
