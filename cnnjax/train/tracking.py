"""Per-step logs of a run: ``steps.jsonl`` and, optionally, TensorBoard event files.

``steps.jsonl`` gets one JSON object every ``log_every`` steps: ``{"step", "epoch",
"loss" (the mean training loss since the previous line), "lr" (the rate of the step),
"images_per_second" (since the previous line)}``. With ``tensorboard=True`` the same
values (``train/loss``, ``train/lr``, ``train/images_per_second``) and each epoch's
metrics (``epoch/<key>``) go to ``<run>/tensorboard/`` through tensorboardX.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from cnnjax.train.metrics import MetricsLog

__all__ = ["STEPS_FILE", "StepLogger", "require_tensorboard"]

STEPS_FILE = "steps.jsonl"
_INSTALL = "pip install 'cnnjax[tensorboard]' (or pip install tensorboardX)"


def require_tensorboard() -> Any:
  """tensorboardX's ``SummaryWriter`` class, or a one-line ``ValueError`` saying how to
  install it."""
  try:
    # (tensorboardX is an optional extra, cnnjax[tensorboard]: absent by default)
    from tensorboardX import SummaryWriter  # pyright: ignore[reportMissingImports]
  except ImportError:
    raise ValueError(
        f"--tensorboard got on, but tensorboardX is not installed; expected {_INSTALL}, "
        "or no --tensorboard."
    ) from None
  return SummaryWriter


class StepLogger:
  """Writes ``steps.jsonl`` (and TensorBoard scalars) as training goes.

  Args:
    out_dir: the run directory.
    log_every: steps between lines (0: no per-step lines).
    schedule: the learning-rate schedule (step → rate).
    batch_size: images per step.
    tensorboard: also write TensorBoard event files to ``out_dir/tensorboard``.
    enabled: False on processes other than the first (nothing is written).
  """

  def __init__(
      self,
      out_dir: str,
      *,
      log_every: int,
      schedule: Callable[[Any], Any],
      batch_size: int,
      tensorboard: bool = False,
      enabled: bool = True,
  ):
    self.log: MetricsLog = MetricsLog(os.path.join(out_dir, STEPS_FILE))
    self.log_every: int = log_every if enabled else 0
    self.schedule: Callable[[Any], Any]
    self.batch_size: int
    self.schedule, self.batch_size = schedule, batch_size
    self.writer: Any = None  # tensorboardX's SummaryWriter once opened
    self._writer_class = require_tensorboard() if tensorboard and enabled else None
    self._tensorboard_dir = os.path.join(out_dir, "tensorboard")
    self._losses: list[float] = []
    self._since = time.perf_counter()

  def truncate(self, last_epoch: int) -> None:
    """Keeps the lines of epochs up to ``last_epoch`` (a resume from its checkpoint)."""
    if self.log_every or os.path.exists(self.log.path):
      self.log.truncate(last_epoch)

  def start_epoch(self) -> None:
    """Restarts the clock (evaluation and checkpoints between epochs are not training)."""
    self._losses, self._since = [], time.perf_counter()

  def step(self, step: int, epoch: int, loss: float) -> None:
    """Records the loss of optimizer step ``step`` (1-based: the state's count after it)."""
    if not self.log_every:
      return
    self._losses.append(loss)
    if step % self.log_every:
      return
    now = time.perf_counter()
    record = {
        "step": step,
        "epoch": epoch,
        "loss": sum(self._losses) / len(self._losses),
        "lr": float(self.schedule(step - 1)),
        "images_per_second": len(self._losses) * self.batch_size / max(now - self._since, 1e-9),
    }
    self.log.append(record)
    if self._open():
      for key in ("loss", "lr", "images_per_second"):
        self.writer.add_scalar(f"train/{key}", record[key], step)
    self._losses, self._since = [], now

  def epoch(self, record: dict[str, Any]) -> None:
    """Writes an epoch's metrics to TensorBoard (``metrics.jsonl`` has them already)."""
    if self._open():
      for key, value in record.items():
        if key not in ("epoch", "step", "tta") and isinstance(value, (int, float)):
          self.writer.add_scalar(f"epoch/{key}", value, record["step"])
      self.writer.flush()

  def _open(self) -> bool:
    if self.writer is None and self._writer_class is not None:
      self.writer = self._writer_class(self._tensorboard_dir)
    return self.writer is not None

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    self.writer, self._writer_class = None, None
