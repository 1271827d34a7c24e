"""Every public name has an entry in the API reference (docs/api/), checked without Sphinx.

The docs build fails on a missing entry too (docs/ext/coverage_check.py); this test
catches one in the ordinary suite, where the docs are not built. It reads the autodoc
directives of docs/api/*.rst and applies the build's rule: ``module.name`` has an entry,
or is the same object as a documented one (a re-export), or is a module with a page.
"""

import ast
import importlib.util
import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"

_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:auto(module|function|class|exception|data|attribute|method)|"
    r"(?:py:)?(currentmodule|module|function|class|exception|data|attribute|method))"
    r"::\s*(\S+)\s*$"
)


def _coverage_check():
  spec = importlib.util.spec_from_file_location(
      "coverage_check", DOCS / "ext" / "coverage_check.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _checked_modules() -> list[str]:
  """``coverage_check_modules`` of docs/conf.py (read, not executed)."""
  for node in ast.parse((DOCS / "conf.py").read_text(encoding="utf-8")).body:
    if isinstance(node, ast.Assign) and any(
        getattr(t, "id", None) == "coverage_check_modules" for t in node.targets
    ):
      return ast.literal_eval(node.value)
  raise AssertionError("docs/conf.py sets no coverage_check_modules")


def _documented() -> dict[str, str]:
  """Full name → object type of every entry the API pages' directives make."""
  documented = {}
  for page in sorted((DOCS / "api").glob("*.rst")):
    current = None
    for line in page.read_text(encoding="utf-8").splitlines():
      m = _DIRECTIVE.match(line)
      if not m:
        continue
      kind, name = m.group(1) or m.group(2), m.group(3)
      if kind in ("currentmodule", "module"):
        current = name
        if kind == "module":
          documented[name] = "module"
        continue
      full = name if name.startswith("cnnjax.") or current is None else f"{current}.{name}"
      documented[full] = kind
  return documented


def test_the_checked_modules_include_every_public_module():
  modules = _checked_modules()
  for name in (
      "cnnjax",
      "cnnjax.nn",
      "cnnjax.models",
      "cnnjax.equivariance",
      "cnnjax.train",
      "cnnjax.data",
  ):
    assert name in modules


def test_every_public_name_has_an_api_entry():
  documented = _documented()
  assert "cnnjax.cross_correlate" in documented and documented["cnnjax.nn"] == "module"
  missing = _coverage_check().undocumented(_checked_modules(), documented)
  assert not missing, (
      "public names without an entry in docs/api/ (add an autofunction/autoclass/"
      f"autodata line to the module's page): {missing}"
  )


def test_a_missing_entry_is_named():
  documented = _documented()
  del documented["cnnjax.nn.Conv"]
  assert _coverage_check().undocumented(["cnnjax.nn"], documented) == {"cnnjax.nn": ["Conv"]}
