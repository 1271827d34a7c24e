"""Sphinx configuration of cnnjax's documentation.

Sphinx + myst-nb, as jax, flax and optax build theirs: the toolchain of the JAX
libraries our users already read, it executes the tutorials (MyST-markdown notebooks)
on every build and can run doctests (``sphinx.ext.doctest``).

Build (docs/README.md): ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, _ROOT)  # cnnjax from this checkout
sys.path.insert(0, os.path.join(_HERE, "ext"))  # coverage_check, aliases

# The tutorials' kernels (and the processes they start) inherit this environment: they
# import cnnjax from this checkout too, and run on the CPU whatever accelerator the
# machine has, so that the built pages are the same everywhere.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "cnnjax"
author = "cnnjax authors"
copyright = "cnnjax authors"  # noqa: A001 (Sphinx's name)
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "coverage_check",
    "aliases",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", "jupyter_execute"]

# --- API reference: autodoc + napoleon (Google style) -------------------------------
autodoc_typehints = "none"  # the signatures show them; the Args sections say the rest
autodoc_member_order = "bysource"
autodoc_default_options = {"special-members": "__call__"}
autodoc_inherit_docstrings = False  # nnx.Module's own docstrings are not ours
autodoc_preserve_defaults = True  # defaults as written (jnp.float32, not <class ...>)
autosummary_generate = False  # the API pages list every name themselves
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not as duplicate attribute entries
napoleon_use_rtype = False
nitpicky = False
add_module_names = False

# --- Notebooks: myst-nb executes every tutorial on each build -----------------------
# "force": CI starts with no cache, so every build runs every notebook and a tutorial
# that no longer runs fails the build; the four run in well under a minute on 2 cores.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 180  # seconds per cell
nb_execution_show_tb = True  # a failing cell's traceback in the build log
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# --- HTML ----------------------------------------------------------------------------
html_theme = "furo"
html_title = "cnnjax"

# --- coverage_check (docs/ext/coverage_check.py) --------------------------------------
coverage_check_modules = [
    "cnnjax",
    "cnnjax.arithmetic",
    "cnnjax.padding",
    "cnnjax.nn",
    "cnnjax.models",
    "cnnjax.equivariance",
    "cnnjax.train",
    "cnnjax.data",
]


def _drop_type_docstrings(app, what, name, obj, options, lines):
  """A constant (``PADDING_MODES``, ``RECIPES``, the alias ``SearchSpace``) has no
  docstring of its own, and autodoc shows its type's (tuple's, dict's, Mapping's); drop
  that, so that its entry shows the text written under it in docs/api/."""
  del app, name, options
  doc = getattr(obj, "__doc__", None)
  if what != "data" or not doc or not lines or isinstance(obj, type):
    return
  if lines[0].strip() == doc.strip().splitlines()[0].strip():
    lines[:] = []  # the object's __doc__ is its type's: a constant's own is a #: comment


def _module_signature(app, what, name, obj, options, signature, return_annotation):
  """Flax NNX modules: their metaclass's ``__call__(*args, **kwargs)`` hides the
  constructor's signature from autodoc; show ``__init__``'s, without ``self``."""
  del name, options, return_annotation
  if what != "class" or signature != "(*args, **kwargs)" or "__init__" not in vars(obj):
    return None
  import inspect  # noqa: PLC0415

  from sphinx.ext.autodoc.preserve_defaults import update_defvalue  # noqa: PLC0415
  from sphinx.util.inspect import stringify_signature  # noqa: PLC0415

  update_defvalue(app, obj.__init__, False)
  sig = inspect.signature(obj.__init__)
  sig = sig.replace(parameters=list(sig.parameters.values())[1:])
  return stringify_signature(sig, show_annotation=False, show_return_annotation=False), None


def _skip_tuple_fields(app, what, name, obj, skip, options):
  """A NamedTuple's fields are described by its "Attributes:" section; skip the entries
  ("Alias for field number 0") that ``:members:`` would add for them."""
  del app, what, name, options
  if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
    return True
  return skip


def setup(app):
  app.connect("autodoc-process-docstring", _drop_type_docstrings)
  app.connect("autodoc-skip-member", _skip_tuple_fields)
  app.connect("autodoc-process-signature", _module_signature)
