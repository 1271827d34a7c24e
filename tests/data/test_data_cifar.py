"""CIFAR releases: binary and pickled batches written in tmp_path, and the restricted unpickler."""

import builtins
import pickle
import struct

import numpy as np
import pytest

from cnnjax.data.cifar import CIFAR10_CLASSES, detect_cifar, read_cifar, safe_unpickle

RNG = np.random.default_rng(0)


def _images(n):
  return RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _planes(images):
  """[n, 32, 32, 3] -> [n, 3072] in the release's order: red plane, green, blue (row-major)."""
  n = len(images)
  out = np.empty((n, 3072), np.uint8)
  for i in range(n):
    for c in range(3):
      out[i, c * 1024 : (c + 1) * 1024] = images[i, :, :, c].ravel()
  return out


def write_cifar10_binary(root, *, per_batch=3, test=2, meta=True):
  root.mkdir(parents=True, exist_ok=True)
  images, labels = _images(5 * per_batch + test), RNG.integers(0, 10, 5 * per_batch + test)
  rows = _planes(images)
  names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
  bounds = [i * per_batch for i in range(6)] + [5 * per_batch + test]
  for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
    with open(root / name, "wb") as f:
      for j in range(lo, hi):
        f.write(bytes([labels[j]]) + rows[j].tobytes())
  if meta:
    (root / "batches.meta.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n\n")
  return images, labels.astype(np.int32)


def write_cifar10_python(root, *, per_batch=3, test=2, protocol=2):
  root.mkdir(parents=True, exist_ok=True)
  images, labels = _images(5 * per_batch + test), RNG.integers(0, 10, 5 * per_batch + test)
  rows = _planes(images)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  bounds = [i * per_batch for i in range(6)] + [5 * per_batch + test]
  for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True):
    batch = {
        b"batch_label": b"batch",
        b"labels": [int(v) for v in labels[lo:hi]],
        b"data": rows[lo:hi],
        b"filenames": [b"x.png"] * (hi - lo),
    }
    (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
  meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072}
  (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
  return images, labels.astype(np.int32)


def _py2_batch(rows: np.ndarray, labels) -> bytes:
  """A protocol-2 pickle as Python 2 wrote the CIFAR batches (str as SHORT_BINSTRING)."""

  def s(b):
    return b"U" + bytes([len(b)]) + b

  def i(v):
    return b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v)

  raw = rows.tobytes()
  array = (
      b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
      + i(0)
      + b"\x85"
      + s(b"b")
      + b"\x87R("
      + i(1)
      + i(rows.shape[0])
      + i(rows.shape[1])
      + b"\x86"
      + b"cnumpy\ndtype\n"
      + s(b"u1")
      + i(0)
      + i(1)
      + b"\x87R("
      + i(3)
      + s(b"|")
      + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
      + i(0)
      + b"tb"
      + b"\x89T"
      + struct.pack("<I", len(raw))
      + raw
      + b"tb"
  )
  label_list = b"](" + b"".join(i(int(v)) for v in labels) + b"e"
  return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def test_binary_release_round_trip(tmp_path):
  images, labels = write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
  assert detect_cifar(tmp_path / "cifar-10-batches-bin") == "cifar10-binary"
  raw = read_cifar(tmp_path / "cifar-10-batches-bin")
  np.testing.assert_array_equal(raw.train_images, images[:15])
  np.testing.assert_array_equal(raw.train_labels, labels[:15])
  np.testing.assert_array_equal(raw.test_images, images[15:])
  np.testing.assert_array_equal(raw.test_labels, labels[15:])
  assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.int32
  assert raw.class_names == tuple(f"c{i}" for i in range(10))


def test_binary_release_without_meta_or_test(tmp_path):
  images, _ = write_cifar10_binary(tmp_path, meta=False)
  (tmp_path / "test_batch.bin").unlink()
  raw = read_cifar(tmp_path)
  assert raw.class_names == CIFAR10_CLASSES
  assert raw.test_images is None and raw.test_labels is None
  np.testing.assert_array_equal(raw.train_images, images[:15])


