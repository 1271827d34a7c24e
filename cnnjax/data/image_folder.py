"""Image folders: a directory or a ``.zip`` of ``<split>/<class>/<image>.{png,jpg}``.

The common "ImageFolder" layout::

    train/airplane/0000.jpg
    train/airplane/0001.jpg
    ...
    test/truck/0999.png        (optional: without ``test/`` there is no test split)

Splits are the top-level folders ``train`` (required) and ``test`` (optional); a single
wrapping folder (``cifar10/train/...``, as zips often have) is looked through. Labels
follow the class folders sorted by name, unless a class list is given. A ``train`` class
folder without images is refused (dropping it would shift the labels of the classes after
it): remove it, or keep its label by listing it in ``class_names``. Images are
decoded with Pillow in their own mode (``L`` gives one channel, ``RGB`` three; palette,
CMYK and YCbCr images are converted to RGB) and must all have the same shape.
Decoding shows a tqdm progress bar; it can run in threads (``num_workers``), which
helps for large images but not for CIFAR's 32×32 JPEGs, where per-file overhead
dominates (measured on 2 cores: no gain from 2 threads; worker processes were slower
still, as each must import JAX).
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from cnnjax.data.dataset import RawSplits

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "decode_image", "is_image_folder", "read_image_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")
_CHUNK = 1000


def _list_files(path: Path, archive: zipfile.ZipFile | None) -> list[str]:
  """Relative POSIX paths of every file in the directory ``path`` or in ``archive``."""
  if archive is not None:
    return [info.filename for info in archive.infolist() if not info.is_dir()]
  return [
      Path(root, name).relative_to(path).as_posix()
      for root, _, files in os.walk(path)
      for name in files
  ]


def _list_dirs(path: Path, archive: zipfile.ZipFile | None) -> list[str]:
  """Relative POSIX paths of every directory (a zip's explicit and implied ones)."""
  if archive is not None:
    dirs = set()
    for info in archive.infolist():
      parts = info.filename.rstrip("/").split("/")
      stop = len(parts) if info.is_dir() else len(parts) - 1
      dirs.update("/".join(parts[:k]) for k in range(1, stop + 1))
    return sorted(dirs)
  return sorted(
      Path(root, name).relative_to(path).as_posix()
      for root, names, _ in os.walk(path)
      for name in names
  )


def _visible(parts: list[str]) -> bool:
  return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _find_root(files: list[list[str]]) -> str:
  """The prefix under which ``train/`` lives: ``""`` or one wrapping folder ``"name/"``."""
  tops = {f[0] for f in files if len(f) > 1}
  if "train" in tops:
    return ""
  if len(tops) == 1:
    top = tops.pop()
    if any(len(f) > 2 and f[1] == "train" for f in files):
      return top + "/"
  return ""


def is_image_folder(path: str | os.PathLike[str]) -> bool:
  """Whether ``path`` is a zip file, or a directory with a ``train/`` folder (maybe wrapped)."""
  path = Path(path)
  if path.is_file():
    return zipfile.is_zipfile(path)
  if not path.is_dir():
    return False
  if (path / "train").is_dir():
    return True
  subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
  return len(subdirs) == 1 and (subdirs[0] / "train").is_dir()


def _index(path: Path, archive: zipfile.ZipFile | None, class_names: Sequence[str] | None):
  """``({split: (members, labels)}, class_names)`` from the file listing alone."""
  files = [f.split("/") for f in sorted(_list_files(path, archive))]
  files = [f for f in files if _visible(f)]
  root = _find_root(files)
  skip = len(root.split("/")) - 1  # 0, or 1 for a wrapping folder
  by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
  for full in files:
    parts = full[skip:]
    if (
        (skip and full[0] + "/" != root)
        or not parts
        or parts[0] not in SPLITS
        or (os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS)
    ):
      continue
    rel = "/".join(full)
    if len(parts) != 3:
      raise ValueError(
          f"read_image_folder: {path}: {rel!r} is not at <split>/<class>/<image>; expected "
          f"images exactly one folder (the class) below {parts[0]!r}."
      )
    by_split[parts[0]].setdefault(parts[1], []).append(rel)
  if not by_split["train"]:
    tops = sorted({f[0] for f in files})[:10]
    raise FileNotFoundError(
        f"read_image_folder: no images at {path}/{root}train/<class>/<image> with an "
        f"extension in {IMAGE_EXTENSIONS}; expected the layout <split>/<class>/<image> with "
        f"split in {SPLITS} (test optional); found top-level entries {tops}."
    )
  train_classes = sorted(by_split["train"])
  empty = sorted(
      d[skip + 1]
      for d in (d.split("/") for d in _list_dirs(path, archive))
      if _visible(d)
      and len(d) == skip + 2
      and "/".join(d[:skip]) + "/" * bool(skip) == root
      and d[skip] == "train"
      and d[skip + 1] not in by_split["train"]
  )
  empty = [c for c in empty if class_names is None or c not in class_names]
  if empty:
    raise ValueError(
        f"read_image_folder: {path}: {root}train/ has class folders without images {empty}; "
        f"expected images in every class folder (labels follow the sorted folder names, so "
        "dropping one would shift the labels after it): remove it, or list it in "
        "class_names (--data-option class_names=[...]) to keep its label with no images."
    )
  if class_names is None:
    class_names = tuple(train_classes)
  else:
    class_names = tuple(class_names)
    if len(set(class_names)) != len(class_names):
      raise ValueError(
          f"read_image_folder: class_names got {class_names!r}; expected no duplicates."
      )
  label_of = {c: i for i, c in enumerate(class_names)}
  splits = {}
  for split, classes in by_split.items():
    if not classes:
      continue
    unknown = sorted(set(classes) - set(label_of))
    if unknown:
      raise ValueError(
          f"read_image_folder: {path}: {split}/ has class folders {unknown} that are not in "
          f"class_names {list(class_names)}; expected class folders from that list."
      )
    members = [m for c in sorted(classes, key=label_of.__getitem__) for m in classes[c]]
    labels = np.concatenate(
        [
            np.full(len(classes[c]), label_of[c], np.int32)
            for c in sorted(classes, key=label_of.__getitem__)
        ]
    )
    splits[split] = (members, labels)
  return splits, class_names


# ----------------------------------------------------------------------------- decoding


def decode_image(data: bytes, *, name: str = "<bytes>", op: str = "decode_image") -> np.ndarray:
  """Decodes PNG/JPEG bytes to ``uint8 [H, W, C]`` in the image's own channel count.

  Args:
    data: the encoded file.
    name: a name for error messages (the file's path).
    op: the operation for error messages, their prefix (``read_image_folder``,
      ``predict``, ...).

  Returns:
    ``[H, W, 1]`` for grayscale, ``[H, W, 3]`` for colour (palette, CMYK, YCbCr are
    converted to RGB), ``[H, W, 4]`` for RGBA, ``[H, W, 2]`` for grayscale + alpha.

  Raises:
    ValueError: not a decodable image, truncated, or a mode without 8-bit channels; the
      message is ``"<op>: <name> ..."``.

  Example:
    >>> import io
    >>> from PIL import Image
    >>> png = io.BytesIO(); Image.new("RGB", (32, 32)).save(png, format="PNG")
    >>> decode_image(png.getvalue()).shape
    (32, 32, 3)
  """
  from PIL import Image

  try:
    with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
      if im.mode == "1":
        im = im.convert("L")
      elif im.mode in ("P", "CMYK", "YCbCr"):
        im = im.convert("RGB")
      elif im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(
            f"{op}: {name} has image mode {im.mode!r}; expected 8-bit grayscale or colour "
            "(L, RGB, RGBA, P)."
        )
      array = np.asarray(im, dtype=np.uint8)
  except ValueError:
    raise
  except Exception as e:  # PIL raises UnidentifiedImageError / OSError on corrupt files
    reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
    raise ValueError(
        f"{op}: {name} ({len(data)} bytes) is corrupt or not an image "
        f"({type(e).__name__}: {reason})."
    ) from None
  return array[:, :, None] if array.ndim == 2 else array


class _Reader:
  """Reads members of a directory or a zip (one shared, thread-safe zip handle)."""

  def __init__(self, path: Path):
    self.path = path
    self.zip = None
    if path.is_file():
      try:
        self.zip = zipfile.ZipFile(path)
      except zipfile.BadZipFile as e:
        raise ValueError(f"read_image_folder: {path} is not a readable zip file ({e}).") from None

  def name(self, member: str) -> str:
    return f"{self.path}:{member}" if self.zip else str(self.path / member)

  def read(self, member: str) -> bytes:
    if self.zip is None:
      return (self.path / member).read_bytes()
    try:
      return self.zip.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise ValueError(f"read_image_folder: {self.name(member)} cannot be read ({e}).") from None

  def close(self):
    if self.zip is not None:
      self.zip.close()


def _decode_chunk(reader: _Reader, members: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:
  """Decodes ``members`` into one ``[len(members), *shape]`` array."""
  out = np.empty((len(members), *shape), np.uint8)
  for i, member in enumerate(members):
    name = reader.name(member)
    image = decode_image(reader.read(member), name=name, op="read_image_folder")
    if image.shape != tuple(shape):
      raise ValueError(
          f"read_image_folder: {name} has shape {image.shape} (H, W, C); expected "
          f"{tuple(shape)} like the other images: {_shape_hint(image.shape, shape)}."
      )
    out[i] = image
  return out


def _shape_hint(got, want) -> str:
  if got[:2] != tuple(want[:2]):
    return f"unexpected image size {got[0]}×{got[1]} (expected {want[0]}×{want[1]})"
  return f"unexpected channel count {got[2]} (expected {want[2]})"


def _decode_all(reader: _Reader, members: list[str], shape, *, num_workers: int, progress, desc):
  from tqdm.auto import tqdm

  chunks = [members[i : i + _CHUNK] for i in range(0, len(members), _CHUNK)]
  out: list[np.ndarray | None] = [None] * len(chunks)
  with tqdm(total=len(members), desc=desc, unit="img", disable=not progress, leave=False) as bar:
    if num_workers <= 1 or len(chunks) <= 1:
      for i, chunk in enumerate(chunks):
        out[i] = _decode_chunk(reader, chunk, shape)
        bar.update(len(chunk))
    else:
      with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        futures = {pool.submit(_decode_chunk, reader, c, shape): i for i, c in enumerate(chunks)}
        for future in concurrent.futures.as_completed(futures):
          i = futures[future]
          out[i] = future.result()
          bar.update(len(chunks[i]))
  return np.concatenate(cast("list[np.ndarray]", out))  # (every chunk decoded above)


def read_image_folder(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    image_shape: tuple[int, int, int] | None = None,
    num_workers: int = 1,
    progress: bool = True,
) -> RawSplits:
  """Decodes an image folder (directory or ``.zip``) into uint8 arrays.

  Args:
    path: a directory or a ``.zip`` with ``train/<class>/<image>`` and optionally
      ``test/<class>/<image>`` (PNG or JPEG).
    class_names: the label order; by default the ``train`` class folders sorted by name.
      Every class folder must be in it.
    image_shape: the expected ``(H, W, C)``; by default the first image's shape. Every
      image must have it.
    num_workers: decoding threads (Pillow releases the GIL while decoding, which pays
      off for large images); 1 (the default) decodes in this thread, which measured
      fastest for 32×32 JPEGs.
    progress: show a tqdm progress bar while decoding.

  Returns:
    :class:`~cnnjax.data.dataset.RawSplits`, examples ordered by class then file name;
    the test arrays are None without a ``test`` folder.

  Raises:
    FileNotFoundError: no ``train/<class>/<image>`` files (the message says where it
      looked and what it found).
    ValueError: a corrupt image (named), an image whose size or channel count differs,
      a class folder outside ``class_names``, a ``train`` class folder without images
      that ``class_names`` does not list.

  Example:
    >>> import pathlib, tempfile
    >>> from PIL import Image
    >>> tmp = tempfile.TemporaryDirectory(); root = pathlib.Path(tmp.name)
    >>> for name in ("cat", "dog"):  # train/<class>/<image>, three 8×8 images each
    ...   (root / "train" / name).mkdir(parents=True)
    ...   for i in range(3):
    ...     Image.new("RGB", (8, 8)).save(root / "train" / name / f"{i}.png")
    >>> raw = read_image_folder(root, progress=False)
    >>> raw.train_images.shape, raw.train_labels.tolist(), raw.class_names, raw.test_images
    ((6, 8, 8, 3), [0, 0, 0, 1, 1, 1], ('cat', 'dog'), None)
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(
        f"read_image_folder: {path} does not exist; expected a directory or a .zip."
    )
  if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
    raise ValueError(
        f"read_image_folder: num_workers got {num_workers!r}; expected a positive int."
    )
  reader = _Reader(path)
  try:
    splits, class_names = _index(path, reader.zip, class_names)
    if image_shape is None:
      first = splits["train"][0][0]
      image_shape = decode_image(
          reader.read(first), name=reader.name(first), op="read_image_folder"
      ).shape
    arrays = {
        split: (
            _decode_all(
                reader,
                members,
                tuple(image_shape),
                num_workers=num_workers,
                progress=progress,
                desc=f"decoding {path.name} {split}",
            ),
            labels,
        )
        for split, (members, labels) in splits.items()
    }
  finally:
    reader.close()
  test = arrays.get("test", (None, None))
  return RawSplits(arrays["train"][0], arrays["train"][1], test[0], test[1], class_names)
