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
(1, read at run time from ``source``, an array the caller has at hand: 0 if its sum is
NaN, and the value is ``x`` either way) and whose body subtracts ``0·i`` from every
element (exact for every float, signed zeros and NaN included; subnormals are flushed to
zero, as by every XLA:CPU operation, the convolution that reads them included), so no
simplifier removes it and no fusion crosses it. It costs one pass over ``x``, and leaves
its sharding alone: the body is elementwise, and the kernel that cpu_rows passes as
``source`` is replicated where the batch is sharded, so no collective is added. (A loop
that rewrote only ``x``'s first element ran 1% faster in resnet20's step, but slicing a
sharded dimension added an all-reduce per layer under automatic sharding and failed
under explicit sharding.) ``lax.optimization_barrier`` does not serve: XLA:CPU expands
it before fusion. The barrier's JVP is the identity on ``x``'s tangent (reverse mode
transposes that), so derivatives of every order see the identity. Used by
:mod:`cnnjax._lowering.cpu_rows` for the weight gradient's input; XLA:CPU only (GPU and
TPU never compile the CPU forms).

:func:`linear_barrier` marks both directions: the identity, whose transpose (what
reverse mode computes there) is stored once and read by its consumers too. It is a
``lax.cond`` on a runtime predicate with identity branches: unlike a ``while`` loop, a
``cond`` is linear in its operands, so JAX transposes it (and batches it, and
differentiates it), and XLA keeps a conditional whose predicate it cannot know, and
fuses or folds nothing across it. :mod:`cnnjax._lowering.cpu_rows` puts it on the ``x``
tangent of its row-stacked form: that input gradient ends in ``k_h`` row-shifted adds,
which XLA otherwise fuses into each consumer, and a 2×2 max pool's backward reads each
value four times (seed-cnn's conv2 → pool: 4.6 ms per train step in one fusion, 2.9 ms
with the adds stored; ``benchmarks/README.md``, "Fourth pass").
:mod:`cnnjax._lowering.cpu` puts it between an input padded by ``lax.pad`` and the
convolution that XLA:CPU would abort on if the padding were folded back into it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["barrier", "linear_barrier"]


@jax.custom_jvp
def barrier(x: jax.Array, source: jax.Array) -> jax.Array:
  """``x`` (the same values, bit for bit but for flushed subnormals), stored in a buffer
  XLA cannot fuse through.

  Args:
    x: any float array.
    source: any numeric array, read (summed) only to set the loop's trip count at run
      time; a small, unsharded one is cheapest (cpu_rows passes the kernel).
  """
  if x.size == 0:
    return x
  total = jnp.sum(source)
  trips = (total == total).astype(jnp.int32)  # 1; 0 when the sum is NaN

  def body(carry):
    i, y = carry
    return i + 1, y - i.astype(y.dtype) * jnp.zeros((), y.dtype)  # i is 0: y - 0 is y

  return lax.while_loop(lambda carry: carry[0] < trips, body, (jnp.int32(0), x))[1]


@barrier.defjvp
def _barrier_jvp(primals, tangents):
  (x, source), (x_dot, _) = primals, tangents
  return barrier(x, source), x_dot


def linear_barrier(t: jax.Array, source: jax.Array) -> jax.Array:
  """``t``, through a conditional XLA cannot see through; linear in ``t``, so its
  transpose (reverse mode's cotangent) passes through one too and is stored.

  Args:
    t: any array (a tangent, or a primal).
    source: any numeric array, read (summed) only for the runtime predicate (true
      unless the sum is NaN; both branches return ``t``); a small, unsharded one is
      cheapest (cpu_rows passes the kernel).
  """
  total = jnp.sum(lax.stop_gradient(source))
  return lax.cond(total == total, lambda t: t, lambda t: t * jnp.ones((), t.dtype), t)
