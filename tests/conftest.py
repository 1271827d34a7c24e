"""Test configuration: loud failures for silent broadcasting, float64 references."""

# tests/ mirrors cnnjax/ (tests/nn, tests/_lowering, ...; tests/project for the benchmarks,
# experiments and docs). No folder has an __init__.py: in pytest's default "prepend" import
# mode a test file is imported by its basename with its folder put first on sys.path, and
# this conftest's folder, tests/, is put there too, so every test file imports the shared
# `references` (and a sibling's helpers) by name. Hence basenames are unique across folders.

import gc
import os
import shutil
import tempfile

import jax

import cnnjax

# The CPU runtime `cnnjax train` uses (its XLA:CPU flag and allocator setting), set before
# JAX starts a backend; subprocess tests inherit the flag through XLA_FLAGS.
cnnjax.configure_cpu(allocator=True)

# Silent rank promotion hides shape bugs; make it an error in the whole suite.
jax.config.update("jax_numpy_rank_promotion", "raise")
# References are computed in float64; tests that check float32/bfloat16 say so explicitly.
jax.config.update("jax_enable_x64", True)
# float32 contractions at full float32 precision on every backend (the platform default is
# TF32 on recent NVIDIA GPUs and bfloat16 passes on TPU), so float32 results can be held to
# float32 rounding against float64 references. Tests of the default precision enter
# `jax.default_matmul_precision("default")` and use references.tolerance's backend rules.
jax.config.update("jax_default_matmul_precision", "highest")
# `cnnjax train` run in-process by the CLI tests writes no persistent compilation cache
# (test_train_compile_cache.py tests the cache in subprocesses, in tmp_path).
os.environ.setdefault("CNNJAX_COMPILE_CACHE", "off")
# On CPU, compiling is most of the suite's time (about half of it in-process, XLA's LLVM
# passes mostly), so it compiles with jax's `jax_disable_most_optimizations` (LLVM at -O0;
# XLA's HLO passes, fusion and library kernels unchanged): 12.5-13.5 -> 10.3 min on 2 cores.
# The numerics users get (full optimization) are checked by test_fuzz.py, which fuzzes
# every public op that way. `JAX_DISABLE_MOST_OPTIMIZATIONS=0` runs the whole suite at
# full optimization; subprocess tests inherit the setting.
if jax.default_backend() == "cpu" and "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ:
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  jax.config.update("jax_disable_most_optimizations", True)

# The subprocesses the tests start (the experiments' --quick runs, scripts; not `cnnjax
# train`, whose cache CNNJAX_COMPILE_CACHE above turns off) share one persistent
# compilation cache per test run: a program one of them compiled, the next loads (the
# experiments' smoke runs: 197 -> 148 s on 2 cores). It is made by the first process that
# reads this file (xdist's workers inherit it) and removed at the end. The suite's own
# processes keep jax's in-memory cache only, whatever their environment says.
_SHARED_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _SHARED_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnnjax-tests-jax-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
jax.config.update("jax_enable_compilation_cache", False)


def pytest_runtest_teardown(item, nextitem):
  # After each test module, its garbage is collected and what survives is frozen (moved
  # out of the collector's sight): later collections scan only newer objects. Without
  # it, a full collection in a worker that has run a thousand tests takes most of a
  # second, and `cnnjax.cli.main` (run in-process by the CLI tests) runs one per command:
  # 0.1 s -> 0.8 s per call late in the run.
  if nextitem is None or nextitem.path != item.path:
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session):
  if _SHARED_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