def test_cifar100_binary_uses_fine_labels(tmp_path):
  images = _images(5)
  coarse, fine = RNG.integers(0, 20, 5), RNG.integers(0, 100, 5)
  rows = _planes(images)
  with open(tmp_path / "train.bin", "wb") as f:
    for j in range(3):
      f.write(bytes([coarse[j], fine[j]]) + rows[j].tobytes())
  with open(tmp_path / "test.bin", "wb") as f:
    for j in range(3, 5):
      f.write(bytes([coarse[j], fine[j]]) + rows[j].tobytes())
  (tmp_path / "fine_label_names.txt").write_text("\n".join(f"f{i}" for i in range(100)))
  assert detect_cifar(tmp_path) == "cifar100-binary"
  raw = read_cifar(tmp_path)
  np.testing.assert_array_equal(raw.train_labels, fine[:3])
  np.testing.assert_array_equal(raw.test_images, images[3:])
  assert raw.class_names[7] == "f7"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_release_round_trip(tmp_path, protocol):
  images, labels = write_cifar10_python(tmp_path, protocol=protocol)
  assert detect_cifar(tmp_path) == "cifar10-python"
  raw = read_cifar(tmp_path)
  np.testing.assert_array_equal(raw.train_images, images[:15])
  np.testing.assert_array_equal(raw.train_labels, labels[:15])
  np.testing.assert_array_equal(raw.test_images, images[15:])
  assert raw.class_names == CIFAR10_CLASSES


def test_python2_pickles_as_in_the_original_release(tmp_path):
  images, labels = _images(4), np.array([3, 9, 0, 300 % 10])
  rows = _planes(images)
  obj = safe_unpickle(_py2_batch(rows, labels))
  np.testing.assert_array_equal(obj[b"data"], rows)
  assert obj[b"labels"] == labels.tolist()
  for k in range(1, 6):
    (tmp_path / f"data_batch_{k}").write_bytes(_py2_batch(rows, labels))
  raw = read_cifar(tmp_path)
  np.testing.assert_array_equal(raw.train_images, np.concatenate([images] * 5))
  assert raw.test_images is None


def test_cifar100_python(tmp_path):
  images = _images(4)
  rows = _planes(images)
  fine = [5, 99, 0, 42]
  batch = {b"data": rows[:3], b"fine_labels": fine[:3], b"coarse_labels": [0, 1, 2]}
  (tmp_path / "train").write_bytes(pickle.dumps(batch, protocol=2))
  (tmp_path / "test").write_bytes(
      pickle.dumps({b"data": rows[3:], b"fine_labels": fine[3:]}, protocol=2)
  )
  (tmp_path / "meta").write_bytes(
      pickle.dumps({b"fine_label_names": [f"n{i}".encode() for i in range(100)]}, protocol=2)
  )
  assert detect_cifar(tmp_path) == "cifar100-python"
  raw = read_cifar(tmp_path)
  assert raw.train_labels.tolist() == fine[:3] and raw.test_labels.tolist() == fine[3:]
  assert raw.class_names[99] == "n99"


def test_missing_batch_lists_expected_files(tmp_path):
  write_cifar10_binary(tmp_path)
  (tmp_path / "data_batch_3.bin").unlink()
  with pytest.raises(FileNotFoundError, match=r"data_batch_3\.bin.*expected.*data_batch_1\.bin"):
    read_cifar(tmp_path)


def test_not_a_release(tmp_path):
  (tmp_path / "notes.txt").write_text("hi")
  assert detect_cifar(tmp_path) is None
  with pytest.raises(FileNotFoundError, match="not a CIFAR release.*data_batch_1.bin"):
    read_cifar(tmp_path)


def test_short_binary_file_names_byte_offset(tmp_path):
  write_cifar10_binary(tmp_path)
  path = tmp_path / "data_batch_2.bin"
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(ValueError, match=r"data_batch_2\.bin is short or corrupt.*byte offset 6146"):
    read_cifar(tmp_path)


def test_empty_binary_file(tmp_path):
  write_cifar10_binary(tmp_path)
  (tmp_path / "data_batch_4.bin").write_bytes(b"")
  with pytest.raises(ValueError, match=r"data_batch_4\.bin is empty"):
    read_cifar(tmp_path)


