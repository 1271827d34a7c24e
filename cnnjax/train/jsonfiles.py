"""Reading back the JSON files a run writes, naming the file in every error.

``config.json``, ``run.json``, ``metrics.jsonl``, ``steps.jsonl``,
``config_history.jsonl`` and the checkpoints' ``cnnjax_sha256.json`` are read here, so
that whatever the damage (a truncated file, bytes that are not UTF-8, a nesting deep
enough to exhaust Python's recursion limit, a file grown far past anything cnnjax
writes) the error is one ``ValueError`` that names the file (and line) and says what was
expected. What the values must be (types, lengths, ranges) is checked by each file's
reader, through ``check`` functions that return a reason or None.

Example:
  >>> import pathlib, tempfile
  >>> tmp = tempfile.TemporaryDirectory()
  >>> path = pathlib.Path(tmp.name) / "config.json"
  >>> _ = path.write_text('{"model": "seed-cnn", "epochs": 10}')
  >>> read_json(path, expected="a TrainConfig")
  {'model': 'seed-cnn', 'epochs': 10}
  >>> _ = path.write_text('{"model": "seed-cnn", ')  # cut short
  >>> read_json(path, expected="a TrainConfig")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ValueError: .../config.json: not valid JSON (...); expected a TrainConfig.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_BYTES", "is_number", "loads", "read_json", "read_jsonl"]

# cnnjax's single JSON files are a few kilobytes; anything this large was not written by
# it, and reading it whole would only cost memory.
MAX_BYTES = 16 << 20


def loads(data: bytes | str) -> Any:
  """The JSON value in ``data``, or a ``ValueError`` whose message is the short reason
  (no file name: the callers add it).

  Example:
    >>> loads(b'{"a": [1, 2]}')
    {'a': [1, 2]}
  """
  try:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text)
  except UnicodeDecodeError as e:
    raise ValueError(f"not UTF-8 text (byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None
  except RecursionError:
    raise ValueError("nested too deeply to be read (Python's recursion limit)") from None
  except ValueError as e:  # e.g. an integer beyond Python's digit limit
    raise ValueError(f"not valid JSON ({e})") from None


def read_json(
    path: str | os.PathLike[str],
    *,
    expected: str,
    check: Callable[[Any], str | None] | None = None,
    max_bytes: int = MAX_BYTES,
) -> Any:
  """The JSON value in the file ``path``, checked.

  Args:
    path: the file.
    expected: what it should hold, for the error (e.g. ``"a config.json written by cnnjax
      train"``).
    check: ``check(value)`` returns why the value is wrong, or None.
    max_bytes: larger files are refused unread.

  Raises:
    OSError: the file cannot be opened or read (the error names it).
    ValueError: too large, not UTF-8, not JSON, nested too deeply, or refused by
      ``check``; the message is one line, ``"<path>: <reason>; expected <expected>."``.
  """
  path = os.fspath(path)
  with open(path, "rb") as f:
    data = f.read(max_bytes + 1)
  try:
    if len(data) > max_bytes:
      raise ValueError(f"larger than {max_bytes} bytes")
    value = loads(data)
    reason = check(value) if check is not None else None
    if reason is not None:
      raise ValueError(reason)
  except ValueError as e:
    raise ValueError(f"{path}: {e}; expected {expected}.") from None
  return value


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    op: str,
    record: str,
    expected: str,
    check: Callable[[Any], str | None],
    drop_torn_tail: bool = False,
    torn_note: str = "",
) -> list[Any]:
  """The values of a JSON-lines file, one per non-blank line (missing file: ``[]``).

  Args:
    path: the file.
    op: the reading function, the error's prefix (e.g. ``"read_metrics"``).
    record: what one line is (e.g. ``"metrics record"``).
    expected: what the file should hold, for the error.
    check: ``check(value)`` returns why a line's value is wrong, or None.
    drop_torn_tail: drop an unreadable *last* line with a warning (a kill while it was
      appended cuts it short) instead of raising.
    torn_note: appended to that warning (what happens to the dropped line).

  Raises:
    OSError: the file cannot be read.
    ValueError: a line that is not JSON or that ``check`` refuses; the message names the
      file and the line number.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  values = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      value = loads(line)
      reason = check(value)
      if reason is not None:
        raise ValueError(reason)
    except ValueError as e:
      if drop_torn_tail and not any(rest.strip() for rest in lines[i + 1 :]):
        start = line[:40].decode("utf-8", errors="replace")
        warnings.warn(
            f"{op}: {path} line {i + 1} is torn ({start!r}...: a kill while it "
            f"was written); dropped{torn_note}.",
            stacklevel=3,
        )
        break
      raise ValueError(
          f"{op}: {path} line {i + 1} is not a {record} ({e}); expected {expected}."
      ) from None
    values.append(value)
  return values


def is_number(value: Any, *, finite: bool = True) -> bool:
  """An int or float from JSON (not a bool), finite unless ``finite=False``."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  try:
    return not finite or math.isfinite(value)
  except OverflowError:  # an int beyond float's range
    return False
