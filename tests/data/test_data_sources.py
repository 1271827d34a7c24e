"""``cnnjax.data.load``: format detection, checks against the name, validation split, cache."""

import inspect
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

import cnnjax.data as data
from cnnjax.data import cache as cache_lib
from cnnjax.data import dataset as dataset_lib
from cnnjax.data import image_folder
from cnnjax.data.dataset import split_validation
from cnnjax.data.sources import detect_format, load

RNG = np.random.default_rng(1)


def write_cifar10_binary(root, per_batch=4, test=3):
  """Writes a tiny cifar-10-batches-bin; returns (train images, train labels)."""
  root.mkdir(parents=True, exist_ok=True)
  n = 5 * per_batch + test
  images = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = RNG.integers(0, 10, n).astype(np.int32)
  records = [bytes([labels[i]]) + images[i].transpose(2, 0, 1).tobytes() for i in range(n)]
  for b in range(5):
    batch = records[b * per_batch : (b + 1) * per_batch]
    (root / f"data_batch_{b + 1}.bin").write_bytes(b"".join(batch))
  (root / "test_batch.bin").write_bytes(b"".join(records[5 * per_batch :]))
  return images[: 5 * per_batch], labels[: 5 * per_batch]


def png(array):
  buf = io.BytesIO()
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
  return buf.getvalue()


def folder_files(classes, per_class, shape=(32, 32, 3), splits=("train",)):
  files = {}
  for split in splits:
    for c in classes:
      for k in range(per_class):
        files[f"{split}/{c}/{k}.png"] = png(RNG.integers(0, 256, shape, dtype=np.uint8))
  return files


def write_dir(root, files):
  for rel, blob in files.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(blob)
  return root


def write_zip(path, files):
  with zipfile.ZipFile(path, "w") as z:
    for rel, blob in files.items():
      z.writestr(rel, blob)
  return path


CIFAR_CLASSES = list(data.CIFAR10_CLASSES)


# ----------------------------------------------------------------------------- detection


def test_detect_format(tmp_path):
  write_cifar10_binary(tmp_path / "parent" / "cifar-10-batches-bin")
  assert detect_format(tmp_path / "parent" / "cifar-10-batches-bin") == (
      "cifar10-binary",
      tmp_path / "parent" / "cifar-10-batches-bin",
  )
  # The extracted tarball's parent directory works too, given the name.
  assert detect_format(tmp_path / "parent", name="cifar10")[0] == "cifar10-binary"
  py = tmp_path / "py"
  py.mkdir()
  (py / "batches.meta").write_bytes(pickle.dumps({b"label_names": []}))
  assert detect_format(py)[0] == "cifar10-python"
  files = folder_files(["a"], 1, shape=(4, 4, 3))
  assert detect_format(write_dir(tmp_path / "f", files))[0] == "image-folder"
  assert detect_format(write_zip(tmp_path / "f.zip", files))[0] == "image-folder"
  (tmp_path / "tfdsdir" / "cifar10" / "3.0.2").mkdir(parents=True)
  assert detect_format(tmp_path / "tfdsdir", name="cifar10")[0] == "tfds"


def test_detect_format_errors_list_the_layouts(tmp_path):
  match = r"data_dir got .*nope.*does not exist; expected .*cifar-10-batches-bin"
  with pytest.raises(FileNotFoundError, match=match):
    detect_format(tmp_path / "nope")
  (tmp_path / "readme.txt").write_text("x")
  with pytest.raises(
      FileNotFoundError, match=r"holds \['readme.txt'\]; expected a CIFAR binary release"
  ):
    detect_format(tmp_path)


# ----------------------------------------------------------------------------- load


def test_load_cifar10_binary_with_validation_split(tmp_path):
  images, labels = write_cifar10_binary(tmp_path / "cifar-10-batches-bin")
  ds = load("cifar10", data_dir=tmp_path, val_size=6, seed=3, cache=False)
  assert ds.name == "cifar10" and ds.class_names == tuple(CIFAR_CLASSES)
  assert ds.train_images.shape == (14, 32, 32, 3) and ds.val_images.shape == (6, 32, 32, 3)
  assert ds.test_images.shape == (3, 32, 32, 3) and ds.has_test
  assert ds.train_labels.dtype == np.int32
  # The documented split: the first val_size of default_rng(seed).permutation(N), order kept.
  held = np.sort(np.random.default_rng(3).permutation(20)[:6])
  kept = np.setdiff1d(np.arange(20), held)
  np.testing.assert_array_equal(ds.val_images, images[held])
  np.testing.assert_array_equal(ds.val_labels, labels[held])
  np.testing.assert_array_equal(ds.train_images, images[kept])
  assert "train=14, val=6, test=3" in repr(ds)


