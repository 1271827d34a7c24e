"""The 1×1 bottleneck: a 5×5 convolution from 200 to 32 channels, with and without it.

The lecture's example (GoogLeNet's inception module): on a 32×32×200 input, a 5×5
convolution to 32 channels ("SAME" padding, so 32×32×32 out) costs
32·32·32 × 5·5·200 ≈ 163M multiply-adds per image. A 1×1 convolution down to 16
channels first (32·32·16 × 200 ≈ 3.3M) leaves the 5×5 convolution only 16 input
channels (32·32·32 × 5·5·16 ≈ 13.1M): ≈ 16.4M in all, 10× fewer operations and 10×
fewer weights, the same output shape.

The counts are computed three ways that must agree: the formula above, `cnnjax.op_count`
per layer, and `cnnjax.summary` of the two networks built from `cnnjax.nn.Conv` layers
(both count the bias too: one add per output value). Then both networks are timed:
jit-compiled forward passes on a batch of images, the two interleaved in one run
(so machine load affects both alike), medians reported, and their ratio beside the ratio
of operations. No training and no data: it runs in seconds.

    python experiments/bottleneck.py
"""

from __future__ import annotations

import os
import time

import common
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import cnnjax
from cnnjax import nn as cnn

H = W = 32  # the input's spatial size
C_IN, C_OUT, C_MID, K = 200, 32, 16, 5  # 200 → 32 channels by 5×5; bottleneck 16
LECTURE_MACS = 163e6  # the lecture's "≈163M multiply-adds" without the bottleneck


class Direct(nnx.Module):
  """conv(5×5, 200 → 32), "SAME" padding."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.input_shape = (H, W, C_IN)
    self.conv = cnn.Conv(C_IN, C_OUT, K, padding="SAME", rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.conv(x))


class Bottleneck(nnx.Module):
  """conv(1×1, 200 → 16) → ReLU → conv(5×5, 16 → 32), "SAME" padding."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.input_shape = (H, W, C_IN)
    self.reduce = cnn.Conv(C_IN, C_MID, 1, rngs=rngs)
    self.conv = cnn.Conv(C_MID, C_OUT, K, padding="SAME", rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.conv(jax.nn.relu(self.reduce(x))))


def formula_macs() -> dict[str, int]:
  """Multiply-adds per image, from the formula (no bias)."""
  direct = H * W * C_OUT * K * K * C_IN
  reduce = H * W * C_MID * C_IN
  conv = H * W * C_OUT * K * K * C_MID
  return {"direct": direct, "reduce": reduce, "conv": conv, "bottleneck": reduce + conv}


def op_counts() -> dict[str, int]:
  """The same from `cnnjax.op_count`, layer by layer (multiply-adds + bias adds)."""
  direct = cnnjax.op_count("conv", in_shape=(H, W, C_IN), out_shape=(H, W, C_OUT), kernel=(K, K))
  reduce = cnnjax.op_count("conv", in_shape=(H, W, C_IN), out_shape=(H, W, C_MID), kernel=(1, 1))
  conv = cnnjax.op_count("conv", in_shape=(H, W, C_MID), out_shape=(H, W, C_OUT), kernel=(K, K))
  return {"direct": direct, "reduce": reduce, "conv": conv, "bottleneck": reduce + conv}


def time_forward(
    models: dict[str, nnx.Module], x: jax.Array, *, repeats: int
) -> dict[str, list[float]]:
  """Seconds per jit-compiled forward pass of each model on ``x``, interleaved."""
  fns = {}
  for name, model in models.items():
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, x, graphdef=graphdef: nnx.merge(graphdef, state)(x))
    jax.block_until_ready(fn(state, x))  # compile and warm up
    fns[name] = (fn, state)
  times = {name: [] for name in models}
  for _ in range(repeats):
    for name, (fn, state) in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn(state, x))
      times[name].append(time.perf_counter() - t0)
  return times


def _flags(parser) -> None:
  parser.add_argument(
      "--batch",
      type=int,
      default=None,
      help="images per timed forward pass (default 16; 2 with --quick)",
  )
  parser.add_argument(
      "--repeats",
      type=int,
      default=None,
      help="timed passes of each network (default 31; 5 with --quick)",
  )


