"""``metrics.jsonl``: one JSON object per finished epoch, appended as training goes."""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]

# Keys whose values depend on the machine and its load, not on the run's maths.
TIMING_KEYS = ("seconds", "train_seconds", "images_per_second", "compile_seconds",
               "trace_seconds", "compile_wait_seconds")


def read_metrics(path: str | os.PathLike, *, drop_torn_tail: bool = False
                 ) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file (missing file: []).

  Args:
    path: the file.
    drop_torn_tail: drop an unreadable *last* line with a warning (a kill mid-write cuts
      the last record short; ``train(resume=True)`` then rewrites the records from its
      checkpoint on) instead of raising.

  Raises:
    ValueError: a line is not a JSON object with an ``"epoch"``; the message names the
      file and the line number.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.read().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
        raise ValueError("not an object with an integer 'epoch'")
    except ValueError as e:
      last = not any(rest.strip() for rest in lines[i + 1:])
      if last and drop_torn_tail:
        warnings.warn(
            f"read_metrics: {path} line {i + 1} is torn ({line[:40]!r}...: a kill while it "
            "was written); dropped, and rewritten from the checkpoint on.", stacklevel=3)
        break
      raise ValueError(
          f"read_metrics: {path} line {i + 1} is not a metrics record ({e}); expected one "
          "JSON object with an 'epoch' per line (`cnnjax train --resume` repairs a torn last "
          "line)."
      ) from None
    records.append(record)
  return records


def _clean(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf
  return value


class MetricsLog:
  """Appends per-epoch records to ``path`` (one JSON object per line).

  Example:
    >>> log = MetricsLog("/tmp/metrics.jsonl")  # doctest: +SKIP
    >>> log.append({"epoch": 1, "train_loss": 2.1})  # doctest: +SKIP
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)

  def read(self) -> list[dict[str, Any]]:
    return read_metrics(self.path)

  def truncate(self, last_epoch: int) -> list[dict[str, Any]]:
    """Keeps the records up to ``last_epoch`` (e.g. after resuming from its checkpoint).

    A torn last line is dropped (with a warning); the file is rewritten atomically.
    """
    records = [r for r in read_metrics(self.path, drop_torn_tail=True)
               if r["epoch"] <= last_epoch]
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
