"""A run's train program, built, compiled and timed as ``cnnjax train`` runs it.

Shared by ``fastnet.py`` and ``accelerator.py``:

- :func:`random_dataset`: random uint8 CIFAR-shaped data (a ``cnnjax.data.Dataset``);
- :func:`build`: ``cnnjax.train.build_run`` on it, timed;
- :func:`compile_train`: the program the training loop calls for a full call of
  ``steps_per_call`` steps (``steps.train`` when ``run.steps.steps_per_call > 1``, else
  ``steps.train_one``), over the state's leaves as ``cnnjax.train.loop._compile`` builds
  it (``cnnjax.train.steps.over_leaves``), lowered and compiled ahead of time, each phase
  timed;
- :func:`time_train`: rounds of ``calls`` train calls dispatched back to back and blocked
  on once at the end (the device is not left idle between steps, as in the training loop,
  which reads its metrics every few steps), each round followed by a block of ceiling
  matmuls, so that a shared machine's noise hits both alike.

``steps_per_call`` is read from ``run.steps`` after ``build_run`` (not from the config), so
a config whose default is chosen per backend works the same.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["TrainProgram", "Timing", "build", "compile_train", "random_dataset", "time_train"]


def random_dataset(
    num_train: int = 45_000,
    num_val: int = 5_000,
    *,
    seed: int = 0,
    image_shape=(32, 32, 3),
    num_classes: int = 10,
):
  """Random uint8 images and int32 labels, shaped like CIFAR-10 (45,000 / 5,000)."""
  from cnnjax.data.dataset import Dataset

  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_train, *image_shape), dtype=np.uint8)
  labels = rng.integers(0, num_classes, num_train).astype(np.int32)
  val = rng.integers(0, 256, (num_val, *image_shape), dtype=np.uint8)
  val_labels = rng.integers(0, num_classes, num_val).astype(np.int32)
  return Dataset(
      "random",
      images,
      labels,
      val,
      val_labels,
      None,
      None,
      tuple(str(i) for i in range(num_classes)),
      "generated",
  )


def build(config, dataset):
  """``(run, seconds)``: ``build_run(config, dataset)`` (model init, data-dependent init
  such as fastnet's whitening, the data on the devices), waited for."""
  from cnnjax.train import build_run

  t0 = time.perf_counter()
  run = build_run(config, dataset)
  jax.block_until_ready(run.state)
  return run, time.perf_counter() - t0


@dataclasses.dataclass
class TrainProgram:
  """The compiled train program of a run.

  Attributes:
    fn: a ``cnnjax.train.steps.LeafProgram``: ``fn(state, images, labels, perm, start)
      -> (state, metrics)``, and ``fn.leaves(...)`` the same over the state's leaves (the
      loop's call); donates the state; ``cost_analysis()`` etc. are the compiled
      program's.
    name: ``"train"`` (a scan over ``steps_per_call`` steps) or ``"train_one"``.
    steps_per_call: optimizer steps per call.
    lower_seconds: tracing and lowering to StableHLO (Python; every run).
    compile_seconds: XLA's compilation (or a load from the persistent compilation cache
      when it is on).
    perm: epoch 0's ``[steps_per_epoch, batch]`` batch indices, on the devices.
  """

  fn: Any
  name: str
  steps_per_call: int
  lower_seconds: float
  compile_seconds: float
  perm: Any


def compile_train(run, state=None) -> TrainProgram:
  """Lowers and compiles the call the training loop makes for ``steps_per_call`` steps."""
  steps = run.steps
  state = run.state if state is None else state
  images, labels = run.arrays["train"]
  k = int(steps.steps_per_call)
  name = "train" if k > 1 else "train_one"
  perm = steps.permutation(state.rng, 0)
  from cnnjax.train.steps import LeafProgram, over_leaves

  leaves, treedef = jax.tree.flatten(state)
  t0 = time.perf_counter()
  lowered = over_leaves(getattr(steps, name), treedef).lower(
      leaves, images, labels, perm, np.int32(0)
  )
  t1 = time.perf_counter()
  fn = LeafProgram(lowered.compile(), treedef)
  t2 = time.perf_counter()
  return TrainProgram(
      fn=fn, name=name, steps_per_call=k, lower_seconds=t1 - t0, compile_seconds=t2 - t1, perm=perm
  )


@dataclasses.dataclass
class Timing:
  """What :func:`time_train` measured.

  Attributes:
    block_seconds: wall seconds of each round's block of ``calls`` train calls.
    calls: train calls per block; ``steps`` optimizer steps per block.
    step_seconds: each block's seconds per optimizer step.
    step_seconds_median: their median.
    ceiling_seconds: each round's seconds per ceiling matmul (empty without one).
    ceiling_reps: ceiling matmuls per round.
    ceiling_flops_per_second: ``ceiling_flops`` / the median ceiling seconds, or None.
    loss: the last call's last loss (a finite number if the step trains sanely).
    state: the train state after the last call (the input state was donated).
  """

  block_seconds: list[float]
  calls: int
  steps: int
  step_seconds: list[float]
  step_seconds_median: float
  ceiling_seconds: list[float]
  ceiling_reps: int
  ceiling_flops_per_second: float | None
  loss: float
  state: Any


def _ceiling_reps(ceiling: Callable[[], Any], target_seconds: float) -> int:
  """How many back-to-back ceiling matmuls make a block of about ``target_seconds``."""
  t0 = time.perf_counter()
  jax.block_until_ready(ceiling())
  one = max(time.perf_counter() - t0, 1e-6)
  return int(min(max(1, round(target_seconds / one)), 1000))


def time_train(
    program: TrainProgram,
    run,
    state=None,
    *,
    calls: int,
    rounds: int,
    ceiling: Callable[[], Any] | None = None,
    ceiling_flops: float = 0.0,
    ceiling_seconds: float = 0.05,
    warmup_calls: int = 1,
) -> Timing:
  """Times ``rounds`` blocks of ``calls`` back-to-back train calls, alternating with
  blocks of ceiling matmuls.

  Calls walk the epoch's batches as the loop does (``start`` = 0, k, 2k, …, wrapping
  before a call would run past the epoch). Only the end of a block waits for the device.

  Args:
    program: from :func:`compile_train`.
    run: the run (its training arrays on the devices, ``steps_per_epoch``).
    state: the train state (default ``run.state``; donated: use the returned one).
    calls: train calls per block.
    rounds: blocks timed.
    ceiling: ``ceiling()`` dispatches one matmul without waiting
      (``_flops.matmul_ceiling(..., block=False)``); None: no ceiling.
    ceiling_flops: its FLOPs.
    ceiling_seconds: the ceiling block's approximate length (the number of matmuls per
      block is set once, from one warmed-up matmul).
    warmup_calls: untimed calls first (the first call of a program may allocate).
  """
  images, labels = run.arrays["train"]
  leaves = jax.tree.leaves(run.state if state is None else state)
  k = program.steps_per_call
  starts = max(1, run.steps_per_epoch // k)  # full calls that fit in an epoch
  position = 0

  def dispatch(n: int):
    nonlocal leaves, position
    out = []
    for _ in range(n):
      leaves, m = program.fn.leaves(
          leaves, images, labels, program.perm, np.int32((position % starts) * k)
      )
      position += 1
      out.append(m)
    return out

  metrics = dispatch(warmup_calls)
  jax.block_until_ready((leaves, metrics))
  reps = _ceiling_reps(ceiling, ceiling_seconds) if ceiling is not None else 0
  blocks, mm = [], []
  for _ in range(rounds):
    t0 = time.perf_counter()
    metrics = dispatch(calls)
    jax.block_until_ready((leaves, metrics))
    blocks.append(time.perf_counter() - t0)
    if ceiling is not None:
      t0 = time.perf_counter()
      jax.block_until_ready([ceiling() for _ in range(reps)])
      mm.append((time.perf_counter() - t0) / reps)
  loss = float(np.asarray(jax.device_get(metrics[-1]["loss"])).ravel()[-1])
  step_seconds = [b / (calls * k) for b in blocks]
  ceiling_fps = (ceiling_flops / statistics.median(mm)) if mm else None
  return Timing(
      block_seconds=blocks,
      calls=calls,
      steps=calls * k,
      step_seconds=step_seconds,
      step_seconds_median=statistics.median(step_seconds),
      ceiling_seconds=mm,
      ceiling_reps=reps,
      ceiling_flops_per_second=ceiling_fps,
      loss=loss,
      state=jax.tree.unflatten(program.fn.treedef, leaves),
  )
