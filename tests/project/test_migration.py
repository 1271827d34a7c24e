"""The migration guide's rows compute what they say: each is checked against a NumPy float64
implementation of the other library's documented formula.

``docs/guides/migration.md`` is run the way ``test_readme.py`` runs every guide: its Python
blocks as one script (``test_readme._blocks`` and ``_script``, so ``# SomeError: message``
lines are checked the same way) in a fresh Python, in float32 as a reader runs it. A row
is a comment ``# <Library>: <call>`` followed by the statement that assigns its result;
the script records that result and the arrays the call names, and each row's test
evaluates the call with the library's names bound to ``references.migration_namespace``
and compares shape and values (or, for an initialiser, the samples' distribution).
"""

from __future__ import annotations

import ast
import math
import os
import pathlib
import pickle
import re
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest
import references
import test_readme

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guides" / "migration.md"
TESTS = ROOT / "tests"
LIBRARIES = ("PyTorch", "Keras", "Flax", "Equinox")
_ROW = re.compile(rf"^(\s*)# ({'|'.join(LIBRARIES)}): (.+)$")

# The options each library's rows must show (a row's call contains the text): the
# issue's list of what differs between the libraries (issue 32).
REQUIRED = {
    "PyTorch": (
        "F.conv1d",
        "F.conv2d",
        "F.conv3d",
        "torch.flip",
        "groups=",
        "dilation=",
        'padding="same"',
        "padding_mode=",
        "F.conv_transpose2d",
        "output_padding=",
        "F.max_pool2d",
        "F.avg_pool2d",
        "count_include_pad=False",
        "ceil_mode=True",
        "divisor_override=",
        "F.lp_pool2d",
        "F.max_unpool2d",
        "F.adaptive_avg_pool2d",
        "F.unfold",
        "torchvision.ops.deform_conv2d",
        ".weight",
        ".bias",
    ),
    "Keras": (
        "keras.ops.conv(",
        "keras.ops.depthwise_conv",
        "keras.ops.separable_conv",
        "keras.ops.conv_transpose",
        "output_padding=",
        "keras.ops.max_pool",
        "keras.ops.average_pool",
        'padding="same"',
        "GlorotUniform",
    ),
    "Flax": (
        "nnx.Conv(",
        '"CIRCULAR"',
        '"REFLECT"',
        '"CAUSAL"',
        "mask=",
        "feature_group_count=",
        "kernel_dilation=",
        "nnx.ConvTranspose",
        "transpose_kernel=True",
        "nnx.max_pool",
        "nnx.avg_pool",
        "count_include_pad=False",
        "lecun_normal",
    ),
    "Equinox": (
        "eqx.nn.Conv2d",
        '"SAME_LOWER"',
        "padding_mode=",
        "eqx.nn.ConvTranspose2d",
        "output_padding=",
        "eqx.nn.MaxPool2d",
        "eqx.nn.AvgPool2d",
        "use_ceil=True",
        ".weight",
        ".bias",
    ),
}


class Row(NamedTuple):
  index: int
  library: str
  call: str


def _script():
  return test_readme._script(test_readme._blocks("python", PAGE))


def _rows(script):
  """The rows of the page's script, in order."""
  rows = []
  for line in script.splitlines():
    m = _ROW.match(line)
    if m:
      rows.append(Row(len(rows), m.group(2), m.group(3).strip()))
  return rows


def _names(call):
  return sorted({n.id for n in ast.walk(ast.parse(call, mode="eval")) if isinstance(n, ast.Name)})


# Prepended to the page's script: _record keeps a row's result and the values of the
# names its call uses (and `w`, a module's weights), as NumPy arrays and plain values.
_RECORDER = """
import numpy as _np, types as _types
_ROWS = {}
def _plain(value):
  if isinstance(value, (_types.ModuleType, type)) or callable(value):
    return None
  return _np.asarray(value) if hasattr(value, "__array__") else value
def _record(index, value, names, scope):
  kept = {n: _plain(scope[n]) for n in names if n in scope}
  _ROWS[index] = (_plain(value), {n: v for n, v in kept.items() if v is not None})
"""


