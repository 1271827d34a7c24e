"""``metrics.jsonl``: one JSON object per finished epoch, appended as training goes."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from cnnjax.train.jsonfiles import is_number, read_jsonl

__all__ = ["MetricsLog", "read_metrics"]

# Keys whose values depend on the machine and its load, not on the run's maths.
TIMING_KEYS = (
    "seconds",
    "train_seconds",
    "images_per_second",
    "compile_seconds",
    "trace_seconds",
    "compile_wait_seconds",
)


# Values written as numbers (``_clean`` writes a non-finite one as a string).
_NUMBER_KEYS = (
    "step",
    "lr",
    "loss",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "seconds",
    "train_seconds",
    "images_per_second",
)
_NON_FINITE = ("nan", "inf", "-inf")


def _check_record(record) -> str | None:
  """Why ``record`` is not a ``metrics.jsonl`` / ``steps.jsonl`` line (None: it is)."""
  if not isinstance(record, dict):
    return f"a JSON {type(record).__name__}, not an object"
  epoch = record.get("epoch")
  if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
    return f"'epoch' got {epoch!r}, not an integer >= 1"
  for key in _NUMBER_KEYS:
    value = record.get(key)
    if key in record and not is_number(value, finite=False) and value not in _NON_FINITE:
      return f"{key!r} got {value!r}, not a number"
  for key in ("compile_seconds", "trace_seconds", "compile_wait_seconds"):
    value = record.get(key)
    if key in record and not (
        isinstance(value, dict) and all(is_number(v) for v in value.values())
    ):
      return f"{key!r} got {value!r}, not an object of seconds per program"
  return None


def read_metrics(
    path: str | os.PathLike[str], *, drop_torn_tail: bool = False
) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` (or ``steps.jsonl``) file (missing file: []).

  Every line must be a JSON object with an integer ``"epoch"``, its metrics numbers (or
  the strings ``"nan"``, ``"inf"``, ``"-inf"`` that stand for non-finite ones).

  Args:
    path: the file.
    drop_torn_tail: drop an unreadable *last* line with a warning (a kill mid-write cuts
      the last record short; ``train(resume=True)`` then rewrites the records from its
      checkpoint on) instead of raising.

  Raises:
    ValueError: a line is not such a record (not JSON, nested too deeply, a metric that
      is not a number, ...); the message names the file and the line number.
  """
  return read_jsonl(
      path,
      op="read_metrics",
      record="metrics record",
      check=_check_record,
      expected="one JSON object with an 'epoch' per line (`cnnjax train --resume` repairs "
      "a torn last line)",
      drop_torn_tail=drop_torn_tail,
      torn_note=", and rewritten from the checkpoint on",
  )


def _clean(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf
  return value


class MetricsLog:
  """Appends per-epoch records to ``path`` (one JSON object per line).

  Example:
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> log = MetricsLog(os.path.join(tmp.name, "metrics.jsonl"))
    >>> log.append({"epoch": 1, "train_loss": 2.1})
    >>> log.read()
    [{'epoch': 1, 'train_loss': 2.1}]
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path: str = os.fspath(path)

  def read(self) -> list[dict[str, Any]]:
    return read_metrics(self.path)

  def truncate(self, last_epoch: int) -> list[dict[str, Any]]:
    """Keeps the records up to ``last_epoch`` (e.g. after resuming from its checkpoint).

    A torn last line is dropped (with a warning); the file is rewritten atomically.
    """
    records = [r for r in read_metrics(self.path, drop_torn_tail=True) if r["epoch"] <= last_epoch]
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)
    return records

  def append(self, record: dict[str, Any]) -> None:
    line = json.dumps({k: _clean(v) for k, v in record.items()}) + "\n"
    with open(self.path, "a") as f:
      f.write(line)
      f.flush()
