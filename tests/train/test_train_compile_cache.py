"""``cnnjax train``'s persistent compilation cache: a second identical run loads its programs."""

import os
import subprocess
import sys

from cnnjax.train.compile_cache import default_compile_cache_dir
from cnnjax.train.metrics import read_metrics

# seed-cnn on 300 shapes images, one epoch; the TTA on the final (only) evaluation, so that
# the train step, the plain evaluation and the TTA evaluation are all compiled.
_ARGS = [
    "--model",
    "seed-cnn",
    "--data",
    "shapes",
    "--data-option",
    "num_train=300",
    "--val-size",
    "100",
    "--epochs",
    "1",
    "--batch-size",
    "50",
    "--eval-batch-size",
    "100",
    "--tta",
    "flip",
    "--tta-final-only",
    "--quiet",
    "--no-plots",
]
_PROGRAMS = {"train_step", "eval_step", "tta"}


def _train(tmp_path, out, cache_home, *extra):
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME", "CNNJAX_COMPILE_CACHE")
  }
  env["CNNJAX_CACHE"] = str(cache_home)
  code = "import sys; from cnnjax.cli import main; sys.exit(main(sys.argv[1:]))"
  subprocess.run(
      [
          sys.executable,
          "-c",
          code,
          "train",
          *_ARGS,
          "--cache-dir",
          str(tmp_path / "data"),
          "--out",
          str(tmp_path / out),
          *extra,
      ],
      env=env,
      check=True,
      timeout=300,
  )
  return read_metrics(tmp_path / out / "metrics.jsonl")[0]


def test_second_run_loads_its_programs_from_the_default_cache(tmp_path):
  home = tmp_path / "home"
  first = _train(tmp_path, "run1", home)
  cache = home / "jax"
  assert cache.is_dir() and any(p.name.startswith("jit_train_one") for p in cache.iterdir())
  written = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
  second = _train(tmp_path, "run2", home)
  assert set(first["compile_seconds"]) == set(second["compile_seconds"]) == _PROGRAMS
  assert set(first["trace_seconds"]) == _PROGRAMS
  # Every program was loaded: a program compiled again (its key changed, or its entry
  # could not be read) is written anew. (Not timed: compile seconds vary with the load.)
  assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == written
  assert first["val_accuracy"] == second["val_accuracy"]  # the same programs, loaded


def test_compile_cache_off_writes_no_cache(tmp_path):
  home = tmp_path / "home"
  # The linear model (the last --model wins): the same three programs, compiled faster.
  record = _train(tmp_path, "run", home, "--compile-cache", "off", "--model", "linear")
  assert set(record["compile_seconds"]) == _PROGRAMS
  assert not (home / "jax").exists()


def test_default_compile_cache_dir_is_next_to_the_data_cache(monkeypatch, tmp_path):
  monkeypatch.setenv("CNNJAX_CACHE", str(tmp_path))
  assert default_compile_cache_dir() == os.path.join(str(tmp_path), "jax")


def test_env_var_chooses_the_directory_or_off(monkeypatch, tmp_path):
  import jax

  from cnnjax.train.compile_cache import enable_compile_cache

  before = {k: getattr(jax.config, k) for k in _SETTINGS}
  try:
    monkeypatch.setenv("CNNJAX_COMPILE_CACHE", str(tmp_path / "c"))
    assert enable_compile_cache() == str(tmp_path / "c")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    monkeypatch.setenv("CNNJAX_COMPILE_CACHE", "off")
    assert enable_compile_cache() is None
    assert enable_compile_cache(tmp_path / "d") == str(tmp_path / "d")  # the flag wins
  finally:
    for k, v in before.items():
      jax.config.update(k, v)


_SETTINGS = (
    "jax_enable_compilation_cache",
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)
