"""benchmarks/accelerator.py: a --quick run of one model writes well-formed, sane figures."""

import json
import math
import os
import sys

import pytest

sys.path.append(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks"))
import accelerator  # noqa: E402


def test_quick_run_of_seed_cnn_writes_positive_finite_figures(tmp_path, capsys):
  path = tmp_path / "accel.json"
  out = accelerator.main(
      ["--quick", "--only", "seed-cnn-f32", "--steps-per-call", "2", "--json", str(path)]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  assert out["machine"]["backend"] and out["machine"]["jax"] and out["compile_cache"] is None
  (r,) = out["results"]
  assert (r["name"], r["model"], r["dtype"], r["batch_size"]) == (
      "seed-cnn-f32",
      "seed-cnn",
      "float32",
      32,
  )
  # Two steps per call: the scan program, and images/s per step, not per call.
  assert (r["steps_per_call"], r["program"]) == (2, "train")
  assert r["steps_per_round"] == 2 * r["calls_per_round"] and len(r["round_seconds"]) == 2
  assert math.isclose(r["images_per_second"], 32 / r["step_seconds_median"])
  assert math.isclose(r["seconds_per_epoch"], (45_000 // 32) * r["step_seconds_median"])
  for key in (
      "images_per_second",
      "seconds_per_epoch",
      "lower_seconds",
      "compile_seconds",
      "flops_per_image",
      "achieved_flops_per_second",
      "matmul_flops_per_second",
      "fraction_of_matmul",
      "loss",
  ):
    assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
  # seed-cnn's train step: 3 x 2 x 7.23 M multiply-adds per image (cnnjax.summary), or
  # more if XLA's count is larger.
  assert r["flops_per_image_model"] == r["flops_per_image"] or r["flops_source"] == (
      "cost_analysis"
  )
  assert 40e6 < r["flops_per_image_model"] < 47e6
  assert "seed-cnn-f32" in capsys.readouterr().out


def test_only_rejects_unknown_names():
  with pytest.raises(SystemExit, match="vgg99"):
    accelerator.main(["--quick", "--only", "vgg99"])
