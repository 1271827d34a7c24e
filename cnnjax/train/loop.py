"""The training loop: ``train`` a ``TrainConfig`` into an output directory, ``evaluate`` a run.

A run directory holds ``config.json``, ``config_history.jsonl``, ``metrics.jsonl`` (one
object per epoch), ``checkpoints/<epoch>/`` (Orbax, with SHA-256 checksums), ``curves.png``,
``filters.png`` and ``.lock``. ``train(..., resume=True)`` restores the latest verified
checkpoint and continues exactly where it stopped: the epoch's shuffling and augmentation keys
are folded from the saved base key, the optimizer state, BatchNorm statistics and dropout RNG
streams come back bit for bit.

One process writes a run at a time (:class:`~cnnjax.train.lock.RunLock`). A resume may
change the config (``--epochs``, ``--lr``, ...) but not its ``seed``; ``config.json`` takes
the changes only once an epoch under them has completed, and ``config_history.jsonl`` keeps
every change with the epoch it applied from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnjax.train import sharding as _sh
from cnnjax.train.checkpoint import CheckpointError, Checkpointer
from cnnjax.train.config import TTA_MODES, TrainConfig, append_history, config_changes
from cnnjax.train.lock import RunLock
from cnnjax.train.metrics import MetricsLog
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.state import ModelDef, TrainState, create_train_state, eval_params
from cnnjax.train.steps import Steps, make_steps

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "build_model",
    "evaluate",
    "init_state",
    "load_dataset",
    "load_run",
    "train",
]

# Model factory: (num_classes=..., rngs=..., input_shape=...) -> nnx.Module.
ModelFn = Callable[..., nnx.Module]
Callback = Callable[[dict[str, Any], TrainState], None]

_SYNC_EVERY = 20  # steps between host syncs (NaN check, progress-bar loss)


class NonFiniteLossError(FloatingPointError):
  """Training stopped because the loss became NaN or infinite."""


@dataclasses.dataclass
class TrainResult:
  """What ``train`` returns.

  Attributes:
    config: the run's configuration.
    out_dir: the run directory.
    history: the ``metrics.jsonl`` records of every epoch so far (including resumed ones).
    state: the final ``TrainState`` (on the devices).
    model_def: the model's graph definitions.
    steps: the run's compiled functions (``steps.train_one.as_text()`` is the optimised
      HLO of a step, ``.cost_analysis()`` its FLOPs), or None if no epoch was left to run.
  """

  config: TrainConfig
  out_dir: str
  history: list[dict[str, Any]]
  state: TrainState
  model_def: ModelDef
  steps: Steps | None = None

  @property
  def model(self) -> nnx.Module:
    """The trained model, in evaluation mode (with the slow parameters under Lookahead)."""
    return nnx.merge(self.model_def.eval, eval_params(self.state.params), self.state.model_state)


def build_model(config: TrainConfig, *, num_classes: int, input_shape: Sequence[int],
                model_fn: ModelFn | None = None) -> nnx.Module:
  """Initialises the run's model with ``nnx.Rngs(config.seed)``.

  Args:
    config: names the model (``config.model``, ``config.model_options``).
    num_classes: output classes.
    input_shape: ``(H, W, C)`` of the images.
    model_fn: overrides the zoo: called as ``model_fn(num_classes=, rngs=, input_shape=)``.
  """
  rngs = nnx.Rngs(config.seed)
  if model_fn is not None:
    return model_fn(num_classes=num_classes, rngs=rngs, input_shape=tuple(input_shape))
  from cnnjax import models

  options = dict(config.model_options)
  options.setdefault("input_shape", tuple(input_shape))
  return models.get(config.model, num_classes=num_classes, rngs=rngs, **options)


def init_state(config: TrainConfig, tx, *, num_classes: int, input_shape: Sequence[int],
               mesh, model_fn: ModelFn | None = None, train_images=None,
               preprocess=None) -> tuple[ModelDef, TrainState]:
  """Builds the model and the optimizer state in one compiled call, placed on ``mesh``.

  Initialising inside ``jax.jit`` compiles one program instead of one per initialiser
  and parameter shape (eagerly, a ResNet's dozens of small compilations dominate start-up
  on CPU), and puts the state straight into its replicated sharding. The weights are drawn
  with jax's classic (non-partitionable) threefry generator whatever the global setting:
  the state is replicated, so partitioning the draws buys nothing, and XLA:CPU compiles
  the partitionable generator's draws of 4-D kernels about 3× slower (measured: init of
  ``seed-cnn`` 4.3 s vs 1.5 s, ``resnet20`` 11.0 s vs 3.7 s on 2 loaded cores).

  If the model has a data-dependent initialisation (a ``data_init(images)`` method, e.g.
  fastnet's whitening layer) and ``train_images`` (uint8, on the devices) and
  ``preprocess`` are given, it runs in the same call on ``config.data_init_images``
  training images evenly spaced over the training part (every ``N // n``-th: a
  class-sorted source gives every class), preprocessed without augmentation.
  """
  defs = []

  def init(images):
    model = build_model(config, num_classes=num_classes, input_shape=input_shape,
                        model_fn=model_fn)
    if images is not None and hasattr(model, "data_init"):
      # Evenly spaced over the training part: the first N of a class-sorted source (an
      # image folder) would all be one class.
      n = min(config.data_init_images, images.shape[0])
      chosen = images[::images.shape[0] // n][:n]
      model.data_init(preprocess(None, chosen, train=False))
    model_def, state = create_train_state(model, tx, seed=config.seed,
                                          lookahead=config.lookahead)
    defs.append(model_def)
    return state

  use = train_images is not None and preprocess is not None and config.data_init_images > 0
  with jax.threefry_partitionable(False):
    state = jax.jit(init, out_shardings=_sh.replicated(mesh))(train_images if use else None)
  return defs[0], state


def load_dataset(config: TrainConfig):
  """``cnnjax.data.load`` with the config's data settings."""
  from cnnjax import data

  return data.load(config.data, data_dir=config.data_dir, cache_dir=config.cache_dir,
                   seed=config.seed, val_size=config.val_size, **config.data_options)


def _make_preprocess(train_images: jax.Array, *, augment: bool, crop_padding: int = 4,
                     flip: str = "random"):
  """Per-channel normalisation (+ crop/flip) as ``preprocess(key, uint8 batch, *, train)``.

  The mean and standard deviation are those of the training part, computed on the device.
  The crop pads by ``crop_padding`` (reflect); only ``flip="random"`` flips here (the
  alternating flip needs the examples' indices and happens in the train step).
  """
  from cnnjax.data import pipeline

  mean, std = jax.jit(pipeline.channel_stats)(train_images)
  mean, std = mean.astype(jnp.float32), std.astype(jnp.float32)

  def preprocess(key, images, *, train: bool):
    x = pipeline.normalize(images, mean, std)
    if train and augment:
      x = pipeline.augment(key, x, padding=crop_padding, flip=flip == "random")
    return x

  return preprocess


def _device_arrays(dataset, mesh):
  repl = _sh.replicated(mesh)
  out = {
      "train": _sh.put_global((dataset.train_images, dataset.train_labels), repl),
      "val": _sh.put_global((dataset.val_images, dataset.val_labels), repl)
      if len(dataset.val_images) else None,
  }
  if getattr(dataset, "test_images", None) is not None and len(dataset.test_images):
    out["test"] = _sh.put_global((dataset.test_images, dataset.test_labels), repl)
  return out


def _eval_split(steps: Steps, state: TrainState, arrays, eval_batch_size: int, *,
                tta: bool = True) -> dict[str, float]:
  images, labels = arrays
  evaluate = steps.evaluate if tta else steps.evaluate_plain
  total = None
  for start in range(0, images.shape[0], eval_batch_size):
    sums = evaluate(state.params, state.model_state, images, labels, np.int32(start))
    total = sums if total is None else total + sums
  loss_sum, correct, count = (float(v) for v in _sh.to_host(total))
  return {"loss": loss_sum / count, "accuracy": correct / count}


class _Progress:
  """A tqdm bar over the run's remaining steps (ETA), or nothing when quiet/not a TTY."""

  def __init__(self, total: int, *, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)

  def update(self, n: int, **postfix) -> None:
    if self.bar is not None:
      if postfix:
        self.bar.set_postfix(postfix, refresh=False)
      self.bar.update(n)

  def describe(self, text: str) -> None:
    if self.bar is not None:
      self.bar.set_description(text, refresh=False)

  def write(self, text: str) -> None:
    if self.bar is not None:
      self.bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _is_main() -> bool:
  return jax.process_index() == 0


def _check_out_dir(out_dir: str, resume: bool) -> None:
  has_run = os.path.exists(os.path.join(out_dir, "metrics.jsonl")) or os.path.isdir(
      os.path.join(out_dir, "checkpoints")
  )
  if has_run and not resume:
    raise ValueError(
        f"train: out_dir got {out_dir!r}, which already holds a run (metrics.jsonl or "
        "checkpoints/); expected a new directory, or resume=True (--resume) to continue it."
    )


def _describe(changes) -> str:
  return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def _check_resume_config(saved: TrainConfig, config: TrainConfig, out_dir: str) -> None:
  if saved.seed != config.seed:
    raise ValueError(
        f"train: seed got {config.seed!r} with resume=True, but the run in {out_dir!r} was "
        f"started with seed {saved.seed!r} (the seed fixes the initialisation and the "
        f"validation split); expected seed={saved.seed!r}, or a new out_dir."
    )


# Config fields that shape the saved state (the model's and the optimizer's pytrees).
_STATE_FIELDS = ("model", "model_options", "data", "data_dir", "data_options", "optimizer",
                 "momentum", "nesterov", "weight_decay", "decay_all", "norm_lr_scale",
                 "clip_grad_norm", "lookahead")


def _restore_error(saved: TrainConfig | None, config: TrainConfig, path: str,
                   error: CheckpointError) -> ValueError:
  changes = config_changes(saved, config) if saved is not None else {}
  changes = {k: v for k, v in changes.items() if k in _STATE_FIELDS}
  if changes:
    return ValueError(
        f"train: the checkpoint {path} does not fit the resumed config, which changes "
        f"{_describe(changes)}; expected the run's model and optimizer settings (start a new "
        "out_dir to change them)."
    )
  return ValueError(f"train: the checkpoint {path} cannot be restored: {error}")


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike,
    resume: bool = False,
    dataset=None,
    model_fn: ModelFn | None = None,
    callbacks: Sequence[Callback] = (),
    quiet: bool = False,
    plots: bool = True,
) -> TrainResult:
  """Trains ``config``'s model on its dataset, writing the run to ``out_dir``.

  Args:
    config: the run's configuration (saved as ``out_dir/config.json``).
    out_dir: the run directory; must not hold a run unless ``resume``.
    resume: continue from the latest verified checkpoint in ``out_dir`` (a fresh start if
      there is none; one that fails verification is moved aside with a warning and the
      one before it used). The run then ends exactly as an uninterrupted one would.
      ``config`` may change the run's settings but not its seed.
    dataset: a ``cnnjax.data.Dataset`` to use instead of loading ``config.data``.
    model_fn: a model factory to use instead of the zoo (see :func:`build_model`).
    callbacks: called as ``callback(record, state)`` after each epoch's record is written
      (and its checkpoint saved); an exception from a callback stops the run.
    quiet: no progress bar and no per-epoch lines.
    plots: write ``curves.png`` and ``filters.png`` at the end.

  Returns:
    A ``TrainResult``.

  Raises:
    NonFiniteLossError: the training loss became NaN/inf; the message names the step, and
      the last verified checkpoint is kept.
    RunInUseError: another process is writing ``out_dir`` (a ``ValueError``).
    ValueError: bad settings; on resume, a changed seed, or a checkpoint that does not fit
      the changed model/optimizer (the message names the changed fields).

  Example:
    >>> result = train(TrainConfig(epochs=1), out_dir="/tmp/run")  # doctest: +SKIP
    >>> result.history[-1]["val_accuracy"]  # doctest: +SKIP
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  _sh.initialize_distributed(config.distributed)
  lock = RunLock(out_dir) if _is_main() else None
  if lock is not None:
    lock.acquire()
  try:
    if lock is not None and lock.stale and not quiet:
      print(f"Took over the stale lock {lock.path} of process {lock.stale.get('pid')} "
            f"(no longer running).", flush=True)
    return _train(config, out_dir=out_dir, resume=resume, dataset=dataset,
                  model_fn=model_fn, callbacks=callbacks, quiet=quiet, plots=plots)
  except Exception as e:
    if not _sh.is_peer_failure(e):
      raise
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise _sh.PeerLostError(
        f"train: process {jax.process_index()} of {jax.process_count()} lost contact with "
        f"the others ({type(e).__name__}: {first}): another process died or was killed. "
        f"Continue with: cnnjax train --out {out_dir} --resume (one process, or all of them)."
    ) from e
  finally:
    if lock is not None:
      lock.release()


def _train(config: TrainConfig, *, out_dir: str, resume: bool, dataset, model_fn,
           callbacks: Sequence[Callback], quiet: bool, plots: bool) -> TrainResult:
  _check_out_dir(out_dir, resume)
  config_path = os.path.join(out_dir, "config.json")
  saved = TrainConfig.load(config_path) if resume and os.path.exists(config_path) else None
  if saved is not None:
    _check_resume_config(saved, config, out_dir)
  mesh = _sh.make_mesh(config.num_devices)
  n_dev = mesh.size
  if config.batch_size % n_dev:
    raise ValueError(
        f"train: batch_size got {config.batch_size!r}; expected a multiple of the number of "
        f"devices ({n_dev})."
    )
  eval_batch_size = -(-config.eval_batch_size // n_dev) * n_dev

  if dataset is None:
    dataset = load_dataset(config)
  num_train = len(dataset.train_labels)
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
        f"train: batch_size got {config.batch_size!r}; expected at most the {num_train} "
        "training examples."
    )

  tx = make_optimizer(config, steps_per_epoch=steps_per_epoch)
  schedule = make_schedule(config, steps_per_epoch=steps_per_epoch)
  arrays = _device_arrays(dataset, mesh)
  images, labels = arrays["train"]
  preprocess = _make_preprocess(images, augment=config.augment,
                                crop_padding=config.crop_padding, flip=config.flip)
  model_def, state = init_state(config, tx, num_classes=len(dataset.class_names),
                                input_shape=dataset.train_images.shape[1:], mesh=mesh,
                                model_fn=model_fn, train_images=images, preprocess=preprocess)

  os.makedirs(out_dir, exist_ok=True)
  log = MetricsLog(os.path.join(out_dir, "metrics.jsonl"))
  history_path = os.path.join(out_dir, "config_history.jsonl")
  ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), keep=config.keep_checkpoints)
  start_epoch, history = 0, []
  say = (lambda s: None) if quiet or not _is_main() else (lambda s: print(s, flush=True))
  say(f"Run directory: {out_dir} ({config.model} on {getattr(dataset, 'name', config.data)}, "
      f"{num_train} training images, {steps_per_epoch} steps/epoch, {n_dev} "
      f"device{'s' * (n_dev > 1)})")
  pending = None  # config changes to record once an epoch under them completes
  if resume:
    latest = ckpt.latest_verified()
    if latest is not None:
      try:
        state = ckpt.restore(latest, state)
      except CheckpointError as e:
        ckpt.close()
        raise _restore_error(saved, config, ckpt.path(latest), e) from e
      start_epoch = latest
      say(f"Resumed from {ckpt.path(latest)} (epoch {latest}, verified).")
    else:
      say(f"No intact checkpoint in {ckpt.directory}; starting from scratch.")
    changes = config_changes(saved, config) if saved is not None else {}
    if changes and start_epoch > 0:
      pending = changes
      say(f"Resuming with a changed config: {_describe(changes)} (config.json takes it once "
          f"epoch {start_epoch + 1} completes).")
    history = log.truncate(start_epoch) if _is_main() else []
  if _is_main() and pending is None and (saved is None or saved != config):
    config.save(config_path)
    if saved is None:
      append_history(history_path, epoch=start_epoch + 1, config=config)
    else:
      append_history(history_path, epoch=start_epoch + 1, config=config,
                     changes=config_changes(saved, config))
  if _is_main() and not resume:
    log.truncate(0)

  steps = make_steps(
      model_def, tx, preprocess=preprocess, mesh=mesh, num_train=num_train,
      steps_per_epoch=steps_per_epoch, batch_size=config.batch_size,
      eval_batch_size=eval_batch_size, label_smoothing=config.label_smoothing,
      steps_per_call=min(config.steps_per_call, steps_per_epoch), unroll=config.unroll,
      alternating_flip=config.augment and config.flip == "alternating", tta=config.tta,
  )

  compile_seconds = None
  ran = start_epoch < config.epochs
  if ran:
    steps, compile_seconds = _compile(steps, state, images, labels, steps_per_epoch)
    say(f"Compiled the train step in {compile_seconds:.1f} s.")
  remaining = (config.epochs - start_epoch) * steps_per_epoch
  progress = _Progress(remaining, enabled=not quiet and _is_main() and sys.stderr.isatty())
  try:
    for epoch in range(start_epoch + 1, config.epochs + 1):
      progress.describe(f"epoch {epoch}/{config.epochs}")
      t0 = time.perf_counter()
      state, losses, correct = _train_epoch(
          steps, state, images, labels, epoch=epoch, steps_per_epoch=steps_per_epoch,
          progress=progress, last_good=lambda: _last(ckpt),
      )
      jax.block_until_ready(state)
      train_seconds = time.perf_counter() - t0
      step = int(_sh.to_host(state.step))
      record: dict[str, Any] = {
          "epoch": epoch,
          "step": step,
          "lr": float(schedule(step - 1)),
          "train_loss": float(np.mean(losses)),
          "train_accuracy": correct / (steps_per_epoch * config.batch_size),
      }
      tta = not config.tta_final_only or epoch == config.epochs
      if config.tta != "none":
        record["tta"] = config.tta if tta else "none"
      for split in ("val", "test"):
        if arrays.get(split) is not None:
          r = _eval_split(steps, state, arrays[split], eval_batch_size, tta=tta)
          record[f"{split}_loss"], record[f"{split}_accuracy"] = r["loss"], r["accuracy"]
      record["seconds"] = time.perf_counter() - t0
      record["train_seconds"] = train_seconds
      record["images_per_second"] = steps_per_epoch * config.batch_size / train_seconds
      if compile_seconds is not None:
        record["compile_seconds"], compile_seconds = compile_seconds, None
      if _is_main():  # the record first: a resume truncates records past the checkpoint
        log.append(record)
      if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
        ckpt.save(epoch, state)
      if pending is not None and _is_main():  # an epoch under the changes has completed
        config.save(config_path)
        append_history(history_path, epoch=epoch, config=config, changes=pending)
      pending = None
      history.append(record)
      if not quiet and _is_main():
        progress.write(_epoch_line(record, config.epochs))
      for cb in callbacks:
        cb(record, state)
  except NonFiniteLossError:
    progress.close()
    if plots and _is_main() and history:
      _write_plots(out_dir, history, None, dataset)
    ckpt.close()
    raise
  except BaseException:
    progress.close()
    ckpt.close()
    raise
  progress.close()
  ckpt.close()
  if plots and _is_main():
    _write_plots(out_dir, history, state, dataset)
  say(f"Run written to {out_dir}")
  return TrainResult(config=config, out_dir=out_dir, history=history, state=state,
                     model_def=model_def, steps=steps if ran else None)


def _compile(steps: Steps, state, images, labels, steps_per_epoch: int):
  """Compiles (ahead of time) the train functions an epoch uses; returns their time.

  The compiled executables replace the jitted functions, so a call with different shapes,
  dtypes or shardings is an error instead of a silent retrace.
  """
  t0 = time.perf_counter()
  perm = steps.permutation(state.rng, 0)
  k = steps.steps_per_call
  args = (state, images, labels, perm, np.int32(0))
  train = steps.train.lower(*args).compile() if k > 1 else steps.train
  one = steps.train_one.lower(*args).compile() if k == 1 or steps_per_epoch % k else (
      steps.train_one)
  return dataclasses.replace(steps, train=train, train_one=one), time.perf_counter() - t0


def _train_epoch(steps: Steps, state: TrainState, images, labels, *, epoch: int,
                 steps_per_epoch: int, progress: _Progress, last_good: Callable[[], str]):
  """Runs one epoch; returns ``(state, per-step losses, correct count)``.

  The host syncs every ``_SYNC_EVERY`` steps (not every step, so dispatch runs ahead) to
  update the progress bar and to stop at the first non-finite loss.
  """
  perm = steps.permutation(state.rng, epoch)
  first_step = int(_sh.to_host(state.step))
  k = steps.steps_per_call
  pending, losses, correct, done = [], [], 0, 0

  def sync():
    nonlocal pending, correct
    n_new = 0
    for m in _sh.to_host(pending):
      for loss, c in zip(m["loss"], m["correct"]):
        if not math.isfinite(float(loss)):
          b = len(losses)
          raise NonFiniteLossError(
              f"train: the training loss is {float(loss)} at step {first_step + b} (epoch "
              f"{epoch}, batch {b + 1} of {steps_per_epoch}); stopped. The last good "
              f"checkpoint is {last_good()}. Try a lower --lr, --clip-grad-norm, or check "
              "the data."
          )
        losses.append(float(loss))
        correct += int(c)
        n_new += 1
    pending = []
    if n_new:
      progress.update(n_new, loss=f"{np.mean(losses[-n_new:]):.3f}")

  while done < steps_per_epoch:
    many = k > 1 and steps_per_epoch - done >= k
    fn = steps.train if many else steps.train_one
    state, m = fn(state, images, labels, perm, np.int32(done))
    pending.append(m)
    done += k if many else 1
    if len(pending) * k >= _SYNC_EVERY:
      sync()
  sync()
  return state, losses, correct


def _last(ckpt: Checkpointer) -> str:
  latest = ckpt.latest_verified(collective=False)
  return "none" if latest is None else f"epoch {latest} ({ckpt.path(latest)}, verified)"


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
  parts = [f"epoch {r['epoch']:>3}/{epochs}",
           f"train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.4f}"]
  for split in ("val", "test"):
    if f"{split}_loss" in r:
      parts.append(f"{split} loss {r[f'{split}_loss']:.4f} acc {r[f'{split}_accuracy']:.4f}")
  parts.append(f"{r['seconds']:.1f} s ({r['images_per_second']:.0f} img/s)")
  return " | ".join(parts)


def _write_plots(out_dir: str, history, state, dataset) -> None:
  from cnnjax.train import plots

  plots.plot_curves(history, os.path.join(out_dir, "curves.png"))
  if state is not None:
    # Trained parameters first; then frozen weights kept in the model state (fastnet's
    # whitening filters), floating arrays only (not RNG keys).
    frozen = [x for x in jax.tree.leaves(state.model_state)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    filters = plots.first_layer_filters(_sh.to_host([eval_params(state.params), frozen]),
                                        image_shape=dataset.train_images.shape[1:])
    if filters is not None:
      plots.plot_filters(filters, os.path.join(out_dir, "filters.png"),
                         title="first-layer filters")


def _eval_mesh(config: TrainConfig):
  # A run may be evaluated on another machine: use the devices it asked for, if present.
  n = config.num_devices
  return _sh.make_mesh(n if n is not None and n <= len(jax.devices()) else None)


def load_run(run_dir: str | os.PathLike, *, epoch: int | None = None, dataset=None,
             model_fn: ModelFn | None = None):
  """Rebuilds a run's model from ``config.json`` and a checkpoint.

  Args:
    run_dir: a directory written by :func:`train`.
    epoch: which checkpoint (None: the latest verified one).
    dataset: the run's dataset if already loaded (else loaded from the config).
    model_fn: the model factory the run used, if it did not use the zoo.

  Returns:
    ``(config, dataset, model_def, state, epoch)`` with ``state`` replicated on the devices.
  """
  run_dir = os.fspath(run_dir)
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(config_path):
    raise ValueError(
        f"load_run: run_dir got {run_dir!r}, which has no config.json; expected a directory "
        "written by `cnnjax train --out`."
    )
  config = TrainConfig.load(config_path)
  if dataset is None:
    dataset = load_dataset(config)
  steps_per_epoch = max(len(dataset.train_labels) // config.batch_size, 1)
  tx = make_optimizer(config, steps_per_epoch=steps_per_epoch)
  model_def, state = init_state(config, tx, num_classes=len(dataset.class_names),
                                input_shape=dataset.train_images.shape[1:],
                                mesh=_eval_mesh(config), model_fn=model_fn)
  ckpt = Checkpointer(os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints,
                      cleanup=False)
  try:
    if epoch is None:
      epoch = ckpt.latest_verified()
      if epoch is None:
        raise ValueError(
            f"load_run: run_dir got {run_dir!r}, which has no intact checkpoint under "
            "checkpoints/; expected a run that finished at least one checkpointed epoch."
        )
    state = ckpt.restore(epoch, state)
  finally:
    ckpt.close()
  return config, dataset, model_def, state, epoch


def evaluate(run_dir: str | os.PathLike, *, epoch: int | None = None,
             splits: Sequence[str] = ("val", "test"), dataset=None,
             model_fn: ModelFn | None = None, tta: str | None = None) -> dict[str, Any]:
  """Evaluates a run's checkpoint on the validation (and test, if present) splits.

  Args:
    run_dir: a directory written by :func:`train`.
    epoch: which checkpoint (None: the latest verified one).
    splits: any of ``"train"``, ``"val"``, ``"test"`` (absent splits are skipped).
    dataset: the run's dataset, if already loaded.
    model_fn: the model factory the run used, if it did not use the zoo.
    tta: test-time augmentation (``"none"``, ``"flip"``, ``"flip_translate"``); None: the
      run's ``config.tta``.

  Returns:
    ``{"epoch": e, "tta": mode, "<split>_loss": ..., "<split>_accuracy": ...}``.

  Example:
    >>> evaluate("/tmp/run")["val_accuracy"]  # doctest: +SKIP
  """
  for s in splits:
    if s not in ("train", "val", "test"):
      raise ValueError(
          f"evaluate: splits got {tuple(splits)!r}; expected names from ('train', 'val', "
          "'test')."
      )
  if tta is not None and tta not in TTA_MODES:
    raise ValueError(f"evaluate: tta got {tta!r}; expected None or one of {TTA_MODES}.")
  config, dataset, model_def, state, epoch = load_run(
      run_dir, epoch=epoch, dataset=dataset, model_fn=model_fn
  )
  mesh = _eval_mesh(config)
  eval_batch_size = -(-config.eval_batch_size // mesh.size) * mesh.size
  tx = make_optimizer(config, steps_per_epoch=1)
  train_images = _sh.put_global(dataset.train_images, _sh.replicated(mesh))
  steps = make_steps(
      model_def, tx, preprocess=_make_preprocess(train_images, augment=False), mesh=mesh,
      num_train=len(dataset.train_labels), steps_per_epoch=1,
      batch_size=config.batch_size, eval_batch_size=eval_batch_size,
      tta=config.tta if tta is None else tta,
  )
  result: dict[str, Any] = {"epoch": epoch, "tta": config.tta if tta is None else tta}
  sources = {
      "train": (dataset.train_images, dataset.train_labels),
      "val": (dataset.val_images, dataset.val_labels),
      "test": (dataset.test_images, dataset.test_labels),
  }
  for s in splits:
    x, y = sources[s]
    if x is None or not len(x):
      continue
    arrays = _sh.put_global((x, y), _sh.replicated(mesh))
    r = _eval_split(steps, state, arrays, eval_batch_size)
    result[f"{s}_loss"], result[f"{s}_accuracy"] = r["loss"], r["accuracy"]
  return result

