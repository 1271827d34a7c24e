"""The original CIFAR-10 / CIFAR-100 releases (Krizhevsky, 2009), read without TensorFlow.

Four layouts, as unpacked from the tarballs at https://www.cs.toronto.edu/~kriz/cifar.html:

================================  ===================================================
``cifar-10-batches-bin/``         ``data_batch_{1..5}.bin``, ``test_batch.bin``,
                                  ``batches.meta.txt``; records of 1 label byte +
                                  3,072 pixel bytes (red, green, blue planes of 32×32).
``cifar-100-binary/``             ``train.bin``, ``test.bin``, ``fine_label_names.txt``;
                                  records of coarse + fine label bytes + 3,072 pixels.
``cifar-10-batches-py/``          ``data_batch_{1..5}``, ``test_batch``, ``batches.meta``:
                                  Python pickles of ``{b"data": uint8 [n, 3072],
                                  b"labels": [n ints]}``.
``cifar-100-python/``             ``train``, ``test``, ``meta``: pickles with
                                  ``b"fine_labels"``.
================================  ===================================================

Prefer the binary release: it is plain bytes. The Python release is pickled, and
unpickling an untrusted file can run arbitrary code; cnnjax reads it with
:func:`safe_unpickle`, a restricted unpickler that admits only the plain types these
files hold (dict, list, tuple, bytes, str, int, float, bool, None) and the NumPy array
reconstruction they need, so a crafted file raises :class:`pickle.UnpicklingError`
instead of running code. CIFAR-100 is read with its 100 fine labels.
"""

from __future__ import annotations

import _codecs
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cnnjax.data.dataset import RawSplits

# (NumPy's stubs leave out the private _frombuffer; the NumPy 1.x names are typed apart)
try:  # NumPy >= 2
  from numpy._core.multiarray import _reconstruct
  from numpy._core.numeric import _frombuffer  # pyright: ignore[reportAttributeAccessIssue]
except ImportError:  # pragma: no cover - NumPy 1.x
  from numpy.core.multiarray import _reconstruct  # pyright: ignore[reportGeneralTypeIssues]
  from numpy.core.numeric import _frombuffer

