"""cnnjax's on/off environment switches, read by one parser."""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["switch"]

_OFF = ("0", "false", "no", "off")


def switch(name: str, environ: Mapping[str, str] | None = None) -> bool:
  """Whether the switch ``name`` is on: unset means on; ``0``, ``false``, ``no`` or
  ``off`` (any case, surrounding spaces ignored) mean off."""
  environ = os.environ if environ is None else environ
  return environ.get(name, "1").strip().lower() not in _OFF
