"""Tests for cnnjax._lowering.cpu_barrier: the fusion barrier is the identity, bit for
bit and in every transformation, and needs no collective on a sharded batch."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from lowering_helpers import _random

from cnnjax._lowering import cpu_barrier


class CpuBarrierTest(chex.TestCase):

  def test_is_the_identity_bit_for_bit(self):
    # One loop trip (a finite source) or none (a NaN source): signed zeros, NaNs and
    # infinities come back unchanged; empty arrays too. Subnormals come back as the
    # backend's arithmetic leaves them after a trip: XLA:CPU flushes them to zero in
    # every operation (the weight gradient's convolution reads them as zeros with or
    # without the barrier). On XLA:CPU, the only backend that compiles the barrier (a
    # GPU's arithmetic returns its canonical NaN, not the NaN's own bits).
    host = jax.devices("cpu")[0]
    for dtype in (np.float32, np.float64):
      x = _random((3, 4, 5, 2), 3, dtype)
      tiny = np.finfo(dtype).smallest_subnormal
      x[0, 0, 0, 0], x[1, 1, 1, 1], x[2, 2, 2, 1], x[2, 3, 4, 0] = -0.0, np.nan, -np.inf, tiny
      after_a_trip = x.copy()
      after_a_trip[2, 3, 4, 0] = jax.jit(jnp.multiply)(
          *jax.device_put((tiny, np.ones((), dtype)), host)
      )
      for source, want in ((np.ones(3, np.float32), after_a_trip), (np.array([1.0, np.nan]), x)):
        got = np.asarray(jax.jit(cpu_barrier.barrier)(*jax.device_put((x, source), host)))
        self.assertEqual(got.dtype, dtype)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    self.assertEqual(cpu_barrier.barrier(jnp.ones((0, 3)), jnp.ones(2)).shape, (0, 3))

  def test_derivatives_are_the_identitys(self):
    # Forward and reverse mode to second order, and vmap, see the identity.
    x, source = _random((2, 3, 4), 1), jnp.ones(3)
    f = lambda x: jnp.sin(cpu_barrier.barrier(x * x, source))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    np.testing.assert_array_equal(
        jax.grad(lambda x: jnp.sum(cpu_barrier.barrier(x, source) ** 2))(x), 2 * x
    )
    np.testing.assert_array_equal(jax.vmap(cpu_barrier.barrier, (0, None))(x, source), x)

  def test_linear_barrier_is_the_identity_in_every_transformation(self):
    # The identity forward, in forward and reverse mode to second order, under vmap
    # (an unbatched and a batched source) and linear_transpose; a NaN source takes the
    # other branch, the identity too.
    x, source = _random((2, 3, 4), 1), jnp.ones(3)
    for s in (source, jnp.array([1.0, jnp.nan])):
      np.testing.assert_array_equal(jax.jit(cpu_barrier.linear_barrier)(x, s), x)
    f = lambda x: jnp.sin(cpu_barrier.linear_barrier(x * x, source))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    (back,) = jax.linear_transpose(lambda t: cpu_barrier.linear_barrier(t, source), x)(x)
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(jax.vmap(cpu_barrier.linear_barrier, (0, None))(x, source), x)
    grad = jax.grad(lambda x, s: jnp.sum(cpu_barrier.linear_barrier(x, s) ** 2))
    np.testing.assert_array_equal(jax.vmap(grad)(x, jnp.ones((2, 3))), 2 * x)
    self.assertEqual(cpu_barrier.linear_barrier(jnp.ones((0, 3)), source).shape, (0, 3))

  def test_sharded_batch_needs_no_collective(self):
    # On 2 simulated devices with the batch sharded (explicit and automatic mesh axes),
    # the weight gradient through the barrier and the row-stacked input gradient through
    # the cotangent barrier compile and match the one-device results; the only
    # all-reduce is the weight gradient's sum over the batch. A barrier that sliced x's
    # first element failed under explicit axes.
    script = textwrap.dedent("""
        import json, os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np
        import cnnjax
        from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
        rng = np.random.default_rng(0)
        x, w, g, w5, g5 = (rng.normal(size=s).astype(np.float32) for s in (
            (8, 8, 8, 16), (3, 3, 16, 16), (8, 8, 8, 16), (5, 5, 16, 16), (8, 4, 4, 16)))
        dw = lambda x, w, g: jax.grad(lambda w: jnp.sum(
            cnnjax.cross_correlate(jax.nn.relu(x), w, padding="SAME") * g))(w)
        dx = lambda x, w, g: jax.grad(lambda x: jnp.sum(
            cnnjax.cross_correlate(x, w, padding="VALID") * g))(x)
        out = {}
        for name, f, (w_, g_) in (("dw", dw, (w, g)), ("dx", dx, (w5, g5))):
          want = np.asarray(jax.jit(f)(x, w_, g_))
          for kind in (AxisType.Explicit, AxisType.Auto):
            mesh = jax.make_mesh((2,), ("data",), axis_types=(kind,))
            xs, gs = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, g_))
            with jax.set_mesh(mesh):
              compiled = jax.jit(f).lower(
                  xs, jax.device_put(w_, NamedSharding(mesh, P())), gs).compile()
              got = np.asarray(compiled(xs, w_, gs))
            text = compiled.as_text()
            out[f"{name} {kind}"] = [
                float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
                [text.count(f" {op}(") for op in ("all-reduce", "while", "conditional")]]
        print(json.dumps(out))
        """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=dict(env, JAX_PLATFORMS="cpu"),
        timeout=300,
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(len(out), 4)
    for name, (relative_error, counts) in out.items():
      self.assertLess(relative_error, 1e-5, name)
      # [all-reduces, loops, conditionals]
      self.assertEqual(counts, [1, 1, 0] if name.startswith("dw") else [0, 0, 1], name)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
