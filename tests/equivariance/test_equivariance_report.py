"""Tests of cnnjax.equivariance.report, its transform specs and typed steps (issue 31).

The report's numbers on networks whose symmetries are known exactly: circular stride-1
convolution stacks (every shift, every layer), strided ones (multiples of the
cumulative stride only), p4-cnn (quarter turns, every layer and the logits), p4m
(reflections too), seed-cnn (a one-pixel shift breaks at the first pooling); the
interior against :func:`interior_region` and :func:`cnnjax.arithmetic.jump`; float32
against float64, and bfloat16.
"""

import json
import math
from typing import TypeVar, cast

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from references import tolerance

from cnnjax import arithmetic, models
from cnnjax import nn as cnn
from cnnjax import summary as cnn_summary
from cnnjax.equivariance import (
    EquivarianceReport,
    Reflection,
    Rotation,
    Translation,
    Transposition,
    compose,
    flip,
    interior_region,
    parse_transforms,
    plane_action,
    random_elements,
    report,
    rot90,
    translate,
    transpose,
)
from cnnjax.models.gcnn import P4CNN
from cnnjax.models.resnet import CifarResNet

F32 = tolerance(jnp.float32)
T = TypeVar("T")


def _val(value: T | None) -> T:
  """``value``, which the report gives in this case (not None)."""
  assert value is not None
  return value


