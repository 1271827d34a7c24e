"""``cnnjax.equivariance.report``'s speed target: 1,000 images × 8 transforms in < 60 s.

Times :func:`cnnjax.equivariance.report` on ``seed-cnn`` (random weights; the time does
not depend on the weights or the pixels) for 1,000 random 32×32×3 images under 8
transforms (``shift:1,2,4``, ``rot90:1,2,3``, ``flip:0,1``), compile included: each
run is a fresh subprocess (nothing compiled is reused), timed from the call to the
returned report, and the median of the runs is reported, with the report's own
figures (the 9 compiled programs: one for the untransformed images, one per
transform) and the process's CPU time (less sensitive to other processes).

    python benchmarks/equivariance_report.py               # 3 runs
    python benchmarks/equivariance_report.py --runs 5 --images 1000 --batch-size 250
    python benchmarks/equivariance_report.py --model resnet20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

TRANSFORMS = ("shift:1,2,4", "rot90:1,2,3", "flip:0,1")


def one_run(model_name: str, images: int, batch_size: int) -> dict[str, float]:
  """One timed report in this process (call it in a fresh one)."""
  import time

  import jax
  import numpy as np
  from flax import nnx

  from cnnjax import models
  from cnnjax.equivariance import report

  model = models.get(model_name, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (images, *models.default_input_shape(model_name)))
  labels = np.arange(images) % models.default_num_classes(model_name)
  x.block_until_ready()
  t0, c0 = time.perf_counter(), time.process_time()
  r = report(model, x, list(TRANSFORMS), labels=labels, batch_size=batch_size)
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return {
      "wall_s": wall,
      "cpu_s": cpu,
      "transforms": len(r.transforms),
      "layers": len(r.transforms[0].layers),
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=3, help="fresh processes timed (default 3)")
  parser.add_argument("--images", type=int, default=1000, help="images (default 1000)")
  parser.add_argument("--batch-size", type=int, default=250, help="report's batch_size (250)")
  parser.add_argument("--model", default="seed-cnn", help="zoo model (default seed-cnn)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(one_run(args.model, args.images, args.batch_size)))
    return
  results = []
  for i in range(args.runs):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model]
    cmd += ["--images", str(args.images), "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    r = results[-1]
    print(f"run {i + 1}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", flush=True)
  wall = statistics.median(r["wall_s"] for r in results)
  cpu = statistics.median(r["cpu_s"] for r in results)
  r = results[0]
  print(
      f"{args.model}: report on {args.images} images x {r['transforms']} transforms "
      f"({r['layers']} layers), compile included: median {wall:.1f} s wall, {cpu:.1f} s CPU "
      f"over {args.runs} fresh processes (target < 60 s)"
  )


if __name__ == "__main__":
  if "--child" in sys.argv:
    import cnnjax

    cnnjax.configure_cpu(allocator=None)  # the CPU runtime `cnnjax train` runs with
  main()
