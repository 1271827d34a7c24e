"""``cnnjax train/eval/search``: documented flags, a tiny run, resume, eval and search."""

import json
import os
import pathlib

import pytest

from cnnjax.cli import main
from cnnjax.train.cli import _FLAGS
from cnnjax.train.config import TrainConfig
from cnnjax.train.metrics import read_metrics

TINY = [
    "--model",
    "linear",
    "--data",
    "shapes",
    "--data-option",
    "num_train=120",
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
    "--quiet",
]


@pytest.mark.parametrize("command", ["train", "search"])
def test_help_documents_every_flag_and_default(command, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main([command, "--help"])
  assert exit_info.value.code == 0
  text = " ".join(capsys.readouterr().out.split())
  for name, kwargs, _ in _FLAGS:
    assert kwargs.get("flag", "--" + name.replace("_", "-")) in text, name
  assert text.count("(default:") >= len(_FLAGS) + 2
  for flag in (["--out", "--resume"] if command == "train" else ["--trials", "--space"]):
    assert flag in text


def test_eval_help(capsys):
  with pytest.raises(SystemExit):
    main(["eval", "--help"])
  text = capsys.readouterr().out
  assert "--run" in text and "--split" in text and "default" in text


def test_bad_flag_value_exits_with_a_message(tmp_path, capsys):
  assert main(["train", "--lr", "-1", "--out", str(tmp_path / "r"), "--quiet"]) == 2
  assert "lr" in capsys.readouterr().err
  assert main(["train", "--resume", "--quiet"]) == 2
  assert "--out" in capsys.readouterr().err


def test_train_resume_and_eval(run_copy, tmp_path, capsys):
  run = str(run_copy)  # `train *TINY --epochs 1 --no-plots`
  records = read_metrics(os.path.join(run, "metrics.jsonl"))
  assert len(records) == 1 and 0.0 <= records[0]["test_accuracy"] <= 1.0
  # A longer cosine schedule would make the rate jump where the run resumes: refused.
  capsys.readouterr()
  assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet"]) == 2
  line = _one_line(capsys.readouterr().err)
  assert (
      "epochs 1 -> 2, which changes the cosine schedule's length from 2 to 4 steps: at "
      "step 2 the learning rate would go from 0 to 0.025" in line
  ), line
  assert "--allow-schedule-change" in line
  assert TrainConfig.load(os.path.join(run, "config.json")).epochs == 1
  # --resume keeps the saved config (linear on 3-class shapes) and changes only --epochs.
  assert (
      main(
          ["train", "--out", run, "--resume", "--epochs", "2", "--quiet", "--allow-schedule-change"]
      )
      == 0
  )
  config = TrainConfig.load(os.path.join(run, "config.json"))
  assert (config.model, config.epochs, config.data_options["num_classes"]) == ("linear", 2, 3)
  records = read_metrics(os.path.join(run, "metrics.jsonl"))
  assert [r["epoch"] for r in records] == [1, 2]
  assert os.path.exists(os.path.join(run, "curves.png"))
  capsys.readouterr()
  assert main(["eval", "--run", run]) == 0
  out = capsys.readouterr().out
  assert "val_accuracy" in out and "test_accuracy" in out
  for split in ("val", "test"):
    with open(os.path.join(run, f"eval-{split}-none.json")) as f:
      result = json.load(f)
    assert result["epoch"] == 2 and result["tta"] == "none"
    assert set(result) == {"epoch", "tta", f"{split}_loss", f"{split}_accuracy"}
    assert result[f"{split}_accuracy"] == pytest.approx(records[-1][f"{split}_accuracy"])
  # Nothing is overwritten: another call, another file; another TTA, its own name.
  assert main(["eval", "--run", run, "--split", "val"]) == 0
  assert main(["eval", "--run", run, "--split", "val", "--tta", "flip"]) == 0
  names = sorted(n for n in os.listdir(run) if n.startswith("eval"))
  assert names == [
      "eval-test-none.json",
      "eval-val-flip.json",
      "eval-val-none-2.json",
      "eval-val-none.json",
  ]
  assert main(["eval", "--run", str(tmp_path)]) == 2  # not a run directory


def test_search_writes_table_and_best_config(tmp_path, capsys):
  out = str(tmp_path / "search")
  args = [
      "search",
      *TINY,
      "--cache-dir",
      str(tmp_path / "cache"),
      "--trials",
      "2",
      "--trial-epochs",
      "1",
      "--space",
      "lr=1e-3:1e-1",
      "--out",
      out,
  ]
  assert main(args) == 0
  rows = [
      json.loads(line)
      for line in pathlib.Path(os.path.join(out, "results.jsonl")).read_text().splitlines()
  ]
  assert [r["trial"] for r in rows] == [0, 1]
  assert all(1e-3 <= r["params"]["lr"] <= 1e-1 for r in rows)
  table = pathlib.Path(os.path.join(out, "results.md")).read_text()
  assert table.count("\n") == 4  # header, rule, two trials
  best = TrainConfig.load(os.path.join(out, "best_config.json"))
  best_row = max(rows, key=lambda r: r["val_accuracy"])
  assert best.lr == pytest.approx(best_row["params"]["lr"]) and best.model == "linear"
  with pytest.raises(SystemExit) as exit_info:
    main(["search", *TINY, "--space", "lr=0.1", "--out", out])
  assert exit_info.value.code == 2
  assert "FIELD=LO:HI" in capsys.readouterr().err


def _one_line(err: str) -> str:
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  return lines[0]


def test_resume_refuses_a_new_seed_and_names_model_or_optimizer_changes(run_copy, capsys):
  run = str(run_copy)  # linear, sgd, seed 0, one epoch
  saved = pathlib.Path(os.path.join(run, "config.json")).read_text()
  capsys.readouterr()
  for flags, expected in [
      (["--model", "mlp"], "changes model: 'linear' -> 'mlp'; expected the run's model"),
      (["--optimizer", "adam"], "changes optimizer: 'sgd' -> 'adam'; expected"),
      (["--seed", "3"], "seed got 3 with resume=True"),
  ]:
    assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet", *flags]) == 2
    line = _one_line(capsys.readouterr().err)
    assert expected in line, line
    assert "PyTreeDef" not in line and "Tree" not in line
  assert pathlib.Path(os.path.join(run, "config.json")).read_text() == saved


def _cifar_python_with_a_bad_pickle(root):
  os.makedirs(root)
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
    with open(os.path.join(root, name), "wb") as f:
      f.write(b"\x80\x02}q\x00(X\x04\x00\x00\x00datatruncated")


def test_known_failures_are_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
  import errno

  from cnnjax.train import metrics

  base = ["train", *TINY, "--cache-dir", str(tmp_path / "cache"), "--epochs", "1", "--no-plots"]
  # An unreadable pickle (the CIFAR Python release).
  bad = str(tmp_path / "cifar-10-batches-py")
  _cifar_python_with_a_bad_pickle(bad)
  args = ["train", "--data", "cifar10", "--data-dir", bad, "--out", str(tmp_path / "a")]
  assert main(args) == 2
  assert _one_line(capsys.readouterr().err).startswith("cnnjax train: UnpicklingError: ")
  assert main([*args, "--debug"]) == 2  # the same, with the traceback before it
  err = capsys.readouterr().err
  assert err.startswith("Traceback") and "UnpicklingError" in err.splitlines()[-1]
  # An --out that cannot be created (a file in the way; read-only directories look alike).
  open(tmp_path / "file", "w").close()
  assert main([*base, "--out", str(tmp_path / "file" / "run")]) == 2
  assert "NotADirectoryError" in _one_line(capsys.readouterr().err)

  # A full disk while the metrics are written.
  def full(self, record):
    raise OSError(errno.ENOSPC, "No space left on device", self.path)

  monkeypatch.setattr(metrics.MetricsLog, "append", full)
  assert main([*base, "--out", str(tmp_path / "b")]) == 2
  assert "OSError: [Errno 28] No space left on device" in _one_line(capsys.readouterr().err)
  monkeypatch.undo()
  # Incomplete multi-process flags (--distributed alone: tests/train/test_train_multiprocess.py).
  assert main([*base, "--num-processes", "2", "--out", str(tmp_path / "c")]) == 2
  assert "without coordinator_address, process_id" in _one_line(capsys.readouterr().err)


def test_a_second_writer_and_orbax_errors_are_one_line(run_copy, capsys):
  import subprocess
  import sys

  from cnnjax.train.checkpoint import CHECKSUM_FILE

  run = str(run_copy)
  capsys.readouterr()
  # Another process holds the run.
  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import sys, time; from cnnjax.train.lock import RunLock; "
          "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
          run,
      ],
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "locked"
    assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"is being written by process {holder.pid} on " in line, line
  finally:
    holder.kill()
    holder.wait()
  # A checkpoint written before checksums existed is read unverified: Orbax's own error.
  os.remove(os.path.join(run, "checkpoints", "1", CHECKSUM_FILE))
  ckpt = os.path.join(run, "checkpoints", "1")
  data = max(
      (
          os.path.join(r, n)
          for r, _, names in os.walk(ckpt)
          for n in names
          if "/d/" in os.path.join(r, n)
      ),
      key=os.path.getsize,
  )
  os.remove(data)
  with pytest.warns(UserWarning, match="restoring it unverified"):
    assert main(["eval", "--run", run]) == 2
  line = _one_line(capsys.readouterr().err)
  assert "checkpoints/1 could not be read into the target state" in line, line


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--model-option", "hiden=200"],
            "--model-option got 'hiden' for --model linear; expected keys from",
        ),
        (
            ["--model", "seed-cnn", "--model-option", "conv=foo"],
            "--model-option got conv='foo' for --model seed-cnn on (32, 32, 3) images and 3 "
            "classes, which it rejects: seed-cnn: conv got 'foo'; expected one of",
        ),
        (["--model", "resnet"], "--model got 'resnet'; expected one of ("),
        (["--data-option", "num_trian=600"], "--data-option got 'num_trian'; expected keys from"),
        (
            ["--data-option", "num_train=50", "--val-size", "50"],
            "--val-size got 50, but --data shapes has 50 training images; expected fewer",
        ),
        (
            ["--batch-size", "100"],
            (
                "--batch-size got 100; expected at most the 80 training images left "
                "after --val-size 40"
            ),
        ),
        (
            ["--data", "cifar10", "--data-option", "num_classes=3"],
            "with --data cifar10; it applies to --data shapes only",
        ),
        (["--data-option", "num_classes=9"], "--data-option got num_classes=9; expected 2 to 6"),
        (["--data-dir", "somewhere"], "--data-dir got"),
    ],
)
def test_options_are_checked_before_any_data_is_read(
    flags, expected, tmp_path, capsys, monkeypatch
):
  import cnnjax.data

  monkeypatch.setattr(cnnjax.data, "load", lambda *a, **k: pytest.fail("data was read"))
  assert main(["train", *TINY, *flags, "--out", str(tmp_path / "r")]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith("cnnjax train: ") and expected in line, line


def test_the_default_val_size_against_a_small_shapes_set(tmp_path, capsys, monkeypatch):
  import cnnjax.data

  monkeypatch.setattr(cnnjax.data, "load", lambda *a, **k: pytest.fail("data was read"))
  assert main(["train", "--data-option", "num_train=600", "--out", str(tmp_path)]) == 2
  line = _one_line(capsys.readouterr().err)
  assert "--val-size (default) got 1000, but --data shapes has 600 training images" in line


def test_train_from_a_config_file_round_trip(tmp_path, capsys, monkeypatch):
  from cnnjax.train import loop
  from cnnjax.train.config import config_changes

  a, b = tmp_path / "a", tmp_path / "b"
  base = ["train", *TINY, "--cache-dir", str(tmp_path / "cache"), "--no-plots"]
  assert main([*base, "--epochs", "1", "--lr", "0.02", "--out", str(a)]) == 0
  assert main(["train", "--config", str(a / "config.json"), "--quiet", "--out", str(b)]) == 0
  assert (b / "config.json").read_text() == (a / "config.json").read_text()
  # Flags override the file.
  seen = []
  monkeypatch.setattr(loop, "train", lambda config, **kw: seen.append(config))
  assert (
      main(
          [
              "train",
              "--config",
              str(a / "config.json"),
              "--epochs",
              "3",
              "--model-option",
              "hidden=7",
              "--out",
              str(tmp_path / "c"),
          ]
      )
      == 0
  )
  saved = TrainConfig.load(a / "config.json")
  assert config_changes(saved, seen[0]) == {"epochs": (1, 3), "model_options": ({}, {"hidden": 7})}
  capsys.readouterr()
  for flags, expected in [
      (["--resume", "--out", str(a)], "--config got"),
      (["--recipe", "fast"], "--recipe got 'fast' with --config"),
  ]:
    assert main(["train", "--config", str(a / "config.json"), *flags]) == 2
    assert expected in _one_line(capsys.readouterr().err)
  assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
  assert "FileNotFoundError" in _one_line(capsys.readouterr().err)


def test_models_and_version(capsys):
  import cnnjax
  from cnnjax import models

  assert main(["models"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ["model", "params", "input", "classes"]
  assert [line.split()[0] for line in lines[1:]] == list(models.names())
  assert "seed-cnn 214,806 32x32x3 10" in [" ".join(line.split()) for line in lines]
  with pytest.raises(SystemExit) as exit_info:
    main(["--version"])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out.strip() == f"cnnjax {cnnjax.__version__}"