def _images(shape, seed=0, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _circular_stack(strides, *, width=3, dtype=jnp.float32, seed=0):
  rngs = nnx.Rngs(seed)
  channels = [2] + [width] * len(strides)
  return nnx.Sequential(
      *(
          cnn.Conv(
              channels[i],
              channels[i + 1],
              3,
              stride=s,
              padding="SAME",
              padding_mode="circular",
              param_dtype=dtype,
              rngs=rngs,
          )
          for i, s in enumerate(strides)
      )
  )


# ---------------------------------------------------------------- typed steps and specs


def test_factories_record_their_steps():
  assert translate((1, -2), mode="zeros").steps == (Translation((1, -2), "zeros"),)
  assert flip(0).steps == (Reflection(0),)
  assert rot90(3).steps == (Rotation(3),)
  assert transpose().steps == (Transposition(),)
  assert compose(rot90(1), translate(2)).steps == (Rotation(1), Translation(2, "circular"))
  assert compose(rot90(1), lambda x: x).steps is None  # a plain callable: no typed steps


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_plane_action_steps_are_the_same_transform(group):
  x = _images((1, 5, 5, 1))
  for element in range(4 if group == "p4" else 8):
    g = plane_action(element, group=group)
    parts = [
        rot90(s.k) if isinstance(s, Rotation) else flip(cast(Reflection, s).axis)
        for s in _val(g.steps)
    ]
    as_steps = compose(*parts)
    np.testing.assert_array_equal(as_steps(x), g(x))


def test_parse_transforms_names_and_composition():
  names = lambda spec: [t.name for t in parse_transforms(spec)]
  assert names("shift:1,2,4") == ["shift:1", "shift:2", "shift:4"]
  assert names("shift:1x0, -1x2,mode=zeros") == ["shift:1x0,mode=zeros", "shift:-1x2,mode=zeros"]
  assert names("flip") == ["flip:1"] and names("flip:0") == ["flip:0"]
  assert names("rot90") == ["rot90:1"] and names("transpose") == ["transpose"]
  assert names("p4") == ["p4:1", "p4:2", "p4:3"] and len(names("p4m")) == 7
  assert names("rot90:1,2+flip") == ["rot90:1+flip:1", "rot90:2+flip:1"]
  assert names("identity") == ["identity"]
  x = _images((2, 6, 6, 3))
  (t,) = parse_transforms("rot90+shift:1x0")
  np.testing.assert_array_equal(t(x), translate((1, 0))(rot90(1)(x)))
  (t,) = parse_transforms("p4m:5")
  np.testing.assert_array_equal(t(x), plane_action(5, group="p4m")(x))


@pytest.mark.parametrize(
    "spec",
    [
        "rot91",
        "",
        "shift",
        "shift:",
        "shift:1.5",
        "shift:1,,2",
        "shift:1,mode=wrap",
        "flip:x",
        "p4:4",
        "p4m:-1",
        "random",
        "random:p5",
        "random:p4,trials=0",
        "random:p4,max=2",
        "rot90+",
        "identity:1",
        "shift:1,speed=2",
    ],
)
def test_parse_transforms_bad_specs_fail_in_one_line(spec):
  with pytest.raises(ValueError, match=r"^parse_transforms: spec got ") as info:
    parse_transforms(spec)
  assert "\n" not in str(info.value)
  assert repr(spec) in str(info.value) and "expected" in str(info.value)


def test_random_elements_are_seeded_and_uniform():
  a = [t.name for t in random_elements("p4m", trials=64, seed=3)]
  assert a == [t.name for t in random_elements("p4m", trials=64, seed=3)]
  assert a != [t.name for t in random_elements("p4m", trials=64, seed=4)]
  drawn = {name.split(" ")[0] for name in a}
  assert len(drawn) == 8  # every element of p4m, identity included, appears in 64 draws
  shifts = random_elements("shift", trials=200, seed=0, max_shift=2)
  values = np.array([cast(Translation, _val(t.steps)[0]).shift for t in shifts])
  assert values.shape == (200, 2) and values.min() == -2 and values.max() == 2
  assert [t.name for t in parse_transforms("random:p4,trials=3,seed=7")] == [
      t.name for t in random_elements("p4", trials=3, seed=7)
  ]
  with pytest.raises(ValueError, match="random_elements: kind got 'p8'"):
    random_elements("p8", trials=1)
  with pytest.raises(ValueError, match="random_elements: trials got 0"):
    random_elements("p4", trials=0)


# --------------------------------------------------------------- exact symmetries: zero


def test_circular_stride_one_stack_is_equivariant_to_every_shift():
  net = _circular_stack([1, 1, 1])
  specs = ["shift:1,2,3,5", "shift:1x-2,7x4"]
  r = report(net, _images((3, 8, 10, 2)), specs)
  assert len(r.transforms) == 6
  for t in r.transforms:
    assert [ly.name for ly in t.layers] == ["layers.0", "layers.1", "layers.2"]
    for layer in t.layers:
      assert layer.stride == (1, 1) and not layer.approximate
      assert layer.error <= F32, (t.transform, layer)
      assert layer.interior_fraction == 1.0 and layer.boundary_error is None
    assert t.logits is None  # the output is a map, not logits


def test_strided_stack_multiples_of_the_stride_only():
  net = _circular_stack([1, 2, 2])
  r = report(net, _images((2, 16, 16, 2)), ["shift:1,2,4,8", "shift:2x4"])
  jumps = [(1, 1), (2, 2), (4, 4)]
  for t in r.transforms:
    shift = t.transform.split(":")[1]
    shifts = tuple(int(s) for s in shift.split("x")) * (2 if "x" not in shift else 1)
    for layer, jump in zip(t.layers, jumps, strict=True):
      assert layer.stride == jump
      multiple = all(s % j == 0 for s, j in zip(shifts, jump, strict=True))
      assert layer.approximate == (not multiple), (t.transform, layer)
      if multiple:
        assert layer.error <= F32, (t.transform, layer)
      else:
        assert layer.error > 0.05, (t.transform, layer)


def test_p4_cnn_is_exactly_equivariant_to_quarter_turns():
  model = models.get("p4-cnn", rngs=nnx.Rngs(0))
  r = report(model, _images((4, 32, 32, 3)), ["rot90:1,2,3", "p4"])
  for t in r.transforms:
    kinds = [ly.kind for ly in t.layers]
    assert kinds[:2] == ["lift-p4(5, 32)", "pool(2x2x1)"], kinds
    for layer in t.layers:
      assert not layer.approximate
      assert layer.error <= F32, (t.transform, layer)
    assert "p4 element" in t.layers[0].action  # the group axis moves too
    assert t.logits is not None and t.logits.invariance_error <= F32 and t.logits.unchanged == 1


def test_p4m_maps_take_reflections_and_transposes_as_group_elements():
  model = P4CNN(group="p4m", widths=(3, 4), hidden=8, rngs=nnx.Rngs(0))
  r = report(model, _images((2, 32, 32, 3)), ["flip:0,1", "transpose", "rot90+flip"])
  for t in r.transforms:
    for layer in t.layers:
      assert not layer.approximate and layer.error <= F32, (t.transform, layer)
  # On a p4 map a reflection has no counterpart: compared with the plane's, approximate.
  p4 = P4CNN(widths=(3, 4), hidden=8, rngs=nnx.Rngs(0))
  lift = report(p4, _images((2, 32, 32, 3)), "flip", layers=["lift"])["flip:1"].layers[0]
  assert lift.approximate and lift.error > 0.05


def test_identity_is_exact_and_predictions_keep_their_accuracy():
  model = models.get("seed-cnn", rngs=nnx.Rngs(1))
  x = _images((5, 32, 32, 3), seed=1)
  labels = np.asarray(jnp.argmax(model(x), -1))
  r = report(model, x, "identity", labels=labels)
  assert r.accuracy == 1.0 and r.num_images == 5
  t = r["identity"]
  assert all(ly.error == 0 for ly in t.layers)
  logits = _val(t.logits)
  assert logits.invariance_error == 0 and logits.unchanged == 1 and logits.accuracy == 1


# -------------------------------------------------------------- broken symmetries: > 0


def test_seed_cnn_loses_a_one_pixel_shift_at_its_first_pooling():
  model = models.get("seed-cnn", rngs=nnx.Rngs(0))
  r = report(model, _images((4, 32, 32, 3)), "shift:1")
  layers = {ly.name: ly for ly in r["shift:1"].layers}
  assert list(layers) == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]
  conv1, pool1 = layers["conv1"], layers["pool1"]
  assert not conv1.approximate and _val(conv1.interior_error) <= F32  # VALID: interior exact
  assert _val(conv1.boundary_error) > 0.05  # the column that wrapped around
  assert pool1.approximate and pool1.error > 0.05 and _val(pool1.interior_error) > 0.05
  for name in ("fc1", "fc2"):  # no spatial axes: an invariance error
    assert layers[name].stride is None and layers[name].action == "none (invariance)"
    assert layers[name].error > 0


