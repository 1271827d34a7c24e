"""Tests for cnnjax.group (lift_conv, group_conv, group_pool, the p4/p4m tables) and the
group actions of cnnjax.equivariance: against NumPy references written from Cohen &
Welling's definitions (tests/references.py), and exact equivariance and invariance."""

import functools
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import cnnjax
from cnnjax import equivariance as eq
from cnnjax.group import (
    group_conv,
    group_inverse,
    group_order,
    group_pool,
    group_product,
    lift_conv,
    transform_plane,
)
from tests.references import (
    assert_close,
    ref_group_conv,
    ref_group_table,
    ref_lift_conv,
    ref_plane_transform,
)

GROUPS = ("p4", "p4m")


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


class TableTest(parameterized.TestCase):

  @parameterized.parameters(*GROUPS)
  def test_product_is_composition(self, group):
    np.testing.assert_array_equal(group_product(group), ref_group_table(group))
    table = group_product(group)
    n = group_order(group)
    assert n == {"p4": 4, "p4m": 8}[group]
    # Inverses, and every row a permutation (a group).
    inv = group_inverse(group)
    assert all(table[g, inv[g]] == 0 and table[inv[g], g] == 0 for g in range(n))
    assert all(sorted(row) == list(range(n)) for row in table)

  def test_p4m_is_not_abelian_and_p4_is(self):
    assert (group_product("p4") == group_product("p4").T).all()
    assert not (group_product("p4m") == group_product("p4m").T).all()

  @parameterized.parameters(*range(8))
  def test_transform_plane(self, element):
    a = _random((5, 5, 2), element)
    np.testing.assert_array_equal(
        transform_plane(a, element, group="p4m"), ref_plane_transform(a, element)
    )


_CONV_CASES = (
    dict(testcase_name="p4_same", group="p4", k=3, settings=dict(padding="SAME")),
    dict(testcase_name="p4m_same_k5", group="p4m", k=5, settings=dict(padding="SAME")),
    dict(
        testcase_name="p4_valid_stride2", group="p4", k=3, settings=dict(padding="VALID", stride=2)
    ),
    dict(testcase_name="p4m_valid", group="p4m", k=2, settings=dict(padding="VALID")),
)


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CONV_CASES)
  def test_lift_conv(self, group, k, settings):
    x, w = _random((2, 7, 7, 3), 0), _random((k, k, 3, 4), 1)
    got = self.variant(functools.partial(lift_conv, group=group, **settings))(x, w)
    want = ref_lift_conv(x, w, group, **settings)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CONV_CASES)
  def test_group_conv(self, group, k, settings):
    n = group_order(group)
    x, w = _random((2, 6, 6, n, 3), 2), _random((k, k, n, 3, 2), 3)
    got = self.variant(functools.partial(group_conv, group=group, **settings))(x, w)
    want = ref_group_conv(x, w, group, **settings)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @parameterized.parameters(np.float32, jnp.bfloat16)
  def test_low_precision_against_float64(self, dtype):
    x, w = _random((2, 6, 6, 8, 3), 4), _random((3, 3, 8, 3, 2), 5)
    xr, wr = (np.asarray(jnp.asarray(a, dtype), np.float64) for a in (x, w))
    got = group_conv(jnp.asarray(x, dtype), jnp.asarray(w, dtype), group="p4m")
    assert got.dtype == dtype
    assert_close(got, ref_group_conv(xr, wr, "p4m", padding="SAME"), dtype)

  @parameterized.parameters("max", "mean")
  def test_group_pool(self, reduce):
    x = _random((2, 3, 3, 8, 4), 6)
    want = x.max(axis=3) if reduce == "max" else x.mean(axis=3)
    np.testing.assert_allclose(group_pool(x, reduce=reduce), want, rtol=1e-12)

  @parameterized.product(
      dtype=(np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.int64, np.uint64),
      x64=(False, True),
  )
  def test_integer_group_mean_is_exact(self, dtype, x64):
    # trunc(exact mean) in x's dtype. The mean was a float32 (x64 off) of an int32 sum:
    # four int32 2**24 + 1 gave 2**24, and int32 max values rounded up to 2**31.
    if np.iinfo(dtype).bits == 64 and not x64:
      return  # (64-bit arrays need x64)
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    lo, hi = np.array(info.min, dtype), np.array(info.max, dtype)
    shape = (2, 2, 4, 3)  # [H, W, |G|, C]
    x = np.stack(
        [
            np.full(shape, hi),
            np.full(shape, lo),
            np.where(rng.random(shape) < 0.5, lo, hi),
            rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True),
            np.full(shape, min(info.max, 2**24 + 1)).astype(dtype),
        ]
    )
    with jax.enable_x64(x64):
      got = group_pool(x, reduce="mean")
    totals = x.astype(object).sum(axis=3)
    want = np.vectorize(lambda t: int(Fraction(int(t), 4)), otypes=[object])(totals)
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got).astype(object), want)

  def test_empty_group_axis_is_refused(self):
    with pytest.raises(
        ValueError, match=r"group_pool: x has shape \(1, 2, 2, 0, 3\), an empty " "group axis"
    ):
      group_pool(np.ones((1, 2, 2, 0, 3)), reduce="mean")


