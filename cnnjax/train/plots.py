"""PNG plots of a run: loss/accuracy curves and the learned first-layer filters.

matplotlib is imported lazily, with the non-interactive Agg backend, only when a plot is made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["first_layer_filters", "plot_curves", "plot_filters"]


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_curves(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    steps: Sequence[dict[str, Any]] = (),
) -> None:
  """Loss, accuracy and learning rate against epochs to a PNG.

  Args:
    records: the ``metrics.jsonl`` records (train, validation, test when present).
    path: the PNG file.
    steps: the ``steps.jsonl`` records, if any: the training loss and the learning rate
      every few steps (a 1-epoch run gets curves, not single points).
  """
  from matplotlib.ticker import MaxNLocator

  plt = _pyplot()
  epochs = [r["epoch"] for r in records]
  # Steps per epoch from the last record (its step count ends its epoch).
  per_epoch = (
      records[-1]["step"] / records[-1]["epoch"] if records and records[-1].get("step") else None
  )
  step_x = [s["step"] / per_epoch for s in steps] if per_epoch and steps else []
  fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(14, 4))
  if step_x:
    ax_loss.plot(
        step_x, [float(s["loss"]) for s in steps], color="0.7", linewidth=1, label="train (steps)"
    )
  for split in ("train", "val", "test"):
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy")):
      key = f"{split}_{what}"
      if any(key in r for r in records):
        ys = [float(r.get(key, "nan")) for r in records]
        ax.plot(epochs, ys, marker="o", markersize=3, label=split)
  if step_x:
    ax_lr.plot(step_x, [float(s["lr"]) for s in steps], label="per step")
  elif any("lr" in r for r in records):
    ax_lr.plot(
        epochs,
        [float(r.get("lr", "nan")) for r in records],
        marker="o",
        markersize=3,
        label="end of epoch",
    )
  ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
  ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
  ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
  last = max([*epochs, *step_x, 1])
  for ax in (ax_loss, ax_acc, ax_lr):
    ax.set_xlim(0, last)  # a 1-epoch run is one point at 1: show it from 0
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def first_layer_filters(params: Any, *, image_shape: Sequence[int]) -> np.ndarray | None:
  """The first layer's filters as images ``[K, h, w, C]``, or None if none is recognised.

  The first layer is the first convolution kernel (HWIO, ``[h, w, C, K]``) whose input
  channels match the images' ``C``; failing that, a dense kernel ``[H*W*C, K]`` on the
  flattened image (a linear classifier's class templates).

  Args:
    params: the model's parameters (any pytree).
    image_shape: ``(H, W, C)`` of the input images.
  """
  h, w, c = image_shape
  leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
  for x in leaves:
    if x.ndim == 4 and x.shape[2] == c:
      return np.moveaxis(x, -1, 0)
  for x in leaves:
    if x.ndim == 2 and x.shape[0] == h * w * c:
      return np.moveaxis(x.reshape(h, w, c, x.shape[1]), -1, 0)
  return None


def plot_filters(filters: np.ndarray, path: str | os.PathLike[str], *, title: str = "") -> None:
  """A grid of filters ``[K, h, w, C]`` (each min-max scaled; RGB when C == 3) to a PNG."""
  plt = _pyplot()
  k = filters.shape[0]
  cols = min(k, 8)
  rows = math.ceil(k / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.4), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= k:
      continue
    f = filters[i].astype(np.float64)
    f = (f - f.min()) / max(f.max() - f.min(), 1e-12)
    if f.shape[-1] == 3:
      ax.imshow(f, interpolation="nearest")
    else:
      ax.imshow(f.mean(-1), cmap="gray", interpolation="nearest")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
