"""The CPU runtime settings, applied by one explicit call: :func:`configure_cpu`.

Importing cnnjax changes nothing process-wide. A program that trains or benchmarks on
CPU calls ``cnnjax.configure_cpu()`` once, first thing (the ``cnnjax`` command and the
test suite do), as ``chex.set_n_cpu_devices()`` is called: XLA reads its flags when its
first backend starts, so the call raises once JAX has started one.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import NamedTuple

from cnnjax import _malloc, _xla_flags
from cnnjax._lowering import cpu_bf16, forms
from cnnjax._lowering.forms import CpuForms, cpu_forms

__all__ = ["CpuForms", "CpuSettings", "configure_cpu", "cpu_forms"]


class CpuSettings(NamedTuple):
  """What :func:`configure_cpu` changed.

  Attributes:
    xla_flag: the multi-threaded-convolution flag was appended to ``XLA_FLAGS``.
    allocator: glibc's allocator keeps freed memory for reuse.
    bf16_matmul: bfloat16 convolutions take the patch-matmul form by default.
  """

  xla_flag: bool
  allocator: bool
  bf16_matmul: bool


def _backend_started() -> bool:
  from jax._src import xla_bridge  # noqa: PLC0415 (private: no public equivalent)

  return xla_bridge.backends_are_initialized()


_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def _accelerator_plugin() -> bool:
  """Whether a JAX GPU/TPU plugin is installed and ``JAX_PLATFORMS`` does not say cpu."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  return any(
      (d.metadata["Name"] or "").lower().startswith(_ACCELERATOR_PLUGINS)
      for d in importlib.metadata.distributions()
  )


def configure_cpu(
    *, xla_flag: bool = True, allocator: bool | None = False, bf16_matmul: bool | None = None
) -> CpuSettings:
  """Tunes this process for XLA:CPU; call it before JAX computes anything.

  - ``xla_flag``: appends ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``
    to ``XLA_FLAGS`` (inherited by child processes), so XLA:CPU runs convolutions with
    Eigen on every core instead of YNNPACK on one: on 2 cores convolutions ran 3–5× and
    ``seed-cnn`` training about 1.7× faster (``benchmarks/README.md``). Only where the
    installed XLA accepts the flag (tried once per jaxlib version in a child process and
    cached; otherwise one warning and XLA's default kernels), never over an
    ``xla_cpu_experimental_ynn_fusion_type`` of your own, and not with
    ``CNNJAX_XLA_FLAGS=0``.
  - ``allocator``: on Linux with glibc, tells the allocator to keep freed memory for reuse
    (``mallopt``: one arena, no ``mmap`` for large blocks, no trimming), so XLA:CPU's
    temporaries are not page-faulted in again every step: ``seed-cnn`` steps about 1.3×
    and ``resnet20`` 1.2× faster, for a process that keeps its peak memory (``resnet20``
    at batch 128: 1.3–1.9 GB instead of 0.8 GB). Not with ``CNNJAX_MALLOC=0`` or your own
    ``GLIBC_TUNABLES`` / ``MALLOC_*_`` settings. ``None``: where no JAX GPU/TPU plugin is
    installed (on an accelerator host it costs host memory for little; the ``cnnjax``
    command's choice).
  - ``bf16_matmul``: bfloat16 convolutions as patch matmuls by default (see
    :func:`cpu_forms`); ``None``: where this CPU has AMX-BF16 or AVX512-BF16 units.

  GPU and TPU computations are unaffected by the flag and the forms.

  Returns:
    What was changed.

  Raises:
    RuntimeError: a JAX backend has already started (its flags can no longer change).

  Example:
    >>> import cnnjax
    >>> cnnjax.configure_cpu()  # doctest: +SKIP
    CpuSettings(xla_flag=True, allocator=False, bf16_matmul=False)
  """
  if not isinstance(xla_flag, bool):
    raise ValueError(f"configure_cpu: xla_flag got {xla_flag!r}; expected True or False.")
  for name, value in (("allocator", allocator), ("bf16_matmul", bf16_matmul)):
    if value is not None and not isinstance(value, bool):
      raise ValueError(f"configure_cpu: {name} got {value!r}; expected True, False or None.")
  if _backend_started():
    raise RuntimeError(
        "configure_cpu: a JAX backend has already started, so XLA's flags can no longer "
        "change; call cnnjax.configure_cpu() before the first JAX computation (at the top "
        "of the script, before anything runs on a device)."
    )
  flag = _xla_flags.apply() if xla_flag else False
  if allocator is None:
    allocator = not _accelerator_plugin()
  malloc = _malloc.apply() if allocator else False
  if bf16_matmul is None:
    bf16_matmul = cpu_bf16.has_bf16_matmul()
  forms.set_default(bf16_matmul=bf16_matmul)
  return CpuSettings(xla_flag=flag, allocator=malloc, bf16_matmul=bf16_matmul)
