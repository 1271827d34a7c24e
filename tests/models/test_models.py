"""cnnjax.models: the registry, every zoo model's build, output and parameter count
(against published figures and independent counts), train/eval modes, conv swaps.

The ImageNet nets are only evaluated abstractly (``nnx.eval_shape``). Real forward
passes use parameters filled from NumPy (default initialisers compile per shape,
seconds each on CPU, and are covered in test_nn.py).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

from cnnjax import models
from cnnjax import nn as cnn
from cnnjax.models.builder import LayerBuilder

NAMES = (
    "linear",
    "mlp",
    "seed-cnn",
    "lenet5",
    "alexnet",
    "zfnet",
    "vgg11",
    "vgg11-lrn",
    "vgg13",
    "vgg16",
    "vgg19",
    "nin",
    "googlenet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "fastnet",
    "p4-cnn",
)
CONV_KINDS = (cnn.Conv, cnn.TiledConv, cnn.LocallyConnected)


@functools.cache
def _abstract(name, **options):
  return models.abstract(name, **options)


def _param_count(model) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _concrete(model, seed=0):
  """A concrete copy of an abstract model, its parameters drawn with NumPy."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed, impl="rbg")  # cheaper to compile on CPU than threefry
    if jnp.issubdtype(leaf.dtype, jnp.integer):
      return np.zeros(leaf.shape, leaf.dtype)
    if "['scale']" in name or "['var']" in name:
      return np.ones(leaf.shape, leaf.dtype)
    if "['kernel']" in name:
      fan_in = math.prod(leaf.shape[:-1]) if len(leaf.shape) <= 5 else math.prod(leaf.shape[-4:-1])
      return (rng.standard_normal(leaf.shape) * (2 / fan_in) ** 0.5).astype(leaf.dtype)
    return (rng.standard_normal(leaf.shape) * 0.1).astype(leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@nnx.jit
def _forward(model, x):
  return model(x)


def _eval_shape(model, x):
  def call(model, x):
    model.eval()
    return model(x)

  return nnx.eval_shape(call, model, x)


def _resnet_params(n: int, width: int = 16, num_classes: int = 10) -> int:
  """He et al.'s CIFAR ResNet (option A) counted by hand: convs without bias, BN scale
  and offset, the final fc."""
  total, c_in = 9 * 3 * width + 2 * width, width
  for stage in range(3):
    c = width * 2**stage
    for _ in range(n):
      total += 9 * c_in * c + 2 * c + 9 * c * c + 2 * c
      c_in = c
  return total + c_in * num_classes + num_classes


class RegistryTest(parameterized.TestCase):

  def test_names(self):
    self.assertEqual(models.names(), NAMES)
    for name in NAMES:
      cls = models.model_class(name)
      self.assertIn("num_classes", cls.__init__.__kwdefaults__)
      self.assertTrue(cls.__doc__ and len(cls.__doc__) > 100, name)
      self.assertEqual(len(models.default_input_shape(name)), 3)
    self.assertEqual(models.default_input_shape("lenet5"), (32, 32, 1))
    self.assertEqual(models.default_input_shape("vgg16"), (224, 224, 3))
    self.assertEqual(models.default_num_classes("resnet20"), 10)
    self.assertEqual(models.default_num_classes("googlenet"), 1000)

  @parameterized.named_parameters(
      dict(
          testcase_name="name", match="name", call=lambda: models.get("resnet21", rngs=nnx.Rngs(0))
      ),
      dict(
          testcase_name="fixed",
          match="config",
          call=lambda: models.get("vgg16", config="A", rngs=nnx.Rngs(0)),
      ),
      dict(
          testcase_name="conv",
          match="conv",
          call=lambda: models.abstract("seed-cnn", conv="dilated"),
      ),
      dict(
          testcase_name="groups_tiled",
          match="groups",
          call=lambda: models.abstract("alexnet", groups=2, conv="tiled"),
      ),
      dict(
          testcase_name="table_local",
          match="connections",
          call=lambda: models.abstract("lenet5", connection_table=True, conv="local"),
      ),
      dict(
          testcase_name="depth",
          match="depth",
          call=lambda: models.model_class("resnet20")(depth=21, rngs=nnx.Rngs(0)),
      ),
      dict(
          testcase_name="shortcut",
          match="shortcut",
          call=lambda: models.abstract("resnet20", shortcut="C"),
      ),
      dict(
          testcase_name="activation",
          match="activation",
          call=lambda: models.abstract("lenet5", activation="sigmoid"),
      ),
      dict(
          testcase_name="vgg_config",
          match="config",
          call=lambda: models.model_class("vgg16")(config="F", rngs=nnx.Rngs(0)),
      ),
      dict(
          testcase_name="input_shape",
          match="input_shape",
          call=lambda: models.abstract("seed-cnn", input_shape=(32, 32, 0)),
      ),
      dict(
          testcase_name="too_small",
          match="kernel",
          call=lambda: models.abstract("seed-cnn", input_shape=(8, 8, 3)),
      ),
      dict(
          testcase_name="registered",
          match="already registered",
          call=lambda: models.register("mlp", models.model_class("mlp")),
      ),
  )
  def test_errors_name_the_argument(self, call, match):
    with pytest.raises(ValueError, match=match):
      call()


class ForwardTest(parameterized.TestCase):

  @parameterized.parameters("linear", "mlp", "seed-cnn", "lenet5")
  def test_small_models_run(self, name):
    shape = models.default_input_shape(name)
    model = _concrete(_abstract(name))
    y = _forward(model, _images((2, *shape)))
    self.assertEqual(y.shape, (2, 10))
    self.assertTrue(bool(jnp.all(jnp.isfinite(y))))
    self.assertGreater(float(jnp.abs(y[0] - y[1]).max()), 1e-6)  # depends on the input
    with pytest.raises(ValueError, match="x has shape"):
      model(_images((1, 28, 28, shape[-1])))
    self.assertEqual(model(_images((0, *shape))).shape, (0, 10))  # an empty batch too

  def test_num_classes_and_input_shape(self):
    model = _abstract("seed-cnn", num_classes=7, input_shape=(48, 40, 1))
    self.assertEqual(model.fc1.in_features, 9 * 7 * 64)
    y = _eval_shape(model, jax.ShapeDtypeStruct((3, 48, 40, 1), jnp.float32))
    self.assertEqual(y.shape, (3, 7))

  def test_resnet20_batch_norm_train_and_eval(self):
    model = _concrete(_abstract("resnet20"))
    x = _images((4, 32, 32, 3))
    x_other = x.at[1:].set(_images((3, 32, 32, 3), seed=1))
    mean_before = np.asarray(model.bn.mean[...])
    train = _forward(model, x)
    # Batch statistics couple the examples and update the running averages.
    self.assertGreater(float(jnp.abs(_forward(model, x_other)[0] - train[0]).max()), 1e-4)
    self.assertGreater(float(np.abs(np.asarray(model.bn.mean[...]) - mean_before).max()), 1e-4)
    model.eval()
    self.assertTrue(model.bn.use_running_average)
    evaluated = _forward(model, x)
    self.assertEqual(evaluated.shape, (4, 10))
    np.testing.assert_allclose(_forward(model, x_other)[0], evaluated[0], rtol=1e-5, atol=1e-6)
    mean_eval = np.asarray(model.bn.mean[...])
    _forward(model, x_other)
    np.testing.assert_array_equal(model.bn.mean[...], mean_eval)

  def test_nin_dropout_train_and_eval(self):
    model = _concrete(_abstract("nin", input_shape=(8, 8, 3)))  # any size works; small is fast
    x = _images((2, 8, 8, 3))
    first, second = _forward(model, x), _forward(model, x)
    self.assertEqual(first.shape, (2, 10))
    self.assertGreater(float(jnp.abs(first - second).max()), 0.0)  # fresh dropout masks
    model.eval()
    np.testing.assert_array_equal(_forward(model, x), _forward(model, x))


PUBLISHED = [
    # (name, options, parameters): published figures, or counted by hand in the docstring.
    ("linear", {}, 32 * 32 * 3 * 10 + 10),
    ("mlp", {}, 3072 * 100 + 100 + 100 * 10 + 10),
    ("seed-cnn", {}, 2_432 + 51_264 + 160_100 + 1_010),  # the lecture's table
    ("lenet5", {}, 61_706),  # 156 + 2,416 + 48,120 + 10,164 + 850
    ("alexnet", {}, 62_378_344),
    ("alexnet", {"groups": 2}, 60_965_224),  # CaffeNet
    ("zfnet", {}, 107_627_624),
    ("vgg11", {}, 132_863_336),  # Simonyan & Zisserman, Table 2: 133M
    ("vgg11-lrn", {}, 132_863_336),
    ("vgg13", {}, 133_047_848),  # 133M
    ("vgg16", {}, 138_357_544),  # 138M
    ("vgg19", {}, 143_667_240),  # 144M
    ("nin", {}, 966_986),
    ("googlenet", {"aux_heads": True}, 6_998_552 + 3_188_840 + 3_190_888),  # bvlc_googlenet
    ("resnet20", {}, 269_722),  # He et al.: 0.27M
    ("resnet32", {}, _resnet_params(5)),  # 0.46M
    ("resnet44", {}, _resnet_params(7)),  # 0.66M
    ("resnet56", {}, _resnet_params(9)),  # 0.85M
    ("resnet110", {}, 1_727_962),  # 1.7M
    ("resnet20", {"shortcut": "B"}, 269_722 + 16 * 32 + 64 + 32 * 64 + 128),
    ("p4-cnn", {}, 2_432 + 4 * 51_200 + 64 + 64 * 100 + 100 + 1_010),  # = seed-cnn's
]


class BuildTest(parameterized.TestCase):

  @parameterized.parameters(*PUBLISHED)
  def test_builds_and_counts(self, name, options, expected):
    model = _abstract(name, **options)
    self.assertEqual(_param_count(model), expected)
    shape = models.default_input_shape(name)
    out = _eval_shape(model, jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    classes = models.default_num_classes(name)
    if options.get("aux_heads"):
      self.assertEqual([o.shape for o in out], [(2, classes)] * 3)
    else:
      self.assertEqual(out.shape, (2, classes))

  def test_resnet_counts_match_the_papers_rounded_figures(self):
    for n, published in ((3, 0.27e6), (5, 0.46e6), (7, 0.66e6), (9, 0.85e6), (18, 1.7e6)):
      self.assertAlmostEqual(_resnet_params(n) / published, 1, delta=0.02)
    self.assertEqual(_resnet_params(3), 269_722)
    self.assertEqual(_resnet_params(18), 1_727_962)

  def test_lenet5_connection_table(self):
    model = _abstract("lenet5", connection_table=True)
    table = np.asarray(model.c3.connections)
    self.assertEqual(table.shape, (6, 16))
    self.assertEqual(int(table.sum()), 60)  # C3: 60 connections, 1,516 parameters
    np.testing.assert_array_equal(table[:, 15], 1)
    np.testing.assert_array_equal(table[:, 0], [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(table[:, 12], [1, 1, 0, 1, 1, 0])
    self.assertEqual(int(table.sum()) * 25 + 16, 1_516)


CONV_MODELS = ("seed-cnn", "lenet5", "alexnet", "zfnet", "vgg11", "nin", "googlenet", "resnet20")


class ConvSwapTest(parameterized.TestCase):

  @parameterized.parameters(*CONV_MODELS)
  def test_every_conv_becomes_tiled(self, name):
    model = _abstract(name, conv="tiled", tile=2)
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, CONV_KINDS)]
    self.assertGreater(len(convs), 1)
    self.assertTrue(all(isinstance(m, cnn.TiledConv) for m in convs), name)
    self.assertTrue(all(m.kernel.shape[:2] == (2, 2) for m in convs))
    shape = models.default_input_shape(name)
    out = _eval_shape(model, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    self.assertEqual(out.shape, (1, models.default_num_classes(name)))

  @parameterized.parameters("seed-cnn", "lenet5", "nin", "resnet20")
  def test_every_conv_becomes_locally_connected(self, name):
    model = _abstract(name, conv="local")
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, CONV_KINDS)]
    self.assertTrue(convs and all(isinstance(m, cnn.LocallyConnected) for m in convs), name)
    shape = models.default_input_shape(name)
    out = _eval_shape(model, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    self.assertEqual(out.shape, (1, 10))

  def test_swapped_seed_cnn_runs(self):
    x = _images((2, 20, 20, 3))
    for conv in ("tiled", "local"):
      model = _concrete(_abstract("seed-cnn", conv=conv, input_shape=(20, 20, 3)))
      y = _forward(model, x)
      self.assertEqual(y.shape, (2, 10))
      self.assertTrue(bool(jnp.all(jnp.isfinite(y))))
    local = _abstract("seed-cnn", conv="local")
    self.assertEqual(local.conv1.kernel.shape, (28, 28, 5, 5, 3, 32))
    self.assertEqual(local.conv2.kernel.shape, (10, 10, 5, 5, 32, 64))


class LayerBuilderTest(parameterized.TestCase):

  def test_tracks_shapes(self):
    shapes = []

    def build():  # abstract: no initialiser compiles
      b = LayerBuilder((227, 227, 3), rngs=nnx.Rngs(0))
      conv = b.conv(96, 11, stride=4)
      shapes.append(b.shape)
      b.max_pool(3, stride=2)
      shapes.append(b.shape)
      b.max_pool(3, stride=2, padding="SAME")
      shapes.append(b.shape)
      b.global_avg_pool()
      shapes.append(b.shape)
      return conv

    conv = nnx.eval_shape(build)
    self.assertEqual(conv.kernel.shape, (11, 11, 3, 96))
    self.assertEqual(shapes, [(55, 55, 96), (27, 27, 96), (14, 14, 96), (96,)])

  def test_errors(self):
    with pytest.raises(ValueError, match="conv"):
      LayerBuilder((8, 8, 1), rngs=nnx.Rngs(0), conv="unshared")
    with pytest.raises(ValueError, match="init"):
      LayerBuilder((8, 8, 1), rngs=nnx.Rngs(0), init="glorot")
    with pytest.raises(ValueError, match="input_shape"):
      LayerBuilder((8, 8, 0), rngs=nnx.Rngs(0))
