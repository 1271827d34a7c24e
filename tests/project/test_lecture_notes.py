"""docs/lecture-notes.md: every value cnnjax computes there is recomputed here, so the page
cannot drift from the code."""

import os

import jax.numpy as jnp
import numpy as np

import cnnjax

PAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "docs",
    "lecture-notes.md",
)


def _page() -> str:
  with open(PAGE, encoding="utf-8") as f:
    return f.read()


def _rows(a) -> str:
  return " / ".join(" ".join(f"{v:g}" for v in row) for row in np.asarray(a))


def test_pooling_example():
  x = jnp.array([[1, 4, 3, 6], [2, 1, 0, 9], [2, 2, 7, 7], [5, 3, 3, 6]], jnp.float32)[
      None, :, :, None
  ]
  avg = np.asarray(cnnjax.avg_pool(x, 2)).reshape(-1)
  mx = np.asarray(cnnjax.max_pool(x, 2)).reshape(-1)
  np.testing.assert_array_equal(avg, [2, 4.5, 3, 5.75])
  page = _page()
  assert "**" + ", ".join(f"{v:g}" for v in avg) + "**" in page
  assert "| " + ", ".join(f"{v:g}" for v in mx) + " |" in page
  assert "2.5, 4, 2, 2.5" in page  # the slide's figure, reported as wrong


def test_padding_and_edge_examples():
  x = jnp.array(
      [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]],
      jnp.float32,
  )[None, :, :, None]
  w = jnp.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], jnp.float32)[:, :, None, None]
  page = _page()
  assert "rows " + _rows(cnnjax.cross_correlate(x, w)[0, :, :, 0]) + " |" in page
  assert "rows " + _rows(cnnjax.cross_correlate(x, w, padding=1)[0, :, :, 0]) + " |" in page
  step = jnp.array([[10, 10, 10, 0, 0, 0]] * 6, jnp.float32)[None, :, :, None]
  edge = jnp.array([[1, 0, -1]] * 3, jnp.float32)[:, :, None, None]
  out = np.asarray(cnnjax.cross_correlate(step, edge)[0, :, :, 0])
  assert all(" ".join(f"{v:g}" for v in row) == "0 30 30 0" for row in out)
  assert "every row 0 30 30 0" in page


def test_vgg16_first_layer_ops():
  ops = cnnjax.op_count("conv", in_shape=(224, 224, 3), out_shape=(224, 224, 64), kernel=(3, 3))
  assert ops == 224 * 224 * 64 * (3 * 3 * 3 + 1)
  assert f"**{ops:,}**" in _page()


def test_matrix_example():
  m = np.asarray(cnnjax.conv_matrix(jnp.array([1.0, 2.0]).reshape(2, 1, 1), (3, 1)))
  text = "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in row) + "]" for row in m) + "]"
  assert text in _page()


def test_linked_from_the_readme():
  readme = os.path.join(os.path.dirname(PAGE), "..", "README.md")
  with open(readme, encoding="utf-8") as f:
    assert "docs/lecture-notes.md" in f.read()