def test_strides_and_interior_follow_the_arithmetic():
  model = models.get("seed-cnn", rngs=nnx.Rngs(0))
  r = report(model, _images((2, 32, 32, 3)), "shift:4")
  stack = [(5, 1), (2, 2), (5, 1), (2, 2)]
  for i, layer in enumerate(r["shift:4"].layers[:4]):
    jump = arithmetic.jump(stack[: i + 1])
    assert layer.stride == (jump, jump)
    region = interior_region((32, 32), stack[: i + 1], shift=4, padding="VALID")
    size = math.prod(layer.shape[:2])
    want = math.prod(s.stop - s.start for s in region) / size
    assert layer.interior_fraction == pytest.approx(want), (layer.name, region)
    assert _val(layer.interior_error) <= F32 and _val(layer.boundary_error) > 0.01


def test_zero_padding_error_sits_at_the_border():
  rngs = nnx.Rngs(0)
  net = nnx.Sequential(
      cnn.Conv(2, 3, 3, padding="SAME", rngs=rngs), cnn.Conv(3, 3, 3, padding="SAME", rngs=rngs)
  )
  r = report(net, _images((3, 12, 12, 2)), ["shift:2x-1", "shift:2x-1,mode=zeros"])
  for t in r.transforms:
    layer = t.layers[1]
    region = interior_region((12, 12), [(3, 1), (3, 1)], shift=(2, -1))
    mask = np.zeros((12, 12), bool)
    mask[region] = True
    assert layer.interior_fraction == pytest.approx(mask.mean())
    assert _val(layer.interior_error) <= F32 and _val(layer.boundary_error) > 0.05
    emap = _val(layer.error_map)
    assert emap.shape == (12, 12)
    assert np.all(emap[mask] <= F32 * 10) and emap[~mask].max() > 0.05
    # The map's root mean square is the whole output's error.
    assert np.sqrt(np.mean(emap**2)) == pytest.approx(layer.error, rel=1e-6)


# ------------------------------------------------------------------ layers and dtypes


def test_default_layers_are_the_summary_rows_and_any_depth_can_be_named():
  model = CifarResNet(depth=8, width=4, rngs=nnx.Rngs(0))
  x = _images((2, 16, 16, 3))
  r = report(model, x, "shift:2")
  rows = cnn_summary(model, (16, 16, 3)).rows
  assert [ly.kind for ly in r["shift:2"].layers] == [row.name for row in rows]
  assert [ly.shape for ly in r["shift:2"].layers] == [row.shape for row in rows]
  names = ["blocks.layers.1.conv1", "blocks.layers.1.conv2", "blocks.layers.1"]
  inner = report(model, x, "shift:2", layers=names)["shift:2"].layers
  assert [ly.name for ly in inner] == names
  assert [ly.stride for ly in inner] == [(2, 2), (2, 2), (2, 2)]
  with pytest.raises(ValueError, match=r"report: layers got \['nope'\], with unknown name"):
    report(model, x, "shift:2", layers=["nope"])


