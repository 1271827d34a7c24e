"""Sphinx extension: fail the build when a public name has no entry in the API reference.

After the build, each module named in the ``coverage_check_modules`` setting is
imported and every name in its ``__all__`` is looked up among what the build documented
(Python domain objects from autodoc and ``py:`` directives; optax and dm-pix do the
same). A name counts as documented when

* ``module.name`` itself is documented (``.. autofunction:: cnnjax.nn.Conv``), or
* the object is the same object as one documented under another name (a re-export:
  ``cnnjax.output_size`` is ``cnnjax.arithmetic.output_size``), or
* the object is a module that has its own page (``.. automodule:: cnnjax.nn``).

Each missing name is a warning naming it, and the build exits with status 1 (with
or without ``-W``). ``tests/project/test_docs_coverage.py`` applies the same rule
(:func:`undocumented`) to the entries it reads from ``docs/api/``, without Sphinx.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Sphinx is imported by the build only: the test uses `undocumented`
  from sphinx.application import Sphinx


def resolve(fullname: str):
  """The object named ``fullname`` (``pkg.mod.attr.attr``), or None if it cannot be found."""
  parts = fullname.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    try:
      for attr in parts[i:]:
        obj = getattr(obj, attr)
    except AttributeError:
      return None
    return obj
  return None


def undocumented(modules: Iterable[str], documented: Mapping[str, str]) -> dict[str, list[str]]:
  """Each module's ``__all__`` names that ``documented`` lacks.

  Args:
    modules: module names, e.g. ``["cnnjax", "cnnjax.nn"]``.
    documented: the documented objects, full name → object type (``"function"``,
      ``"class"``, ``"module"``, ...), as the Python domain records them.

  Returns:
    Module name → the missing names, in ``__all__`` order (only modules missing some).
  """
  by_id: dict[int, str] = {}
  for fullname in documented:
    obj = resolve(fullname)
    if obj is not None:
      by_id.setdefault(id(obj), fullname)
  missing: dict[str, list[str]] = {}
  for module_name in modules:
    module = importlib.import_module(module_name)
    for name in module.__all__:
      if f"{module_name}.{name}" in documented:
        continue
      obj = getattr(module, name)
      if isinstance(obj, types.ModuleType):
        if documented.get(obj.__name__) == "module":
          continue
      elif id(obj) in by_id and not isinstance(obj, (str, int, float, bool, type(None))):
        continue  # a re-export of an object documented elsewhere (not an interned scalar)
      missing.setdefault(module_name, []).append(name)
  return missing


def _check(app: Sphinx, exception: Exception | None) -> None:
  if exception is not None:
    return
  from sphinx.util import logging  # noqa: PLC0415

  log = logging.getLogger(__name__)
  objects = app.env.get_domain("py").objects
  documented = {name: entry.objtype for name, entry in objects.items()}
  modules = app.config.coverage_check_modules
  missing = undocumented(modules, documented)
  counts = []
  for module_name in modules:
    total = len(importlib.import_module(module_name).__all__)
    counts.append(f"{module_name} {total - len(missing.get(module_name, []))}/{total}")
  log.info("coverage_check: public names documented: %s", ", ".join(counts))
  for module_name, names in missing.items():
    for name in names:
      log.warning(
          "coverage_check: %s.%s is in %s.__all__ but has no entry in the API reference "
          "(add it to a page in docs/api/)",
          module_name,
          name,
          module_name,
          type="coverage_check",
      )
  if missing:
    app.statuscode = 1  # fails the build with or without -W


def setup(app: Sphinx) -> dict:
  app.add_config_value("coverage_check_modules", [], "env")
  app.connect("build-finished", _check)
  return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
