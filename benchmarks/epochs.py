"""Real seed-cnn epochs: ``cnnjax train`` against a PyTorch epoch run right after it
(by hand, not CI).

Issue 19's epoch target: a real ``cnnjax train --model seed-cnn`` epoch on the CIFAR-10
zip at least as fast as PyTorch's epoch measured after it. Each of ``--pairs`` pairs runs,
one process after the other (nothing else should run meanwhile):

1. ``cnnjax train --model seed-cnn --data … --epochs E --batch-size B --quiet --no-plots
   --compile-cache off`` into a temporary run directory (any arguments after ``--`` are
   added); the images/s of each epoch's training part are read from its
   ``metrics.jsonl`` (the first epoch also compiles the evaluation programs on a
   background thread, so the last epoch is the one compared);
2. PyTorch eager (``pip install torch==2.13.0``), the step of ``train_speed.py``
   (channels-last, SGD momentum 0.9, weight decay on the kernels, all threads), for as
   many steps as one cnnjax epoch took, on random pre-normalised data of that many
   images, after 2 warm-up steps.

Prints a markdown table (images/s per epoch, PyTorch's, the ratio cnnjax's last epoch ÷
PyTorch's per pair, and the median ratio); ``--json F`` also writes the figures.

    python benchmarks/epochs.py --data-dir ../shared/data/cifar10-train-jpeg.zip --pairs 5
    python benchmarks/epochs.py --data shapes --epochs 1 --pairs 1 --no-torch   # smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from _report import write_json

_TRAIN = "import sys; from cnnjax.cli import main; sys.exit(main(sys.argv[1:]))"


def cnnjax_epochs(
    data: str, data_dir: str | None, *, epochs: int, batch_size: int, extra: list[str], out: str
) -> list[dict]:
  """Runs ``cnnjax train`` in its own process; returns its per-epoch metrics records."""
  cmd = [
      sys.executable,
      "-c",
      _TRAIN,
      "train",
      "--model",
      "seed-cnn",
      "--data",
      data,
      *(["--data-dir", data_dir] if data_dir else []),
      "--epochs",
      str(epochs),
      "--batch-size",
      str(batch_size),
      "--quiet",
      "--no-plots",
      "--compile-cache",
      "off",
      "--out",
      out,
      *extra,
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"cnnjax train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  with open(os.path.join(out, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def torch_epoch(steps: int, batch_size: int) -> dict:
  """Runs PyTorch's epoch in its own process; returns ``{"images_per_second", "seconds"}``."""
  cmd = [
      sys.executable,
      os.path.abspath(__file__),
      "--torch-steps",
      str(steps),
      "--batch-size",
      str(batch_size),
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"the PyTorch epoch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_main(steps: int, batch_size: int) -> None:
  import numpy as np
  from train_speed import _torch_step

  rng = np.random.default_rng(0)
  n = steps * batch_size
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, n).astype(np.int32)
  run = _torch_step(images, labels, batch_size=batch_size, lr=0.01)
  run(2)
  seconds = run(steps)
  print(json.dumps({"images_per_second": n / seconds, "seconds": seconds}))


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", default="cifar10")
  p.add_argument("--data-dir", default=None, help="e.g. ../shared/data/cifar10-train-jpeg.zip")
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--pairs", type=int, default=3)
  p.add_argument("--no-torch", action="store_true", help="time cnnjax only")
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")
  p.add_argument("--torch-steps", type=int, default=None, help=argparse.SUPPRESS)
  argv = list(sys.argv[1:] if argv is None else argv)
  cut = argv.index("--") if "--" in argv else len(argv)
  args, extra = p.parse_args(argv[:cut]), argv[cut + 1 :]
  if args.torch_steps is not None:
    _torch_main(args.torch_steps, args.batch_size)
    return {}
  if not args.no_torch and importlib.util.find_spec("torch") is None:
    p.error("PyTorch is not importable: pip install torch==2.13.0, or pass --no-torch")

  print(
      f"seed-cnn epochs, cnnjax train vs PyTorch, batch {args.batch_size}; "
      f"{platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
  )
  rows = []
  for pair in range(args.pairs):
    with tempfile.TemporaryDirectory() as tmp:
      records = cnnjax_epochs(
          args.data,
          args.data_dir,
          epochs=args.epochs,
          batch_size=args.batch_size,
          extra=extra,
          out=os.path.join(tmp, "run"),
      )
    row = {
        "pair": pair + 1,
        "cnnjax_images_per_second": [r["images_per_second"] for r in records],
        "steps_per_epoch": records[0]["step"],
    }
    if not args.no_torch:
      row["torch_images_per_second"] = torch_epoch(row["steps_per_epoch"], args.batch_size)[
          "images_per_second"
      ]
      row["ratio"] = row["cnnjax_images_per_second"][-1] / row["torch_images_per_second"]
    rows.append(row)

  print("\n| pair | cnnjax images/s (epoch 1, …) | PyTorch images/s | last epoch ÷ PyTorch |")
  print("|---:|---|---:|---:|")
  for row in rows:
    ours = ", ".join(f"{v:,.0f}" for v in row["cnnjax_images_per_second"])
    theirs = f"{row['torch_images_per_second']:,.0f}" if "ratio" in row else "—"
    ratio = f"{row['ratio']:.2f}" if "ratio" in row else "—"
    print(f"| {row['pair']} | {ours} | {theirs} | {ratio} |")
  result = {"batch_size": args.batch_size, "epochs": args.epochs, "data": args.data, "pairs": rows}
  if not args.no_torch:
    result["median_ratio"] = statistics.median(row["ratio"] for row in rows)
    print(
        f"\nmedian ratio (cnnjax's last epoch ÷ PyTorch's epoch): " f"{result['median_ratio']:.2f}"
    )
  write_json(args.json, result)
  return result


if __name__ == "__main__":
  import cnnjax

  cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
