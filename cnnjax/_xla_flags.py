"""XLA:CPU flags cnnjax sets at import, before JAX starts its backends.

jaxlib 0.10.2's XLA:CPU hands every convolution to a YNNPACK fusion, which runs it on one
thread. With YNNPACK's convolutions turned off
(``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``, its dots and other
fusions stay), XLA:CPU uses Eigen's multi-threaded convolution. Measured on the 2-core
development machine (``benchmarks/README.md``): a 3×3, 32×32×64 → 64 convolution at batch
128 took 41 instead of 195 ms forward and 201 instead of 717 ms forward+backward, and the
``seed-cnn`` train step ran 1.7–2.0× faster (2,211 vs 1,105 images/s).

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so the flag is appended to
the environment variable when ``cnnjax`` is imported, and only then:

- if ``XLA_FLAGS`` already names ``xla_cpu_experimental_ynn_fusion_type``, the user's
  choice is kept;
- if ``CNNJAX_XLA_FLAGS=0`` is set, nothing is changed (the opt-out);
- if a JAX backend has already started (JAX ran something before ``import cnnjax``), the
  flag can no longer take effect; a warning says so when that backend is the CPU.

The flag only concerns XLA:CPU; GPU and TPU compilations ignore it. Child processes
inherit the amended ``XLA_FLAGS``.

XLA aborts the process at its first operation when ``XLA_FLAGS`` names a flag it does not
know, and older jaxlib releases do not know this one (seen with jax 0.5, 0.6 and 0.8). So
the flag is set only where the installed jaxlib is at least :data:`MIN_JAXLIB`, the oldest
release it was tested with (0.10.2 on CPU; 0.11.2 with CUDA also accepts it); an older
jaxlib runs XLA:CPU's default, single-threaded convolutions.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings

YNN_CONV_OFF = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
OPT_OUT = "CNNJAX_XLA_FLAGS"
MIN_JAXLIB = (0, 10, 2)


def jaxlib_version() -> tuple[int, ...] | None:
  """The installed jaxlib's version as ints (``None`` if it cannot be read), without
  importing jax."""
  try:
    text = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return None
  numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
  return tuple(int(n) for n in numbers.groups()) if numbers else None


def knows_the_flag(version: tuple[int, ...] | None = None) -> bool:
  """Whether jaxlib ``version`` (default: the installed one) is known to accept the flag."""
  version = jaxlib_version() if version is None else version
  return version is not None and version >= MIN_JAXLIB


def apply(environ=os.environ) -> bool:
  """Appends cnnjax's XLA:CPU flag to ``environ["XLA_FLAGS"]`` where it can act.

  Returns:
    ``True`` when the flag was appended, ``False`` when it was left out (the user set the
    option or opted out, the installed jaxlib predates it, or a backend had already
    started).
  """
  if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  if not knows_the_flag():
    return False
  flags = environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  from jax._src import xla_bridge  # noqa: PLC0415 (private: no public equivalent)

  if xla_bridge.backends_are_initialized():
    import jax  # noqa: PLC0415

    if jax.default_backend() == "cpu":
      warnings.warn(
          "cnnjax was imported after JAX had started its CPU backend, so XLA:CPU keeps "
          "running convolutions single-threaded (YNNPACK). Import cnnjax before running "
          f"any JAX computation, or set XLA_FLAGS={YNN_CONV_OFF!r} yourself (about 3x "
          f"faster convolutions on CPU); set {OPT_OUT}=0 to silence this.",
          stacklevel=3,
      )
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_CONV_OFF}".strip()
  return True
