"""The training loop, steps and checkpoints on a tiny NNX model and tiny generated data.

Covers: step determinism and retracing, learning on a separable problem, scan == Python
loop, run files (config.json, metrics.jsonl, plots), resume == uninterrupted, NaN stop,
partial checkpoints, evaluation.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnnjax.data.dataset import Dataset
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.config import TrainConfig
from cnnjax.train.loop import NonFiniteLossError, evaluate, train
from cnnjax.train.metrics import TIMING_KEYS, read_metrics
from cnnjax.train.sharding import make_mesh, put_global, replicated
from cnnjax.train.state import create_train_state
from cnnjax.train.steps import cross_entropy, make_steps


class TinyNet(nnx.Module):
  """conv 3x3 -> BatchNorm -> ReLU -> global mean -> dropout -> dense."""

  def __init__(self, *, num_classes, rngs, input_shape):
    self.conv = nnx.Conv(input_shape[-1], 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.25, rngs=rngs)
    self.fc = nnx.Linear(4, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x))).mean((1, 2))
    return self.fc(self.drop(x))


class Flat(nnx.Module):
  """A linear classifier; with ``nan_after`` its training logits turn NaN from that step."""

  def __init__(self, *, num_classes, rngs, input_shape, nan_after=None):
    self.fc = nnx.Linear(int(np.prod(input_shape)), num_classes, rngs=rngs)
    self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))
    self.nan_after = nan_after
    self.deterministic = False

  def __call__(self, x):
    y = self.fc(x.reshape(x.shape[0], -1))
    if self.nan_after is not None and not self.deterministic:
      y = y + jnp.where(self.count[...] >= self.nan_after, jnp.nan, 0.0)
      self.count[...] += 1
    return y


def toy_data(n_train=64, n_val=32, hw=6, seed=0):
  """Two linearly separable classes: class 1 has a brighter red channel."""
  r = np.random.default_rng(seed)
  n = n_train + n_val
  y = r.integers(0, 2, n).astype(np.int32)
  x = r.integers(0, 100, (n, hw, hw, 3))
  x[y == 1, :, :, 0] += 120
  x = x.astype(np.uint8)
  return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], None, None,
                 ("dark", "red"), "generated")


CONFIG = TrainConfig(model="tiny", epochs=2, batch_size=16, eval_batch_size=32, lr=0.1,
                     augment=True, label_smoothing=0.1, weight_decay=1e-3)


def _strip(records):
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("full")
  return train(CONFIG, out_dir=out, dataset=toy_data(), model_fn=TinyNet, quiet=True)


def test_cross_entropy_matches_numpy():
  logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
  labels = np.array([0, 1])
  for eps in (0.0, 0.2):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    target = np.eye(3)[labels] * (1 - eps) + eps / 3
    want = -(target * logp).sum(-1)
    got = cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=eps)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_steps_deterministic_traced_once_scan_equals_loop_and_learning():
  ds = toy_data()
  mesh = make_mesh(1)
  tx = optax.sgd(0.05, momentum=0.9)
  images = put_global(ds.train_images, replicated(mesh))
  labels = put_global(ds.train_labels, replicated(mesh))

  def fresh():
    model = Flat(num_classes=2, rngs=nnx.Rngs(0), input_shape=(6, 6, 3))
    model_def, state = create_train_state(model, tx, seed=0)
    return model_def, put_global(state, replicated(mesh))

  model_def, _ = fresh()
  common = dict(preprocess=lambda key, x, *, train: x.astype(jnp.float32) / 255 - 0.3,
                mesh=mesh, num_train=64, steps_per_epoch=4, batch_size=16,
                eval_batch_size=32)
  loop = make_steps(model_def, tx, **common)
  scan = make_steps(model_def, tx, steps_per_call=4, unroll=2, **common)

  def run(steps, epochs=6):
    _, state = fresh()
    losses = []
    for epoch in range(epochs):
      perm = steps.permutation(state.rng, epoch)
      if steps.steps_per_call == 1:
        for i in range(4):
          state, m = steps.train_one(state, images, labels, perm, np.int32(i))
          losses.append(m["loss"])
      else:
        state, m = steps.train(state, images, labels, perm, np.int32(0))
        losses.append(m["loss"])
    return jax.device_get(state.params), np.concatenate(jax.device_get(losses))

  p1, l1 = run(loop)
  p2, l2 = run(loop)
  jax.tree.map(np.testing.assert_array_equal, p1, p2)  # same seed, same bits
  np.testing.assert_array_equal(l1, l2)
  assert loop.traces["train_one"] == 1  # six epochs, 24 calls, one trace
  p3, l3 = run(scan)
  assert scan.traces["train"] == 1
  np.testing.assert_allclose(l3, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p3, p1)
  assert l1[-4:].mean() < 0.5 * l1[:4].mean(), l1  # learns the separable problem


def test_run_writes_config_metrics_checkpoints_and_plots(full_run):
  out = full_run.out_dir
  assert TrainConfig.load(os.path.join(out, "config.json")) == CONFIG
  records = read_metrics(os.path.join(out, "metrics.jsonl"))
  assert [r["epoch"] for r in records] == [1, 2]
  for r in records:
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"):
      assert np.isfinite(r[key]), (key, r)
    assert "test_accuracy" not in r  # the toy data has no test split
  assert "compile_seconds" in records[0] and records[1]["step"] == 8
  assert records == full_run.history
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1", "2"]
  for name in ("curves.png", "filters.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_existing_run_needs_resume(full_run):
  with pytest.raises(ValueError, match="out_dir"):
    train(CONFIG, out_dir=full_run.out_dir, dataset=toy_data(), model_fn=TinyNet, quiet=True)
  with pytest.raises(ValueError, match="batch_size"):
    train(CONFIG.replace(batch_size=100), out_dir=full_run.out_dir + "-x",
          dataset=toy_data(), model_fn=TinyNet, quiet=True)


def test_evaluate_reproduces_the_last_validation_metrics(full_run):
  result = evaluate(full_run.out_dir, dataset=toy_data(), model_fn=TinyNet)
  last = full_run.history[-1]
  assert result["epoch"] == 2
  assert result["val_accuracy"] == last["val_accuracy"]
  np.testing.assert_allclose(result["val_loss"], last["val_loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="splits"):
    evaluate(full_run.out_dir, splits=("holdout",), dataset=toy_data(), model_fn=TinyNet)
  with pytest.raises(ValueError, match="run_dir"):
    evaluate(os.path.dirname(full_run.out_dir), dataset=toy_data(), model_fn=TinyNet)


def test_resume_equals_uninterrupted_and_skips_partial_checkpoints(full_run, tmp_path):
  # The full run as it was when stopped after epoch 1: its epoch-1 checkpoint, written
  # mid-run, and no later one. Its metrics.jsonl still has epoch 2's record (written
  # before the crash), which the resume must drop and write again.
  out = tmp_path / "run"
  shutil.copytree(full_run.out_dir, out)
  shutil.rmtree(out / "checkpoints" / "2")
  # A crash mid-save leaves Orbax's temporary directory; a half-copied run may leave a
  # numbered directory without metadata. Neither may be taken for epoch 2's checkpoint.
  os.makedirs(out / "checkpoints" / "2.orbax-checkpoint-tmp-1700000000" / "default")
  os.makedirs(out / "checkpoints" / "2" / "default")
  with pytest.warns(UserWarning, match="unfinished checkpoint"):
    resumed = train(CONFIG, out_dir=out, dataset=toy_data(), model_fn=TinyNet, quiet=True,
                    resume=True)
  assert [r["epoch"] for r in resumed.history] == [1, 2]
  assert _strip(resumed.history) == _strip(full_run.history)
  assert _strip(read_metrics(out / "metrics.jsonl")) == _strip(full_run.history)
  raw = lambda t: jax.tree.map(  # noqa: E731
      lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x, t)
  for a, b in zip(resumed.state, full_run.state):  # params, BatchNorm stats, RNG, optimizer
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(raw(a)),
                 jax.device_get(raw(b)))


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
  def model_fn(**kw):
    return Flat(nan_after=5, **kw)

  config = CONFIG.replace(epochs=3, augment=False)
  with pytest.raises(NonFiniteLossError, match=r"nan at step 5 \(epoch 2, batch 2 of 4\)"):
    train(config, out_dir=tmp_path, dataset=toy_data(), model_fn=model_fn, quiet=True)
  ckpt = Checkpointer(tmp_path / "checkpoints")
  assert ckpt.epochs() == [1]
  ckpt.close()
  assert [r["epoch"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_checkpointer_quarantines_partial_and_restores_keys(tmp_path):
  state = {"w": jnp.arange(3.0, dtype=jnp.float32), "key": jax.random.key(7)}
  ckpt = Checkpointer(tmp_path, keep=3)
  ckpt.save(1, state)
  ckpt.close()
  os.makedirs(tmp_path / "3" / "default")
  os.makedirs(tmp_path / "2.orbax-checkpoint-tmp-5" / "default")
  with pytest.warns(UserWarning, match="unfinished"):
    ckpt = Checkpointer(tmp_path, keep=3)
  assert ckpt.epochs() == [1] and ckpt.latest_epoch() == 1
  target = {"w": jnp.zeros(3, jnp.float32), "key": jax.random.key(0)}
  restored = ckpt.restore(1, target)
  np.testing.assert_array_equal(restored["w"], state["w"])
  np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                jax.random.key_data(state["key"]))
  ckpt.save(2, target)  # the planted "3" no longer blocks later saves
  assert ckpt.epochs() == [1, 2]
  with pytest.raises(ValueError, match="epoch"):
    ckpt.restore(3, target)
  ckpt.close()
