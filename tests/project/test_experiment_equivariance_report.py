"""experiments/equivariance_report.py: its ``--quick`` run end to end (a subprocess with
JAX's defaults, writing into a temporary ``--out``, as the other experiments' tests), and
the reuse of the runs kept under ``--runs`` (issue 31)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from experiment_env import experiment_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")
MODELS = ["seed-cnn", "resnet20", "p4-cnn", "max", "blur", "aps"]
sys.path.insert(0, EXPERIMENTS)

import equivariance_report  # noqa: E402  # pyright: ignore[reportMissingImports]


def _rows(page: str, first_header: str) -> tuple[list[str], list[list[str]]]:
  """The header and body rows of the first table whose first column is ``first_header``."""
  lines = page.splitlines()
  split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]
  for i, line in enumerate(lines):
    if line.startswith("|") and split(line)[0] == first_header:
      body = []
      for row in lines[i + 2 :]:
        if not row.startswith("|"):
          break
        body.append(split(row))
      return split(line), body
  raise AssertionError(f"no table starting with {first_header!r}")


def test_quick_run_writes_its_page_and_plots(tmp_path):
  env = experiment_env(MPLBACKEND="Agg")
  committed = os.path.join(EXPERIMENTS, "results", "equivariance_report.md")
  before = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  out, runs = tmp_path / "out", tmp_path / "runs"
  cmd = [sys.executable, os.path.join(EXPERIMENTS, "equivariance_report.py"), "--quick"]
  cmd += ["--out", str(out), "--runs", str(runs)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  page = (out / "equivariance_report.md").read_text()
  assert "--quick smoke run" in page and "python experiments/equivariance_report.py --quick" in page

  header, body = _rows(page, "model")
  assert header == ["model", "params", "epochs", "val accuracy", "training time"]
  assert [row[0] for row in body] == MODELS
  logits_header, logits = _rows(page.split("## At the logits")[1], "model")
  assert logits_header == ["model", "shift:1", "rot90:1", "flip:1"]
  p4 = next(row for row in logits if row[0] == "p4-cnn")
  matched = re.match(r"([\d.]+)%", p4[2])  # rot90:1
  assert matched is not None, p4
  unchanged = float(matched.group(1))
  assert unchanged >= 99.0, p4  # invariant by construction (up to rare float ties)
  # One layer table and one figure per model.
  for name in MODELS:
    assert f"## {name}, layer by layer" in page
    png = out / f"equivariance_report_{re.sub(r'[^A-Za-z0-9]+', '_', name)}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  layers_header, layers = _rows(page.split("## seed-cnn, layer by layer")[1], "layer")
  assert layers_header == ["layer", "kind", "stride", "shift:1", "rot90:1", "flip:1"]
  assert [row[0] for row in layers[:4]] == ["conv1", "pool1", "conv2", "pool2"]
  assert layers[1][3].startswith("~")  # a one-pixel shift at a stride-2 pooling
  after = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  assert after == before, "a --quick run touched the committed results"

  # The runs kept under --runs are loaded, not trained again, by the next invocation.
  args = argparse.Namespace(runs=str(runs), name="equivariance_report", quick=True)
  for label, name in (("seed-cnn", "seed-cnn"), ("aps", "aps")):
    model = equivariance_report.train_or_load(args, None, label, name, 1)
    row = next(row for row in _rows(page, "model")[1] if row[0] == label)
    assert (model.epochs, f"{model.val_accuracy:.1%}") == (1, row[3])
    assert model.seconds > 0
