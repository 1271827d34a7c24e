"""``load(name)``: one entry point over every source, with the validation split and cache.

Which source is read:

* ``name="shapes"``: the built-in generated dataset (:mod:`cnnjax.data.shapes`).
* ``data_dir`` given: an offline copy, its format detected from its contents — a CIFAR
  binary or Python release directory (:mod:`cnnjax.data.cifar`), an image folder
  directory or ``.zip`` (:mod:`cnnjax.data.image_folder`), a directory that *contains*
  one of those under its usual name (``cifar-10-batches-bin``, …), or a TFDS data
  directory holding the prepared dataset.
* otherwise: TensorFlow Datasets (:mod:`cnnjax.data.tfds`), downloading once.

The arrays are checked against what ``name`` promises (image shape, channel and class
count), the training split is divided into train and validation
(:func:`cnnjax.data.dataset.split_validation`), and decoded image folders and TFDS
records are cached (:mod:`cnnjax.data.cache`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnjax.data import cache as _cache
from cnnjax.data import cifar as _cifar
from cnnjax.data import image_folder as _folder
from cnnjax.data.dataset import Dataset, RawSplits, check_raw_arrays, split_validation
from cnnjax.data.shapes import SHAPE_NAMES, make_shapes

__all__ = ["DATASETS", "DatasetSpec", "detect_format", "load"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a dataset name promises.

  Attributes:
    image_shape: ``(H, W, C)``, or None for any.
    num_classes: the number of classes, or None for any.
    val_size: the default number of held-out validation examples (None: 10% of train).
    tfds_name: the TensorFlow Datasets name, or None.
    release_dirs: the directory names of its offline releases, looked for inside
      ``data_dir``.
  """

  image_shape: tuple[int, int, int] | None
  num_classes: int | None
  val_size: int | None
  tfds_name: str | None = None
  release_dirs: tuple[str, ...] = ()


DATASETS = {
    "shapes": DatasetSpec((32, 32, 3), None, 1000),
    "cifar10": DatasetSpec(
        (32, 32, 3), 10, 5000, "cifar10", ("cifar-10-batches-bin", "cifar-10-batches-py")
    ),
    "cifar100": DatasetSpec(
        (32, 32, 3), 100, 5000, "cifar100", ("cifar-100-binary", "cifar-100-python")
    ),
    "mnist": DatasetSpec((28, 28, 1), 10, 5000, "mnist"),
    "fashion_mnist": DatasetSpec((28, 28, 1), 10, 5000, "fashion_mnist"),
    "folder": DatasetSpec(None, None, None),
}

_LAYOUTS = (
    "a CIFAR binary release directory (cifar-10-batches-bin: data_batch_1.bin … "
    "data_batch_5.bin, test_batch.bin; or cifar-100-binary: train.bin, test.bin), a CIFAR "
    "Python release directory (cifar-10-batches-py: data_batch_1 … data_batch_5, "
    "test_batch; or cifar-100-python: train, test, meta), an image folder directory or "
    ".zip with train/<class>/<image>.{png,jpg} (test/ optional), or a TFDS data directory "
    "holding the prepared dataset"
)


def detect_format(path: str | os.PathLike[str], *, name: str | None = None) -> tuple[str, Path]:
  """The format of an offline copy, and the path to read it from.

  Args:
    path: what the user passed as ``data_dir``.
    name: the dataset name, to look for its release directories and TFDS folder inside
      ``path``.

  Returns:
    ``(format, path)`` with format one of :data:`cnnjax.data.cifar.FORMATS`,
    ``"image-folder"`` or ``"tfds"``.

  Raises:
    FileNotFoundError: ``path`` does not exist or holds no known layout (the message
      lists the layouts expected and what was found).
  """
  path = Path(path).expanduser()
  if not path.exists():
    raise FileNotFoundError(
        f"load: data_dir got {str(path)!r}, which does not exist; expected {_LAYOUTS}."
    )
  fmt = _cifar.detect_cifar(path)
  if fmt:
    return fmt, path
  if _folder.is_image_folder(path):
    return "image-folder", path
  spec = None if name is None else DATASETS.get(name)
  if spec is not None and path.is_dir():
    for sub in spec.release_dirs:
      fmt = _cifar.detect_cifar(path / sub)
      if fmt:
        return fmt, path / sub
    if spec.tfds_name and (path / spec.tfds_name).is_dir():
      return "tfds", path
  found = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else "a non-zip file"
  raise FileNotFoundError(f"load: data_dir {str(path)!r} holds {found}; expected {_LAYOUTS}.")


