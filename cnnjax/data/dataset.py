"""The :class:`Dataset` every source returns, and the seeded validation split.

Arrays are NumPy on the host: images ``uint8 [N, H, W, C]``, labels ``int32 [N]``.
Moving them to the device, normalising and augmenting is :mod:`cnnjax.data.pipeline`'s
job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["Dataset", "RawSplits", "check_raw_arrays", "split_validation"]


@dataclasses.dataclass(frozen=True)
class RawSplits:
  """What a source decodes, before the validation split: train and (maybe) test.

  Attributes:
    train_images: ``uint8 [N, H, W, C]``.
    train_labels: ``int32 [N]``, in ``[0, len(class_names))``.
    test_images: ``uint8 [M, H, W, C]``, or None when the source has no test split.
    test_labels: ``int32 [M]``, or None.
    class_names: one name per label, in label order.
  """

  train_images: np.ndarray = dataclasses.field(repr=False)
  train_labels: np.ndarray = dataclasses.field(repr=False)
  test_images: np.ndarray | None = dataclasses.field(repr=False)
  test_labels: np.ndarray | None = dataclasses.field(repr=False)
  class_names: tuple[str, ...]

  def to_arrays(self) -> dict[str, np.ndarray]:
    """A flat dict of arrays (no pickled objects) for :mod:`cnnjax.data.cache`."""
    arrays = {
        "train_images": self.train_images,
        "train_labels": self.train_labels,
        "class_names": np.asarray(self.class_names, dtype=np.str_),
    }
    if self.test_images is not None:
      arrays["test_images"] = self.test_images
      arrays["test_labels"] = self.test_labels
    return arrays

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> RawSplits:
    """The inverse of :meth:`to_arrays`."""
    return cls(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        test_images=arrays.get("test_images"),
        test_labels=arrays.get("test_labels"),
        class_names=tuple(str(c) for c in arrays["class_names"]),
    )


def check_raw_arrays(
    arrays: Mapping[str, np.ndarray], *, image_shape: Sequence[int] | None = None
) -> str | None:
  """Why ``arrays`` (as :meth:`RawSplits.to_arrays` gives) are not a valid decoded source.

  Checks what a file in the right format can still get wrong: the arrays present, uint8
  ``[N, H, W, C]`` images (of ``image_shape`` if given; test like train), one integer
  label per image, labels in ``[0, len(class_names))``.

  Returns:
    None if valid, else a short reason.

  Example:
    >>> check_raw_arrays({"train_images": np.zeros((2, 4, 4, 3), np.uint8),
    ...                   "train_labels": np.array([0, 5], np.int32),
    ...                   "class_names": np.array(["a", "b"])})
    'train_labels hold 5, outside [0, 2) for 2 classes'
  """
  missing = [k for k in ("train_images", "train_labels", "class_names") if k not in arrays]
  if ("test_images" in arrays) != ("test_labels" in arrays):
    missing.append("test_labels" if "test_images" in arrays else "test_images")
  if missing:
    return f"no {', '.join(missing)}"
  names = arrays["class_names"]
  if names.ndim != 1 or names.dtype.kind not in "US" or not len(names):
    return f"class_names are {names.dtype} of shape {names.shape}, not a list of names"
  want = None if image_shape is None else tuple(image_shape)
  for split in ("train", "test"):
    if f"{split}_images" not in arrays:
      continue
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim != 4:
      return f"{split}_images are {images.dtype} of shape {images.shape}, not uint8 [N, H, W, C]"
    if want is not None and images.shape[1:] != want:
      return f"{split}_images have shape {images.shape[1:]}, expected {want}"
    want = images.shape[1:]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
      return f"{split}_labels are {labels.dtype} of shape {labels.shape}, not integers [N]"
    if len(labels) != len(images):
      return f"{len(labels)} {split}_labels for {len(images)} {split}_images"
    bad = labels[(labels < 0) | (labels >= len(names))]
    if bad.size:
      return (
          f"{split}_labels hold {int(bad[0])}, outside [0, {len(names)}) for "
          f"{len(names)} classes"
      )
  return None


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset as NumPy arrays: train, validation and (maybe) test.

  Attributes:
    name: the dataset's name (``"shapes"``, ``"cifar10"``, …).
    train_images: ``uint8 [N_train, H, W, C]``.
    train_labels: ``int32 [N_train]``.
    val_images: ``uint8 [N_val, H, W, C]``, held out from the source's training split.
    val_labels: ``int32 [N_val]``.
    test_images: ``uint8 [N_test, H, W, C]``, or None when the source has no test split.
    test_labels: ``int32 [N_test]``, or None.
    class_names: one name per label, in label order.
    source: where the arrays came from (a path, ``"tfds:cifar10"``, ``"generated"``).

  Example:
    >>> import cnnjax
    >>> ds = cnnjax.data.load("shapes", num_train=600, num_test=100, val_size=100)
    >>> ds.train_images.shape, ds.num_classes
    ((500, 32, 32, 3), 6)
  """

  name: str
  train_images: np.ndarray = dataclasses.field(repr=False)
  train_labels: np.ndarray = dataclasses.field(repr=False)
  val_images: np.ndarray = dataclasses.field(repr=False)
  val_labels: np.ndarray = dataclasses.field(repr=False)
  test_images: np.ndarray | None = dataclasses.field(default=None, repr=False)
  test_labels: np.ndarray | None = dataclasses.field(default=None, repr=False)
  class_names: tuple[str, ...] = ()
  source: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)``."""
    return tuple(self.train_images.shape[1:])

  @property
  def has_test(self) -> bool:
    return self.test_images is not None

  def __repr__(self) -> str:
    test = "none" if self.test_images is None else len(self.test_images)
    return (
        f"Dataset({self.name!r}, train={len(self.train_images)}, val={len(self.val_images)}, "
        f"test={test}, image_shape={self.image_shape}, num_classes={self.num_classes}, "
        f"source={self.source!r})"
    )


def split_validation(
    images: np.ndarray, labels: np.ndarray, *, val_size: int, seed: int, op: str = "load"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Holds out a seeded random ``val_size`` examples of a training split.

  The held-out indices are the first ``val_size`` of
  ``np.random.default_rng(seed).permutation(N)``; both parts keep the source's order
  (indices sorted), so the split depends only on ``(N, val_size, seed)``.

  Args:
    images: ``[N, H, W, C]``.
    labels: ``[N]``.
    val_size: how many to hold out, ``0 <= val_size < N``.
    seed: the split's seed.
    op: the calling function's name, for error messages.

  Returns:
    ``(train_images, train_labels, val_images, val_labels)``.

  Example:
    >>> x, y = np.zeros((10, 2, 2, 1), np.uint8), np.arange(10, dtype=np.int32)
    >>> [a.shape[0] for a in split_validation(x, y, val_size=3, seed=0)]
    [7, 7, 3, 3]
  """
  n = len(labels)
  if (
      isinstance(val_size, bool)
      or not isinstance(val_size, (int, np.integer))
      or not (0 <= val_size < n)
  ):
    raise ValueError(
        f"{op}: val_size got {val_size!r}; expected an int in [0, {n}) for a training "
        f"split of {n} examples."
    )
  held = np.zeros(n, bool)
  held[np.random.default_rng(seed).permutation(n)[:val_size]] = True
  return images[~held], labels[~held], images[held], labels[held]
