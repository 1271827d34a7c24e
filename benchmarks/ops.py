"""Speed of every cnnjax op against its anchor, interleaved in one run (by hand, not CI).

Each case times cnnjax's op and its anchors, forward and forward+backward (gradients
with respect to the input and the weights), each compiled ahead of time (compile
excluded) and timed round-robin over ``--rounds`` rounds, the order rotating each
round, so a shared machine's noise hits them alike. It reports medians of wall time
and of process CPU time (user + system, less sensitive to other processes on a shared
machine), each row as a ratio to the case's anchor, and XLA's peak memory estimate
for the JAX rows (arguments + outputs + temporaries, from ``memory_analysis()``).

Cases and anchors:

- ``cross_correlate`` (3×3 SAME), ``convolve``, dilated, strided, 1×1 and depthwise
  variants vs raw ``lax.conv_general_dilated`` (target ≤ 1.05×), with PyTorch
  (``torch.nn.functional.conv2d`` on a channels-last tensor) beside each when torch
  is importable;
- ``conv_transpose`` vs ``lax.conv_transpose`` (and ``conv_transpose2d``);
- ``locally_connected`` vs ``lax.conv_general_dilated_local`` and
  ``flax.linen.ConvLocal`` (target ≤ 1.0× at no more peak memory);
- ``tiled_conv`` (tile 2×2, 3×3, SAME, 32×32×32 → 32, batch 32) vs a shared
  ``cross_correlate`` of the same shape (must be ≤ 1.5×, goal ≤ 1.25×).

Usage::

    python benchmarks/ops.py                 # full shapes, 7 rounds (minutes)
    python benchmarks/ops.py --quick         # small shapes, for development
    python benchmarks/ops.py --only conv3x3 --rounds 9

The table is printed and written as markdown (``--out``, by default
``benchmarks/results/ops-cpu.md``, or ``ops-cpu-quick.md`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax.conv import conv_transpose, convolve, cross_correlate

try:  # optional: PyTorch CPU beside the JAX figures
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - benchmark only
  torch = None

_DN = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass
class Contender:
  """One row: a JAX function of (x, w) or a PyTorch pair of thunks."""

  name: str
  role: str  # "cnnjax", "anchor" (the ratio's denominator), "jax" or "torch"
  fn: Callable | None = None  # JAX: f(x, w) -> y
  torch_kwargs: dict | None = None  # PyTorch: keyword arguments of _torch_conv


@dataclasses.dataclass
class Case:
  name: str
  description: str
  x: np.ndarray
  w: np.ndarray
  contenders: list[Contender]
  note: str = ""


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _random(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------- anchors


def _lax_conv(stride=1, padding="SAME", dilation=1, groups=1, flip=False):
  def f(x, w):
    if flip:
      w = jnp.flip(w, axis=(0, 1))
    return lax.conv_general_dilated(
        x,
        w,
        (stride, stride),
        padding,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=_DN,
        feature_group_count=groups,
    )

  return f


def _torch_conv(
    x_np,
    w_np,
    g_np,
    *,
    stride=1,
    padding=1,
    dilation=1,
    groups=1,
    transpose=False,
    output_padding=0,
):
  """PyTorch CPU thunks on channels-last tensors holding the same data."""
  # An NCHW view of NHWC data is PyTorch's channels-last memory format.
  xt = torch.from_numpy(np.array(x_np)).permute(0, 3, 1, 2).requires_grad_(True)
  gt = torch.from_numpy(np.array(g_np)).permute(0, 3, 1, 2)
  if transpose:  # HWIO (I = C_x, O = C_y) → conv_transpose2d's (C_y, C_x, kh, kw)
    wt = torch.from_numpy(np.array(w_np)).permute(3, 2, 0, 1)
  else:  # HWIO → OIHW
    wt = torch.from_numpy(np.array(w_np)).permute(3, 2, 0, 1)
  wt = wt.contiguous(memory_format=torch.channels_last).requires_grad_(True)

  def apply():
    if transpose:
      return F.conv_transpose2d(
          xt,
          wt,
          stride=stride,
          padding=padding,
          output_padding=output_padding,
          groups=groups,
          dilation=dilation,
      )
    return F.conv2d(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=groups)

  def fwd():
    with torch.no_grad():
      return apply()

  def fwd_bwd():
    xt.grad = None
    wt.grad = None
    y = apply()
    y.backward(gt)
    return y

  with torch.no_grad():
    shape = tuple(apply().permute(0, 2, 3, 1).shape)
  if shape != tuple(g_np.shape):
    raise AssertionError(f"PyTorch output {shape} != JAX output {g_np.shape}")
  return fwd, fwd_bwd


# --------------------------------------------------------------------- cases


def _conv_case(
    name,
    description,
    batch,
    hw,
    c_in,
    c_out,
    k,
    *,
    op=cross_correlate,
    stride=1,
    dilation=1,
    groups=1,
    torch_ok=True,
    dtype=None,
):
  """A convolution case; with ``dtype`` (e.g. bfloat16) both contenders cast the float32
  inputs to it first, and lax in float32 joins as a third row."""
  x = _random((batch, hw, hw, c_in), 0)
  w = _random((k, k, c_in // groups, c_out), 1) * 0.05
  pad = dilation * (k - 1) // 2
  anchor = _lax_conv(stride, "SAME", dilation, groups, flip=op is convolve)
  cast = (
      (lambda f: f)
      if dtype is None
      else (lambda f: lambda x, w: f(x.astype(dtype), w.astype(dtype)))
  )
  contenders = [
      Contender(
          op.__name__,
          "cnnjax",
          cast(
              lambda x, w: op(x, w, stride=stride, padding="SAME", dilation=dilation, groups=groups)
          ),
      ),
      Contender("lax.conv_general_dilated", "anchor", cast(anchor)),
  ]
  if dtype is not None:
    contenders.append(Contender("lax.conv_general_dilated, float32", "jax", anchor))
  if torch is not None and torch_ok and dtype is None:
    contenders.append(
        Contender(
            "torch conv2d (channels-last)",
            "torch",
            torch_kwargs=dict(stride=stride, padding=pad, dilation=dilation, groups=groups),
        )
    )
  return Case(name, description, x, w, contenders)


def _conv_transpose_case(batch, hw, c):
  y = _random((batch, hw, hw, c), 0)
  w = _random((3, 3, c, c), 1) * 0.05

  def anchor(y, w):
    return lax.conv_transpose(y, w, (2, 2), "SAME", dimension_numbers=_DN)

  contenders = [
      Contender(
          "conv_transpose", "cnnjax", lambda y, w: conv_transpose(y, w, stride=2, padding="SAME")
      ),
      Contender("lax.conv_transpose", "anchor", anchor),
  ]
  if torch is not None:
    contenders.append(
        Contender(
            "torch conv_transpose2d (channels-last)",
            "torch",
            torch_kwargs=dict(stride=2, padding=1, output_padding=1, transpose=True),
        )
    )
  return Case(
      "conv_transpose",
      f"stride 2, 3×3, SAME, {hw}×{hw}×{c} → {2 * hw}×{2 * hw}×{c}, " f"batch {batch}",
      y,
      w,
      contenders,
  )


def _locally_connected_case(batch, hw, c_in, c_out, k):
  try:
    from cnnjax.local import locally_connected
  except ImportError as e:
    print(f"note: locally_connected skipped, cnnjax.local not importable ({e})")
    return None
  x = _random((batch, hw, hw, c_in), 0)
  w = _random((hw, hw, k, k, c_in, c_out), 1) * 0.05  # SAME, stride 1: out = in

  def anchor(x, w):
    # lax wants [*out, C_in·k·k (C_in major), C_out].
    rhs = jnp.moveaxis(w, 4, 2).reshape(hw, hw, c_in * k * k, c_out)
    return lax.conv_general_dilated_local(x, rhs, (1, 1), "SAME", (k, k), dimension_numbers=_DN)

  contenders = [
      Contender(
          "locally_connected", "cnnjax", lambda x, w: locally_connected(x, w, padding="SAME")
      ),
      Contender("lax.conv_general_dilated_local", "anchor", anchor),
  ]
  try:
    import flax.linen as nn

    module = nn.ConvLocal(c_out, (k, k), padding="SAME", use_bias=False)
    params = module.init(jax.random.key(0), jnp.zeros((1, hw, hw, c_in)))
    kernel_shape = params["params"]["kernel"].shape

    def flax_local(x, w):
      # The anchor's rhs in Flax's kernel shape (run_case warns if results differ).
      rhs = jnp.moveaxis(w, 4, 2).reshape(kernel_shape)
      return module.apply({"params": {"kernel": rhs}}, x)

    contenders.append(Contender("flax.linen.ConvLocal", "jax", flax_local))
  except Exception as e:  # pragma: no cover - optional anchor
    print(f"note: flax.linen.ConvLocal skipped ({type(e).__name__}: {e})")
  return Case(
      "locally_connected",
      f"3×3 SAME, {hw}×{hw}×{c_in} → {c_out}, batch {batch} "
      f"({hw * hw * k * k * c_in * c_out / 1e6:.1f}M weights)",
      x,
      w,
      contenders,
  )


def _tiled_case(batch, hw, c, tile=2, k=3):
  try:
    from cnnjax.tiled import tiled_conv
  except ImportError as e:
    print(f"note: tiled_conv skipped, cnnjax.tiled not importable ({e})")
    return None
  x = _random((batch, hw, hw, c), 0)
  w = _random((tile, tile, k, k, c, c), 1) * 0.05
  contenders = [
      Contender("tiled_conv", "cnnjax", lambda x, w: tiled_conv(x, w, tile=tile, padding="SAME")),
      Contender(
          "cross_correlate (shared kernel)",
          "anchor",
          lambda x, w: cross_correlate(x, w[0, 0], padding="SAME"),
      ),
      Contender("lax.conv_general_dilated (shared)", "jax", lambda x, w: _lax_conv()(x, w[0, 0])),
  ]
  return Case(
      "tiled_conv",
      f"tile {tile}×{tile}, {k}×{k}, SAME, {hw}×{hw}×{c} → {c}, " f"batch {batch}",
      x,
      w,
      contenders,
  )


def build_cases(quick: bool) -> list[Case]:
  b = 16 if quick else 128
  hw = 16 if quick else 32
  cases = [
      _conv_case("conv3x3", f"3×3 SAME, {hw}×{hw}×64 → 64, batch {b}", b, hw, 64, 64, 3),
      _conv_case(
          "convolve",
          f"true convolution, 3×3 SAME, {hw}×{hw}×64 → 64, batch {b}",
          b,
          hw,
          64,
          64,
          3,
          op=convolve,
      ),
      _conv_case(
          "dilated",
          f"3×3 dilation 2 SAME, {hw}×{hw}×64 → 64, batch {b}",
          b,
          hw,
          64,
          64,
          3,
          dilation=2,
      ),
      _conv_case(
          "strided", f"3×3 stride 2 SAME, {hw}×{hw}×64 → 64, batch {b}", b, hw, 64, 64, 3, stride=2
      ),
      _conv_case("conv1x1", f"1×1, {hw}×{hw}×64 → 64, batch {b}", b, hw, 64, 64, 1),
      _conv_case(
          "depthwise",
          f"3×3 depthwise (groups 64), {hw}×{hw}×64 → 64, batch {b}",
          b,
          hw,
          64,
          64,
          3,
          groups=64,
      ),
      _conv_case(
          "conv3x3_bf16",
          f"bfloat16, 3×3 SAME, {hw}×{hw}×64 → 64, batch {b}",
          b,
          hw,
          64,
          64,
          3,
          dtype=jnp.bfloat16,
      ),
      _conv_case(
          "conv3x3_bf16_wide",
          f"bfloat16, 3×3 SAME, {hw // 2}×{hw // 2}×256 → 256, batch {b}",
          b,
          hw // 2,
          256,
          256,
          3,
          dtype=jnp.bfloat16,
      ),
      _conv_transpose_case(b // 4 if quick else 32, hw // 2, 64),
      _locally_connected_case(
          8 if quick else 32, 8 if quick else 16, 32 if quick else 64, 32 if quick else 64, 3
      ),
      _tiled_case(8 if quick else 32, 16 if quick else 32, 32),
  ]
  return [c for c in cases if c is not None]


# ------------------------------------------------------------------- timing


def _jax_callables(fn, x, w):
  """AOT-compiled forward and forward+backward (compile excluded), and peak bytes."""
  fwd = jax.jit(fn).lower(x, w).compile()
  y = fwd(x, w)
  g = jnp.asarray(_random(y.shape, 2))

  # g is an argument, not a constant: XLA would constant-fold the backward otherwise.
  def loss_grads(x, w, g):
    return jax.grad(lambda x, w: jnp.vdot(fn(x, w), g), argnums=(0, 1))(x, w)

  fwd_bwd = jax.jit(loss_grads).lower(x, w, g).compile()

  def peak(compiled):
    m = compiled.memory_analysis()
    if m is None:
      return None
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes

  return (lambda: fwd(x, w)), (lambda: fwd_bwd(x, w, g)), peak(fwd), peak(fwd_bwd), y


def _time_once(thunk, is_torch):
  c0, t0 = _cpu_seconds(), time.perf_counter()
  out = thunk()
  if not is_torch:
    jax.block_until_ready(out)
  return time.perf_counter() - t0, _cpu_seconds() - c0


def run_case(case: Case, rounds: int) -> list[dict]:
  x, w = jnp.asarray(case.x), jnp.asarray(case.w)
  rows, ref = [], None
  for c in case.contenders:
    row = dict(name=c.name, role=c.role, peak_fwd=None, peak_fwd_bwd=None)
    if c.role == "torch":
      row["thunks"] = _torch_conv(case.x, case.w, _random(ref.shape, 2), **c.torch_kwargs)
    else:
      f, fb, row["peak_fwd"], row["peak_fwd_bwd"], y = _jax_callables(c.fn, x, w)
      row["thunks"] = (f, fb)
      if ref is None:
        ref = y
      elif c.role == "anchor" or case.name == "locally_connected":
        # Same maths (tiled vs shared is the one case that computes something else).
        err = float(jnp.max(jnp.abs(y - ref)) / (jnp.max(jnp.abs(ref)) + 1e-30))
        tol = 1e-3 if case.x.dtype == y.dtype else 2e-2  # bf16 rows: rounding differs
        if err > tol and case.name != "tiled_conv" and case.name != "conv_transpose":
          print(f"warning: {case.name}: {c.name} differs from cnnjax by {err:.2e} (relative)")
    for thunk in row["thunks"]:  # warm up (allocations, thread pools)
      _time_once(thunk, c.role == "torch")
    row["times"] = {"fwd": [], "fwd_bwd": []}
    rows.append(row)
  order = list(range(len(rows)))
  for r in range(rounds):
    for i in order[r % len(order) :] + order[: r % len(order)]:
      for mode, thunk in zip(("fwd", "fwd_bwd"), rows[i]["thunks"], strict=True):
        rows[i]["times"][mode].append(_time_once(thunk, rows[i]["role"] == "torch"))
  for row in rows:
    for mode in ("fwd", "fwd_bwd"):
      walls, cpus = zip(*row["times"][mode], strict=True)
      row[f"{mode}_wall"] = statistics.median(walls)
      row[f"{mode}_cpu"] = statistics.median(cpus)
    del row["thunks"], row["times"]
  anchor = next((r for r in rows if r["role"] == "anchor"), rows[0])
  for row in rows:
    for mode in ("fwd", "fwd_bwd"):
      row[f"{mode}_ratio"] = row[f"{mode}_wall"] / anchor[f"{mode}_wall"]
      row[f"{mode}_cpu_ratio"] = row[f"{mode}_cpu"] / anchor[f"{mode}_cpu"]
  return rows


# ------------------------------------------------------------------- report


def _versions() -> str:
  parts = [f"Python {platform.python_version()}", f"jax {jax.__version__}"]
  import jaxlib

  parts.append(f"jaxlib {jaxlib.__version__}")
  try:
    import flax

    parts.append(f"flax {flax.__version__}")
  except ImportError:
    pass
  parts.append(f"numpy {np.__version__}")
  parts.append(
      f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
      if torch is not None
      else "torch not installed"
  )
  return ", ".join(parts)


def _machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return f"{model}, {os.cpu_count()} CPU(s), {platform.system()} {platform.release()}"


def _fmt_mib(b):
  return "" if b is None else f"{b / 2**20:.0f}"


def markdown(results, args, load_before, load_after) -> str:
  lines = [
      "# cnnjax ops vs anchors (CPU)",
      "",
      f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
      f"- Machine: {_machine()}; JAX backend `{jax.default_backend()}`",
      f"- Versions: {_versions()}",
      f"- Command: `python benchmarks/ops.py {' '.join(sys.argv[1:])}`; {args.rounds} "
      "interleaved rounds, medians; compile excluded; forward+backward = gradients "
      "with respect to x and w",
      f"- Load average before / after: {load_before} / {load_after}",
      *([f"- Note: {args.note}"] if args.note else []),
      "",
      'Ratios are to the case\'s anchor (**bold** row ratio = cnnjax). "cpu" is process '
      "CPU time (user + system over all threads), less sensitive to other processes on "
      "a shared machine than wall time. Peak = XLA's arguments + outputs + temporaries.",
      "",
  ]
  for case, rows in results:
    lines += [f"## {case.name}: {case.description}", ""]
    if case.note:
      lines += [case.note, ""]
    lines += [
        "| op | fwd ms | ÷ anchor | fwd cpu ms | ÷ anchor | fwd+bwd ms | ÷ anchor "
        "| fwd+bwd cpu ms | ÷ anchor | peak MiB fwd / fwd+bwd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
      name = f"**{r['name']}**" if r["role"] == "cnnjax" else r["name"]
      if r["role"] == "anchor":
        name += " (anchor)"
      peak = (
          ""
          if r["peak_fwd"] is None
          else f"{_fmt_mib(r['peak_fwd'])} / {_fmt_mib(r['peak_fwd_bwd'])}"
      )
      lines.append(
          f"| {name} | {r['fwd_wall'] * 1e3:.1f} | {r['fwd_ratio']:.2f} "
          f"| {r['fwd_cpu'] * 1e3:.1f} | {r['fwd_cpu_ratio']:.2f} "
          f"| {r['fwd_bwd_wall'] * 1e3:.1f} | {r['fwd_bwd_ratio']:.2f} "
          f"| {r['fwd_bwd_cpu'] * 1e3:.1f} | {r['fwd_bwd_cpu_ratio']:.2f} | {peak} |"
      )
    ours = next(r for r in rows if r["role"] == "cnnjax")
    for r in rows:
      if r["role"] == "torch":
        lines += [
            "",
            f"cnnjax ÷ PyTorch: fwd {ours['fwd_wall'] / r['fwd_wall']:.2f}, "
            f"fwd+bwd {ours['fwd_bwd_wall'] / r['fwd_bwd_wall']:.2f} (wall); "
            f"fwd {ours['fwd_cpu'] / r['fwd_cpu']:.2f}, "
            f"fwd+bwd {ours['fwd_bwd_cpu'] / r['fwd_bwd_cpu']:.2f} (cpu).",
        ]
    lines.append("")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--quick", action="store_true", help="small shapes (development)")
  parser.add_argument(
      "--only",
      action="append",
      default=None,
      metavar="NAME",
      help="run only cases whose name contains NAME (repeatable)",
  )
  parser.add_argument(
      "--rounds",
      type=int,
      default=None,
      help="interleaved timing rounds (default 7, 5 with --quick)",
  )
  parser.add_argument(
      "--note", default="", help="a line for the report's header (e.g. the machine's state)"
  )
  parser.add_argument(
      "--out", default=None, help="markdown output (default benchmarks/results/ops-cpu[-quick].md)"
  )
  args = parser.parse_args(argv)
  args.rounds = args.rounds or (5 if args.quick else 7)
  here = os.path.dirname(os.path.abspath(__file__))
  out = args.out or os.path.join(
      here, "results", "ops-cpu-quick.md" if args.quick else "ops-cpu.md"
  )
  if torch is None:
    print(
        "note: torch not importable; PyTorch rows skipped "
        "(pip install torch==2.13.0 to add them)"
    )
  load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
  results = []
  for case in build_cases(args.quick):
    if args.only and not any(s in case.name for s in args.only):
      continue
    print(f"{case.name}: {case.description} ...", flush=True)
    rows = run_case(case, args.rounds)
    for r in rows:
      print(
          f"  {r['name']:40s} fwd {r['fwd_wall'] * 1e3:8.1f} ms ({r['fwd_ratio']:.2f})"
          f"  fwd+bwd {r['fwd_bwd_wall'] * 1e3:8.1f} ms ({r['fwd_bwd_ratio']:.2f})"
          f"  cpu {r['fwd_cpu_ratio']:.2f} / {r['fwd_bwd_cpu_ratio']:.2f}",
          flush=True,
      )
    results.append((case, rows))
  load_after = ", ".join(f"{v:.1f}" for v in os.getloadavg())
  text = markdown(results, args, load_before, load_after)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    f.write(text)
  print(f"wrote {out}")


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
