"""The environment an experiment's ``--quick`` subprocess runs in: JAX's defaults."""

from __future__ import annotations

import os

# Kept from the suite's environment (tests/conftest.py): its compile setting, and the
# compilation cache the suite's subprocesses share (a program compiled once per test run).
KEPT = (
    "JAX_DISABLE_MOST_OPTIMIZATIONS",
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
)


def experiment_env(**extra: str) -> dict[str, str]:
  """``os.environ`` without its ``JAX_*`` and ``XLA_*`` settings (but :data:`KEPT`), plus
  ``extra``."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_")) or k in KEPT}
  return {**env, **extra}
