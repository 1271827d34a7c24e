"""No silent wrong answers from a run's files: every file read back is validated and named
in a one-line error (exit code 2), I/O failures are one line, the leftovers of a killed
save are removed under every name Orbax uses, and ``predict`` names (or skips) unreadable
image files.

One tiny run (a linear model on 3-class shapes, one epoch) is trained once and copied by
the tests that damage it.
"""

import errno
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from test_train_cli import TINY, _one_line

from cnnjax.cli import main
from cnnjax.train import cli as train_cli
from cnnjax.train.checkpoint import CHECKSUM_FILE, Checkpointer


def _edit_json(path, change):
  d = json.loads(path.read_text())
  change(d)
  path.write_text(json.dumps(d))


def _set(key, value):
  return lambda d: d.__setitem__(key, value)


# ------------------------------------------------------------- files read back (item 4)

NESTED = "[" * 100_000 + "]" * 100_000

_CONFIG_DAMAGE = [
    (
        '{"model": "linear",, }',
        "config.json: not valid JSON (Expecting property name "
        "enclosed in double quotes, line 1 column 20); expected a config.json written by",
    ),
    (NESTED, "config.json: nested too deeply to be read"),
    (
        '{"epochs": "3"}',
        "config.json: TrainConfig.from_dict: epochs got '3'; expected an " "integer.",
    ),
    ('{"lr": Infinity}', "config.json: TrainConfig.from_dict: lr got inf; expected a finite"),
    ("[1, 2]", "config.json: TrainConfig.from_dict: got a list; expected a JSON object"),
    (b"\xff\xfe", "config.json: not UTF-8 text (byte 0)"),
]


