"""glibc's allocator settings, on request: XLA:CPU's temporaries stop page-faulting.

XLA:CPU allocates the temporary buffers of every execution (activations kept for the
backward pass, gradients) with ``posix_memalign`` and frees them when the execution ends.
glibc serves blocks above its mmap threshold (32 MiB at most) with a fresh ``mmap``, and
its per-thread arenas hand freed memory back to the kernel, so each train step faults
its temporaries in again, page by page, each page zero-filled by the kernel. Measured on
the 2-core development machine (jaxlib 0.10.2, batch 128, float32, 8 rounds of 8 steps
after compiling, alternating processes; ``benchmarks/README.md``): a ``resnet20`` run
took 4.8 M minor page faults (about 290 MB per step), ``seed-cnn`` 0.77 M.

With one arena, no ``mmap`` for large blocks and no trimming (``mallopt``:
``M_ARENA_MAX = 1``, ``M_MMAP_MAX = 0``, ``M_TRIM_THRESHOLD`` = 2³¹ − 1) freed buffers
are reused instead: 6–16× fewer faults, ``resnet20`` 270 → 318 images/s (1.18×) and
``seed-cnn`` 2,693 → 3,542 images/s (1.32×; medians of three pairs, every pair 1.1× or
more). The cost: the process keeps its peak heap instead of returning it (maximum
resident memory of those runs: ``resnet20`` 0.81–0.85 → 1.3–1.9 GB, ``seed-cnn``
0.40–0.41 → 0.46–0.52 GB).

Applied by :func:`cnnjax.configure_cpu` when asked (``allocator=True``; the ``cnnjax``
command asks on a machine without an accelerator plugin), on Linux with glibc only, and
not at all:

- with ``CNNJAX_MALLOC=0`` (the opt-out);
- when the environment already configures glibc's allocator (``GLIBC_TUNABLES`` or any
  ``MALLOC_*_`` variable): the user's choice is kept.

The settings are process-wide (the host side of GPU/TPU runs too, where they cost the
same memory and save less). Threads that allocated before the call keep their arenas.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from cnnjax import _env

OPT_OUT = "CNNJAX_MALLOC"
# mallopt parameters (glibc's malloc.h) and the values set.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))


def _user_configured() -> bool:
  return "GLIBC_TUNABLES" in os.environ or any(
      k.startswith("MALLOC_") and k.endswith("_") for k in os.environ
  )


def wanted() -> bool:
  """Whether :func:`apply` changes anything here (Linux, glibc, no opt-out, no user
  settings)."""
  if not _env.switch(OPT_OUT):
    return False
  return (
      sys.platform.startswith("linux")
      and platform.libc_ver()[0] == "glibc"
      and not _user_configured()
  )


def apply() -> bool:
  """Sets :data:`SETTINGS` with glibc's ``mallopt`` where :func:`wanted`; returns whether
  all of them were accepted."""
  if not wanted():
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return all([mallopt(param, value) == 1 for param, value in SETTINGS])
