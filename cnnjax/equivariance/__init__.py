"""Testing equivariance and invariance of functions on images.

Tools for researchers to check their own functions and Flax modules: a function ``f``
is *equivariant* to a transform ``g`` when ``f(g(x)) = g'(f(x))`` for the matching
output transform ``g'`` (often ``g`` itself), and *invariant* when ``f(g(x)) = f(x)``.

* Transforms are any callable array → array. The factories here (:func:`translate`,
  :func:`flip`, :func:`rot90`, :func:`transpose`, :func:`compose`) are pure and
  jit-able and act on the spatial axes of batched, channels-last arrays
  ``[N, *spatial, C]``; each also knows how it acts on an HWIO kernel
  (:meth:`Transform.on_kernel`), so that ``g(f_w(x)) = f_{g(w)}(g(x))`` can be
  written down for a convolution ``f_w``.
* :func:`equivariance_error` and :func:`invariance_error` measure the relative error;
  :func:`assert_equivariant` and :func:`assert_invariant` are one-line test
  assertions that say where the largest difference is.
* :func:`interior_region` and :func:`output_shift` give the region that a
  zero-padded (or strided) stack leaves exactly comparable, and the output shift of a
  strided stack, from :mod:`cnnjax.arithmetic`.
* :func:`images`, :func:`kernels`, :func:`conv_settings` and :func:`conv_problems`
  are Hypothesis strategies (Hypothesis is imported only when they are called).
* :func:`shift_consistency` is Zhang (2019)'s classification consistency.
* :func:`plane_action` and :func:`group_action` are the actions of the groups p4 and
  p4m (:mod:`cnnjax.group`) on images and on maps over the group.
* :func:`report` says where a (trained) network loses its symmetry: the equivariance
  error of each layer under each transform, split into the interior and the border,
  and what the transforms do to its predictions. Transforms can be written as specs
  (:func:`parse_transforms`: ``"shift:1,2,4"``, ``"rot90+flip"``) or drawn at random
  (:func:`random_elements`).

The package has one module per concern: ``transforms``, ``checks`` (errors and
assertions), ``regions``, ``consistency``, ``strategies``, ``group_actions``, ``specs``
(transform specs and random elements) and ``report`` (the layer-by-layer report, which
imports Flax only when called); every public name is re-exported here.

Example:
  >>> import jax.numpy as jnp
  >>> from cnnjax.conv import cross_correlate
  >>> x = jnp.ones((1, 8, 8, 1)).at[0, 2, 3, 0].set(5.0)
  >>> w = jnp.arange(9.0).reshape(3, 3, 1, 1)
  >>> f = lambda x: cross_correlate(x, w, padding="SAME", padding_mode="circular")
  >>> assert_equivariant(f, x, translate((1, 2)))  # passes silently
"""

from cnnjax.equivariance.checks import (
    assert_equivariant,
    assert_invariant,
    default_tolerance,
    equivariance_error,
    invariance_error,
)
from cnnjax.equivariance.consistency import shift_consistency
from cnnjax.equivariance.group_actions import group_action, plane_action
from cnnjax.equivariance.regions import interior_region, output_shift
from cnnjax.equivariance.report import (
    EquivarianceReport,
    LayerError,
    LogitsError,
    TransformReport,
    report,
)
from cnnjax.equivariance.specs import parse_transforms, random_elements
from cnnjax.equivariance.strategies import conv_problems, conv_settings, images, kernels
from cnnjax.equivariance.transforms import (
    Reflection,
    Rotation,
    Step,
    Transform,
    Translation,
    Transposition,
    compose,
    flip,
    rot90,
    translate,
    transpose,
)

__all__ = [
    "EquivarianceReport",
    "LayerError",
    "LogitsError",
    "Reflection",
    "Rotation",
    "Step",
    "Transform",
    "TransformReport",
    "Translation",
    "Transposition",
    "assert_equivariant",
    "assert_invariant",
    "compose",
    "conv_problems",
    "conv_settings",
    "default_tolerance",
    "equivariance_error",
    "flip",
    "group_action",
    "images",
    "interior_region",
    "invariance_error",
    "kernels",
    "output_shift",
    "parse_transforms",
    "plane_action",
    "random_elements",
    "report",
    "rot90",
    "shift_consistency",
    "translate",
    "transpose",
]
