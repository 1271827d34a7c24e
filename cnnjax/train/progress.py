"""The training progress bar: ``tqdm.auto`` (a widget in notebooks, text on terminals)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from tqdm.auto import tqdm

__all__ = ["Progress", "show_progress"]


def show_progress() -> bool:
  """Whether a bar helps here: on a terminal, or in a Jupyter kernel (not in log files)."""
  if sys.stderr.isatty():
    return True
  return "ipykernel" in sys.modules


class Progress:
  """A tqdm bar over the run's remaining steps (ETA), or plain lines when disabled."""

  def __init__(self, total: int, *, enabled: bool):
    self.bar: tqdm[Any] | None = None
    if enabled:
      from tqdm.auto import tqdm

      self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)

  def update(self, n: int, **postfix: Any) -> None:
    if self.bar is not None:
      if postfix:
        self.bar.set_postfix(postfix, refresh=False)
      self.bar.update(n)

  def describe(self, text: str) -> None:
    if self.bar is not None:
      self.bar.set_description(text, refresh=False)

  def write(self, text: str) -> None:
    if self.bar is not None:
      self.bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
