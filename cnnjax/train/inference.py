"""Using a trained run without its data: ``load_model`` (raw images in, logits out) and
``predict_files`` (the top classes of image files, for ``cnnjax predict``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnjax.train.run import ModelFn
from cnnjax.train.state import merge_model

__all__ = [
    "Classifier",
    "UnreadableImageError",
    "load_model",
    "predict_files",
    "read_image",
    "read_images",
    "top_classes",
]


class Normalization(nnx.Variable[jax.Array]):
  """A fixed (untrained) input statistic."""


class Classifier(nnx.Module):
  """A trained model with its input normalisation: raw images in, logits out.

  Attributes:
    model: the trained network (normalised ``float32`` inputs → logits).
    mean, std: the training part's per-channel statistics, in pixel units (0–255).
    class_names: one name per logit.
  """

  def __init__(
      self,
      model: nnx.Module,
      *,
      mean: jax.typing.ArrayLike | Sequence[float],
      std: jax.typing.ArrayLike | Sequence[float],
      class_names: Sequence[str],
      input_shape: Sequence[int],
  ):
    self.model = model
    self.mean: Normalization = Normalization(jnp.asarray(mean, jnp.float32))
    self.std: Normalization = Normalization(jnp.asarray(std, jnp.float32))
    self.class_names: tuple[str, ...] = tuple(class_names)
    self.input_shape: tuple[int, ...] = tuple(input_shape)

  def __call__(self, images: jax.typing.ArrayLike) -> jax.Array:
    """Logits ``[N, K]`` of ``images``: ``uint8 [N, H, W, C]`` (0–255) or floats in
    ``[0, 1]``."""
    from cnnjax.data import pipeline

    x = jnp.asarray(images)
    if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
      raise ValueError(
          f"Classifier: images got shape {tuple(x.shape)}; expected [N, "
          f"{', '.join(map(str, self.input_shape))}] as the run was trained on."
      )
    if jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32) * 255.0
    elif x.dtype != jnp.uint8:
      raise ValueError(
          f"Classifier: images got dtype {x.dtype}; expected uint8 (0-255) or floats in " "[0, 1]."
      )
    return self.model(pipeline.normalize(x, self.mean[...], self.std[...]))


def load_model(
    run_dir: str | os.PathLike[str], *, epoch: int | None = None, model_fn: ModelFn | None = None
) -> Classifier:
  """A run's trained model, in evaluation mode, with its input normalisation.

  Reads only the run directory (``config.json``, ``run.json`` and a checkpoint), which
  may have been moved or copied: no dataset is needed.

  Args:
    run_dir: a directory written by :func:`~cnnjax.train.train`.
    epoch: which checkpoint (None: the latest verified one).
    model_fn: the model factory the run used, if it did not use the zoo.

  Returns:
    A :class:`Classifier`: ``model(images)`` takes raw ``uint8`` or ``[0, 1]`` float
    images ``[N, H, W, C]`` and returns logits ``[N, K]``; ``model.class_names`` names
    them. Under Lookahead, the slow (evaluated) parameters.

  Example:
    >>> model = load_model("runs/seed-cnn")  # needs a trained run  # doctest: +SKIP
    >>> model(images).argmax(-1)  # doctest: +SKIP
  """
  from cnnjax.train.evaluation import load_run

  run = load_run(run_dir, epoch=epoch, model_fn=model_fn, load_data=False)
  state = jax.device_get(run.state)
  model = merge_model(run.model_def.eval, state.params, state.model_state)
  classifier = Classifier(
      model,
      mean=run.spec.mean,
      std=run.spec.std,
      class_names=run.spec.class_names,
      input_shape=run.spec.input_shape,
  )
  classifier.eval()
  return classifier


class UnreadableImageError(ValueError):
  """An image file that cannot be read or decoded; ``path`` names it (so does the
  message)."""

  def __init__(self, path: str | os.PathLike[str], message: str):
    self.path: str = os.fspath(path)
    super().__init__(message)


def read_image(path: str | os.PathLike[str], shape: Sequence[int]) -> np.ndarray:
  """A PNG/JPEG file as ``uint8 [H, W, C]`` of ``shape`` ``(H, W, C)``: resized
  (bilinear) when its size differs, grey ↔ colour converted, alpha dropped.

  Raises:
    UnreadableImageError: the file cannot be opened or read, or is not a decodable PNG
      or JPEG (a ``ValueError``: ``"predict: <path> ..."``).
  """
  from PIL import Image

  from cnnjax.data.image_folder import decode_image

  h, w, c = shape
  name = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
    x = decode_image(data, name=name, op="predict")
  except OSError as e:
    raise UnreadableImageError(
        path, f"predict: {name} cannot be read ({e.strerror or e})."
    ) from None
  except ValueError as e:
    raise UnreadableImageError(path, str(e)) from None
  x = x[..., :1] if x.shape[-1] in (1, 2) else x[..., :3]  # no alpha
  if x.shape[:2] != (h, w):
    x = np.asarray(
        Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).resize(
            (w, h), Image.Resampling.BILINEAR
        ),
        np.uint8,
    ).reshape(h, w, -1)
  if x.shape[-1] != c:
    x = (
        np.repeat(x, c, axis=-1)
        if x.shape[-1] == 1
        else np.round(x.mean(-1, keepdims=True)).astype(np.uint8)
    )
  return x


def read_images(paths: Sequence[str | os.PathLike[str]], shape: Sequence[int]) -> np.ndarray:
  """PNG/JPEG files as ``uint8 [N, H, W, C]`` of ``shape`` ``(H, W, C)`` (see
  :func:`read_image`); the first unreadable file raises its
  :class:`UnreadableImageError`."""
  return np.stack([read_image(path, shape) for path in paths])


def top_classes(
    model: Classifier, images: np.ndarray, *, top_k: int = 3
) -> list[list[tuple[str, float]]]:
  """Each image's ``top_k`` ``(class name, probability)`` pairs, most probable first.

  Args:
    model: a :class:`Classifier` (from :func:`load_model`).
    images: ``uint8 [N, H, W, C]`` of the model's input shape.
    top_k: classes per image (at most the model's).
  """
  _check_top_k(top_k)
  probs = np.asarray(jax.nn.softmax(model(images), axis=-1))
  k = min(top_k, probs.shape[-1])
  best = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return [
      [(model.class_names[j], float(p[j])) for j in row] for p, row in zip(probs, best, strict=True)
  ]


def _check_top_k(top_k) -> None:
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
    raise ValueError(f"predict: top_k got {top_k!r}; expected a positive int.")


def predict_files(
    run_dir: str | os.PathLike[str],
    paths: Sequence[str | os.PathLike[str]],
    *,
    top_k: int = 3,
    epoch: int | None = None,
    on_unreadable: Callable[[UnreadableImageError], None] | None = None,
) -> list[list[tuple[str, float]] | None]:
  """Each file's ``top_k`` ``(class name, probability)`` pairs, most probable first.

  Args:
    run_dir: a directory written by :func:`~cnnjax.train.train`.
    paths: PNG or JPEG files.
    top_k: classes per file.
    epoch: which checkpoint (None: the latest verified one).
    on_unreadable: called with the :class:`UnreadableImageError` of each file that
      cannot be read or decoded, which is then skipped (its entry is None). None: the
      first such file raises its error.

  Returns:
    One entry per path, in order.

  Raises:
    UnreadableImageError: a file that cannot be read (without ``on_unreadable``).
    ValueError: a bad ``top_k``, or a run directory that cannot be loaded.
  """
  _check_top_k(top_k)
  model = load_model(run_dir, epoch=epoch)
  images = {}
  for i, path in enumerate(paths):
    try:
      images[i] = read_image(path, model.input_shape)
    except UnreadableImageError as e:
      if on_unreadable is None:
        raise
      on_unreadable(e)
  results: list[list[tuple[str, float]] | None] = [None] * len(paths)
  if images:
    best = top_classes(model, np.stack(list(images.values())), top_k=top_k)
    for i, pairs in zip(images, best, strict=True):
      results[i] = pairs
  return results
