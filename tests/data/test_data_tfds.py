"""The TFDS path, with ``tfds.testing.mock_data`` (no network, no TensorFlow)."""

import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnnjax.data import tfds as tfds_source
from cnnjax.data.sources import load

_BUILDER = "tensorflow_datasets.core.dataset_builder.DatasetBuilder"


@pytest.mark.parametrize(
    "name, shape, num_classes",
    [("cifar10", (32, 32, 3), 10), ("mnist", (28, 28, 1), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_tfds_data_source_without_tensorflow(name, shape, num_classes):
  with tfds.testing.mock_data(num_examples=9):
    ds = load(name, val_size=3, cache=False, progress=False)
  assert ds.train_images.shape == (6, *shape) and ds.val_images.shape == (3, *shape)
  assert ds.test_images.shape == (9, *shape)
  assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
  assert ds.num_classes == num_classes and ds.source == f"tfds:{name}"
  assert np.all((ds.test_labels >= 0) & (ds.test_labels < num_classes))
  assert "tensorflow" not in sys.modules  # read as NumPy: TensorFlow never imported


def test_tfds_class_names_come_from_the_builder():
  with tfds.testing.mock_data(num_examples=3):
    ds = load("fashion_mnist", val_size=1, cache=False, progress=False)
  assert ds.class_names[:2] == ("T-shirt/top", "Trouser") and ds.num_classes == 10


def test_tfds_records_are_cached(tmp_path, monkeypatch):
  calls = []
  real = tfds_source.read_tfds

  def counting(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)

  monkeypatch.setattr(tfds_source, "read_tfds", counting)
  with tfds.testing.mock_data(num_examples=6):
    a = load("cifar10", val_size=2, cache_dir=tmp_path, progress=False)
    b = load("cifar10", val_size=2, cache_dir=tmp_path, progress=False)
  assert len(calls) == 1
  assert len(list(tmp_path.glob("tfds-cifar10-*.npz"))) == 1
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)


def test_missing_tensorflow_for_preparation_says_so():
  error = ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
  with (
      tfds.testing.mock_data(num_examples=3),
      mock.patch(f"{_BUILDER}.download_and_prepare", side_effect=error),
      pytest.raises(RuntimeError, match=r"needs TensorFlow, which is not installed.*--data-dir"),
  ):
    load("cifar10", cache=False, progress=False)


def test_failed_download_suggests_data_dir():
  with (
      tfds.testing.mock_data(num_examples=3),
      mock.patch(
          f"{_BUILDER}.download_and_prepare", side_effect=OSError("Name or service not known")
      ),
      pytest.raises(
          RuntimeError, match=r"could not download.*Name or service.*network.*--data-dir"
      ),
  ):
    load("mnist", cache=False, progress=False)


def test_not_prepared_without_download():
  with (
      tfds.testing.mock_data(num_examples=3),
      pytest.raises(FileNotFoundError, match=r"'cifar10' is not prepared .*download=False"),
  ):
    load("cifar10", download=False, cache=False, progress=False)


def test_tfrecord_only_copy_is_explained():
  with (
      tfds.testing.mock_data(num_examples=3),
      mock.patch(f"{_BUILDER}.as_data_source", side_effect=NotImplementedError("TFRECORD")),
      pytest.raises(RuntimeError, match="not in the array_record format"),
  ):
    load("cifar10", cache=False, progress=False)


def test_tensorflow_datasets_is_imported_lazily(tmp_path):
  """Importing cnnjax.data and reading an offline copy never import TFDS (it is heavy)."""
  root = tmp_path / "cifar-10-batches-bin"
  root.mkdir()
  record = bytes([3]) + bytes(3072)
  for k in range(1, 6):
    (root / f"data_batch_{k}.bin").write_bytes(record * 2)
  code = textwrap.dedent(f"""
      import sys
      import cnnjax.data
      ds = cnnjax.data.load("cifar10", data_dir={str(root)!r}, val_size=2, cache=False)
      assert ds.train_images.shape == (8, 32, 32, 3), ds
      print("tfds" if "tensorflow_datasets" in sys.modules else "lazy")
  """)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "lazy"
