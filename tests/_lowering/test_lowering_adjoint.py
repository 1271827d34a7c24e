"""Tests for cnnjax._lowering.adjoint: ``conv_transpose``'s custom JVP gives the
derivatives of the vjp of lax's forward convolution (reverse and forward mode, vmap,
second order)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads
from lowering_helpers import _lax_padding, _random, lax_reference

from cnnjax.conv import conv_transpose

# ------------------------------------------------------------ transformations


class TransformTest(chex.TestCase):

  @parameterized.named_parameters(
      dict(
          testcase_name="stride2_same",
          kw=dict(stride=2, padding="SAME"),
          y=(2, 3, 3, 2),
          w=(3, 3, 2, 2),
          x=(6, 6),
      ),
      dict(
          testcase_name="dilated_grouped",
          kw=dict(stride=(2, 3), dilation=(1, 2), groups=2, padding=((1, 0), (2, 1))),
          y=(1, 3, 2, 4),
          w=(2, 3, 2, 4),
          x=(6, 6),
      ),
      dict(
          testcase_name="conv1d_dropped",
          kw=dict(stride=3, padding="VALID"),
          y=(2, 3, 2),
          w=(2, 3, 2),
          x=(8,),
      ),
  )
  def test_conv_transpose_grads_match_lax(self, kw, y, w, x):
    # conv_transpose has a custom JVP (fast weight gradient on XLA:CPU); its derivatives
    # must equal those of the vjp of lax's forward convolution.
    ys, ws = _random(y, 3), _random(w, 4)
    cfg = _lax_padding((1, *x, 1), w, kw)
    xs = np.zeros((y[0], *x, w[-2] * cfg["groups"]))
    g = _random(xs.shape, 5)

    def lax_adjoint(y, w):
      return jax.vjp(lambda x: lax_reference(x, w, **cfg), xs)[1](y)[0]

    ours = functools.partial(conv_transpose, input_shape=x, **kw)
    loss = lambda f: (lambda y, w: jnp.sum(jnp.sin(f(y, w)) * g))
    want = jax.grad(loss(lax_adjoint), (0, 1))(ys, ws)
    got = jax.jit(jax.grad(loss(ours), (0, 1)))(ys, ws)
    for a, b in zip(got, want, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # Forward mode, one tangent at a time and both (symbolic zeros in the custom JVP).
    jvp = lambda f, t: jax.jvp(f, (ys, ws), t)[1]
    for t in ((ys, np.zeros_like(ws)), (np.zeros_like(ys), ws), (ys, ws)):
      np.testing.assert_allclose(
          jax.jit(jvp, static_argnums=0)(ours, t), jvp(lax_adjoint, t), rtol=1e-10, atol=1e-10
      )
    # vmap over the batch, one kernel per example: the weight gradient per example.
    w_stack = np.stack([ws * (i + 1) for i in range(y[0])])
    vloss = lambda w: jnp.sum(jnp.sin(jax.vmap(ours)(ys[:, None], w)))
    grad_v = jax.jit(jax.grad(vloss))(w_stack)
    grad_0 = jax.grad(lambda w: jnp.sum(jnp.sin(ours(ys[:1], w))))(w_stack[0])
    np.testing.assert_allclose(grad_v[0], grad_0, rtol=1e-10, atol=1e-10)

  def test_conv_transpose_second_order(self):
    # Forward over reverse through the custom JVP: the Hessian in w equals lax's.
    ys, ws, g = _random((1, 3, 2), 3), _random((2, 3, 2), 4), _random((1, 7, 3), 5)

    def lax_adjoint(y, w):
      x = np.zeros((1, 7, 3))
      fwd = lambda x: lax_reference(x, w, stride=(3,), pads=((1, 0),))
      return jax.vjp(fwd, x)[1](y)[0]

    ours = functools.partial(conv_transpose, stride=3, padding=((1, 0),), input_shape=(7,))
    hess = lambda f: jax.hessian(lambda w: jnp.sum(jnp.sin(f(ys, w)) * g))(ws)
    np.testing.assert_allclose(
        jax.jit(hess, static_argnums=0)(ours), hess(lax_adjoint), rtol=1e-10, atol=1e-10
    )
    check_grads(jax.jit(ours), (ys, ws), order=1, modes=("fwd", "rev"))


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
