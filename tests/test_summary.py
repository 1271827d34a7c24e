"""cnnjax.summary: the lecture's seed-cnn table exactly, published totals, inception
rows, every layer kind against independent counts, exports, the CLI; the symmetry
column's notation and its strings for every layer kind (tests/test_summary_symmetry.py
checks the claims numerically)."""

import csv
import io
import math
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from absl.testing import parameterized
from flax import nnx

from cnnjax import arithmetic, cli, models
from cnnjax import nn as cnn
from cnnjax.summary import Row, Summary, Symmetry, register_describer, summary

# The lecture's table for the seed CNN on 32×32×3: name, params, ops, output.
SEED_CNN = [
    ("conv(5, 32)", 2_432, 1_906_688, (28, 28, 32)),
    ("pool(2)", 0, 25_088, (14, 14, 32)),
    ("conv(5, 64)", 51_264, 5_126_400, (10, 10, 64)),
    ("pool(2)", 0, 6_400, (5, 5, 64)),
    ("fc(100)", 160_100, 160_100, (100,)),
    ("fc(10)", 1_010, 1_010, (10,)),
]


# The network up to each row (the lecture's seed CNN, valid padding): translations by
# multiples of the cumulative stride, on the interior; nothing after the flatten.
SEED_CNN_SYMMETRY = [
    "shift ℤ (interior)",
    "shift 2ℤ (interior)",
    "shift 2ℤ (interior)",
    "shift 4ℤ (interior)",
    "none",
    "none",
]


def _rows(s: Summary):
  return [(r.name, r.params, r.ops, r.shape) for r in s.rows]


def _param_count(model) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


class SeedCnnTableTest(parameterized.TestCase):

  def test_by_name_reproduces_the_lecture(self):
    s = summary("seed-cnn", (32, 32, 3))
    self.assertEqual(_rows(s), SEED_CNN)
    self.assertEqual([str(r.symmetry) for r in s.rows], SEED_CNN_SYMMETRY)
    self.assertEqual(s.rows[3].symmetry, Symmetry("interior", period=(4, 4), step=(1, 1)))
    self.assertEqual(s.total_params, 214_806)
    self.assertEqual(s.total_ops, sum(r[2] for r in SEED_CNN))
    self.assertEqual(s.input_shape, (32, 32, 3))

  def test_by_instance(self):
    model = models.abstract("seed-cnn")
    s = summary(model)  # input_shape from the model
    self.assertEqual(_rows(s), SEED_CNN)
    self.assertEqual(s.total_params, _param_count(model))

  def test_str_markdown_csv(self):
    s = summary("seed-cnn", (32, 32, 3))
    text = str(s)
    lines = text.splitlines()
    self.assertIn("seed-cnn on 32×32×3", lines[0])
    conv = next(line for line in lines if line.startswith("conv(5, 32)"))
    self.assertEqual(conv.split()[2:5], ["2,432", "1,906,688", "28×28×32"])
    self.assertTrue(conv.endswith("  28×28×32  shift ℤ (interior)"), conv)
    self.assertEqual(lines[1].split(), ["layer", "params", "ops", "output", "symmetry"])
    self.assertEqual(len(lines[2]), max(len(line) for line in lines))  # the rule spans it
    fc = next(line for line in lines if line.startswith("fc(100)"))
    self.assertTrue(fc.endswith("100       none"), fc)  # the output column padded
    total = next(line for line in lines if line.startswith("total"))
    self.assertEqual(total.split()[1:], ["214,806", "7,225,686"])
    md = s.to_markdown().splitlines()
    self.assertEqual(md[0], "| layer | params | ops | output | symmetry |")
    self.assertEqual(md[1], "|:--|--:|--:|:--|:--|")
    self.assertIn("| input |  |  | 32×32×3 |  |", md)
    self.assertIn("| conv(5, 64) | 51,264 | 5,126,400 | 10×10×64 | shift 2ℤ (interior) |", md)
    self.assertIn("| **total** | **214,806** | **7,225,686** |  |  |", md)
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    self.assertEqual(
        [(r["layer"], int(r["params"]), int(r["ops"]), r["output"], r["symmetry"]) for r in rows],
        [
            (n, p, o, "x".join(map(str, sh)), sym)
            for (n, p, o, sh), sym in zip(SEED_CNN, SEED_CNN_SYMMETRY, strict=True)
        ],
    )

  def test_tiled_and_local_variants(self):
    tiled = summary("seed-cnn", conv="tiled", tile=2)
    self.assertEqual(tiled.rows[0].name, "tiled(5, 32, t2)")
    self.assertEqual(tiled.rows[0].params, 4 * 5 * 5 * 3 * 32 + 32)
    self.assertEqual(tiled.rows[0].ops, 1_906_688)  # a tiled conv costs what a conv costs
    local = summary("seed-cnn", conv="local")
    self.assertEqual(local.rows[2].name, "local(5, 64)")
    self.assertEqual(local.rows[2].params, 10 * 10 * (5 * 5 * 32 * 64 + 64))