def test_corrupt_label_names_byte_offset(tmp_path):
  write_cifar10_binary(tmp_path)
  path = tmp_path / "data_batch_5.bin"
  data = bytearray(path.read_bytes())
  data[3073] = 12  # the label of record 1
  path.write_bytes(bytes(data))
  match = r"data_batch_5\.bin is corrupt: record 1 \(byte offset 3073\) has label 12"
  with pytest.raises(ValueError, match=match):
    read_cifar(tmp_path)


def test_meta_with_wrong_class_count(tmp_path):
  write_cifar10_binary(tmp_path)
  (tmp_path / "batches.meta.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match="2 class names; expected 10"):
    read_cifar(tmp_path)


def test_truncated_pickle_names_file_and_offset(tmp_path):
  write_cifar10_python(tmp_path)
  path = tmp_path / "data_batch_2"
  data = path.read_bytes()
  path.write_bytes(data[:200])
  match = r"data_batch_2 is short or corrupt.*byte offset \d+ of 200"
  with pytest.raises(pickle.UnpicklingError, match=match):
    read_cifar(tmp_path)


def test_pickle_with_wrong_keys_or_data(tmp_path):
  write_cifar10_python(tmp_path)
  (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"pixels": np.zeros(3, np.uint8)}))
  match = r"data_batch_1 holds.*expected a dict with keys b'data' and b'labels'"
  with pytest.raises(ValueError, match=match):
    read_cifar(tmp_path)
  (tmp_path / "data_batch_1").write_bytes(
      pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
  )
  with pytest.raises(ValueError, match=r"uint8 \(2, 100\); expected a uint8 array \[n, 3072\]"):
    read_cifar(tmp_path)
  (tmp_path / "data_batch_1").write_bytes(
      pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
  )
  with pytest.raises(ValueError, match=r"labels\[1\] = 10; expected a label in \[0, 10\)"):
    read_cifar(tmp_path)


# ----------------------------------------------------------------------------- malicious


class _Exec:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (builtins.exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",))


class _System:

  def __reduce__(self):
    import os

    return (os.system, ("true",))


def test_malicious_pickle_runs_no_code(tmp_path):
  marker = tmp_path / "pwned"
  payload = pickle.dumps(_Exec(marker))
  pickle.loads(payload)  # the payload is real: plain pickle runs it ...
  assert marker.exists()
  marker.unlink()
  with pytest.raises(pickle.UnpicklingError, match=r"refusing to load the global builtins\.exec"):
    safe_unpickle(payload)
  assert not marker.exists()  # ... the restricted unpickler does not


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_batch_in_release_is_refused(tmp_path, protocol):
  write_cifar10_python(tmp_path)
  marker = tmp_path / "pwned"
  batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": _Exec(marker)}
  (tmp_path / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=protocol))
  match = (
      r"data_batch_3, near byte offset \d+: "
      r"refusing to load the global (__builtin__|builtins)\.exec"
  )
  with pytest.raises(pickle.UnpicklingError, match=match):
    read_cifar(tmp_path)
  assert not marker.exists()


def test_other_dangerous_globals_are_refused():
  with pytest.raises(pickle.UnpicklingError, match=r"global (os|posix)\.system"):
    safe_unpickle(pickle.dumps(_System()))
  # A NumPy function that is not the array reconstruction.
  crafted = b"\x80\x02cnumpy\nload\nX\x03\x00\x00\x00/x/\x85R."
  with pytest.raises(pickle.UnpicklingError, match=r"global numpy\.load"):
    safe_unpickle(crafted)
  # Object arrays (which would unpickle arbitrary elements) are refused by dtype.
  with pytest.raises(pickle.UnpicklingError, match="refusing dtype object"):
    safe_unpickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
  # _codecs.encode only for the latin1 bytes trick.
  crafted = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
  with pytest.raises(pickle.UnpicklingError, match="refusing _codecs.encode"):
    safe_unpickle(crafted)


def test_safe_unpickle_admits_plain_types():
  obj = {"a": [1, 2.5, None, True], b"b": (b"x", "y"), "arr": np.arange(4, dtype=np.int16)}
  for protocol in (0, 2, 4, 5):
    out = safe_unpickle(pickle.dumps(obj, protocol=protocol))
    assert out["a"] == obj["a"] and out[b"b"] == obj[b"b"]
    np.testing.assert_array_equal(out["arr"], obj["arr"])
    assert out["arr"].dtype == np.int16
