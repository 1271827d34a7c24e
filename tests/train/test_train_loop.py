"""The training loop, steps and checkpoints on a tiny NNX model and tiny generated data.

Covers: step determinism and retracing, learning on a separable problem, scan == Python
loop, run files (config.json, metrics.jsonl, plots), resume == uninterrupted, NaN stop,
partial checkpoints, evaluation.
"""

import json
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
from cnnjax.train.evaluation import evaluate
from cnnjax.train.loop import NonFiniteLossError, train
from cnnjax.train.metrics import TIMING_KEYS, MetricsLog, read_metrics
from cnnjax.train.sharding import make_mesh, put_global, replicated
from cnnjax.train.state import create_train_state
from cnnjax.train.steps import LeafProgram, cross_entropy, make_steps, over_leaves


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
  return Dataset(
      "toy",
      x[:n_train],
      y[:n_train],
      x[n_train:],
      y[n_train:],
      None,
      None,
      ("dark", "red"),
      "generated",
  )


CONFIG = TrainConfig(
    model="tiny",
    epochs=2,
    batch_size=16,
    eval_batch_size=32,
    lr=0.1,
    augment=True,
    label_smoothing=0.1,
    weight_decay=1e-3,
)


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


def _flat_problem():
  """The toy data on one device, SGD, ``fresh() -> (model_def, state)`` of a Flat model,
  and the ``make_steps`` arguments of 4 steps of 16 per epoch."""
  ds = toy_data()
  mesh = make_mesh(1)
  tx = optax.sgd(0.05, momentum=0.9)
  images = put_global(ds.train_images, replicated(mesh))
  labels = put_global(ds.train_labels, replicated(mesh))

  def fresh():
    model = Flat(num_classes=2, rngs=nnx.Rngs(0), input_shape=(6, 6, 3))
    model_def, state = create_train_state(model, tx, seed=0)
    return model_def, put_global(state, replicated(mesh))

  common = dict(
      preprocess=lambda key, x, *, train: x.astype(jnp.float32) / 255 - 0.3,
      mesh=mesh,
      num_train=64,
      steps_per_epoch=4,
      batch_size=16,
      eval_batch_size=32,
  )
  return tx, images, labels, fresh, common


def test_steps_deterministic_traced_once_scan_equals_loop_and_learning():
  tx, images, labels, fresh, common = _flat_problem()
  model_def, _ = fresh()
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
    train(
        CONFIG.replace(batch_size=100),
        out_dir=full_run.out_dir + "-x",
        dataset=toy_data(),
        model_fn=TinyNet,
        quiet=True,
    )


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
    resumed = train(
        CONFIG, out_dir=out, dataset=toy_data(), model_fn=TinyNet, quiet=True, resume=True
    )
  assert [r["epoch"] for r in resumed.history] == [1, 2]
  assert _strip(resumed.history) == _strip(full_run.history)
  assert _strip(read_metrics(out / "metrics.jsonl")) == _strip(full_run.history)
  raw = lambda t: jax.tree.map(  # noqa: E731
      lambda x: jax.random.key_data(x)
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
      else x,
      t,
  )
  for a, b in zip(
      resumed.state, full_run.state, strict=True
  ):  # params, BatchNorm stats, RNG, optimizer
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(raw(a)), jax.device_get(raw(b)))


@pytest.mark.parametrize("log_every", [20, 1])  # metrics read at the epoch's end / lagging
def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path, log_every):
  def model_fn(**kw):
    return Flat(nan_after=5, **kw)

  config = CONFIG.replace(epochs=3, augment=False, log_every=log_every)
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
  np.testing.assert_array_equal(
      jax.random.key_data(restored["key"]), jax.random.key_data(state["key"])
  )
  ckpt.save(2, target)  # the planted "3" no longer blocks later saves
  assert ckpt.epochs() == [1, 2]
  with pytest.raises(ValueError, match="epoch"):
    ckpt.restore(3, target)
  ckpt.close()


# ------------------------------------------------------------------ verified checkpoints


def _largest_file(path):
  files = [
      os.path.join(r, n)
      for r, _, names in os.walk(path)
      for n in names
      if n != "cnnjax_sha256.json"
  ]
  return max(files, key=os.path.getsize)


