"""Receptive fields: three stacked 3×3 convolutions vs one 7×7, dilation, and the effective field.

1. Three 3×3 layers see a 7×7 window, as one 7×7 layer does
   (`cnnjax.receptive_field`), with 3·9·C² = 27C² weights instead of 49C² and three
   nonlinearities instead of one (the VGG argument). Two otherwise identical networks are
   trained to compare accuracy: stem conv 3×3×C, pool 2, then the block (three 3×3 or one
   7×7, C → C channels, "same" padding, ReLU after each conv), pool 2, fc; C = 32, Adam
   (lr 1e-3, cosine), no augmentation, 10 epochs each.
2. The receptive field grows linearly with depth in a stack of 3×3 convolutions
   (2L + 1), but exponentially with dilations 1, 2, 4, … (2^(L+1) − 1), as with a
   stride-2 pooling after every layer.
3. The effective receptive field (Luo et al. 2016): the gradient of one centre output
   with respect to the input shows how much each input pixel actually matters. It is
   roughly Gaussian and fills only part of the theoretical field; for random stacks its
   width grows like √depth, not like depth.

    python experiments/receptive_field.py --data-dir ../shared/data/cifar10-train-jpeg.zip
"""

from __future__ import annotations

import common
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import cnnjax
from cnnjax import nn as cnn

BLOCKS = {"3×3 ×3": [3, 3, 3], "7×7 ×1": [7]}  # kernel sizes of the C → C block


class BlockNet(nnx.Module):
  """Stem conv 3×3 → ReLU → pool 2 → ``kernels`` convs (ReLU after each) → pool 2 → fc.

  Args:
    kernels: the kernel sizes of the block's convolutions, e.g. ``[3, 3, 3]`` or ``[7]``.
    channels: ``C``, the channels of the stem and the block.
    num_classes: the number of outputs.
    input_shape: ``(H, W, C_in)``.
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  def __init__(self, *, kernels, channels: int, num_classes: int, input_shape, rngs):
    h, w, c = input_shape
    he = nnx.initializers.he_normal()
    self.input_shape = tuple(input_shape)
    self.stem = cnn.Conv(c, channels, 3, padding="SAME", kernel_init=he, rngs=rngs)
    self.pool = cnn.MaxPool(2)
    layers = []
    for k in kernels:
      layers += [
          cnn.Conv(channels, channels, k, padding="SAME", kernel_init=he, rngs=rngs),
          jax.nn.relu,
      ]
    self.block = nnx.Sequential(*layers)
    self.fc = nnx.Linear((h // 4) * (w // 4) * channels, num_classes, rngs=rngs)

  def features(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C_in]`` → the block's output ``[N, H/2, W/2, C]``."""
    return self.block(self.pool(jax.nn.relu(self.stem(x))))

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C_in]`` → logits ``[N, num_classes]``."""
    y = self.pool(self.features(x))
    return self.fc(y.reshape(y.shape[0], -1))


def block_layers(kernels) -> list[tuple[int, int]]:
  """``(kernel, stride)`` of every sliding window up to the block's output."""
  return [(3, 1), (2, 2), *((k, 1) for k in kernels)]