def _recording_script(script, path):
  """The script with a ``_record`` call after each row's statement, which must assign one
  name; the records are pickled to ``path`` at the end."""
  lines = script.splitlines()
  statements = [
      node
      for node in ast.walk(ast.parse(script))
      if isinstance(node, ast.stmt) and not isinstance(node, ast.Module)
  ]
  inserts = {}
  rows = iter(_rows(script))
  for lineno, line in enumerate(lines, start=1):
    m = _ROW.match(line)
    if not m:
      continue
    row = next(rows)
    following = [s for s in statements if s.lineno > lineno]
    statement = min(following, key=lambda s: (s.lineno, s.col_offset))
    if not (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
      raise AssertionError(f"line {lineno + 1} after {line.strip()!r} must assign one name")
    names = [*_names(row.call), "w"]
    target = statement.targets[0].id
    inserts[statement.end_lineno] = (
        f"{m.group(1)}_record({row.index}, {target}, {names!r}, globals() | locals())"
    )
  out = []
  for lineno, line in enumerate(lines, start=1):
    out.append(line)
    if lineno in inserts:
      out.append(inserts[lineno])
  out.append(
      f"import pickle as _pickle\nwith open({str(path)!r}, 'wb') as _f:\n  _pickle.dump(_ROWS, _f)"
  )
  return _RECORDER + "\n".join(out)


ROWS = _rows(_script())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  """Runs the page once, in a fresh Python (as test_readme runs the guides)."""
  path = tmp_path_factory.mktemp("migration") / "rows.pkl"
  proc = subprocess.run(
      [sys.executable, "-c", _recording_script(_script(), path)],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(path, "rb") as f:
    return pickle.load(f)


def _assert_samples(got, dist, row):
  """``got`` looks drawn from ``dist``: its shape, range and standard deviation (5%)."""
  got = np.asarray(got, np.float64)
  assert got.shape == tuple(dist.shape), (row, got.shape, dist.shape)
  assert got.size >= 500, f"{row}: too few samples to tell the distribution"
  if isinstance(dist, references.Uniform):
    width = dist.high - dist.low
    assert dist.low <= got.min() and got.max() <= dist.high, row
    assert got.min() < dist.low + 0.05 * width and got.max() > dist.high - 0.05 * width, row
    np.testing.assert_allclose(got.std(), width / math.sqrt(12), rtol=0.05, err_msg=str(row))
    np.testing.assert_allclose(got.mean(), (dist.low + dist.high) / 2, atol=0.05 * width)
  else:
    assert np.abs(got).max() <= dist.bound * (1 + 1e-6), row
    assert np.abs(got).max() > 0.8 * dist.bound, row
    np.testing.assert_allclose(got.std(), dist.std, rtol=0.05, err_msg=str(row))
    np.testing.assert_allclose(got.mean(), 0.0, atol=0.05 * dist.std)


def test_page_has_rows_for_every_library():
  libraries = {row.library for row in ROWS}
  assert libraries == set(LIBRARIES), libraries


@pytest.mark.parametrize("library", LIBRARIES)
def test_rows_cover_the_options(library):
  calls = [row.call for row in ROWS if row.library == library]
  missing = [token for token in REQUIRED[library] if not any(token in c for c in calls)]
  assert not missing, f"{library}: no row shows {missing}"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r.index}-{r.library}: {r.call}")
def test_row_matches_the_documented_formula(recorded, row):
  assert row.index in recorded, f"{row}: its statement did not run"
  value, names = recorded[row.index]
  scope = {"np": np, "abs": abs, **names, **references.migration_namespace(row.library, names)}
  want = eval(row.call, scope)  # noqa: S307 (the page's own rows)
  if isinstance(want, (references.Uniform, references.TruncatedNormal)):
    _assert_samples(value, want, row)
    return
  want = np.asarray(want, np.float64)
  got = np.asarray(value)
  assert got.shape == want.shape, f"{row}: shape {got.shape}, expected {want.shape}"
  references.assert_close(got.astype(np.float64), want, np.float32)


def test_a_wrong_row_fails(recorded):
  # The check can fail: the first PyTorch row's result, compared with a call it does not
  # compute (the kernel flipped), is far from it.
  row = next(r for r in ROWS if r.call == "F.conv2d(x, w)")
  value, names = recorded[row.index]
  scope = {**names, **references.migration_namespace("PyTorch", names)}
  wrong = eval("F.conv2d(x, torch.flip(w, (2, 3)))", scope)  # noqa: S307
  with pytest.raises(AssertionError):
    references.assert_close(np.asarray(value, np.float64), wrong, np.float32)


def test_recorder_refuses_a_row_without_an_assignment(tmp_path):
  script = "x = 1\n# PyTorch: F.conv2d(x, w)\nprint(x)\n"
  with pytest.raises(AssertionError, match="must assign one name"):
    _recording_script(script, tmp_path / "rows.pkl")
