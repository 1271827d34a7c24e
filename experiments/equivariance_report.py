"""Where trained networks lose their symmetry: `cnnjax.equivariance.report`, layer by layer.

A convolution commutes with shifts and, with symmetric kernels, with flips; a p4
group convolution commutes with quarter turns. A trained network is less symmetric
than its convolutions: strides and pooling keep one pixel in S, zero padding marks the
border, flattening ties features to positions, and learned kernels are not symmetric.
`cnnjax.equivariance.report` measures, for each layer, how far its output on
transformed images is from the transform's action on its output (a shift by t pixels
acts as a shift by t / S on a layer of cumulative stride S; flips and quarter turns as
on the image, and as the group action on p4 feature maps; layers without spatial
axes should not change), and splits the error into the interior (positions whose input
window reads neither padding nor pixels the transform moved across the border) and the
rest.

Six networks trained briefly on CIFAR-10 (45,000 images, Adam 1e-3 with cosine decay,
random crop + flip augmentation, a few epochs each: CPU time is scarce here), and
reported on validation images:

* `seed-cnn`: conv 5×5 → max-pool 2 → conv 5×5 → max-pool 2 → fc → fc, valid padding;
* `resnet20`: He et al.'s CIFAR ResNet (zero "SAME" padding, stride-2 blocks, global
  average pooling);
* `p4-cnn`: seed-cnn on the group p4 (lifting and group convolutions, group max
  pooling, global average pooling): invariant to quarter turns by construction;
* `max`, `blur`, `aps`: the small all-convolutional network of
  `experiments/shift_invariance.py` (circular "SAME" convolutions, global average
  pooling) downsampling by 2×2 max pooling, by Zhang's blur pool (max with stride 1,
  then a binomial blur with stride 2), or by adaptive polyphase sampling (APS).

Transforms: circular shifts by 1, 2 and 4 pixels (`shift:1` moves both axes by one), a
one-pixel shift as a crop (`shift:1,mode=zeros`: content leaves, zeros enter), quarter
and half turns, and a left-right mirror (`flip:1`, part of the training augmentation).

    python experiments/equivariance_report.py --data-dir ../shared/data/cifar10-train-jpeg.zip \\
        --runs /tmp/equivariance-runs

With `--runs DIR` the trained runs are kept, and a second invocation with the same
`--runs` loads them instead of training again (only the reports are redone).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any

import common
import jax.numpy as jnp
import numpy as np
import shift_invariance

import cnnjax
from cnnjax import data, equivariance

TRANSFORMS = ("shift:1", "shift:2", "shift:4", "shift:1,mode=zeros", "rot90:1", "rot90:2", "flip:1")
QUICK_TRANSFORMS = ("shift:1", "rot90:1", "flip:1")  # --quick: fewer programs to compile
IMAGES = 2000  # validation images reported (--quick: all 128)

# (label, zoo name or DownsampleNet kind, full epochs). Measured on the shared 2-core
# machine (experiments/results/rotation.md, shift_invariance.py): seed-cnn about 2 min
# per epoch, p4-cnn 8, resnet20 about 5; the small downsampling networks 0.5-1.5.
MODELS = (
    ("seed-cnn", "seed-cnn", 4),
    ("resnet20", "resnet20", 2),
    ("p4-cnn", "p4-cnn", 2),
    ("max", "max", 3),
    ("blur", "blur", 3),
    ("aps", "aps", 3),
)
QUICK_OPTIONS = {
    "seed-cnn": {"hidden": 16},
    "resnet20": {"width": 4},
    "p4-cnn": {"widths": (4, 8), "hidden": 16},
}


@dataclasses.dataclass
class Model:
  """A trained network, from a fresh training run or one kept under ``--runs``."""

  label: str
  model: Any  # the trained nnx.Module, in evaluation mode
  mean: Any
  std: Any
  params: int
  epochs: int
  val_accuracy: float
  seconds: float  # training seconds (a kept run's: the sum of its epochs' train_seconds)
  loaded: bool = False  # a run kept under --runs by an earlier invocation

  def normalize(self, images: np.ndarray) -> Any:
    return data.normalize(jnp.asarray(images), self.mean, self.std)


def _model_fn(kind: str, widths):
  def model_fn(*, num_classes, rngs, input_shape):
    return shift_invariance.DownsampleNet(
        num_classes=num_classes,
        input_shape=input_shape,
        downsample=kind,
        widths=widths,
        rngs=rngs,
    )

  return model_fn


def _kept_run(args, label: str) -> str | None:
  """The run directory ``common.train_model`` keeps for ``label`` under ``--runs``, if
  a finished one is there."""
  if not args.runs:
    return None
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
  path = os.path.join(os.path.abspath(args.runs), args.name, slug)
  try:
    with open(os.path.join(path, "config.json")) as f:
      epochs = json.load(f)["epochs"]
    with open(os.path.join(path, "metrics.jsonl")) as f:
      done = sum(1 for line in f if line.strip())
  except (OSError, ValueError, KeyError):
    return None
  if done < epochs or not os.path.isdir(os.path.join(path, "checkpoints")):
    print(f"[{args.name}] {path}: an unfinished run ({done}/{epochs} epochs), not used")
    return None
  return path


def train_or_load(args, ds, label: str, name: str, epochs: int) -> Model:
  """Trains ``label`` (or loads the finished run that ``--runs`` kept)."""
  downsample = name in shift_invariance.DOWNSAMPLING
  widths = common.pick(args, shift_invariance.WIDTHS, (4, 8))
  model_fn = _model_fn(name, widths) if downsample else None
  options = {} if downsample else common.pick(args, {}, QUICK_OPTIONS.get(name, {}))
  kept = _kept_run(args, label)
  if kept is not None:
    from cnnjax.train import load_model

    with open(os.path.join(kept, "metrics.jsonl")) as f:
      history = [json.loads(line) for line in f if line.strip()]
    clf = load_model(kept, model_fn=model_fn)
    print(f"[{args.name}] {label}: loaded {kept} ({len(history)} epochs)", flush=True)
    return Model(
        label,
        clf.model,
        clf.mean[...],
        clf.std[...],
        common.count_params(_params(clf.model)),
        len(history),
        float(history[-1]["val_accuracy"]),
        float(sum(r.get("train_seconds", 0.0) for r in history)),
        loaded=True,
    )
  run = common.train_model(
      f"downsample-{name}" if downsample else name,
      ds,
      args,
      label=label,
      model_fn=model_fn,
      model_options=options,
      epochs=common.pick(args, epochs, 1),
      augment=common.pick(args, True, False),  # --quick: one compile less
  )
  return Model(
      label, run.model, run.mean, run.std, run.params, run.epochs, run.val_accuracy, run.seconds
  )


def _params(model) -> Any:
  from flax import nnx

  return nnx.state(model, nnx.Param)


def main(argv=None) -> str:
  args = common.parse_args(argv, name="equivariance_report", description=__doc__)
  ds = common.load_data(args)

  # 1. Train (or load) the six networks, one after another.
  models = [train_or_load(args, ds, label, name, epochs) for label, name, epochs in MODELS]

  # 2. Report each on the same validation images.
  n = min(common.pick(args, IMAGES, 128), len(ds.val_labels))
  images, labels = np.asarray(ds.val_images[:n]), np.asarray(ds.val_labels[:n])
  transforms = common.pick(args, TRANSFORMS, QUICK_TRANSFORMS)
  reports = {}
  for m in models:
    t0 = time.perf_counter()
    reports[m.label] = equivariance.report(
        m.model, m.normalize(images), list(transforms), labels=labels, title=m.label
    )
    print(f"[{args.name}] {m.label}: report in {time.perf_counter() - t0:.1f} s", flush=True)

  # 3. The page.
  page = common.Report(
      "equivariance_report",
      args,
      title="Where trained networks lose their symmetry, layer by layer",
      intro="\n\n".join((__doc__ or "").split("\n\n")[1:4]),
  )
  page.table(
      ["model", "params", "epochs", "val accuracy", "training time"],
      [
          [
              m.label,
              common.count(m.params),
              m.epochs,
              common.percent(m.val_accuracy),
              f"{m.seconds:.0f} s",
          ]
          for m in models
      ],
  )
  if any(m.loaded for m in models):
    page.text(
        "Trained by an earlier invocation of the same command and kept under `--runs`, "
        "loaded here: "
        + ", ".join(m.label for m in models if m.loaded)
        + " (their training time: the sum of their epochs' training seconds, on a machine "
        "shared with other jobs)."
    )
  page.heading("At the logits: how often the prediction survives the transform")
  page.text(
      f"Share of the {n} validation images whose predicted class is unchanged "
      "(and the logits' relative invariance error)."
  )
  page.table(
      ["model", *transforms],
      [
          [
              label,
              *(
                  f"{t.logits.unchanged:.1%} ({t.logits.invariance_error:.3f})"
                  if t.logits is not None
                  else "—"
                  for t in r.transforms
              ),
          ]
          for label, r in reports.items()
      ],
  )
  page.heading("Findings")
  page.text(_findings(reports))
  for label, r in reports.items():
    page.heading(f"{label}, layer by layer")
    page.text(
        "Relative error of each layer's output under each transform over the whole map "
        "(in brackets: the interior, out of the border's reach; ~: the transform has no "
        "exact counterpart at that layer, compared with the nearest)."
    )
    page.parts.append(r.to_markdown().strip())
    slug = re.sub(r"[^A-Za-z0-9]+", "_", label)
    page.figure(
        r.figure(),
        slug,
        f"{label}: error per layer (solid: whole output; dashed: interior) and where in "
        "the image it sits (each layer's error map, per transform).",
    )
  return page.write()


def _first_loss(r: equivariance.EquivarianceReport, transform: str, *, tol: float = 1e-3) -> str:
  """The first layer whose interior (else whole-map) error exceeds ``tol``."""
  for layer in r[transform].layers:
    err = layer.interior_error if layer.interior_error is not None else layer.error
    if not err <= tol:
      where = "interior" if layer.interior_error is not None else "whole map"
      stride = "" if layer.stride is None else f", stride {layer.stride[0]}"
      approx = ", no exact counterpart" if layer.approximate else ""
      return f"`{layer.name}` ({layer.kind}{stride}{approx}; {where} error {err:.3g})"
  return "no layer"


def _unchanged(r: equivariance.EquivarianceReport, transform: str) -> str:
  logits = r[transform].logits
  return "—" if logits is None else f"{logits.unchanged:.1%}"


def _findings(reports: dict[str, equivariance.EquivarianceReport]) -> str:
  """Sentences read off the reports: where each symmetry is first lost."""
  lines = []
  for label, r in reports.items():
    names = [t.transform for t in r.transforms]
    parts = [
        f"{t} first at {_first_loss(r, t)}"
        for t in ("shift:1", "shift:4", "rot90:1", "flip:1")
        if t in names
    ]
    lines.append(f"- **{label}** loses " + "; ".join(parts) + ".")
  p4 = reports.get("p4-cnn")
  if p4 is not None:
    turns = [t for t in p4.transforms if t.transform.startswith("rot90")]
    worst = max((ly.error for t in turns for ly in t.layers), default=float("nan"))
    lines.append(
        f"p4-cnn under quarter turns: largest layer error {worst:.2g} "
        + (
            "(float32 rounding: its group convolutions are exactly equivariant, and the "
            "logits invariant)."
            if worst < 1e-4
            else "— **not at rounding level**: a layer breaks the group's symmetry."
        )
    )
  aps = reports.get("aps")
  if aps is not None:
    shifts = [t.transform for t in aps.transforms if t.transform.startswith("shift:")]
    lines.append(
        "APS: prediction unchanged for "
        + ", ".join(f"{_unchanged(aps, t)} ({t})" for t in shifts)
        + ". Its guarantee (Chaman & Dokmanić 2021) is for circular shifts: a crop brings "
        "new content in. Its downsampling keeps the polyphase component of largest norm, so "
        "its output moves by a phase that depends on the image, while the report compares "
        "every layer with one fixed action (the nearest shift): APS's layers show an error "
        "under shifts that are not multiples of their stride even where its logits do not "
        "move."
    )
  lines += _comparisons(reports)
  return "\n".join(lines[: len(reports)]) + "\n\n" + "\n\n".join(lines[len(reports) :])


def _logits_error(r: equivariance.EquivarianceReport, transform: str) -> float | None:
  logits = r[transform].logits
  return None if logits is None else logits.invariance_error


def _comparisons(reports: dict[str, equivariance.EquivarianceReport]) -> list[str]:
  """Comparisons across layers and models, each only where its figures were measured."""
  lines = []
  seed = reports.get("seed-cnn")
  names = [t.transform for t in seed.transforms] if seed is not None else []
  if seed is not None and {"rot90:1", "flip:1"} <= set(names):
    first = seed["rot90:1"].layers[0], seed["flip:1"].layers[0]
    lines.append(
        f"Flips were in the training augmentation, quarter turns were not. seed-cnn's "
        f"first layer is as far from either ({first[0].error:.2f} under rot90:1, "
        f"{first[1].error:.2f} under flip:1: learned kernels are neither rotation- nor "
        f"mirror-symmetric), but its logits move {_logits_error(seed, 'flip:1'):.2f} under "
        f"the mirror against {_logits_error(seed, 'rot90:1'):.2f} under the quarter turn"
        + (
            ": the invariance to mirrors is learned by the later layers, not to rotations."
            if (_logits_error(seed, "flip:1") or 0) < 0.5 * (_logits_error(seed, "rot90:1") or 0)
            else "."
        )
    )
  resnet = reports.get("resnet20")
  if resnet is not None and "shift:4" in [t.transform for t in resnet.transforms]:
    gone = next(
        (ly for ly in resnet["shift:4"].layers if ly.stride and not ly.interior_fraction), None
    )
    if gone is not None:
      exact = [
          ly.name
          for ly in (seed["shift:4"].layers if seed is not None and "shift:4" in names else ())
          if ly.interior_error is not None and ly.interior_error <= 1e-5
      ]
      lines.append(
          f"resnet20 pads with zeros before every convolution: from `{gone.name}` "
          f"({gone.kind}) on, no output position is out of the border's reach of a 4-pixel "
          "shift (the receptive field covers the image), so all of its error there is the "
          "border's"
          + (
              f"; seed-cnn's valid convolutions keep an exact interior up to `{exact[-1]}`."
              if exact
              else "."
          )
      )
  mx, blur = reports.get("max"), reports.get("blur")
  if mx is not None and blur is not None and "shift:1" in [t.transform for t in mx.transforms]:
    down = [
        next((ly for ly in r["shift:1"].layers if ly.name.startswith("down")), None)
        for r in (mx, blur)
    ]
    d_max, d_blur = down
    if (
        d_max is not None
        and d_blur is not None
        and d_max.interior_error is not None
        and d_blur.interior_error is not None
    ):
      lines.append(
          f"Blur pool against max pool (the same network): under a one-pixel shift the "
          f"first downsampling's interior error is {d_blur.interior_error:.2f} against "
          f"{d_max.interior_error:.2f}, and the prediction is unchanged for "
          f"{_unchanged(blur, 'shift:1')} of the images against {_unchanged(mx, 'shift:1')}"
          + (
              " (a low-pass before subsampling aliases less: Zhang 2019)."
              if d_blur.interior_error < d_max.interior_error
              else " — **blur does not alias less here**."
          )
      )
  return lines


if __name__ == "__main__":
  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
