"""cnnjax's XLA:CPU flag: multi-threaded convolutions, written only where XLA accepts it.

jaxlib 0.10.2's XLA:CPU hands every convolution to a YNNPACK fusion, which runs it on one
thread. With YNNPACK's convolutions turned off
(``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``; its dots and other
fusions stay), XLA:CPU runs Eigen's multi-threaded convolution (figures:
``benchmarks/README.md``, "XLA:CPU flag").

XLA reads ``XLA_FLAGS`` once, when the first backend starts, and aborts the process there
when the variable names a flag it does not know. The flag is experimental, so whether the
installed XLA knows it is decided by trying it: :func:`accepted` starts a child Python
with the flag that runs one operation, and caches the answer per jaxlib version and flag
in the cnnjax cache directory (``xla-flags.json``, checked when read back; a damaged file
is probed again and rewritten). Nothing here runs at import: :func:`cnnjax.configure_cpu`
calls :func:`apply`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import MutableMapping
from pathlib import Path

from cnnjax import _env

__all__ = ["OPT_OUT", "YNN_CONV_OFF", "accepted", "apply"]

YNN_CONV_OFF = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
OPT_OUT = "CNNJAX_XLA_FLAGS"
_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_CACHE_NAME = "xla-flags.json"
_PROBE = "import jax.numpy as jnp; jnp.zeros(2).sum().block_until_ready()"
_PROBE_TIMEOUT_S = 120


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def _cache_path() -> Path:
  from cnnjax.data.cache import default_cache_dir  # noqa: PLC0415

  return default_cache_dir() / _CACHE_NAME


def _read_cache(path: Path) -> dict[str, bool]:
  """The cached answers, or ``{}`` where the file is missing or not what was written."""
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError, RecursionError):
    return {}
  if not isinstance(data, dict) or not all(
      isinstance(k, str) and isinstance(v, bool) for k, v in data.items()
  ):
    return {}
  return data


def _write_cache(path: Path, data: dict[str, bool]) -> None:
  """Writes ``data`` atomically; a cache that cannot be written is left out."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8"
    ) as f:
      json.dump(data, f, indent=1, sort_keys=True)
    os.replace(f.name, path)
  except OSError:
    pass


def _probe(flag: str) -> bool:
  """Whether a child Python with ``XLA_FLAGS=flag`` runs an operation on XLA:CPU."""
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
  try:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        timeout=_PROBE_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
  except (OSError, subprocess.TimeoutExpired):
    return False
  return done.returncode == 0


def accepted(flag: str = YNN_CONV_OFF, *, cache: Path | None = None) -> bool:
  """Whether the installed XLA runs with ``flag`` in ``XLA_FLAGS`` (probed once per jaxlib
  version in a child process, then read from the cache)."""
  path = _cache_path() if cache is None else cache
  key = f"jaxlib {_jaxlib_version()} {flag}"
  answers = _read_cache(path)
  if key not in answers:
    answers[key] = _probe(flag)
    _write_cache(path, answers)
  return answers[key]


def apply(environ: MutableMapping[str, str] | None = None) -> bool:
  """Appends :data:`YNN_CONV_OFF` to ``environ["XLA_FLAGS"]`` where XLA accepts it.

  Left out, returning ``False``: with ``CNNJAX_XLA_FLAGS=0``; where ``XLA_FLAGS`` already
  sets the option (the user's choice is kept); where the installed XLA rejects the flag
  (with one warning: XLA:CPU's default kernels run).
  """
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  if not _env.switch(OPT_OUT, environ) or _OPTION in flags:
    return False
  if not accepted():
    warnings.warn(
        f"cnnjax.configure_cpu: this XLA (jaxlib {_jaxlib_version()}) does not accept "
        f"{YNN_CONV_OFF}, so it was not set; XLA:CPU runs its default convolutions.",
        RuntimeWarning,
        stacklevel=3,
    )
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_CONV_OFF}".strip()
  return True
