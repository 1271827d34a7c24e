"""``cnnjax train/eval/search``: documented flags, a tiny run, resume, eval and search."""

import json
import os

import pytest

from cnnjax.cli import main
from cnnjax.train.cli import _FLAGS
from cnnjax.train.config import TrainConfig
from cnnjax.train.metrics import read_metrics

TINY = ["--model", "linear", "--data", "shapes", "--data-option", "num_train=120",
        "--data-option", "num_test=40", "--data-option", "num_classes=3", "--val-size", "40",
        "--batch-size", "40", "--eval-batch-size", "40", "--quiet"]


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


def test_train_resume_and_eval(tmp_path, capsys):
  run = str(tmp_path / "run")
  cache = ["--cache-dir", str(tmp_path / "cache")]
  assert main(["train", *TINY, *cache, "--epochs", "1", "--out", run, "--no-plots"]) == 0
  records = read_metrics(os.path.join(run, "metrics.jsonl"))
  assert len(records) == 1 and 0.0 <= records[0]["test_accuracy"] <= 1.0
  # --resume keeps the saved config (linear on 3-class shapes) and changes only --epochs.
  assert main(["train", "--out", run, "--resume", "--epochs", "2", "--quiet"]) == 0
  config = TrainConfig.load(os.path.join(run, "config.json"))
  assert (config.model, config.epochs, config.data_options["num_classes"]) == ("linear", 2, 3)
  records = read_metrics(os.path.join(run, "metrics.jsonl"))
  assert [r["epoch"] for r in records] == [1, 2]
  assert os.path.exists(os.path.join(run, "curves.png"))
  capsys.readouterr()
  assert main(["eval", "--run", run]) == 0
  out = capsys.readouterr().out
  assert "val_accuracy" in out and "test_accuracy" in out
  with open(os.path.join(run, "eval.json")) as f:
    result = json.load(f)
  assert result["epoch"] == 2
  assert result["val_accuracy"] == pytest.approx(records[-1]["val_accuracy"])
  assert result["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"])
  assert main(["eval", "--run", str(tmp_path)]) == 2  # not a run directory


def test_search_writes_table_and_best_config(tmp_path, capsys):
  out = str(tmp_path / "search")
  args = ["search", *TINY, "--cache-dir", str(tmp_path / "cache"), "--trials", "2",
          "--trial-epochs", "1", "--space", "lr=1e-3:1e-1", "--out", out]
  assert main(args) == 0
  rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))]
  assert [r["trial"] for r in rows] == [0, 1]
  assert all(1e-3 <= r["params"]["lr"] <= 1e-1 for r in rows)
  table = open(os.path.join(out, "results.md")).read()
  assert table.count("\n") == 4  # header, rule, two trials
  best = TrainConfig.load(os.path.join(out, "best_config.json"))
  best_row = max(rows, key=lambda r: r["val_accuracy"])
  assert best.lr == pytest.approx(best_row["params"]["lr"]) and best.model == "linear"
  with pytest.raises(SystemExit) as exit_info:
    main(["search", *TINY, "--space", "lr=0.1", "--out", out])
  assert exit_info.value.code == 2
  assert "FIELD=LO:HI" in capsys.readouterr().err
