"""Test configuration: loud failures for silent broadcasting, float64 references."""

import os

import jax

import cnnjax  # noqa: F401  (first, so its XLA:CPU flag is set before JAX starts a backend)

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
