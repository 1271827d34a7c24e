"""The training tests' shared fixtures: one tiny run, trained once per test module."""

import shutil

import pytest
from test_train_cli import TINY

from cnnjax.cli import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A tiny run (linear on 3-class shapes, one epoch), trained once; tests take a copy."""
  root = tmp_path_factory.mktemp("run")
  run = root / "run"
  args = ["train", *TINY, "--cache-dir", str(root / "cache"), "--epochs", "1", "--no-plots"]
  assert main([*args, "--out", str(run)]) == 0
  return run


@pytest.fixture
def run_copy(tiny_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(tiny_run, copy)
  return copy