class ZooTablesTest(parameterized.TestCase):

  def test_vgg16_published_total_abstractly(self):
    s = summary("vgg16")  # 224×224×3, 1000 classes; 138M parameters never allocated
    self.assertEqual(s.total_params, 138_357_544)
    names = [r.name for r in s.rows]
    self.assertEqual(names.count("conv(3, 64, p1)"), 2)
    self.assertEqual(sum(n.startswith("conv(3,") for n in names), 13)
    self.assertEqual(names.count("pool(2)"), 5)
    self.assertEqual(names[-3:], ["fc(4096)", "fc(4096)", "fc(1000)"])
    self.assertEqual(s.rows[-4].shape, (7, 7, 512))

  def test_googlenet_inception_rows(self):
    s = summary("googlenet")
    inc = [r for r in s.rows if r.name.startswith("inc(")]
    self.assertEqual(len(inc), 9)
    self.assertEqual(inc[0].name, "inc(64, (96, 128), (16, 32), 32)")
    # 1×1: 192·64 + 64; 3×3: 192·96 + 96, 9·96·128 + 128; 5×5: 192·16 + 16,
    # 25·16·32 + 32; pool projection: 192·32 + 32.
    self.assertEqual(inc[0].params, 12_352 + 18_528 + 110_720 + 3_088 + 12_832 + 6_176)
    self.assertEqual(inc[0].shape, (28, 28, 256))
    self.assertEqual(len(inc[0].children), 7)  # six convs and the pool, one row
    self.assertEqual(inc[0].ops, sum(c.ops for c in inc[0].children))
    self.assertEqual(inc[-1].shape, (7, 7, 1024))
    self.assertEqual(s.total_params, 6_998_552)

  def test_resnet20(self):
    s = summary("resnet20")
    self.assertEqual(s.total_params, 269_722)
    names = [r.name for r in s.rows]
    self.assertEqual(names[:2], ["conv(3, 16, p1)", "bn"])
    self.assertEqual(
        names[2:11],
        ["res(16)"] * 3 + ["res(32, s2)"] + ["res(32)"] * 2 + ["res(64, s2)"] + ["res(64)"] * 2,
    )
    self.assertEqual(names[11:], ["avg(global)", "fc(10)"])
    self.assertEqual(s.rows[5].shape, (16, 16, 32))

  def test_lenet5_partial_c3_matches_the_paper(self):
    s = summary("lenet5", connection_table=True)
    c3 = s.rows[2]
    self.assertEqual((c3.params, c3.ops), (1_516, 151_600))  # LeCun et al. 1998, §II.B
    self.assertEqual(s.rows[4].shape, (1, 1, 120))
    self.assertEqual(summary("lenet5").total_params, 61_706)

  def test_zfnet_names(self):
    names = [r.name for r in summary("zfnet").rows]
    self.assertEqual(
        names[:6],
        [
            "conv(7, 96, s2, p1)",
            "pool(3, 2, p1)",
            "lrn(5)",
            "conv(5, 256, s2)",
            "pool(3, 2, p1)",
            "lrn(5)",
        ],
    )


def _every_layer(rngs):
  return nnx.Sequential(
      cnn.Conv(3, 8, 3, stride=2, padding="SAME", dilation=1, rngs=rngs),
      cnn.Conv(
          8,
          8,
          (3, 1),
          padding=((2, 0), (0, 0)),
          groups=4,
          flip_kernel=True,
          padding_mode="circular",
          rngs=rngs,
      ),
      cnn.ConvTranspose(8, 4, 2, stride=2, use_bias=False, rngs=rngs),
      cnn.LocallyConnected(4, 6, 3, input_shape=(32, 28), stride=2, rngs=rngs),
      cnn.TiledConv(6, 8, 2, tile=(2, 3), rngs=rngs),
      cnn.LocalResponseNorm(size=3),
      nnx.BatchNorm(8, rngs=rngs),
      cnn.BlurPool(stride=1),
      cnn.Maxout(2),
      cnn.LpPool(2, p=2, stride=1),
      cnn.AvgPool(2, stride=1, padding=1),
      cnn.MaxPool(3, stride=1, padding="SAME"),
      cnn.PolyphaseDownsample(stride=2),
      nnx.Conv(4, 5, (1, 1), rngs=rngs),
      cnn.GlobalMaxPool(keepdims=True),
      cnn.GlobalAvgPool(),
      nnx.Linear(5, 3, use_bias=False, rngs=rngs),
  )


