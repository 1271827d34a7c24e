"""``cnnjax equivariance``: where a trained run loses its symmetry, layer by layer.

Loads a run (``cnnjax train --out DIR``) and its data split, runs
:func:`cnnjax.equivariance.report` on the split's first ``--images`` images under each
``--transform``, prints the table and writes ``DIR/equivariance-<split>.json`` and
``DIR/equivariance-<split>.png`` (``-2``, ``-3``, … when taken: an earlier report is
never overwritten). A bad spec, run directory or split fails in one line on stderr with
exit code 2 (``--debug``: the traceback too).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

__all__ = ["DEFAULT_TRANSFORMS", "add_subcommand"]

DEFAULT_TRANSFORMS = ("shift:1,2,4", "rot90", "flip")
_COMMAND = "equivariance"


def _fail(error: BaseException, args: argparse.Namespace) -> int:
  if getattr(args, "debug", False):
    traceback.print_exception(error, file=sys.stderr)
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  text = lines[0] if lines else type(error).__name__
  text = text.removeprefix(f"{_COMMAND}: ")  # said once, by the prefix below
  if not isinstance(error, (ValueError, TypeError)):
    text = f"{type(error).__name__}: {text}"  # OSError, Orbax's errors, ...
  print(f"cnnjax {_COMMAND}: {text}", file=sys.stderr, flush=True)
  return 2


def _known(error: BaseException) -> bool:
  """Failures reported in one line: bad arguments and files, unreadable checkpoints, data
  that cannot be read (``cnnjax.data``'s RuntimeError for a dataset it cannot fetch), XLA
  runtime errors (out of memory)."""
  import pickle
  import zipfile

  if isinstance(
      error, (ValueError, TypeError, OSError, EOFError, RuntimeError, pickle.UnpicklingError)
  ):
    return True
  if isinstance(error, zipfile.BadZipFile):
    return True
  module = type(error).__module__ or ""
  return module.split(".")[0] in ("orbax", "tensorstore", "jaxlib")


def _free_stem(run_dir: str, name: str) -> str:
  """``run_dir/equivariance-<name>``, with ``-2``, ``-3``, … until neither the ``.json``
  nor the ``.png`` exists."""
  stem, i = os.path.join(run_dir, f"equivariance-{name}"), 1
  path = stem
  while os.path.exists(path + ".json") or os.path.exists(path + ".png"):
    i += 1
    path = f"{stem}-{i}"
  return path


def _write_new(path: str, text: str) -> None:
  """Writes a new file (never an existing one)."""
  with open(path, "x") as f:
    f.write(text)


def _images(args: argparse.Namespace, run_dir: str) -> tuple[Any, Any, str]:
  """The split's first ``--images`` images and labels, and a line saying what they are."""
  from cnnjax.train import TrainConfig
  from cnnjax.train.run import load_dataset

  config = TrainConfig.load(os.path.join(run_dir, "config.json"))
  if args.data_dir is not None:
    config = config.replace(data_dir=args.data_dir)
  ds = load_dataset(config, progress=False)
  images = getattr(ds, f"{args.split}_images", None)
  labels = getattr(ds, f"{args.split}_labels", None)
  if images is None or len(images) == 0:
    raise ValueError(
        f"{_COMMAND}: --split got {args.split!r}, but the run's data ({config.data}) has no "
        f"{args.split} images; expected a split it has (val, train, or test where present)."
    )
  n = len(images) if args.images is None else min(args.images, len(images))
  line = f"{n} {args.split} image(s) of {ds.name}"
  return images[:n], None if labels is None else labels[:n], line


def _run(args: argparse.Namespace) -> int:
  from cnnjax.equivariance.specs import parse_transforms

  try:
    if args.images is not None and args.images < 1:
      raise ValueError(f"{_COMMAND}: --images got {args.images}; expected a positive int.")
    if args.batch_size < 1:
      raise ValueError(f"{_COMMAND}: --batch-size got {args.batch_size}; expected a positive int.")
    transforms = [
        t for spec in (args.transform or DEFAULT_TRANSFORMS) for t in parse_transforms(spec)
    ]
    run_dir = os.path.abspath(args.run)
    if not os.path.isdir(run_dir) or not os.path.isfile(os.path.join(run_dir, "config.json")):
      raise ValueError(
          f"{_COMMAND}: --run got {args.run!r}, which is not a run directory (no "
          "config.json); expected a directory written by `cnnjax train --out DIR`."
      )
    from cnnjax.data import normalize
    from cnnjax.equivariance.report import report
    from cnnjax.train import load_model

    classifier = load_model(run_dir, epoch=args.epoch)
    images, labels, line = _images(args, run_dir)
    title = f"{os.path.basename(run_dir.rstrip(os.sep))} ({line})"
    # The trained network on normalised images (its layers named as in the model, not
    # under the classifier's ``model.``): the transforms move normalised pixels.
    x = normalize(images, classifier.mean[...], classifier.std[...])
    result = report(
        classifier.model,
        x,
        transforms,
        layers=args.layers,
        labels=labels,
        batch_size=args.batch_size,
        title=title,
    )
    print(result, flush=True)
    stem = _free_stem(run_dir, args.split)
    record = {"run": run_dir, "split": args.split, "epoch": args.epoch, **result.to_dict()}
    _write_new(stem + ".json", json.dumps(record, indent=1) + "\n")
    print(f"wrote {stem}.json")
    if not args.no_plot:
      with open(stem + ".png", "xb") as f:
        result.figure().savefig(f, format="png", dpi=110)
      print(f"wrote {stem}.png")
  except Exception as e:
    if not _known(e):
      raise
    return _fail(e, args)
  return 0


def add_subcommand(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
  """Adds ``equivariance`` to the ``cnnjax`` subparsers ``sub``."""
  p = sub.add_parser(
      _COMMAND,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      help="where a trained run loses its symmetry: equivariance error per layer and transform",
      description=(__doc__ or "").split("\n\n", 1)[1].strip() + "\n\nExamples:\n"
      "  cnnjax equivariance --run runs/seed-cnn\n"
      "  cnnjax equivariance --run runs/p4-cnn --transform p4 --transform flip\n"
      "  cnnjax equivariance --run runs/resnet20 --transform shift:1,2,4 "
      "--transform shift:1,mode=zeros --images 500\n\n"
      "Transform specs (repeat --transform; each may list several):\n"
      "  shift:1,2,4  shift:1x0,0x1  shift:2,mode=zeros (a crop)  flip  flip:0  rot90  "
      "rot90:1,2,3\n  transpose  p4  p4m  p4m:4,5  random:p4m,trials=8,seed=0  "
      "random:shift,max=4,trials=8\n  rot90+flip (composed, left to right)  identity",
  )
  p.add_argument(
      "--run",
      metavar="DIR",
      required=True,
      help="a directory written by `cnnjax train --out DIR` (required)",
  )
  p.add_argument(
      "--transform",
      action="append",
      metavar="SPEC",
      help=f"a transform spec, repeatable (default: {' '.join(DEFAULT_TRANSFORMS)})",
  )
  p.add_argument(
      "--split",
      choices=("val", "train", "test"),
      default="val",
      help="the run's data split to report on (default: val)",
  )
  p.add_argument(
      "--images", type=int, default=1000, metavar="N", help="the split's first N images (1000)"
  )
  p.add_argument(
      "--layers",
      nargs="+",
      metavar="NAME",
      default=None,
      help="layer names (attribute paths such as conv1 or blocks.layers.0.conv1; default: "
      "the model's layers, the rows of `cnnjax summary`)",
  )
  p.add_argument(
      "--epoch", type=int, default=None, help="checkpoint epoch (default: the latest verified one)"
  )
  p.add_argument(
      "--data-dir",
      metavar="PATH",
      default=None,
      help="read the data from here instead of the run's --data-dir (default: the run's)",
  )
  p.add_argument(
      "--batch-size", type=int, default=250, metavar="B", help="images per compiled call (250)"
  )
  p.add_argument("--no-plot", action="store_true", help="write no PNG (default: one is written)")
  p.add_argument(
      "--debug",
      action="store_true",
      help="on a failure, print the full traceback too (default: off)",
  )
  p.set_defaults(func=_run)
