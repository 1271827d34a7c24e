"""``cnnjax train --dtype bfloat16``: low-precision compute, float32 parameters,
optimizer state, BatchNorm statistics and loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnjax.cli import main
from cnnjax.train.config import TrainConfig
from cnnjax.train.evaluation import load_run
from cnnjax.train.metrics import read_metrics
from cnnjax.train.run import model_arguments

TINY = [
    "--data",
    "shapes",
    "--data-option",
    "num_train=120",
    "--data-option",
    "num_test=40",
    "--data-option",
    "num_classes=3",
    "--val-size",
    "40",
    "--batch-size",
    "40",
    "--eval-batch-size",
    "40",
    "--quiet",
    "--no-plots",
]


def test_train_in_bfloat16_keeps_float32_params_and_optimizer_state(tmp_path):
  run = str(tmp_path / "run")
  assert (
      main(
          [
              "train",
              "--model",
              "seed-cnn",
              "--model-option",
              "hidden=16",
              "--dtype",
              "bfloat16",
              *TINY,
              "--cache-dir",
              str(tmp_path / "cache"),
              "--epochs",
              "1",
              "--out",
              run,
          ]
      )
      == 0
  )
  (record,) = [r for r in read_metrics(f"{run}/metrics.jsonl") if "train_loss" in r]
  assert np.isfinite(record["train_loss"])
  loaded = load_run(run)
  assert loaded.config.dtype == "bfloat16"
  leaves = jax.tree.leaves((loaded.state.params, loaded.state.opt_state))
  floats = {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {jnp.dtype(jnp.float32)}  # the checkpoint: float32 params and momenta
  model = nnx.merge(loaded.model_def.eval, loaded.state.params, loaded.state.model_state)
  assert model.conv1.dtype == jnp.bfloat16  # rebuilt in the run's compute dtype
  assert model(jnp.zeros((1, 32, 32, 3), jnp.float32)).dtype == jnp.float32


def test_dtype_reaches_the_model_and_is_checked():
  assert model_arguments(TrainConfig(dtype="float16"), input_shape=(8, 8, 3))["dtype"] == (
      "float16"
  )
  assert "dtype" not in model_arguments(TrainConfig(), input_shape=(8, 8, 3))
  with pytest.raises(ValueError, match="TrainConfig: dtype got 'int8'"):
    TrainConfig(dtype="int8")
  with pytest.raises(ValueError, match="expected only one of them"):
    TrainConfig(dtype="bfloat16", model_options={"dtype": "float16"})


def test_cross_entropy_runs_in_float32_for_bf16_logits():
  from cnnjax.train.steps import cross_entropy

  logits = jnp.array([[8.0, 0.0, -3.0]], jnp.bfloat16)
  loss = cross_entropy(logits, jnp.array([1]), label_smoothing=0.1)
  assert loss.dtype == jnp.float32
  want = cross_entropy(logits.astype(jnp.float32), jnp.array([1]), label_smoothing=0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
