"""cnnjax: a functional JAX toolkit for studying convolutional networks.

Pure functions on ``jax.lax`` primitives (batched, channels-last arrays; keyword-only
configuration), re-exported here so that ``from cnnjax import cross_correlate`` works.
The Flax-based parts (``cnnjax.nn``, ``cnnjax.models``, ``cnnjax.train``,
``cnnjax.summary``) are imported on first use, so importing the ops stays light.
Importing changes nothing process-wide; :func:`configure_cpu` tunes a CPU process when
called.
"""

import importlib
from typing import TYPE_CHECKING, Any

from cnnjax import arithmetic, equivariance, padding
from cnnjax.adaptive_pool import adaptive_avg_pool, adaptive_max_pool
from cnnjax.arithmetic import op_count, output_size, param_count, receptive_field
from cnnjax.conv import conv_transpose, convolve, cross_correlate
from cnnjax.deform import deform_conv
from cnnjax.equivariance import (
    assert_equivariant,
    assert_invariant,
    equivariance_error,
    interior_region,
    invariance_error,
    output_shift,
    shift_consistency,
)
from cnnjax.group import group_conv, group_pool, lift_conv
from cnnjax.local import locally_connected
from cnnjax.matrix import conv_matrix
from cnnjax.normalization import local_response_norm
from cnnjax.padding import PADDING_MODES, effective_kernel_size
from cnnjax.pooling import (
    avg_pool,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
    maxout,
    polyphase_downsample,
)
from cnnjax.runtime import CpuForms, CpuSettings, configure_cpu, cpu_forms
from cnnjax.tiled import tiled_conv
from cnnjax.unfold import fold, unfold
from cnnjax.unpool import max_unpool
from cnnjax.weight_grad import conv_weight_grad

__version__ = "0.1.0"

if TYPE_CHECKING:  # the lazily imported names of _LAZY, as type checkers should see them
  from cnnjax import data, models, nn, train
  from cnnjax.summary import Summary, summary
  from cnnjax.train import TrainConfig

# name -> (module, attribute or None for the module itself), imported on first access.
_LAZY = {
    "data": ("cnnjax.data", None),
    "models": ("cnnjax.models", None),
    "nn": ("cnnjax.nn", None),
    "train": ("cnnjax.train", None),
    "TrainConfig": ("cnnjax.train", "TrainConfig"),
    "summary": ("cnnjax.summary", "summary"),
    "Summary": ("cnnjax.summary", "Summary"),
}


def __getattr__(name: str) -> Any:
  if name not in _LAZY:
    raise AttributeError(f"module 'cnnjax' has no attribute {name!r}")
  module_name, attr = _LAZY[name]
  module = importlib.import_module(module_name)
  value = module if attr is None else getattr(module, attr)
  globals()[name] = value  # also shadows the `summary` submodule with its function
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PADDING_MODES",
    "CpuForms",
    "CpuSettings",
    "Summary",
    "TrainConfig",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "arithmetic",
    "assert_equivariant",
    "assert_invariant",
    "avg_pool",
    "blur_pool",
    "conv_matrix",
    "conv_transpose",
    "configure_cpu",
    "conv_weight_grad",
    "convolve",
    "cpu_forms",
    "cross_correlate",
    "data",
    "deform_conv",
    "effective_kernel_size",
    "equivariance",
    "equivariance_error",
    "fold",
    "global_avg_pool",
    "global_max_pool",
    "group_conv",
    "group_pool",
    "interior_region",
    "invariance_error",
    "lift_conv",
    "local_response_norm",
    "locally_connected",
    "lp_pool",
    "max_pool",
    "max_unpool",
    "maxout",
    "models",
    "nn",
    "op_count",
    "output_shift",
    "output_size",
    "padding",
    "param_count",
    "polyphase_downsample",
    "receptive_field",
    "shift_consistency",
    "summary",
    "tiled_conv",
    "train",
    "unfold",
]
