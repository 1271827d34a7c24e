"""Multi-process training for real: two CPU processes on 127.0.0.1 (jax.distributed, Gloo).

Two processes with one CPU device each must train bit for bit like one process with two
simulated devices (XLA_FLAGS=--xla_force_host_platform_device_count=2): the same
metrics.jsonl records and the same checkpoint arrays. When one rank dies, the other exits
at once with one line saying how to continue, and --resume then works with two processes
or one. Every process is a subprocess with a timeout.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

from cnnjax.train.metrics import TIMING_KEYS, read_metrics

TIMEOUT = 150  # seconds, per process
RUN = [
    "--model",
    "linear",
    "--data",
    "shapes",
    "--data-option",
    "num_train=120",
    "--data-option",
    "num_test=40",
    "--data-option",
    "num_classes=3",
    "--val-size",
    "40",
    "--batch-size",
    "40",
    "--eval-batch-size",
    "40",
    "--epochs",
    "3",
    "--quiet",
    "--no-plots",
]

# `cnnjax` whose rank dies (os._exit) right after writing the checkpoint of epoch $DIE_AFTER
# (never without it). Both ranks of a pair start this way: ranks started differently
# (`python -m cnnjax.cli` beside `python -c ...`) hang in their first all-reduce on jaxlib
# 0.12.1, as a real job's would, so a pair must be launched alike.
DYING = textwrap.dedent("""
    import os, sys
    from cnnjax.train import checkpoint
    save = checkpoint.Checkpointer.save
    def dying_save(self, epoch, state):
      save(self, epoch, state)
      if epoch == int(os.environ.get("DIE_AFTER", 0)):
        os._exit(9)
    checkpoint.Checkpointer.save = dying_save
    from cnnjax.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _env(devices: int = 1, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
  env["JAX_PLATFORMS"] = "cpu"
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.update(extra)
  return env


def _cnnjax(*args, devices=1, **env):
  return subprocess.Popen(
      [sys.executable, "-m", "cnnjax.cli", *args],
      env=_env(devices, **env),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _pair(out, *args, die_after: int):
  """Ranks 0 and 1 of one run; rank 1 dies after checkpoint ``die_after``.

  Returns (rank 0's return code and stderr, rank 1's return code, seconds rank 0 outlived 1).
  """
  flags = [
      "--out",
      out,
      "--coordinator-address",
      f"127.0.0.1:{_free_port()}",
      "--num-processes",
      "2",
  ]
  ranks = [
      subprocess.Popen(
          [sys.executable, "-c", DYING, "train", *args, *flags, "--process-id", str(rank)],
          env=_env(**({"DIE_AFTER": str(die_after)} if rank == 1 else {})),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for rank in (0, 1)
  ]
  ended = [None, None]
  deadline = time.monotonic() + TIMEOUT
  try:
    while None in ended and time.monotonic() < deadline:
      for i, p in enumerate(ranks):
        if ended[i] is None and p.poll() is not None:
          ended[i] = time.monotonic()
      time.sleep(0.02)
  finally:
    for p in ranks:
      p.kill()
  assert None not in ended, "a rank did not exit within the timeout"
  err0 = ranks[0].stderr.read()
  return ranks[0].returncode, err0, ranks[1].returncode, ended[0] - ended[1]


def _load(path):
  import orbax.checkpoint as ocp

  checkpointer = ocp.PyTreeCheckpointer()
  meta = checkpointer.metadata(path)
  meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
  return checkpointer.restore(path, restore_args=args)


def _records(run):
  return [
      {k: v for k, v in r.items() if k not in TIMING_KEYS}
      for r in read_metrics(os.path.join(run, "metrics.jsonl"))
  ]


def test_two_processes_match_two_devices_and_survive_a_dead_rank(tmp_path):
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  cache = ["--cache-dir", str(tmp_path / "cache")]
  reference = _cnnjax("train", *RUN, *cache, "--out", ref, devices=2)
  # Two processes; rank 1 dies after epoch 1's checkpoint, while rank 0 goes on.
  rc0, err0, rc1, outlived = _pair(run, *RUN, *cache, die_after=1)
  assert rc1 == 9
  assert rc0 == 2, err0[-3000:]
  line = err0.strip().splitlines()[-1]
  assert "process 0 of 2 lost contact with the others" in line, err0[-3000:]
  assert f"cnnjax train --out {run} --resume" in line
  assert outlived < 15, outlived  # at once, not after the coordination service's timeouts
  assert reference.wait(TIMEOUT) == 0, reference.stderr.read()[-3000:]
  # --resume with two processes; rank 1 dies again, after epoch 2.
  rc0, err0, rc1, _ = _pair(run, "--resume", "--quiet", "--no-plots", die_after=2)
  assert (rc0, rc1) == (2, 9), err0[-3000:]
  # --resume with one process (two simulated devices) finishes the run.
  single = _cnnjax("train", "--resume", "--out", run, "--quiet", "--no-plots", devices=2)
  assert single.wait(TIMEOUT) == 0, single.stderr.read()[-3000:]
  # Bit for bit the uninterrupted one-process run: every record, every checkpoint array
  # (epoch 2's written by the two processes, epoch 3's by the one).
  assert [r["epoch"] for r in _records(run)] == [1, 2, 3]
  assert _records(run) == _records(ref)
  for epoch in ("2", "3"):
    a, b = (_load(os.path.join(d, "checkpoints", epoch, "default")) for d in (run, ref))
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_array_equal(x, y)
  history = [
      json.loads(line)
      for line in pathlib.Path(os.path.join(run, "config_history.jsonl")).read_text().splitlines()
  ]
  assert [h["epoch"] for h in history] == [1]  # resumed three times, never changed


def test_distributed_without_a_coordinator_or_cluster_is_one_line(tmp_path):
  proc = _cnnjax("train", *RUN, "--distributed", "--out", str(tmp_path / "run"))
  _, err = proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 2, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "expected --coordinator-address HOST:PORT" in lines[0], err
