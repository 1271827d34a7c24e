"""The training loop: ``train`` a ``TrainConfig`` into a run directory.

The run is built by :func:`~cnnjax.train.run.build_run`; the directory's files are
described in :mod:`cnnjax.train.rundir`. ``train(..., resume=True)`` restores the latest
verified checkpoint and continues exactly where it stopped: the epoch's shuffling and
augmentation keys are folded from the saved base key, the optimizer state, BatchNorm
statistics and dropout RNG streams come back bit for bit.

One process writes a run at a time (:class:`~cnnjax.train.lock.RunLock`). A resume may
change the config (``--epochs``, ``--lr``, ...) but not its ``seed``; ``config.json`` takes
the changes only once an epoch under them has completed, and ``config_history.jsonl`` keeps
every change with the epoch it applied from.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnjax.train import rundir as _rd
from cnnjax.train import sharding as _sh
from cnnjax.train.checkpoint import Checkpointer, CheckpointError
from cnnjax.train.config import (
    TrainConfig,
    append_history,
    config_changes,
    repair_history,
)
from cnnjax.train.evaluation import eval_split
from cnnjax.train.lock import RunLock
from cnnjax.train.metrics import MetricsLog, read_metrics
from cnnjax.train.preflight import check_schedule_change
from cnnjax.train.progress import Progress, show_progress
from cnnjax.train.run import InputSpec, ModelFn, Run, build_run
from cnnjax.train.state import ModelDef, TrainState, eval_params
from cnnjax.train.steps import LeafProgram, Steps, over_leaves
from cnnjax.train.tracking import STEPS_FILE, StepLogger

if TYPE_CHECKING:
  from cnnjax.data.dataset import Dataset

__all__ = ["NonFiniteLossError", "TrainResult", "train"]

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
    spec: the data the run trained on: class names, input shape, normalisation statistics.
  """

  config: TrainConfig
  out_dir: str
  history: list[dict[str, Any]]
  state: TrainState
  model_def: ModelDef
  steps: Steps | None = None
  spec: InputSpec | None = None

  @property
  def model(self) -> nnx.Module:
    """The trained model, in evaluation mode (with the slow parameters under Lookahead)."""
    return nnx.merge(self.model_def.eval, eval_params(self.state.params), self.state.model_state)


def _is_main() -> bool:
  return jax.process_index() == 0