def _stack(group, seed=0):
  """lift → relu → group conv, and its weights."""
  n = group_order(group)
  w1, w2 = _random((3, 3, 2, 4), seed), _random((5, 5, n, 4, 3), seed + 1)
  return lambda x: group_conv(jax.nn.relu(lift_conv(x, w1, group=group)), w2, group=group)


class EquivarianceTest(parameterized.TestCase):

  @parameterized.product(group=GROUPS, dtype=(np.float64, np.float32))
  def test_layers_are_equivariant(self, group, dtype):
    x = jnp.asarray(_random((2, 9, 9, 2), 7), dtype)
    f = jax.jit(_stack(group))  # one program for every f call (eagerly: op by op)
    for h in range(group_order(group)):
      eq.assert_equivariant(f, x, eq.plane_action(h, group=group), eq.group_action(h, group=group))

  @parameterized.parameters(*GROUPS)
  def test_group_conv_alone_is_equivariant(self, group):
    n = group_order(group)
    y, w = _random((1, 7, 7, n, 3), 8), _random((3, 3, n, 3, 2), 9)
    f = jax.jit(functools.partial(group_conv, w=w, group=group))  # one program for every call
    for h in range(n):
      g = eq.group_action(h, group=group)
      eq.assert_equivariant(f, y, g, g)

  @parameterized.parameters(*GROUPS)
  def test_pooled_network_is_invariant(self, group):
    f = _stack(group)
    net = jax.jit(lambda x: cnnjax.global_avg_pool(group_pool(jax.nn.relu(f(x)))))  # one program
    x = _random((3, 11, 11, 2), 10)
    for h in range(group_order(group)):
      eq.assert_invariant(net, x, eq.plane_action(h, group=group))

  def test_the_checks_can_fail(self):
    x = _random((2, 9, 9, 2), 11)
    f = jax.jit(_stack("p4"))  # one program for every f call (eagerly: op by op)
    rot = eq.plane_action(1, group="p4")
    # Rotating space without permuting the group axis is not the output's action.
    assert eq.equivariance_error(f, x, rot, rot) > 0.1
    # p4 layers are not mirror-equivariant.
    mirror = eq.plane_action(4, group="p4m")
    assert eq.equivariance_error(lambda x: group_pool(f(x)), x, mirror, mirror) > 0.1
    # An ordinary convolution with a generic kernel is not rotation-equivariant.
    w = _random((3, 3, 2, 3), 12)
    conv = lambda x: cnnjax.cross_correlate(x, w, padding="SAME")
    assert eq.equivariance_error(conv, x, rot) > 0.1
    with pytest.raises(AssertionError):
      eq.assert_equivariant(f, x, rot, rot)

  def test_actions(self):
    x = _random((1, 4, 4, 1), 13)
    np.testing.assert_array_equal(eq.plane_action(1, group="p4")(x), eq.rot90(1)(x))
    np.testing.assert_array_equal(eq.plane_action(4, group="p4m")(x), eq.flip(1)(x))
    y = _random((1, 4, 4, 4, 2), 14)
    g = eq.group_action(1, group="p4")
    # L_h: slot g holds the rotated slot g − 1 (p4 is cyclic).
    np.testing.assert_array_equal(g(y)[:, :, :, 1], np.rot90(y[:, :, :, 0], 1, axes=(1, 2)))
    # The action is a homomorphism: L_g L_h = L_{gh}.
    table = group_product("p4m")
    y8 = _random((1, 3, 3, 8, 1), 15)
    for a in range(8):
      for b in range(8):
        ga, gb = eq.group_action(a, group="p4m"), eq.group_action(b, group="p4m")
        np.testing.assert_array_equal(
            ga(gb(y8)), eq.group_action(int(table[a, b]), group="p4m")(y8)
        )


