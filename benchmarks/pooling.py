"""Pooling speed against anchors, interleaved in one run (run by hand, not in CI).

For each case (window, stride, padding) it times ``cnnjax.max_pool`` and
``cnnjax.avg_pool``, forward and forward+backward, beside two anchors written
directly on lax, all jitted and timed round-robin so that a shared machine's noise
hits them alike:

- ``reduce_window``: ``lax.reduce_window`` with JAX's own gradient
  (``select_and_scatter_add`` for max);
- ``reshape``: non-overlapping windows as a reshape and ``jnp.max`` / ``jnp.mean``
  (only where stride == window and there is no padding);

and, if PyTorch is importable, ``F.max_pool2d`` / ``F.avg_pool2d`` on a
channels-last CPU tensor. It reports median wall time, median process CPU time
(less sensitive to other processes on a shared machine) and each cnnjax figure as a
ratio to the best JAX anchor.

    python benchmarks/pooling.py                     # batch 128, 32×32×64, 2×2 and 3×3/2
    python benchmarks/pooling.py --rounds 9 --cases 2,2,0
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.pooling import avg_pool, max_pool

try:  # optional: PyTorch CPU beside the JAX figures
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - benchmark only
  torch = None


def _anchors(kind: str, k: int, s: int, p: int):
  pads = ((0, 0), (p, p), (p, p), (0, 0))
  out = {}
  if kind == "max":
    out["reduce_window"] = lambda x: lax.reduce_window(
        x, -jnp.inf, lax.max, (1, k, k, 1), (1, s, s, 1), pads
    )
  else:
    out["reduce_window"] = lambda x: lax.reduce_window(
        x, 0.0, lax.add, (1, k, k, 1), (1, s, s, 1), pads
    ) / (k * k)
  if k == s and p == 0:

    def reshape(x):
      n, h, w, c = x.shape
      blocks = x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c)
      return (jnp.max if kind == "max" else jnp.mean)(blocks, axis=(2, 4))

    out["reshape"] = reshape
  return out


def _jax_pair(f):
  # g is an argument, not a closed-over constant: XLA would constant-fold the
  # backward pass of a linear pool otherwise.
  fwd = jax.jit(f)
  fwd_bwd = jax.jit(jax.value_and_grad(lambda x, g: jnp.vdot(f(x), g)))
  return fwd, fwd_bwd


def _torch_pair(kind, k, s, p, x_np, g_np):
  # An NCHW view of NHWC data is PyTorch's channels-last memory format.
  xt = torch.from_numpy(np.array(x_np)).permute(0, 3, 1, 2)
  gt = torch.from_numpy(np.array(g_np)).permute(0, 3, 1, 2)
  assert xt.is_contiguous(memory_format=torch.channels_last)
  pool = (
      (lambda t: F.max_pool2d(t, k, s, p))
      if kind == "max"
      else (lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=True))
  )

  def fwd():
    with torch.no_grad():
      return pool(xt)

  def fwd_bwd():
    xr = xt.detach().requires_grad_(True)
    pool(xr).backward(gt)
    return xr.grad

  return fwd, fwd_bwd


def _time(fn, *args) -> tuple[float, float]:
  w0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - w0, time.process_time() - c0


def run_case(kind, k, s, p, x, rounds):
  g = jax.random.normal(
      jax.random.key(1), jax.eval_shape(_anchors(kind, k, s, p)["reduce_window"], x).shape, x.dtype
  )
  pool = max_pool if kind == "max" else avg_pool
  extra = {} if kind == "max" else {"count_include_pad": True}
  fns = {"cnnjax": lambda x: pool(x, k, stride=s, padding=p, **extra)}
  fns.update(_anchors(kind, k, s, p))
  timed = {}
  for name, f in fns.items():
    fwd, fwd_bwd = _jax_pair(f)
    timed[(name, "fwd")] = (fwd, (x,))
    timed[(name, "fwd+bwd")] = (fwd_bwd, (x, g))
  if torch is not None:
    tf, tfb = _torch_pair(kind, k, s, p, jax.device_get(x), jax.device_get(g))
    timed[("torch", "fwd")] = (tf, ())
    timed[("torch", "fwd+bwd")] = (tfb, ())
  # Correctness guard: the cnnjax gradient equals the reduce_window anchor's here
  # (random inputs have no ties; avg has none to break).
  ours = timed[("cnnjax", "fwd+bwd")][0](x, g)[1]
  ref = timed[("reduce_window", "fwd+bwd")][0](x, g)[1]
  assert jnp.allclose(ours, ref, rtol=1e-5, atol=1e-6), "gradient mismatch"
  for fn, args in timed.values():  # warm-up (compilation)
    _time(fn, *args)
  walls = {key: [] for key in timed}
  cpus = {key: [] for key in timed}
  for _ in range(rounds):
    for key, (fn, args) in timed.items():
      w, c = _time(fn, *args)
      walls[key].append(w)
      cpus[key].append(c)
  med_w = {key: statistics.median(v) * 1e3 for key, v in walls.items()}
  med_c = {key: statistics.median(v) * 1e3 for key, v in cpus.items()}
  print(
      f"\n{kind}_pool  window {k}, stride {s}, padding {p}, x {tuple(x.shape)} "
      f"{x.dtype}, {rounds} rounds (median ms)"
  )
  print(f"  {'impl':14s} {'pass':8s} {'wall':>9s} {'cpu':>9s} {'wall/best':>10s} {'cpu/best':>9s}")
  jax_anchor_names = [n for n in fns if n != "cnnjax"]
  for phase in ("fwd", "fwd+bwd"):
    best_w = min(med_w[(n, phase)] for n in jax_anchor_names)
    best_c = min(med_c[(n, phase)] for n in jax_anchor_names)
    for name in [*fns, *(["torch"] if torch is not None else [])]:
      key = (name, phase)
      print(
          f"  {name:14s} {phase:8s} {med_w[key]:9.2f} {med_c[key]:9.2f} "
          f"{med_w[key] / best_w:10.2f} {med_c[key] / best_c:9.2f}"
      )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=64)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument(
      "--cases", default="2,2,0;3,2,1", help="window,stride,padding triples separated by ';'"
  )
  parser.add_argument("--kinds", default="max,avg")
  args = parser.parse_args(argv)
  print(
      f"jax {jax.__version__} on {jax.devices()[0].platform}"
      + (
          f"; torch {torch.__version__}, {torch.get_num_threads()} threads"
          if torch
          else "; torch not installed"
      )
  )
  x = jax.random.normal(
      jax.random.key(0), (args.batch, args.size, args.size, args.channels), jnp.float32
  )
  for case in args.cases.split(";"):
    k, s, p = (int(v) for v in case.split(","))
    for kind in args.kinds.split(","):
      run_case(kind, k, s, p, x, args.rounds)


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
