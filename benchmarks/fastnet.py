"""fastnet training speed against the machine's matmul ceiling (run by hand, not in CI).

Builds the exact train step of ``cnnjax train --recipe fast`` (fastnet, Nesterov SGD with
Lookahead and the BatchNorm learning-rate scale, translate + alternating flip on the
device, label smoothing) on random uint8 CIFAR-sized data, compiles it ahead of time, and
times it round-robin with a large matmul in the step's dtype (the physical ceiling: XLA
runs a big matmul at close to the machine's peak), so that a shared machine's noise hits
both alike. It prints:

- lower + compile time of the train call the training loop makes (``steps.train`` over
  ``steps_per_call`` steps when that is > 1, else ``steps.train_one``: ``_step.py``);
- images/s and seconds per epoch (``num_train // batch`` steps) from the median step;
- FLOPs per training image, from the compiled step's ``cost_analysis()`` and from
  3 × 2 × the multiply-adds of :func:`cnnjax.summary.summary` (forward + backward ≈ 3 ×
  forward), both printed; the larger is used (``_flops.step_flops``: on GPU,
  ``cost_analysis()`` misses cuDNN's convolutions). FLOPs per run (``epochs`` × the
  training set, plus the TTA evaluations of the validation set, counted the same way);
- achieved FLOP/s of the step and its ratio to the measured matmul FLOP/s, the matmul in
  the step's own dtype (``--model-option dtype=bfloat16``: a bfloat16 matmul).

    python benchmarks/fastnet.py                        # the recipe's batch 1024
    python benchmarks/fastnet.py --batch-size 256 --steps 5 --json out.json

airbench94 for reference (Jordan 2024): 0.36 PFLOP per run, 3.83 s on an A100 (uncompiled
PyTorch; 3.29 s compiled), i.e. about 95 TFLOP/s of fp16 work (the A100's dense fp16
peak is 312 TFLOP/s).
"""

from __future__ import annotations

import argparse
import platform
import statistics

import jax
import numpy as np
from _flops import matmul_ceiling, model_flops, step_dtype, step_flops
from _report import write_json
from _step import build, compile_train, random_dataset, time_train

from cnnjax.train import TrainConfig


