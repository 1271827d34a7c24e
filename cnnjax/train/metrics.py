"""``metrics.jsonl``: one JSON object per finished epoch, appended as training goes."""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["MetricsLog", "read_metrics"]

# Keys whose values depend on the machine and its load, not on the run's maths.
TIMING_KEYS = ("seconds", "train_seconds", "images_per_second", "compile_seconds")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a ``metrics.jsonl`` file (missing file: [])."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
    """Drops records after ``last_epoch`` (e.g. after resuming from its checkpoint)."""
    records = [r for r in self.read() if r["epoch"] <= last_epoch]
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")
    os.replace(tmp, self.path)
    return records

  def append(self, record: dict[str, Any]) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
      f.flush()
