"""The model zoo: classic CNNs as Flax NNX modules, NHWC input, logits out.

``get(name, *, num_classes, rngs, **options)`` builds a model by name; ``names()``
lists them. Every model class takes ``num_classes`` and ``rngs`` keywords, cites its
source in its docstring, and (if it has convolutions) swaps them for tiled or locally
connected ones with ``conv="tiled" | "local"`` (and ``tile=``).

One file per family; each registers its models with
:func:`cnnjax.models.registry.register`. To add a family (e.g. ``"fastnet"``), write
``cnnjax/models/fastnet.py`` calling ``register("fastnet", FastNet)`` and add it to
the imports below.

Example:
  >>> from flax import nnx
  >>> names()[:3]
  ('linear', 'mlp', 'seed-cnn')
  >>> model = get("resnet20", num_classes=10, rngs=nnx.Rngs(0))
  >>> model.eval()  # BatchNorm running averages, dropout off
"""

from cnnjax.models.registry import (
    abstract,
    default_input_shape,
    default_num_classes,
    get,
    model_class,
    names,
    register,
)

# The families, imported for their registrations: the registry's order (names()) is
# this order, so the import sorter leaves these lines as they are.
# isort: off
from cnnjax.models import simple  # noqa: F401  linear, mlp, seed-cnn
from cnnjax.models import lenet  # noqa: F401  lenet5
from cnnjax.models import alexnet  # noqa: F401  alexnet, zfnet
from cnnjax.models import vgg  # noqa: F401  vgg11, vgg11-lrn, vgg13, vgg16, vgg19
from cnnjax.models import nin  # noqa: F401  nin
from cnnjax.models import googlenet  # noqa: F401  googlenet
from cnnjax.models import resnet  # noqa: F401  resnet20, 32, 44, 56, 110
from cnnjax.models import fastnet  # noqa: F401  fastnet (airbench94)
from cnnjax.models import gcnn  # noqa: F401  p4-cnn

# isort: on

__all__ = [
    "abstract",
    "default_input_shape",
    "default_num_classes",
    "get",
    "model_class",
    "names",
    "register",
]
