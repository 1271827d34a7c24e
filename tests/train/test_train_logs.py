"""Standard logs: steps.jsonl, TensorBoard scalars, the progress bar's and the decoding
bars' conditions, curves.png with a learning-rate panel."""

import os
import shutil
import sys
import types

import numpy as np
import pytest
from test_train_loop import Flat, toy_data

from cnnjax.train.config import TrainConfig
from cnnjax.train.loop import train
from cnnjax.train.metrics import read_metrics
from cnnjax.train.optim import make_schedule

CONFIG = TrainConfig(
    model="flat",
    epochs=2,
    batch_size=16,
    eval_batch_size=32,
    lr=0.1,
    log_every=2,
    schedule="cosine",
    warmup_epochs=0.5,
)


class FakeWriter:
  """tensorboardX.SummaryWriter's interface, recording its calls."""

  made = []

  def __init__(self, logdir):
    self.logdir, self.scalars, self.closed = logdir, [], False
    FakeWriter.made.append(self)

  def add_scalar(self, tag, value, step):
    self.scalars.append((tag, float(value), int(step)))

  def flush(self):
    pass

  def close(self):
    self.closed = True


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("logs") / "run"
  fake = types.ModuleType("tensorboardX")
  fake.SummaryWriter = FakeWriter
  saved = sys.modules.get("tensorboardX")
  sys.modules["tensorboardX"] = fake
  try:
    result = train(
        CONFIG.replace(tensorboard=True), out_dir=out, dataset=toy_data(), model_fn=Flat, quiet=True
    )
  finally:
    if saved is None:
      del sys.modules["tensorboardX"]
    else:
      sys.modules["tensorboardX"] = saved
  return out, result, FakeWriter.made[-1]


def test_steps_jsonl_every_log_every_steps(logged_run):
  out, result, _ = logged_run
  steps = read_metrics(out / "steps.jsonl")
  assert [(s["step"], s["epoch"]) for s in steps] == [(2, 1), (4, 1), (6, 2), (8, 2)]
  schedule = make_schedule(CONFIG, steps_per_epoch=4)
  for s in steps:
    assert s["lr"] == pytest.approx(float(schedule(s["step"] - 1)))
    assert s["images_per_second"] > 0
  for epoch, record in enumerate(result.history, 1):  # two means of two = the epoch mean
    mean = np.mean([s["loss"] for s in steps if s["epoch"] == epoch])
    assert mean == pytest.approx(record["train_loss"], rel=1e-6)


def test_tensorboard_gets_step_and_epoch_scalars(logged_run):
  out, result, writer = logged_run
  assert writer.logdir == str(out / "tensorboard") and writer.closed
  tags = {(tag, step) for tag, _, step in writer.scalars}
  for step in (2, 4, 6, 8):
    assert {("train/loss", step), ("train/lr", step), ("train/images_per_second", step)} <= tags
  val = [(v, s) for t, v, s in writer.scalars if t == "epoch/val_accuracy"]
  assert val == [(r["val_accuracy"], r["step"]) for r in result.history]


def test_resume_rewrites_steps_after_the_checkpoint(logged_run, tmp_path):
  out, _, _ = logged_run
  copy = tmp_path / "run"
  shutil.copytree(out, copy)
  shutil.rmtree(copy / "checkpoints" / "2")
  train(
      CONFIG, out_dir=copy, dataset=toy_data(), model_fn=Flat, quiet=True, resume=True, plots=False
  )
  assert [s["step"] for s in read_metrics(copy / "steps.jsonl")] == [2, 4, 6, 8]


def test_curves_have_a_learning_rate_panel(logged_run, tmp_path):
  from PIL import Image

  from cnnjax.train.plots import plot_curves

  out, result, _ = logged_run
  with Image.open(out / "curves.png") as im:
    assert im.size == (1400, 400)  # three panels: loss, accuracy, learning rate
  one = tmp_path / "one.png"  # a 1-epoch run without step records still plots
  plot_curves(result.history[:1], one)
  assert os.path.getsize(one) > 0


def test_tensorboard_missing_is_one_line_before_any_data(tmp_path, capsys, monkeypatch):
  import cnnjax.data
  from cnnjax.cli import main

  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails
  monkeypatch.setattr(cnnjax.data, "load", lambda *a, **k: pytest.fail("data was read"))
  assert main(["train", "--tensorboard", "--out", str(tmp_path / "r")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "tensorboardX is not installed; expected pip install 'cnnjax[tensorboard]'" in err


def test_bars_only_where_they_render(monkeypatch):
  import cnnjax.data
  from cnnjax.train import progress
  from cnnjax.train.run import load_dataset

  seen = {}
  monkeypatch.setattr(cnnjax.data, "load", lambda *a, **k: seen.update(k))
  monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
  load_dataset(TrainConfig())
  assert seen["progress"] is False  # a log file gets no decoding bars
  monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
  assert not progress.show_progress()
  monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
  assert progress.show_progress()  # a notebook gets tqdm.auto's widget
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
  load_dataset(TrainConfig())
  assert seen["progress"] is True
