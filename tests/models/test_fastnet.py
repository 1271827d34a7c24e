"""fastnet (airbench94) and the fast recipe: the model, its whitening init, alternating
flip, test-time augmentation, Lookahead, normalisation-layer learning rates, the
warm-up/decay triangle, ``--recipe fast`` resolution, and a tiny end-to-end run.

Models are built abstractly and filled from NumPy (eager initialisers compile per shape,
seconds each on CPU); references are NumPy.
"""

import argparse
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx
from references import tolerance

from cnnjax import models
from cnnjax.data.dataset import Dataset
from cnnjax.models.fastnet import FrozenParam, dirac_init, whiten_init
from cnnjax.train import evaluate, train
from cnnjax.train.augment import alternating_flip, tta_logits
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.cli import add_subcommands, config_from_args
from cnnjax.train.config import TrainConfig
from cnnjax.train.metrics import read_metrics
from cnnjax.train.optim import (
    lookahead_schedule,
    make_optimizer,
    make_schedule,
    norm_param_mask,
)
from cnnjax.train.sharding import make_mesh, put_global, replicated
from cnnjax.train.state import create_train_state, eval_params
from cnnjax.train.steps import cross_entropy, make_steps, make_train_step

SMALL = dict(widths=(4, 8, 8), input_shape=(12, 12, 3))


