"""Image folders (directory and zip, PNG and JPEG) written in tmp_path with Pillow."""

import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import image_folder
from cnnjax.data.image_folder import decode_image, is_image_folder, read_image_folder

RNG = np.random.default_rng(0)


def _encode(array, fmt):
  buf = io.BytesIO()
  img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  return buf.getvalue()


def make_files(layout, *, shape=(8, 8, 3), fmt="PNG", smooth=False):
  """{relative path: encoded bytes} and {split: (images, labels)} in class-sorted order.

  ``layout`` maps split -> {class: count}.
  """
  files, truth = {}, {}
  ext = ".png" if fmt == "PNG" else ".jpg"
  classes = sorted({c for per in layout.values() for c in per})
  for split, per in layout.items():
    images, labels = [], []
    for c in sorted(per):
      for k in range(per[c]):
        if smooth:  # JPEG-friendly: a flat colour
          colour = RNG.integers(0, 256, (1, 1, shape[2]), dtype=np.uint8)
          img = np.broadcast_to(colour, shape).copy()
        else:
          img = RNG.integers(0, 256, shape, dtype=np.uint8)
        files[f"{split}/{c}/{k:04d}{ext}"] = _encode(img, fmt)
        images.append(img)
        labels.append(classes.index(c))
    truth[split] = (np.stack(images), np.array(labels, np.int32))
  return files, truth


def write_dir(root, files):
  for rel, data in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
  return root


def write_zip(path, files, prefix=""):
  with zipfile.ZipFile(path, "w") as z:
    for rel, data in files.items():
      z.writestr(prefix + rel, data)
  return path


LAYOUT = {"train": {"cat": 3, "ant": 2, "dog": 2}, "test": {"ant": 1, "dog": 2}}


def test_png_directory_round_trip(tmp_path):
  files, truth = make_files(LAYOUT)
  root = write_dir(tmp_path / "folder", files)
  (root / "train" / "cat" / "notes.txt").write_text("ignored")
  (root / "train" / ".DS_Store").write_bytes(b"\0")
  assert is_image_folder(root)
  raw = read_image_folder(root, progress=False)
  assert raw.class_names == ("ant", "cat", "dog")
  np.testing.assert_array_equal(raw.train_images, truth["train"][0])
  np.testing.assert_array_equal(raw.train_labels, truth["train"][1])
  np.testing.assert_array_equal(raw.test_images, truth["test"][0])
  np.testing.assert_array_equal(raw.test_labels, truth["test"][1])
  assert raw.train_images.dtype == np.uint8 and raw.train_labels.dtype == np.int32


def test_jpeg_zip_with_wrapping_folder_and_no_test(tmp_path):
  files, truth = make_files({"train": {"a": 2, "b": 3}}, fmt="JPEG", smooth=True)
  path = write_zip(tmp_path / "data.zip", files, prefix="mydata/")
  assert is_image_folder(path)
  raw = read_image_folder(path, progress=False)
  assert raw.test_images is None and raw.test_labels is None
  assert raw.train_images.shape == (5, 8, 8, 3)
  # JPEG is lossy: flat colours come back within a few levels.
  diff = np.abs(raw.train_images.astype(int) - truth["train"][0].astype(int))
  assert diff.max() <= 4, diff.max()
  np.testing.assert_array_equal(raw.train_labels, [0, 0, 1, 1, 1])


def test_zip_matches_directory_and_mixed_formats(tmp_path):
  png, _ = make_files({"train": {"a": 2}}, fmt="PNG")
  jpg, _ = make_files({"train": {"b": 2}}, fmt="JPEG", smooth=True)
  files = {**png, **jpg}
  a = read_image_folder(write_dir(tmp_path / "d", files), progress=False)
  b = read_image_folder(write_zip(tmp_path / "z.zip", files), progress=False)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.train_labels, b.train_labels)
  assert a.class_names == b.class_names == ("a", "b")


def test_class_names_set_the_label_order(tmp_path):
  files, truth = make_files(LAYOUT)
  root = write_dir(tmp_path, files)
  raw = read_image_folder(root, class_names=["dog", "cat", "ant", "eel"], progress=False)
  assert raw.class_names == ("dog", "cat", "ant", "eel")
  # Labels follow the given order; examples are grouped by label.
  assert raw.train_labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
  np.testing.assert_array_equal(raw.train_images[:2], truth["train"][0][5:])
  with pytest.raises(ValueError, match=r"class folders \['dog'\] that are not in class_names"):
    read_image_folder(root, class_names=["ant", "cat"], progress=False)


def test_test_class_missing_from_train(tmp_path):
  files, _ = make_files({"train": {"a": 1}, "test": {"b": 1}})
  with pytest.raises(ValueError, match=r"test/ has class folders \['b'\]"):
    read_image_folder(write_dir(tmp_path, files), progress=False)


