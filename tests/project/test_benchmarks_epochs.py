"""benchmarks/epochs.py: one tiny cnnjax-only pair reads its epochs from metrics.jsonl."""

import json
import os
import sys

import pytest

sys.path.append(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks"))
import epochs  # noqa: E402

TINY = [
    "--data-option",
    "num_train=300",
    "--data-option",
    "num_test=50",
    "--val-size",
    "44",
    "--eval-batch-size",
    "50",
]


def test_a_cnnjax_only_pair_reports_each_epoch(tmp_path, capsys):
  path = tmp_path / "epochs.json"
  out = epochs.main(
      [
          "--data",
          "shapes",
          "--epochs",
          "2",
          "--batch-size",
          "64",
          "--pairs",
          "1",
          "--no-torch",
          "--json",
          str(path),
          "--",
          *TINY,
          "--cache-dir",
          str(tmp_path / "cache"),
      ]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  (row,) = out["pairs"]
  # 256 training images in batches of 64: 4 steps per epoch, one figure per epoch.
  assert row["steps_per_epoch"] == 4 and len(row["cnnjax_images_per_second"]) == 2
  assert all(v > 0 for v in row["cnnjax_images_per_second"])
  assert "ratio" not in row and "median_ratio" not in out
  assert "| 1 |" in capsys.readouterr().out


def test_a_failing_train_names_its_error():
  with pytest.raises(RuntimeError, match=r"cnnjax train failed \(2\)(.|\n)*lr got -1"):
    epochs.main(["--data", "shapes", "--pairs", "1", "--no-torch", "--", "--lr", "-1"])