class EveryLayerTest(parameterized.TestCase):

  def test_names_counts_and_shapes(self):
    model = nnx.eval_shape(lambda: _every_layer(nnx.Rngs(0)))
    s = summary(model, (32, 28, 3))
    self.assertEqual(s.title, "Sequential")
    expected = [
        ("conv(3, 8, s2, same)", (16, 14, 8)),
        ("conv(3x1, 8, p2:0,0:0, g4, circular, flipped)", (16, 14, 8)),
        ("convT(2, 4, s2)", (32, 28, 4)),
        ("local(3, 6, s2)", (15, 13, 6)),
        ("tiled(2, 8, t2x3)", (14, 12, 8)),
        ("lrn(3)", (14, 12, 8)),
        ("bn", (14, 12, 8)),
        ("blur(3, s1)", (14, 12, 8)),
        ("maxout(2)", (14, 12, 4)),
        ("lp2(2, 1)", (13, 11, 4)),
        ("avg(2, 1, p1)", (14, 12, 4)),
        ("pool(3, 1, same)", (14, 12, 4)),
        ("aps(s2)", (7, 6, 4)),
        ("conv(1, 5, same)", (7, 6, 5)),  # nnx.Conv pads "SAME" by default
        ("pool(global)", (1, 1, 5)),
        ("avg(global)", (5,)),
        ("fc(3)", (3,)),
    ]
    self.assertEqual([(r.name, r.shape) for r in s.rows], expected)
    # Every layer's parameters are what the model holds.
    self.assertEqual(s.total_params, _param_count(model))
    by_name = {r.name: r for r in s.rows}
    ops = arithmetic.op_count
    self.assertEqual(
        by_name["conv(3, 8, s2, same)"].ops,
        ops("conv", in_shape=(32, 28, 3), out_shape=(16, 14, 8), kernel=(3, 3)),
    )
    self.assertEqual(
        by_name["conv(3x1, 8, p2:0,0:0, g4, circular, flipped)"].ops, 16 * 14 * 8 * (3 * 2 + 1)
    )
    self.assertEqual(by_name["convT(2, 4, s2)"].ops, 16 * 14 * 4 * 8 * 4 + 32 * 28 * 4)
    self.assertEqual(by_name["local(3, 6, s2)"].params, 15 * 13 * (9 * 4 * 6 + 6))
    self.assertEqual(by_name["tiled(2, 8, t2x3)"].params, 6 * 4 * 6 * 8 + 8)
    self.assertEqual(by_name["bn"].params, 16)
    self.assertEqual(by_name["lrn(3)"].ops, 14 * 12 * 8)
    self.assertEqual(by_name["maxout(2)"].ops, 14 * 12 * 8)
    self.assertEqual(by_name["fc(3)"].params, 15)

  def test_symmetry_of_every_layer(self):
    model = nnx.eval_shape(lambda: _every_layer(nnx.Rngs(0)))
    s = summary(model, (32, 28, 3))  # not square: no rotation group
    got = [str(r.symmetry) for r in s.rows]
    self.assertEqual(
        got[:4],
        [
            "shift 2ℤ (interior)",  # stride 2, zero padding
            "shift 2ℤ (interior)",  # circular padding cannot undo the zero padding before it
            "shift 2ℤ→2ℤ (interior)",  # upsampled by 2: input shifts by 2k move it by 2k
            "none",  # unshared weights
        ],
    )
    self.assertEqual(set(got[4:]), {"none"})  # nothing comes back after unshared weights

  def test_leaves_the_model_and_classes_untouched(self):
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.BatchNorm(2, rngs=rngs), cnn.MaxPool(2))
    mean = model.layers[0].mean[...]
    s = summary(model, (4, 4, 2))
    self.assertEqual([r.name for r in s.rows], ["bn", "pool(2)"])
    self.assertFalse(model.layers[0].use_running_average)  # still in train mode
    self.assertIs(model.layers[0].mean[...], mean)
    for cls in (cnn.Conv, cnn.MaxPool, nnx.Linear, nnx.BatchNorm):
      self.assertFalse(hasattr(cls.__call__, "_cnnjax_recording"), cls)
    y = model(jnp.ones((1, 4, 4, 2), jnp.float32))  # and it still runs
    self.assertEqual(y.shape, (1, 2, 2, 2))

  @parameterized.named_parameters(
      dict(
          testcase_name="input_shape",
          match="input_shape",
          call=lambda: summary("seed-cnn", (32, 32, "3")),
      ),
      dict(
          testcase_name="input_shape_int", match="input_shape", call=lambda: summary("seed-cnn", 32)
      ),
      dict(testcase_name="name", match="model", call=lambda: summary("seed_cnn")),
      dict(
          testcase_name="options",
          match="options",
          call=lambda: summary(cnn.MaxPool(2), (4, 4, 1), conv="tiled"),
      ),
      dict(testcase_name="no_shape", match="input_shape", call=lambda: summary(cnn.MaxPool(2))),
  )
  def test_errors_name_the_argument(self, call, match):
    with pytest.raises(ValueError, match=match):
      call()

  def test_row_and_summary_are_plain_data(self):
    row = Row("fc(10)", 1_010, 1_010, (10,))
    s = Summary((row, row), (100,))
    self.assertEqual((s.total_params, s.total_ops), (2_020, 2_020))
    self.assertNotIn(" on ", str(s).splitlines()[0])


