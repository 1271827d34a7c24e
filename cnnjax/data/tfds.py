"""The TensorFlow Datasets catalog, read as NumPy without TensorFlow at run time.

``cifar10``, ``cifar100``, ``mnist`` and ``fashion_mnist`` are prepared once by TFDS in
its ``array_record`` format (a network download; TFDS' preparation of some datasets
also imports TensorFlow) and then read record by record through
:func:`tfds.data_source`, which needs neither TensorFlow nor ``tf.data``.
``tensorflow_datasets`` itself is imported lazily, on first use: it is heavy.

Offline, or without TensorFlow where the preparation wants it, pass ``data_dir`` (the
CLI's ``--data-dir``) pointing at an offline copy instead: a CIFAR release directory or
an image folder (see :func:`cnnjax.data.load`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from cnnjax.data.dataset import RawSplits

__all__ = ["read_tfds", "tfds_fingerprint"]

_OFFLINE_HINT = (
    "Offline, pass data_dir= (--data-dir) with a local copy instead: the CIFAR binary "
    "release (cifar-10-batches-bin), the Python release (cifar-10-batches-py) or an image "
    "folder / .zip of <split>/<class>/<image>."
)


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
        f"cnnjax.data: tensorflow-datasets is needed to load TFDS datasets but cannot be "
        f"imported ({e}); pip install tensorflow-datasets. {_OFFLINE_HINT}"
    ) from e
  return tfds


def _missing_tensorflow(error: BaseException | None) -> bool:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if (
        isinstance(error, ImportError)
        and (getattr(error, "name", None) in ("tensorflow", "tf") or "tensorflow" in str(error))
        and "tensorflow_datasets" not in str(error)
    ):
      return True
    error = error.__cause__ or error.__context__
  return False


def _builder(tfds_name: str, data_dir: str | os.PathLike[str] | None, download: bool):
  tfds = _import_tfds()
  builder = tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record")
  if download:
    try:
      builder.download_and_prepare(file_format="array_record")
    except Exception as e:
      if _missing_tensorflow(e):
        raise RuntimeError(
            f"cnnjax.data: preparing the TFDS dataset {tfds_name!r} needs TensorFlow, which "
            "is not installed (TFDS imports it once, to download and convert the data; "
            "training never does). Install it for this one-time step "
            "(pip install tensorflow-cpu), or prepare the dataset on another machine and "
            f"copy its TFDS data_dir. {_OFFLINE_HINT}"
        ) from e
      raise RuntimeError(
          f"cnnjax.data: could not download and prepare the TFDS dataset {tfds_name!r} in "
          f"{builder.data_dir} ({type(e).__name__}: {e}). Preparing needs a network "
          f"connection (and, for some datasets, TensorFlow). {_OFFLINE_HINT}"
      ) from e
  elif not builder.is_prepared():
    raise FileNotFoundError(
        f"cnnjax.data: the TFDS dataset {tfds_name!r} is not prepared in {builder.data_dir} "
        f"and download=False; expected a prepared array_record copy there. {_OFFLINE_HINT}"
    )
  return builder


def tfds_fingerprint(
    tfds_name: str, *, data_dir: str | os.PathLike[str] | None = None
) -> list[Any]:
  """What identifies a prepared TFDS dataset (name, version, directory), for the cache."""
  tfds = _import_tfds()
  builder = tfds.builder(tfds_name, data_dir=data_dir)
  path = str(builder.data_path)
  mtime = os.stat(path).st_mtime_ns if os.path.isdir(path) else None
  return [tfds_name, str(builder.version), path, mtime]


def _to_arrays(source, *, progress: bool, desc: str) -> tuple[np.ndarray, np.ndarray]:
  from tqdm.auto import tqdm

  n = len(source)
  first = source[0]
  images = np.empty((n, *np.shape(first["image"])), np.uint8)
  labels = np.empty(n, np.int32)
  for i in tqdm(range(n), desc=desc, unit="img", disable=not progress, leave=False):
    record = first if i == 0 else source[i]
    images[i] = record["image"]
    labels[i] = record["label"]
  return images, labels


def read_tfds(
    tfds_name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = True,
) -> RawSplits:
  """Reads the ``train`` and ``test`` splits of a TFDS image-classification dataset.

  Args:
    tfds_name: the catalog name (``"cifar10"``, ``"mnist"``, …).
    data_dir: TFDS' data directory (default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    download: download and prepare the dataset if it is not prepared yet.
    progress: show a tqdm progress bar while reading records.

  Returns:
    :class:`~cnnjax.data.dataset.RawSplits`; class names from the ``label`` feature.

  Raises:
    RuntimeError: preparation failed (no network, or TensorFlow missing: the message
      says which and suggests ``data_dir`` with an offline copy).
    FileNotFoundError: not prepared and ``download=False``.

  Example:
    >>> raw = read_tfds("mnist")  # downloads MNIST  # doctest: +SKIP
    >>> raw.train_images.shape  # doctest: +SKIP
    (60000, 28, 28, 1)
  """
  builder = _builder(tfds_name, data_dir, download)
  splits = [s for s in ("train", "test") if s in builder.info.splits] or ["train", "test"]
  try:
    # (TFDS' logging decorator hides the method's signature from type checkers)
    sources = builder.as_data_source(split=splits)  # pyright: ignore[reportCallIssue]
  except NotImplementedError as e:  # prepared earlier as tfrecord only
    raise RuntimeError(
        f"cnnjax.data: the TFDS dataset {tfds_name!r} in {builder.data_dir} is not in the "
        f"array_record format that random access without TensorFlow needs ({e}). Delete "
        f"{builder.data_path} so that it is prepared again, or pass another TFDS data_dir. "
        f"{_OFFLINE_HINT}"
    ) from e
  arrays = {
      split: _to_arrays(source, progress=progress, desc=f"reading {tfds_name} {split}")
      for split, source in zip(splits, sources, strict=True)
  }
  # (TFDS types features as an optional FeatureConnector; it is a FeaturesDict here)
  features: Any = builder.info.features
  label = features["label"]
  class_names = tuple(label.names)
  test = arrays.get("test", (None, None))
  return RawSplits(arrays["train"][0], arrays["train"][1], test[0], test[1], class_names)
