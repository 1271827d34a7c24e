"""TrainConfig validation/serialisation, schedules and optimizers against closed forms."""

import argparse
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from cnnjax.train.cli import config_from_args
from cnnjax.train.config import TrainConfig
from cnnjax.train.optim import make_optimizer, make_schedule, weight_decay_mask
from cnnjax.train.search import sample


@pytest.mark.parametrize(
    "field, value",
    [
        ("optimizer", "sgdd"),
        ("schedule", "cosin"),
        ("epochs", 0),
        ("batch_size", -1),
        ("lr", -0.1),
        ("weight_decay", -1.0),
        ("label_smoothing", 1.0),
        ("clip_grad_norm", 0.0),
        ("piecewise_boundaries", (5.0, 2.0)),
        ("val_size", -1),
        ("steps_per_call", 0),
        ("unroll", -1),
        ("num_devices", 0),
        ("checkpoint_every", 0),
        ("nesterov", "yes"),
        ("augment", 1),
        ("tta_final_only", None),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    TrainConfig(**{field: value})


def test_config_cross_field_checks():
  with pytest.raises(ValueError, match="piecewise_boundaries"):
    TrainConfig(schedule="piecewise")
  with pytest.raises(ValueError, match="warmup_epochs"):
    TrainConfig(schedule="onecycle", epochs=2, warmup_epochs=2)
  with pytest.raises(ValueError, match="unknown field"):
    TrainConfig().replace(learning_rate=0.1)


def test_config_json_round_trip(tmp_path):
  c = TrainConfig(
      model="mlp",
      model_options={"hidden": 7},
      optimizer="adamw",
      schedule="piecewise",
      piecewise_boundaries=[2, 4],
      clip_grad_norm=1.0,
  )
  path = tmp_path / "config.json"
  c.save(path)
  assert TrainConfig.load(path) == c
  d = json.loads(path.read_text())
  assert d["piecewise_boundaries"] == [2.0, 4.0] and d["lr"] == 1e-3  # adamw's default lr
  with pytest.raises(ValueError, match="unknown key"):
    TrainConfig.from_dict({**d, "bogus": 1})


def test_lr_default_follows_optimizer():
  assert TrainConfig().lr == 0.05
  assert TrainConfig(optimizer="adam").lr == 1e-3
  assert TrainConfig(optimizer="adam", lr=0.01).lr == 0.01


def test_cli_flags_override_a_saved_config():
  base = TrainConfig(epochs=3, lr=0.2, model_options={"hidden": 5})
  args = argparse.Namespace(epochs=6, model_options=[("conv", "tiled")])
  c = config_from_args(args, base)
  assert (c.epochs, c.lr, c.model_options) == (6, 0.2, {"hidden": 5, "conv": "tiled"})
  # Switching optimizer without --lr takes the new optimizer's default rate.
  assert config_from_args(argparse.Namespace(optimizer="adam"), base).lr == 1e-3


def test_warmup_cosine_schedule_closed_form():
  c = TrainConfig(lr=0.4, epochs=10, warmup_epochs=2, final_lr_fraction=0.1)
  s = make_schedule(c, steps_per_epoch=10)
  for step in (0, 5, 10, 20, 47, 60, 99, 100):
    if step < 20:
      want = 0.4 * step / 20
    else:
      t = (step - 20) / 80
      want = 0.4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    assert float(s(step)) == pytest.approx(want, rel=1e-5, abs=1e-7), step


def test_piecewise_onecycle_constant_linear():
  pw = make_schedule(
      TrainConfig(
          lr=1.0, epochs=6, schedule="piecewise", piecewise_boundaries=(2, 4), piecewise_factor=0.5
      ),
      steps_per_epoch=3,
  )
  got = [float(pw(i)) for i in (0, 5, 6, 11, 12, 17)]
  np.testing.assert_allclose(got, [1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
  oc = make_schedule(
      TrainConfig(lr=1.0, epochs=10, schedule="onecycle", warmup_epochs=3), steps_per_epoch=10
  )
  values = np.array([float(oc(i)) for i in range(100)])
  assert values.argmax() == 30 and values.max() == pytest.approx(1.0)
  assert values[0] < 0.1 and values[-1] < 1e-3
  const = make_schedule(TrainConfig(lr=0.3, schedule="constant"), steps_per_epoch=4)
  assert float(const(0)) == float(const(39)) == pytest.approx(0.3)
  lin = make_schedule(TrainConfig(lr=1.0, epochs=1, schedule="linear"), steps_per_epoch=10)
  assert float(lin(5)) == pytest.approx(0.5)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    make_schedule(TrainConfig(), steps_per_epoch=0)


def _params():
  return {
      "kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]], jnp.float32),
      "bias": jnp.array([0.5, -0.5], jnp.float32),
  }


class OptimizerTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_sgd_momentum_l2_matches_numpy(self, nesterov):
    lr, mu, wd = 0.1, 0.9, 0.01
    c = TrainConfig(lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd, schedule="constant")
    tx = make_optimizer(c, steps_per_epoch=1)
    params = _params()
    grads = {"kernel": jnp.full((2, 2), 0.3, jnp.float32), "bias": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    update = self.variant(tx.update)
    ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {k: np.zeros_like(v) for k, v in ref.items()}
    for _ in range(3):
      updates, state = update(grads, state, params)
      params = optax.apply_updates(params, updates)
      for k in ref:  # PyTorch's SGD: L2 on kernels only (bias not decayed by default)
        g = np.asarray(grads[k], np.float64) + (wd * ref[k] if k == "kernel" else 0.0)
        buf[k] = mu * buf[k] + g
        step = g + mu * buf[k] if nesterov else buf[k]
        ref[k] = ref[k] - lr * step
    for k in ref:
      np.testing.assert_allclose(params[k], ref[k], rtol=1e-5)

  def test_adamw_decays_kernels_not_biases(self):
    c = TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5, schedule="constant")
    tx = make_optimizer(c, steps_per_epoch=1)
    params = _params()
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_allclose(updates["bias"], 0.0)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * params["kernel"], rtol=1e-6)
    mask = weight_decay_mask(params, decay_all=True)
    assert mask == {"kernel": True, "bias": True}

  def test_clipping_bounds_the_update(self):
    c = TrainConfig(lr=1.0, momentum=0.0, weight_decay=0.0, clip_grad_norm=1.0, schedule="constant")
    tx = make_optimizer(c, steps_per_epoch=1)
    params = _params()
    big = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    updates, _ = tx.update(big, tx.init(params), params)
    norm = optax.tree.norm(updates)
    assert float(norm) == pytest.approx(1.0, rel=1e-5)


def test_search_sampling_is_log_uniform():
  rng = np.random.default_rng(0)
  draws = np.array([sample({"lr": (1e-4, 1e0)}, rng)["lr"] for _ in range(400)])
  assert draws.min() >= 1e-4 and draws.max() <= 1.0
  # Log-uniform: each decade gets about a quarter of the draws.
  counts = np.histogram(np.log10(draws), bins=[-4, -3, -2, -1, 0])[0]
  assert counts.min() > 60, counts
  linear = [sample({"label_smoothing": (0.0, 0.2)}, rng)["label_smoothing"] for _ in range(50)]
  assert min(linear) >= 0.0 and max(linear) <= 0.2
  with pytest.raises(ValueError, match="space"):
    sample({"epochs": (1, 2)}, rng)
  with pytest.raises(ValueError, match="space"):
    sample({"lr": (1.0, 0.1)}, rng)
