"""The decoded-array cache: whatever the damage to an entry, it is named in a warning and
decoded again (never a traceback, never its contents)."""

import io
import zipfile

import numpy as np
import pytest

from cnnjax.data import cache


def _deflated(path):
  """The .npz at ``path`` rewritten with its members deflated, as bytes."""
  buf = io.BytesIO()
  with zipfile.ZipFile(path) as z, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
    for name in z.namelist():
      out.writestr(name, z.read(name))
  return bytearray(buf.getvalue())


def _bad_deflate(path):
  data = _deflated(path)
  start = data.index(b"PK\x03\x04") + 30 + len("images.npy") + 16
  data[start : start + 8] = b"\xff" * 8  # zlib.error while inflating
  path.write_bytes(data)


def _encrypted(path):
  data = _deflated(path)
  data[data.index(b"PK\x01\x02") + 8] |= 1  # the central directory says "encrypted"
  path.write_bytes(data)


def _bare_npy(path):
  with open(path, "wb") as f:
    np.save(f, np.zeros(3))  # np.load gives an array, not an archive


@pytest.mark.parametrize("damage", [_bad_deflate, _encrypted, _bare_npy])
def test_a_damaged_entry_is_named_and_decoded_again(damage, tmp_path):
  arrays = {"images": np.arange(4000, dtype=np.uint8).reshape(10, 20, 20)}
  path = cache.write_entry(tmp_path, "folder-x", "k", arrays)
  damage(path)
  with pytest.warns(UserWarning, match=f"ignoring the unreadable cache entry {path} "):
    assert cache.read_entry(tmp_path, "folder-x", "k") is None
  calls = []

  def decode():
    calls.append(1)
    return arrays

  with pytest.warns(UserWarning, match="decoding again"):
    got = cache.cached_arrays(decode, cache_dir=tmp_path, label="folder-x", key="k")
  assert calls == [1]
  np.testing.assert_array_equal(got["images"], arrays["images"])
  np.testing.assert_array_equal(
      cache.read_entry(tmp_path, "folder-x", "k")["images"], arrays["images"]
  )  # rewritten
