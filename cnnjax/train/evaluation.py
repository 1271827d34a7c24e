"""Evaluating runs: ``eval_split`` (loss and accuracy of one split), ``load_run`` (a run
rebuilt from its directory and a checkpoint) and ``evaluate`` (a run's checkpoint on its
splits)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np

from cnnjax.train import sharding as _sh
from cnnjax.train.checkpoint import Checkpointer
from cnnjax.train.config import TTA_MODES, TrainConfig
from cnnjax.train.run import ModelFn, Run, build_run
from cnnjax.train.rundir import CONFIG_FILE, read_run_info, require_run_dir
from cnnjax.train.state import TrainState
from cnnjax.train.steps import Steps

if TYPE_CHECKING:
  from cnnjax.data.dataset import Dataset

__all__ = ["eval_mesh", "eval_split", "evaluate", "load_run"]


def eval_split(
    steps: Steps,
    state: TrainState,
    arrays: tuple[jax.Array, jax.Array],
    eval_batch_size: int,
    *,
    tta: bool = True,
) -> dict[str, float]:
  """Mean loss and accuracy of ``state`` on ``arrays = (images, labels)`` (on the devices)."""
  images, labels = arrays
  evaluate = steps.evaluate if tta else steps.evaluate_plain
  total = None
  for start in range(0, images.shape[0], eval_batch_size):
    sums = evaluate(state.params, state.model_state, images, labels, np.int32(start))
    total = sums if total is None else total + sums
  loss_sum, correct, count = (float(v) for v in _sh.to_host(total))
  return {"loss": loss_sum / count, "accuracy": correct / count}


def eval_mesh(config: TrainConfig) -> jax.sharding.Mesh:
  """The mesh to use a run on: the devices it asked for if present (a run may be used on
  another machine), else all local ones."""
  n = config.num_devices
  return _sh.make_mesh(n if n is not None and n <= len(jax.devices()) else None)


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    dataset: Dataset | None = None,
    model_fn: ModelFn | None = None,
    tta: str | None = None,
    load_data: bool = True,
) -> Run:
  """Rebuilds a run from its directory and a checkpoint.

  Args:
    run_dir: a directory written by :func:`~cnnjax.train.train` (it may have been moved).
    epoch: which checkpoint (None: the latest verified one).
    dataset: the run's dataset if already loaded (else loaded from the config when
      ``load_data``).
    model_fn: the model factory the run used, if it did not use the zoo.
    tta: the evaluation's test-time augmentation (None: the run's ``config.tta``).
    load_data: read the run's dataset. Without it (and without ``dataset``) nothing but
      the run directory is read; a run written before ``run.json`` existed needs its data.

  Returns:
    A :class:`~cnnjax.train.run.Run` whose ``state`` is the checkpoint's (replicated on
    the devices) and ``epoch`` its epoch.
  """
  run_dir = require_run_dir(run_dir, op="load_run")
  config = TrainConfig.load(os.path.join(run_dir, CONFIG_FILE))
  if tta is not None:
    config = config.replace(tta=tta)
  spec = read_run_info(run_dir)
  if dataset is None and (load_data or spec is None):
    from cnnjax.train.run import load_dataset

    dataset = load_dataset(config)
  run = build_run(
      config, dataset, spec=spec, model_fn=model_fn, mesh=eval_mesh(config), data_init=False
  )
  ckpt = Checkpointer(
      os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints, cleanup=False
  )
  try:
    if epoch is None:
      epoch = ckpt.latest_verified()
      if epoch is None:
        raise ValueError(
            f"load_run: run_dir got {run_dir!r}, which has no intact checkpoint under "
            "checkpoints/; expected a run that finished at least one checkpointed epoch."
        )
    run.state = ckpt.restore(epoch, run.state)
  finally:
    ckpt.close()
  run.epoch = epoch
  return run


def evaluate(
    run_dir: str | os.PathLike[str],
    *,
    epoch: int | None = None,
    splits: Sequence[str] = ("val", "test"),
    dataset: Dataset | None = None,
    model_fn: ModelFn | None = None,
    tta: str | None = None,
) -> dict[str, Any]:
  """Evaluates a run's checkpoint on the validation (and test, if present) splits.

  The inputs are normalised with the statistics saved in the run (``run.json``).

  Args:
    run_dir: a directory written by :func:`~cnnjax.train.train`.
    epoch: which checkpoint (None: the latest verified one).
    splits: any of ``"train"``, ``"val"``, ``"test"`` (absent splits are skipped).
    dataset: the run's dataset, if already loaded.
    model_fn: the model factory the run used, if it did not use the zoo.
    tta: test-time augmentation (``"none"``, ``"flip"``, ``"flip_translate"``); None: the
      run's ``config.tta``.

  Returns:
    ``{"epoch": e, "tta": mode, "<split>_loss": ..., "<split>_accuracy": ...}``.

  Example:
    >>> evaluate("/tmp/run")["val_accuracy"]  # needs a trained run  # doctest: +SKIP
  """
  for s in splits:
    if s not in ("train", "val", "test"):
      raise ValueError(
          f"evaluate: splits got {tuple(splits)!r}; expected names from ('train', 'val', "
          "'test')."
      )
  if tta is not None and tta not in TTA_MODES:
    raise ValueError(f"evaluate: tta got {tta!r}; expected None or one of {TTA_MODES}.")
  run = load_run(run_dir, epoch=epoch, dataset=dataset, model_fn=model_fn, tta=tta)
  result: dict[str, Any] = {"epoch": run.epoch, "tta": run.config.tta}
  for s in splits:
    arrays = cast("dict[str, Any]", run.arrays).get(s)  # (load_run read the data)
    if arrays is None:
      continue
    r = eval_split(run.steps, run.state, arrays, run.eval_batch_size)
    result[f"{s}_loss"], result[f"{s}_accuracy"] = r["loss"], r["accuracy"]
  return result
