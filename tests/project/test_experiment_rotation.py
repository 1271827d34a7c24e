"""experiments/rotation.py: its helper, and its ``--quick`` run end to end (a subprocess
with JAX's defaults, writing into a temporary ``--out``, as the other experiments' tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")
sys.path.insert(0, EXPERIMENTS)

import rotation  # noqa: E402


def test_rotate_is_quarter_turns():
  images = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
  np.testing.assert_array_equal(rotation.rotate(images, 0), images)
  np.testing.assert_array_equal(
      rotation.rotate(images, 1)[0, :, :, 0], [[2, 5, 8], [1, 4, 7], [0, 3, 6]]
  )
  np.testing.assert_array_equal(rotation.rotate(rotation.rotate(images, 1), 3), images)


def test_quick_run_writes_its_page_and_plots(tmp_path):
  env = dict(os.environ, MPLBACKEND="Agg")
  committed = os.path.join(EXPERIMENTS, "results", "rotation.md")
  before = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  proc = subprocess.run(
      [sys.executable, os.path.join(EXPERIMENTS, "rotation.py"), "--quick", "--out", str(tmp_path)],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  page = (tmp_path / "rotation.md").read_text()
  rows = [
      [c.strip() for c in line.strip().strip("|").split("|")]
      for line in page.splitlines()
      if line.startswith("|") and not re.match(r"^\|[:\- |]+\|$", line.strip())
  ]
  assert {"seed-cnn", "p4-cnn"} <= {row[0] for row in rows}
  p4 = next(row for row in rows if row[0] == "p4-cnn")
  # The four rotated accuracies of the invariant model agree (up to rare float ties).
  accs = [float(cell.rstrip("%")) for cell in p4[3:7]]
  assert max(accs) - min(accs) <= 1.0, p4
  assert "--quick smoke run" in page and "python experiments/rotation.py --quick" in page
  for stem in ("accuracy", "curves"):
    png = tmp_path / f"rotation_{stem}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  after = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  assert after == before, "a --quick run touched the committed results"