def _concrete(model, seed=0):
  """A concrete copy of an abstract model, its arrays drawn with NumPy."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed, impl="rbg")
    if jnp.issubdtype(leaf.dtype, jnp.integer):
      return np.zeros(leaf.shape, leaf.dtype)
    if "['var']" in name:
      return np.ones(leaf.shape, leaf.dtype)
    scale = 1 / math.sqrt(math.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.1
    return (rng.standard_normal(leaf.shape) * scale).astype(leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def _fastnet(seed=0, **options):
  return _concrete(models.abstract("fastnet", **options), seed)


def _images(shape, seed=0):
  """Correlated images: smoothed noise with mixed channels (far from white)."""
  r = np.random.default_rng(seed)
  x = r.standard_normal(shape)
  x = x + np.roll(x, 1, axis=1) + np.roll(x, 1, axis=2)
  return x @ np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]) + 0.3


# ------------------------------------------------------------------------------- model


class FastNetTest(parameterized.TestCase):

  def test_builds_at_cifar_size_and_runs(self):
    model = models.abstract("fastnet")
    params = nnx.state(model, nnx.Param)
    self.assertEqual(sum(math.prod(p.shape) for p in jax.tree.leaves(params)), 1_971_352)
    frozen = jax.tree.leaves(nnx.state(model, FrozenParam))
    self.assertEqual([p.shape for p in frozen], [(2, 2, 3, 24)])  # not an nnx.Param
    model = _fastnet()
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 32, 32, 3)), jnp.float32)
    logits = nnx.jit(lambda m, x: m(x))(model, x)
    self.assertEqual((logits.shape, logits.dtype), ((2, 10), jnp.float32))
    self.assertTrue(bool(jnp.all(jnp.isfinite(logits))))
    self.assertFalse(np.allclose(logits[0], logits[1]))

  def test_layer_table(self):
    from cnnjax.summary import summary

    s = summary("fastnet", (32, 32, 3))
    self.assertEqual(
        [r.name for r in s.rows],
        ["conv(2, 24)", "group(64)", "group(256)", "group(256)", "pool(global)", "fc(10)"],
    )
    self.assertEqual(
        [r.shape for r in s.rows][:4], [(31, 31, 24), (15, 15, 64), (7, 7, 256), (3, 3, 256)]
    )
    # Multiply-adds of the convs by hand: output positions x kernel volume x C_in x C_out.
    macs = (
        31**2 * 4 * 3 * 24
        + 31**2 * 9 * 24 * 64
        + 15**2 * 9 * 64 * 64
        + 15**2 * 9 * 64 * 256
        + 7**2 * 9 * 256 * 256
        + 7**2 * 9 * 256**2
        + 3**2 * 9 * 256**2
    )
    self.assertLess(abs(s.total_ops - macs) / macs, 0.01)

  def test_dirac_init_is_identity_on_the_first_filters(self):
    w = np.asarray(dirac_init()(jax.random.key(0), (3, 3, 2, 5), jnp.float32))
    want = np.zeros((3, 3, 2, 2))
    want[1, 1] = np.eye(2)
    np.testing.assert_array_equal(w[..., :2], want)
    self.assertTrue(np.all(np.abs(w[..., 2:]) <= 1 / math.sqrt(18)))  # U(±1/√fan_in)
    self.assertGreater(np.abs(w[..., 2:]).max(), 0)

  def test_batch_norm_has_offset_only_and_airbench_momentum(self):
    model = models.abstract("fastnet", **SMALL)
    norm = model.groups[0].norm1
    self.assertIsNone(norm.scale)
    self.assertEqual((norm.momentum, norm.epsilon), (0.6, 1e-12))

  @parameterized.parameters(
      (dict(widths=(8, 8)), "widths"),
      (dict(widths=(8, 0, 8)), "widths"),
      (dict(input_shape=(8, 8, 3)), "input_shape"),
      (dict(input_shape=(32, 3)), "input_shape"),
      (dict(whiten_kernel=0), "whiten_kernel"),
  )
  def test_errors_name_the_argument(self, options, match):
    with self.assertRaisesRegex(ValueError, match):
      models.abstract("fastnet", **options)

  def test_wrong_input_shape(self):
    with self.assertRaisesRegex(ValueError, "input_shape"):
      _fastnet(**SMALL)(jnp.zeros((1, 32, 32, 3)))


# --------------------------------------------------------------------------- whitening


def _numpy_patches(x, k):
  """Every k×k patch by loops, flattened (row, column, channel)."""
  n, h, w, c = x.shape
  rows = [
      x[i, r : r + k, s : s + k, :].reshape(-1)
      for i in range(n)
      for r in range(h - k + 1)
      for s in range(w - k + 1)
  ]
  return np.stack(rows)


class WhiteningTest(parameterized.TestCase):

  @parameterized.parameters(5e-4, 0.0)
  def test_outputs_are_white_on_the_calibration_patches(self, eps):
    model = _fastnet(**SMALL)
    x = _images((6, 12, 12, 3))
    eigenvalues = np.asarray(whiten_init(model, x, eps=eps))
    patches = _numpy_patches(x, 2)
    second = patches.T @ patches / len(patches)
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(second)[::-1], rtol=1e-9)
    # The kernel alone (no bias, before the GELU) on the same images.
    y = np.asarray(model.whiten(jnp.asarray(x))) - np.asarray(model.whiten.bias[...])
    y = y.reshape(-1, 24)
    cov = y.T @ y / len(y)
    gain = np.diag(eigenvalues / (eigenvalues + eps))
    tol = 1e-6  # the kernel is stored in float32
    np.testing.assert_allclose(cov[:12, :12], gain, atol=tol)
    np.testing.assert_allclose(cov[12:, 12:], gain, atol=tol)
    np.testing.assert_allclose(cov[:12, 12:], -gain, atol=tol)
    np.testing.assert_allclose(np.diag(cov)[:12], 1, atol=eps / eigenvalues.min() + tol)
    self.assertGreater(eigenvalues.max() / eigenvalues.min(), 10)  # the input was not white

  def test_only_the_frozen_kernel_changes(self):
    model = _fastnet(**SMALL)
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    kernel = np.asarray(model.whiten.kernel[...])
    whiten_init(model, _images((2, 12, 12, 3)))
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(model, nnx.Param))
    self.assertFalse(np.allclose(kernel, model.whiten.kernel[...]))

  def test_errors_name_the_argument(self):
    model = _fastnet(**SMALL)
    with self.assertRaisesRegex(ValueError, "model"):
      whiten_init(models.abstract("seed-cnn"), _images((1, 32, 32, 3)))
    with self.assertRaisesRegex(ValueError, "images"):
      whiten_init(model, np.zeros((1, 12, 12, 1)))
    with self.assertRaisesRegex(ValueError, "images"):
      whiten_init(model, np.zeros((1, 12, 12, 3), np.uint8))
    with self.assertRaisesRegex(ValueError, "eps"):
      whiten_init(model, _images((1, 12, 12, 3)), eps=-1.0)


# ----------------------------------------------------------------- flip, TTA, training


def _flipped(out, x):
  """Per image: True if ``out`` is ``x`` mirrored, False if unchanged."""
  same = np.all(out == x, axis=(1, 2, 3))
  mirrored = np.all(out == x[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same ^ mirrored)
  return mirrored


class AlternatingFlipTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_deterministic_and_flips_exactly_every_other_epoch(self):
    x = np.random.default_rng(0).standard_normal((64, 3, 5, 2))
    idx = np.arange(64, dtype=np.int32)
    flip = self.variant(alternating_flip)
    key = jax.random.key(3)
    by_epoch = [_flipped(np.asarray(flip(key, x, idx, e)), x) for e in range(4)]
    np.testing.assert_array_equal(by_epoch[1], ~by_epoch[0])
    np.testing.assert_array_equal(by_epoch[2], by_epoch[0])
    np.testing.assert_array_equal(by_epoch[3], by_epoch[1])
    self.assertTrue(16 < by_epoch[0].sum() < 48)  # a fair coin per image
    np.testing.assert_array_equal(_flipped(np.asarray(flip(key, x, idx, 0)), x), by_epoch[0])
    # A coin belongs to the example, not to its place in the batch.
    perm = np.random.default_rng(1).permutation(64)
    np.testing.assert_array_equal(
        _flipped(np.asarray(flip(key, x[perm], idx[perm], 0)), x[perm]), by_epoch[0][perm]
    )

  def test_errors(self):
    with pytest.raises(ValueError, match="indices"):
      alternating_flip(jax.random.key(0), np.zeros((2, 3, 3, 1)), np.zeros(3, np.int32), 0)
    with pytest.raises(ValueError, match="images"):
      alternating_flip(jax.random.key(0), np.zeros((2, 3, 3)), np.zeros(2, np.int32), 0)

  def test_train_step_feeds_mirrored_images_in_consecutive_epochs(self):
    # A zero linear model after one SGD step (lr 1) holds the image it was fed:
    # kernel[:, y] = (1 - 1/K) x.
    class Lin(nnx.Module):

      def __init__(self):
        self.fc = nnx.Linear(
            3 * 4 * 1, 2, use_bias=False, kernel_init=nnx.initializers.zeros, rngs=nnx.Rngs(0)
        )

      def __call__(self, x):
        return self.fc(x.reshape(x.shape[0], -1))

    x = np.arange(12, dtype=np.float64).reshape(1, 3, 4, 1)
    tx = optax.sgd(1.0)
    model_def, state = create_train_state(Lin(), tx, seed=0)
    step = jax.jit(
        make_train_step(
            model_def, tx, preprocess=lambda key, v, *, train: v, alternating_flip_every=7
        )
    )
    fed = []
    for epoch in range(3):
      s = state._replace(step=jnp.asarray(7 * epoch + 3, jnp.int32))
      s, _ = step(s, x, np.array([1]), np.array([5], np.int32))
      fed.append(np.asarray(s.params["fc"]["kernel"][...])[:, 1].reshape(3, 4) * 2)
    np.testing.assert_allclose(fed[1], fed[0][:, ::-1])
    np.testing.assert_allclose(fed[2], fed[0])
    self.assertTrue(np.allclose(fed[0], x[0, ..., 0]) or np.allclose(fed[1], x[0, ..., 0]))
    with pytest.raises(ValueError, match="indices"):
      make_train_step(
          model_def, tx, preprocess=lambda key, v, *, train: v, alternating_flip_every=7
      )(state, x, np.array([1]))


def _linear_model(hw=4, c=2, k=3, seed=0):
  w = np.random.default_rng(seed).standard_normal((hw * hw * c, k))
  return lambda v: jnp.reshape(v, (v.shape[0], -1)) @ w


class TTATest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_flip_is_the_mean_of_the_flipped_and_unflipped_logits(self):
    f = _linear_model()
    x = np.random.default_rng(2).standard_normal((3, 4, 4, 2))
    got = self.variant(lambda v: tta_logits(f, v, mode="flip"))(x)
    np.testing.assert_allclose(got, (f(x) + f(x[:, :, ::-1])) / 2, rtol=1e-12)
    np.testing.assert_allclose(self.variant(lambda v: tta_logits(f, v, mode="none"))(x), f(x))

  def test_flip_translate_matches_numpy(self):
    f = _linear_model()
    x = np.random.default_rng(3).standard_normal((3, 4, 4, 2))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")

    def mirror(v):
      return (f(v) + f(v[:, :, ::-1])) / 2

    want = mirror(x) / 2 + (mirror(padded[:, :4, :4]) + mirror(padded[:, 2:, 2:])) / 4
    np.testing.assert_allclose(tta_logits(f, x, mode="flip_translate"), want, rtol=1e-12)

  def test_bad_mode(self):
    with pytest.raises(ValueError, match="mode"):
      tta_logits(_linear_model(), np.zeros((1, 4, 4, 2)), mode="mirror")

  def test_eval_step_uses_tta(self):
    class Lin(nnx.Module):

      def __init__(self):
        self.fc = nnx.Linear(4 * 4 * 2, 3, rngs=nnx.Rngs(0))

      def __call__(self, v):
        return self.fc(v.reshape(v.shape[0], -1))

    mesh = make_mesh(1)
    tx = optax.sgd(0.1)
    model = Lin()
    model_def, state = create_train_state(model, tx, seed=0)
    x = np.random.default_rng(4).integers(0, 255, (5, 4, 4, 2)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1], np.int32)
    steps = make_steps(
        model_def,
        tx,
        preprocess=lambda key, v, *, train: v / 255.0,
        mesh=mesh,
        num_train=5,
        steps_per_epoch=1,
        batch_size=5,
        eval_batch_size=8,
        tta="flip",
    )
    arrays = put_global((x, y), replicated(mesh))
    loss_sum, correct, count = np.asarray(
        steps.evaluate(state.params, state.model_state, *arrays, np.int32(0))
    )
    v = x / 255.0
    logits = (model(v) + model(v[:, :, ::-1])) / 2
    # Sums over different reduction orders (the device's, NumPy's): float32 tolerance.
    np.testing.assert_allclose(
        loss_sum, np.sum(cross_entropy(logits, y)), rtol=tolerance(np.float32)
    )
    self.assertEqual((correct, count), (np.sum(np.argmax(logits, -1) == y), 5))


# ----------------------------------------------------------- optimiser and recipe


class OptimizerTest(parameterized.TestCase):

  def test_lookahead_state_has_slow_params_that_sync_every_k_steps(self):
    config = TrainConfig(
        lookahead=True,
        lookahead_sync_period=3,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        epochs=1,
    )
    tx = make_optimizer(config, steps_per_epoch=6)
    model_def, state = create_train_state(
        nnx.Linear(2, 1, rngs=nnx.Rngs(0)), tx, seed=0, lookahead=True
    )
    self.assertIsInstance(state.params, optax.LookaheadParams)
    slow0 = jax.tree.map(np.asarray, state.params.slow)
    self.assertIs(eval_params(state.params), state.params.slow)
    alpha = lookahead_schedule(config, steps_per_epoch=6)
    params, opt_state = state.params, state.opt_state
    grads = jax.tree.map(jnp.ones_like, params.fast)

    @jax.jit
    def step(params, opt_state):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    for t in range(3):
      fast_before = jax.tree.map(np.asarray, params.fast)
      params, opt_state = step(params, opt_state)
      if t < 2:  # between synchronisations the slow parameters stay
        jax.tree.map(np.testing.assert_array_equal, params.slow, slow0)
    # At the 3rd step: slow += alpha(2) * (fast after the step - slow); fast = slow.
    want = jax.tree.map(lambda s, f: s + float(alpha(2)) * (f - 0.1 - s), slow0, fast_before)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params.slow, want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params.fast, want)
    self.assertEqual(float(alpha(0)), 1.0)
    self.assertAlmostEqual(float(alpha(6)), 1 - 0.95**3, places=6)
    self.assertLess(float(alpha(6)), float(alpha(3)))

  def test_norm_param_mask_and_scaled_norm_lr(self):
    params = nnx.state(models.abstract("fastnet", **SMALL), nnx.Param)
    flat = {
        jax.tree_util.keystr(p): m
        for p, m in jax.tree_util.tree_flatten_with_path(norm_param_mask(params))[0]
    }
    norm = sorted(k for k, m in flat.items() if m)
    self.assertEqual(len(norm), 6)  # three groups x two BatchNorm offsets
    self.assertTrue(all("norm" in k and "bias" in k for k in norm))
    self.assertFalse(flat["['whiten']['bias'].value"])
    resnet = norm_param_mask(nnx.state(models.abstract("resnet20"), nnx.Param))
    self.assertTrue(resnet["bn"]["scale"].get_value() and not resnet["conv"]["kernel"].get_value())

    tree = {"norm": {"bias": jnp.ones(2)}, "conv": {"kernel": jnp.ones((2, 2))}}
    base = TrainConfig(lr=0.5, momentum=0.0, weight_decay=0.1, schedule="constant")
    plain, _ = make_optimizer(base, steps_per_epoch=1).update(
        tree, make_optimizer(base, steps_per_epoch=1).init(tree), tree
    )
    config = base.replace(norm_lr_scale=8.0, decay_all=True)
    tx = make_optimizer(config, steps_per_epoch=1)
    scaled, _ = tx.update(tree, tx.init(tree), tree)
    np.testing.assert_allclose(scaled["conv"]["kernel"], -0.5 * (1 + 0.1))  # unchanged
    np.testing.assert_allclose(scaled["norm"]["bias"], -0.5 * (8 + 0.1))  # decay not scaled
    np.testing.assert_allclose(plain["norm"]["bias"], -0.5)  # BN not decayed by default

  def test_warmup_from_a_fraction_gives_airbench_triangle(self):
    config = TrainConfig.from_recipe("fast", epochs=10)
    spe = 48
    sched = make_schedule(config, steps_per_epoch=spe)
    total = 10 * spe
    peak = round(0.23 * total)
    steps = np.arange(total)
    want = config.lr * np.interp(steps, [0, peak, total], [0.2, 1.0, 0.07])
    np.testing.assert_allclose([float(sched(s)) for s in steps], want, rtol=1e-5)


def _parse(argv):
  parser = argparse.ArgumentParser()
  add_subcommands(parser.add_subparsers())
  return parser.parse_args(["train", *argv])


class RecipeTest(parameterized.TestCase):

  def test_fast_recipe_values(self):
    c = TrainConfig.from_recipe("fast")
    self.assertEqual(
        (
            c.model,
            c.batch_size,
            c.epochs,
            c.optimizer,
            c.momentum,
            c.nesterov,
            c.label_smoothing,
            c.norm_lr_scale,
            c.decay_all,
            c.lookahead,
            c.augment,
            c.crop_padding,
            c.flip,
            c.tta,
            c.schedule,
        ),
        (
            "fastnet",
            1024,
            10,
            "sgd",
            0.85,
            True,
            0.2,
            64.0,
            False,
            True,
            True,
            2,
            "alternating",
            "flip_translate",
            "linear",
        ),
    )
    # airbench: lr 11.5 per 1024 examples of a summed loss, divided by 1 + 1/(1 - 0.85).
    self.assertAlmostEqual(c.lr, 1.5)
    self.assertAlmostEqual(c.weight_decay, 0.0153 / 11.5)
    self.assertAlmostEqual(c.warmup_epochs, 2.3)
    self.assertEqual((c.warmup_start_fraction, c.final_lr_fraction), (0.2, 0.07))

  def test_overrides_win_and_derived_values_follow(self):
    c = TrainConfig.from_recipe("fast", batch_size=512, epochs=20, momentum=0.9)
    self.assertEqual((c.batch_size, c.epochs, c.momentum), (512, 20, 0.9))
    self.assertAlmostEqual(c.lr, 11.5 * 0.5 / 11)
    self.assertAlmostEqual(c.warmup_epochs, 4.6)
    self.assertAlmostEqual(c.lr * c.weight_decay, 0.0153 * 0.5 / 11)
    c = TrainConfig.from_recipe("fast", lr=0.5, warmup_epochs=1.0, tta="flip")
    self.assertEqual((c.lr, c.warmup_epochs, c.tta), (0.5, 1.0, "flip"))
    self.assertAlmostEqual(c.lr * c.weight_decay, 0.0153 / (1 + 1 / 0.15))  # per-step decay kept
    c = TrainConfig.from_recipe("fast", weight_decay=0.0, optimizer="sgd")
    self.assertEqual(c.weight_decay, 0.0)

  def test_command_line(self):
    c = config_from_args(
        _parse(["--recipe", "fast", "--batch-size", "256", "--no-lookahead", "--data", "cifar10"])
    )
    self.assertEqual(
        (c.model, c.batch_size, c.lookahead, c.data, c.flip),
        ("fastnet", 256, False, "cifar10", "alternating"),
    )
    self.assertAlmostEqual(c.lr, 1.5 / 4)
    self.assertEqual(config_from_args(_parse(["--epochs", "3"])).model, "seed-cnn")
    with self.assertRaisesRegex(ValueError, "--recipe"):
      config_from_args(_parse(["--recipe", "fast"]), TrainConfig())

  def test_errors_name_the_field(self):
    with self.assertRaisesRegex(ValueError, "name"):
      TrainConfig.from_recipe("slow")
    with self.assertRaisesRegex(ValueError, "unknown field"):
      TrainConfig.from_recipe("fast", epoch=3)
    for field, value in (
        ("flip", "sometimes"),
        ("tta", "mirror"),
        ("crop_padding", -1),
        ("lookahead_decay", 1.0),
        ("lookahead_sync_period", 0),
        ("data_init_images", -5),
        ("warmup_start_fraction", -0.1),
        ("norm_lr_scale", 0.0),
    ):
      with self.assertRaisesRegex(ValueError, field):
        TrainConfig(**{field: value})
    with self.assertRaisesRegex(ValueError, "norm_lr_scale"):
      TrainConfig(optimizer="adam", norm_lr_scale=64.0)
    with self.assertRaisesRegex(ValueError, "tta"):
      evaluate("/nonexistent-run", tta="mirror")  # checked before anything is read


# ------------------------------------------------------------------- end to end


def _tiny_cifar(n_train=48, n_val=16, hw=12, seed=0):
  r = np.random.default_rng(seed)
  n = n_train + n_val
  y = r.integers(0, 2, n).astype(np.int32)
  x = r.integers(0, 120, (n, hw, hw, 3))
  x[y == 1, :, : hw // 2, 0] += 120  # class 1: a bright left half in red
  x = x.astype(np.uint8)
  return Dataset(
      "tiny",
      x[:n_train],
      y[:n_train],
      x[n_train:],
      y[n_train:],
      None,
      None,
      ("a", "b"),
      "generated",
  )


def test_fast_recipe_trains_end_to_end_with_whitening_and_lookahead(tmp_path):
  data = _tiny_cifar()
  # (TTA and plots are covered elsewhere; each costs seconds of compilation or imports.)
  config = TrainConfig.from_recipe(
      "fast",
      model_options={"widths": (4, 8, 8)},
      epochs=2,
      batch_size=16,
      eval_batch_size=16,
      data_init_images=16,
      checkpoint_every=2,
      tta="flip",
  )
  result = train(config, out_dir=tmp_path / "run", dataset=data, quiet=True, plots=False)
  records = read_metrics(tmp_path / "run" / "metrics.jsonl")
  assert [r["epoch"] for r in records] == [1, 2]
  assert all(0 <= r["val_accuracy"] <= 1 and math.isfinite(r["train_loss"]) for r in records)
  # The recipe applies its TTA to the final evaluation only (tta_final_only).
  assert [r["tta"] for r in records] == ["none", "flip"]
  assert (result.steps.traces["evaluate_plain"], result.steps.traces["evaluate"]) == (1, 1)
  final = evaluate(tmp_path / "run", tta="flip", splits=("val",), dataset=data)
  assert final["val_accuracy"] == records[-1]["val_accuracy"]
  np.testing.assert_allclose(final["val_loss"], records[-1]["val_loss"], rtol=1e-6)
  assert isinstance(result.state.params, optax.LookaheadParams)
  assert int(result.state.step) == 6
  ckpt = Checkpointer(tmp_path / "run" / "checkpoints")  # slow params and all come back
  restored = ckpt.restore(2, result.state)
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, restored, result.state)
  # The whitening kernel is whiten_init of 16 normalised training images, evenly spaced.
  x = data.train_images.astype(np.float64)
  mean, std = x.mean((0, 1, 2)), x.std((0, 1, 2))
  reference = _fastnet(widths=(4, 8, 8), input_shape=(12, 12, 3))
  whiten_init(reference, ((x - mean) / std)[::3])  # 48 // 16

  def inverse_second_moment(kernel):  # V diag(1/(λ+ε)) Vᵀ: blind to eigenvector signs
    k = np.asarray(kernel, np.float64).reshape(12, 24)[:, :12]
    return k @ k.T

  np.testing.assert_allclose(
      inverse_second_moment(result.model.whiten.kernel[...]),
      inverse_second_moment(reference.whiten.kernel[...]),
      rtol=1e-3,
      atol=1e-3,
  )
  assert result.steps.traces["train_one"] == 1
