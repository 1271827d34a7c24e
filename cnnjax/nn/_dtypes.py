"""The ``dtype`` / ``param_dtype`` arguments every :mod:`cnnjax.nn` module takes (Flax's
convention): checked once here, at construction, with a one-line error naming the argument."""

from __future__ import annotations

from typing import Any, Literal, overload

import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["check_dtype", "check_dtypes", "compute"]


@overload
def check_dtype(value: Any, *, name: str, op: str, optional: Literal[False]) -> jnp.dtype:
  ...


@overload
def check_dtype(value: Any, *, name: str, op: str, optional: bool = True) -> jnp.dtype | None:
  ...


def check_dtype(value: Any, *, name: str, op: str, optional: bool = True) -> jnp.dtype | None:
  """``value`` as a ``jnp.dtype`` (None stays None when ``optional``)."""
  if value is None and optional:
    return None
  try:
    dtype = None if value is None else jnp.dtype(value)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(
        f"{op}: {name} got {value!r}; expected a floating dtype such as 'float32', "
        f"'bfloat16' or 'float16'{' (or None)' if optional else ''}."
    )
  return dtype


def compute(x: ArrayLike, dtype: Any) -> ArrayLike:
  """``x`` in the computation dtype ``dtype`` (None: unchanged)."""
  return x if dtype is None else jnp.asarray(x, dtype)


def check_dtypes(dtype: Any, param_dtype: Any, *, op: str) -> tuple[jnp.dtype | None, jnp.dtype]:
  """``(dtype, param_dtype)`` checked: ``dtype`` may be None, ``param_dtype`` may not."""
  return (
      check_dtype(dtype, name="dtype", op=op),
      check_dtype(param_dtype, name="param_dtype", op=op, optional=False),
  )