def test_validation_split_is_deterministic_and_seeded():
  x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
  y = np.arange(100, dtype=np.int32)
  a = split_validation(x, y, val_size=10, seed=0)
  b = split_validation(x, y, val_size=10, seed=0)
  c = split_validation(x, y, val_size=10, seed=1)
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[3], c[3])
  assert sorted(a[1].tolist() + a[3].tolist()) == list(range(100))  # a partition
  assert np.all(np.diff(a[1]) > 0) and np.all(np.diff(a[3]) > 0)  # source order kept
  np.testing.assert_array_equal(a[0][:, 0, 0, 0], a[1])  # images follow their labels
  for bad in (100, -1, 2.5, True):
    with pytest.raises(ValueError, match=f"val_size got {bad!r}"):
      split_validation(x, y, val_size=bad, seed=0)


def test_load_image_folder_zip_as_cifar10_without_test(tmp_path):
  path = write_zip(tmp_path / "c.zip", folder_files(CIFAR_CLASSES, 2))
  ds = load("cifar10", data_dir=path, val_size=5, cache=False, progress=False)
  assert ds.test_images is None and ds.test_labels is None and not ds.has_test
  assert len(ds.train_labels) == 15 and len(ds.val_labels) == 5
  assert ds.class_names == tuple(CIFAR_CLASSES)


def test_load_folder_defaults_and_class_names(tmp_path):
  files = folder_files(["x", "y"], 10, shape=(5, 7, 1), splits=("train", "test"))
  root = write_dir(tmp_path / "f", files)
  ds = load("folder", data_dir=root, cache=False, progress=False)
  assert ds.image_shape == (5, 7, 1) and ds.val_images.shape[0] == 2  # 10% of 20
  assert ds.test_images.shape == (20, 5, 7, 1)
  ds = load("folder", data_dir=root, class_names=["y", "x"], cache=False, progress=False)
  assert ds.class_names == ("y", "x")


def test_load_reports_unexpected_size_channels_and_classes(tmp_path):
  small = write_zip(tmp_path / "s.zip", folder_files(CIFAR_CLASSES, 1, shape=(28, 28, 3)))
  with pytest.raises(ValueError, match=r"unexpected image size 28×28 \(expected 32×32\)"):
    load("cifar10", data_dir=small, cache=False, progress=False)
  gray = write_zip(tmp_path / "g.zip", folder_files(CIFAR_CLASSES, 1, shape=(32, 32, 1)))
  with pytest.raises(ValueError, match=r"unexpected channel count 1 \(expected 3\)"):
    load("cifar10", data_dir=gray, cache=False, progress=False)
  three = write_zip(tmp_path / "t.zip", folder_files(["a", "b", "c"], 2))
  with pytest.raises(
      ValueError, match=r"has 3 classes \['a', 'b', 'c'\]; expected 10 for name='cifar10'"
  ):
    load("cifar10", data_dir=three, cache=False, progress=False)
  with pytest.raises(ValueError, match=r"unexpected channel count 3 \(expected 1\)"):
    load("mnist", data_dir=small, cache=False, progress=False)


def test_load_release_of_another_dataset(tmp_path):
  write_cifar10_binary(tmp_path)
  with pytest.raises(ValueError, match=r"holds the cifar10-binary release but name got 'cifar100'"):
    load("cifar100", data_dir=tmp_path, cache=False)


def test_load_argument_errors(tmp_path):
  with pytest.raises(ValueError, match=r"name got 'imagenet'; expected one of"):
    load("imagenet")
  with pytest.raises(ValueError, match="num_train got 10; it applies to name='shapes' only"):
    load("cifar10", num_train=10)
  with pytest.raises(ValueError, match="num_classes got 3"):
    load("mnist", num_classes=3)
  with pytest.raises(ValueError, match="data_dir got .*reads no files"):
    load("shapes", data_dir=tmp_path)
  with pytest.raises(ValueError, match="class_names got"):
    load("shapes", class_names=["a"])
  with pytest.raises(ValueError, match="data_dir got None; name='folder' needs a data_dir"):
    load("folder")
  with pytest.raises(ValueError, match=r"val_size got 600; expected an int in \[0, 600\)"):
    load("shapes", num_train=600, num_test=10, val_size=600, cache=False)
  with pytest.raises(FileNotFoundError, match="does not exist; expected"):
    load("cifar10", data_dir=tmp_path / "missing", cache=False)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_skips_decoding_and_changes_invalidate(tmp_path, monkeypatch):
  files = folder_files(["a", "b"], 3, shape=(6, 6, 3), splits=("train", "test"))
  root = write_dir(tmp_path / "f", files)
  calls = []
  real = image_folder.decode_image

  def counting(blob, **kwargs):
    calls.append(kwargs["name"])
    return real(blob, **kwargs)

  monkeypatch.setattr(image_folder, "decode_image", counting)
  cache_dir = tmp_path / "cache"
  first = load("folder", data_dir=root, cache_dir=cache_dir, val_size=1, progress=False)
  assert len(calls) == 13  # 12 images + the first one, decoded once more for its shape
  entries = sorted(p.name for p in cache_dir.iterdir())
  assert len(entries) == 1 and entries[0].startswith("folder-f-") and entries[0].endswith(".npz")
  calls.clear()
  second = load("folder", data_dir=root, cache_dir=cache_dir, val_size=2, seed=5, progress=False)
  assert calls == []  # served from the cache
  for split in ("train", "val", "test"):
    assert getattr(second, f"{split}_images").dtype == np.uint8
  np.testing.assert_array_equal(second.test_images, first.test_images)
  np.testing.assert_array_equal(
      np.sort(np.concatenate([second.train_labels, second.val_labels])),
      np.sort(np.concatenate([first.train_labels, first.val_labels])),
  )
  assert second.class_names == ("a", "b")
  # Touching a source file changes the key: decoded again, a second entry.
  path = root / "train" / "a" / "0.png"
  os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
  load("folder", data_dir=root, cache_dir=cache_dir, progress=False)
  assert len(calls) == 13
  assert len(list(cache_dir.glob("*.npz"))) == 2
  assert not list(cache_dir.glob("*.tmp"))  # atomic writes leave no temporaries
  # cache=False never reads nor writes.
  calls.clear()
  load("folder", data_dir=root, cache=False, progress=False)
  assert len(calls) == 13 and len(list(cache_dir.glob("*.npz"))) == 2


