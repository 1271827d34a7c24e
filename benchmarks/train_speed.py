"""seed-cnn training throughput: cnnjax's train step against PyTorch (run by hand, not in CI).

Both sides train the lecture's seed CNN (conv(5, 32) → ReLU → max-pool(2) → conv(5, 64)
→ ReLU → max-pool(2) → fc(100) → ReLU → fc(10), valid padding) on the same random
CIFAR-sized data, with the same batch size, loss (mean cross-entropy) and optimizer (SGD,
momentum 0.9, weight decay 5e-4 on the kernels, constant learning rate):

- cnnjax: the compiled step ``cnnjax train`` runs (``cnnjax.train.build_run``:
  on-device batch gather by a permutation, per-channel normalisation, forward, backward,
  optax update), compiled ahead of time; its compile time is reported.
- PyTorch (``pip install torch==2.13.0``): eager, channels-last, ``torch.optim.SGD``, on a
  pre-normalised float32 tensor, all threads.

Steps are timed in blocks of ``--block`` steps, alternating cnnjax and PyTorch for
``--rounds`` rounds, so a noisy machine hits both alike; images/s come from the median
block. The ratio is cnnjax ÷ PyTorch images/s (> 1: cnnjax is faster).

The train step's FLOPs are printed from ``cost_analysis()`` and from 3 × 2 × the
multiply-adds of :func:`cnnjax.summary.summary`; the larger gives cnnjax's FLOP/s, and its
share of a float32 matmul's FLOP/s (the step's dtype) measured in the same rounds
(``benchmarks/_flops.py``; ``--matmul-size 0`` skips it).

    python benchmarks/train_speed.py                     # batch 128, 7 rounds of 10 steps
    python benchmarks/train_speed.py --batch-size 256 --json out.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np
from _flops import matmul_ceiling, model_flops, step_dtype, step_flops
from _report import write_json

from cnnjax.data.dataset import Dataset
from cnnjax.train import TrainConfig, build_run

try:
  import torch
  from torch import nn
except ImportError:  # optional: the cnnjax side still runs
  torch = None


def _cnnjax_step(images, labels, *, batch_size: int, lr: float):
  """Returns ``(run(k) -> seconds for k steps, compile seconds, train-step FLOPs (the
  :func:`_flops.step_flops` dict), the step's dtype)``."""
  config = TrainConfig(
      model="seed-cnn",
      batch_size=batch_size,
      eval_batch_size=batch_size,
      optimizer="sgd",
      lr=lr,
      momentum=0.9,
      weight_decay=5e-4,
      schedule="constant",
      warmup_epochs=0.0,
      epochs=1,
  )
  empty = images[:0], labels[:0]
  run = build_run(
      config,
      Dataset(
          "random",
          images,
          labels,
          *empty,
          None,
          None,
          tuple(str(i) for i in range(10)),
          "generated",
      ),
  )
  x, y = run.arrays["train"]
  state, steps, steps_per_epoch = run.state, run.steps, run.steps_per_epoch
  perm = steps.permutation(state.rng, 0)
  t0 = time.perf_counter()
  step = steps.train_one.lower(state, x, y, perm, np.int32(0)).compile()
  compile_seconds = time.perf_counter() - t0
  flops = step_flops(
      step,
      model_flops(config.model, (32, 32, 3), train=True, options=config.model_options) * batch_size,
  )
  holder = {"state": state, "i": 0}

  def run(k: int) -> float:
    t0 = time.perf_counter()
    s = holder["state"]
    for _ in range(k):
      s, m = step(s, x, y, perm, np.int32(holder["i"] % steps_per_epoch))
      holder["i"] += 1
    jax.block_until_ready((s, m))
    holder["state"] = s
    return time.perf_counter() - t0

  return run, compile_seconds, flops, step_dtype(config)


def _torch_step(images, labels, *, batch_size: int, lr: float):
  """Returns ``run(k) -> seconds for k steps`` of eager PyTorch (channels-last)."""
  torch.manual_seed(0)
  model = nn.Sequential(
      nn.Conv2d(3, 32, 5),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Conv2d(32, 64, 5),
      nn.ReLU(),
      nn.MaxPool2d(2),
      nn.Flatten(),
      nn.Linear(1600, 100),
      nn.ReLU(),
      nn.Linear(100, 10),
  ).to(memory_format=torch.channels_last)
  decay = [p for p in model.parameters() if p.ndim > 1]
  rest = [p for p in model.parameters() if p.ndim <= 1]
  opt = torch.optim.SGD(
      [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
      lr=lr,
      momentum=0.9,
  )
  x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
  x = ((x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)).contiguous(
      memory_format=torch.channels_last
  )
  y = torch.from_numpy(labels.astype(np.int64))
  n = x.shape[0]
  loss_fn = nn.CrossEntropyLoss()
  g = torch.Generator().manual_seed(0)
  holder = {"perm": torch.randperm(n, generator=g), "i": 0}

  def run(k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
      i = holder["i"] % (n // batch_size)
      idx = holder["perm"][i * batch_size : (i + 1) * batch_size]
      holder["i"] += 1
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(model(x[idx].contiguous(memory_format=torch.channels_last)), y[idx])
      loss.backward()
      opt.step()
    loss.item()
    return time.perf_counter() - t0

  return run


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--num-train", type=int, default=10_000, help="images in the data array")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--block", type=int, default=10, help="steps per timed block")
  p.add_argument("--lr", type=float, default=0.01)
  p.add_argument("--no-torch", action="store_true", help="time cnnjax only")
  p.add_argument(
      "--matmul-size",
      type=int,
      default=1024,
      help="n of the n×n ceiling matmul in the step's dtype (0: none)",
  )
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")
  args = p.parse_args(argv)

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.num_train, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, args.num_train).astype(np.int32)
  use_torch = torch is not None and not args.no_torch
  print(
      f"seed-cnn training, batch {args.batch_size}, SGD momentum 0.9; "
      f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
      f"({jax.default_backend()}: {jax.devices()[0].device_kind})"
      + (
          f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
          if use_torch
          else ", torch not timed"
      )
  )

  cnn_run, compile_seconds, count, dtype = _cnnjax_step(
      images, labels, batch_size=args.batch_size, lr=args.lr
  )
  flops = count["flops"]
  contenders = {"cnnjax": cnn_run}
  if args.matmul_size:
    mm, mm_flops, _ = matmul_ceiling(args.matmul_size, dtype)

    def matmul(k: int) -> float:
      t0 = time.perf_counter()
      for _ in range(k):
        mm()
      return time.perf_counter() - t0

    contenders["matmul"] = matmul
  if use_torch:
    contenders["torch"] = _torch_step(images, labels, batch_size=args.batch_size, lr=args.lr)
  for run in contenders.values():  # warm-up
    run(2)
  times = {name: [] for name in contenders}
  for r in range(args.rounds):
    order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
    for name in order:
      times[name].append(contenders[name](args.block))

  compiled = count["compiled"]
  result = {
      "batch_size": args.batch_size,
      "compile_seconds": compile_seconds,
      "train_step_flops": flops,
      "train_step_flops_source": count["source"],
      "train_step_flops_compiled": compiled,
      "train_step_flops_summary": count["model"],
      "dtype": dtype.name,
      "block": args.block,
      "rounds": args.rounds,
  }
  shown = f"{compiled / args.batch_size / 1e6:.1f}" if compiled else "n/a"
  print(
      f"  cnnjax train-step compile: {compile_seconds:.2f} s; MFLOP per image: {shown} "
      f"(cost_analysis), {count['model'] / args.batch_size / 1e6:.1f} (3 x 2 x summary "
      f"MACs); using {count['source']}'s"
  )
  if "matmul" in times:
    med = statistics.median(times.pop("matmul"))
    ceiling = args.block * mm_flops / med
    achieved = flops * args.block / statistics.median(times["cnnjax"])
    result.update(
        matmul_size=args.matmul_size,
        matmul_dtype=dtype.name,
        matmul_flops_per_second=ceiling,
        fraction_of_matmul=achieved / ceiling,
    )
    print(
        f"  {dtype.name} matmul {args.matmul_size}^2: {ceiling / 1e9:.1f} GFLOP/s; cnnjax "
        f"step at {achieved / ceiling:.1%} of it"
    )
  for name, ts in times.items():
    med = statistics.median(ts)
    ips = args.block * args.batch_size / med
    result[f"{name}_images_per_second"] = ips
    result[f"{name}_block_seconds"] = ts
    extra = f", {flops * args.block / med / 1e9:.1f} GFLOP/s" if name == "cnnjax" and flops else ""
    print(
        f"  {name:<7} {ips:8,.0f} images/s  (median of {len(ts)} blocks of {args.block} "
        f"steps: {med:.3f} s{extra})"
    )
  if use_torch:
    ratio = result["cnnjax_images_per_second"] / result["torch_images_per_second"]
    result["ratio_cnnjax_over_torch"] = ratio
    print(f"  ratio cnnjax / torch images/s: {ratio:.2f}")
  write_json(args.json, result)
  return result


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