def _stack(*layers):
  return nnx.Sequential(*layers)  # (small: built for real)


def _symmetries(model, shape):
  return [str(r.symmetry) for r in summary(model, shape).rows]


class SymmetryColumnTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("equivariant", Symmetry("equivariant", (4, 4), (1, 1)), "shift 4ℤ"),
      ("every_shift", Symmetry("equivariant", (1,), (1,)), "shift ℤ"),
      ("interior", Symmetry("interior", (2, 4), (1, 1)), "shift 2ℤ×4ℤ (interior)"),
      ("upsampled", Symmetry("interior", (2, 2), (2, 2)), "shift 2ℤ→2ℤ (interior)"),
      ("adaptive", Symmetry("adaptive", (1, 1)), "shift ℤ (adaptive)"),
      ("invariant", Symmetry("invariant", (8, 8)), "invariant 8ℤ"),
      ("none", Symmetry(), "none"),
      ("group_map", Symmetry("interior", (1, 1), (1, 1), "p4", "map"), "shift ℤ (interior), p4"),
      ("group_only", Symmetry("none", group="p4m", group_action="invariant"), "invariant p4m"),
      ("both_invariant", Symmetry("invariant", (4, 4), (), "p4", "invariant"), "invariant 4ℤ, p4"),
      (
          "invariant_shift_equivariant_group",
          Symmetry("invariant", (1, 1), (), "p4", "plane"),
          "invariant ℤ, equivariant p4",
      ),
  )
  def test_notation(self, symmetry, text):
    self.assertEqual(str(symmetry), text)

  def test_rows_by_hand_have_no_symmetry(self):
    row = Row("fc(10)", 1_010, 1_010, (10,))
    self.assertIsNone(row.symmetry)
    s = Summary((row,), (100,))
    self.assertIn("| fc(10) | 1,010 | 1,010 | 10 |  |", s.to_markdown().splitlines())
    self.assertEqual(s.to_csv().splitlines()[1], "fc(10),1010,1010,10,")

  def test_circular_stack(self):
    r = nnx.Rngs(0)
    circular: dict[str, Any] = dict(padding="SAME", padding_mode="circular", rngs=r)
    model = _stack(
        cnn.Conv(3, 4, 3, **circular),
        cnn.MaxPool(2),
        cnn.Conv(4, 4, 3, stride=2, **circular),
        cnn.BlurPool(stride=2, padding_mode="circular"),
        cnn.PolyphaseDownsample(stride=2),
        cnn.Conv(4, 4, 3, **circular),
        cnn.GlobalAvgPool(),
        nnx.Linear(4, 2, rngs=r),
    )
    self.assertEqual(
        _symmetries(model, (32, 32, 3)),
        [
            "shift ℤ",
            "shift 2ℤ",  # 2×2 windows, stride 2, 32 even: the whole map
            "shift 4ℤ",
            "shift 8ℤ",
            "shift 8ℤ (adaptive)",
            "shift 8ℤ (adaptive)",
            "invariant 8ℤ",
            "invariant 8ℤ",  # a function of an invariant stays invariant
        ],
    )
    # An odd size: stride 2 cannot keep the whole map; a 3×3 window at stride 2 neither.
    odd = _stack(cnn.Conv(3, 4, 3, **circular), cnn.MaxPool(2))
    self.assertEqual(_symmetries(odd, (31, 31, 3)), ["shift ℤ", "shift 2ℤ (interior)"])
    pool3 = _stack(cnn.Conv(3, 4, 3, **circular), cnn.MaxPool(3, stride=2), cnn.GlobalMaxPool())
    self.assertEqual(_symmetries(pool3, (32, 32, 3)), ["shift ℤ", "shift 2ℤ (interior)", "none"])
    # Adaptive sampling needs the whole map: after zero padding it promises nothing.
    zero = _stack(cnn.Conv(3, 4, 3, padding="SAME", rngs=r), cnn.PolyphaseDownsample(stride=2))
    self.assertEqual(_symmetries(zero, (8, 8, 3)), ["shift ℤ (interior)", "none"])

  def test_group_rows(self):
    r = nnx.Rngs(0)
    model = _stack(
        cnn.MaxPool(2),
        cnn.LiftConv(3, 4, 3, group="p4", rngs=r),
        cnn.MaxPool((2, 2, 1)),
        cnn.GroupConv(4, 4, 3, group="p4", rngs=r),
        cnn.GroupPool(),
        cnn.BlurPool(stride=2, padding_mode="reflect"),
        cnn.GlobalMaxPool(),
        nnx.Linear(4, 2, rngs=r),
    )
    self.assertEqual(
        _symmetries(model, (20, 20, 3)),
        [
            "shift 2ℤ, p4m",  # 20 → 10: the whole map; windows symmetric about the centre
            "shift 2ℤ (interior), p4",  # "SAME", odd kernel, stride 1: zero padding
            "shift 4ℤ (interior), p4",  # 10 → 5, the group axis untouched
            "p4",  # a 3×3 conv on 5×5 after 20 → 5: every position reaches the border
            "p4",  # an image again, moved by the plane action
            "p4",  # 5 → 3, pads (1, 1): symmetric
            "invariant p4",
            "invariant p4",
        ],
    )
    # 9 → 4 at stride 2: windows over 0..7 of 0..8, not symmetric about the centre.
    self.assertEqual(
        _symmetries(model, (18, 18, 3))[:4],
        ["shift 2ℤ, p4m", "shift 2ℤ (interior), p4", "shift 4ℤ (interior)", "none"],
    )
    strided = _stack(cnn.LiftConv(3, 4, 3, group="p4m", stride=2, rngs=r))
    self.assertEqual(_symmetries(strided, (20, 20, 3)), ["shift 2ℤ (interior)"])
    self.assertEqual(_symmetries(strided, (21, 21, 3)), ["shift 2ℤ (interior), p4m"])
    # A learned kernel ends the group; a 1×1 convolution does not.
    plain = _stack(cnn.Conv(3, 3, 1, rngs=r), nnx.Conv(3, 3, (3, 3), rngs=r))
    self.assertEqual(_symmetries(plain, (8, 8, 3)), ["shift ℤ, p4m", "shift ℤ (interior)"])

  def test_flatten_and_global_pooling(self):
    r = nnx.Rngs(0)

    class Net(nnx.Module):

      def __init__(self, keepdims):
        self.conv = cnn.Conv(3, 4, 3, padding="SAME", padding_mode="circular", rngs=r)
        self.pool = cnn.GlobalAvgPool(keepdims=keepdims)
        self.fc = nnx.Linear(4 if keepdims else 4 * 8 * 8, 2, rngs=r)
        self.keepdims = keepdims

      def __call__(self, x):
        x = self.conv(x)
        x = self.pool(x) if self.keepdims else x
        return self.fc(x.reshape(x.shape[0], -1))

    flat = Net(False)
    self.assertEqual(_symmetries(flat, (8, 8, 3)), ["shift ℤ", "none"])  # a flatten, then fc
    pooled = Net(True)
    self.assertEqual(
        _symmetries(pooled, (8, 8, 3)), ["shift ℤ", "invariant ℤ", "invariant ℤ"]
    )  # the flatten of an invariant map stays invariant
    per_position = _stack(
        cnn.Conv(3, 4, 3, padding="SAME", padding_mode="circular", rngs=r),
        nnx.Linear(4, 5, rngs=r),  # on the channels of each position
        nnx.BatchNorm(5, rngs=r),
        cnn.Maxout(5),
        cnn.LocalResponseNorm(size=1),
    )
    self.assertEqual(set(_symmetries(per_position, (8, 8, 3))), {"shift ℤ"})

  def test_residual_and_inception_rows_combine_their_children(self):
    for shortcut in ("A", "B"):
      model = models.abstract("resnet20", input_shape=(96, 96, 3), shortcut=shortcut)
      rows = summary(model).rows
      self.assertEqual(
          [str(r.symmetry) for r in rows[2:11]],
          ["shift ℤ (interior)"] * 3 + ["shift 2ℤ (interior)"] * 3 + ["shift 4ℤ (interior)"] * 3,
      )
      self.assertEqual(str(rows[5].children[0].symmetry), "shift 2ℤ (interior)")  # conv1, s2
      self.assertEqual([str(r.symmetry) for r in rows[11:]], ["none", "none"])  # zero padding
    s = summary("googlenet", (224, 224, 3))
    inc = [r for r in s.rows if r.name.startswith("inc(")]
    self.assertEqual(str(inc[0].symmetry), "shift 8ℤ (interior)")
    # Every branch of the module: the 1×1s, the 3×3 and 5×5 after their reductions, the pool.
    self.assertEqual({str(c.symmetry) for c in inc[0].children}, {"shift 8ℤ (interior)"})

  def test_register_describer_symmetry(self):
    class Scale(nnx.Module):

      def __call__(self, x):
        return 2 * x

    class Total(nnx.Module):

      def __call__(self, x):
        return x.sum(axis=(1, 2))

    register_describer(Scale, symmetry="pointwise")(lambda m, i, o: ("scale", 0, 0))
    register_describer(Total, symmetry="global")(lambda m, i, o: ("total", 0, 0))
    r = nnx.Rngs(0)
    conv = cnn.Conv(3, 3, 3, padding="SAME", padding_mode="circular", rngs=r)
    model = _stack(Scale(), conv, Total())
    self.assertEqual(_symmetries(model, (6, 6, 3)), ["shift ℤ, p4m", "shift ℤ", "invariant ℤ"])

    class Opaque(nnx.Module):

      def __call__(self, x):
        return x

    register_describer(Opaque)(lambda m, i, o: ("opaque", 0, 0))  # no claim by default
    self.assertEqual(_symmetries(_stack(Opaque()), (6, 6, 3)), ["none"])
    with pytest.raises(ValueError, match="register_describer: symmetry got 'shift'"):
      register_describer(Opaque, symmetry="shift")


