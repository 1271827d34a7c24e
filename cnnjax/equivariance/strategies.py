"""Hypothesis strategies for images, kernels and convolution problems.

Hypothesis is imported only when a strategy is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from cnnjax import padding as _padding
from cnnjax._checks import is_int

if TYPE_CHECKING:  # Hypothesis is a test extra, imported when a strategy is called
  from hypothesis.strategies import SearchStrategy

__all__ = ["conv_problems", "conv_settings", "images", "kernels"]


def _hypothesis():
  try:
    from hypothesis import strategies
  except ImportError as e:  # pragma: no cover - hypothesis is a test extra
    raise ImportError(
        "cnnjax.equivariance strategies need Hypothesis: pip install hypothesis"
    ) from e
  return strategies


def _bounds(value, *, name: str, op: str, minimum: int = 1) -> tuple[int, int]:
  """An int ``v`` → ``(v, v)``; a pair ``(lo, hi)`` → itself, both ``>= minimum``."""
  if is_int(value):
    lo = hi = int(value)
  elif isinstance(value, Sequence) and len(value) == 2 and all(is_int(v) for v in value):
    lo, hi = (int(v) for v in value)
  else:
    lo, hi = minimum - 1, minimum - 2  # fails below
  if not minimum <= lo <= hi:
    raise ValueError(
        f"{op}: {name} got {value!r}; expected an int >= {minimum} or a (min, max) pair "
        f"with {minimum} <= min <= max."
    )
  return lo, hi


def _normal(seed: int, shape: tuple[int, ...], dtype) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _spatial_sizes(st, draw, bounds, num_spatial, square, odd=False):
  lo, hi = bounds
  values = st.integers(lo, hi)
  if odd:
    values = values.filter(lambda v: v % 2 == 1)
  if square:
    return (draw(values),) * num_spatial
  return tuple(draw(values) for _ in range(num_spatial))


def images(
    *,
    num_spatial: int = 2,
    batch: int | tuple[int, int] = (1, 2),
    size: int | tuple[int, int] = (4, 8),
    channels: int | tuple[int, int] = (1, 3),
    square: bool = False,
    dtype: DTypeLike = np.float64,
) -> SearchStrategy[np.ndarray]:
  """Hypothesis strategy for images ``[N, *spatial, C]`` with standard normal values.

  Values come from a drawn seed (``np.random.default_rng``), so they are well
  conditioned (no huge or subnormal floats) and examples shrink by shape.

  Args:
    num_spatial: the number of spatial dims.
    batch: the batch size, an int or an inclusive ``(min, max)`` range.
    size: each spatial size, an int or a ``(min, max)`` range.
    channels: the channel count, an int or a ``(min, max)`` range.
    square: one size drawn for every spatial dim.
    dtype: a NumPy dtype.

  Returns:
    A strategy of NumPy arrays.

  Example:
    >>> import hypothesis, jax
    >>> from cnnjax.equivariance import assert_equivariant, flip
    >>> @hypothesis.settings(max_examples=5, deadline=None)  # deadline: jit compiles
    ... @hypothesis.given(images(batch=1, size=(5, 6), channels=2))
    ... def test_relu_flip(x):
    ...   assert_equivariant(jax.nn.relu, x, flip(0))
    >>> test_relu_flip()  # passes silently
  """
  op = "images"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  batch = _bounds(batch, name="batch", op=op)
  size = _bounds(size, name="size", op=op)
  channels = _bounds(channels, name="channels", op=op)

  @st.composite
  def draw_image(draw):
    shape = (
        draw(st.integers(*batch)),
        *_spatial_sizes(st, draw, size, num_spatial, square),
        draw(st.integers(*channels)),
    )
    return _normal(draw(st.integers(0, 2**32 - 1)), shape, dtype)

  return draw_image()


def kernels(
    *,
    num_spatial: int = 2,
    size: int | tuple[int, int] = (1, 3),
    in_channels: int | tuple[int, int] = (1, 3),
    out_channels: int | tuple[int, int] = (1, 3),
    square: bool = False,
    odd: bool = False,
    dtype: DTypeLike = np.float64,
) -> SearchStrategy[np.ndarray]:
  """Hypothesis strategy for HWIO kernels ``[*kernel_spatial, C_in, C_out]``.

  Args:
    num_spatial: the number of spatial dims.
    size: each kernel size, an int or an inclusive ``(min, max)`` range.
    in_channels: ``C_in``, an int or a range.
    out_channels: ``C_out``, an int or a range.
    square: one size for every spatial dim.
    odd: only odd sizes (a centred kernel: ``"SAME"`` padding is then symmetric).
    dtype: a NumPy dtype.

  Returns:
    A strategy of NumPy arrays with standard normal values.
  """
  op = "kernels"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  size_bounds = _bounds(size, name="size", op=op)
  if odd and size_bounds[0] == size_bounds[1] and size_bounds[0] % 2 == 0:
    raise ValueError(
        f"{op}: size got {size!r} with odd=True; expected a range holding an odd size."
    )
  size = size_bounds
  in_channels = _bounds(in_channels, name="in_channels", op=op)
  out_channels = _bounds(out_channels, name="out_channels", op=op)

  @st.composite
  def draw_kernel(draw):
    shape = (
        *_spatial_sizes(st, draw, size, num_spatial, square, odd),
        draw(st.integers(*in_channels)),
        draw(st.integers(*out_channels)),
    )
    return _normal(draw(st.integers(0, 2**32 - 1)), shape, dtype)

  return draw_kernel()


def conv_settings(
    *,
    num_spatial: int = 2,
    stride: int | tuple[int, int] = (1, 2),
    dilation: int | tuple[int, int] = (1, 2),
    padding: Sequence[Any] = ("VALID", "SAME"),
    padding_mode: Sequence[str] = ("zeros", "circular"),
) -> SearchStrategy[dict[str, Any]]:
  """Hypothesis strategy for keyword arguments of :func:`cnnjax.conv.cross_correlate`.

  Args:
    num_spatial: the number of spatial dims.
    stride: each dim's stride, an int or an inclusive ``(min, max)`` range.
    dilation: each dim's dilation, an int or a range.
    padding: the padding specs to choose from.
    padding_mode: the padding modes to choose from.

  Returns:
    A strategy of dicts ``{"stride": (..), "dilation": (..), "padding": ..,
    "padding_mode": ..}`` with one stride and dilation per spatial dim.

  Example:
    >>> import hypothesis
    >>> from cnnjax.arithmetic import output_size
    >>> @hypothesis.settings(max_examples=5)
    ... @hypothesis.given(conv_settings(stride=1, padding=("SAME",)))
    ... def test_same_keeps_size(settings):
    ...   for d in settings["dilation"]:
    ...     assert output_size(8, 3, padding="SAME", dilation=d) == 8
    >>> test_same_keeps_size()  # passes silently
  """
  op = "conv_settings"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  stride = _bounds(stride, name="stride", op=op)
  dilation = _bounds(dilation, name="dilation", op=op)
  for name, options in (("padding", padding), ("padding_mode", padding_mode)):
    if isinstance(options, str) or not isinstance(options, Sequence) or not options:
      raise ValueError(f"{op}: {name} got {options!r}; expected a non-empty sequence of options.")
  for mode in padding_mode:
    _padding.check_padding_mode(mode, op=op)

  def per_dim(lo_hi):
    return st.tuples(*(st.integers(*lo_hi) for _ in range(num_spatial)))

  return st.fixed_dictionaries(
      {
          "stride": per_dim(stride),
          "dilation": per_dim(dilation),
          "padding": st.sampled_from(tuple(padding)),
          "padding_mode": st.sampled_from(tuple(padding_mode)),
      }
  )


def conv_problems(
    *,
    num_spatial: int = 2,
    batch: int | tuple[int, int] = (1, 2),
    size: int | tuple[int, int] = (5, 9),
    kernel_size: int | tuple[int, int] = (1, 3),
    channels: int | tuple[int, int] = (1, 3),
    out_channels: int | tuple[int, int] = (1, 3),
    dtype: DTypeLike = np.float64,
    **settings: Any,
) -> SearchStrategy[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
  """Hypothesis strategy for consistent ``(x, w, settings)`` triples.

  ``x`` from :func:`images`, ``w`` from :func:`kernels` with ``C_in`` matching ``x``,
  and ``settings`` from :func:`conv_settings` (``**settings`` are passed to it),
  filtered so that the effective kernel fits the padded input.

  Returns:
    A strategy of ``(x, w, settings)`` for ``cross_correlate(x, w, **settings)``.

  Example:
    >>> import hypothesis
    >>> from cnnjax.conv import cross_correlate
    >>> from cnnjax.equivariance import assert_equivariant, translate
    >>> @hypothesis.settings(max_examples=5, deadline=None)  # deadline: jit compiles
    ... @hypothesis.given(
    ...     conv_problems(padding=("SAME",), padding_mode=("circular",), stride=1))
    ... def test_circular(problem):
    ...   x, w, kw = problem
    ...   f = lambda x: cross_correlate(x, w, **kw)
    ...   assert_equivariant(f, x, translate(1))
    >>> test_circular()  # passes silently
  """
  st = _hypothesis()
  from hypothesis import assume

  settings_strategy = conv_settings(num_spatial=num_spatial, **settings)
  channel_bounds = _bounds(channels, name="channels", op="conv_problems")

  @st.composite
  def draw_problem(draw):
    c = draw(st.integers(*channel_bounds))
    x = draw(images(num_spatial=num_spatial, batch=batch, size=size, channels=c, dtype=dtype))
    w = draw(
        kernels(
            num_spatial=num_spatial,
            size=kernel_size,
            in_channels=c,
            out_channels=out_channels,
            dtype=dtype,
        )
    )
    kw = draw(settings_strategy)
    geo_ok = True
    try:
      _padding.conv_geometry(
          x.shape[1:-1],
          w.shape[:-2],
          stride=kw["stride"],
          padding=kw["padding"],
          dilation=kw["dilation"],
          op="conv_problems",
      )
    except ValueError:
      geo_ok = False
    assume(geo_ok)
    return x, w, kw

  return draw_problem()
