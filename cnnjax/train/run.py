"""``build_run``: the one way to set up a run — model, state, optimizer, compiled steps.

``train``, ``evaluate``, ``load_run``, ``load_model``, the benchmarks and the experiments
all build their runs here, so that the sequence mesh → optimizer → preprocessing → model
and state → compiled steps exists once.

Example:
  >>> from cnnjax.train import TrainConfig, build_run
  >>> run = build_run(TrainConfig(data_options={"num_train": 600}, val_size=100))
  >>> run.dataset.train_images.shape, run.steps_per_epoch  # batches of 128
  ((500, 32, 32, 3), 3)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from cnnjax.train import sharding as _sh
from cnnjax.train.config import TrainConfig
from cnnjax.train.jsonfiles import is_number
from cnnjax.train.optim import make_optimizer, make_schedule
from cnnjax.train.state import ModelDef, TrainState, create_train_state
from cnnjax.train.steps import Preprocess, Steps, make_steps

if TYPE_CHECKING:
  from jax.typing import ArrayLike

  from cnnjax.data.dataset import Dataset

__all__ = [
    "InputSpec",
    "ModelFn",
    "Run",
    "build_model",
    "build_run",
    "init_state",
    "load_dataset",
    "make_preprocess",
    "model_arguments",
]

# Model factory: (num_classes=..., rngs=..., input_shape=...) -> nnx.Module.
ModelFn = Callable[..., nnx.Module]


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What a model was trained on, all a run needs to be used without its data.

  Attributes:
    class_names: one name per label, in label order.
    input_shape: ``(H, W, C)`` of the images.
    mean: per-channel mean of the training part, in pixel units (0–255), ``[C]``.
    std: per-channel standard deviation of the training part, in pixel units, ``[C]``.
    num_train: the number of training images (after the validation split).
  """

  class_names: tuple[str, ...]
  input_shape: tuple[int, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_train: int

  @classmethod
  def of(cls, dataset: Dataset, train_images: jax.Array | None = None) -> InputSpec:
    """The spec of a ``cnnjax.data.Dataset`` (statistics computed on the device when
    ``train_images``, the training part already on the devices, is given)."""
    from cnnjax.data import pipeline

    images = dataset.train_images if train_images is None else train_images
    mean, std = jax.jit(pipeline.channel_stats)(images)
    return cls(
        class_names=tuple(str(c) for c in dataset.class_names),
        input_shape=tuple(int(d) for d in dataset.train_images.shape[1:]),
        mean=tuple(float(v) for v in np.asarray(mean, np.float32)),
        std=tuple(float(v) for v in np.asarray(std, np.float32)),
        num_train=int(len(dataset.train_labels)),
    )

  def to_dict(self) -> dict[str, Any]:
    return {
        "class_names": list(self.class_names),
        "input_shape": list(self.input_shape),
        "mean": list(self.mean),
        "std": list(self.std),
        "num_train": self.num_train,
    }

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> InputSpec:
    """Inverse of :meth:`to_dict` (``run.json``'s keys), checked.

    Raises:
      ValueError: a missing key, or a value of the wrong type, length or range: class
        names that are not strings, an ``input_shape`` that is not three positive ints,
        a ``mean`` or ``std`` that is not one finite number per channel in [0, 255]
        (``std`` > 0: it divides), a ``num_train`` that is not a positive int.
    """
    reason = _spec_error(d)
    if reason is not None:
      raise ValueError(f"InputSpec.from_dict: {reason}.")
    return cls(
        class_names=tuple(d["class_names"]),
        input_shape=tuple(d["input_shape"]),
        mean=tuple(float(v) for v in d["mean"]),
        std=tuple(float(v) for v in d["std"]),
        num_train=d["num_train"],
    )


def _short(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _is_count(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _spec_error(d: Any) -> str | None:
  """Why ``d`` is not an :class:`InputSpec` dict (None: it is)."""
  if not isinstance(d, dict):
    return f"got a {type(d).__name__}; expected a JSON object"
  missing = [k for k in ("class_names", "input_shape", "mean", "std", "num_train") if k not in d]
  if missing:
    return (
        f"got no {', '.join(missing)}; expected class_names, input_shape, mean, std "
        "and num_train"
    )
  names, shape = d["class_names"], d["input_shape"]
  if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
    return f"class_names got {_short(names)}; expected a list of strings, one per class"
  if not isinstance(shape, list) or len(shape) != 3 or not all(map(_is_count, shape)):
    return f"input_shape got {_short(shape)}; expected [H, W, C], three positive ints"
  for key, low in (("mean", "[0"), ("std", "(0")):
    v = d[key]
    if (
        not isinstance(v, list)
        or len(v) != shape[2]
        or not all(is_number(x) and (x > 0 if key == "std" else x >= 0) and x <= 255 for x in v)
    ):
      return (
          f"{key} got {_short(v)}; expected {shape[2]} finite numbers in {low}, 255], "
          f"one per channel of input_shape {shape}"
      )
  if not _is_count(d["num_train"]):
    return f"num_train got {_short(d['num_train'])}; expected a positive int"
  return None


@dataclasses.dataclass
class Run:
  """A built run: everything ``train`` and ``evaluate`` step with.

  Attributes:
    config: the run's configuration.
    spec: the data it trains on (class names, input shape, normalisation, size).
    mesh: the device mesh (data parallel over ``"data"``).
    tx: the Optax optimizer.
    schedule: the learning-rate schedule (step → rate).
    preprocess: ``preprocess(key, uint8 images, *, train)``: normalisation (+ augmentation).
    model_def: the model's graph definitions (train and eval mode).
    state: the ``TrainState`` (replicated on the mesh; freshly initialised, or restored
      by :func:`~cnnjax.train.evaluation.load_run`).
    steps: the jitted train and evaluation functions.
    steps_per_epoch: optimizer steps per epoch.
    eval_batch_size: ``config.eval_batch_size`` rounded up to a multiple of the devices.
    dataset: the ``cnnjax.data.Dataset``, or None when built from a spec alone.
    arrays: the dataset's splits on the devices, ``{"train": (images, labels), "val": ...,
      "test": ...}`` (absent or None splits are missing), or None without a dataset.
    epoch: the checkpoint epoch the state was restored from (None: fresh).
  """

  config: TrainConfig
  spec: InputSpec
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  schedule: Callable[[Any], Any]
  preprocess: Preprocess
  model_def: ModelDef
  state: TrainState
  steps: Steps
  steps_per_epoch: int
  eval_batch_size: int
  dataset: Any = None
  arrays: dict[str, Any] | None = None
  epoch: int | None = None


def build_model(
    config: TrainConfig,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    model_fn: ModelFn | None = None,
) -> nnx.Module:
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

  return models.get(
      config.model,
      num_classes=num_classes,
      rngs=rngs,
      **model_arguments(config, input_shape=input_shape),
  )


def model_arguments(config: TrainConfig, *, input_shape: Sequence[int]) -> dict[str, Any]:
  """The zoo constructor's keyword options for ``config`` (``model_options`` with the
  data's ``input_shape`` unless given, and ``dtype`` when ``config.dtype`` is set)."""
  options = dict(config.model_options)
  options.setdefault("input_shape", tuple(input_shape))
  if config.dtype is not None:
    options["dtype"] = config.dtype
  return options


def init_state(
    config: TrainConfig,
    tx: optax.GradientTransformation,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    mesh: jax.sharding.Mesh,
    model_fn: ModelFn | None = None,
    train_images: jax.Array | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[ModelDef, TrainState]:
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
    model = build_model(config, num_classes=num_classes, input_shape=input_shape, model_fn=model_fn)
    if images is not None and preprocess is not None and hasattr(model, "data_init"):
      # Evenly spaced over the training part: the first N of a class-sorted source (an
      # image folder) would all be one class.
      n = min(config.data_init_images, images.shape[0])
      chosen = images[:: images.shape[0] // n][:n]
      cast(Any, model).data_init(preprocess(None, chosen, train=False))  # (hasattr above)
    model_def, state = create_train_state(model, tx, seed=config.seed, lookahead=config.lookahead)
    defs.append(model_def)
    return state

  use = train_images is not None and preprocess is not None and config.data_init_images > 0
  with jax.threefry_partitionable(False):
    state = jax.jit(init, out_shardings=_sh.replicated(mesh))(train_images if use else None)
  return defs[0], state


def load_dataset(config: TrainConfig, *, progress: bool | None = None) -> Dataset:
  """``cnnjax.data.load`` with the config's data settings.

  Args:
    config: the run's configuration.
    progress: decoding progress bars (None: only when stderr is a terminal, so that
      log files get no carriage-return clutter).
  """
  from cnnjax import data

  options = dict(config.data_options)
  if "progress" not in options:
    options["progress"] = sys.stderr.isatty() if progress is None else progress
  return data.load(
      config.data,
      data_dir=config.data_dir,
      cache_dir=config.cache_dir,
      seed=config.seed,
      val_size=config.val_size,
      **options,
  )


def make_preprocess(
    mean: ArrayLike | Sequence[float],
    std: ArrayLike | Sequence[float],
    *,
    augment: bool = False,
    crop_padding: int = 4,
    flip: str = "random",
) -> Preprocess:
  """Per-channel normalisation (+ crop/flip) as ``preprocess(key, uint8 batch, *, train)``.

  ``mean`` and ``std`` are the training part's, in pixel units. The crop pads by
  ``crop_padding`` (reflect); only ``flip="random"`` flips here (the alternating flip
  needs the examples' indices and happens in the train step).
  """
  from cnnjax.data import pipeline

  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

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
      if len(dataset.val_images)
      else None,
  }
  if getattr(dataset, "test_images", None) is not None and len(dataset.test_images):
    out["test"] = _sh.put_global((dataset.test_images, dataset.test_labels), repl)
  return out


def build_run(
    config: TrainConfig,
    dataset: Dataset | None = None,
    *,
    spec: InputSpec | None = None,
    model_fn: ModelFn | None = None,
    mesh: jax.sharding.Mesh | None = None,
    data_init: bool = True,
) -> Run:
  """Builds a run: mesh, optimizer, preprocessing, model and state, jitted steps.

  Args:
    config: the run's configuration.
    dataset: a ``cnnjax.data.Dataset``; None loads ``config``'s, unless ``spec`` is given.
    spec: the data's :class:`InputSpec` (a saved run's): with it and no ``dataset``,
      nothing is read from disk (``run.dataset`` and ``run.arrays`` are None); with a
      dataset too, its statistics replace the dataset's.
    model_fn: a model factory to use instead of the zoo (see :func:`build_model`).
    mesh: the device mesh (None: ``config.num_devices`` local devices).
    data_init: run the model's data-dependent initialisation (if it has one) on the
      training images; off when the state is about to be restored from a checkpoint.

  Returns:
    A :class:`Run`.

  Raises:
    ValueError: a batch size that does not divide over the devices or exceeds the
      training images; before reading ``config``'s data, any option that cannot work
      (:func:`~cnnjax.train.preflight.check_config`).
  """
  mesh = _sh.make_mesh(config.num_devices) if mesh is None else mesh
  n_dev = mesh.size
  if config.batch_size % n_dev:
    raise ValueError(
        f"train: batch_size got {config.batch_size!r}; expected a multiple of the number of "
        f"devices ({n_dev})."
    )
  eval_batch_size = -(-config.eval_batch_size // n_dev) * n_dev
  if dataset is None and spec is None:
    from cnnjax.train.preflight import check_config

    check_config(config, model=model_fn is None)  # before any data is read
    dataset = load_dataset(config)
  arrays = _device_arrays(dataset, mesh) if dataset is not None else None
  images, labels = arrays["train"] if arrays is not None else (None, None)
  if spec is None:  # (then there is a dataset: loaded above if none was given)
    spec = InputSpec.of(cast("Dataset", dataset), images)
  steps_per_epoch = spec.num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
        f"train: batch_size got {config.batch_size!r}; expected at most the "
        f"{spec.num_train} training examples."
    )
  tx = make_optimizer(config, steps_per_epoch=steps_per_epoch)
  schedule = make_schedule(config, steps_per_epoch=steps_per_epoch)
  preprocess = make_preprocess(
      spec.mean,
      spec.std,
      augment=config.augment,
      crop_padding=config.crop_padding,
      flip=config.flip,
  )
  model_def, state = init_state(
      config,
      tx,
      num_classes=len(spec.class_names),
      input_shape=spec.input_shape,
      mesh=mesh,
      model_fn=model_fn,
      train_images=images if data_init else None,
      preprocess=preprocess,
  )
  steps = make_steps(
      model_def,
      tx,
      preprocess=preprocess,
      mesh=mesh,
      num_train=spec.num_train,
      steps_per_epoch=steps_per_epoch,
      batch_size=config.batch_size,
      eval_batch_size=eval_batch_size,
      label_smoothing=config.label_smoothing,
      steps_per_call=min(config.steps_per_call, steps_per_epoch),
      unroll=config.unroll,
      alternating_flip=config.augment and config.flip == "alternating",
      tta=config.tta,
  )
  return Run(
      config=config,
      spec=spec,
      mesh=mesh,
      tx=tx,
      schedule=schedule,
      preprocess=preprocess,
      model_def=model_def,
      state=state,
      steps=steps,
      steps_per_epoch=steps_per_epoch,
      eval_batch_size=eval_batch_size,
      dataset=dataset,
      arrays=arrays,
  )
