"""cnnjax.summary: the lecture's seed-cnn table exactly, published totals, inception
rows, every layer kind against independent counts, exports, the CLI."""

import csv
import io
import math

import jax
import jax.numpy as jnp
import pytest
from absl.testing import parameterized
from flax import nnx

from cnnjax import arithmetic, cli, models
from cnnjax import nn as cnn
from cnnjax.summary import Row, Summary, summary

# The lecture's table for the seed CNN on 32×32×3: name, params, ops, output.
SEED_CNN = [
    ("conv(5, 32)", 2_432, 1_906_688, (28, 28, 32)),
    ("pool(2)", 0, 25_088, (14, 14, 32)),
    ("conv(5, 64)", 51_264, 5_126_400, (10, 10, 64)),
    ("pool(2)", 0, 6_400, (5, 5, 64)),
    ("fc(100)", 160_100, 160_100, (100,)),
    ("fc(10)", 1_010, 1_010, (10,)),
]


def _rows(s: Summary):
  return [(r.name, r.params, r.ops, r.shape) for r in s.rows]


def _param_count(model) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


class SeedCnnTableTest(parameterized.TestCase):

  def test_by_name_reproduces_the_lecture(self):
    s = summary("seed-cnn", (32, 32, 3))
    self.assertEqual(_rows(s), SEED_CNN)
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
    self.assertEqual(conv.split()[-3:], ["2,432", "1,906,688", "28×28×32"])
    total = next(line for line in lines if line.startswith("total"))
    self.assertEqual(total.split()[1:], ["214,806", "7,225,686"])
    md = s.to_markdown().splitlines()
    self.assertEqual(md[0], "| layer | params | ops | output |")
    self.assertIn("| conv(5, 64) | 51,264 | 5,126,400 | 10×10×64 |", md)
    self.assertIn("| **total** | **214,806** | **7,225,686** |  |", md)
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    self.assertEqual(
        [(r["layer"], int(r["params"]), int(r["ops"]), r["output"]) for r in rows],
        [(n, p, o, "x".join(map(str, sh))) for n, p, o, sh in SEED_CNN],
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


def test_cli_summary(capsys):
  assert cli.main(["summary", "--model", "seed-cnn", "--input", "32,32,3"]) == 0
  out = capsys.readouterr().out
  assert "1,906,688" in out and "28×28×32" in out and "214,806" in out
  assert cli.main(["summary", "--model", "seed-cnn", "--format", "csv", "--conv", "tiled"]) == 0
  rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert rows[0] == ["layer", "params", "ops", "output"]
  assert rows[1] == ["tiled(5, 32, t2)", "9632", "1906688", "28x28x32"]


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