def test_grayscale_gives_one_channel(tmp_path):
  files, truth = make_files({"train": {"a": 2}}, shape=(6, 5, 1))
  raw = read_image_folder(write_dir(tmp_path, files), progress=False)
  assert raw.train_images.shape == (2, 6, 5, 1)
  np.testing.assert_array_equal(raw.train_images, truth["train"][0])


def test_image_size_mismatch_is_named(tmp_path):
  files, _ = make_files({"train": {"a": 2}})
  files["train/b/odd.png"] = _encode(RNG.integers(0, 256, (9, 8, 3), dtype=np.uint8), "PNG")
  with pytest.raises(
      ValueError, match=r"odd\.png has shape \(9, 8, 3\).*unexpected image size 9×8"
  ):
    read_image_folder(write_dir(tmp_path, files), progress=False)


def test_channel_mismatch_is_named(tmp_path):
  files, _ = make_files({"train": {"a": 2}})
  files["train/b/gray.png"] = _encode(RNG.integers(0, 256, (8, 8, 1), dtype=np.uint8), "PNG")
  with pytest.raises(ValueError, match=r"gray\.png.*unexpected channel count 1 \(expected 3\)"):
    read_image_folder(write_zip(tmp_path / "x.zip", files), progress=False)


def test_expected_image_shape(tmp_path):
  files, _ = make_files({"train": {"a": 2}})
  with pytest.raises(ValueError, match=r"unexpected image size 8×8 \(expected 32×32\)"):
    read_image_folder(write_dir(tmp_path, files), image_shape=(32, 32, 3), progress=False)


def test_corrupt_image_is_named(tmp_path):
  files, _ = make_files({"train": {"a": 2}})
  files["train/a/broken.png"] = files["train/a/0000.png"][:30]
  with pytest.raises(ValueError, match=r"broken\.png \(30 bytes\) is corrupt"):
    read_image_folder(write_zip(tmp_path / "x.zip", files), progress=False)
  with pytest.raises(ValueError, match="is corrupt or not an image"):
    decode_image(b"not an image at all")


def test_missing_train_lists_expected_layout(tmp_path):
  files, _ = make_files({"test": {"a": 1}})
  match = r"no images at .*train/<class>/<image>.*found top-level entries \['test'\]"
  with pytest.raises(FileNotFoundError, match=match):
    read_image_folder(write_dir(tmp_path, files), progress=False)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    read_image_folder(tmp_path / "nope", progress=False)


def test_images_outside_class_folders(tmp_path):
  files, _ = make_files({"train": {"a": 1}})
  files["train/loose.png"] = files["train/a/0000.png"]
  with pytest.raises(ValueError, match=r"'train/loose\.png' is not at <split>/<class>/<image>"):
    read_image_folder(write_dir(tmp_path, files), progress=False)


def test_not_a_zip(tmp_path):
  path = tmp_path / "fake.zip"
  path.write_bytes(b"PK\x03\x04 garbage")
  assert not is_image_folder(path)
  with pytest.raises(ValueError, match="fake.zip is not a readable zip"):
    read_image_folder(path, progress=False)


def test_parallel_decoding_matches_serial(tmp_path, monkeypatch):
  files, truth = make_files({"train": {"a": 5, "b": 4}, "test": {"a": 3}})
  path = write_zip(tmp_path / "p.zip", files)
  monkeypatch.setattr(image_folder, "_CHUNK", 2)  # several chunks over 2 threads
  raw = read_image_folder(path, num_workers=2, progress=False)
  np.testing.assert_array_equal(raw.train_images, truth["train"][0])
  np.testing.assert_array_equal(raw.test_images, truth["test"][0])
  np.testing.assert_array_equal(raw.train_labels, truth["train"][1])
  with pytest.raises(ValueError, match="num_workers got 0"):
    read_image_folder(path, num_workers=0, progress=False)


@pytest.mark.parametrize("as_zip", [False, True])
def test_empty_class_folder_is_refused_unless_class_names_keep_it(tmp_path, as_zip):
  files, truth = make_files({"train": {"a": 2, "c": 2}})
  files["train/b/notes.txt"] = b"no images here"  # b: a class folder without images
  if as_zip:
    source = write_zip(tmp_path / "d.zip", files, prefix="wrap/")
    with zipfile.ZipFile(source, "a") as z:
      z.writestr("wrap/train/d/", b"")  # an explicit empty directory entry
  else:
    source = write_dir(tmp_path / "d", files)
    (source / "train" / "d").mkdir()
  with pytest.raises(
      ValueError, match=re.escape("train/ has class folders without images " "['b', 'd']")
  ):
    read_image_folder(source, progress=False)
  raw = read_image_folder(source, class_names=["a", "b", "c", "d"], progress=False)
  assert raw.class_names == ("a", "b", "c", "d")
  np.testing.assert_array_equal(raw.train_labels, [0, 0, 2, 2])  # c keeps label 2
  np.testing.assert_array_equal(raw.train_images, truth["train"][0])
