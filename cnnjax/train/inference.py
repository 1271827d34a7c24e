"""Using a trained run without its data: ``load_model`` (raw images in, logits out) and
``predict_files`` (the top classes of image files, for ``cnnjax predict``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnjax.train.run import ModelFn
from cnnjax.train.state import merge_model

__all__ = ["Classifier", "load_model", "predict_files", "read_images"]


class Normalization(nnx.Variable):
  """A fixed (untrained) input statistic."""


class Classifier(nnx.Module):
  """A trained model with its input normalisation: raw images in, logits out.

  Attributes:
    model: the trained network (normalised ``float32`` inputs → logits).
    mean, std: the training part's per-channel statistics, in pixel units (0–255).
    class_names: one name per logit.
  """

  def __init__(self, model: nnx.Module, *, mean, std, class_names: Sequence[str],
               input_shape: Sequence[int]):
    self.model = model
    self.mean = Normalization(jnp.asarray(mean, jnp.float32))
    self.std = Normalization(jnp.asarray(std, jnp.float32))
    self.class_names = tuple(class_names)
    self.input_shape = tuple(input_shape)

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
          f"Classifier: images got dtype {x.dtype}; expected uint8 (0-255) or floats in "
          "[0, 1]."
      )
    return self.model(pipeline.normalize(x, self.mean[...], self.std[...]))


def load_model(run_dir: str | os.PathLike, *, epoch: int | None = None,
               model_fn: ModelFn | None = None) -> Classifier:
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
    >>> model = load_model("runs/seed-cnn")  # doctest: +SKIP
    >>> model(images).argmax(-1)  # doctest: +SKIP
  """
  from cnnjax.train.evaluation import load_run

  run = load_run(run_dir, epoch=epoch, model_fn=model_fn, load_data=False)
  state = jax.device_get(run.state)
  model = merge_model(run.model_def.eval, state.params, state.model_state)
  classifier = Classifier(model, mean=run.spec.mean, std=run.spec.std,
                          class_names=run.spec.class_names, input_shape=run.spec.input_shape)
  classifier.eval()
  return classifier


def read_images(paths: Sequence[str | os.PathLike], shape: Sequence[int]) -> np.ndarray:
  """PNG/JPEG files as ``uint8 [N, H, W, C]`` of ``shape`` ``(H, W, C)``: resized
  (bilinear) when their size differs, grey ↔ colour converted, alpha dropped."""
  from PIL import Image

  from cnnjax.data.image_folder import decode_image

  h, w, c = shape
  out = []
  for path in paths:
    with open(path, "rb") as f:
      x = decode_image(f.read(), name=os.fspath(path))
    x = x[..., :1] if x.shape[-1] in (1, 2) else x[..., :3]  # no alpha
    if x.shape[:2] != (h, w):
      x = np.asarray(Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).resize(
          (w, h), Image.BILINEAR), np.uint8).reshape(h, w, -1)
    if x.shape[-1] != c:
      x = np.repeat(x, c, axis=-1) if x.shape[-1] == 1 else np.round(
          x.mean(-1, keepdims=True)).astype(np.uint8)
    out.append(x)
  return np.stack(out)


def predict_files(run_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], *,
                  top_k: int = 3, epoch: int | None = None
                  ) -> list[list[tuple[str, float]]]:
  """Each file's ``top_k`` ``(class name, probability)`` pairs, most probable first."""
  if not isinstance(top_k, int) or top_k < 1:
    raise ValueError(f"predict: top_k got {top_k!r}; expected a positive int.")
  model = load_model(run_dir, epoch=epoch)
  probs = np.asarray(jax.nn.softmax(model(read_images(paths, model.input_shape)), axis=-1))
  k = min(top_k, probs.shape[-1])
  best = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return [[(model.class_names[j], float(p[j])) for j in row] for p, row in zip(probs, best)]
