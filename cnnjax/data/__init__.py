"""Datasets as NumPy arrays, and the input pipeline in JAX.

Loading (host, NumPy)::

    from cnnjax import data
    ds = data.load("shapes")                                  # built-in, no download
    ds = data.load("cifar10", data_dir="cifar-10-batches-bin")  # offline copy
    ds = data.load("cifar10", data_dir="cifar10-train-jpeg.zip")
    ds = data.load("cifar10")                                 # TFDS, downloads once

:func:`load` returns a :class:`Dataset` with ``train_images``/``val_images``/
``test_images`` (``uint8 [N, H, W, C]``), the matching ``int32 [N]`` labels,
``class_names`` and ``name``; ``test_images``/``test_labels`` are None when the source
has no test split (e.g. an image folder with only ``train/``).

* ``name``: ``"shapes"`` (procedurally drawn circles, squares, triangles, diamonds,
  crosses and rings, 32×32×3, deterministic for a seed; 6,000 train + 1,000 test by
  default), ``"cifar10"``, ``"cifar100"``, ``"mnist"``, ``"fashion_mnist"``, or
  ``"folder"`` (any image folder given as ``data_dir``).
* ``data_dir``: an offline copy, detected from its contents: the CIFAR binary release
  (``cifar-10-batches-bin``, ``cifar-100-binary``; preferred), the Python release
  (``cifar-10-batches-py``, ``cifar-100-python``; read with a restricted unpickler that
  admits only plain types and NumPy arrays, so a crafted pickle cannot run code), an
  image folder directory or ``.zip`` of ``<split>/<class>/<image>.{png,jpg}`` (classes
  sorted by name unless ``class_names`` is given), or a TFDS data directory. Without
  ``data_dir`` the TFDS catalog is used through ``tfds.data_source`` (array_record):
  no TensorFlow at run time; if TFDS' one-time preparation needs TensorFlow and it is
  missing, the error says so.
* Validation: ``val_size`` examples (default 5,000 for the catalog datasets, so
  CIFAR-10 gives 45,000 / 5,000; 1,000 for shapes) held out from the training split,
  chosen by ``np.random.default_rng(seed).permutation`` — deterministic for a seed.
* Cache: decoded image folders and TFDS records are stored as ``.npz`` in ``cache_dir``
  (default ``$CNNJAX_CACHE`` or ``~/.cache/cnnjax``), keyed by the source's path, size
  and mtime and written atomically, so the second start skips decoding.

Pipeline (device, JAX; :mod:`cnnjax.data.pipeline`)::

    x, y = jax.device_put(ds.train_images), jax.device_put(ds.train_labels)
    mean, std = data.channel_stats(x)
    for batch in data.epoch_batches(x, y, batch_size=128, key=k, drop_last=True):
      images = data.augment(k_aug, data.normalize(batch.images, mean, std))
"""

from cnnjax.data.cache import default_cache_dir
from cnnjax.data.cifar import CIFAR10_CLASSES, read_cifar, safe_unpickle
from cnnjax.data.dataset import Dataset, RawSplits, split_validation
from cnnjax.data.image_folder import read_image_folder
from cnnjax.data.pipeline import (
    Batch,
    augment,
    channel_stats,
    epoch_batches,
    normalize,
    num_batches,
    random_crop,
    random_flip,
)
from cnnjax.data.shapes import SHAPE_NAMES, make_shapes
from cnnjax.data.sources import DATASETS, detect_format, load

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "SHAPE_NAMES",
    "Batch",
    "Dataset",
    "RawSplits",
    "augment",
    "channel_stats",
    "default_cache_dir",
    "detect_format",
    "epoch_batches",
    "load",
    "make_shapes",
    "normalize",
    "num_batches",
    "random_crop",
    "random_flip",
    "read_cifar",
    "read_image_folder",
    "safe_unpickle",
    "split_validation",
]