@pytest.mark.parametrize("text, expected", _CONFIG_DAMAGE)
@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--run", "{run}", "x.png"],
        ["eval", "--run", "{run}"],
        ["train", "--out", "{run}", "--resume", "--quiet"],
    ],
)
def test_a_damaged_config_json_is_named_in_one_line(run_copy, command, text, expected, capsys):
  path = run_copy / "config.json"
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  capsys.readouterr()
  assert main([a.format(run=run_copy) for a in command]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith(f"cnnjax {command[0]}: {run_copy}/") and expected in line, line


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            _set("std", [0.0, 1.0, 1.0]),
            "run.json: InputSpec.from_dict: std got [0.0, 1.0, 1.0]; "
            "expected 3 finite numbers in (0, 255], one per channel of input_shape [32, 32, 3].",
        ),
        (_set("std", [-1.0, 1.0, 1.0]), "std got [-1.0, 1.0, 1.0]; expected 3 finite numbers"),
        (
            _set("mean", [120.0, 110.0]),
            "run.json: InputSpec.from_dict: mean got [120.0, 110.0]; "
            "expected 3 finite numbers in [0, 255]",
        ),
        (
            _set("class_names", [{"a": 1}, {}, {}]),
            "class_names got [{'a': 1}, {}, {}]; expected a list of strings, one per class.",
        ),
        (
            _set("class_names", ["circle", "square"]),
            "run.json: class_names got 2 names for model_arguments num_classes=3; expected one "
            "name per class.",
        ),
        (_set("input_shape", [32, 32]), "input_shape got [32, 32]; expected [H, W, C]"),
        (_set("num_train", "80"), "num_train got '80'; expected a positive int."),
        (lambda d: d.pop("std"), "run.json: InputSpec.from_dict: got no std; expected"),
    ],
)
def test_a_damaged_run_json_is_named_in_one_line(run_copy, change, expected, capsys):
  _edit_json(run_copy / "run.json", change)
  capsys.readouterr()
  assert main(["predict", "--run", str(run_copy), "x.png"]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith(f"cnnjax predict: {run_copy}/run.json: ") and expected in line, line


def test_std_nan_in_run_json_is_refused_not_predicted(run_copy, capsys):
  from PIL import Image

  image = run_copy / "a.png"
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
  (run_copy / "run.json").write_text(
      (run_copy / "run.json").read_text().replace('"std": [', '"std": [NaN, ')
  )
  _edit_json(run_copy / "run.json", lambda d: d["std"].pop())
  capsys.readouterr()
  assert main(["predict", "--run", str(run_copy), str(image)]) == 2
  captured = capsys.readouterr()
  assert "nan" not in captured.out and "std got [nan, " in _one_line(captured.err)


@pytest.mark.parametrize(
    "name, damage, expected",
    [
        (
            "metrics.jsonl",
            lambda lines: [NESTED, *lines],
            "read_metrics: {path} line 1 is not a metrics record (nested too deeply",
        ),
        (
            "metrics.jsonl",
            lambda lines: ['{"epoch": 1, "train_loss": [2.0]}', *lines],
            "read_metrics: {path} line 1 is not a metrics record ('train_loss' got [2.0], not a "
            "number)",
        ),
        (
            "config_history.jsonl",
            lambda lines: ['{"epoch": 1, "config": {"lr": "big"}}', *lines],
            "read_history: {path} line 1 is not a config history entry ('config': "
            "TrainConfig.from_dict: lr got 'big'",
        ),
        (
            "config_history.jsonl",
            lambda lines: ["[" * 5000, *lines],
            "read_history: {path} line 1 is not a config history entry (nested too deeply",
        ),
    ],
)
def test_damaged_logs_stop_a_resume_in_one_line(run_copy, name, damage, expected, capsys):
  path = run_copy / name
  path.write_text("\n".join(damage(path.read_text().splitlines())) + "\n")
  capsys.readouterr()
  assert (
      main(
          [
              "train",
              "--out",
              str(run_copy),
              "--resume",
              "--epochs",
              "2",
              "--quiet",
              "--allow-schedule-change",
              "--no-plots",
          ]
      )
      == 2
  )
  line = _one_line(capsys.readouterr().err)
  assert expected.format(path=path) in line, line


def test_a_torn_history_line_is_dropped_on_resume(tmp_path):
  from cnnjax.train.config import TrainConfig, append_history, read_history, repair_history

  path = tmp_path / "config_history.jsonl"
  append_history(path, epoch=1, config=TrainConfig())
  with open(path, "a") as f:
    f.write('{"epoch": 2, "chan')  # killed while appending
  with pytest.raises(ValueError, match="line 2 is not a config history entry"):
    read_history(path)
  with pytest.warns(UserWarning, match="line 2 is torn"):
    repair_history(path)
  assert [e["epoch"] for e in read_history(path)] == [1]


def test_damaged_checksums_and_lock_files_are_no_tracebacks(run_copy, capsys):
  from cnnjax.train.lock import RunLock

  (run_copy / "checkpoints" / "1" / CHECKSUM_FILE).write_text(NESTED)
  capsys.readouterr()
  with pytest.warns(UserWarning, match="unreadable cnnjax_sha256.json .*nested too deeply"):
    assert main(["eval", "--run", str(run_copy)]) == 2
  assert "has no intact checkpoint" in _one_line(capsys.readouterr().err)
  (run_copy / ".lock").write_text("[" * 2000)  # a lock file's holder is read, not trusted
  with RunLock(run_copy) as lock:
    assert lock.stale is None


def test_train_config_from_dict_checks_json_types():
  from cnnjax.train.config import TrainConfig

  good = TrainConfig(model_options={"hidden": 3}, piecewise_boundaries=(1.0,), schedule="piecewise")
  assert TrainConfig.from_dict(json.loads(json.dumps(good.to_dict()))) == good
  for bad, expected in [
      ({"nesterov": 1}, "nesterov got 1; expected true or false"),
      ({"model": 3}, "model got 3; expected a string"),
      ({"eps": float("nan")}, "eps got nan; expected a finite number"),
      ({"seed": 1.5}, "seed got 1.5; expected an integer"),
      ({"data_dir": []}, "data_dir got []; expected a string or null"),
      ({"model_options": [1]}, "model_options got [1]; expected an object"),
      ({"piecewise_boundaries": ["1"]}, "expected a list of finite"),
  ]:
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
      TrainConfig.from_dict(bad)


# ------------------------------------------------------------- I/O failures (item 5)


def test_eval_of_a_read_only_run_prints_its_metrics_then_one_line(run_copy, capsys, monkeypatch):
  def read_only(path, mode="r", *args, **kwargs):
    if "x" in mode:
      raise OSError(errno.EROFS, "Read-only file system", path)
    return open(path, mode, *args, **kwargs)

  monkeypatch.setattr(train_cli, "open", read_only, raising=False)
  capsys.readouterr()
  assert main(["eval", "--run", str(run_copy), "--split", "val"]) == 2
  captured = capsys.readouterr()
  assert "val_accuracy" in captured.out
  assert _one_line(captured.err) == (
      f"cnnjax eval: OSError: [Errno 30] Read-only file system: " f"'{run_copy}/eval-val-none.json'"
  )


def test_a_failed_background_save_names_the_checkpoint(tmp_path, capsys, monkeypatch):
  from cnnjax.train import checkpoint

  def full(path):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpoint, "_write_checksums", full)  # on the background thread
  run = tmp_path / "run"
  assert (
      main(
          [
              "train",
              *TINY,
              "--cache-dir",
              str(tmp_path / "cache"),
              "--epochs",
              "1",
              "--no-plots",
              "--out",
              str(run),
          ]
      )
      == 2
  )
  assert _one_line(capsys.readouterr().err) == (
      f"cnnjax train: Checkpointer.save: could not write {run}/checkpoints/1: No space "
      "left on device (OSError: [Errno 28] No space left on device)."
  )