def test_cli_summary(capsys):
  assert cli.main(["summary", "--model", "seed-cnn", "--input", "32,32,3"]) == 0
  out = capsys.readouterr().out
  assert "1,906,688" in out and "28×28×32" in out and "214,806" in out
  assert cli.main(["summary", "--model", "seed-cnn", "--format", "csv", "--conv", "tiled"]) == 0
  rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert rows[0] == ["layer", "params", "ops", "output", "symmetry"]
  # A tile of 2 at stride 1: shifts by 2 move the output by 2, a multiple of the tile.
  assert rows[1] == ["tiled(5, 32, t2)", "9632", "1906688", "28x28x32", "shift 2ℤ→2ℤ (interior)"]
  assert "shift 4ℤ (interior)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "--model", "seed-cnn", "--input", "32,32,three"], "--input"),
        (["summary", "--model", "no-such-net"], "no-such-net"),
        (["summary", "--model", "seed-cnn", "--input", "4,4,3"], "kernel"),
    ],
)
def test_cli_summary_errors(capsys, argv, message):
  assert cli.main(argv) == 2
  assert message in capsys.readouterr().err


def test_cnnjax_summary_is_callable_in_any_import_order():
  # Importing the submodule before reading the package attribute made ``cnnjax.summary``
  # the module ("'module' object is not callable"), depending on import order.
  script = (
      "import cnnjax.summary, cnnjax\n"
      "from cnnjax import summary\n"
      "assert len(cnnjax.summary('seed-cnn').rows) == len(summary('seed-cnn').rows) == 6\n"
  )
  proc = subprocess.run(
      [sys.executable, "-c", script],
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