def test_float32_and_float64_agree():
  x64 = _images((3, 32, 32, 3), dtype=jnp.float64)
  specs = ["shift:1,4", "rot90", "flip"]
  m32 = models.get("seed-cnn", rngs=nnx.Rngs(0))
  m64 = models.get("seed-cnn", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
  nnx.update(m64, jax.tree.map(lambda a: a.astype(jnp.float64), nnx.state(m32, nnx.Param)))
  r64 = report(m64, x64, specs)
  r32 = report(m32, x64.astype(jnp.float32), specs)
  for t32, t64 in zip(r32.transforms, r64.transforms, strict=True):
    for a, b in zip(t32.layers, t64.layers, strict=True):
      for key in ("error", "interior_error", "boundary_error"):
        va, vb = getattr(a, key), getattr(b, key)
        assert (va is None) == (vb is None)
        if va is not None:
          assert abs(va - vb) <= 10 * F32 * max(1.0, vb), (t32.transform, a.name, key, va, vb)
    assert _val(t32.logits).unchanged == _val(t64.logits).unchanged


def test_bfloat16_models_report():
  model = models.get("seed-cnn", dtype="bfloat16", rngs=nnx.Rngs(0))
  r = report(model, _images((3, 32, 32, 3)), ["shift:1,2", "rot90"])
  for t in r.transforms:
    assert all(np.isfinite(ly.error) for ly in t.layers)
    assert t.logits is not None and np.isfinite(t.logits.invariance_error)
  assert _val(r["shift:2"].layer("conv1").interior_error) <= 1e-2  # bfloat16's own rounding


def test_batches_do_not_change_the_figures():
  model = models.get("seed-cnn", rngs=nnx.Rngs(0))
  x = _images((7, 32, 32, 3))
  labels = np.arange(7) % 10
  a = report(model, x, "shift:1", labels=labels, batch_size=3)  # 3 + 3 + 1 padded
  b = report(model, x, "shift:1", labels=labels, batch_size=7)
  for la, lb in zip(a["shift:1"].layers, b["shift:1"].layers, strict=True):
    assert la.error == pytest.approx(lb.error, rel=1e-5)
  la, lb = _val(a["shift:1"].logits), _val(b["shift:1"].logits)
  assert la.invariance_error == pytest.approx(lb.invariance_error, rel=1e-5)
  assert (la.unchanged, la.accuracy, a.accuracy) == (lb.unchanged, lb.accuracy, b.accuracy)


def test_a_nan_image_makes_the_errors_nan_without_failing():
  net = _circular_stack([1, 1])
  x = np.array(_images((2, 8, 8, 2)))
  x[1, 3, 3, 0] = np.nan
  r = report(net, x, "shift:1")
  assert all(math.isnan(ly.error) for ly in r["shift:1"].layers)


def test_plain_functions_report_their_output():
  w = _images((3, 3, 2, 4))
  f = lambda x: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  ).sum(axis=(1, 2))
  r = report(f, _images((3, 8, 8, 2)), "shift:1,mode=zeros")
  assert r["shift:1,mode=zeros"].layers == () and r["shift:1,mode=zeros"].logits is not None
  g = lambda x: jnp.roll(x, 1, axis=1) * 2
  out = report(g, _images((3, 8, 8, 2)), "shift:3")["shift:3"].layers
  assert [ly.name for ly in out] == ["output"] and out[0].error <= F32


# ---------------------------------------------------------------------- exports, errors


def test_report_exports_table_json_and_figure():
  model = models.get("seed-cnn", rngs=nnx.Rngs(0))
  r = report(
      model, _images((2, 32, 32, 3)), ["shift:1", "rot90"], labels=np.array([1, 2]), title="seed"
  )
  assert isinstance(r, EquivarianceReport)
  text = str(r)
  assert text.startswith("seed: 2 image(s), accuracy") and "pool1" in text and "~" in text
  md = r.to_markdown()
  assert md.splitlines()[0] == "| layer | kind | stride | shift:1 | rot90:1 |"
  d = json.loads(json.dumps(r.to_dict()))
  assert [t["transform"] for t in d["transforms"]] == ["shift:1", "rot90:1"]
  first = d["transforms"][0]["layers"][0]
  assert first["name"] == "conv1" and len(first["error_map"]) == 28 * 28
  fig = r.figure()
  # The error curves, 4 spatial layers' maps for each transform, and the maps' colour bar.
  assert len(fig.axes) == 1 + 2 * 4 + 1
  assert fig.axes[0].get_legend_handles_labels()[1] == ["shift:1", "rot90:1"]


def test_bad_arguments_fail_in_one_line():
  model = models.get("seed-cnn", rngs=nnx.Rngs(0))
  x = _images((2, 32, 32, 3))
  with pytest.raises(TypeError, match=r"report: transforms\[0\] got .*typed steps"):
    report(model, x, [compose(lambda y: y)])
  with pytest.raises(ValueError, match="report: transform 'rot90:1' maps images of shape"):
    report(lambda y: y.sum((1, 2)), _images((2, 6, 8, 1)), "rot90")
  with pytest.raises(ValueError, match=r"report: labels has shape \(3,\)"):
    report(model, x, "shift:1", labels=np.array([0, 1, 2]))
  with pytest.raises(ValueError, match="report: batch_size got 0"):
    report(model, x, "shift:1", batch_size=0)
  with pytest.raises(ValueError, match=r"report: images has shape \(32, 32\)"):
    report(model, x[0, :, :, 0], "shift:1")
  with pytest.raises(ValueError, match="report: transforms got"):
    report(model, x, [])
  with pytest.raises(ValueError, match="parse_transforms: spec got 'rot91'"):
    report(model, x, "rot91")