def gradient_map(f, x: jax.Array) -> jax.Array:
  """``|∂ f(x)[centre] / ∂x|`` summed over input channels, averaged over the batch.

  ``f`` maps ``[N, H, W, C]`` to ``[N, H', W', C']``; the centre output's channels are
  summed (every channel's gradient at once, as Luo et al. do).
  """

  def centre(x):
    y = f(x)
    return y[:, y.shape[1] // 2, y.shape[2] // 2, :].sum()

  return jnp.abs(jax.grad(centre)(x)).sum(-1).mean(0)


def random_stack(dilations, *, size: int, channels: int, samples: int, seed: int):
  """The effective receptive field of a random ReLU stack of 3×3 convs with ``dilations``.

  Averaged over ``samples`` draws of He-normal weights and Gaussian inputs (drawn with
  NumPy; one compiled gradient per stack, called for every draw).
  """
  rng = np.random.default_rng(seed)

  @jax.jit
  def draw_map(x, ws):
    def f(x):
      for i, (w, d) in enumerate(zip(ws, dilations, strict=True)):
        x = cnnjax.cross_correlate(x, w, padding="SAME", dilation=d)
        x = jax.nn.relu(x) if i < len(ws) - 1 else x
      return x

    return gradient_map(f, x)

  maps = []
  for _ in range(samples):
    x = jnp.asarray(rng.standard_normal((1, size, size, channels), np.float32))
    ws = [
        jnp.asarray(
            rng.standard_normal((3, 3, channels, channels), np.float32)
            * np.sqrt(2.0 / (9 * channels))
        )
        for _ in dilations
    ]
    maps.append(np.asarray(draw_map(x, ws)))
  return np.mean(maps, 0)


def spread(grad: np.ndarray) -> float:
  """The standard deviation, in pixels, of the gradient mass around its centre (radial)."""
  h, w = grad.shape
  yy, xx = np.mgrid[:h, :w]
  p = grad / grad.sum()
  cy, cx = (p * yy).sum(), (p * xx).sum()
  return float(np.sqrt((p * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / 2))


def main(argv=None) -> str:
  args = common.parse_args(argv, name="receptive_field", description=__doc__)
  ds = common.load_data(args)
  channels = common.pick(args, 32, 8)
  report = common.Report(
      "receptive_field",
      args,
      title="Receptive fields: 3×3 stacks vs 7×7, dilation, effective field",
      intro="\n\n".join(__doc__.split("\n\n")[1:-1]),
  )

  # 1. Three 3×3 vs one 7×7: receptive field, weights, accuracy.
  runs = {}
  for label, kernels in BLOCKS.items():

    def model_fn(*, num_classes, rngs, input_shape, kernels=kernels):
      return BlockNet(
          kernels=kernels,
          channels=channels,
          num_classes=num_classes,
          input_shape=input_shape,
          rngs=rngs,
      )

    runs[label] = common.train_model(
        f"block {label}",
        ds,
        args,
        label=f"block {label}",
        model_fn=model_fn,
        epochs=common.pick(args, 10, 1),
    )
  rows = []
  for label, kernels in BLOCKS.items():
    c = channels
    weights = sum(
        cnnjax.param_count("conv", kernel=(k, k), in_channels=c, out_channels=c, use_bias=False)
        for k in kernels
    )
    model = runs[label].model
    table = cnnjax.summary(model, ds.image_shape)
    rows.append(
        [
            label,
            cnnjax.receptive_field([(k, 1) for k in kernels]),
            f"{weights // c**2}C² = {weights:,}",
            len(kernels),
            common.count(table.total_params),
            f"{table.total_ops / 1e6:.1f}M",
            common.percent(runs[label].val_accuracy),
            f"{runs[label].seconds:.0f} s",
        ]
    )
  report.heading("Three 3×3 vs one 7×7")
  report.table(
      [
          "block (C → C)",
          "receptive field",
          f"block weights (C = {channels})",
          "nonlinearities",
          "net params",
          "net ops/image",
          "val accuracy",
          "time",
      ],
      rows,
      align="lrrrrrrr",
  )
  a, b = (runs[k].val_accuracy for k in BLOCKS)
  report.text(
      f"Lecture: the same receptive field (7) for 27C² instead of 49C² weights "
      f"({27 / 49:.0%}), and more nonlinearity. Here the 3×3 stack "
      + ("matches or beats" if a >= b - 0.005 else "**does worse than**")
      + f" the 7×7 layer ({a:.1%} vs {b:.1%})"
      + (
          "."
          if a >= b - 0.005
          else (
              ": a --quick smoke run, tiny data and one epoch, not comparable."
              if args.quick
              else ": deeper stacks train more slowly and these are short runs; see the curves."
          )
      )
  )

  # 2. Receptive-field growth with depth: plain, dilated, pooled.
  depths = range(1, 7)
  growth = {
      "3×3, dilation 1": lambda n: [(3, 1, 1)] * n,
      "3×3, dilation 1, 2, 4, …": lambda n: [(3, 1, 2**i) for i in range(n)],
      "3×3 then pool 2, repeated": lambda n: [
          layer for _ in range(n) for layer in ((3, 1), (2, 2))
      ],
  }
  fields = {
      name: [cnnjax.receptive_field(make(n)) for n in depths] for name, make in growth.items()
  }
  report.heading("Receptive-field growth with depth (`cnnjax.receptive_field`)")
  report.table(
      ["stack", *(f"L = {n}" for n in depths)],
      [[name, *values] for name, values in fields.items()],
      align="l" + "r" * 6,
  )
  report.text(
      "2L + 1 without dilation; 2^(L+1) − 1 with dilations doubling, as with a "
      "pooling (stride 2) after every convolution, but without losing resolution."
  )
  report.figure(_growth_figure(depths, fields), "growth", "Receptive field vs depth.")

  # 3. Effective receptive fields: trained block outputs and random stacks.
  probe = runs["3×3 ×3"].normalize(ds.val_images[: common.pick(args, 64, 4)])
  trained = {label: np.asarray(gradient_map(runs[label].model.features, probe)) for label in BLOCKS}
  size, samples = common.pick(args, (64, 16), (32, 2))
  stacks = {
      "3×3 ×3": [1, 1, 1],
      "3×3 ×7": [1] * 7,
      "3×3, d = 1, 2, 4": [1, 2, 4],
      "3×3 ×15": [1] * 15,
      "3×3, d = 1, 2, 4, 8": [1, 2, 4, 8],
  }
  random = {
      name: random_stack(d, size=size, channels=channels // 2 or 4, samples=samples, seed=args.seed)
      for name, d in stacks.items()
  }
  rows = [
      [
          f"trained net, block {label} (at its output)",
          cnnjax.receptive_field(block_layers(BLOCKS[label])),
          f"{spread(g):.1f}",
      ]
      for label, g in trained.items()
  ]
  rows += [
      [
          f"random stack {name}",
          cnnjax.receptive_field([(3, 1, d) for d in stacks[name]]),
          f"{spread(g):.1f}",
      ]
      for name, g in random.items()
  ]
  report.heading("Effective receptive field")
  report.table(
      ["gradient of the centre output of", "theoretical field (px)", "effective spread σ (px)"],
      rows,
      align="lrr",
  )
  s3, s7, s15 = (spread(random[k]) for k in ("3×3 ×3", "3×3 ×7", "3×3 ×15"))
  report.text(
      f"Luo et al. (2016): the effective field is a Gaussian-like blob much smaller than the "
      f"theoretical one, growing like √depth: 3, 7 and 15 layers give σ = {s3:.1f}, "
      f"{s7:.1f}, {s15:.1f} px (ratios {s7 / s3:.2f} and {s15 / s7:.2f}; √(7/3) = "
      f"{np.sqrt(7 / 3):.2f}, √(15/7) = {np.sqrt(15 / 7):.2f}), while the theoretical "
      "field grows 7 → 15 → 31. Dilated stacks reach the same theoretical field with fewer "
      "layers, but leave a grid of untouched pixels at small depth (see the plot)."
  )
  fields_px = {
      **{
          f"trained, {k}": (g, cnnjax.receptive_field(block_layers(BLOCKS[k])))
          for k, g in trained.items()
      },
      **{
          f"random {k}": (g, cnnjax.receptive_field([(3, 1, d) for d in stacks[k]]))
          for k, g in random.items()
      },
  }
  report.figure(
      _erf_figure(fields_px),
      "erf",
      "|∂ centre output / ∂ input|, averaged; the square is the theoretical field.",
  )
  report.figure(
      common.accuracy_figure(list(runs.values()), title="validation accuracy"),
      "curves",
      "Validation accuracy after each epoch.",
  )
  return report.write()


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _growth_figure(depths, fields):
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.4))
  for name, values in fields.items():
    ax.plot(list(depths), values, marker="o", label=name)
  ax.set_yscale("log", base=2)
  ax.set_xlabel("layers L")
  ax.set_ylabel("receptive field (px)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def _erf_figure(maps):
  plt = _plt()
  fig, axes = plt.subplots(1, len(maps), figsize=(2.2 * len(maps), 2.6))
  for ax, (name, (g, field)) in zip(np.atleast_1d(axes), maps.items(), strict=True):
    h, w = g.shape
    ax.imshow(g / g.max(), cmap="magma")
    lo_y, lo_x = h // 2 - field // 2 - 0.5, w // 2 - field // 2 - 0.5
    ax.add_patch(plt.Rectangle((lo_x, lo_y), field, field, fill=False, color="cyan", lw=0.8))
    ax.set_title(name, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return fig


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