def main(argv=None) -> str:
  args = common.parse_args(argv, name="bottleneck", description=__doc__, extra=_flags)
  args.dataset_line = "none: random inputs (no training)"
  batch = args.batch or common.pick(args, 16, 2)
  repeats = args.repeats or common.pick(args, 31, 5)

  # 1. Count: formula, cnnjax.op_count, cnnjax.summary of the two networks.
  macs, ops = formula_macs(), op_counts()
  rngs = nnx.Rngs(args.seed)
  models = {"direct": Direct(rngs=rngs), "bottleneck": Bottleneck(rngs=rngs)}
  tables = {name: cnnjax.summary(m, (H, W, C_IN)) for name, m in models.items()}
  params = {name: t.total_params for name, t in tables.items()}
  for name in models:  # the three counts must agree (bias adds: one per output value)
    bias_adds = H * W * (C_OUT if name == "direct" else C_MID + C_OUT)
    if not ops[name] == tables[name].total_ops == macs[name] + bias_adds:
      raise AssertionError(
          f"bottleneck: {name} counts disagree: formula {macs[name]} + bias {bias_adds}, "
          f"op_count {ops[name]}, summary {tables[name].total_ops}"
      )

  # 2. Time both forward passes, interleaved, and take medians.
  x = jax.random.normal(jax.random.key(args.seed), (batch, H, W, C_IN), jnp.float32)
  load = ", ".join(f"{v:.1f}" for v in os.getloadavg())  # 1, 5, 15 minutes
  times = time_forward(models, x, repeats=repeats)
  median = {name: float(np.median(t)) for name, t in times.items()}
  gflops = {name: 2 * macs[name] * batch / median[name] / 1e9 for name in models}

  # 3. The page.
  report = common.Report(
      "bottleneck",
      args,
      title="1×1 bottleneck: 5×5 conv 200 → 32 on 32×32, with and without",
      intro=__doc__.split("\n\n")[1],
  )
  op_ratio = macs["direct"] / macs["bottleneck"]
  time_ratio = median["direct"] / median["bottleneck"]
  report.heading("Operations and parameters per image")
  report.table(
      [
          "network",
          "multiply-adds (formula)",
          "ops (`op_count` = `summary`, + bias)",
          "params",
          "lecture",
      ],
      [
          [
              "5×5 conv, 200 → 32",
              common.count(macs["direct"]),
              common.count(ops["direct"]),
              common.count(params["direct"]),
              f"≈{LECTURE_MACS / 1e6:.0f}M multiply-adds",
          ],
          ["1×1 conv 200 → 16", common.count(macs["reduce"]), common.count(ops["reduce"]), "", ""],
          ["5×5 conv 16 → 32", common.count(macs["conv"]), common.count(ops["conv"]), "", ""],
          [
              "bottleneck total",
              common.count(macs["bottleneck"]),
              common.count(ops["bottleneck"]),
              common.count(params["bottleneck"]),
              "—",
          ],
          [
              "ratio without / with",
              f"{op_ratio:.1f}×",
              f"{ops['direct'] / ops['bottleneck']:.1f}×",
              f"{params['direct'] / params['bottleneck']:.1f}×",
              "",
          ],
      ],
      align="lrrrl",
  )
  report.text(
      f"The lecture's ≈163M is the formula's {macs['direct'] / 1e6:.2f}M; `cnnjax.op_count` "
      "and `cnnjax.summary` agree with it exactly once the bias adds (one per output value) "
      "are counted. The layer tables:"
  )
  for name, table in tables.items():
    report.text(f"**{name}**\n\n" + table.to_markdown())

  report.heading("Measured time of a forward pass")
  backend = jax.default_backend()
  report.table(
      [
          "network",
          f"median ms / batch of {batch}",
          "min ms",
          "GFLOP/s (2 × multiply-adds)",
          "time ratio without / with",
          "op ratio",
      ],
      [
          [
              "5×5 conv, 200 → 32",
              f"{1e3 * median['direct']:.2f}",
              f"{1e3 * min(times['direct']):.2f}",
              f"{gflops['direct']:.0f}",
              f"{time_ratio:.1f}×",
              f"{op_ratio:.1f}×",
          ],
          [
              "1×1 → 5×5 bottleneck",
              f"{1e3 * median['bottleneck']:.2f}",
              f"{1e3 * min(times['bottleneck']):.2f}",
              f"{gflops['bottleneck']:.0f}",
              "",
              "",
          ],
      ],
  )
  if gflops["bottleneck"] < 0.9 * gflops["direct"]:
    why = (
        f"less than the operation count: its two small convolutions run at "
        f"{gflops['bottleneck']:.0f} GFLOP/s against the large one's "
        f"{gflops['direct']:.0f} (less work per weight loaded and per call)"
    )
  elif gflops["bottleneck"] > 1.1 * gflops["direct"]:
    why = (
        f"more than the operation count: its convolutions run at "
        f"{gflops['bottleneck']:.0f} GFLOP/s against the large one's "
        f"{gflops['direct']:.0f}"
    )
  else:
    why = "about as much as the operation count (both run at a similar rate)"
  report.text(
      f"{repeats} timed forward passes of each network on {backend} (jit-compiled, float32, "
      f"after one warm-up pass; the two networks alternate, so load on the machine affects "
      f"both alike; load average before timing: {load}). The bottleneck is "
      f"{time_ratio:.1f}× faster for {op_ratio:.0f}× fewer operations: time shrinks {why}."
      + (
          " (A --quick smoke run: batch and repeats too small for stable timings.)"
          if args.quick
          else ""
      )
  )
  return report.write()


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
