"""Tests for cnnjax.models.gcnn: p4-cnn is invariant to quarter turns; seed-cnn is not."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnjax import equivariance as eq
from cnnjax import models


def _params(model):
  return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@functools.cache
def _model(name, seed=0, **options):
  """A zoo model with NumPy-drawn parameters (nnx's initialisers take seconds to
  compile on a busy CPU), called under one jit."""
  abstract = nnx.eval_shape(lambda: models.model_class(name)(rngs=nnx.Rngs(0), **options))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda a: jnp.asarray(0.2 * rng.standard_normal(a.shape), a.dtype), state)
  model = nnx.merge(graphdef, state)
  call = jax.jit(lambda x: model(x))
  call.model = model
  return call


def test_p4_cnn_is_rotation_invariant_and_seed_cnn_is_not():
  x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
  p4, seed = _model("p4-cnn", group="p4"), _model("seed-cnn")
  assert _params(p4.model) == _params(seed.model) == 214_806
  assert p4(x).shape == (3, 10)
  for h in range(4):
    eq.assert_invariant(p4, x, eq.plane_action(h, group="p4"))
  assert eq.invariance_error(seed, x, eq.plane_action(1, group="p4")) > 0.1
  # A mirror is not in p4: no invariance promised (and none found).
  assert eq.invariance_error(p4, x, eq.plane_action(4, group="p4m")) > 1e-3


def test_p4m_option_is_mirror_invariant_too():
  model = _model("p4-cnn", group="p4m", widths=(4, 8), hidden=16, input_shape=(20, 20, 1))
  x = jax.random.normal(jax.random.key(1), (2, 20, 20, 1))  # 16, 8, 4, 2: pools evenly
  for h in range(8):
    eq.assert_invariant(model, x, eq.plane_action(h, group="p4m"))


def test_errors():
  with pytest.raises(ValueError, match="p4-cnn: input_shape got"):
    models.abstract("p4-cnn", input_shape=(32, 3))
  with pytest.raises(ValueError, match="p4-cnn"):
    models.abstract("p4-cnn", input_shape=(8, 8, 3))
  model = _model("p4-cnn", group="p4").model
  with pytest.raises(ValueError, match="p4-cnn: x has shape"):
    model(jnp.ones((1, 28, 28, 3)))


def test_summary_counts_the_group_layers():
  from cnnjax.summary import summary

  s = summary("p4-cnn")
  names = [row.name for row in s.rows]
  assert names[:3] == ["lift-p4(5, 32)", "pool(2x2x1)", "gconv-p4(5, 64)"]
  assert s.total_params == 214_806
  rows = {row.name: row for row in s.rows}
  # A conv's ops: output volume × (kernel volume × input channels + 1).
  assert rows["lift-p4(5, 32)"].ops == 28 * 28 * 4 * 32 * (5 * 5 * 3 + 1)
  assert rows["gconv-p4(5, 64)"].ops == 10 * 10 * 4 * 64 * (5 * 5 * 4 * 32 + 1)
  assert rows["gpool(max)"].ops == 5 * 5 * 4 * 64
