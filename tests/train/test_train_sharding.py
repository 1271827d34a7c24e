"""Data parallelism: 8 simulated CPU devices give the one-device run, within float tolerance.

XLA_FLAGS must be set before JAX starts, so the multi-device run is a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec

from cnnjax.train.sharding import batch_sharding, initialize_distributed, make_mesh, replicated

SCRIPT = textwrap.dedent(r"""
    import json, os, sys
    os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 "
                               "--xla_backend_optimization_level=0")
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_train_loop import CONFIG, TinyNet, toy_data
    from cnnjax.train.loop import train

    assert jax.device_count() == 8, jax.devices()
    runs = {}
    for n in (1, 8):
      runs[n] = train(CONFIG.replace(num_devices=n, epochs=1), out_dir=f"{sys.argv[2]}/d{n}",
                      dataset=toy_data(), model_fn=TinyNet, quiet=True, plots=False)
    one, eight = runs[1], runs[8]
    kernel = eight.state.params["conv"]["kernel"][...]
    flat = lambda t: [np.asarray(x, np.float64) for x in jax.tree.leaves(t)
                      if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               zip(flat(one.state.params) + flat(one.state.model_state),
                   flat(eight.state.params) + flat(eight.state.model_state)))
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")

    # The step really is data parallel: XLA reduces gradients/BatchNorm stats across devices.
    hlo = eight.steps.train_one.as_text()
    print(json.dumps({
        "all_reduce": "all-reduce" in hlo,
        "devices": len(kernel.sharding.device_set),
        "max_abs_diff": diff,
        "one": [[r[k] for k in keys] for r in one.history],
        "eight": [[r[k] for k in keys] for r in eight.history],
    }))
""")


def test_eight_devices_match_one(tmp_path):
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
      [sys.executable, "-c", SCRIPT, tests_dir, str(tmp_path)],
      capture_output=True,
      text=True,
      env=env,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8  # parameters replicated over all eight
  assert out["all_reduce"]
  assert out["max_abs_diff"] < 1e-5, out
  for a, b in zip(out["one"], out["eight"], strict=True):
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6), out


def test_mesh_and_shardings():
  mesh = make_mesh()
  assert mesh.axis_names == ("data",)
  assert batch_sharding(mesh).spec == PartitionSpec("data")
  assert replicated(mesh).spec == PartitionSpec()
  with pytest.raises(ValueError, match="num_devices"):
    make_mesh(10_000)
  assert initialize_distributed(False) is False
