"""A run directory's files and the checks on them (new run, resume, portable metadata).

A run directory holds ``config.json`` (data paths absolute), ``config_history.jsonl``,
``run.json`` (what using the model needs without the training data: class names, input
shape, normalisation statistics, the model's constructor arguments), ``metrics.jsonl``,
``checkpoints/<epoch>/``, plots and ``.lock``. Nothing in it names the directory itself,
so a moved or copied run still loads.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cnnjax.train.checkpoint import CheckpointError
from cnnjax.train.config import TrainConfig, config_changes
from cnnjax.train.jsonfiles import read_json
from cnnjax.train.run import InputSpec, Run, model_arguments

__all__ = [
    "CONFIG_FILE",
    "RUN_FILE",
    "absolute_paths",
    "check_out_dir",
    "check_resume_config",
    "describe_changes",
    "read_run_info",
    "require_run_dir",
    "restore_error",
    "write_run_info",
]

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"

# Config fields that shape the saved state (the model's and the optimizer's pytrees).
_STATE_FIELDS = (
    "model",
    "model_options",
    "data",
    "data_dir",
    "data_options",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "decay_all",
    "norm_lr_scale",
    "clip_grad_norm",
    "lookahead",
)


def absolute_paths(config: TrainConfig) -> TrainConfig:
  """``config`` with ``data_dir`` and ``cache_dir`` made absolute (``~`` expanded)."""
  changes = {}
  for name in ("data_dir", "cache_dir"):
    value = getattr(config, name)
    if value is not None:
      absolute = os.path.abspath(os.path.expanduser(os.fspath(value)))
      if absolute != value:
        changes[name] = absolute
  return config.replace(**changes) if changes else config


def require_run_dir(run_dir: str | os.PathLike[str], *, op: str) -> str:
  """``run_dir`` as a string, if it holds a ``config.json`` (else a ``ValueError``)."""
  run_dir = os.fspath(run_dir)
  if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
    raise ValueError(
        f"{op}: run_dir got {run_dir!r}, which has no config.json; expected a directory "
        "written by `cnnjax train --out`."
    )
  return run_dir


def check_out_dir(out_dir: str, resume: bool) -> None:
  has_run = os.path.exists(os.path.join(out_dir, "metrics.jsonl")) or os.path.isdir(
      os.path.join(out_dir, "checkpoints")
  )
  if has_run and not resume:
    raise ValueError(
        f"train: out_dir got {out_dir!r}, which already holds a run (metrics.jsonl or "
        "checkpoints/); expected a new directory, or resume=True (--resume) to continue it."
    )


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
  return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def check_resume_config(saved: TrainConfig, config: TrainConfig, out_dir: str) -> None:
  if saved.seed != config.seed:
    raise ValueError(
        f"train: seed got {config.seed!r} with resume=True, but the run in {out_dir!r} was "
        f"started with seed {saved.seed!r} (the seed fixes the initialisation and the "
        f"validation split); expected seed={saved.seed!r}, or a new out_dir."
    )


def restore_error(
    saved: TrainConfig | None, config: TrainConfig, path: str, error: CheckpointError
) -> ValueError:
  changes = config_changes(saved, config) if saved is not None else {}
  changes = {k: v for k, v in changes.items() if k in _STATE_FIELDS}
  if changes:
    return ValueError(
        f"train: the checkpoint {path} does not fit the resumed config, which changes "
        f"{describe_changes(changes)}; expected the run's model and optimizer settings "
        "(start a new out_dir to change them)."
    )
  return ValueError(f"train: the checkpoint {path} cannot be restored: {error}")


def write_run_info(out_dir: str, run: Run, *, platform: dict[str, Any] | None = None) -> None:
  """Writes ``run.json``: the run's :class:`InputSpec`, model and constructor arguments."""
  from cnnjax import __version__

  info = {
      "cnnjax_version": __version__,
      "model": run.config.model,
      "model_arguments": {
          "num_classes": len(run.spec.class_names),
          **_jsonable(model_arguments(run.config, input_shape=run.spec.input_shape)),
      },
      **run.spec.to_dict(),
  }
  if platform:
    info["platform"] = platform
  path = os.path.join(out_dir, RUN_FILE)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def read_run_info(run_dir: str) -> InputSpec | None:
  """The :class:`InputSpec` in ``run_dir/run.json`` (None for a run written before it).

  Raises:
    OSError: the file cannot be read.
    ValueError: it is not a ``run.json`` written by cnnjax train: not JSON, or a value of
      the wrong type, length or range (see :meth:`InputSpec.from_dict`; one class name
      per output of ``model_arguments.num_classes``); the message names the file.
  """
  path = os.path.join(run_dir, RUN_FILE)
  if not os.path.exists(path):
    return None
  info = read_json(path, expected="a run.json written by cnnjax train")
  try:
    spec = InputSpec.from_dict(info)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  arguments = info.get("model_arguments", {})
  if not isinstance(arguments, dict):
    raise ValueError(
        f"{path}: model_arguments got a {type(arguments).__name__}; expected an " "object."
    )
  num_classes = arguments.get("num_classes", len(spec.class_names))
  if num_classes != len(spec.class_names):
    raise ValueError(
        f"{path}: class_names got {len(spec.class_names)} names for model_arguments "
        f"num_classes={num_classes!r}; expected one name per class."
    )
  return spec


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
