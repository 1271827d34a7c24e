"""The experiment scripts of part 1 (baselines, fc_vs_cnn, shuffled_pixels, weight_sharing,
receptive_field) and their shared helpers in ``experiments/common.py``.

Each script's ``--quick`` run is executed end to end in a subprocess, as a user types it
(its own jax configuration, float32, no x64), writing into a temporary ``--out``; the test
checks the page's tables (rows and columns) and its PNGs. The helpers are tested in-process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from experiment_env import experiment_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")
sys.path.insert(0, EXPERIMENTS)

import common  # noqa: E402
import receptive_field  # noqa: E402
import shuffled_pixels  # noqa: E402

import cnnjax  # noqa: E402


def tables(markdown: str) -> list[tuple[list[str], list[list[str]]]]:
  """Every markdown table of a page as ``(header cells, body rows of cells)``."""
  found, lines = [], markdown.splitlines()
  i = 0
  while i < len(lines):
    if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[:\-|]+\|$", lines[i + 1]):
      split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]
      header, body = split(lines[i]), []
      i += 2
      while i < len(lines) and lines[i].startswith("|"):
        body.append(split(lines[i]))
        i += 1
      found.append((header, body))
    else:
      i += 1
  return found


def table_with(page: str, column: str):
  """The first table of ``page`` that has a column named ``column``."""
  for header, body in tables(page):
    if column in header:
      return header, body
  raise AssertionError(f"no table with a {column!r} column in:\n{page}")


def run_quick(name: str, out) -> str:
  """Runs ``python experiments/NAME.py --quick --out OUT``; returns the page."""
  # JAX's defaults, except the suite's compile settings (tests/conftest.py): experiment_env.py.
  env = experiment_env()
  proc = subprocess.run(
      [sys.executable, os.path.join("experiments", f"{name}.py"), "--quick", "--out", str(out)],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert (
      proc.returncode == 0
  ), f"{name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  page_path = out / f"{name}.md"
  assert page_path.exists()
  page = page_path.read_text()
  # The page says how it was made, and every figure it shows exists.
  assert f"`python experiments/{name}.py --quick --out " in page
  assert "--quick smoke run" in page and "Machine:" in page and "jax 0." in page
  for png in re.findall(r"\]\(([^)]+\.png)\)", page):
    assert (out / png).stat().st_size > 1000, png
  assert re.findall(r"\]\(([^)]+\.png)\)", page), "no figure on the page"
  return page


def pct(cell: str) -> float:
  return float(re.match(r"(-?[\d.]+)%", cell).group(1)) / 100


# --------------------------------------------------------------------------------------
# End-to-end --quick runs.


def test_baselines_quick(tmp_path):
  page = run_quick("baselines", tmp_path)
  header, body = table_with(page, "val accuracy")
  assert header[:2] == ["model", "params"] and "lecture" in header
  assert [r[0] for r in body] == ["linear", "mlp (100 hidden)", "seed-cnn"]
  lecture = [r[header.index("lecture")] for r in body]
  assert lecture == ["38%", "51%", "72%"]
  for r in body:
    assert 0 <= pct(r[header.index("val accuracy")]) <= 1
  # Quick data: 32×32×3, 4 classes: linear 3072·4 + 4 parameters.
  assert body[0][1] == f"{32 * 32 * 3 * 4 + 4:,}"


def test_fc_vs_cnn_quick(tmp_path):
  page = run_quick("fc_vs_cnn", tmp_path)
  header, body = table_with(page, "params (summary)")
  assert [r[0] for r in body] == ["FC", "CNN"]
  params = [int(r[header.index("params (summary)")].replace(",", "")) for r in body]
  # The lecture's sizes (with 4 classes instead of 10): about 9M and 2M.
  assert 8.9e6 < params[0] < 9.1e6 and 1.95e6 < params[1] < 2.05e6
  assert [r[header.index("lecture")] for r in body] == ["50.6%", "67.8%"]
  assert page.count("| **total** |") == 2  # both cnnjax.summary layer tables


def test_shuffled_pixels_quick(tmp_path):
  page = run_quick("shuffled_pixels", tmp_path)
  header, body = table_with(page, "val accuracy, shuffled")
  assert [r[0] for r in body] == ["mlp", "seed-cnn"]
  assert "val accuracy, original" in header and "change" in header


def test_weight_sharing_quick(tmp_path):
  page = run_quick("weight_sharing", tmp_path)
  header, body = table_with(page, "layer-1 equivariance error, shift 1")
  assert [r[0] for r in body] == ["shared", "tiled (tile 2)", "local"]
  e1 = [float(r[header.index("layer-1 equivariance error, shift 1")]) for r in body]
  e2 = [float(r[header.index("layer-1 equivariance error, shift 2")]) for r in body]
  # Exact properties that hold at any amount of training: shared is equivariant to every
  # shift, tiled (tile 2) only to even shifts, local to neither.
  assert e1[0] < 1e-5 and e2[0] < 1e-5
  assert e1[1] > 0.05 and e2[1] < 1e-5
  assert e1[2] > 0.05 and e2[2] > 0.05
  params = [int(r[header.index("params")].replace(",", "")) for r in body]
  assert params[0] < params[1] < params[2]
  for r in body:
    assert 0 <= pct(r[header.index(next(h for h in header if "consistency" in h))]) <= 1


def test_receptive_field_quick(tmp_path):
  page = run_quick("receptive_field", tmp_path)
  header, body = table_with(page, "receptive field")
  assert [r[0] for r in body] == ["3×3 ×3", "7×7 ×1"]
  assert [r[1] for r in body] == ["7", "7"]
  assert body[0][2].startswith("27C²") and body[1][2].startswith("49C²")
  header, body = table_with(page, "L = 6")
  assert body[0][1:] == ["3", "5", "7", "9", "11", "13"]
  assert body[1][1:] == ["3", "7", "15", "31", "63", "127"]
  header, body = table_with(page, "effective spread σ (px)")
  assert len(body) == 7
  spreads = {r[0]: float(r[2]) for r in body}
  # Deeper random stacks spread further, but well inside their theoretical field.
  s3, s7, s15 = (spreads[f"random stack 3×3 ×{n}"] for n in (3, 7, 15))
  assert s3 < s7 < s15 < 31 / 2


# --------------------------------------------------------------------------------------
# Helpers.


def test_markdown_table():
  md = common.markdown_table(["a", "b"], [[1, "x|y"]])
  assert md.splitlines() == ["| a | b |", "|:--|--:|", "| 1 | x\\|y |"]
  with pytest.raises(ValueError, match="align"):
    common.markdown_table(["a", "b"], [[1, 2]], align="l")
  with pytest.raises(ValueError, match="row"):
    common.markdown_table(["a", "b"], [[1]])


def test_formatting():
  assert common.percent(0.7234) == "72.3%" and common.percent(None) == "—"
  assert common.count(2152010) == "2,152,010"
  assert common.versus(0.40, 0.38) == "+2.0 pt" and common.versus(None, 0.3) == "—"
  assert common.pick(common.argparse.Namespace(quick=True), 10, 1) == 1


def test_parse_args(tmp_path):
  args = common.parse_args(["--quick", "--out", str(tmp_path / "o"), "--seed", "3"], name="x")
  assert args.quick and args.seed == 3 and args.epochs is None and args.runs is None
  assert os.path.isdir(args.out)
  assert common.command_line(args) == f"python experiments/x.py --quick --out {tmp_path}/o --seed 3"
  with pytest.raises(SystemExit):
    common.parse_args(["--epochs", "0", "--out", str(tmp_path)], name="x")


def test_missing_data_dir_names_the_flag(tmp_path):
  args = common.parse_args(["--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path)], name="x")
  with pytest.raises(FileNotFoundError, match="--data-dir"):
    common.load_data(args)


def test_shuffle_pixels_is_a_position_permutation():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (3, 4, 5, 2), dtype=np.uint8)
  perm = rng.permutation(20)
  y = shuffled_pixels.shuffle_pixels(x, perm)
  # Pixel i of the output is pixel perm[i] of the input, every channel together.
  for i, p in enumerate(perm):
    np.testing.assert_array_equal(y[:, i // 5, i % 5, :], x[:, p // 5, p % 5, :])
  np.testing.assert_array_equal(shuffled_pixels.shuffle_pixels(y, np.argsort(perm)), x)
  np.testing.assert_array_equal(shuffled_pixels.shuffle_pixels(x, np.arange(20)), x)


def test_block_layers_receptive_field():
  # stem 3×3, pool 2, then the block at stride 2: 3 + 1 + 2·6 for both blocks.
  for kernels in receptive_field.BLOCKS.values():
    assert cnnjax.receptive_field(receptive_field.block_layers(kernels)) == 16


def test_spread_of_a_gaussian():
  yy, xx = np.mgrid[:41, :41]
  g = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / (2 * 3.0**2))
  assert receptive_field.spread(g) == pytest.approx(3.0, rel=1e-3)


def test_gradient_map_of_a_box_filter_is_its_support():
  # A 3×3 all-ones filter: the centre output depends on exactly 3×3 input pixels.
  w = jnp.ones((3, 3, 2, 1), jnp.float32)
  f = lambda x: cnnjax.cross_correlate(x, w, padding="SAME")
  g = receptive_field.gradient_map(f, jnp.ones((2, 9, 9, 2), jnp.float32))
  expected = np.zeros((9, 9))
  expected[3:6, 3:6] = 2.0  # two input channels, each with gradient 1
  np.testing.assert_allclose(g, expected)
