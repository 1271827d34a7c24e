"""Filters: what a trained CNN's first layer learns, and what classic hand-made kernels do.

The lecture shows the first-layer filters of a trained network (Krizhevsky et al. 2012;
Zeiler & Fergus 2014): smooth oriented edges, colour blobs and colour-opponent patterns,
much like the hand-designed kernels of image processing. Here:

1. the zoo's `seed-cnn` (conv 5×5×32, pool, conv 5×5×64, pool, fc 100, fc 10) is trained
   on CIFAR-10 with the baselines recipe (SGD + momentum, cosine, crop + flip), and its 32
   first-layer filters (5×5×3) are drawn as an image grid. A number for "smooth": the
   share of each filter's energy at the lowest spatial frequencies (the 3×3 of 5×5 DFT
   bins with |f| ≤ 1 cycle per 5 pixels), which is 9/25 = 36% on average for white-noise
   filters such as the random initialisation;
2. the classic kernels — identity, edge detection, Sobel, sharpen, box and Gaussian blur —
   are applied to a validation image with `cnnjax.convolve` (true convolution, the kernel
   flipped; "SAME" size, reflect padding), each channel separately (`groups=3`), and
   checked: `convolve` equals `cross_correlate` with the flipped kernel, the identity
   returns the image exactly, blurs keep the mean and lower the contrast, edge kernels
   sum to zero and so ignore a constant image.

    python experiments/filters.py --data-dir ../shared/data/cifar10-train-jpeg.zip
"""

from __future__ import annotations

import common
import jax.numpy as jnp
import numpy as np

import cnnjax

LOW_FREQUENCY_NOISE = 9 / 25  # expected low-frequency energy share of a white-noise filter
SMOOTH = 1.25 * LOW_FREQUENCY_NOISE  # "smooth": a median share clearly above noise's (45%)


def _outer(row) -> np.ndarray:
  row = np.asarray(row, np.float32)
  return np.outer(row, row) / row.sum() ** 2


# name -> (kernel, what it does). Wikipedia's "Kernel (image processing)" table, + Sobel.
KERNELS = {
    "identity": (np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32), "returns the image"),
    "edges (4-neighbour Laplacian)": (
        np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32),
        "edges in every direction",
    ),
    "edges (8-neighbour Laplacian)": (
        np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32),
        "edges, stronger",
    ),
    "Sobel x": (
        np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32),
        "vertical edges (horizontal gradient)",
    ),
    "sharpen": (
        np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
        "identity + Laplacian: crisper edges",
    ),
    "box blur 3×3": (np.ones((3, 3), np.float32) / 9, "local mean"),
    "Gaussian blur 3×3": (_outer([1, 2, 1]), "smooth local mean"),
    "Gaussian blur 5×5": (_outer([1, 4, 6, 4, 1]), "smoother"),
}


def depthwise(kernel: np.ndarray, channels: int) -> jnp.ndarray:
  """A ``[k, k]`` kernel as a ``[k, k, 1, channels]`` kernel for ``groups=channels``."""
  return jnp.asarray(np.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, channels)))


def apply(image: jnp.ndarray, kernel: np.ndarray, *, flip: bool = True) -> jnp.ndarray:
  """``[N, H, W, C]`` float images convolved (``flip``) or cross-correlated per channel."""
  op = cnnjax.convolve if flip else cnnjax.cross_correlate
  c = image.shape[-1]
  return op(image, depthwise(kernel, c), padding="SAME", padding_mode="reflect", groups=c)


def low_frequency_share(filters: np.ndarray) -> np.ndarray:
  """Per filter ``[K, h, w, C]``: the energy share in the DFT bins with |f| ≤ 1 per axis."""
  spectrum = np.abs(np.fft.fft2(filters, axes=(1, 2))) ** 2  # [K, h, w, C]
  h, w = filters.shape[1:3]
  low = np.zeros((h, w), bool)
  for fy in (-1, 0, 1):
    for fx in (-1, 0, 1):
      low[fy % h, fx % w] = True
  return spectrum[:, low].sum(axis=(1, 2)) / spectrum.sum(axis=(1, 2, 3))


def kernel_checks(image: jnp.ndarray) -> list[dict]:
  """For each classic kernel: its output and the checks in the docstring."""
  constant = jnp.full_like(image, 0.5)
  results = []
  for name, (k, what) in KERNELS.items():
    y = apply(image, k)
    flipped = apply(image, k[::-1, ::-1].copy(), flip=False)  # convolve == xcorr of flip(k)
    results.append(
        {
            "name": name,
            "kernel": k,
            "what": what,
            "output": np.asarray(y),
            "sum": float(k.sum()),
            "flip_error": float(jnp.max(jnp.abs(y - flipped))),
            "identity_error": float(jnp.max(jnp.abs(y - image))),
            "mean_change": float(jnp.mean(y) - jnp.mean(image)),
            "contrast": float(jnp.std(y) / jnp.std(image)),
            "constant_response": float(jnp.max(jnp.abs(apply(constant, k) - 0.5 * k.sum()))),
        }
    )
  return results