def _check_against_spec(raw: RawSplits, name: str, spec: DatasetSpec, source: str) -> None:
  for split, images in (("train", raw.train_images), ("test", raw.test_images)):
    if images is None:
      continue
    if images.ndim != 4:
      raise ValueError(
          f"load: {source} gave {split} images of shape {images.shape}; expected [N, H, W, C]."
      )
    if spec.image_shape and images.shape[1:] != spec.image_shape:
      got, want = images.shape[1:], spec.image_shape
      what = (
          f"image size {got[0]}×{got[1]} (expected {want[0]}×{want[1]})"
          if got[:2] != want[:2]
          else f"{got[2]} channel(s) (expected {want[2]})"
      )
      raise ValueError(
          f"load: {source} has {split} images of shape {got}; expected {want} for "
          f"name={name!r}: unexpected {what}. Use name='folder' for other images."
      )
  if spec.num_classes and len(raw.class_names) != spec.num_classes:
    raise ValueError(
        f"load: {source} has {len(raw.class_names)} classes {list(raw.class_names)[:12]}; "
        f"expected {spec.num_classes} for name={name!r}."
    )


def _read_offline(name, spec, data_dir, *, class_names, cache_dir, num_workers, progress):
  fmt, path = detect_format(data_dir, name=name)
  if fmt in _cifar.FORMATS:
    family = fmt.split("-")[0]
    if name not in (family, "folder"):
      raise ValueError(
          f"load: data_dir {str(path)!r} holds the {fmt} release but name got {name!r}; "
          f"expected name={family!r}."
      )
    return _cifar.read_cifar(path, fmt=fmt), str(path)
  if fmt == "tfds":
    return (
        _read_tfds(
            name, spec, data_dir=path, cache_dir=cache_dir, download=False, progress=progress
        ),
        f"tfds:{spec.tfds_name}@{path}",
    )

  def decode():
    return _folder.read_image_folder(
        path,
        class_names=class_names,
        image_shape=spec.image_shape,
        num_workers=num_workers,
        progress=progress,
    ).to_arrays()

  key = _cache.cache_key(
      "image-folder", _cache.source_fingerprint(path), list(class_names or []), spec.image_shape
  )
  check = functools.partial(check_raw_arrays, image_shape=spec.image_shape)
  arrays = _cache.cached_arrays(
      decode, cache_dir=cache_dir, label=f"folder-{path.stem}", key=key, check=check
  )
  return RawSplits.from_arrays(arrays), str(path)


def _read_tfds(name, spec, *, data_dir, cache_dir, download, progress) -> RawSplits:
  from cnnjax.data import tfds as _tfds

  def decode():
    return _tfds.read_tfds(
        spec.tfds_name, data_dir=data_dir, download=download, progress=progress
    ).to_arrays()

  if cache_dir is None:
    return RawSplits.from_arrays(decode())
  # Reading the records needs them prepared first; the fingerprint needs the directory.
  try:
    key = _cache.cache_key("tfds", _tfds.tfds_fingerprint(spec.tfds_name, data_dir=data_dir))
  except Exception:  # not prepared yet, or TFDS unavailable: no cache entry to find
    return RawSplits.from_arrays(decode())
  check = functools.partial(check_raw_arrays, image_shape=spec.image_shape)
  entry = _cache.read_entry(cache_dir, f"tfds-{name}", key, check=check)
  if entry is not None:
    return RawSplits.from_arrays(entry)
  arrays = decode()
  # Preparation may have created the directory: key on what is there now.
  key = _cache.cache_key("tfds", _tfds.tfds_fingerprint(spec.tfds_name, data_dir=data_dir))
  return RawSplits.from_arrays(
      _cache.cached_arrays(
          lambda: arrays, cache_dir=cache_dir, label=f"tfds-{name}", key=key, check=check
      )
  )