class ErrorTest(parameterized.TestCase):

  def test_errors(self):
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="lift_conv: group got 'p6'"):
      lift_conv(x, w, group="p6")
    with pytest.raises(ValueError, match="lift_conv: w has shape .*square kernel"):
      lift_conv(x, jnp.ones((3, 2, 2, 4)), group="p4")
    with pytest.raises(ValueError, match="lift_conv: x has shape"):
      lift_conv(jnp.ones((5, 5, 2)), w, group="p4")
    y = jnp.ones((1, 5, 5, 4, 2))
    with pytest.raises(ValueError, match="group_conv: x has shape .*group axes"):
      group_conv(y, jnp.ones((3, 3, 8, 2, 2)), group="p4")
    with pytest.raises(ValueError, match="group_conv: channel mismatch"):
      group_conv(y, jnp.ones((3, 3, 4, 3, 2)), group="p4")
    with pytest.raises(ValueError, match="group_pool: reduce got 'sum'"):
      group_pool(y, reduce="sum")
    with pytest.raises(ValueError, match="group_pool: x has shape"):
      group_pool(x)
    with pytest.raises(ValueError, match="plane_action: element got 4"):
      eq.plane_action(4, group="p4")
    with pytest.raises(ValueError, match="group_action: group got 'p3'"):
      eq.group_action(0, group="p3")
    with pytest.raises(ValueError, match="expected a square plane"):
      eq.plane_action(1, group="p4")(jnp.ones((1, 4, 5, 1)))
    with pytest.raises(ValueError, match=r"expected \[N, H, W, \|G\| = 4, C\]"):
      eq.group_action(1, group="p4")(jnp.ones((1, 4, 4, 8, 1)))

  def test_errors_of_the_correlation_name_the_op(self):
    # The settings are the caller's: the messages said "cross_correlate:".
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    y, wg = jnp.ones((1, 5, 5, 4, 2)), jnp.ones((3, 3, 4, 2, 2))
    for op, a, b in ((lift_conv, x, w), (group_conv, y, wg)):
      name = op.__name__
      cases = [
          (dict(stride=0), f"{name}: stride got 0"),
          (dict(stride=2**70), rf"{name}: stride got 1180591620717411303424; .* 2\*\*63 - 1"),
          (dict(stride=True), f"{name}: stride got True"),
          (dict(padding="HALF"), f"{name}: padding got 'HALF'"),
          (dict(padding=1.5), f"{name}: padding got 1.5"),
          (dict(padding=2**63), f"{name}: padding got 9223372036854775808"),
          (dict(padding="VALID", stride=(1, "2")), rf"{name}: stride got \(1, '2'\)"),
      ]
      for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
          op(a, b, group="p4", **kwargs)
      with pytest.raises(ValueError, match=f"{name}: the effective kernel size 3"):
        op(a[:, :2, :2], b, group="p4", padding="VALID")
    with pytest.raises(
        ValueError, match=r"lift_conv: w has a zero-size kernel dim: shape " r"\(0, 0, 2, 4\)"
    ):
      lift_conv(x, jnp.ones((0, 0, 2, 4)), group="p4")
    with pytest.raises(ValueError, match="group_conv: w has a zero-size kernel dim"):
      group_conv(y, jnp.ones((0, 0, 4, 2, 2)), group="p4")

  def test_exported(self):
    for name in ("lift_conv", "group_conv", "group_pool"):
      assert getattr(cnnjax, name) is getattr(cnnjax.group, name)
