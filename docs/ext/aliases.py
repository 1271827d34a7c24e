"""Sphinx extension: a reference to an object by another of its names links to its entry.

Docstrings name objects where they are defined (``:func:`cnnjax.conv.cross_correlate```),
while the API reference documents each once, under its public name
(``cnnjax.cross_correlate``). When a ``cnnjax.…`` reference finds no entry, this
resolves the name to the object and links to the entry documenting that same object.
"""

from __future__ import annotations

from coverage_check import resolve


def _entries_by_object(env) -> dict[int, str]:
  objects = env.get_domain("py").objects
  cache = getattr(env, "_cnnjax_aliases", None)
  if cache is None or cache[0] != len(objects):
    by_id = {}
    for fullname in objects:
      obj = resolve(fullname)
      if obj is not None and not isinstance(obj, (str, int, float, bool, type(None))):
        by_id.setdefault(id(obj), fullname)
    cache = (len(objects), by_id)
    env._cnnjax_aliases = cache
  return cache[1]


def _missing_reference(app, env, node, contnode):
  target = node.get("reftarget", "")
  if node.get("refdomain") != "py" or not target.startswith("cnnjax."):
    return None
  obj = resolve(target)
  if obj is None:
    return None
  documented = _entries_by_object(env).get(id(obj))
  if documented is None or documented == target:
    return None
  return env.get_domain("py").resolve_xref(
      env, node["refdoc"], app.builder, node["reftype"], documented, node, contnode
  )


def setup(app) -> dict:
  app.connect("missing-reference", _missing_reference)
  return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
