"""Mixed precision: ``dtype`` (computation) and ``param_dtype`` (parameters) on every
``cnnjax.nn`` module and zoo model, as in Flax."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from references import assert_close

from cnnjax import models
from cnnjax import nn as cnn
from cnnjax.models.builder import LayerBuilder

BF16 = jnp.bfloat16


@nnx.jit
def _call(module, x):  # one compilation instead of one per eager primitive
  return module(x)


def _params(model):
  return jax.tree.leaves(nnx.state(model, nnx.Param))


def _contraction_inputs(jaxpr):
  """The operand dtypes of every convolution and dot in ``jaxpr`` (sub-jaxprs too)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _contraction_inputs(sub)
  return found


# Small inputs where a model takes any size; the ImageNet nets keep theirs (traced only).
SMALL = {
    "seed-cnn": (32, 32, 3),
    "resnet20": (16, 16, 3),
    "nin": (32, 32, 3),
    "googlenet": (64, 64, 3),
}


@pytest.mark.parametrize("name", models.names())
def test_every_zoo_model_computes_in_bf16_with_float32_params_and_logits(name):
  options = {"input_shape": SMALL[name]} if name in SMALL else {}
  shape = options.get("input_shape", models.default_input_shape(name))
  model = models.abstract(name, dtype="bfloat16", **options)
  assert {p.dtype for p in _params(model)} == {jnp.dtype(jnp.float32)}
  model.eval()
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  graph, state = nnx.split(model)
  closed, out = jax.make_jaxpr(  # one trace for the output dtype and the operands
      lambda s, x: nnx.merge(graph, s)(x), return_shape=True
  )(state, x)
  assert out.dtype == jnp.float32  # logits (and so the softmax and loss) in float32
  jaxpr = closed.jaxpr
  operands = _contraction_inputs(jaxpr)
  assert operands and all(set(ops) == {"bfloat16"} for ops in operands), operands
  # param_dtype sets the parameters' dtype; the default computation follows it.
  half = models.abstract(name, param_dtype="bfloat16", **options)
  assert {p.dtype for p in _params(half)} == {jnp.dtype(BF16)}


def test_seed_cnn_bf16_matches_float32_within_bf16_tolerance():
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
  f32 = models.get("seed-cnn", rngs=nnx.Rngs(0))
  bf16 = models.get("seed-cnn", rngs=nnx.Rngs(0), dtype="bfloat16")
  h = bf16.conv1(x)
  assert h.dtype == BF16 and bf16.pool1(h).dtype == BF16  # activations in bf16
  got = _call(bf16, x)
  assert got.dtype == jnp.float32
  assert_close(got, _call(f32, x), BF16, scale=10.0)  # 4 layers of bf16 rounding


def _same_weights(make, **kw):
  a = make(rngs=nnx.Rngs(0), **kw)
  b = make(rngs=nnx.Rngs(0), dtype=BF16, **kw)
  return a, b


CONV_MODULES = [
    ("Conv", lambda **kw: cnn.Conv(3, 4, 3, padding="SAME", **kw), (1, 6, 6, 3)),
    ("ConvTranspose", lambda **kw: cnn.ConvTranspose(3, 4, 3, stride=2, **kw), (1, 4, 4, 3)),
    (
        "LocallyConnected",
        lambda **kw: cnn.LocallyConnected(3, 4, 3, input_shape=(6, 6), **kw),
        (1, 6, 6, 3),
    ),
    ("TiledConv", lambda **kw: cnn.TiledConv(3, 4, 3, tile=2, **kw), (1, 6, 6, 3)),
    ("LiftConv", lambda **kw: cnn.LiftConv(3, 4, 3, **kw), (1, 6, 6, 3)),
    ("GroupConv", lambda **kw: cnn.GroupConv(3, 4, 3, **kw), (1, 6, 6, 4, 3)),
]


