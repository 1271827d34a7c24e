"""Tests for cnnjax._lowering.chunks: the one batch-chunking policy of the CPU lowerings."""

import chex
import pytest

from cnnjax._lowering.chunks import batch_chunks


class FormsMatchLaxTest(chex.TestCase):

  def test_batch_chunks_cover_the_batch(self):
    self.assertEqual(batch_chunks(7, 10, chunk_bytes=30, max_chunks=3), [(0, 2), (2, 5), (5, 7)])
    self.assertEqual(batch_chunks(7, 10, chunk_bytes=10), [(i, i + 1) for i in range(7)])
    self.assertEqual(
        batch_chunks(40, 10, chunk_bytes=1, max_chunks=5),
        [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)],
    )
    self.assertEqual(batch_chunks(0, 10, chunk_bytes=1), [(0, 0)])


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
