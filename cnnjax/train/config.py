"""``TrainConfig``: every knob of a training run, documented, validated, JSON-serialisable.

A run is fully described by its ``TrainConfig`` (written to ``<out>/config.json``) and its
seed: ``cnnjax eval --run DIR`` and ``cnnjax train --resume`` rebuild everything from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any, cast

from cnnjax.train.jsonfiles import is_number, read_json, read_jsonl

__all__ = [
    "DTYPES",
    "FLIP_MODES",
    "OPTIMIZERS",
    "RECIPES",
    "SCHEDULES",
    "TTA_MODES",
    "TrainConfig",
    "append_history",
    "config_changes",
    "read_history",
    "repair_history",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "piecewise", "linear")
FLIP_MODES = ("random", "alternating", "none")
TTA_MODES = ("none", "flip", "flip_translate")
DTYPES = ("float32", "bfloat16", "float16")

# Learning rate used when ``lr`` is left as None: a good first try for each optimizer.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Configuration of one training run.

  Attributes:
    model: model name in the zoo (``cnnjax.models.get``), e.g. ``"seed-cnn"``.
    model_options: extra keyword arguments for the model constructor.
    dtype: the model's computation dtype, ``"float32"``, ``"bfloat16"`` or ``"float16"``
      (None: the model's default, float32), passed to every zoo model as ``dtype=``:
      mixed precision with float32 parameters and optimizer state, BatchNorm statistics,
      softmax and loss in float32.
    data: dataset name (``cnnjax.data.load``): ``"shapes"`` (built in, no download),
      ``"cifar10"``, ``"cifar100"``, ``"mnist"``, ``"fashion_mnist"``.
    data_dir: optional local source for ``data`` (a CIFAR binary/python directory, or an
      image folder directory or ``.zip`` of ``<split>/<class>/<image>``).
    data_options: extra keyword arguments for ``cnnjax.data.load`` (e.g. ``num_train``,
      ``num_classes`` for shapes, ``class_names`` for image folders).
    cache_dir: where decoded arrays are cached (None: the data module's default).
    val_size: images held out from the training split for validation (None: the dataset's
      default, 5,000 for CIFAR-10, giving 45,000 / 5,000; 1,000 for shapes).
    epochs: passes over the training split.
    batch_size: global training batch size (split over all devices; must be divisible by
      their number). The last incomplete batch of each epoch is dropped.
    eval_batch_size: batch size for validation/test evaluation (rounded up to a multiple of
      the device count; the last batch is padded and masked).
    optimizer: ``"sgd"`` (with ``momentum``, optionally Nesterov), ``"adam"`` or ``"adamw"``.
    lr: peak learning rate; None picks 0.05 for SGD and 1e-3 for Adam/AdamW.
    momentum: SGD momentum (0 for plain SGD).
    nesterov: use Nesterov momentum with SGD.
    b1: Adam/AdamW first-moment decay.
    b2: Adam/AdamW second-moment decay.
    eps: Adam/AdamW epsilon.
    weight_decay: L2 weight decay. For SGD and Adam it is added to the gradient (classic L2);
      for AdamW it is decoupled (multiplied by the scheduled learning rate).
    decay_all: also decay biases and normalisation scales (by default only parameters with
      2 or more dimensions, i.e. kernels, are decayed).
    norm_lr_scale: learning-rate multiplier of the normalisation layers' parameters
      (BatchNorm offsets and scales: parameters of a layer whose attribute name contains
      ``"norm"`` or starts with ``"bn"``); it scales their gradients, not their weight
      decay. SGD only. airbench's ``bias_scaler`` is 64.
    label_smoothing: label smoothing of the cross-entropy targets, in [0, 1).
    clip_grad_norm: clip gradients to this global L2 norm (None: no clipping).
    schedule: learning-rate schedule: ``"constant"``, ``"cosine"`` (to
      ``final_lr_fraction * lr``), ``"linear"`` (linear decay to ``final_lr_fraction * lr``),
      ``"onecycle"`` (cosine one-cycle; warm-up of ``warmup_epochs``, or 30% of the run when 0)
      or ``"piecewise"`` (multiply by ``piecewise_factor`` at each of ``piecewise_boundaries``).
      All but one-cycle start with a linear warm-up from 0 over ``warmup_epochs``.
    warmup_epochs: linear warm-up length, in epochs (may be fractional).
    warmup_start_fraction: the learning rate at the start of the warm-up, as a fraction of
      lr (0: from zero). With ``schedule="linear"`` this gives airbench's triangle.
    final_lr_fraction: learning rate at the end of cosine/linear decay, as a fraction of lr.
    piecewise_boundaries: epochs at which the piecewise schedule steps down.
    piecewise_factor: factor applied at each piecewise boundary.
    lookahead: wrap the optimizer in Lookahead (``optax.lookahead``; Zhang et al. 2019):
      the state keeps slow parameters (``optax.LookaheadParams``), which evaluation,
      checkpoints' models and plots use. Every ``lookahead_sync_period`` steps the slow
      parameters move ``α`` of the way to the fast ones and the fast ones restart from
      them, with airbench's schedule ``α(t) = 1 − lookahead_decay^sync_period · (t/T)³``
      (``T`` the run's steps): plain SGD early, an average over the last steps late.
    lookahead_sync_period: fast steps between synchronisations (airbench's 5).
    lookahead_decay: per-step decay of the slow average at the end of the run (airbench's
      0.95), in [0, 1).
    augment: augment training images on the device: a random crop after ``crop_padding``
      pixels of reflect padding (a random translation) and a horizontal flip (``flip``).
    crop_padding: the crop's padding in pixels (4: the classic CIFAR crop; airbench's
      translate is 2; 0: no crop).
    flip: horizontal flips with ``augment``: ``"random"`` (each image with probability ½,
      every step), ``"alternating"`` (airbench: a fixed coin per image in epoch 0, every
      image flipped the other way in odd epochs) or ``"none"``.
    tta: test-time augmentation of every evaluation (of the last only with
      ``tta_final_only``): ``"none"``, ``"flip"`` (the mean of
      the logits of the image and its mirror: 2 forward passes) or ``"flip_translate"``
      (also one-pixel translations: 6 passes, airbench's level 2).
    tta_final_only: apply ``tta`` to the last epoch's evaluation only; earlier epochs
      evaluate without it (airbench's choice: with ``"flip_translate"`` every epoch's
      evaluation costs 6 forward passes of the validation set).
    data_init_images: training images given to the model's data-dependent
      initialisation before training, if it has one (``model.data_init(images)``:
      fastnet's patch-whitening layer, :func:`cnnjax.models.fastnet.whiten_init`):
      preprocessed, not augmented, every ``N // n``-th of the training part (so that a
      class-sorted source gives all classes); 0 skips it.
    seed: seed of parameter initialisation, the train/validation split, shuffling,
      augmentation and dropout. Same seed, same device count: same run, bit for bit.
    steps_per_call: training steps per compiled call (a ``lax.scan``); 1 is a Python loop
      over a jitted step. Measured on XLA:CPU (seed-cnn, batch 128, 2 shared cores): the
      Python loop 514 images/s, a rolled scan over 13 steps 14 images/s, the same scan fully
      unrolled 480 images/s with a 5x longer compile (34 s vs 6.6 s); hence the default 1.
      (Inside a rolled loop XLA:CPU runs convolution gradients 30-60x slower than outside:
      a conv forward+backward, 5x5, 3 -> 32, 32x32, batch 128, took 1.8 s per iteration
      against 28 ms unrolled, jaxlib 0.10.2, with or without cnnjax's XLA flag; the known
      jax-ml/jax#12868.) Not measured on GPU/TPU yet, where the loop already keeps the
      device busy unless dispatching a step costs more than running it:
      ``benchmarks/accelerator.py --steps-per-call K`` measures it.
    unroll: ``lax.scan`` unroll factor when ``steps_per_call > 1`` (0, the default: fully
      unrolled; a rolled scan is very slow on XLA:CPU, see above).
    num_devices: use the first this many local devices (None: all). Data parallel over a
      ``"data"`` mesh axis.
    distributed: call ``jax.distributed.initialize()`` first (multi-host runs; None: only when
      the ``JAX_COORDINATOR_ADDRESS`` environment variable is set).
    checkpoint_every: save a checkpoint every this many epochs (and always at the end).
    keep_checkpoints: how many recent checkpoints to keep.
    log_every: write the training loss (mean since the last line), learning rate and
      images/s to ``steps.jsonl`` every this many steps (0: never).
    tensorboard: also write them, and each epoch's metrics, as TensorBoard event files to
      ``<run>/tensorboard/`` (needs tensorboardX: ``pip install 'cnnjax[tensorboard]'``).
  """

  model: str = "seed-cnn"
  model_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  dtype: str | None = None
  data: str = "shapes"
  data_dir: str | None = None
  data_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  cache_dir: str | None = None
  val_size: int | None = None
  epochs: int = 10
  batch_size: int = 128
  eval_batch_size: int = 1000
  optimizer: str = "sgd"
  lr: float | None = None
  momentum: float = 0.9
  nesterov: bool = False
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 5e-4
  decay_all: bool = False
  norm_lr_scale: float = 1.0
  label_smoothing: float = 0.0
  clip_grad_norm: float | None = None
  schedule: str = "cosine"
  warmup_epochs: float = 0.0
  warmup_start_fraction: float = 0.0
  final_lr_fraction: float = 0.0
  piecewise_boundaries: tuple[float, ...] = ()
  piecewise_factor: float = 0.1
  lookahead: bool = False
  lookahead_sync_period: int = 5
  lookahead_decay: float = 0.95
  augment: bool = False
  crop_padding: int = 4
  flip: str = "random"
  tta: str = "none"
  tta_final_only: bool = False
  data_init_images: int = 5000
  seed: int = 0
  steps_per_call: int = 1
  unroll: int = 0
  num_devices: int | None = None
  distributed: bool | None = None
  checkpoint_every: int = 1
  keep_checkpoints: int = 2
  log_every: int = 20
  tensorboard: bool = False

  def __post_init__(self) -> None:
    set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
    set_("model_options", dict(self.model_options))
    set_("data_options", dict(self.data_options))
    set_("piecewise_boundaries", tuple(float(b) for b in self.piecewise_boundaries))
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(
          f"TrainConfig: optimizer got {self.optimizer!r}; expected one of {OPTIMIZERS}."
      )
    if self.schedule not in SCHEDULES:
      raise ValueError(f"TrainConfig: schedule got {self.schedule!r}; expected one of {SCHEDULES}.")
    for name in ("nesterov", "decay_all", "lookahead", "augment", "tta_final_only", "tensorboard"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(
            f"TrainConfig: {name} got {getattr(self, name)!r}; expected True or False."
        )
    if self.dtype is not None and self.dtype not in DTYPES:
      raise ValueError(f"TrainConfig: dtype got {self.dtype!r}; expected None or one of {DTYPES}.")
    if self.dtype is not None and "dtype" in self.model_options:
      raise ValueError(
          f"TrainConfig: dtype got {self.dtype!r} with model_options dtype="
          f"{self.model_options['dtype']!r}; expected only one of them (--dtype)."
      )
    for name, allowed in (("flip", FLIP_MODES), ("tta", TTA_MODES)):
      if getattr(self, name) not in allowed:
        raise ValueError(
            f"TrainConfig: {name} got {getattr(self, name)!r}; expected one of {allowed}."
        )
    if self.lr is None:
      set_("lr", DEFAULT_LR[self.optimizer])
    _positive_int("epochs", self.epochs)
    _positive_int("batch_size", self.batch_size)
    _positive_int("eval_batch_size", self.eval_batch_size)
    _positive_int("steps_per_call", self.steps_per_call)
    _positive_int("checkpoint_every", self.checkpoint_every)
    _positive_int("keep_checkpoints", self.keep_checkpoints)
    _positive_int("lookahead_sync_period", self.lookahead_sync_period)
    for name in ("crop_padding", "data_init_images", "log_every"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"TrainConfig: {name} got {value!r}; expected an int >= 0.")
    if not isinstance(self.unroll, int) or isinstance(self.unroll, bool) or self.unroll < 0:
      raise ValueError(f"TrainConfig: unroll got {self.unroll!r}; expected an int >= 0.")
    if self.num_devices is not None:
      _positive_int("num_devices", self.num_devices)
    if self.val_size is not None and (
        not isinstance(self.val_size, int) or isinstance(self.val_size, bool) or self.val_size < 0
    ):
      raise ValueError(
          f"TrainConfig: val_size got {self.val_size!r}; expected None or an int >= 0."
      )
    if not cast(float, self.lr) > 0:  # (a float now: None was resolved above)
      raise ValueError(f"TrainConfig: lr got {self.lr!r}; expected a positive float.")
    for name in (
        "weight_decay",
        "momentum",
        "warmup_epochs",
        "final_lr_fraction",
        "warmup_start_fraction",
    ):
      if not getattr(self, name) >= 0:
        raise ValueError(f"TrainConfig: {name} got {getattr(self, name)!r}; expected a float >= 0.")
    if not 0 <= self.label_smoothing < 1:
      raise ValueError(
          f"TrainConfig: label_smoothing got {self.label_smoothing!r}; expected a float in "
          "[0, 1)."
      )
    if not 0 <= self.lookahead_decay < 1:
      raise ValueError(
          f"TrainConfig: lookahead_decay got {self.lookahead_decay!r}; expected a float in "
          "[0, 1)."
      )
    if not self.norm_lr_scale > 0:
      raise ValueError(
          f"TrainConfig: norm_lr_scale got {self.norm_lr_scale!r}; expected a positive float."
      )
    if self.norm_lr_scale != 1 and self.optimizer != "sgd":
      raise ValueError(
          f"TrainConfig: norm_lr_scale got {self.norm_lr_scale!r} with optimizer="
          f"{self.optimizer!r}; expected 1.0 unless optimizer='sgd' (Adam's normalised "
          "steps ignore a gradient scale)."
      )
    if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
      raise ValueError(
          f"TrainConfig: clip_grad_norm got {self.clip_grad_norm!r}; expected None or a "
          "positive float."
      )
    if any(not b > 0 for b in self.piecewise_boundaries) or list(
        self.piecewise_boundaries
    ) != sorted(self.piecewise_boundaries):
      raise ValueError(
          f"TrainConfig: piecewise_boundaries got {self.piecewise_boundaries!r}; expected "
          "increasing positive epoch numbers."
      )
    if self.schedule == "piecewise" and not self.piecewise_boundaries:
      raise ValueError(
          "TrainConfig: piecewise_boundaries got (); expected at least one epoch boundary "
          "when schedule='piecewise'."
      )
    if self.schedule == "onecycle" and self.warmup_epochs >= self.epochs:
      raise ValueError(
          f"TrainConfig: warmup_epochs got {self.warmup_epochs!r}; expected fewer than "
          f"epochs ({self.epochs}) for schedule='onecycle'."
      )

  @classmethod
  def from_recipe(cls, name: str, **overrides: Any) -> TrainConfig:
    """The config of recipe ``name`` (see ``RECIPES``), with ``overrides`` taking precedence.

    A recipe's derived values (e.g. ``"fast"``'s learning rate from the batch size and
    momentum) are computed after the overrides, unless they are overridden themselves.

    Example:
      >>> c = TrainConfig.from_recipe("fast", data="cifar10", batch_size=512)
      >>> c.model, c.batch_size, round(c.lr, 3)
      ('fastnet', 512, 0.75)
    """
    if name not in RECIPES:
      raise ValueError(
          f"TrainConfig.from_recipe: name got {name!r}; expected one of {sorted(RECIPES)}."
      )
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(
          f"TrainConfig.from_recipe: got unknown field(s) {unknown}; expected names from "
          f"{[f.name for f in dataclasses.fields(cls)]}."
      )
    return cls(**RECIPES[name].resolve(overrides))

  def replace(self, **changes: Any) -> TrainConfig:
    """A copy with ``changes`` applied (and validated)."""
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
    if unknown:
      raise ValueError(
          f"TrainConfig.replace: got unknown field(s) {unknown}; expected names from "
          f"{[f.name for f in dataclasses.fields(self)]}."
      )
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-compatible dict of all fields."""
    d = dataclasses.asdict(self)
    d["piecewise_boundaries"] = list(self.piecewise_boundaries)
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
    """Inverse of :meth:`to_dict` (a JSON object of fields; missing ones take their
    defaults).

    Raises:
      ValueError: ``d`` is not a mapping, has unknown keys, or a value of the wrong JSON
        type (a string for a number, a non-finite float, ...) or out of range.
    """
    if not isinstance(d, Mapping):
      raise ValueError(
          f"TrainConfig.from_dict: got a {type(d).__name__}; expected a JSON object of "
          "TrainConfig fields."
      )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
      raise ValueError(
          f"TrainConfig.from_dict: got unknown key(s) {unknown}; expected keys from "
          f"{sorted(fields)}."
      )
    for name, value in d.items():
      wanted = [k.strip() for k in fields[name].type.split("|")]
      if not any(
          k == "None" and value is None or k != "None" and _JSON_KINDS[k][0](value) for k in wanted
      ):
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        kinds = " or ".join("null" if k == "None" else _JSON_KINDS[k][1] for k in wanted)
        raise ValueError(f"TrainConfig.from_dict: {name} got {text}; expected {kinds}.")
    return cls(**d)

  def save(self, path: str | os.PathLike[str]) -> None:
    """Writes the config as JSON (atomically: a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
      f.write("\n")
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
    """Reads a config written by :meth:`save`.

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not such a config (not JSON, a field of the wrong type or out of
        range, ...); the message names the file.
    """
    d = read_json(path, expected="a config.json written by cnnjax train")
    try:
      return cls.from_dict(d)
    except (ValueError, TypeError) as e:
      raise ValueError(f"{os.fspath(path)}: {e}") from None


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
  """``{field: (old value, new value)}`` for the fields that differ, in field order."""
  a, b = old.to_dict(), new.to_dict()
  return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def append_history(
    path: str | os.PathLike[str],
    *,
    epoch: int,
    config: TrainConfig,
    changes: Mapping[str, tuple[Any, Any]] | None = None,
) -> None:
  """Appends one line to a run's ``config_history.jsonl``.

  The run's ``config.json`` is the config its latest epochs ran under; the history says
  from which epoch each config applied: a first line with the whole config, then one
  line per resume that changed it, written once the first epoch under the change has
  completed (``{"epoch": e, "changes": {field: [old, new]}, "time": ...}``).
  """
  entry: dict[str, Any] = {"epoch": epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  if changes is None:
    entry["config"] = config.to_dict()
  else:
    entry["changes"] = {k: list(v) for k, v in changes.items()}
  with open(path, "a") as f:
    f.write(json.dumps(entry, sort_keys=True) + "\n")


_HISTORY_EXPECTED = (
    "one JSON object per line: {'epoch', 'time', and 'config' (the whole "
    "config) or 'changes' ({field: [old, new]})}"
)


def _check_history_entry(entry) -> str | None:
  """Why ``entry`` is not a ``config_history.jsonl`` line (None: it is)."""
  if not isinstance(entry, dict):
    return f"a JSON {type(entry).__name__}, not an object"
  epoch = entry.get("epoch")
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
    return f"'epoch' got {epoch!r}, not an integer >= 1"
  if not isinstance(entry.get("time", ""), str):
    return f"'time' got {entry['time']!r}, not a string"
  if ("config" in entry) == ("changes" in entry):
    return "not exactly one of 'config' and 'changes'"
  if "config" in entry:
    try:
      TrainConfig.from_dict(entry["config"])
    except (ValueError, TypeError) as e:
      return f"'config': {e}"
    return None
  changes = entry["changes"]
  if not isinstance(changes, dict) or not all(
      isinstance(v, list) and len(v) == 2 for v in changes.values()
  ):
    return "'changes' is not an object of [old, new] pairs"
  return None


def read_history(
    path: str | os.PathLike[str], *, drop_torn_tail: bool = False
) -> list[dict[str, Any]]:
  """The entries of a run's ``config_history.jsonl`` (see :func:`append_history`;
  missing file: []).

  Args:
    path: the file.
    drop_torn_tail: drop an unreadable last line with a warning (a kill while it was
      appended) instead of raising.

  Raises:
    ValueError: a line is not a history entry; the message names the file and line.
  """
  return read_jsonl(
      path,
      op="read_history",
      record="config history entry",
      expected=_HISTORY_EXPECTED,
      check=_check_history_entry,
      drop_torn_tail=drop_torn_tail,
  )


def repair_history(path: str | os.PathLike[str]) -> None:
  """Checks a run's ``config_history.jsonl`` before a resume appends to it: a torn last
  line is dropped (with a warning) and the file rewritten; other damage raises a
  ``ValueError`` naming the file and line."""
  entries = read_history(path, drop_torn_tail=True)
  if not os.path.exists(path):
    return
  with open(path, "rb") as f:
    lines = [line for line in f.read().split(b"\n") if line.strip()]
  if len(lines) != len(entries):
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A named set of ``TrainConfig`` values.

  Attributes:
    description: one line for ``--help``.
    values: the fields it sets.
    derive: ``derive(values, given) -> values``: fields computed from the others once the
      explicit overrides (``given``) are in, for the fields not in ``given``.
  """

  description: str
  values: Mapping[str, Any]
  derive: Any = None

  def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe's values updated by ``overrides``, then derived."""
    values = {**self.values, **overrides}
    if self.derive is not None:
      values = self.derive(values, set(overrides))
    return values


# airbench94's hyperparameters are stated per 1024 examples of a summed loss with the
# momentum's gain divided out ("decoupled"): lr 11.5 and weight decay 0.0153 per
# kilostep. For the mean loss cnnjax minimises, plain Nesterov SGD gets
#   lr = 11.5 · (B / 1024) / (1 + 1 / (1 − momentum))           (1.5 at B = 1024)
#   weight_decay = 0.0153 · (B / 1024) / (1 + 1 / (1 − momentum)) / lr   (so lr · wd, the
#     per-step decay, is airbench's whatever the lr; 0.0153 / 11.5 with the derived lr).
_AIRBENCH_LR, _AIRBENCH_WD = 11.5, 0.0153


def _derive_fast(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
  values = dict(values)
  kilo = values["batch_size"] / 1024
  momentum = values["momentum"]
  gain = 1 + 1 / (1 - momentum) if 0 <= momentum < 1 else None
  if "warmup_epochs" not in given:
    values["warmup_epochs"] = 0.23 * values["epochs"]
  if "lr" not in given and gain and values["optimizer"] == "sgd":
    values["lr"] = _AIRBENCH_LR * kilo / gain
  elif "lr" not in given:
    values["lr"] = None  # the optimizer's default
  if "weight_decay" not in given and gain and values["lr"]:
    values["weight_decay"] = _AIRBENCH_WD * kilo / gain / values["lr"]
  return values


# Where "fast" differs from airbench94.py: it trains on the 45,000 images left after the
# validation split (airbench: all 50,000) for 10 whole epochs (airbench: 9.9), in float32
# (airbench: fp16 with fp32 BatchNorm; pass --dtype bfloat16 on a GPU, or on
# a CPU with AMX / AVX512-BF16);
# BatchNorm offsets are not decayed (airbench decays them at the same per-step strength:
# add --decay-all, which then also decays the whitening bias, as airbench does); the
# whitening bias is never frozen (airbench freezes it after 3 epochs: a speed measure);
# Lookahead averages the parameters only (airbench's EMA also averages the BatchNorm
# statistics) and does not copy the slow parameters back at each epoch's end; the TTA
# applies to the final evaluation, as airbench's (tta_final_only; the epochs before it
# evaluate without TTA).
RECIPES: dict[str, Recipe] = {
    "fast": Recipe(
        description="airbench94 (Jordan 2024): fastnet, batch 1024, 10 epochs, Nesterov SGD "
        "(momentum 0.85, lr 11.5 and weight decay 0.0153 per 1024 examples, decoupled), "
        "BatchNorm lr x64 without weight decay, label smoothing 0.2, linear warm-up from "
        "0.2 lr over 23% of the run then linear decay to 0.07 lr, Lookahead, 2-pixel "
        "translate + alternating flip, whitening init, flip+translate TTA of the final "
        "evaluation",
        values=dict(
            model="fastnet",
            epochs=10,
            batch_size=1024,
            optimizer="sgd",
            momentum=0.85,
            nesterov=True,
            decay_all=False,
            norm_lr_scale=64.0,
            label_smoothing=0.2,
            schedule="linear",
            warmup_start_fraction=0.2,
            final_lr_fraction=0.07,
            lookahead=True,
            lookahead_sync_period=5,
            lookahead_decay=0.95,
            augment=True,
            crop_padding=2,
            flip="alternating",
            tta="flip_translate",
            tta_final_only=True,
            data_init_images=5000,
        ),
        derive=_derive_fast,
    ),
}


# The JSON kinds of TrainConfig's field annotations: (test, what the error says).
_JSON_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (is_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "Mapping[str, Any]": (lambda v: isinstance(v, Mapping), "an object"),
    "tuple[float, ...]": (
        lambda v: isinstance(v, (list, tuple)) and all(map(is_number, v)),
        "a list of finite numbers",
    ),
}


def _positive_int(name: str, value) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"TrainConfig: {name} got {value!r}; expected a positive int.")
