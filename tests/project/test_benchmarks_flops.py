"""benchmarks/_flops.py: the FLOP counts and the ceiling matmul the benchmarks report."""

import os
import sys
import types

import jax.numpy as jnp
import pytest

sys.path.append(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks"))
import _flops  # noqa: E402


def test_model_flops_of_seed_cnn_is_the_hand_count():
  # conv(5, 32) on 32x32x3: 28*28*32 outputs x (5*5*3 + 1); pool(2): 28*28*32 inputs;
  # conv(5, 64): 10*10*64 x (5*5*32 + 1); pool(2): 10*10*64; fc(100): 1600*100 + 100;
  # fc(10): 100*10 + 10.
  macs = 28 * 28 * 32 * 76 + 28 * 28 * 32 + 10 * 10 * 64 * 801 + 10 * 10 * 64 + 160_100 + 1_010
  assert _flops.model_flops("seed-cnn", (32, 32, 3), train=False) == 2 * macs
  assert _flops.model_flops("seed-cnn", (32, 32, 3), options={"dtype": "bfloat16"}) == (6 * macs)


def test_step_flops_takes_the_larger_count():
  compiled = types.SimpleNamespace(cost_analysis=lambda: {"flops": 10.0})
  assert _flops.step_flops(compiled, 40.0) == {
      "flops": 40.0,
      "source": "summary",
      "compiled": 10.0,
      "model": 40.0,
  }
  assert _flops.step_flops(compiled, 4.0)["source"] == "cost_analysis"
  missing = types.SimpleNamespace(cost_analysis=lambda: [])
  assert _flops.step_flops(missing, 4.0)["compiled"] is None


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_ceiling_matmul_runs_in_the_given_dtype(dtype):
  run, flops, got = _flops.matmul_ceiling(16, dtype)
  assert got == jnp.dtype(dtype) and run().dtype == jnp.dtype(dtype) and flops == 2 * 16**3
  config = types.SimpleNamespace(model_options={"dtype": dtype})
  assert _flops.step_dtype(config) == jnp.dtype(dtype)
  assert _flops.step_dtype(types.SimpleNamespace(model_options={})) == jnp.float32
  from cnnjax.train import TrainConfig

  assert _flops.step_dtype(TrainConfig(dtype=dtype)) == jnp.dtype(dtype)
  assert _flops.step_dtype(TrainConfig()) == jnp.float32