def _row(name: str, value: str, note: str = "") -> str:
  return f"  {name:<34} {value:>16}  {note}"


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's (1024)")
  p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (10)")
  p.add_argument(
      "--num-train",
      type=int,
      default=45_000,
      help="training images (45,000: CIFAR-10 less 5,000 validation)",
  )
  p.add_argument("--num-val", type=int, default=5_000, help="validation images")
  p.add_argument(
      "--steps",
      type=int,
      default=None,
      help="timed steps (default: 20 on an accelerator, 3 on CPU)",
  )
  p.add_argument(
      "--matmul-size",
      type=int,
      default=None,
      help="n of the n×n ceiling matmul, in the step's dtype (default: 8192 "
      "accelerator, 4096 CPU)",
  )
  p.add_argument("--tta", default=None, help="evaluation TTA (default: the recipe's)")
  p.add_argument(
      "--model-option",
      action="append",
      default=[],
      metavar="KEY=VALUE",
      help="fastnet option, e.g. dtype=bfloat16 (repeatable)",
  )
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")
  args = p.parse_args(argv)

  cpu = jax.default_backend() == "cpu"
  overrides = {
      k: v
      for k, v in (("batch_size", args.batch_size), ("epochs", args.epochs), ("tta", args.tta))
      if v is not None
  }
  options = dict(o.split("=", 1) for o in args.model_option)
  config = TrainConfig.from_recipe("fast", model_options=options, **overrides)
  steps_timed = args.steps or (3 if cpu else 20)
  n_mm = args.matmul_size or (4096 if cpu else 8192)
  device = jax.devices()[0]
  print(
      f"fastnet --recipe fast on {device.device_kind} ({jax.default_backend()}, "
      f"{jax.device_count()} device(s)), {platform.machine()}, jax {jax.__version__}"
  )
  print(
      f"  batch {config.batch_size}, {args.num_train} training images, "
      f"{config.epochs} epochs, tta {config.tta}"
  )

  eval_batch = min(config.eval_batch_size, args.num_val)
  config = config.replace(eval_batch_size=eval_batch)
  dataset = random_dataset(args.num_train, args.num_val)
  run, init_seconds = build(config, dataset)  # with the whitening layer's data init
  state, steps, steps_per_epoch = run.state, run.steps, run.steps_per_epoch
  x_dev, y_dev = run.arrays["train"]
  # The call the training loop makes: steps.train over steps_per_call steps, or train_one.
  program = compile_train(run)
  train, k = program.fn, program.steps_per_call
  compile_seconds = program.lower_seconds + program.compile_seconds
  val_views = {"none": 1, "flip": 2, "flip_translate": 6}[config.tta]
  forward_img = model_flops("fastnet", (32, 32, 3), train=False, options=options)
  train_count = step_flops(train, 3 * forward_img * config.batch_size * k)
  evaluate = steps.evaluate.lower(
      state.params, state.model_state, x_dev[:eval_batch], y_dev[:eval_batch], np.int32(0)
  ).compile()
  eval_count = step_flops(evaluate, val_views * forward_img * eval_batch)

  dtype = step_dtype(config)
  mm, mm_flops, _ = matmul_ceiling(n_mm, dtype, block=False)
  # One call per round, blocked on, alternating with one ceiling matmul (as before the
  # shared helper): a round per timed call.
  timing = time_train(
      program,
      run,
      calls=1,
      rounds=-(-steps_timed // k),
      ceiling=mm,
      ceiling_flops=mm_flops,
      ceiling_seconds=0.0,
  )
  step_times, loss = timing.step_seconds, timing.loss

  step_s = statistics.median(step_times)
  ceiling = timing.ceiling_flops_per_second
  img_s = config.batch_size / step_s
  epoch_s = steps_per_epoch * step_s
  compiled = train_count["compiled"]
  flops_img = compiled / (config.batch_size * k) if compiled else None
  model_flops_img = train_count["model"] / (config.batch_size * k)
  per_img = train_count["flops"] / (config.batch_size * k)
  # One forward view of the validation set; the TTA multiplies the views of the epochs it
  # applies to (only the last one with tta_final_only, the recipe's default).
  eval_view = eval_count["flops"] / eval_batch / val_views * args.num_val
  tta_epochs = 1 if config.tta_final_only else config.epochs
  eval_total = eval_view * (val_views * tta_epochs + config.epochs - tta_epochs)
  run_flops = per_img * steps_per_epoch * config.batch_size * config.epochs + eval_total
  achieved = per_img * img_s
  result = {
      "device": device.device_kind,
      "backend": jax.default_backend(),
      "batch_size": config.batch_size,
      "num_train": args.num_train,
      "epochs": config.epochs,
      "init_seconds": init_seconds,
      "compile_seconds": compile_seconds,
      "lower_seconds": program.lower_seconds,
      "xla_compile_seconds": program.compile_seconds,
      "steps_per_call": k,
      "program": program.name,
      "step_seconds_median": step_s,
      "step_seconds": step_times,
      "images_per_second": img_s,
      "seconds_per_epoch": epoch_s,
      "flops_per_image_compiled": flops_img,
      "flops_per_image_model": model_flops_img,
      "flops_per_image": per_img,
      "flops_source": train_count["source"],
      "eval_flops_source": eval_count["source"],
      "dtype": dtype.name,
      "flops_per_run": run_flops,
      "eval_flops_per_run": eval_total,
      "achieved_flops_per_second": achieved,
      "matmul_size": n_mm,
      "matmul_dtype": dtype.name,
      "matmul_flops_per_second": ceiling,
      "fraction_of_matmul": achieved / ceiling,
      "loss_after_warmup_and_timed_steps": loss,
  }
  print(_row("init (build + whitening), s", f"{init_seconds:.2f}"))
  print(
      _row(
          "train step lower + compile, s",
          f"{compile_seconds:.2f}",
          f"{program.lower_seconds:.2f} + {program.compile_seconds:.2f}; "
          f"steps.{program.name}, {k} step(s) per call",
      )
  )
  print(
      _row(
          "train step (median), s",
          f"{step_s:.4f}",
          f"over {len(step_times) * k} steps: {', '.join(f'{t:.3f}' for t in step_times)}",
      )
  )
  print(_row("images/s", f"{img_s:,.0f}"))
  print(_row("seconds per epoch", f"{epoch_s:.2f}", f"{steps_per_epoch} steps"))
  print(
      _row(
          "FLOP/image, compiled step",
          f"{flops_img / 1e9:.3f} G" if flops_img else "n/a",
          "cost_analysis() / batch",
      )
  )
  print(_row("FLOP/image, 3 x 2 x summary MACs", f"{model_flops_img / 1e9:.3f} G"))
  print(
      _row(
          "FLOP/image used", f"{per_img / 1e9:.3f} G", f"from {train_count['source']} (the larger)"
      )
  )
  print(
      _row(
          "FLOP/run (train + eval)", f"{run_flops / 1e15:.3f} P", f"eval {eval_total / 1e12:.1f} T"
      )
  )
  print(_row("achieved FLOP/s", f"{achieved / 1e12:.3f} T"))
  print(
      _row(
          f"{dtype.name} matmul {n_mm}^2 FLOP/s",
          f"{ceiling / 1e12:.3f} T",
          "the ceiling, in the step's dtype",
      )
  )
  print(_row("achieved / matmul ceiling", f"{achieved / ceiling:.1%}"))
  print(
      _row(
          "train time of a run at this speed, s",
          f"{epoch_s * config.epochs:.1f}",
          "(without evaluation)",
      )
  )
  write_json(args.json, result)
  return result


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