def main(argv=None) -> str:
  args = common.parse_args(argv, name="filters", description=__doc__)
  ds = common.load_data(args)

  # 1. Train seed-cnn (the baselines recipe) and read its first-layer filters.
  run = common.train_model(
      "seed-cnn",
      ds,
      args,
      epochs=common.pick(args, 10, 1),
      optimizer="sgd",
      lr=0.05,
      momentum=0.9,
      weight_decay=5e-4,
      augment=common.pick(args, True, False),
  )
  filters = np.moveaxis(np.asarray(run.model.conv1.kernel[...]), -1, 0)  # [32, 5, 5, 3]
  low = low_frequency_share(filters)

  report = common.Report(
      "filters",
      args,
      title="Learned first-layer filters and classic kernels",
      intro=__doc__.split("\n\n")[1],
  )
  report.heading("Learned filters of seed-cnn")
  report.table(
      [
          "model",
          "val accuracy",
          "filters",
          "low-frequency energy (median)",
          "filters above white noise's 36%",
          "lecture",
      ],
      [
          [
              "seed-cnn",
              common.percent(run.val_accuracy),
              f"{len(filters)} × 5×5×3",
              common.percent(float(np.median(low))),
              f"{int(np.sum(low > LOW_FREQUENCY_NOISE))} of {len(filters)}",
              "smooth oriented edges and colour blobs (AlexNet, ZFNet)",
          ]
      ],
      align="lrrrrl",
  )
  smooth = np.median(low) >= SMOOTH
  report.text(
      f"The learned filters keep a median {np.median(low):.0%} of their energy at the lowest "
      f"frequencies, against {LOW_FREQUENCY_NOISE:.0%} for random ones (called smooth here "
      f"from {SMOOTH:.0%}): "
      + (
          "they are smooth, as the lecture's filters are."
          if smooth
          else "**they are not smoother than noise**"
          + (
              " — a --quick smoke run: one epoch on generated shapes barely moves them from "
              "their random initialisation."
              if args.quick
              else " — fewer epochs than the lecture's networks and 5×5 filters on 32×32 images "
              "leave them noisy."
          )
      )
  )
  report.figure(
      _filter_grid(filters, low),
      "learned",
      "The 32 first-layer filters of the trained seed-cnn (each scaled to its own "
      "range, RGB); the number is its low-frequency energy share.",
  )

  # 2. Classic kernels on a validation image.
  image = jnp.asarray(ds.val_images[:1], jnp.float32) / 255.0
  results = kernel_checks(image)
  report.heading("Classic kernels")
  rows = []
  for r in results:
    rows.append(
        [
            r["name"],
            _matrix(r["kernel"]),
            f"{r['sum']:g}",
            r["what"],
            f"{r['flip_error']:.1g}",
            f"{r['identity_error']:.2g}",
            f"{r['mean_change']:+.3f}",
            f"{r['contrast']:.2f}",
            f"{r['constant_response']:.1g}",
        ]
    )
  report.table(
      [
          "kernel",
          "weights",
          "sum",
          "what it does (lecture)",
          "max abs(convolve − xcorr of flipped)",
          "max abs(out − image)",
          "mean change",
          "contrast (std out / in)",
          "error on a constant image",
      ],
      rows,
      align="lllrrrrrr",
  )
  by = {r["name"]: r for r in results}
  blurs = [n for n in by if "blur" in n]
  report.text(
      f"`convolve` is `cross_correlate` of the flipped kernel to the last bit (largest "
      f"difference {max(r['flip_error'] for r in results):.1g}); the identity returns the "
      f"image (error {by['identity']['identity_error']:.1g}). Blurs keep the mean (change ≤ "
      f"{max(abs(by[n]['mean_change']) for n in blurs):.3f}: their weights sum to 1, and "
      "reflect padding repeats only image pixels at the border) and "
      f"lower the contrast to {min(by[n]['contrast'] for n in blurs):.2f}–"
      f"{max(by[n]['contrast'] for n in blurs):.2f}; sharpen raises it to "
      f"{by['sharpen']['contrast']:.2f}. Kernels whose weights sum to zero (the edge "
      "detectors) give zero on a constant image; the others give the constant times their sum."
  )
  report.figure(
      _kernel_grid(np.asarray(image[0]), results),
      "kernels",
      "A validation image through each classic kernel (`cnnjax.convolve`, per "
      "channel, reflect padding). Edge detectors show |output|, scaled.",
  )
  return report.write()


def _matrix(k: np.ndarray) -> str:
  """A small kernel as text: ``[0 1 0; 1 -4 1; 0 1 0]`` (scaled by its common factor)."""
  for scale in (1, 9, 16, 256):
    if np.allclose(k * scale, np.round(k * scale)):
      body = "; ".join(" ".join(f"{v:g}" for v in np.round(row * scale)) for row in k)
      return f"[{body}]" + (f" / {scale}" if scale > 1 else "")
  return str(k)


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _filter_grid(filters: np.ndarray, low: np.ndarray):
  plt = _pyplot()
  k = len(filters)
  cols = 8
  rows = -(-k // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i < k:
      f = filters[i]
      f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
      ax.imshow(
          f if f.shape[-1] == 3 else f.mean(-1),
          cmap=None if f.shape[-1] == 3 else "gray",
          interpolation="nearest",
      )
      ax.set_title(f"{low[i]:.0%}", fontsize=7)
  fig.tight_layout()
  return fig


def _kernel_grid(image: np.ndarray, results: list[dict]):
  plt = _pyplot()
  panels = [("input", image, False)] + [
      (r["name"], r["output"][0], abs(r["sum"]) < 1e-6) for r in results
  ]
  cols = 3
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
  for ax, (name, out, edges) in zip(axes.flat, panels, strict=True):
    if edges:  # zero-sum kernels: show the magnitude of the response
      mag = np.abs(out).mean(-1)
      ax.imshow(mag / max(float(mag.max()), 1e-12), cmap="gray", interpolation="nearest")
    else:
      ax.imshow(np.clip(out, 0, 1), interpolation="nearest")
    ax.set_title(name, fontsize=8)
  for ax in axes.flat:
    ax.axis("off")
  fig.tight_layout()
  return fig


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
