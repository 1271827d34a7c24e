"""The one batch-chunking policy of the CPU lowerings."""

from __future__ import annotations

__all__ = ["batch_chunks"]


def batch_chunks(
    batch: int, bytes_per_example: int, *, chunk_bytes: int, max_chunks: int = 16
) -> list[tuple[int, int]]:
  """``(lo, hi)`` bounds of near-equal batch chunks of at most ``chunk_bytes`` each.

  At most ``max_chunks`` chunks (they are unrolled in the program: a ``lax.map`` over
  chunks hides the work from XLA:CPU's fast kernels, measured ~100× slower backward),
  and one (empty) chunk for an empty batch.
  """
  chunk = max(1, chunk_bytes // max(bytes_per_example, 1))
  num = max(1, min(-(-batch // chunk), max_chunks))
  bounds = [round(i * batch / num) for i in range(num + 1)]
  return list(zip(bounds[:-1], bounds[1:], strict=True))
