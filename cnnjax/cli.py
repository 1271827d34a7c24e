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


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="cnnjax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  demo = sub.add_parser("demo", help="a short demo of the functional ops (no download)")
  demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
  demo.set_defaults(func=_demo)
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  return args.func(args)


if __name__ == "__main__":
  sys.exit(main())
