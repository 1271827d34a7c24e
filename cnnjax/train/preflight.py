"""Checks of a ``TrainConfig`` that need no data: run before any data is read, so a typo
fails in a second with one line instead of after minutes of decoding."""

from __future__ import annotations

import inspect

from cnnjax.train.config import TrainConfig

__all__ = ["check_config", "check_schedule_change"]

# Training images of the catalog datasets (before the validation split): an upper bound
# whatever their source.
_TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "mnist": 60_000, "fashion_mnist": 60_000}
# cnnjax.data.load arguments that have flags of their own.
_DATA_FLAGS = {
    "name": "--data",
    "data_dir": "--data-dir",
    "cache_dir": "--cache-dir",
    "seed": "--seed",
    "val_size": "--val-size",
}


def _accepted(fn) -> tuple[set[str], bool]:
  params = inspect.signature(fn).parameters.values()
  names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
  return names, any(p.kind is p.VAR_KEYWORD for p in params)


def _check_data(config: TrainConfig) -> int | None:
  """Checks the data options; returns the number of training images if known."""
  from cnnjax import data
  from cnnjax.data import sources

  if config.data not in data.DATASETS:
    raise ValueError(f"--data got {config.data!r}; expected one of {sorted(data.DATASETS)}.")
  allowed, _ = _accepted(sources.load)
  for key in config.data_options:
    if key in _DATA_FLAGS:
      raise ValueError(
          f"--data-option got {key}=...; expected {_DATA_FLAGS[key]} for {key} (a flag of "
          "its own)."
      )
    if key not in allowed:
      raise ValueError(
          f"--data-option got {key!r}; expected keys from " f"{sorted(allowed - set(_DATA_FLAGS))}."
      )
  shapes_only = ("num_train", "num_test", "num_classes")
  for key in shapes_only:
    if key in config.data_options and config.data != "shapes":
      raise ValueError(
          f"--data-option got {key}={config.data_options[key]!r} with --data "
          f"{config.data}; it applies to --data shapes only."
      )
  if config.data == "shapes":
    for key in shapes_only:
      value = config.data_options.get(key)
      if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"--data-option got {key}={value!r}; expected a positive int.")
    k = config.data_options.get("num_classes")
    if k is not None and not 2 <= k <= len(data.SHAPE_NAMES):
      raise ValueError(
          f"--data-option got num_classes={k!r}; expected 2 to {len(data.SHAPE_NAMES)} for "
          "--data shapes."
      )
    if config.data_dir is not None:
      raise ValueError(
          f"--data-dir got {config.data_dir!r}; --data shapes is generated and reads no files."
      )
    return config.data_options.get("num_train", 6000)
  if config.data == "folder" and config.data_dir is None:
    raise ValueError(
        "--data-dir got none with --data folder; expected an image folder " "directory or .zip."
    )
  return _TRAIN_SIZES.get(config.data)


def _check_sizes(config: TrainConfig, num_images: int) -> None:
  from cnnjax import data

  default = data.DATASETS[config.data].val_size
  val = config.val_size if config.val_size is not None else default
  if val is None:
    return
  if val >= num_images:
    flag = "--val-size" if config.val_size is not None else "--val-size (default)"
    raise ValueError(
        f"{flag} got {val}, but --data {config.data} has {num_images} training images; "
        f"expected fewer (e.g. --val-size {num_images // 6})."
    )
  if config.batch_size > num_images - val:
    raise ValueError(
        f"--batch-size got {config.batch_size}; expected at most the {num_images - val} "
        f"training images left after --val-size {val}."
    )


def _check_model(config: TrainConfig) -> None:
  from cnnjax import data, models

  if config.model not in models.names():
    raise ValueError(f"--model got {config.model!r}; expected one of {models.names()}.")
  allowed, any_key = _accepted(models.model_class(config.model).__init__)
  allowed -= {"self", "num_classes", "rngs"}
  if config.dtype is not None and not any_key and "dtype" not in allowed:
    raise ValueError(f"--dtype got {config.dtype!r}; --model {config.model} takes no dtype.")
  for key in config.model_options:
    if not any_key and key not in allowed:
      raise ValueError(
          f"--model-option got {key!r} for --model {config.model}; expected keys from "
          f"{sorted(allowed)}."
      )
  spec = data.DATASETS[config.data]
  shape = config.model_options.get("input_shape", spec.image_shape)
  classes = spec.num_classes
  if config.data == "shapes":
    classes = config.data_options.get("num_classes", len(data.SHAPE_NAMES))
  if shape is None or classes is None:
    return  # an image folder: its shape and classes are known once it is read
  options = {
      "input_shape": tuple(shape),
      **{k: v for k, v in config.model_options.items() if k != "input_shape"},
  }
  if config.dtype is not None:
    options["dtype"] = config.dtype
  try:
    models.abstract(config.model, num_classes=classes, **options)
  except Exception as e:  # the constructor's own complaint, whatever its type
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    given = ", ".join(f"{k}={v!r}" for k, v in config.model_options.items()) or "none"
    raise ValueError(
        f"--model-option got {given} for --model {config.model} on {tuple(shape)} images "
        f"and {classes} classes, which it rejects: {text}"
    ) from None


def check_config(config: TrainConfig, *, model: bool = True) -> None:
  """Checks the model, its options, the data options and the sizes without reading data.

  Args:
    config: the run's configuration.
    model: also check ``config.model`` and ``config.model_options`` (off when a model
      factory replaces the zoo).

  Raises:
    ValueError: one line naming the option, what was given and what is allowed.
  """
  if config.tensorboard:
    from cnnjax.train.tracking import require_tensorboard

    require_tensorboard()
  num_images = _check_data(config)
  if num_images is not None:
    _check_sizes(config, num_images)
  if model:
    _check_model(config)


def _total_steps(config: TrainConfig, num_train: int) -> int:
  return config.epochs * (num_train // config.batch_size)


def check_schedule_change(
    saved: TrainConfig, config: TrainConfig, *, num_train: int, start_epoch: int
) -> None:
  """Refuses a resume whose schedule length differs from the run's (the learning rate
  would jump where the run resumes), naming the change and the rates."""
  import jax.numpy as jnp

  from cnnjax.train.optim import make_schedule

  if _total_steps(saved, num_train) == _total_steps(config, num_train):
    return
  if config.schedule == "constant" and not config.warmup_epochs and not config.lookahead:
    return  # the same rate whatever the length
  step = start_epoch * (num_train // saved.batch_size)
  old_schedule = make_schedule(saved, steps_per_epoch=num_train // saved.batch_size)
  new_schedule = make_schedule(config, steps_per_epoch=num_train // config.batch_size)
  # (a schedule returns an ArrayLike: a scalar jax.Array here)
  old, new = float(jnp.asarray(old_schedule(step))), float(jnp.asarray(new_schedule(step)))
  changed = [
      f"{k} {getattr(saved, k)!r} -> {getattr(config, k)!r}"
      for k in ("epochs", "batch_size")
      if getattr(saved, k) != getattr(config, k)
  ]
  raise ValueError(
      f"train: resume got {', '.join(changed) or 'a new length'}, which changes the "
      f"{config.schedule} schedule's length from {_total_steps(saved, num_train)} to "
      f"{_total_steps(config, num_train)} steps: at step {step} the learning rate would go "
      f"from {old:.4g} to {new:.4g}; expected allow_schedule_change=True "
      "(--allow-schedule-change) to accept that, or the run's length."
  )