def _flip_byte(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x01]))


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, os.remove])
def test_damaged_checkpoint_is_quarantined_and_the_previous_one_used(tmp_path, damage):
  state = {"w": jnp.arange(256.0, dtype=jnp.float32), "key": jax.random.key(7)}
  ckpt = Checkpointer(tmp_path, keep=3)
  ckpt.save(1, state)
  ckpt.save(2, jax.tree.map(lambda x: x + 1 if not _is_key(x) else x, state))
  assert ckpt.verify(1) is None and ckpt.verify(2) is None
  damage(_largest_file(tmp_path / "2"))
  assert ckpt.verify(2) is not None
  target = {"w": jnp.zeros(256, jnp.float32), "key": jax.random.key(0)}
  with pytest.raises(ValueError, match="failed verification"):
    ckpt.restore(2, target)  # never read unverified, whatever Orbax would make of it
  with pytest.warns(UserWarning, match=r"2 failed verification .*moved to .*2\.corrupt") as w:
    assert ckpt.latest_verified() == 1
  assert len(w) == 1 and "\n" not in str(w[0].message)
  assert sorted(os.listdir(tmp_path)) == ["1", "2.corrupt"]
  np.testing.assert_array_equal(ckpt.restore(1, target)["w"], state["w"])
  ckpt.save(2, target)  # the quarantined directory does not block a new epoch 2
  assert ckpt.epochs() == [1, 2] and ckpt.latest_verified() == 2
  ckpt.close()


def _is_key(x):
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def test_resume_skips_a_flipped_checkpoint_and_cleans_up_leftovers(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run.out_dir, out)
  _flip_byte(_largest_file(out / "checkpoints" / "2"))
  os.makedirs(out / "checkpoints" / "3.incomplete" / "default")  # left by older versions
  os.makedirs(out / "checkpoints" / "3.orbax-checkpoint-tmp-17" / "default")  # a kill
  with pytest.warns(UserWarning) as w:
    resumed = train(
        CONFIG, out_dir=out, dataset=toy_data(), model_fn=TinyNet, quiet=True, resume=True
    )
  messages = [str(m.message) for m in w]
  assert any("2 failed verification" in m for m in messages), messages
  assert sum("deleted" in m for m in messages) == 2, messages
  assert sorted(os.listdir(out / "checkpoints")) == ["1", "2", "2.corrupt"]
  # Epoch 2 was trained again from epoch 1's checkpoint: bit for bit the same run.
  assert _strip(resumed.history) == _strip(full_run.history)
  jax.tree.map(
      np.testing.assert_array_equal,
      jax.device_get(resumed.state.params),
      jax.device_get(full_run.state.params),
  )


def test_nan_stop_names_the_last_verified_checkpoint(tmp_path):
  def model_fn(**kw):
    return Flat(nan_after=9, **kw)  # step 9: epoch 3, batch 2

  def corrupt_after_epoch_2(record, state):
    if record["epoch"] == 2:
      _flip_byte(_largest_file(tmp_path / "checkpoints" / "2"))

  config = CONFIG.replace(epochs=3, augment=False, keep_checkpoints=3)
  with pytest.raises(NonFiniteLossError) as e:
    train(
        config,
        out_dir=tmp_path,
        dataset=toy_data(),
        model_fn=model_fn,
        quiet=True,
        callbacks=[corrupt_after_epoch_2],
    )
  assert "step 9 (epoch 3, batch 2 of 4)" in str(e.value)
  assert f"checkpoint is epoch 1 ({tmp_path}/checkpoints/1, verified)" in str(e.value)


# ------------------------------------------------------------------ one writer per run


