"""``cnnjax equivariance``: a report on a tiny run, its files (never overwritten), and
one-line failures (issue 31)."""

import json
import os

import pytest

from cnnjax.cli import main

TINY = [
    "--model",
    "seed-cnn",
    "--model-option",
    "hidden=8",
    "--data",
    "shapes",
    "--data-option",
    "num_train=80",
    "--data-option",
    "num_test=20",
    "--data-option",
    "num_classes=3",
    "--val-size",
    "20",
    "--batch-size",
    "40",
    "--eval-batch-size",
    "20",
    "--epochs",
    "1",
    "--quiet",
    "--no-plots",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  base = tmp_path_factory.mktemp("equivariance-cli")
  out = str(base / "run")
  assert main(["train", *TINY, "--cache-dir", str(base / "cache"), "--out", out]) == 0
  return out


def _one_line(err: str) -> str:
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  return lines[0]


def _reports(run_dir: str) -> list[str]:
  return sorted(n for n in os.listdir(run_dir) if n.startswith("equivariance-"))


def test_report_prints_a_table_and_writes_json_and_png(run, capsys):
  args = ["equivariance", "--run", run, "--images", "6", "--transform", "shift:1,2"]
  assert main([*args, "--transform", "rot90+flip"]) == 0
  out = capsys.readouterr().out
  assert "6 val image(s) of shapes" in out
  for name in ("conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "shift:2", "rot90:1+flip:1"):
    assert name in out, name
  assert _reports(run) == ["equivariance-val.json", "equivariance-val.png"]
  with open(os.path.join(run, "equivariance-val.json")) as f:
    record = json.load(f)
  assert record["split"] == "val" and record["num_images"] == 6
  assert [t["transform"] for t in record["transforms"]] == ["shift:1", "shift:2", "rot90:1+flip:1"]
  shift2 = {ly["name"]: ly for ly in record["transforms"][1]["layers"]}
  assert shift2["pool1"]["stride"] == [2, 2] and not shift2["pool1"]["approximate"]
  assert shift2["pool2"]["approximate"]  # 2 is not a multiple of pool2's stride, 4
  assert 0 <= record["transforms"][0]["logits"]["unchanged"] <= 1
  with open(os.path.join(run, "equivariance-val.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  before = os.path.getmtime(os.path.join(run, "equivariance-val.json"))

  # Another report never overwrites the first; without a plot, no PNG.
  assert main([*args, "--no-plot", "--layers", "conv1", "fc2"]) == 0
  assert _reports(run) == [
      "equivariance-val-2.json",
      "equivariance-val.json",
      "equivariance-val.png",
  ]
  assert os.path.getmtime(os.path.join(run, "equivariance-val.json")) == before
  with open(os.path.join(run, "equivariance-val-2.json")) as f:
    layers = [ly["name"] for ly in json.load(f)["transforms"][0]["layers"]]
  assert layers == ["conv1", "fc2"]
  assert main(["equivariance", "--run", run, "--images", "4", "--split", "test"]) == 0
  assert "equivariance-test.json" in _reports(run)
  for name in _reports(run):
    os.remove(os.path.join(run, name))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--transform", "rot91"], "cnnjax equivariance: parse_transforms: spec got 'rot91'"),
        (["--transform", "shift:1,mode=wrap"], "cnnjax equivariance: parse_transforms: spec got"),
        (["--images", "0"], "cnnjax equivariance: --images got 0"),
        (["--layers", "conv9"], "cnnjax equivariance: report: layers got ['conv9']"),
    ],
)
def test_bad_arguments_fail_in_one_line_and_write_nothing(run, capsys, extra, message):
  capsys.readouterr()
  assert main(["equivariance", "--run", run, "--images", "2", *extra]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith(message), line
  assert _reports(run) == []


def test_bad_run_directory_fails_in_one_line(tmp_path, capsys):
  assert main(["equivariance", "--run", str(tmp_path)]) == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith("cnnjax equivariance: --run got"), line
  assert "not a run directory" in line
  assert main(["equivariance", "--run", str(tmp_path / "missing")]) == 2
  assert "not a run directory" in _one_line(capsys.readouterr().err)


def test_help_lists_the_specs(capsys):
  with pytest.raises(SystemExit) as info:
    main(["equivariance", "--help"])
  assert info.value.code == 0
  out = capsys.readouterr().out
  for text in ("--transform SPEC", "shift:1,2,4", "random:p4m,trials=8,seed=0", "--split"):
    assert text in out, text
