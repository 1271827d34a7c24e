"""Portable runs: a run directory alone (moved, its data cache gone) gives the model,
``cnnjax predict`` and ``cnnjax eval``; ``build_run`` is the one builder."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import cnnjax.data
from cnnjax.cli import main
from cnnjax.data import pipeline
from cnnjax.train import TrainConfig, build_run, load_model
from cnnjax.train.metrics import read_metrics
from cnnjax.train.rundir import absolute_paths

SHAPES = [
    "--model",
    "seed-cnn",
    "--data",
    "shapes",
    "--data-option",
    "num_train=160",
    "--data-option",
    "num_test=40",
    "--data-option",
    "num_classes=3",
    "--val-size",
    "40",
    "--batch-size",
    "40",
    "--eval-batch-size",
    "40",
    "--epochs",
    "1",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
  """A seed-cnn run on shapes, trained with a relative --cache-dir, then moved away."""
  root = tmp_path_factory.mktemp("portable")
  cwd = os.getcwd()
  os.chdir(root)
  try:
    assert main(["train", *SHAPES, "--cache-dir", "cache", "--out", "a"]) == 0
  finally:
    os.chdir(cwd)
  config = TrainConfig.load(root / "a" / "config.json")
  dataset = cnnjax.data.load(
      "shapes", seed=0, val_size=40, num_train=160, num_test=40, num_classes=3
  )
  records = read_metrics(root / "a" / "metrics.jsonl")
  shutil.move(root / "a", root / "elsewhere" / "b")
  shutil.rmtree(root / "cache", ignore_errors=True)
  return root / "elsewhere" / "b", config, dataset, records


def test_run_json_holds_what_the_model_needs(moved_run):
  run_dir, config, dataset, _ = moved_run
  assert config.cache_dir == str(run_dir.parent.parent / "cache")  # stored absolute
  info = json.loads((run_dir / "run.json").read_text())
  assert info["class_names"] == ["circle", "square", "triangle"]
  assert info["input_shape"] == [32, 32, 3] and info["num_train"] == 120
  mean, std = pipeline.channel_stats(dataset.train_images)
  np.testing.assert_allclose(info["mean"], mean, rtol=1e-6)
  np.testing.assert_allclose(info["std"], std, rtol=1e-6)
  assert info["model_arguments"] == {"num_classes": 3, "input_shape": [32, 32, 3]}
  assert info["platform"]["platform"] == jax.devices()[0].platform


def test_load_model_reads_no_data(moved_run, monkeypatch):
  run_dir, _, dataset, records = moved_run

  def no_data(*args, **kwargs):
    raise AssertionError("load_model read the dataset")

  monkeypatch.setattr(cnnjax.data, "load", no_data)
  model = load_model(run_dir)
  assert model.class_names == ("circle", "square", "triangle")
  logits = model(dataset.val_images)
  assert logits.shape == (40, 3)
  accuracy = float(np.mean(np.argmax(logits, -1) == dataset.val_labels))
  assert accuracy == pytest.approx(records[-1]["val_accuracy"])
  as_float = model(dataset.val_images.astype(np.float32) / 255)
  np.testing.assert_allclose(as_float, logits, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match=r"images got shape \(2, 28, 28, 3\); expected \[N, 32"):
    model(np.zeros((2, 28, 28, 3), np.uint8))
  with pytest.raises(ValueError, match="images got dtype int32; expected uint8"):
    model(np.zeros((2, 32, 32, 3), np.int32))


def test_predict_and_eval_of_the_moved_run(moved_run, tmp_path, capsys):
  from PIL import Image

  run_dir, _, dataset, records = moved_run
  paths = []
  for i, size in enumerate((32, 48)):  # the second is resized to 32x32
    path = tmp_path / f"img{i}.png"
    Image.fromarray(dataset.val_images[i]).resize((size, size)).save(path)
    paths.append(str(path))
  capsys.readouterr()
  assert main(["predict", "--run", str(run_dir), *paths, "--top-k", "2"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2
  names = ("circle", "square", "triangle")
  for path, line in zip(paths, lines, strict=True):
    head, rest = line.split(": ", 1)
    pairs = [p.rsplit(" ", 1) for p in rest.split(", ")]
    assert head == path and len(pairs) == 2 and all(n in names for n, _ in pairs)
    probs = [float(p) for _, p in pairs]
    assert probs[0] >= probs[1] and 0 < sum(probs) <= 1 + 1e-6
  logits = load_model(run_dir)(dataset.val_images[:1])
  assert lines[0].split(": ")[1].split(" ")[0] == names[int(np.argmax(logits))]
  assert main(["predict", "--run", str(run_dir), paths[0], "--top-k", "0"]) == 2
  assert "top_k got 0" in capsys.readouterr().err
  # eval regenerates the built-in data and normalises with the saved statistics.
  assert main(["eval", "--run", str(run_dir), "--split", "val"]) == 0
  assert "val_accuracy" in capsys.readouterr().out
  saved = [f for f in os.listdir(run_dir) if f.startswith("eval")]
  with open(run_dir / saved[0]) as f:
    assert json.load(f)["val_accuracy"] == pytest.approx(records[-1]["val_accuracy"])


def test_build_run_from_a_spec_reads_no_data(moved_run, monkeypatch):
  from cnnjax.train.rundir import read_run_info

  run_dir, config, _, _ = moved_run
  monkeypatch.setattr(cnnjax.data, "load", lambda *a, **k: 1 / 0)
  run = build_run(config, spec=read_run_info(str(run_dir)))
  assert run.dataset is None and run.arrays is None
  assert run.steps_per_epoch == 3 and run.spec.num_train == 120


def test_absolute_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = absolute_paths(TrainConfig(data="folder", data_dir="data/x.zip", cache_dir="~/c"))
  assert config.data_dir == str(tmp_path / "data" / "x.zip")
  assert config.cache_dir == os.path.expanduser("~/c")
  assert absolute_paths(TrainConfig()) == TrainConfig()