def test_a_second_writer_fails_and_a_stale_lock_is_taken_over(tmp_path, capsys):
  import socket
  import subprocess
  import sys

  from cnnjax.train.lock import RunInUseError, RunLock

  config = CONFIG.replace(epochs=1)
  holder = RunLock(tmp_path / "run").acquire()  # flock: as good as another process
  with pytest.raises(RunInUseError, match=rf"being written by process {os.getpid()} on "):
    train(
        config,
        out_dir=tmp_path / "run",
        dataset=toy_data(),
        model_fn=TinyNet,
        quiet=True,
        plots=False,
    )
  assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")
  holder.release()
  # A lock file naming a dead process (killed: its flock went with it) is stale.
  dead = subprocess.run(
      [sys.executable, "-c", "import os; print(os.getpid())"],
      capture_output=True,
      text=True,
      check=True,
  ).stdout.strip()
  with open(tmp_path / "run" / ".lock", "w") as f:
    f.write(f'{{"pid": {dead}, "host": "{socket.gethostname()}", "since": "then"}}')
  train(config, out_dir=tmp_path / "run", dataset=toy_data(), model_fn=TinyNet, plots=False)
  assert f"stale lock {tmp_path}/run/.lock of process {dead}" in capsys.readouterr().out
  assert (tmp_path / "run" / ".lock").read_text() == ""  # released


def test_resume_records_config_changes_only_after_an_epoch_and_refuses_a_new_seed(tmp_path):
  import json

  config = CONFIG.replace(epochs=1, augment=False, schedule="constant")
  train(config, out_dir=tmp_path, dataset=toy_data(), model_fn=Flat, quiet=True, plots=False)
  changed = config.replace(epochs=2, lr=0.5)
  with pytest.raises(NonFiniteLossError):  # diverges (here: NaN at its 2nd step) in epoch 2
    train(
        changed,
        out_dir=tmp_path,
        dataset=toy_data(),
        resume=True,
        quiet=True,
        plots=False,
        model_fn=lambda **kw: Flat(nan_after=1, **kw),
    )
  assert TrainConfig.load(tmp_path / "config.json") == config  # not poisoned
  with pytest.raises(ValueError, match=r"seed got 1 with resume=True.*expected seed=0"):
    train(
        changed.replace(seed=1),
        out_dir=tmp_path,
        dataset=toy_data(),
        resume=True,
        quiet=True,
        plots=False,
        model_fn=Flat,
    )
  train(
      changed,
      out_dir=tmp_path,
      dataset=toy_data(),
      resume=True,
      quiet=True,
      plots=False,
      model_fn=Flat,
  )
  assert TrainConfig.load(tmp_path / "config.json") == changed
  history = [
      json.loads(line) for line in (tmp_path / "config_history.jsonl").read_text().splitlines()
  ]
  assert [h["epoch"] for h in history] == [1, 2]
  assert TrainConfig.from_dict(history[0]["config"]) == config
  assert history[1]["changes"] == {"epochs": [1, 2], "lr": [0.1, 0.5]}


def test_resume_repairs_a_torn_metrics_line(full_run, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(full_run.out_dir, out)
  shutil.rmtree(out / "checkpoints" / "2")  # killed while writing epoch 2's record
  lines = (out / "metrics.jsonl").read_text().splitlines()
  with open(out / "metrics.jsonl", "w") as f:
    f.write(lines[0] + "\n" + lines[1][:25])
  with pytest.raises(ValueError, match=rf"{out}/metrics.jsonl line 2 is not a metrics record"):
    read_metrics(out / "metrics.jsonl")
  with pytest.warns(UserWarning, match="line 2 is torn"):
    resumed = train(
        CONFIG,
        out_dir=out,
        dataset=toy_data(),
        model_fn=TinyNet,
        quiet=True,
        resume=True,
        plots=False,
    )
  assert _strip(read_metrics(out / "metrics.jsonl")) == _strip(full_run.history)
  assert _strip(resumed.history) == _strip(full_run.history)
  with open(out / "metrics.jsonl", "w") as f:  # damage that is not a torn tail
    f.write(lines[0][:25] + "\n" + lines[1] + "\n")
  with pytest.raises(ValueError, match=rf"{out}/metrics.jsonl line 1 is not"):
    MetricsLog(out / "metrics.jsonl").truncate(2)  # what a resume calls


# ------------------------------------------------------------------ dispatch and compiles


def test_leaf_program_is_the_jitted_step_over_the_states_leaves():
  tx, images, labels, fresh, common = _flat_problem()
  model_def, state = fresh()
  steps = make_steps(model_def, tx, **common)
  perm = steps.permutation(state.rng, 0)
  leaves, treedef = jax.tree.flatten(state)
  program = LeafProgram(
      over_leaves(steps.train_one, treedef)
      .lower(leaves, images, labels, perm, np.int32(0))
      .compile(),
      treedef,
  )
  want, m_want = steps.train_one(jax.tree.map(jnp.copy, state), images, labels, perm, np.int32(1))
  got, m_got = program(jax.tree.map(jnp.copy, state), images, labels, perm, np.int32(1))
  assert jax.tree.structure(got) == jax.tree.structure(want)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), jax.device_get(want))
  np.testing.assert_array_equal(m_got["loss"], m_want["loss"])
  out, m = program.leaves(
      jax.tree.leaves(jax.tree.map(jnp.copy, state)), images, labels, perm, np.int32(1)
  )
  jax.tree.map(
      np.testing.assert_array_equal, jax.device_get(out), jax.device_get(jax.tree.leaves(want))
  )
  assert "train_one" in program.as_text()  # the compiled program's attributes

  def drops_a_leaf(state, *args):
    state, m = steps.train_one(state, *args)
    return state._replace(rng=None), m

  with pytest.raises(ValueError, match="over_leaves: fn returned a state of structure"):
    over_leaves(drops_a_leaf, treedef).lower(leaves, images, labels, perm, np.int32(0))