def load(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_size: int | None = None,
    class_names: Sequence[str] | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    num_classes: int | None = None,
    cache: bool = True,
    download: bool = True,
    num_workers: int = 1,
    progress: bool = True,
) -> Dataset:
  """Loads a classification dataset as uint8 NumPy arrays with a validation split.

  Args:
    name: ``"shapes"`` (built-in, no download), ``"cifar10"``, ``"cifar100"``,
      ``"mnist"``, ``"fashion_mnist"``, or ``"folder"`` (any image folder, with
      ``data_dir``, no expectations on image shape or class count).
    data_dir: an offline copy (see :func:`detect_format`); None reads the TFDS catalog.
    cache_dir: where decoded arrays are cached (default
      :func:`cnnjax.data.cache.default_cache_dir`).
    seed: the data seed: seeds the validation split (and the shapes generator). Keep it
      fixed across runs that are compared, so they share one validation set.
    val_size: how many training examples to hold out for validation, chosen at random
      with ``seed``; None means the dataset's default (5,000 for the catalog datasets,
      giving CIFAR-10's 45,000 / 5,000; 1,000 for shapes; 10% for ``"folder"``).
    class_names: image folders only: the label order (default: folder names sorted).
    num_train: shapes only: training images generated, before the validation split
      (default 6,000).
    num_test: shapes only: test images generated (default 1,000).
    num_classes: shapes only: how many shapes, 2 to 6 (default 6).
    cache: cache decoded image folders and TFDS records in ``cache_dir``.
    download: TFDS only: download and prepare the dataset if needed.
    num_workers: image folders only: decoding threads (1: in this thread, the fastest
      for small images).
    progress: show progress bars while decoding.

  Returns:
    A :class:`~cnnjax.data.dataset.Dataset`; ``test_images``/``test_labels`` are None
    when the source has no test split.

  Raises:
    ValueError: an unknown ``name``, an option that does not apply, a bad ``val_size``,
      or data that does not match ``name`` (image size, channels, class count).
    FileNotFoundError: ``data_dir`` missing, or in no known layout.
    RuntimeError: TFDS could not prepare the dataset (no network or no TensorFlow).

  Example:
    >>> ds = load("shapes", num_train=600, num_test=100, val_size=100, num_classes=3)
    >>> ds.train_images.shape, ds.val_labels.shape, ds.class_names
    ((500, 32, 32, 3), (100,), ('circle', 'square', 'triangle'))
  """
  op = "load"
  if name not in DATASETS:
    raise ValueError(f"{op}: name got {name!r}; expected one of {sorted(DATASETS)}.")
  spec = DATASETS[name]
  shapes_only = {"num_train": num_train, "num_test": num_test, "num_classes": num_classes}
  if name != "shapes":
    given = [k for k, v in shapes_only.items() if v is not None]
    if given:
      raise ValueError(
          f"{op}: {given[0]} got {shapes_only[given[0]]!r}; it applies to name='shapes' only."
      )
  if class_names is not None and (name == "shapes" or data_dir is None):
    raise ValueError(
        f"{op}: class_names got {class_names!r}; it applies to image folders (data_dir) only."
    )
  if not cache:
    cache_dir = None
  elif cache_dir is None:
    cache_dir = _cache.default_cache_dir()
  else:
    cache_dir = Path(cache_dir).expanduser()

  if name == "shapes":
    if data_dir is not None:
      raise ValueError(
          f"{op}: data_dir got {str(data_dir)!r}; name='shapes' is generated and reads no files."
      )
    k = len(SHAPE_NAMES) if num_classes is None else num_classes
    ss = np.random.SeedSequence(seed).spawn(2)
    train = make_shapes(6000 if num_train is None else num_train, num_classes=k, seed=ss[0])
    test = make_shapes(1000 if num_test is None else num_test, num_classes=k, seed=ss[1])
    raw = RawSplits(*train, *test, SHAPE_NAMES[:k])
    source = "generated"
  elif data_dir is not None:
    raw, source = _read_offline(
        name,
        spec,
        data_dir,
        class_names=class_names,
        cache_dir=cache_dir,
        num_workers=num_workers,
        progress=progress,
    )
  elif spec.tfds_name is None:
    raise ValueError(f"{op}: data_dir got None; name={name!r} needs a data_dir (an image folder).")
  else:
    raw = _read_tfds(
        name, spec, data_dir=None, cache_dir=cache_dir, download=download, progress=progress
    )
    source = f"tfds:{spec.tfds_name}"
  _check_against_spec(raw, name, spec, source)

  if val_size is None:
    val_size = spec.val_size if spec.val_size is not None else len(raw.train_labels) // 10
  train_x, train_y, val_x, val_y = split_validation(
      raw.train_images, raw.train_labels, val_size=val_size, seed=seed, op=op
  )
  return Dataset(
      name=name,
      train_images=train_x,
      train_labels=train_y,
      val_images=val_x,
      val_labels=val_y,
      test_images=raw.test_images,
      test_labels=raw.test_labels,
      class_names=tuple(raw.class_names),
      source=source,
  )
