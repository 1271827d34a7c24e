"""Per-layer CPU convolution times: cnnjax's lowering vs lax vs PyTorch (by hand, not CI).

For seed-cnn's two 5×5 VALID convolutions and resnet20's first convolution and its
three 3×3 SAME stride-1 shapes (batch 128, channels-last, float32), times the forward
pass, the input gradient (dx), the weight gradient (dw) and a training layer's work
("train": forward + the gradients training needs; the first layer has no dx) for

- **cnnjax**: :func:`cnnjax.cross_correlate`, i.e. cnnjax's CPU lowering;
- **lax**: one plain ``lax.conv_general_dilated`` (the anchor of every ratio);
- **torch**: PyTorch ``conv2d`` on channels-last tensors with ``torch.set_num_threads(2)``
  (``torch.ops.aten.convolution_backward`` for dx and dw alone), when torch is
  importable (``pip install torch==2.13.0``; its columns are skipped otherwise);
- with ``--forms``: each form of :mod:`cnnjax._lowering.cpu_rows` on its own (row-stacked
  forward, row-stacked input gradient, batch chunks of the weight gradient), to re-derive
  the per-shape rule of that module.

Every JAX function is compiled ahead of time (compile excluded) and all contenders are
timed in alternating rounds, in a new random order each round (PyTorch's threads spin
for a while after each call and would slow whichever job always followed them), so a
shared machine's noise hits them alike; medians over ``--rounds`` rounds, ratios to lax
measured in the same run. The
"seed-cnn" line sums the two seed-cnn layers' train medians (the convolutions of one
seed-cnn train step). Prints a markdown table.

    python benchmarks/cpu_layers.py                  # 9 rounds, all layers (minutes)
    python benchmarks/cpu_layers.py --only conv2 --forms --rounds 15
    python benchmarks/cpu_layers.py --quick          # batch 16, 3 rounds (smoke test)
    python benchmarks/cpu_layers.py --steps          # whole train steps, forms on vs off

``--steps`` times whole train steps instead (``cnnjax train``'s compiled step,
``benchmarks/_step.py``) of seed-cnn and resnet20 at the batch size, traced with the
forms of :func:`cnnjax._lowering.cpu_rows.plan` (the default, "on"), with
``cnnjax.cpu_forms(rows=False)`` (lax's convolutions, "off") and with the rule less one form (no
batch chunks of dw; no dw barrier; no dx barrier), alternating
blocks of ``--block`` steps. The dw chunks show only here: XLA:CPU runs a program of at
most 8 operations (one layer's) sequentially, and only a whole step's independent chunks
run concurrently.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from ops import _machine, _random, _versions

from cnnjax._lowering import cpu_rows
from cnnjax._lowering.config import ConvConfig
from cnnjax.conv import cross_correlate

try:  # optional: PyTorch CPU beside the JAX figures
  import torch
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - benchmark only
  torch = None

_DN = ("NHWC", "HWIO", "NHWC")
QUANTITIES = ("fwd", "dx", "dw", "train")


class Layer(NamedTuple):
  name: str
  hw: int
  c_in: int
  c_out: int
  k: int
  padding: str  # "VALID" or "SAME"
  first: bool  # the network's first layer: training needs no dx

  def describe(self, batch):
    return (
        f"{self.k}×{self.k} {self.padding}, {self.hw}×{self.hw}×{self.c_in} → "
        f"{self.c_out}, batch {batch}"
    )


LAYERS = (
    Layer("seed-cnn conv1", 32, 3, 32, 5, "VALID", True),
    Layer("seed-cnn conv2", 14, 32, 64, 5, "VALID", False),
    Layer("resnet20 conv1", 32, 3, 16, 3, "SAME", True),
    Layer("resnet20 32×32×16", 32, 16, 16, 3, "SAME", False),
    Layer("resnet20 16×16×32", 16, 32, 32, 3, "SAME", False),
    Layer("resnet20 8×8×64", 8, 64, 64, 3, "SAME", False),
)


def _lax(padding):
  return lambda x, w: lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DN)


def _form(plan: cpu_rows.Plan, padding: str, k: int):
  p = (0, 0) if padding == "VALID" else (k // 2, k // 2)
  cfg = ConvConfig.make(2, stride=(1, 1), pads=(p, p))
  return lambda x, w: cpu_rows.conv(x, w, cfg, plan)


def _contenders(layer: Layer, forms: bool) -> dict:
  out = {
      "lax": _lax(layer.padding),
      "cnnjax": lambda x, w: cross_correlate(x, w, padding=layer.padding),
  }
  if forms:
    p = cpu_rows.Plan
    out.update(
        {
            "form: rows fwd": _form(p(forward="rows"), layer.padding, layer.k),
            "form: rows dx": _form(p(input_grad="rows"), layer.padding, layer.k),
            **{
                f"form: dw {c} chunks": _form(p(weight_chunks=c), layer.padding, layer.k)
                for c in (2, 4, 8)
            },
        }
    )
  return out


def _jax_thunks(fn, x, w, g, first):
  """AOT-compiled thunks per quantity (g is an argument: no constant folding)."""

  def dx(x, w, g):
    return jax.vjp(lambda x: fn(x, w), x)[1](g)[0]

  def dw(x, w, g):
    return jax.vjp(lambda w: fn(x, w), w)[1](g)[0]

  def train(x, w, g):
    if first:
      y, vjp = jax.vjp(lambda w: fn(x, w), w)
    else:
      y, vjp = jax.vjp(fn, x, w)
    return y, vjp(g)

  thunks = {}
  for name, f, args in (
      ("fwd", fn, (x, w)),
      ("dx", dx, (x, w, g)),
      ("dw", dw, (x, w, g)),
      ("train", train, (x, w, g)),
  ):
    compiled = jax.jit(f).lower(*args).compile()
    thunks[name] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
  return thunks


def _torch_thunks(x_np, w_np, g_np, layer: Layer):
  """PyTorch thunks on channels-last tensors holding the same data."""
  cl = torch.channels_last
  x = torch.from_numpy(x_np).permute(0, 3, 1, 2)  # NHWC data = channels-last NCHW view
  w = torch.from_numpy(w_np).permute(3, 2, 0, 1).contiguous(memory_format=cl)  # OIHW
  g = torch.from_numpy(g_np).permute(0, 3, 1, 2)
  pad = 0 if layer.padding == "VALID" else layer.k // 2

  def backward(mask):
    return torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, mask
    )

  def train():
    xt = x.detach().requires_grad_(not layer.first)
    wt = w.detach().requires_grad_(True)
    y = F.conv2d(xt, wt, padding=pad)
    y.backward(g)
    return y

  def fwd():
    with torch.no_grad():
      return F.conv2d(x, w, padding=pad)

  return {
      "fwd": fwd,
      "dx": lambda: backward([True, False, False]),
      "dw": lambda: backward([False, True, False]),
      "train": train,
  }


def _check(name, thunks, ref):
  """Warns when a contender's results differ from lax's (relative to their scale)."""
  for q in QUANTITIES:
    got, want = thunks[q](), ref[q]()
    if not isinstance(got, tuple):
      got, want = (got,), (want,)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      a = (
          a.detach().numpy().transpose(0, 2, 3, 1)
          if torch is not None and isinstance(a, torch.Tensor)
          else np.asarray(a)
      )
      b = np.asarray(b)
      if a.shape != b.shape:
        continue  # torch weight gradients are OIHW
      err = float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))
      if err > 1e-4:
        print(f"warning: {name} {q} differs from lax by {err:.1e} (relative)")


def run_layer(layer: Layer, batch: int, rounds: int, forms: bool) -> dict:
  x_np = _random((batch, layer.hw, layer.hw, layer.c_in), 0)
  w_np = _random((layer.k, layer.k, layer.c_in, layer.c_out), 1) * 0.05
  out_hw = layer.hw - layer.k + 1 if layer.padding == "VALID" else layer.hw
  g_np = _random((batch, out_hw, out_hw, layer.c_out), 2)
  x, w, g = jnp.asarray(x_np), jnp.asarray(w_np), jnp.asarray(g_np)
  contenders = {
      name: _jax_thunks(fn, x, w, g, layer.first) for name, fn in _contenders(layer, forms).items()
  }
  if torch is not None:
    contenders["torch"] = _torch_thunks(x_np, w_np, g_np, layer)
  for name, thunks in contenders.items():
    if name != "lax":
      _check(name, thunks, contenders["lax"])
  jobs = [(name, q) for name in contenders for q in QUANTITIES]
  for name, q in jobs:  # warm up (allocations, thread pools)
    contenders[name][q]()
  times = {job: [] for job in jobs}
  rng = random.Random(0)
  for _ in range(rounds):
    # A new order each round: PyTorch's OpenMP threads spin for a while after a call, so
    # a fixed order would slow whichever job always follows a torch one.
    order = rng.sample(jobs, len(jobs))
    for job in order:
      t0 = time.perf_counter()
      contenders[job[0]][job[1]]()
      times[job].append(time.perf_counter() - t0)
  return {job: statistics.median(ts) for job, ts in times.items()}


def _cell(ms, ratio):
  return f"{ms * 1e3:.2f} ({ratio:.2f})"


def markdown(results, batch) -> list[str]:
  lines = [
      "| layer | contender | fwd ms (÷ lax) | dx ms (÷ lax) | dw ms (÷ lax) "
      "| train ms (÷ lax) | train ÷ torch |",
      "|---|---|---:|---:|---:|---:|---:|",
  ]
  totals = {}
  for layer, med in results:
    names = list(dict.fromkeys(name for name, _ in med))
    for name in names:
      cells = [_cell(med[name, q], med[name, q] / med["lax", q]) for q in QUANTITIES]
      vs_torch = (
          f"{med[name, 'train'] / med['torch', 'train']:.2f}" if ("torch", "train") in med else ""
      )
      shown = f"**{name}**" if name == "cnnjax" else name
      lines.append(
          f"| {layer.name}: {layer.describe(batch)} | {shown} | "
          + " | ".join(cells)
          + f" | {vs_torch} |"
      )
      if layer.name.startswith("seed-cnn"):
        totals.setdefault(name, []).append(med[name, "train"])
  seed = {name: sum(ts) for name, ts in totals.items() if len(ts) == 2}
  if "lax" in seed:
    for name, total in seed.items():
      vs_torch = f"{total / seed['torch']:.2f}" if "torch" in seed else ""
      lines.append(
          f"| **seed-cnn, both layers** (conv1 fwd+dw, conv2 fwd+dx+dw) | {name} "
          f"| | | | {_cell(total, total / seed['lax'])} | {vs_torch} |"
      )
  return lines


def _step_variants():
  """Trace-time settings of the compared train steps: name -> (``cnnjax.cpu_forms``'s
  ``rows``, the change applied to each plan of :func:`cpu_rows.plan`, or ``None``)."""
  return {
      "off": (False, None),
      "on": (True, None),
      "on, no dw chunks": (True, dict(weight_chunks=1)),
      "on, no dw barrier": (True, dict(dw_barrier=False)),
      "on, no dx barrier": (True, dict(dx_barrier=False)),
  }


def time_steps(models, batch: int, rounds: int, block: int) -> list[str]:
  """Train steps per model with the forms off, on, and on without one of them (see the
  docstring)."""
  from unittest import mock  # noqa: PLC0415

  from _step import (  # noqa: PLC0415
      build,
      compile_train,
      random_dataset,
      time_train,  # noqa: PLC0415
  )

  from cnnjax.train import TrainConfig  # noqa: PLC0415

  data = random_dataset(max(20 * batch, 2_000), 0)
  lines = ["| model | forms | ms per step | images/s | ÷ off |", "|---|---|---:|---:|---:|"]
  rule = cpu_rows.plan
  for model in models:
    config = TrainConfig(
        model=model,
        batch_size=batch,
        eval_batch_size=batch,
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="constant",
        warmup_epochs=0.0,
        epochs=1,
    )
    run, _ = build(config, data)
    programs, states = {}, {}
    for name, (switch, change) in _step_variants().items():
      planner = rule if change is None else (lambda *a, change=change: rule(*a)._replace(**change))
      with cnnjax.cpu_forms(rows=switch), mock.patch.object(cpu_rows, "plan", planner):
        jax.clear_caches()  # jit's cache does not see the patched plan
        states[name] = jax.tree.map(jnp.copy, run.state)
        programs[name] = compile_train(run, states[name])
    times = {name: [] for name in programs}
    for r in range(rounds):
      for name in (list(programs) if r % 2 == 0 else list(programs)[::-1]):
        t = time_train(
            programs[name],
            run,
            states[name],
            calls=block,
            rounds=1,
            warmup_calls=1 if r == 0 else 0,
        )
        states[name] = t.state
        times[name].append(t.step_seconds_median)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in programs:
      lines.append(
          f"| {model} | {name} | {med[name] * 1e3:.1f} | {batch / med[name]:,.0f} "
          f"| {med[name] / med['off']:.2f} |"
      )
  return lines


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--rounds", type=int, default=None, help="rounds (default 9, 3 with --quick)")
  p.add_argument("--quick", action="store_true", help="batch 16, 3 rounds (smoke test)")
  p.add_argument("--batch-size", type=int, default=None, help="default 128 (16 with --quick)")
  p.add_argument(
      "--only",
      action="append",
      default=None,
      metavar="TEXT",
      help="layers whose name contains TEXT (repeatable)",
  )
  p.add_argument(
      "--forms",
      action="store_true",
      help="also time each form of cnnjax._lowering.cpu_rows on its own",
  )
  p.add_argument(
      "--steps",
      action="store_true",
      help="time whole train steps (seed-cnn, resnet20), forms on vs off",
  )
  p.add_argument("--block", type=int, default=5, help="steps per block with --steps")
  args = p.parse_args(argv)
  rounds = args.rounds or (3 if args.quick else 9)
  batch = args.batch_size or (16 if args.quick else 128)
  if torch is not None:
    torch.set_num_threads(2)
  else:
    print(
        "note: torch not importable; PyTorch columns skipped "
        "(pip install torch==2.13.0 to add them)"
    )
  load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
  header = (
      f"CPU {'train steps' if args.steps else 'layers'}, {datetime.date.today()}; "
      f"{_machine()}; {_versions()}; `python benchmarks/cpu_layers.py "
      f"{' '.join(sys.argv[1:] if argv is None else argv)}`; medians of {rounds} "
      f"alternating rounds; load average before {load}, after "
  )
  if args.steps:
    models = [
        m for m in ("seed-cnn", "resnet20") if not args.only or any(s in m for s in args.only)
    ]
    lines = time_steps(models, batch, rounds, args.block)
    print(header + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + "\n")
    print("\n".join(lines))
    return
  results = []
  for layer in LAYERS:
    if args.only and not any(s in layer.name for s in args.only):
      continue
    print(f"{layer.name}: {layer.describe(batch)} ...", file=sys.stderr, flush=True)
    results.append((layer, run_layer(layer, batch, rounds, args.forms)))
  print(header + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + "\n")
  print("\n".join(markdown(results, batch)))


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
