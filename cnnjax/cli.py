"""The ``cnnjax`` command line."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import cnnjax

  print(f"cnnjax {cnnjax.__version__} on {jax.default_backend()} ({jax.devices()[0]})")
  image = jnp.array(
      [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
      jnp.float32,
  )[None, :, :, None]
  kernel = jnp.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], jnp.float32)[:, :, None, None]
  y = cnnjax.cross_correlate(image, kernel)
  print("Lecture example: 5x5 binary image cross-correlated with a 3x3 'X' kernel:")
  print(np.asarray(y[0, :, :, 0]).astype(int))

  key = jax.random.key(args.seed)
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (8, 32, 32, 3))
  w = jax.random.normal(kw, (3, 3, 3, 16))
  conv = jax.jit(lambda x: cnnjax.cross_correlate(x, w, padding="SAME", padding_mode="circular"))
  shifted = jnp.roll(x, (3, 5), axis=(1, 2))
  err = jnp.abs(conv(shifted) - jnp.roll(conv(x), (3, 5), axis=(1, 2))).max()
  print(f"Translation equivariance (circular padding), max |f(Tx) - T f(x)| = {float(err):.2e}")
  t0 = time.perf_counter()
  for _ in range(10):
    conv(x).block_until_ready()
  print(f"10 jitted 3x3 convolutions of [8, 32, 32, 3] took {time.perf_counter() - t0:.3f} s")
  return 0


def _summary(args: argparse.Namespace) -> int:
  from cnnjax.summary import summary

  shape = None
  if args.input is not None:
    try:
      shape = tuple(int(v) for v in args.input.replace("x", ",").split(","))
    except ValueError:
      print(
          f"cnnjax summary: --input got {args.input!r}; expected H,W,C such as 32,32,3.",
          file=sys.stderr,
      )
      return 2
  options = {"conv": args.conv, "tile": args.tile} if args.conv != "shared" else {}
  try:
    table = summary(args.model, shape, num_classes=args.num_classes, **options)
  except (ValueError, TypeError) as e:
    print(f"cnnjax summary: {e}", file=sys.stderr)
    return 2
  if args.format == "markdown":
    print(table.to_markdown(), end="")
  elif args.format == "csv":
    print(table.to_csv(), end="")
  else:
    print(table)
  return 0


def _models(args: argparse.Namespace) -> int:
  import jax
  from flax import nnx

  from cnnjax import models

  rows = []
  for name in models.names():
    model = models.abstract(name)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    shape = "x".join(map(str, models.default_input_shape(name)))
    rows.append((name, f"{params:,}", shape, str(models.default_num_classes(name))))
  header = ("model", "params", "input", "classes")
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
  for row in [header, *rows]:
    print(
        f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  "
        f"{row[3]:>{widths[3]}}".rstrip()
    )
  return 0


def _version() -> str:
  from cnnjax import __version__

  return f"cnnjax {__version__}"


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="cnnjax", description=__doc__)
  parser.add_argument("--version", action="version", version=_version())
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", help="a short demo of the functional ops (no download)")
  demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
  demo.set_defaults(func=_demo)
  summ = sub.add_parser(
      "summary", help="a model's layer table: params, ops, output shapes, symmetry"
  )
  summ.add_argument("--model", required=True, help="a zoo name, e.g. seed-cnn, vgg16, resnet20")
  summ.add_argument(
      "--input",
      default=None,
      metavar="H,W,C",
      help="input shape without the batch (default: the model's)",
  )
  summ.add_argument(
      "--num-classes", type=int, default=None, help="number of classes (default: the model's)"
  )
  summ.add_argument(
      "--conv",
      choices=("shared", "tiled", "local"),
      default="shared",
      help="convolution kind (default: shared)",
  )
  summ.add_argument("--tile", type=int, default=2, help="tile of --conv tiled (default: 2)")
  summ.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
  summ.set_defaults(func=_summary)
  mods = sub.add_parser(
      "models",
      help="list the model zoo: parameters, default input shape "
      "and classes (any input shape and class count can be trained)",
  )
  mods.set_defaults(func=_models)
  from cnnjax.train.cli import add_subcommands as add_train_subcommands

  add_train_subcommands(sub)  # train, eval, predict, search
  from cnnjax.equivariance.cli import add_subcommand as add_equivariance_subcommand

  add_equivariance_subcommand(sub)  # equivariance
  return parser


def _configure_runtime() -> None:
  """``cnnjax``'s CPU settings (:func:`cnnjax.configure_cpu`, the allocator setting where
  no accelerator plugin is installed). A process that already started JAX (``main``
  called from Python) keeps its own."""
  from cnnjax import runtime  # noqa: PLC0415

  if not runtime._backend_started():
    runtime.configure_cpu(allocator=None)


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  _configure_runtime()
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