def test_evaluation_compiles_in_the_background_and_each_program_is_reported_once(tmp_path):
  config = CONFIG.replace(epochs=3, tta="flip", tta_final_only=True)
  result = train(
      config, out_dir=tmp_path, dataset=toy_data(), model_fn=TinyNet, quiet=True, plots=False
  )
  records = read_metrics(tmp_path / "metrics.jsonl")
  assert "train_step" in records[0]["compile_seconds"]
  reported = [name for r in records for name in r.get("compile_seconds", {})]
  assert sorted(reported) == ["eval_step", "train_step", "tta"]  # each once, all by the end
  for r in records:
    assert set(r.get("trace_seconds", {})) == set(r.get("compile_seconds", {}))
    for key in ("compile_seconds", "trace_seconds", "compile_wait_seconds"):
      assert all(v >= 0 for v in r.get(key, {}).values())
  assert records[-1]["tta"] == "flip" and records[0]["tta"] == "none"
  del result
  with open(tmp_path / "run.json") as f:
    assert json.load(f)["platform"]["steps_per_call"] == 1
  ckpt = Checkpointer(tmp_path / "checkpoints", cleanup=False)
  assert ckpt.epochs() == [2, 3] and ckpt.verify(3) is None  # the async saves finished
  ckpt.close()


def test_asynchronous_save_keeps_the_state_it_was_given(tmp_path):
  state = {"w": jnp.arange(1000.0, dtype=jnp.float32), "key": jax.random.key(3)}
  want = np.asarray(state["w"]).copy()
  step = jax.jit(lambda s: {"w": s["w"] * 2 + 1, "key": s["key"]}, donate_argnums=0)
  ckpt = Checkpointer(tmp_path, keep=3, asynchronous=True)
  ckpt.save(1, state)
  state = step(state)  # donates (overwrites) the saved buffers while the save may run
  state = step(state)
  ckpt.save(2, state)  # waits for save 1 first
  assert ckpt.epochs() == [1, 2]
  target = {"w": jnp.zeros(1000, jnp.float32), "key": jax.random.key(0)}
  np.testing.assert_array_equal(ckpt.restore(1, target)["w"], want)
  np.testing.assert_array_equal(ckpt.restore(2, target)["w"], (want * 2 + 1) * 2 + 1)
  assert ckpt.verify(1) is None and ckpt.verify(2) is None
  ckpt.close()


def test_a_failed_background_save_is_raised_by_the_next_call(tmp_path, monkeypatch):
  from cnnjax.train import checkpoint as ckpt_mod

  def broken(path):
    raise OSError(f"disk full writing {path}")

  monkeypatch.setattr(ckpt_mod, "_write_checksums", broken)
  ckpt = Checkpointer(tmp_path, asynchronous=True)
  ckpt.save(1, {"w": jnp.ones(3)})
  with pytest.raises(OSError, match="disk full"):
    ckpt.wait()
  ckpt.wait()  # raised once
  ckpt.close()
