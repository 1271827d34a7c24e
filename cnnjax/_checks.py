"""Argument checks and dtype rules shared by every public op (one copy of each).

Every op in cnnjax validates its arguments with these helpers, so that the same input
gets the same answer and the same error message everywhere:

- :func:`is_int` accepts Python ints and NumPy integer scalars (``np.int64(2)``,
  ``np.uint8(2)``), never ``bool``; integer configuration must also fit int64 (what lax
  takes: :data:`INT64_MAX`), and :func:`check_bool` takes only ``bool`` (and NumPy's);
- a configuration value of the wrong type raises :class:`ArgumentTypeError`, a
  ``ValueError`` like every other refused configuration value (and a ``TypeError``);
- :func:`compute_dtype` is the dtype a convolution-family op computes in;
  :func:`accumulation_dtype` the dtype its sums accumulate in; :func:`result_dtype` the
  dtype it returns (``preferred_element_type`` as in ``lax.conv_general_dilated``);
- :func:`check_kernel`, :func:`check_groups`: kernel rank and feature groups.

Geometry (stride, padding, dilation, tile) is canonicalised in :mod:`cnnjax.padding`.
"""

from __future__ import annotations

import numbers
from typing import TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "INT64_MAX",
    "ArgumentTypeError",
    "accumulation_dtype",
    "check_bool",
    "check_extent",
    "check_groups",
    "check_kernel",
    "check_positive_int",
    "compute_dtype",
    "fits_int64",
    "is_int",
    "mean_dtype",
    "result_dtype",
]


# The largest integer configuration value (stride, padding, sizes, ...): lax takes int64,
# and XLA's shape arithmetic is int64. Larger values are refused by name, before they
# reach lax as an OverflowError or a pybind11 TypeError.
INT64_MAX = 2**63 - 1


class ArgumentTypeError(ValueError, TypeError):
  """A configuration argument of the wrong type: a float stride, a string window, an int
  where a bool is expected.

  A ``ValueError``, as every refused configuration value is, so one ``except
  ValueError`` catches them all; and a ``TypeError``, Python's convention for a wrong
  type (and what cnnjax raised for these before). NumPy's ``AxisError`` (a
  ``ValueError`` and an ``IndexError``) is the precedent.
  """


def is_int(value: object) -> TypeGuard[int | np.integer]:
  """Whether ``value`` is an integer scalar: a Python int or a NumPy integer, not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def fits_int64(value) -> bool:
  """Whether the integer ``value`` lies in int64's range (what lax takes)."""
  return -INT64_MAX - 1 <= int(value) <= INT64_MAX


def check_positive_int(value, *, name: str, op: str) -> int:
  """Returns ``value`` as a Python int, or raises a ``ValueError`` naming ``name``."""
  if not is_int(value) or value < 1:
    raise ValueError(f"{op}: {name} got {value!r}; expected a positive int.")
  if not fits_int64(value):
    raise ValueError(
        f"{op}: {name} got {value!r}; expected a positive int of at most 2**63 - 1 "
        "(int64, what lax takes)."
    )
  return int(value)


def check_bool(value, *, name: str, op: str) -> bool:
  """Returns ``value`` as a bool if it is one (``bool`` or ``np.bool_``).

  Raises:
    ArgumentTypeError: anything else (``"no"``, ``1``, ``None``), naming ``name``: a
      truthy string must not switch an option on.
  """
  if not isinstance(value, (bool, np.bool_)):
    raise ArgumentTypeError(f"{op}: {name} got {value!r}; expected a bool (True or False).")
  return bool(value)


def check_extent(shape, dtype, *, name: str, value, op: str) -> None:
  """Refuses a result shape whose size in bytes does not fit int64.

  XLA aborts the process (jaxlib 0.10.2: "overflow in static extent product") on such a
  shape instead of raising. ``value`` is what the user gave as ``name`` (the shape or
  the size that sets ``shape``).
  """
  size = 1
  for n in shape:
    size *= int(n)
  dtype = jnp.dtype(dtype)
  if size * dtype.itemsize > INT64_MAX:
    raise ValueError(
        f"{op}: {name} got {value!r}, a result of {size} {dtype.name} elements "
        f"({size * dtype.itemsize} bytes); expected at most 2**63 - 1 bytes (int64: XLA "
        "aborts the process on larger shapes)."
    )


def _kind(dtype) -> str:
  if jnp.issubdtype(dtype, jnp.complexfloating):
    return "complex"
  if jnp.issubdtype(dtype, jnp.floating):
    return "float"
  if jnp.issubdtype(dtype, jnp.integer):
    return "int"
  return "other"


