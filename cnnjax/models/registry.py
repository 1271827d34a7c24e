"""The model zoo's registry: names → model classes (and fixed options).

A family file registers its models with :func:`register`; :mod:`cnnjax.models`
imports every family file, so adding a family (a later ``"fastnet"``, say) is one new
file that calls ``register`` and one line in ``cnnjax/models/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import numpy as np
from flax import nnx

__all__ = [
    "abstract",
    "default_input_shape",
    "default_num_classes",
    "get",
    "model_class",
    "names",
    "register",
]

_MODELS: dict[str, tuple[type, dict[str, Any]]] = {}

_C = TypeVar("_C", bound=type)


@overload
def register(name: str, cls: None = None, **fixed: Any) -> Callable[[_C], _C]:
  ...


@overload
def register(name: str, cls: _C, **fixed: Any) -> _C:
  ...


def register(name: str, cls: _C | None = None, **fixed: Any) -> Callable[[_C], _C] | _C:
  """Adds a model class to the zoo under ``name``.

  The class takes ``num_classes`` and ``rngs`` keywords (and any options), and has
  ``default_input_shape`` (``(H, W, C)``) and ``default_num_classes`` attributes.

  Args:
    name: the zoo name, e.g. ``"resnet20"``.
    cls: the model class; omit it to use ``register`` as a class decorator.
    **fixed: options the name fixes (e.g. ``depth=20`` for ``"resnet20"``).

  Returns:
    ``cls`` (or a decorator that registers and returns its class).

  Example:
    >>> from cnnjax.models.resnet import CifarResNet
    >>> register("resnet20", CifarResNet, depth=20)  # the zoo's own line  # doctest: +SKIP
    >>> model_class("resnet20") is CifarResNet  # registered when cnnjax.models loads
    True
  """

  def add(cls: _C) -> _C:
    if name in _MODELS:
      raise ValueError(f"register: name got {name!r}, which is already registered.")
    _MODELS[name] = (cls, dict(fixed))
    return cls

  return add if cls is None else add(cls)


def names() -> tuple[str, ...]:
  """The registered model names, in registration order."""
  return tuple(_MODELS)


def _entry(name: str, *, op: str) -> tuple[type, dict[str, Any]]:
  if name not in _MODELS:
    raise ValueError(f"{op}: name got {name!r}; expected one of {names()}.")
  return _MODELS[name]


def model_class(name: str) -> type:
  """The class registered under ``name``."""
  return _entry(name, op="model_class")[0]


def default_input_shape(name: str) -> tuple[int, ...]:
  """The input shape ``(H, W, C)`` a zoo model is built for by default."""
  return tuple(_entry(name, op="default_input_shape")[0].default_input_shape)


def default_num_classes(name: str) -> int:
  """The number of classes a zoo model has by default (10 for CIFAR nets, 1000 for
  ImageNet nets)."""
  return _entry(name, op="default_num_classes")[0].default_num_classes


def get(name: str, *, num_classes: int | None = None, rngs: nnx.Rngs, **options: Any) -> nnx.Module:
  """Builds the zoo model ``name``.

  Args:
    name: one of :func:`names`.
    num_classes: the number of outputs; default the model's (see
      :func:`default_num_classes`).
    rngs: the ``nnx.Rngs`` for the parameters (and dropout).
    **options: the model's options, e.g. ``input_shape=(32, 32, 3)``,
      ``conv="tiled"``, ``tile=2``; see each model's docstring.

  Returns:
    The model, an ``nnx.Module`` taking ``[N, H, W, C]`` and returning logits
    ``[N, num_classes]``. Models with dropout or batch norm start in training mode;
    call ``model.eval()`` for inference.

  Example:
    >>> import jax.numpy as jnp
    >>> model = get("seed-cnn", num_classes=10, rngs=nnx.Rngs(0))
    >>> model(jnp.ones((2, 32, 32, 3))).shape
    (2, 10)
  """
  cls, fixed = _entry(name, op="get")
  clash = sorted(set(fixed) & set(options))
  if clash:
    raise ValueError(
        f"get: options {clash} got {[options[k] for k in clash]!r}, but model {name!r} "
        f"fixes {({k: fixed[k] for k in clash})!r}; expected them left out."
    )
  if num_classes is None:
    num_classes = cls.default_num_classes
  return cls(num_classes=num_classes, rngs=rngs, **fixed, **options)


def _host_counters(rngs: nnx.Rngs) -> nnx.Rngs:
  """Gives ``rngs``' streams NumPy counters, so that drawing keys under a trace does
  not store a traced counter: JAX builds an error message (quadratic in the size of
  the trace) each time flax stores one, which made abstract ResNet-110 builds take
  seconds. Keys and shapes are unchanged; on an unexpected flax layout it does nothing."""
  for stream in vars(rngs).values():
    count = getattr(stream, "count", None)
    if isinstance(stream, nnx.RngStream) and isinstance(count, nnx.RngCount):
      # flax annotates the value as a jax.Array; a NumPy counter is the point here.
      counter = np.zeros(count.shape, np.uint32)
      stream.count = nnx.RngCount(counter, tag=stream.tag)  # pyright: ignore[reportArgumentType]
  return rngs


def abstract(
    name: str, *, num_classes: int | None = None, seed: int = 0, **options: Any
) -> nnx.Module:
  """Builds the zoo model ``name`` abstractly, under ``nnx.eval_shape``.

  Its parameters are ``jax.ShapeDtypeStruct``s: nothing is allocated (VGG-16 costs no
  memory), yet the model can be traced (``nnx.eval_shape``, :func:`cnnjax.summary.summary`)
  and its parameters counted.

  Args:
    name: as :func:`get`.
    num_classes: as :func:`get`.
    **options: as :func:`get`.
    seed: the seed of the ``nnx.Rngs`` it is built with.

  Returns:
    The abstract model.

  Example:
    >>> import jax
    >>> model = abstract("vgg16")
    >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    138357544
  """
  return nnx.eval_shape(
      lambda: get(name, num_classes=num_classes, rngs=_host_counters(nnx.Rngs(seed)), **options)
  )
