"""An on-disk cache of decoded arrays, so that the second start of a run is fast.

Decoding 50,000 JPEGs takes seconds to minutes; reading the same pixels back from an
uncompressed ``.npz`` takes a fraction of a second. Entries are keyed by what they
were decoded from (the source's path, size and modification time, and the loader's
options), so editing or replacing a source invalidates its entry, and they are written
atomically (a temporary file in the same directory, then :func:`os.replace`), so a
run killed mid-write never leaves a half-written entry that a later run would trust. An
entry that cannot be read, or whose contents fail the caller's check (labels out of
range, wrong image shape or dtype, lengths that differ), is ignored with a warning and
decoded again.

The cache directory is ``$CNNJAX_CACHE`` if set, else ``$XDG_CACHE_HOME/cnnjax``, else
``~/.cache/cnnjax``. Deleting it is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = [
    "CACHE_VERSION",
    "cache_key",
    "cached_arrays",
    "default_cache_dir",
    "read_entry",
    "source_fingerprint",
    "write_entry",
]

# Bump when the decoded layout changes so that old entries are never read back.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
  """The cache directory: ``$CNNJAX_CACHE``, ``$XDG_CACHE_HOME/cnnjax`` or ``~/.cache/cnnjax``."""
  if os.environ.get("CNNJAX_CACHE"):
    return Path(os.environ["CNNJAX_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "cnnjax"


def source_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
  """What identifies a source on disk: its resolved path, sizes and modification times.

  Args:
    path: a file (every byte counts: its size and mtime) or a directory (the relative
      path, size and mtime of every file below it, in sorted order).

  Returns:
    A JSON-serialisable list; equal lists mean "the same source, unchanged".
  """
  path = Path(path).resolve()
  if path.is_file():
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]
  entries, empty = [], []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    if not dirs and not files:
      empty.append(str(Path(root).relative_to(path)))
    for name in sorted(files):
      full = Path(root, name)
      st = full.stat()
      entries.append([str(full.relative_to(path)), st.st_size, st.st_mtime_ns])
  # Empty directories count too (an empty class folder changes what a folder means);
  # listed only when present, so that the keys of other sources stay as they were.
  return [str(path), entries, empty] if empty else [str(path), entries]


def cache_key(*parts: Any) -> str:
  """A short hex digest of JSON-serialisable ``parts`` (and :data:`CACHE_VERSION`)."""
  blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _entry_path(cache_dir: Path, label: str, key: str) -> Path:
  safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
  return Path(cache_dir) / f"{safe}-{key}.npz"


def read_entry(
    cache_dir: str | os.PathLike[str],
    label: str,
    key: str,
    *,
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> dict[str, np.ndarray] | None:
  """The arrays stored under ``key``, or None if there is no (usable) entry.

  An unreadable entry (truncated, not a zip, damaged compressed data, a bad array
  header: any error while reading it), or one whose arrays ``check`` rejects (it returns
  a reason, None if fine), is reported with a warning naming it and treated as missing;
  the caller then decodes again and overwrites it.
  """
  path = _entry_path(Path(cache_dir), label, key)
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as entry:
      arrays = {name: entry[name] for name in entry.files}
  except Exception as e:  # whatever the damage: zip, zlib, npy header, encryption, ...
    warnings.warn(
        f"cnnjax.data: ignoring the unreadable cache entry {path} "
        f"({type(e).__name__}: {e}); decoding again.",
        stacklevel=2,
    )
    return None
  reason = check(arrays) if check is not None else None
  if reason is not None:
    warnings.warn(
        f"cnnjax.data: ignoring the cache entry {path} with wrong contents "
        f"({reason}); decoding again.",
        stacklevel=2,
    )
    return None
  return arrays


def write_entry(
    cache_dir: str | os.PathLike[str], label: str, key: str, arrays: Mapping[str, np.ndarray]
) -> Path:
  """Stores ``arrays`` under ``key`` atomically; returns the entry's path.

  The arrays are written uncompressed (pixels compress poorly and reading back should
  be as fast as the disk) to a temporary file in ``cache_dir`` that then replaces the
  entry in one :func:`os.replace`.
  """
  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  path = _entry_path(cache_dir, label, key)
  fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.stem}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      # (names of arrays: pyright would match the values against allow_pickle too)
      np.savez(f, **cast("dict[str, Any]", arrays))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  return path


def cached_arrays(
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    cache_dir: str | os.PathLike[str] | None,
    label: str,
    key: str,
    check: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> dict[str, np.ndarray]:
  """``compute()``, or its stored result from a previous call with the same ``key``.

  Args:
    compute: decodes the source; returns a mapping of names to NumPy arrays (no object
      arrays: entries are read back with ``allow_pickle=False``).
    cache_dir: where entries live; None disables the cache (always computes).
    label: a readable prefix for the entry's file name (e.g. ``"folder-cifar10"``).
    key: from :func:`cache_key`.
    check: validates a stored entry's arrays: None if fine, else a reason (the entry is
      then decoded again and overwritten), e.g. :func:`cnnjax.data.dataset.check_raw_arrays`.

  Returns:
    The arrays, as a dict.
  """
  if cache_dir is None:
    return dict(compute())
  entry = read_entry(cache_dir, label, key, check=check)
  if entry is not None:
    return entry
  arrays = dict(compute())
  try:
    write_entry(cache_dir, label, key, arrays)
  except OSError as e:
    warnings.warn(
        f"cnnjax.data: could not write the cache entry in {cache_dir} ({e}); the next "
        "start will decode again.",
        stacklevel=2,
    )
  return arrays