def test_corrupt_cache_entry_is_ignored(tmp_path):
  arrays = {"x": np.arange(5)}
  path = cache_lib.write_entry(tmp_path, "lbl", "k1", arrays)
  np.testing.assert_array_equal(cache_lib.read_entry(tmp_path, "lbl", "k1")["x"], arrays["x"])
  path.write_bytes(path.read_bytes()[:20])
  with pytest.warns(UserWarning, match="ignoring the unreadable cache entry"):
    assert cache_lib.read_entry(tmp_path, "lbl", "k1") is None
  with pytest.warns(UserWarning):
    out = cache_lib.cached_arrays(lambda: arrays, cache_dir=tmp_path, label="lbl", key="k1")
  np.testing.assert_array_equal(out["x"], arrays["x"])
  np.testing.assert_array_equal(cache_lib.read_entry(tmp_path, "lbl", "k1")["x"], arrays["x"])


def _wrong_label(a):
  a["train_labels"] = a["train_labels"].copy()
  a["train_labels"][-1] = 7  # 2 classes


def _wrong_shape(a):
  a["train_images"] = a["train_images"][:, :4]


def _wrong_dtype(a):
  a["test_images"] = a["test_images"].astype(np.float32)


def _wrong_length(a):
  a["train_labels"] = a["train_labels"][:-1]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_wrong_label, r"train_labels hold 7, outside \[0, 2\)"),
        # (a "folder" has no expected shape: train sets it, test must match)
        (_wrong_shape, r"test_images have shape \(6, 6, 3\), expected \(4, 6, 3\)"),
        (_wrong_dtype, r"test_images are float32"),
        (_wrong_length, r"5 train_labels for 6 train_images"),
    ],
)
def test_cache_entry_with_wrong_contents_is_rebuilt(tmp_path, damage, reason):
  root = write_dir(
      tmp_path / "f", folder_files(["a", "b"], 3, shape=(6, 6, 3), splits=("train", "test"))
  )
  cache_dir = tmp_path / "cache"
  first = load("folder", data_dir=root, cache_dir=cache_dir, val_size=1, progress=False)
  (entry,) = cache_dir.glob("*.npz")
  with np.load(entry) as f:
    arrays = dict(f)
  damage(arrays)
  np.savez(entry, **arrays)  # a valid .npz with the wrong contents
  with pytest.warns(UserWarning, match=rf"with wrong contents \({reason}"):
    again = load("folder", data_dir=root, cache_dir=cache_dir, val_size=1, progress=False)
  for split in ("train", "val", "test"):
    for part in ("images", "labels"):
      np.testing.assert_array_equal(
          getattr(again, f"{split}_{part}"), getattr(first, f"{split}_{part}")
      )
  with np.load(entry) as f:  # rewritten: the next load reads it without a warning
    assert dataset_lib.check_raw_arrays(dict(f)) is None


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("CNNJAX_CACHE", str(tmp_path / "c"))
  assert cache_lib.default_cache_dir() == tmp_path / "c"
  monkeypatch.delenv("CNNJAX_CACHE")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cache_lib.default_cache_dir() == tmp_path / "xdg" / "cnnjax"


def test_cache_key_depends_on_every_part():
  assert cache_lib.cache_key("a", [1, 2]) == cache_lib.cache_key("a", [1, 2])
  assert cache_lib.cache_key("a", [1, 2]) != cache_lib.cache_key("a", [1, 3])


# ----------------------------------------------------------------------------- API


def test_optional_arguments_are_keyword_only():
  for name in data.__all__:
    fn = getattr(data, name)
    if not inspect.isfunction(fn):
      continue
    for p in inspect.signature(fn).parameters.values():
      if p.default is not inspect.Parameter.empty:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({p.name}) is positional"
