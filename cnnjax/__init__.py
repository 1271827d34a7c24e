"""cnnjax: a functional JAX toolkit for studying convolutional networks.

Pure functions on ``jax.lax`` primitives (batched, channels-last arrays; keyword-only
configuration), re-exported here so that ``from cnnjax import cross_correlate`` works.
"""

from cnnjax import arithmetic, data, padding
from cnnjax.arithmetic import op_count, output_size, param_count, receptive_field
from cnnjax.conv import conv_transpose, convolve, cross_correlate
from cnnjax.padding import PADDING_MODES, effective_kernel_size

__version__ = "0.1.0"

__all__ = [
    "PADDING_MODES",
    "arithmetic",
    "data",
    "op_count",
    "output_size",
    "param_count",
    "receptive_field",
    "conv_transpose",
    "convolve",
    "cross_correlate",
    "effective_kernel_size",
    "padding",
]
