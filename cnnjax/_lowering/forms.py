"""Which XLA:CPU forms a convolution may take: a setting that jit's cache sees.

The choice is a ``jax.make_user_context``: its value is part of the key of jit's tracing
and compilation caches, so a function traced with the forms on is traced again when it
is called with them off (an environment variable read while tracing would be ignored by
a cached trace). :func:`cnnjax.cpu_forms` changes it for a block of code;
``CNNJAX_CPU_LOWERING=0`` sets its default off when cnnjax is imported (for whole
processes, e.g. ``cnnjax train``); :func:`cnnjax.configure_cpu` turns the bf16 path on
where the CPU has bf16 matmul units. The program a function traces to is therefore a
function of its inputs and this value alone, never of the machine that traced it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import jax

from cnnjax import _env

__all__ = ["OPT_OUT", "CpuForms", "cpu_forms", "current", "set_default"]

OPT_OUT = "CNNJAX_CPU_LOWERING"


class CpuForms(NamedTuple):
  """The XLA:CPU forms a convolution may take (GPU and TPU never compile them).

  Attributes:
    enabled: every XLA:CPU form; ``False`` gives lax's one convolution, as on GPU/TPU.
    rows: the row-stacked input gradient and the weight-gradient forms of
      ``cnnjax._lowering.cpu_rows`` (with ``enabled``).
    bf16_matmul: bfloat16 convolutions as patch matmuls (``cnnjax._lowering.cpu_bf16``;
      fast on CPUs with AMX-BF16 or AVX512-BF16, slow elsewhere). Off unless asked for.
  """

  enabled: bool = True
  rows: bool = True
  bf16_matmul: bool = False


_SETTING = jax.make_user_context(default_value=CpuForms(enabled=_env.switch(OPT_OUT)))


def current() -> CpuForms:
  """The forms in force where this is called (while tracing: those of the trace)."""
  return _SETTING.value


def _changed(
    enabled: bool | None, rows: bool | None, bf16_matmul: bool | None, *, op: str
) -> CpuForms:
  changes = {}
  for name, value in (("enabled", enabled), ("rows", rows), ("bf16_matmul", bf16_matmul)):
    if value is None:
      continue
    if not isinstance(value, bool):
      raise ValueError(f"{op}: {name} got {value!r}; expected True, False or None.")
    changes[name] = value
  return current()._replace(**changes)


@contextlib.contextmanager
def cpu_forms(
    *, enabled: bool | None = None, rows: bool | None = None, bf16_matmul: bool | None = None
) -> Iterator[CpuForms]:
  """Chooses cnnjax's XLA:CPU convolution forms inside a ``with`` block.

  Functions traced inside the block take these forms, and jit traces and compiles them
  anew for it (the choice is part of its cache key). ``None`` keeps a setting as it is.

  Args:
    enabled: ``False``: lax's one ``conv_general_dilated`` for every float convolution,
      the form GPUs and TPUs run (integer inputs keep their exact patch form).
    rows: the row-stacked input gradient, blocked weight gradients and their barriers.
    bf16_matmul: bfloat16 convolutions as patch matmuls.

  Yields:
    The forms in force inside the block.

  Example:
    >>> import jax, jax.numpy as jnp, cnnjax
    >>> f = jax.jit(lambda x, w: cnnjax.cross_correlate(x, w, padding="SAME"))
    >>> x, w = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    >>> with cnnjax.cpu_forms(enabled=False):
    ...   plain = f(x, w)
    >>> bool(jnp.array_equal(plain, f(x, w)))
    True
  """
  value = _changed(enabled, rows, bf16_matmul, op="cpu_forms")
  with _SETTING(value):
    yield value


def set_default(*, bf16_matmul: bool) -> None:
  """Sets the process-wide default of ``bf16_matmul`` (:func:`cnnjax.configure_cpu`)."""
  _SETTING.set_global(_changed(None, None, bf16_matmul, op="configure_cpu"))
