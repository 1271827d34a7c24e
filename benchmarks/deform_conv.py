"""deform_conv against cross_correlate on the same layer, with its time split by part.

Issue 32's case: a 3×3, 64→64 layer on 32×32 inputs at batch 32 (padding 1), forward and
forward+backward (gradients of every input: x, w, offsets and, with ``--modulated``, the
mask; cross_correlate's of x and w). Every program is compiled ahead of time and the
programs are called round-robin for ``--rounds`` rounds (a shared machine's noise hits
them alike); it prints median wall and process-CPU times and the ratios to
cross_correlate. The breakdown times deform_conv's two parts on their own, on the same
shapes, each forward and forward+backward:

- ``gather``: the 2×2-window gather of the input alone, at the same samples' windows,
  written out (the sampling fuses it with the weighting instead, so forward this is not
  a part of the sampling's time; backward, its scatter-add is);
- ``sampling``: the samples, the gather with the positions, bilinear weights and the
  weighted sum (``cnnjax.deform._samples``);
- ``contraction``: the samples with the kernel, one ``dot_general``
  (``cnnjax.deform._contract``).

    python benchmarks/deform_conv.py                   # issue 32's case, 7 rounds
    python benchmarks/deform_conv.py --modulated --rounds 9
    python benchmarks/deform_conv.py --batch 4         # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import deform as _deform
from cnnjax import padding as _padding
from cnnjax.conv import cross_correlate
from cnnjax.deform import deform_conv


def _fwd_bwd(f, argnums):
  """``(f(*args), grads)`` of ``vdot(f(*args), g)``: the cotangent ``g`` is an argument, so
  XLA cannot fold the backward pass of a linear map into a constant."""

  def loss(*args_and_g):
    *args, g = args_and_g
    return jnp.vdot(f(*args), g)

  return jax.value_and_grad(loss, argnums=argnums)


def _programs(args):
  n, size, c, k, og, modulated = (
      args.batch,
      args.size,
      args.channels,
      args.kernel,
      args.offset_groups,
      args.modulated,
  )
  rng = np.random.default_rng(0)
  dtype = jnp.dtype(args.dtype)
  pad = k // 2
  x = jnp.asarray(rng.normal(size=(n, size, size, c)), dtype)
  w = jnp.asarray(rng.normal(size=(k, k, c, c)) / (k * np.sqrt(c)), dtype)
  geo = _padding.conv_geometry((size, size), (k, k), padding=pad, op="benchmark")
  out = (n, *geo.out_spatial)
  taps = k * k
  # Offsets of about a pixel: most samples inside, some across the border.
  offsets = jnp.asarray(rng.normal(size=(*out, og * taps * 2)), dtype)
  mask = jnp.asarray(rng.uniform(size=(*out, og * taps)), dtype) if modulated else None
  g = jnp.asarray(rng.normal(size=(*out, c)), dtype)
  pos_dtype = jnp.float32 if dtype.itemsize < 4 else dtype

  def deform(x, w, offsets, mask):
    return deform_conv(x, w, offsets, mask=mask, padding=pad, offset_groups=og)

  def correlate(x, w):
    return cross_correlate(x, w, padding=pad)

  def sampling(x, offsets, mask):
    o, m = offsets.astype(pos_dtype), None if mask is None else mask.astype(pos_dtype)
    return _deform._samples(x, o, m, geo, offset_groups=og).astype(dtype)

  cols = jax.jit(sampling)(x, offsets, mask)
  g_cols = jnp.asarray(rng.normal(size=cols.shape), dtype)

  def contraction(cols, w):
    return _deform._contract(cols, w, groups=1, offset_groups=og, precision=None)

  # The gather alone: the 2×2 windows of the same samples (positions computed outside).
  xp = jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0))).reshape(n, size + 3, size + 3, og, c // og)
  off6 = offsets.astype(pos_dtype).reshape(*out, og, taps, 2)
  start = jax.jit(lambda o: _deform._corners(o, geo, (size, size))[0])(off6)
  windows = jax.jit(_deform._gather_windows)(xp, start)
  g_windows = jnp.asarray(rng.normal(size=windows.shape), dtype)

  def gather(xp):
    return _deform._gather_windows(xp, start)

  diff = (0, 1, 2, 3) if modulated else (0, 1, 2)
  programs = {
      ("cross_correlate", "fwd"): (correlate, (x, w)),
      ("cross_correlate", "fwd+bwd"): (_fwd_bwd(correlate, (0, 1)), (x, w, g)),
      ("deform_conv", "fwd"): (deform, (x, w, offsets, mask)),
      ("deform_conv", "fwd+bwd"): (_fwd_bwd(deform, diff), (x, w, offsets, mask, g)),
      ("  gather", "fwd"): (gather, (xp,)),
      ("  gather", "fwd+bwd"): (_fwd_bwd(gather, (0,)), (xp, g_windows)),
      ("  sampling", "fwd"): (sampling, (x, offsets, mask)),
      (
          "  sampling",
          "fwd+bwd",
      ): (_fwd_bwd(sampling, (0, 1, 2) if modulated else (0, 1)), (x, offsets, mask, g_cols)),
      ("  contraction", "fwd"): (contraction, (cols, w)),
      ("  contraction", "fwd+bwd"): (_fwd_bwd(contraction, (0, 1)), (cols, w, g)),
  }
  compiled = {}
  for key, (f, f_args) in programs.items():
    compiled[key] = (jax.jit(f).lower(*f_args).compile(), f_args)
  return compiled


def _time(fn, f_args) -> tuple[float, float]:
  w0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*f_args))
  return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
  parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--kernel", type=int, default=3)
  parser.add_argument("--offset-groups", type=int, default=1)
  parser.add_argument("--modulated", action="store_true")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--rounds", type=int, default=7)
  args = parser.parse_args(argv)
  device = jax.devices()[0]
  print(
      f"jax {jax.__version__} on {device.platform} ({device.device_kind}); x "
      f"[{args.batch}, {args.size}, {args.size}, {args.channels}] {args.dtype}, kernel "
      f"{args.kernel}×{args.kernel} {args.channels}→{args.channels}, padding {args.kernel // 2}, "
      f"offset_groups {args.offset_groups}{', modulated' if args.modulated else ''}; "
      f"{args.rounds} rounds"
  )
  compiled = _programs(args)
  for fn, f_args in compiled.values():  # warm-up
    _time(fn, f_args)
  walls = {key: [] for key in compiled}
  cpus = {key: [] for key in compiled}
  for _ in range(args.rounds):
    for key, (fn, f_args) in compiled.items():
      w, c = _time(fn, f_args)
      walls[key].append(w)
      cpus[key].append(c)
  med_w = {key: statistics.median(v) * 1e3 for key, v in walls.items()}
  med_c = {key: statistics.median(v) * 1e3 for key, v in cpus.items()}
  print(f"\n  {'(median ms)':16s} {'pass':8s} {'wall':>9s} {'cpu':>9s} {'wall/xcorr':>11s}")
  for phase in ("fwd", "fwd+bwd"):
    base = med_w[("cross_correlate", phase)]
    for name in ("cross_correlate", "deform_conv", "  gather", "  sampling", "  contraction"):
      key = (name, phase)
      print(
          f"  {name:16s} {phase:8s} {med_w[key]:9.2f} {med_c[key]:9.2f} "
          f"{med_w[key] / base:11.2f}"
      )
  for phase in ("fwd", "fwd+bwd"):
    total = med_w[("deform_conv", phase)]
    sampling, contraction = (med_w[(f"  {n}", phase)] for n in ("sampling", "contraction"))
    print(
        f"\n  {phase}: deform_conv / cross_correlate = "
        f"{total / med_w[('cross_correlate', phase)]:.1f}×; deform_conv {total:.1f} ms, its "
        f"sampling alone {sampling:.1f} ms ({sampling / total:.0%}), its contraction alone "
        f"{contraction:.1f} ms ({contraction / total:.0%})"
    )


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