@pytest.mark.parametrize("name,make,shape", CONV_MODULES, ids=[c[0] for c in CONV_MODULES])
def test_conv_modules_in_bf16_match_float32(name, make, shape):
  f32, bf16 = _same_weights(make)
  assert bf16.kernel.dtype == jnp.float32 and bf16.dtype == BF16
  x = jax.random.normal(jax.random.key(2), shape, jnp.float32)
  got = _call(bf16, x)
  assert got.dtype == BF16
  assert_close(got.astype(jnp.float32), _call(f32, x), BF16)
  low = make(rngs=nnx.Rngs(0), param_dtype=BF16)
  assert low.kernel.dtype == BF16 and low.bias.dtype == BF16


PARAMETER_FREE = [
    ("MaxPool", lambda **kw: cnn.MaxPool(2, **kw)),
    ("AvgPool", lambda **kw: cnn.AvgPool(2, **kw)),
    ("LpPool", lambda **kw: cnn.LpPool(2, **kw)),
    ("GlobalAvgPool", lambda **kw: cnn.GlobalAvgPool(**kw)),
    ("GlobalMaxPool", lambda **kw: cnn.GlobalMaxPool(**kw)),
    ("Maxout", lambda **kw: cnn.Maxout(2, **kw)),
    ("BlurPool", lambda **kw: cnn.BlurPool(**kw)),
    ("PolyphaseDownsample", lambda **kw: cnn.PolyphaseDownsample(**kw)),
    ("LocalResponseNorm", lambda **kw: cnn.LocalResponseNorm(size=3, **kw)),
]


@pytest.mark.parametrize("name,make", PARAMETER_FREE, ids=[c[0] for c in PARAMETER_FREE])
def test_parameter_free_modules_compute_in_their_dtype(name, make):
  x = jax.random.normal(jax.random.key(3), (1, 8, 8, 4), jnp.float32)
  want = _call(make(), x)
  got = _call(make(dtype="bfloat16", param_dtype="bfloat16"), x)
  assert want.dtype == jnp.float32 and got.dtype == BF16
  assert_close(got.astype(jnp.float32), want, BF16)


def test_group_pool_dtype():
  x = jax.random.normal(jax.random.key(3), (1, 4, 4, 4, 2), jnp.float32)
  assert cnn.GroupPool(dtype=BF16)(x).dtype == BF16


@pytest.mark.parametrize(
    "kw",
    [{"dtype": "int8"}, {"dtype": "nonsense"}, {"param_dtype": None}, {"param_dtype": jnp.int32}],
)
def test_bad_dtypes_are_one_line_errors_naming_the_argument(kw):
  name = next(iter(kw))
  with pytest.raises(ValueError, match=f"Conv: {name} got"):
    cnn.Conv(3, 4, 3, rngs=nnx.Rngs(0), **kw)
  with pytest.raises(ValueError, match=f"MaxPool: {name} got"):
    cnn.MaxPool(2, **kw)
  with pytest.raises(ValueError, match=f"seed-cnn: {name} got"):
    models.get("seed-cnn", rngs=nnx.Rngs(0), **kw)


def test_batch_norm_in_bf16_keeps_float32_statistics():
  b = LayerBuilder((4, 4, 8), rngs=nnx.Rngs(0), dtype="bfloat16")
  norm, ref = b.batch_norm(), LayerBuilder((4, 4, 8), rngs=nnx.Rngs(0)).batch_norm()
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(4), (16, 4, 4, 8), jnp.float32)
  x = x.astype(BF16)
  y = _call(norm, x)
  _call(ref, x.astype(jnp.float32))  # the same (exactly representable) input in float32
  assert y.dtype == BF16
  assert norm.mean.dtype == jnp.float32 and norm.var.dtype == jnp.float32
  # Reductions in float32: the running averages match float32's to float32 rounding.
  np.testing.assert_allclose(norm.mean[...], ref.mean[...], rtol=1e-6)
  np.testing.assert_allclose(norm.var[...], ref.var[...], rtol=1e-5)
  assert {p.dtype for p in _params(norm)} == {jnp.dtype(jnp.float32)}
