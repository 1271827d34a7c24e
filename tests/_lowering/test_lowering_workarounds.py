"""Canaries of ``cnnjax._lowering.workarounds``: each XLA defect cnnjax works around is
still there on the installed jaxlib. A failure here is good news: the defect is fixed,
and its workaround (named in the message) can go."""

import json
import os
import subprocess
import sys
import textwrap

import jaxlib
import numpy as np
import pytest

from cnnjax._lowering import workarounds
from cnnjax._lowering.config import ConvConfig


def _child(script: str, *args: str) -> subprocess.CompletedProcess:
  """``script`` in a fresh Python on XLA:CPU (a defect may kill the process)."""
  return subprocess.run(
      [sys.executable, "-c", textwrap.dedent(script), *args],
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


def test_negative_padding_is_computed_wrongly_by_xla_cpu_before_jaxlib_0_12_1():
  # openxla/xla#48713's reproducer: a 1x1 identity kernel, width cropped by 5 and padded
  # by 1; the padded column must be 0. int32 (XLA's elemental emitter) gets it right;
  # float32 reads the next row on jaxlib 0.10.2, and is right on 0.12.1 (the first
  # release seen fixed). The crop by lax.pad is right on both, so it stays until the
  # floor in pyproject.toml reaches workarounds.NEGATIVE_PADDING_FIXED_IN.
  proc = _child("""
      import json
      import numpy as np, jax.numpy as jnp
      from jax import lax
      x = np.arange(15 * 6 * 8).reshape(1, 15, 6, 8)
      k = np.eye(8).reshape(1, 1, 8, 8)
      out = {}
      for dtype in (jnp.float32, jnp.int32):
        y = lax.conv_general_dilated(jnp.asarray(x, dtype), jnp.asarray(k, dtype), (1, 1),
                                     ((0, 0), (-5, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        out[dtype.__name__] = np.asarray(y)[0, :, 1, :].tolist()  # the padded column
      print(json.dumps(out))
  """)
  fixed = _version(jaxlib.__version__) >= workarounds.NEGATIVE_PADDING_FIXED_IN
  if proc.returncode != 0:  # the out-of-bounds read crashed the child: still the defect
    assert not fixed, proc.stderr[-2000:]
    return
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not np.any(got["int32"]), got["int32"]
  if fixed:
    assert not np.any(got["float32"]), f"jaxlib {jaxlib.__version__} still has #48713"
  else:
    assert np.any(got["float32"]), (
        f"jaxlib {jaxlib.__version__} computes openxla/xla#48713's convolution right: "
        "lower workarounds.NEGATIVE_PADDING_FIXED_IN"
    )


def _version(text: str) -> tuple[int, ...]:
  return tuple(int(part) for part in text.split(".")[:3])


def test_negative_padding_names_crops_only():
  cfg = ConvConfig.make(2, stride=(1, 1), pads=((0, 0), (-5, 1)))
  assert workarounds.negative_padding(cfg)
  assert not workarounds.negative_padding(cfg._replace(pads=((0, 0), (0, 1))))


@pytest.mark.parametrize("case", ["abort", "fine"])
def test_the_strided_input_gradient_still_aborts_xla_cpu(case):
  # jax.grad of lax's own convolution on workarounds.aborts's first case kills the
  # process; the case beside it (padding (0, 1)) compiles.
  proc = _child(
      """
      import sys, jax, jax.numpy as jnp
      pads = ((1, 1), (0, 0)) if sys.argv[1] == "abort" else ((0, 1), (0, 0))
      f = lambda x: jax.lax.conv_general_dilated(
          x, jnp.ones((2, 3, 1, 1)), (2, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
      jax.jit(jax.grad(lambda x: f(x).sum())).lower(jnp.ones((1, 4, 4, 1))).compile()
      print("compiled")
  """,
      case,
  )
  if case == "fine":
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-2000:]
    return
  assert proc.returncode != 0, (
      f"jaxlib {jaxlib.__version__} compiles the strided input gradient XLA:CPU aborted "
      "on: workarounds.aborts and cpu.conv's padding behind a barrier can go"
  )
  assert "Window dimensions do not match RHS shape" in proc.stderr, proc.stderr[-2000:]
  cfg = ConvConfig.make(2, stride=(2, 1), pads=((1, 1), (0, 0)))
  assert workarounds.aborts((1, 4, 4, 1), (2, 3, 1, 1), cfg)
  assert not workarounds.aborts((1, 4, 4, 1), (2, 3, 1, 1), cfg._replace(pads=((0, 1), (0, 0))))