__all__ = [
    "CIFAR10_CLASSES",
    "FORMATS",
    "detect_cifar",
    "read_cifar",
    "safe_unpickle",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PIXELS = 32 * 32 * 3

# format -> (training files, test file, metadata file)
FORMATS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "cifar10-binary": (
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        "test_batch.bin",
        "batches.meta.txt",
    ),
    "cifar100-binary": (("train.bin",), "test.bin", "fine_label_names.txt"),
    "cifar10-python": (tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    "cifar100-python": (("train",), "test", "meta"),
}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def detect_cifar(path: str | os.PathLike[str]) -> str | None:
  """The CIFAR layout of directory ``path`` (a key of :data:`FORMATS`), or None.

  A directory is taken for a release when it holds that release's metadata file or
  first training file.
  """
  path = Path(path)
  if not path.is_dir():
    return None
  for fmt in ("cifar10-binary", "cifar100-binary", "cifar10-python"):
    train, _, meta = FORMATS[fmt]
    if (path / train[0]).is_file() or (path / meta).is_file():
      return fmt
  # cifar-100-python's "train"/"meta" are generic names: ask for both.
  if (path / "train").is_file() and (path / "meta").is_file():
    return "cifar100-python"
  return None


def _check_files(path: Path, fmt: str) -> tuple[list[Path], Path | None, Path | None]:
  train, test, meta = FORMATS[fmt]
  missing = [name for name in train if not (path / name).is_file()]
  if missing:
    present = sorted(p.name for p in path.iterdir())[:20]
    raise FileNotFoundError(
        f"read_cifar: {path} looks like the {fmt} release but lacks {missing}; expected "
        f"the training files {list(train)} (and {test!r}, {meta!r}) in {path}; found "
        f"{present}."
    )
  test_path = path / test if (path / test).is_file() else None
  meta_path = path / meta if (path / meta).is_file() else None
  return [path / name for name in train], test_path, meta_path


# ----------------------------------------------------------------------------- binary


def _read_binary_file(path: Path, *, label_bytes: int, num_classes: int):
  data = path.read_bytes()
  record = label_bytes + _PIXELS
  if not data:
    raise ValueError(f"read_cifar: {path} is empty; expected {record}-byte records.")
  if len(data) % record:
    whole = len(data) // record
    raise ValueError(
        f"read_cifar: {path} is short or corrupt: {len(data)} bytes is not a whole number "
        f"of {record}-byte records; the record at byte offset {whole * record} has only "
        f"{len(data) - whole * record} bytes."
    )
  rows = np.frombuffer(data, np.uint8).reshape(-1, record)
  labels = rows[:, label_bytes - 1].astype(np.int32)  # the fine label for CIFAR-100
  bad = np.flatnonzero(labels >= num_classes)
  if bad.size:
    i = int(bad[0])
    raise ValueError(
        f"read_cifar: {path} is corrupt: record {i} (byte offset "
        f"{i * record + label_bytes - 1}) has label {labels[i]}; expected a label in "
        f"[0, {num_classes})."
    )
  images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def _read_names_txt(path: Path | None, default, num_classes: int) -> tuple[str, ...]:
  if path is None:
    return tuple(default) if default else tuple(str(i) for i in range(num_classes))
  names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
  if len(names) != num_classes:
    raise ValueError(f"read_cifar: {path} lists {len(names)} class names; expected {num_classes}.")
  return names


# ----------------------------------------------------------------------------- pickles


class _Refused(pickle.UnpicklingError):
  pass


def _safe_dtype(obj, align=False, copy=False):
  if not isinstance(obj, (str, bytes)):
    raise _Refused(f"refusing numpy.dtype({obj!r}); expected a type code")
  dtype = np.dtype(obj.decode("ascii") if isinstance(obj, bytes) else obj, align, copy)
  if dtype.kind not in "biuf":
    raise _Refused(
        f"refusing dtype {dtype} (kind {dtype.kind!r}); expected a plain "
        "bool, integer or float dtype"
    )
  return dtype


def _safe_reconstruct(subtype, shape, dtype):
  if subtype is not np.ndarray:
    raise _Refused(f"refusing array subtype {subtype!r}; expected numpy.ndarray")
  return _reconstruct(np.ndarray, shape, dtype)


def _safe_frombuffer(buf, dtype, shape, order):
  if not isinstance(buf, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
    raise _Refused(f"refusing a buffer of type {type(buf).__name__}")
  if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
    raise _Refused(f"refusing dtype {dtype!r}")
  return _frombuffer(buf, dtype, shape, order)  # pyright: ignore[reportCallIssue]


def _safe_encode(obj, encoding="utf-8", errors="strict"):
  # Python 3 pickles (protocol <= 2) store bytes as _codecs.encode(text, "latin1").
  if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
    raise _Refused(f"refusing _codecs.encode with encoding {encoding!r}")
  return _codecs.encode(obj, encoding)


_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("_codecs", "encode"): _safe_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only :data:`_SAFE_GLOBALS`; every other global is refused."""

  def find_class(self, module, name):
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise _Refused(
          f"refusing to load the global {module}.{name}; only plain containers, strings, "
          "numbers and NumPy arrays are admitted (a crafted or foreign pickle?)"
      ) from None

  def persistent_load(self, pid):
    raise _Refused("refusing a persistent id")


def safe_unpickle(data: bytes, *, source: str = "<bytes>") -> Any:
  """Unpickles ``data`` admitting only plain types and NumPy arrays; never runs code.

  Strings pickled by Python 2 (the CIFAR Python release) come back as ``bytes``
  (``encoding="bytes"``).

  Args:
    data: the pickle's bytes.
    source: a name for error messages (usually the file's path).

  Returns:
    The unpickled object, built only from dict, list, tuple, set, bytes, str, int,
    float, bool, None and ``numpy.ndarray`` of bool, integer or float dtype.

  Raises:
    pickle.UnpicklingError: the pickle names a global outside the allow-list (e.g.
      ``os.system``), or is truncated or corrupt; the message names ``source`` and the
      byte offset where reading stopped.

  Example:
    >>> safe_unpickle(pickle.dumps({"a": [1, 2]}))
    {'a': [1, 2]}
  """
  stream = io.BytesIO(data)
  unpickler = _RestrictedUnpickler(stream, encoding="bytes")
  try:
    return unpickler.load()
  except _Refused as e:
    raise pickle.UnpicklingError(
        f"safe_unpickle: {source}, near byte offset {stream.tell()}: {e}."
    ) from None
  except Exception as e:  # truncated or corrupt: EOFError, UnpicklingError, ValueError, ...
    raise pickle.UnpicklingError(
        f"safe_unpickle: {source} is short or corrupt: reading stopped at byte offset "
        f"{stream.tell()} of {len(data)} ({type(e).__name__}: {e})."
    ) from None


def _get(d: dict, key: str):
  for k in (key.encode(), key):
    if k in d:
      return d[k]
  raise KeyError(key)


def _read_pickled_batch(path: Path, *, label_key: str, num_classes: int):
  obj = safe_unpickle(path.read_bytes(), source=str(path))
  try:
    data, labels = _get(obj, "data"), _get(obj, label_key)
  except (KeyError, TypeError):
    keys = sorted(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(
        f"read_cifar: {path} holds {keys}; expected a dict with keys b'data' and "
        f"b'{label_key}'."
    ) from None
  if (
      not isinstance(data, np.ndarray)
      or data.dtype != np.uint8
      or data.ndim != 2
      or (data.shape[1] != _PIXELS)
  ):
    desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
    raise ValueError(
        f"read_cifar: {path}: b'data' is {desc}; expected a uint8 array [n, {_PIXELS}] "
        "(32×32 pixels × 3 channels)."
    )
  if (
      not isinstance(labels, (list, tuple, np.ndarray))
      or len(labels) != len(data)
      or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels)
  ):
    raise ValueError(
        f"read_cifar: {path}: b'{label_key}' is not a list of {len(data)} ints (one per " "image)."
    )
  labels = np.asarray(labels, np.int64)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    raise ValueError(
        f"read_cifar: {path} is corrupt: {label_key}[{bad[0]}] = {labels[bad[0]]}; expected "
        f"a label in [0, {num_classes})."
    )
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels.astype(np.int32)


def _read_pickled_names(path: Path | None, key: str, default, num_classes: int):
  if path is None:
    return tuple(default) if default else tuple(str(i) for i in range(num_classes))
  obj = safe_unpickle(path.read_bytes(), source=str(path))
  try:
    names = _get(obj, key)
  except (KeyError, TypeError):
    raise ValueError(f"read_cifar: {path} lacks {key!r}; expected the class names.") from None
  if not isinstance(names, list) or len(names) != num_classes:
    raise ValueError(f"read_cifar: {path}: {key!r} is not a list of {num_classes} class names.")
  return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


# ----------------------------------------------------------------------------- entry


def read_cifar(path: str | os.PathLike[str], *, fmt: str | None = None) -> RawSplits:
  """Reads a CIFAR release directory into ``uint8 [N, 32, 32, 3]`` images and labels.

  Args:
    path: the unpacked release directory (e.g. ``.../cifar-10-batches-bin``).
    fmt: one of :data:`FORMATS`; detected from the file names if None.

  Returns:
    :class:`~cnnjax.data.dataset.RawSplits` with the 50,000 training images (the
    batches concatenated in order) and the 10,000 test images, or None test arrays if
    the test file is absent.

  Raises:
    FileNotFoundError: ``path`` is not a CIFAR release, or lacks a training file (the
      message lists the files expected there).
    ValueError: a short or corrupt file (named, with the byte offset), or a label
      outside ``[0, num_classes)``.
    pickle.UnpicklingError: a pickle outside the restricted format (see
      :func:`safe_unpickle`).

  Example:
    >>> raw = read_cifar("data/cifar-10-batches-bin")  # a download  # doctest: +SKIP
    >>> raw.train_images.shape, raw.test_images.shape  # doctest: +SKIP
    ((50000, 32, 32, 3), (10000, 32, 32, 3))
  """
  path = Path(path)
  fmt = fmt or detect_cifar(path)
  if fmt not in FORMATS:
    raise FileNotFoundError(
        f"read_cifar: {path} is not a CIFAR release; expected one of the layouts "
        + "; ".join(f"{k}: {list(v[0])} + {v[1]!r}" for k, v in FORMATS.items())
        + "."
    )
  family, kind = fmt.split("-")
  num_classes = _NUM_CLASSES[family]
  train_files, test_file, meta_file = _check_files(path, fmt)
  default_names = CIFAR10_CLASSES if family == "cifar10" else None
  if kind == "binary":
    label_bytes = 1 if family == "cifar10" else 2

    def read(p):
      return _read_binary_file(p, label_bytes=label_bytes, num_classes=num_classes)

    class_names = _read_names_txt(meta_file, default_names, num_classes)
  else:
    label_key = "labels" if family == "cifar10" else "fine_labels"

    def read(p):
      return _read_pickled_batch(p, label_key=label_key, num_classes=num_classes)

    names_key = "label_names" if family == "cifar10" else "fine_label_names"
    class_names = _read_pickled_names(meta_file, names_key, default_names, num_classes)
  parts = [read(p) for p in train_files]
  train_images = np.concatenate([p[0] for p in parts])
  train_labels = np.concatenate([p[1] for p in parts])
  test_images = test_labels = None
  if test_file is not None:
    test_images, test_labels = read(test_file)
  return RawSplits(train_images, train_labels, test_images, test_labels, class_names)