_BREAK_MID_RUN = r"""
import os, sys
from cnnjax.cli import main
from cnnjax.train import checkpoint

save = checkpoint.Checkpointer.save

def save_then_break(self, epoch, state):
  save(self, epoch, state)  # returns while Orbax writes on its threads
  if epoch == 2:  # checkpoints/ becomes a file: Orbax's background writes fail
    os.rename(self.directory, self.directory + ".moved")
    open(self.directory, "w").close()

checkpoint.Checkpointer.save = save_then_break
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_dir_unwritable_mid_run_is_one_line_and_exits(tmp_path):
  """Orbax's background threads fail: no log, traceback or 5-minute wait at exit."""
  run = tmp_path / "run"
  args = [
      "train",
      *TINY,
      "--cache-dir",
      str(tmp_path / "cache"),
      "--epochs",
      "3",
      "--no-plots",
      "--out",
      str(run),
  ]
  try:
    done = subprocess.run(
        [sys.executable, "-c", _BREAK_MID_RUN, *args], text=True, capture_output=True, timeout=120
    )
  except subprocess.TimeoutExpired:
    pytest.fail("the process hung after its checkpoint write failed")
  assert done.returncode == 2, done.stderr
  line = _one_line(done.stderr)
  assert line.startswith(
      f"cnnjax train: Checkpointer.save: could not write {run}/" "checkpoints/"
  ), line


def test_orbax_still_sends_no_signals_for_failed_work():
  """Canary of checkpoint._release_orphaned_waiters: once Orbax signals the completion of
  failed work itself, the workaround can go."""
  from orbax.checkpoint._src.futures import future, signaling_client, synchronization

  def fail():
    raise OSError(errno.ENOSPC, "No space left on device")

  signal = synchronization.HandlerAwaitableSignal.STEP_DIRECTORY_CREATION
  thread = future._SignalingThread(
      target=fail, send_signals=[signal], receive_signals=[], operation_id="cnnjax-canary"
  )
  thread.start()
  threading_join = super(future._SignalingThread, thread).join
  threading_join(timeout=30)
  key = future.AwaitableSignalsContract.get_unique_awaitable_singal_key(signal, "cnnjax-canary")
  assert (
      signaling_client.get_signaling_client().key_value_try_get(key) is None
  ), "Orbax now signals failed work: remove checkpoint._release_orphaned_waiters"


# ------------------------------------------------------------- killed saves (item 6)


def test_leftovers_of_killed_saves_go_under_every_orbax_name(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=3)
  ckpt.save(1, {"w": jnp.arange(3.0, dtype=jnp.float32)})
  ckpt.close()
  leftovers = [
      "2.orbax-checkpoint-tmp",  # this Orbax (0.12)
      "3.orbax-checkpoint-tmp-1700000000",  # earlier Orbax
      "4.partial_save.orbax-checkpoint-tmp",  # Orbax's partial saves
      "5.incomplete",
      "6.incomplete2",  # earlier cnnjax
      "7",
  ]  # a numbered directory without _CHECKPOINT_METADATA
  kept = ["1", "1.corrupt", "8.orbax-checkpoint-tmp.txt", "notes"]
  for name in leftovers + kept[1:3]:
    os.makedirs(tmp_path / name / "default")
  (tmp_path / "notes").write_text("a file, not a checkpoint")
  reader = Checkpointer(tmp_path, cleanup=False)  # a reader removes nothing
  assert reader.epochs() == [1]
  reader.close()
  assert sorted(os.listdir(tmp_path)) == sorted(leftovers + kept)
  with pytest.warns(UserWarning, match="unfinished checkpoint") as w:
    writer = Checkpointer(tmp_path, keep=3)  # what the training loop makes, under the lock
  assert sorted(os.listdir(tmp_path)) == sorted(kept)
  assert sum("unfinished checkpoint" in str(m.message) for m in w) == len(leftovers)
  assert writer.epochs() == [1] and writer.verify(1) is None
  writer.close()


# ------------------------------------------------------------- predict's files (item 7)


def test_predict_names_unreadable_files_and_can_skip_them(tiny_run, tmp_path, capsys):
  from PIL import Image

  good = tmp_path / "good.png"
  Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(good)
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not a png")
  missing = tmp_path / "missing.png"
  capsys.readouterr()
  # Without --skip-unreadable the first bad file fails the batch, named.
  assert main(["predict", "--run", str(tiny_run), str(good), str(bad)]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert _one_line(captured.err) == (
      f"cnnjax predict: {bad} (9 bytes) is corrupt or not an image "
      "(UnidentifiedImageError: cannot identify image file)."
  )
  # With it, each bad file is one line on stderr; the rest are classified; exit code 1.
  assert (
      main(
          [
              "predict",
              "--run",
              str(tiny_run),
              str(bad),
              str(good),
              str(missing),
              "--skip-unreadable",
          ]
      )
      == 1
  )
  captured = capsys.readouterr()
  assert [line.split(": ")[0] for line in captured.out.splitlines()] == [str(good)]
  assert captured.err.splitlines() == [
      f"cnnjax predict: {bad} (9 bytes) is corrupt or not an image "
      "(UnidentifiedImageError: cannot identify image file); skipped.",
      f"cnnjax predict: {missing} cannot be read (No such file or directory); skipped.",
  ]
  # Nothing readable: exit code 2.
  assert main(["predict", "--run", str(tiny_run), str(bad), "--skip-unreadable"]) == 2
  err = capsys.readouterr().err.splitlines()
  assert err[-1] == "cnnjax predict: the image file could not be read." and len(err) == 2