def train(
    config: TrainConfig,
    *,
    out_dir: str | os.PathLike[str],
    resume: bool = False,
    dataset: Dataset | None = None,
    model_fn: ModelFn | None = None,
    callbacks: Sequence[Callback] = (),
    quiet: bool = False,
    plots: bool = True,
    allow_schedule_change: bool = False,
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
    model_fn: a model factory to use instead of the zoo (see
      :func:`~cnnjax.train.run.build_model`).
    callbacks: called as ``callback(record, state)`` after each epoch's record and
      checkpoint are written; an exception from a callback stops the run. (Without
      callbacks, checkpoints are written in the background while the next epoch trains,
      and finished before ``train`` returns or raises.)
    quiet: no progress bar and no per-epoch lines.
    plots: write ``curves.png`` and ``filters.png`` at the end.
    allow_schedule_change: on resume, accept a config whose learning-rate schedule has
      another length (other ``epochs`` or ``batch_size``): the rate then jumps to the new
      schedule's value where the run resumes.

  Returns:
    A ``TrainResult``.

  Raises:
    NonFiniteLossError: the training loss became NaN/inf; the message names the step, and
      the last verified checkpoint is kept.
    RunInUseError: another process is writing ``out_dir`` (a ``ValueError``).
    CheckpointWriteError: a checkpoint could not be written (a full disk, an unwritable
      directory; an ``OSError`` and a ``ValueError``, one line naming it).
    ValueError: bad settings (checked before any data is read); on resume, a changed
      seed, a schedule of another length without ``allow_schedule_change``, or a
      checkpoint that does not fit the changed model/optimizer (the message names the
      changed fields).

  Example:
    >>> result = train(TrainConfig(epochs=1), out_dir="/tmp/run")  # trains  # doctest: +SKIP
    >>> result.history[-1]["val_accuracy"]  # doctest: +SKIP
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  config = _rd.absolute_paths(config)
  _sh.initialize_distributed(config.distributed)
  lock = RunLock(out_dir) if _is_main() else None
  if lock is not None:
    lock.acquire()
  try:
    if lock is not None and lock.stale and not quiet:
      print(
          f"Took over the stale lock {lock.path} of process {lock.stale.get('pid')} "
          f"(no longer running).",
          flush=True,
      )
    return _train(
        config,
        out_dir=out_dir,
        resume=resume,
        dataset=dataset,
        model_fn=model_fn,
        callbacks=callbacks,
        quiet=quiet,
        plots=plots,
        allow_schedule_change=allow_schedule_change,
    )
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


def _arrays(run: Run) -> dict[str, Any]:
  # A training run is built with its dataset: its splits are on the devices.
  return cast("dict[str, Any]", run.arrays)


def _train(
    config: TrainConfig,
    *,
    out_dir: str,
    resume: bool,
    dataset,
    model_fn,
    callbacks: Sequence[Callback],
    quiet: bool,
    plots: bool,
    allow_schedule_change: bool,
) -> TrainResult:
  _rd.check_out_dir(out_dir, resume)
  config_path = os.path.join(out_dir, _rd.CONFIG_FILE)
  saved = TrainConfig.load(config_path) if resume and os.path.exists(config_path) else None
  if saved is not None:
    _rd.check_resume_config(saved, config, out_dir)
  history_path = os.path.join(out_dir, "config_history.jsonl")
  if resume and _is_main():
    repair_history(history_path)  # checked before anything is appended to it
  run = build_run(config, dataset, model_fn=model_fn)
  state, steps, spec = run.state, run.steps, run.spec
  images, labels = _arrays(run)["train"]
  steps_per_epoch, n_dev = run.steps_per_epoch, run.mesh.size

  os.makedirs(out_dir, exist_ok=True)
  log = MetricsLog(os.path.join(out_dir, "metrics.jsonl"))
  steplog = StepLogger(
      out_dir,
      log_every=config.log_every,
      schedule=run.schedule,
      batch_size=config.batch_size,
      tensorboard=config.tensorboard,
      enabled=_is_main(),
  )
  ckpt = Checkpointer(
      os.path.join(out_dir, "checkpoints"), keep=config.keep_checkpoints, asynchronous=True
  )  # written while the next epoch trains
  start_epoch, history = 0, []
  say = (lambda s: None) if quiet or not _is_main() else (lambda s: print(s, flush=True))
  device = run.mesh.devices.flat[0]
  say(
      f"Run directory: {out_dir} ({config.model} on "
      f"{getattr(run.dataset, 'name', config.data)}, {spec.num_train} training images, "
      f"{steps_per_epoch} steps/epoch, {n_dev} {device.platform} device{'s' * (n_dev > 1)}: "
      f"{device.device_kind})"
  )
  try:  # until the epochs' own handler: Orbax's threads are shut down on any error
    pending = None  # config changes to record once an epoch under them completes
    if resume:
      state, start_epoch = _restore(
          ckpt,
          state,
          saved,
          config,
          num_train=spec.num_train,
          allow_schedule_change=allow_schedule_change,
          say=say,
      )
      changes = config_changes(saved, config) if saved is not None else {}
      if changes and start_epoch > 0:
        pending = changes
        say(
            f"Resuming with a changed config: {_rd.describe_changes(changes)} (config.json "
            f"takes it once epoch {start_epoch + 1} completes)."
        )
      history = log.truncate(start_epoch) if _is_main() else []
      if _is_main():
        steplog.truncate(start_epoch)
    if _is_main() and pending is None and (saved is None or saved != config):
      config.save(config_path)
      if saved is None:
        append_history(history_path, epoch=start_epoch + 1, config=config)
      else:
        append_history(
            history_path,
            epoch=start_epoch + 1,
            config=config,
            changes=config_changes(saved, config),
        )
    if _is_main():
      _rd.write_run_info(
          out_dir,
          run,
          platform={
              "platform": device.platform,
              "device_kind": device.device_kind,
              "devices": n_dev,
              "processes": jax.process_count(),
              "steps_per_call": run.steps.steps_per_call,
          },
      )
    if _is_main() and not resume:
      log.truncate(0)
      steplog.truncate(0)

    compiled = None
    ran = start_epoch < config.epochs
    if ran:
      steps, compiled = _compile(run, state)
      train_s = compiled.seconds
      say(
          f"Compiled the train step in {train_s['compile_seconds']['train_step']:.1f} s "
          f"(+{train_s['trace_seconds']['train_step']:.1f} s tracing)"
          + ("; the evaluation compiles in the background." if compiled.programs else ".")
      )
    remaining = (config.epochs - start_epoch) * steps_per_epoch
    progress = Progress(remaining, enabled=not quiet and _is_main() and show_progress())
  except BaseException:
    ckpt.close(quiet=True)
    raise
  try:
    for epoch in range(start_epoch + 1, config.epochs + 1):
      progress.describe(f"epoch {epoch}/{config.epochs}")
      t0 = time.perf_counter()
      steplog.start_epoch()
      state, losses, correct = _train_epoch(
          steps,
          state,
          images,
          labels,
          epoch=epoch,
          steps_per_epoch=steps_per_epoch,
          progress=progress,
          last_good=lambda: _last(ckpt),
          steplog=steplog,
      )
      jax.block_until_ready(state)
      record = _epoch_record(
          run,
          steps,
          state,
          epoch=epoch,
          losses=losses,
          correct=correct,
          t0=t0,
          train_seconds=time.perf_counter() - t0,
      )
      # (epochs run only when `ran`, which compiled)
      record.update(cast(_CompileLog, compiled).take(wait=epoch == config.epochs))
      if _is_main():  # the record first: a resume truncates records past the checkpoint
        log.append(record)
        steplog.epoch(record)
      if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
        ckpt.save(epoch, state)
      if pending is not None and _is_main():  # an epoch under the changes has completed
        config.save(config_path)
        append_history(history_path, epoch=epoch, config=config, changes=pending)
      pending = None
      history.append(record)
      if not quiet and _is_main():
        progress.write(_epoch_line(record, config.epochs))
      if callbacks:
        ckpt.wait()  # they may read the checkpoint
      for cb in callbacks:
        cb(record, state)
  except NonFiniteLossError:
    progress.close()
    steplog.close()
    ckpt.close(quiet=True)  # the last good checkpoint is named in the error already
    if plots and _is_main() and history:
      _write_plots(out_dir, history, None, spec)
    raise
  except BaseException:
    progress.close()
    steplog.close()
    ckpt.close(quiet=True)  # the error in flight is the one to report
    raise
  progress.close()
  steplog.close()
  ckpt.close()
  if plots and _is_main():
    _write_plots(out_dir, history, state, spec)
  say(f"Run written to {out_dir}")
  return TrainResult(
      config=config,
      out_dir=out_dir,
      history=history,
      state=state,
      model_def=run.model_def,
      steps=steps if ran else None,
      spec=spec,
  )


def _restore(
    ckpt: Checkpointer,
    state: TrainState,
    saved: TrainConfig | None,
    config: TrainConfig,
    *,
    num_train: int,
    allow_schedule_change: bool,
    say: Callable[[str], None],
) -> tuple[TrainState, int]:
  """Restores the latest verified checkpoint into ``state``; returns ``(state, its epoch)``
  (``(state, 0)`` when there is none)."""
  latest = ckpt.latest_verified()
  if latest is None:
    say(f"No intact checkpoint in {ckpt.directory}; starting from scratch.")
    return state, 0
  try:
    state = ckpt.restore(latest, state)
  except CheckpointError as e:
    raise _rd.restore_error(saved, config, ckpt.path(latest), e) from e
  if saved is not None and not allow_schedule_change:
    check_schedule_change(saved, config, num_train=num_train, start_epoch=latest)
  say(f"Resumed from {ckpt.path(latest)} (epoch {latest}, verified).")
  return state, latest


def _epoch_record(
    run: Run,
    steps: Steps,
    state: TrainState,
    *,
    epoch: int,
    losses,
    correct: int,
    t0: float,
    train_seconds: float,
) -> dict[str, Any]:
  """The ``metrics.jsonl`` record of an epoch, with its evaluation (TTA as configured)."""
  config = run.config
  step = int(_sh.to_host(state.step))
  record: dict[str, Any] = {
      "epoch": epoch,
      "step": step,
      "lr": float(run.schedule(step - 1)),
      "train_loss": float(np.mean(losses)),
      "train_accuracy": correct / (run.steps_per_epoch * config.batch_size),
  }
  tta = not config.tta_final_only or epoch == config.epochs
  if config.tta != "none":
    record["tta"] = config.tta if tta else "none"
  for split in ("val", "test"):
    if _arrays(run).get(split) is not None:
      r = eval_split(steps, state, _arrays(run)[split], run.eval_batch_size, tta=tta)
      record[f"{split}_loss"], record[f"{split}_accuracy"] = r["loss"], r["accuracy"]
  record["seconds"] = time.perf_counter() - t0
  record["train_seconds"] = train_seconds
  record["images_per_second"] = run.steps_per_epoch * config.batch_size / train_seconds
  return record


def _compile(run: Run, state: TrainState) -> tuple[Steps, _CompileLog]:
  """Compiles (ahead of time) the programs the epochs use; returns them and their seconds.

  The train programs are compiled first, over the state's leaves
  (:class:`~cnnjax.train.steps.LeafProgram`). The evaluation programs are traced here and
  compiled on a background thread, so that their compilation overlaps training (XLA
  compiles without holding Python's GIL); an evaluation waits for its program only if it
  is not ready yet.

  The compiled executables replace the jitted functions, so a call with different shapes,
  dtypes or shardings is an error instead of a silent retrace.
  """
  steps, config = run.steps, run.config
  images, labels = _arrays(run)["train"]
  log = _CompileLog()

  def lower(name, fn, *args):
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    log.add("trace_seconds", name, time.perf_counter() - t0)
    return lowered

  def compile_(name, lowered):
    t0 = time.perf_counter()
    compiled = lowered.compile()
    log.add("compile_seconds", name, time.perf_counter() - t0)
    return compiled

  leaves, treedef = jax.tree.flatten(state)
  perm = steps.permutation(state.rng, 0)
  k = steps.steps_per_call
  args = (leaves, images, labels, perm, np.int32(0))

  def build_train(fn):
    flat = over_leaves(fn, treedef)
    return LeafProgram(compile_("train_step", lower("train_step", flat, *args)), treedef)

  train = build_train(steps.train) if k > 1 else None
  one = build_train(steps.train_one) if k == 1 or run.steps_per_epoch % k else None
  splits = [a for a in (_arrays(run).get("val"), _arrays(run).get("test")) if a is not None]
  programs = {}
  if config.tta == "none" or config.tta_final_only:
    programs["eval_step"] = steps.evaluate_plain
  if config.tta != "none":
    programs["tta"] = steps.evaluate
  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cnnjax-compile")
  for name, fn in programs.items():
    programs[name] = log.programs[name] = _Background(
        name,
        {
            tuple(x.shape): pool.submit(
                compile_, name, lower(name, fn, state.params, state.model_state, x, y, np.int32(0))
            )
            for x, y in splits
        },
        log,
    )
  pool.shutdown(wait=False)
  steps = dataclasses.replace(
      steps,
      train=train or steps.train,
      train_one=one or steps.train_one,
      evaluate=programs.get("tta", programs.get("eval_step", steps.evaluate)),
      evaluate_plain=programs.get("eval_step", steps.evaluate_plain),
  )
  return steps, log


class _CompileLog:
  """Seconds per program, for ``metrics.jsonl``.

  Keys: ``trace_seconds`` (the Python side: tracing and lowering to StableHLO, done every
  run), ``compile_seconds`` (XLA's compilation, or loading the executable from the
  persistent compilation cache, :mod:`cnnjax.train.compile_cache`) and
  ``compile_wait_seconds`` (how long the training loop waited for a background
  compilation; absent for a program that was ready in time), each ``{program: seconds}``
  summed over the splits evaluated. Programs: ``train_step`` (the train functions an epoch calls),
  ``eval_step`` (evaluation without test-time augmentation, when used) and ``tta`` (with
  it, when ``config.tta`` is not ``"none"``).

  :meth:`take` gives each program's seconds once, to the first epoch record written after
  its compilation finished (the train step's: the first record), so that summing a key
  over the records gives the run's totals.
  """

  KEYS = ("trace_seconds", "compile_seconds", "compile_wait_seconds")

  def __init__(self):
    self.seconds: dict[str, dict[str, float]] = {key: {} for key in self.KEYS}
    self.programs: dict[str, _Background] = {}  # compiled in the background
    self._lock = threading.Lock()
    self._taken: set[str] = set()

  def add(self, key: str, name: str, dt: float) -> None:
    with self._lock:
      self.seconds[key][name] = self.seconds[key].get(name, 0.0) + dt

  def take(self, *, wait: bool = False) -> dict[str, dict[str, float]]:
    """The seconds of the programs finished and not taken yet (all of them: ``wait``)."""
    if wait:
      for program in self.programs.values():
        program.wait()
    ready = [
        name
        for name in self.seconds["trace_seconds"]
        if name not in self._taken and (name not in self.programs or self.programs[name].done())
    ]
    self._taken.update(ready)
    with self._lock:
      return {
          key: {n: v[n] for n in ready if n in v}
          for key, v in self.seconds.items()
          if any(n in v for n in ready)
      }


class _Background:
  """An evaluation program per split shape (val, test), compiled on a background thread."""

  def __init__(self, name: str, futures: dict, log: _CompileLog):
    self._name, self._futures, self._log = name, futures, log
    self._ready: dict[tuple, Any] = {}

  def done(self) -> bool:
    return all(f.done() for f in self._futures.values())

  def wait(self) -> None:
    for shape in self._futures:
      self._get(shape)

  def _get(self, shape):
    compiled = self._ready.get(shape)
    if compiled is None:
      future, t0 = self._futures[shape], time.perf_counter()
      waited = not future.done()
      compiled = self._ready[shape] = future.result()
      if waited:
        self._log.add("compile_wait_seconds", self._name, time.perf_counter() - t0)
    return compiled

  def __call__(self, params, model_state, images, labels, start):
    return self._get(tuple(images.shape))(params, model_state, images, labels, start)


def _train_epoch(
    steps: Steps,
    state: TrainState,
    images,
    labels,
    *,
    epoch: int,
    steps_per_epoch: int,
    progress: Progress,
    last_good: Callable[[], str],
    steplog: StepLogger,
):
  """Runs one epoch; returns ``(state, per-step losses, correct count)``.

  The host does not wait for the device within an epoch. The state travels as its list of
  leaves (one fast call per step, :class:`~cnnjax.train.steps.LeafProgram`); each call's
  metrics stay on the device until a window of ``_SYNC_EVERY`` steps (or ``log_every``,
  if fewer) is complete, and then the host reads the window *before* it, which the
  device has finished by then (it runs the calls in order), while a window of steps is
  still queued: the progress bar, the step log and the check for a non-finite loss run
  one window behind, the device never idles for them. The last windows are read at the
  end of the epoch. A non-finite loss stops the run with the step it occurred at.
  """
  sync_every = min(_SYNC_EVERY, steplog.log_every or _SYNC_EVERY)
  perm = steps.permutation(state.rng, epoch)
  first_step = int(_sh.to_host(state.step))
  k = steps.steps_per_call
  program = steps.train_one if k == 1 else steps.train
  leaves = jax.tree.leaves(state)
  windows, window, window_steps = collections.deque(), [], 0
  losses, correct, done = [], 0, 0

  def read(window):
    nonlocal correct
    n_new = 0
    for m in _sh.to_host(window):
      for loss, c in zip(m["loss"], m["correct"], strict=True):
        if not math.isfinite(float(loss)):
          b = len(losses)
          raise NonFiniteLossError(
              f"train: the training loss is {float(loss)} at step {first_step + b} (epoch "
              f"{epoch}, batch {b + 1} of {steps_per_epoch}); stopped. The last good "
              f"checkpoint is {last_good()}. Try a lower --lr, --clip-grad-norm, or check "
              "the data."
          )
        losses.append(float(loss))
        steplog.step(first_step + len(losses), epoch, float(loss))
        correct += int(c)
        n_new += 1
    if n_new:
      progress.update(n_new, loss=f"{np.mean(losses[-n_new:]):.3f}")

  while done < steps_per_epoch:
    many = k > 1 and steps_per_epoch - done >= k
    fn = steps.train if many else steps.train_one
    leaves, m = fn.leaves(leaves, images, labels, perm, np.int32(done))
    window.append(m)
    window_steps += k if many else 1
    done += k if many else 1
    if window_steps >= sync_every:
      windows.append(window)
      window, window_steps = [], 0
      if len(windows) > 1:
        read(windows.popleft())
  windows.append(window)
  while windows:
    read(windows.popleft())
  return jax.tree.unflatten(program.treedef, leaves), losses, correct


def _last(ckpt: Checkpointer) -> str:
  latest = ckpt.latest_verified(collective=False)
  return "none" if latest is None else f"epoch {latest} ({ckpt.path(latest)}, verified)"


def _epoch_line(r: dict[str, Any], epochs: int) -> str:
  parts = [
      f"epoch {r['epoch']:>3}/{epochs}",
      f"train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.4f}",
  ]
  for split in ("val", "test"):
    if f"{split}_loss" in r:
      parts.append(f"{split} loss {r[f'{split}_loss']:.4f} acc {r[f'{split}_accuracy']:.4f}")
  parts.append(f"{r['seconds']:.1f} s ({r['images_per_second']:.0f} img/s)")
  return " | ".join(parts)


def _write_plots(out_dir: str, history, state, spec: InputSpec) -> None:
  from cnnjax.train import plots

  plots.plot_curves(
      history,
      os.path.join(out_dir, "curves.png"),
      steps=read_metrics(os.path.join(out_dir, STEPS_FILE)),
  )
  if state is not None:
    # Trained parameters first; then frozen weights kept in the model state (fastnet's
    # whitening filters), floating arrays only (not RNG keys).
    frozen = [
        x for x in jax.tree.leaves(state.model_state) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    filters = plots.first_layer_filters(
        _sh.to_host([eval_params(state.params), frozen]), image_shape=spec.input_shape
    )
    if filters is not None:
      plots.plot_filters(filters, os.path.join(out_dir, "filters.png"), title="first-layer filters")
