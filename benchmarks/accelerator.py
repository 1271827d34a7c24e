"""Training speed of fastnet, seed-cnn and resnet20, on whatever backend is present (issue 15).

    python benchmarks/accelerator.py [--json F] [--only NAME ...] [--steps N]
                                     [--steps-per-call K] [--rounds R] [--quick]

For each configuration (``fastnet``: the ``--recipe fast`` config; ``seed-cnn`` and
``resnet20``: the README's CIFAR-10 recipes, batch 128; each in float32 and bfloat16 via
``TrainConfig.dtype``), on random uint8 CIFAR-shaped data (45,000 training images):

- builds the run with ``cnnjax.train.build_run`` and compiles, ahead of time, the train
  program the training loop calls (``steps.train`` over ``steps_per_call`` steps when that
  is > 1, else ``steps.train_one``); prints its lower (trace) and compile seconds;
- times rounds of back-to-back train calls, blocking only at the end of each round
  (``_step.time_train``), alternating with a block of ceiling matmuls in the step's dtype
  (``_flops.matmul_ceiling``), medians over the rounds;
- prints images/s (per optimizer step: a call of k steps counts k batches), seconds per
  45,000-image epoch (``45,000 // batch`` steps at the median step), FLOPs per image
  (``cost_analysis()`` and 3 × 2 × ``cnnjax.summary`` MACs, the larger used:
  ``_flops.step_flops``), achieved FLOP/s and its share of the same-dtype matmul.

The persistent compilation cache is off by default, so compile seconds are cold
compiles (``--compile-cache DIR`` times a load from DIR on a second run). On CPU the
defaults are smaller (3 rounds, a few steps each, a 2048² ceiling matmul) so the whole
run takes minutes; on an accelerator, 5 rounds of up to an epoch (128 steps at most) and
an 8192² matmul.

Names for ``--only``: ``fastnet-bf16``, ``fastnet-f32``, ``seed-cnn-f32``,
``seed-cnn-bf16``, ``resnet20-f32``, ``resnet20-bf16``, or a model name for both dtypes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable

import jax
import jaxlib

import cnnjax  # noqa: F401  (first: its XLA:CPU flags are set before a backend starts)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _flops import matmul_ceiling, model_flops, step_dtype, step_flops  # noqa: E402
from _report import write_json  # noqa: E402
from _step import build, compile_train, random_dataset, time_train  # noqa: E402

from cnnjax.train import TrainConfig  # noqa: E402

EPOCH_IMAGES = 45_000  # CIFAR-10's training split less 5,000 validation images


def _fastnet(dtype: str) -> TrainConfig:
  return TrainConfig.from_recipe("fast", dtype=dtype)


def _seed_cnn(dtype: str) -> TrainConfig:
  # README: cnnjax train --model seed-cnn --epochs 15 --optimizer sgd --lr 0.05
  #   --momentum 0.9 --weight-decay 5e-4 --schedule cosine --augment
  return TrainConfig(
      model="seed-cnn",
      dtype=dtype,
      epochs=15,
      batch_size=128,
      optimizer="sgd",
      lr=0.05,
      momentum=0.9,
      weight_decay=5e-4,
      schedule="cosine",
      augment=True,
  )


def _resnet20(dtype: str) -> TrainConfig:
  # README: cnnjax train --model resnet20 --epochs 40 --batch-size 128 --optimizer sgd
  #   --lr 0.1 --momentum 0.9 --nesterov --weight-decay 5e-4 --label-smoothing 0.1
  #   --schedule cosine --warmup-epochs 1 --augment --flip alternating --tta flip
  #   --tta-final-only
  return TrainConfig(
      model="resnet20",
      dtype=dtype,
      epochs=40,
      batch_size=128,
      optimizer="sgd",
      lr=0.1,
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,
      label_smoothing=0.1,
      schedule="cosine",
      warmup_epochs=1.0,
      augment=True,
      flip="alternating",
      tta="flip",
      tta_final_only=True,
  )


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  model: str
  dtype: str
  config: Callable[[str], TrainConfig]
  cpu_steps: int  # timed steps per round on CPU (an accelerator: up to an epoch, 128)


CASES = (
    Case("fastnet-bf16", "fastnet", "bfloat16", _fastnet, 1),
    Case("fastnet-f32", "fastnet", "float32", _fastnet, 1),
    Case("seed-cnn-f32", "seed-cnn", "float32", _seed_cnn, 16),
    Case("seed-cnn-bf16", "seed-cnn", "bfloat16", _seed_cnn, 16),
    Case("resnet20-f32", "resnet20", "float32", _resnet20, 4),
    Case("resnet20-bf16", "resnet20", "bfloat16", _resnet20, 4),
)


def _select(only: list[str]) -> list[Case]:
  if not only:
    return list(CASES)
  known = {c.name for c in CASES} | {c.model for c in CASES}
  unknown = [o for o in only if o not in known]
  if unknown:
    raise SystemExit(
        f"accelerator.py: --only got {unknown}; expected names from " f"{sorted(known)}."
    )
  return [c for c in CASES if c.name in only or c.model in only]


def machine() -> dict:
  device = jax.devices()[0]
  return {
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "host": platform.machine(),
      "host_cpus": os.cpu_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  }


def run_case(case: Case, args, dataset, ceilings: dict) -> dict:
  """Builds, compiles and times one case; returns its figures."""
  config = case.config(case.dtype)
  changes = {}
  if args.steps_per_call is not None:
    changes["steps_per_call"] = args.steps_per_call
  if args.batch_size is not None:
    changes["batch_size"] = args.batch_size
  changes["eval_batch_size"] = min(config.eval_batch_size, len(dataset.val_labels))
  config = config.replace(**changes)
  run, init_seconds = build(config, dataset)
  program = compile_train(run)
  k = program.steps_per_call
  batch = config.batch_size
  cpu = jax.default_backend() == "cpu"
  steps = args.steps or (case.cpu_steps if cpu else min(run.steps_per_epoch, 128))
  calls = max(1, math.ceil(steps / k))

  dtype = step_dtype(config)
  if dtype.name not in ceilings:
    ceilings[dtype.name] = matmul_ceiling(args.matmul_size, dtype, block=False)
  mm, mm_flops, _ = ceilings[dtype.name]
  timing = time_train(
      program, run, calls=calls, rounds=args.rounds, ceiling=mm, ceiling_flops=mm_flops
  )

  forward = model_flops(
      config.model, run.spec.input_shape, train=False, options=config.model_options
  )
  count = step_flops(program.fn, 3 * forward * batch * k)  # a call: k steps
  per_image = count["flops"] / (batch * k)
  step_s = timing.step_seconds_median
  images_s = batch / step_s
  achieved = per_image * images_s
  ceiling = timing.ceiling_flops_per_second
  return {
      "name": case.name,
      "model": case.model,
      "dtype": dtype.name,
      "batch_size": batch,
      "steps_per_call": k,
      "program": program.name,
      "unroll": config.unroll,
      "init_seconds": init_seconds,
      "lower_seconds": program.lower_seconds,
      "compile_seconds": program.compile_seconds,
      "rounds": args.rounds,
      "calls_per_round": calls,
      "steps_per_round": timing.steps,
      "round_seconds": timing.block_seconds,
      "step_seconds": timing.step_seconds,
      "step_seconds_median": step_s,
      "images_per_second": images_s,
      "seconds_per_epoch": (EPOCH_IMAGES // batch) * step_s,
      "epoch_steps": EPOCH_IMAGES // batch,
      "flops_per_image": per_image,
      "flops_source": count["source"],
      "flops_per_image_compiled": (
          count["compiled"] / (batch * k) if count["compiled"] is not None else None
      ),
      "flops_per_image_model": count["model"] / (batch * k),
      "achieved_flops_per_second": achieved,
      "matmul_size": args.matmul_size,
      "matmul_dtype": dtype.name,
      "matmul_reps_per_round": timing.ceiling_reps,
      "matmul_seconds": timing.ceiling_seconds,
      "matmul_flops_per_second": ceiling,
      "fraction_of_matmul": achieved / ceiling if ceiling else None,
      "loss": timing.loss,
  }


HEADER = (
    f"{'name':<14} {'k':>2} {'batch':>5} {'images/s':>10} {'s/epoch':>9} "
    f"{'lower s':>7} {'compile s':>9} {'GFLOP/img':>9} {'(src)':<7} "
    f"{'TFLOP/s':>8} {'ceiling':>8} {'share':>6}"
)


def _line(r: dict) -> str:
  src = "summary" if r["flops_source"] == "summary" else "cost"
  share = f"{r['fraction_of_matmul']:.1%}" if r["fraction_of_matmul"] else "n/a"
  ceiling = r["matmul_flops_per_second"]
  return (
      f"{r['name']:<14} {r['steps_per_call']:>2} {r['batch_size']:>5} "
      f"{r['images_per_second']:>10,.0f} {r['seconds_per_epoch']:>9.3f} "
      f"{r['lower_seconds']:>7.2f} {r['compile_seconds']:>9.2f} "
      f"{r['flops_per_image'] / 1e9:>9.4f} {src:<7} "
      f"{r['achieved_flops_per_second'] / 1e12:>8.3f} "
      f"{(ceiling or 0) / 1e12:>8.3f} {share:>6}"
  )


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")
  p.add_argument(
      "--only",
      action="append",
      default=[],
      metavar="NAME",
      help="run only this case or model (repeatable)",
  )
  p.add_argument(
      "--steps",
      type=int,
      default=None,
      help="timed steps per round, rounded up to whole calls (default: a few "
      "on CPU, up to an epoch (128 at most) on an accelerator)",
  )
  p.add_argument(
      "--steps-per-call",
      type=int,
      default=None,
      help="override TrainConfig.steps_per_call (default: the config's)",
  )
  p.add_argument(
      "--rounds",
      type=int,
      default=None,
      help="timed rounds (default: 3 on CPU, 5 on an accelerator)",
  )
  p.add_argument("--batch-size", type=int, default=None, help="override every case's batch size")
  p.add_argument(
      "--matmul-size",
      type=int,
      default=None,
      help="n of the n×n ceiling matmul (default: 2048 CPU, 8192 accelerator)",
  )
  p.add_argument(
      "--num-train", type=int, default=EPOCH_IMAGES, help="random training images on the device"
  )
  p.add_argument(
      "--compile-cache",
      default="off",
      metavar="DIR|off",
      help="JAX's persistent compilation cache (default off: cold compiles)",
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help="tiny settings (batch 32, 512 images, 2 rounds of 2 steps, a 256² "
      "matmul): checks that it runs, measures nothing",
  )
  args = p.parse_args(argv)
  if args.quick:
    for name, value in (
        ("batch_size", 32),
        ("num_train", 512),
        ("steps", 2),
        ("rounds", 2),
        ("matmul_size", 256),
    ):
      if getattr(args, name) is None or (name == "num_train" and args.num_train == EPOCH_IMAGES):
        setattr(args, name, value)
  cases = _select(args.only)

  from cnnjax.train.compile_cache import enable_compile_cache

  cache = enable_compile_cache(args.compile_cache)
  info = machine()
  cpu = info["backend"] == "cpu"
  args.rounds = args.rounds or (3 if cpu else 5)
  args.matmul_size = args.matmul_size or (2048 if cpu else 8192)
  print(
      f"accelerator.py on {info['device_kind']} ({info['backend']}, "
      f"{info['device_count']} device(s)), host {info['host']} with {info['host_cpus']} "
      f"CPUs, jax {info['jax']}, jaxlib {info['jaxlib']}, {info['date']}"
  )
  print(
      f"  {args.rounds} rounds; ceiling: {args.matmul_size}² matmul in each step's dtype; "
      f"compile cache {cache or 'off'}; {args.num_train} random training images; "
      f"images/s per optimizer step; s/epoch for {EPOCH_IMAGES:,} images"
  )
  t_start = time.perf_counter()
  dataset = random_dataset(args.num_train, min(5_000, max(args.num_train // 4, 128)))
  ceilings: dict = {}
  results = []
  print(HEADER, flush=True)
  for case in cases:
    r = run_case(case, args, dataset, ceilings)
    results.append(r)
    print(_line(r), flush=True)
  total = time.perf_counter() - t_start
  print(
      f"  total {total:.1f} s; FLOP/img: the larger of cost_analysis() and 3 x 2 x "
      "cnnjax.summary MACs (src); share: achieved / the ceiling matmul in the same dtype"
  )
  out = {
      "machine": info,
      "compile_cache": cache,
      "rounds": args.rounds,
      "matmul_size": args.matmul_size,
      "num_train": args.num_train,
      "quick": args.quick,
      "total_seconds": total,
      "results": results,
  }
  write_json(args.json, out)
  return out


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