def compute_dtype(x: jax.Array, w: jax.Array, *, op: str, names=("x", "w")):
  """The dtype a convolution-family op computes in.

  The input's dtype if it is inexact (floating or complex); else the kernel's if that
  is inexact; two integer dtypes promote (``int8`` with ``int8`` stays ``int8``). A
  complex operand makes the result complex (``float32`` with ``complex64`` →
  ``complex64``).

  Raises:
    TypeError: an operand is neither integer, floating nor complex (e.g. ``bool``).
  """
  kinds = []
  for name, a in zip(names, (x, w), strict=True):
    kind = _kind(a.dtype)
    if kind == "other":
      raise TypeError(
          f"{op}: {name} has dtype {a.dtype}; expected an integer, floating or complex " "dtype."
      )
    kinds.append(kind)
  if "complex" in kinds:
    return jnp.promote_types(x.dtype, w.dtype)
  if kinds[0] == "float":
    return x.dtype
  if kinds[1] == "float":
    return w.dtype
  return jnp.promote_types(x.dtype, w.dtype)


def accumulation_dtype(*dtypes):
  """The dtype sums of values of ``dtypes`` (inputs and result) accumulate in.

  Half-precision floats (bfloat16, float16) accumulate in float32, as XLA's
  convolutions do; integers narrower than 32 bits in int32 (their wrap-around, where a
  result is cast back, is the same as accumulating in the narrow type); everything else
  in its own dtype. Of several dtypes, the widest such accumulator.
  """
  accs = []
  for dtype in dtypes:
    dtype = jnp.dtype(dtype)
    kind = _kind(dtype)
    if kind == "float" and dtype.itemsize < 4:
      dtype = jnp.dtype(jnp.float32)
    elif kind == "int" and dtype.itemsize < 4:
      dtype = jnp.dtype(jnp.int32)
    accs.append(dtype)
  return max(accs, key=lambda d: d.itemsize)


def mean_dtype(dtype):
  """The dtype of an average (or any non-integral function) of ``dtype`` values.

  Inexact dtypes keep their own; integers give float32 (the sum is exact in
  :func:`accumulation_dtype`; only the final division rounds).
  """
  dtype = jnp.dtype(dtype)
  return jnp.dtype(jnp.float32) if _kind(dtype) == "int" else dtype


def result_dtype(dtype, preferred_element_type, *, op: str):
  """The dtype an op returns: ``preferred_element_type`` if given, else ``dtype``.

  As in ``lax.conv_general_dilated``, the preferred type must be of the same kind as
  the computation (an integer type for integer inputs, a floating type for floating
  ones, complex for complex) and may be wider or narrower.

  Raises:
    TypeError: the preferred type is of another kind or not a dtype.
  """
  if preferred_element_type is None:
    return jnp.dtype(dtype)
  try:
    preferred = jnp.dtype(preferred_element_type)
  except TypeError:
    raise TypeError(
        f"{op}: preferred_element_type got {preferred_element_type!r}; expected None or " "a dtype."
    ) from None
  if _kind(preferred) != _kind(dtype):
    raise TypeError(
        f"{op}: preferred_element_type got {preferred.name} for a computation in "
        f"{jnp.dtype(dtype).name}; expected a {_kind(dtype)} dtype (as "
        "lax.conv_general_dilated)."
    )
  return preferred


def check_kernel(w: jax.Array, *, op: str, name: str = "w") -> int:
  """Checks a ``[*kernel_spatial, C_in // groups, C_out]`` kernel; returns its spatial rank."""
  num_spatial = w.ndim - 2
  if num_spatial not in (1, 2, 3):
    raise ValueError(
        f"{op}: {name} has shape {tuple(w.shape)} (rank {w.ndim}); expected rank 3, 4 "
        "or 5: [*kernel(d), C_in // groups, C_out] with d = 1, 2 or 3 spatial dims."
    )
  if 0 in w.shape[:num_spatial]:
    raise ValueError(
        f"{op}: {name} has a zero-size kernel dim: shape {tuple(w.shape)}, kernel "
        f"{tuple(w.shape[:num_spatial])}; expected every kernel spatial size >= 1."
    )
  return num_spatial


def check_groups(groups, c_in: int, w_in: int, c_out: int, *, op: str) -> int:
  """Checks feature groups against the channels; returns ``groups`` as an int."""
  groups = check_positive_int(groups, name="groups", op=op)
  if c_out % groups:
    raise ValueError(
        f"{op}: the kernel's out_channels ({c_out}) is not divisible by groups "
        f"({groups}); expected out_channels to be a multiple of groups."
    )
  if c_in != w_in * groups:
    raise ValueError(
        f"{op}: channel mismatch: x has {c_in} channels but the kernel expects "
        f"in_channels // groups = {w_in} with groups={groups} (so {w_in * groups} "
        "channels); expected x.shape[-1] == w.shape[-2] * groups."
    )
  return groups
