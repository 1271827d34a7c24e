"""A fusion barrier for XLA:CPU: consumers read ``x`` from memory instead of recomputing it.

XLA fuses an elementwise producer into each of its consumers, duplicating it. In a
residual network that goes wrong on XLA:CPU: the weight gradient's convolution wants
its input ``x`` transposed (``[C_in, H, W, N]``, Eigen's layout for it), and XLA fuses
``x``'s producers (BatchNorm, ReLU, the residual add, and through the add the previous
blocks' ones) into that transpose, so it re-reads up to four convolution outputs in a
transposing (cache-hostile) order instead of reading the ``x`` the forward pass already
wrote. In resnet20's train step (batch 128) the transposes took 144 ms of thread time
per step (two threads; profile of 2026-12-01, ``jax.profiler``), 45 ms once those of
``x`` read it stored (``benchmarks/README.md``, "Third pass").

:func:`barrier` returns ``x`` through a ``while`` loop whose trip count XLA cannot know
(1, or 0 if ``x``'s first element is NaN: the value is ``x`` either way) and whose body
rewrites one element with itself (``v - 0·i``, exact for every float, signed zeros and
NaN included), so no simplifier removes it and no fusion crosses it; it costs a copy of
``x`` (the loop's buffer). ``lax.optimization_barrier`` does not serve: XLA:CPU expands
it before fusion. Its JVP is the identity on the tangent (reverse mode transposes that),
so derivatives of every order see the identity. Used by
:mod:`cnnjax._lowering.cpu_rows` for the weight gradient's input where its rule measured
a gain; XLA:CPU only (GPU and TPU never compile the CPU forms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["barrier"]


@jax.custom_jvp
def barrier(x: jax.Array) -> jax.Array:
  """``x`` (the same values, bit for bit), stored in a buffer XLA cannot fuse through."""
  if x.size == 0:
    return x
  first = lax.dynamic_slice(x, (0,) * x.ndim, (1,) * x.ndim)
  trips = (first.reshape(()) == first.reshape(())).astype(jnp.int32)  # 1; 0 for NaN

  def body(carry):
    i, y = carry
    v = lax.dynamic_slice(y, (0,) * y.ndim, (1,) * y.ndim)
    v = v - i.astype(y.dtype) * jnp.zeros((), y.dtype)  # i is 0: v - 0 == v, exactly
    return i + 1, lax.dynamic_update_slice(y, v, (0,) * y.ndim)

  return lax.while_loop(lambda carry: carry[0] < trips, body, (jnp.int32(0), x))[1]


@barrier.defjvp
def _barrier_jvp(primals, tangents):
  (x,), (x_dot,) = primals, tangents
  return barrier(x), x_dot
