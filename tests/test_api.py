"""The public API's calling convention: arrays positional, configuration keyword-only.

Like dm-pix's ``api_test.py``: every public function of ``cnnjax`` (the callables in
``cnnjax.__all__``, and those of ``cnnjax.arithmetic``) is walked, and an optional
argument (one with a default) that could be passed positionally fails the test. New
exports are picked up automatically.
"""

import inspect
import types

import pytest

import cnnjax
from cnnjax import arithmetic, equivariance

# Submodules whose own public functions follow the convention too. Further modules can
# be added here; exported functions of cnnjax are walked whatever module they live in.
_MODULES = (cnnjax, arithmetic, equivariance)

# Optional arguments that are data, not configuration, and positional by the spec:
# ``g_out`` is the output transform of ``f(g_in(x)) == g_out(f(x))`` (issue 3's
# signatures put it beside ``g_in``), and ``rot90(k)`` reads like ``jnp.rot90``.
_POSITIONAL_BY_DESIGN = {
    "cnnjax.equivariance_error": ["g_out"],
    "cnnjax.assert_equivariant": ["g_out"],
    "cnnjax.equivariance.equivariance_error": ["g_out"],
    "cnnjax.equivariance.assert_equivariant": ["g_out"],
    "cnnjax.equivariance.rot90": ["k"],
    # ``summary(model, (32, 32, 3))``: the input's shape is what the table is of, as in
    # torchinfo's ``summary(model, input_size)``; None only for a zoo model's default.
    "cnnjax.summary": ["input_shape"],
}


def _public_functions():
  found = {}
  for module in _MODULES:
    names = getattr(module, "__all__", None)
    assert names is not None, f"{module.__name__} has no __all__"
    for name in names:
      assert hasattr(module, name), f"{module.__name__}.__all__ names {name!r}, which is missing"
      obj = getattr(module, name)
      # Functions only: classes (modules, dataclasses) and submodules have their own
      # conventions (``__init__(self, in_features, ..., *, rngs)``).
      if inspect.isclass(obj) or isinstance(obj, types.ModuleType) or not callable(obj):
        continue
      found[f"{module.__name__}.{name}"] = obj
  return found


_FUNCTIONS = _public_functions()
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _positional_defaults(fn) -> list[str]:
  """The arguments of ``fn`` that have a default yet can be passed positionally."""
  return [
      p.name
      for p in inspect.signature(fn).parameters.values()
      if p.kind in _POSITIONAL and p.default is not inspect.Parameter.empty
  ]


def test_functions_are_found():
  # The walk itself works: the known functions are in it.
  for name in (
      "cnnjax.cross_correlate",
      "cnnjax.convolve",
      "cnnjax.conv_transpose",
      "cnnjax.arithmetic.output_size",
      "cnnjax.arithmetic.receptive_field",
      "cnnjax.arithmetic.param_count",
      "cnnjax.arithmetic.op_count",
  ):
    assert name in _FUNCTIONS


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
def test_optional_arguments_are_keyword_only(name):
  fn = _FUNCTIONS[name]
  positional_with_default = [
      a for a in _positional_defaults(fn) if a not in _POSITIONAL_BY_DESIGN.get(name, [])
  ]
  assert not positional_with_default, (
      f"{name}{inspect.signature(fn)}: optional argument(s) {positional_with_default} "
      "can be passed positionally; make them keyword-only (put them after `*`)."
  )


def test_the_check_catches_a_positional_default():
  # The rule, applied to examples, so the test above could fail.
  def bad(x, w, stride=1):
    del x, w, stride

  def good(x, w, *, stride=1):
    del x, w, stride

  def only_positional(x, w=None, /):
    del x, w

  assert _positional_defaults(bad) == ["stride"]
  assert _positional_defaults(good) == []
  assert _positional_defaults(only_positional) == ["w"]
