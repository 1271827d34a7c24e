"""``"fastnet"``: the airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a
single GPU", arXiv:2404.00498; ``airbench94.py`` in KellerJordan/cifar10-airbench).

A frozen patch-whitening first convolution, three conv groups and a scaled linear head::

    whiten: conv(2, 24) + bias → GELU            frozen kernel: ±eigenvectors of the 2×2
                                                 patches' second-moment matrix / √(λ + ε)
    group(w): conv(3, w, same) → max-pool(2) → BN → GELU → conv(3, w, same) → BN → GELU
              for w = 64, 256, 256
    global max-pool → fc(num_classes, no bias) → × 1/9

Convolutions have no bias and a Dirac (identity) initialisation of their first
``min(C_in, C_out)`` filters (an implicit residual); BatchNorm has no scale (fixed at 1),
a learned offset, momentum 0.6 and ε = 1e-12, as airbench's. The whitening kernel is
data-dependent: :func:`whiten_init` computes it from training images, and ``cnnjax train``
calls it (through :meth:`FastNet.data_init`) before the first step. It is stored as a
:class:`FrozenParam`, not an ``nnx.Param``, so no optimizer updates or decays it; it is
saved with the rest of the model state.

Example:
  >>> model = FastNet(rngs=nnx.Rngs(0))
  >>> eigenvalues = whiten_init(model, jnp.ones((8, 32, 32, 3)))
  >>> model(jnp.ones((2, 32, 32, 3))).shape
  (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Initializer
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.models.builder import check_input, check_input_shape
from cnnjax.models.registry import register
from cnnjax.nn import Conv, GlobalMaxPool, MaxPool
from cnnjax.nn._dtypes import check_dtypes
from cnnjax.patches import extract_patches

__all__ = ["ConvGroup", "FastNet", "FrozenParam", "dirac_init", "whiten_init"]

# PyTorch's default conv/linear initialisation (airbench keeps it): U(±1/√fan_in).
_torch_default: Initializer = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class FrozenParam(nnx.Variable[jax.Array]):
  """A weight that training leaves alone: not an ``nnx.Param``, so it gets no gradient
  step, no weight decay and no optimizer state, yet it is checkpointed with the model."""


def dirac_init(*, base: Initializer = _torch_default) -> Initializer:
  """A conv kernel initialiser: ``base``, with the first ``min(C_in, C_out)`` filters set to
  the identity (1 at the kernel's centre on their own channel, 0 elsewhere).

  ``torch.nn.init.dirac_`` on airbench's filters: each group starts as an implicit
  residual. The centre of an even kernel is at ``size // 2``.

  Args:
    base: the initialiser of the other filters (default PyTorch's ``U(±1/√fan_in)``).

  Returns:
    An initialiser ``(key, shape, dtype) -> [*kernel, C_in, C_out]``.

  Example:
    >>> w = dirac_init()(jax.random.key(0), (3, 3, 2, 4), jnp.float32)
    >>> w[1, 1, :, :2].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    w = base(key, shape, dtype)
    k = min(shape[-2], shape[-1])
    centre = tuple(s // 2 for s in shape[:-2])
    eye = (
        jnp.zeros(shape[:-2] + (shape[-2], k), dtype)
        .at[(*centre, slice(None), slice(None))]
        .set(jnp.eye(shape[-2], k, dtype=dtype))
    )
    return w.at[..., :k].set(eye)

  return init


def _gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)  # torch.nn.GELU(): the exact erf form


def _batch_norm(
    features: int, *, momentum: float, epsilon: float, param_dtype: Any, rngs: nnx.Rngs
) -> nnx.BatchNorm:
  # No scale (airbench freezes it at 1), a learned offset; statistics in float32.
  return nnx.BatchNorm(
      features,
      use_scale=False,
      momentum=momentum,
      epsilon=epsilon,
      dtype=jnp.float32,
      param_dtype=param_dtype,
      rngs=rngs,
  )


class ConvGroup(nnx.Module):
  """conv(3, w, same) → max-pool(2) → BN → GELU → conv(3, w, same) → BN → GELU.

  One row ``group(w)`` in layer tables. Convolutions without bias, Dirac-initialised.

  Args:
    in_features: input channels.
    features: the group's width ``w``.
    bn_momentum, bn_epsilon: of both BatchNorms (Flax convention: the running average keeps
      ``momentum`` of its old value).
    dtype: the convolutions' computation dtype (None: promoted from the input).
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  def __init__(
      self,
      in_features: int,
      features: int,
      *,
      bn_momentum: float = 0.6,
      bn_epsilon: float = 1e-12,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    conv: dict[str, Any]
    norm: dict[str, Any]
    conv = dict(
        padding="SAME",
        use_bias=False,
        kernel_init=dirac_init(),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
    norm = dict(momentum=bn_momentum, epsilon=bn_epsilon, param_dtype=param_dtype, rngs=rngs)
    self.features = features
    self.conv1: Conv = Conv(in_features, features, 3, **conv)
    self.pool: MaxPool = MaxPool(2)
    self.norm1: nnx.BatchNorm = _batch_norm(features, **norm)
    self.conv2: Conv = Conv(features, features, 3, **conv)
    self.norm2: nnx.BatchNorm = _batch_norm(features, **norm)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C_in]`` → ``[N, ⌊H/2⌋, ⌊W/2⌋, w]``."""
    x = _gelu(self.norm1(self.pool(self.conv1(x))))
    return _gelu(self.norm2(self.conv2(x)))

  def summary_name(self) -> str:
    """The row name in layer tables."""
    return f"group({self.features})"


@register("fastnet")
class FastNet(nnx.Module):
  """The airbench94 CIFAR-10 network (Jordan 2024), the zoo's ``"fastnet"``.

  Frozen 2×2 patch-whitening conv (24 channels: ± the 12 whitened patch directions) with a
  learned bias → GELU → conv groups of widths 64, 256, 256 (see :class:`ConvGroup`) → global
  max pooling → fc(num_classes, no bias) × ``scale``. 1,971,352 trainable parameters on
  32×32×3 with 10 classes (plus the 288 frozen whitening weights); 118.5 M multiply-adds
  (0.24 GFLOP) per image forward (:func:`cnnjax.summary.summary`). Train with
  ``cnnjax train --model fastnet --recipe fast`` (airbench94's optimiser, augmentation
  and test-time augmentation; see ``cnnjax.train.config.RECIPES``).

  Call :func:`whiten_init` (or :meth:`data_init`) with training images before training;
  until then the whitening kernel is random (and stays so: it is frozen).

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
    widths: the three groups' widths.
    whiten_kernel: the whitening patch size (2: 2×2 patches, ``2·C·k²`` = 24 channels).
    bn_momentum: BatchNorm running-average momentum, Flax convention (airbench's 0.6).
    bn_epsilon: BatchNorm epsilon.
    scale: the factor applied to the logits (airbench's 1/9).
    dtype: the computation dtype of the convolutions and the head, e.g. ``"bfloat16"``
      (None: the inputs' dtype); BatchNorm computes in float32 and the logits are
      float32. On a GPU, and on a CPU with bf16 matmul units (AMX, AVX512-BF16), where
      cnnjax lowers bf16 convolutions to patch matmuls, bfloat16 trains faster.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.

  Example:
    >>> model = FastNet(rngs=nnx.Rngs(0))
    >>> model(jnp.ones((2, 32, 32, 3))).shape
    (2, 10)
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      widths: Sequence[int] = (64, 256, 256),
      whiten_kernel: int = 2,
      bn_momentum: float = 0.6,
      bn_epsilon: float = 1e-12,
      scale: float = 1 / 9,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    op = "fastnet"
    self.input_shape: tuple[int, ...] = check_input_shape(input_shape, op=op)
    if len(self.input_shape) != 3:
      raise ValueError(
          f"{op}: input_shape got {input_shape!r}; expected (H, W, C), a 2-D image shape."
      )
    if (
        isinstance(widths, (str, int))
        or len(widths) != 3
        or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)
    ):
      raise ValueError(f"{op}: widths got {widths!r}; expected three positive ints.")
    if isinstance(whiten_kernel, bool) or not isinstance(whiten_kernel, int) or whiten_kernel < 1:
      raise ValueError(f"{op}: whiten_kernel got {whiten_kernel!r}; expected a positive int.")
    h, w, c = self.input_shape
    # conv_geometry refuses a kernel larger than the input; each group then halves the size.
    geo = _padding.conv_geometry((h, w), (whiten_kernel,) * 2, op=op)
    if min(geo.out_spatial) < 8:
      raise ValueError(
          f"{op}: input_shape got {input_shape!r}; expected H and W of at least "
          f"{7 + whiten_kernel} so that three 2×2 poolings leave a pixel."
      )
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    dt: dict[str, Any] = {"dtype": self.dtype, "param_dtype": self.param_dtype}
    self.scale: float = float(scale)
    whiten_width = 2 * c * whiten_kernel**2
    self.whiten: Conv = Conv(c, whiten_width, whiten_kernel, use_bias=True, rngs=rngs, **dt)
    self.whiten.kernel = FrozenParam(self.whiten.kernel[...])
    groups: list[ConvGroup]
    groups, in_features = [], whiten_width
    for width in widths:
      groups.append(
          ConvGroup(
              in_features, width, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, rngs=rngs, **dt
          )
      )
      in_features = width
    self.groups: nnx.List[ConvGroup] = nnx.List(groups)
    self.pool: GlobalMaxPool = GlobalMaxPool()
    self.head: nnx.Linear
    self.head = nnx.Linear(
        in_features, num_classes, use_bias=False, kernel_init=_torch_default, rngs=rngs, **dt
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → float32 logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="fastnet")
    x = _gelu(self.whiten(x))
    for group in self.groups:
      x = group(x)
    return (self.head(self.pool(x)) * self.scale).astype(jnp.float32)

  def data_init(self, images: ArrayLike) -> None:
    """The data-dependent initialisation ``cnnjax train`` runs: :func:`whiten_init`."""
    whiten_init(self, images)


def whiten_init(model: FastNet, images: ArrayLike, *, eps: float = 5e-4) -> jax.Array:
  """Sets ``model``'s frozen whitening kernel from training images (airbench's
  ``init_whitening_conv``).

  With ``P`` the ``[M, k·k·C]`` matrix of every ``k×k`` patch of ``images`` (stride 1,
  no padding) and ``Σ = PᵀP / M = V diag(λ) Vᵀ`` its second-moment matrix (eigenvalues
  descending), the kernel's first ``k·k·C`` filters are ``V / √(λ + eps)`` and the
  other ``k·k·C`` their negatives (so that the GELU after it passes both signs). The
  filtered patches then have second moments ``diag(λ / (λ + eps))``: about the identity.
  The bias is left as it is.

  Args:
    model: a :class:`FastNet` (anything with a ``whiten`` conv of ``2·k·k·C`` filters).
    images: ``[N, H, W, C]`` floating training images, preprocessed as in training (e.g.
      normalised per channel); airbench uses the first 5,000.
    eps: added to the eigenvalues, bounding the gain of near-empty directions.

  Returns:
    The eigenvalues ``λ`` ``[k·k·C]``, descending.

  Example:
    >>> model = FastNet(rngs=nnx.Rngs(0))
    >>> whiten_init(model, jax.random.normal(jax.random.key(0), (16, 32, 32, 3))).shape
    (12,)
  """
  op = "whiten_init"
  conv = getattr(model, "whiten", None)
  if not isinstance(conv, Conv) or not isinstance(conv.kernel, FrozenParam):
    raise ValueError(
        f"{op}: model got {type(model).__name__}; expected a FastNet (a model with a frozen "
        "patch-whitening conv `whiten`)."
    )
  x = jnp.asarray(images)
  kernel = conv.kernel[...]
  *window, c, out = kernel.shape
  if x.ndim != 4 or x.shape[-1] != c:
    raise ValueError(
        f"{op}: images has shape {tuple(x.shape)}; expected [N, H, W, {c}], images with the "
        f"model's {c} channels."
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
        f"{op}: images has dtype {x.dtype}; expected floating images, preprocessed (e.g. "
        "normalised) as in training."
    )
  if not eps >= 0:
    raise ValueError(f"{op}: eps got {eps!r}; expected a float >= 0.")
  x = x.astype(jnp.promote_types(jnp.float32, x.dtype))
  geo = _padding.conv_geometry(x.shape[1:3], window, op=op)
  d = c * window[0] * window[1]
  patches = extract_patches(x, geo).reshape(-1, d)  # offsets row-major, then channels
  second = patches.T @ patches / patches.shape[0]
  eigenvalues, eigenvectors = jnp.linalg.eigh(second)
  eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
  filters = eigenvectors / jnp.sqrt(eigenvalues + eps)[None, :]
  if out != 2 * d:
    raise ValueError(
        f"{op}: model has a whitening conv of {out} filters; expected 2 · {d} = {2 * d}."
    )
  new = jnp.concatenate([filters, -filters], axis=1).reshape(kernel.shape)
  conv.kernel.set_value(new.astype(kernel.dtype))  # a new array: never writes into the old
  return eigenvalues
