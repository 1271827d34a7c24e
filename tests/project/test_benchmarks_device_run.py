"""benchmarks/device_run.sh: its dry run names every phase, within the device limits, with
arguments the scripts it calls accept."""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
sys.path.append(os.path.join(ROOT, "benchmarks"))
import accelerator  # noqa: E402


def _dry_run(*args, cwd):
  return subprocess.run(
      ["bash", os.path.join(ROOT, "benchmarks", "device_run.sh"), "--dry-run", *args],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=60,
  )


def test_dry_run_lists_the_phases_within_one_call_and_valid_arguments():
  done = _dry_run(cwd=ROOT)
  assert done.returncode == 0, done.stderr
  phases = re.findall(r"^== (\S+) \(limit (\d+) s\): (.*)$", done.stdout, re.M)
  names = [p[0] for p in phases]
  assert names[:3] == ["tests", "accelerator", "steps-per-call"]
  # The device's per-command limit is 600 s; start-up and the copy back need the rest.
  assert sum(int(p[1]) for p in phases) + (80 if "fast-recipe" not in names else 0) <= 540
  for name, _, command in phases:
    argv = shlex.split(command)
    if argv[:2] == ["python", "benchmarks/accelerator.py"]:
      only = [argv[i + 1] for i, a in enumerate(argv) if a == "--only"]
      assert accelerator._select(only), (name, only)  # raises SystemExit on a bad name


def test_fast_recipe_needs_the_zip_and_unknown_phases_are_refused(tmp_path):
  done = _dry_run("fast-recipe", cwd=tmp_path)
  assert done.returncode == 0 and "fast-recipe: skipped" in done.stdout
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "cifar10-train-jpeg.zip").write_bytes(b"")
  done = _dry_run("fast-recipe", cwd=tmp_path)
  assert re.search(r"== fast-recipe \(limit \d+ s\): .* train --recipe fast", done.stdout)
  assert not (tmp_path / "runs").exists()  # a dry run writes nothing
  done = _dry_run("vgg", cwd=tmp_path)
  assert done.returncode == 2 and "unknown argument 'vgg'" in done.stderr


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
