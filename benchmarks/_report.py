"""The benchmarks' one way to write their figures: ``--json PATH`` as indented JSON."""

from __future__ import annotations

import json
import os

__all__ = ["write_json"]


def write_json(path: str | os.PathLike | None, figures) -> None:
  """Writes ``figures`` to ``path`` as indented JSON with a final newline (nothing when
  ``path`` is empty or None)."""
  if not path:
    return
  with open(path, "w") as f:
    json.dump(figures, f, indent=2)
    f.write("\n")
