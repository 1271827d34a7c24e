"""JAX's persistent compilation cache for ``cnnjax train``: compile a program once per machine.

``cnnjax train`` turns the cache on before anything compiles, in
:func:`default_compile_cache_dir` (``$CNNJAX_CACHE/jax``, ``$XDG_CACHE_HOME/cnnjax/jax`` or
``~/.cache/cnnjax/jax``: next to the decoded-data cache) unless ``--compile-cache DIR``
names another directory or ``--compile-cache off`` turns it off (without the flag,
``$CNNJAX_COMPILE_CACHE``, a directory or ``off``, does the same). Every program is cached,
however small or quick to compile (JAX's defaults skip programs that compile in under a
second, which is most of a small CPU run). A second run of the same model, batch size,
data shapes, jax/jaxlib version and XLA flags then loads its executables from disk
instead of compiling them; ``metrics.jsonl`` shows the difference in its first record's
``compile_seconds``.

Example:
  >>> from cnnjax.train.compile_cache import enable_compile_cache
  >>> enable_compile_cache("/tmp/jax-cache")  # sets jax's cache for the process  # doctest: +SKIP
  '/tmp/jax-cache'
"""

from __future__ import annotations

import os

import jax

__all__ = ["default_compile_cache_dir", "enable_compile_cache"]

OFF = "off"


def default_compile_cache_dir() -> str:
  """``$CNNJAX_CACHE/jax``, ``$XDG_CACHE_HOME/cnnjax/jax`` or ``~/.cache/cnnjax/jax``."""
  from cnnjax.data.cache import default_cache_dir

  return os.path.join(os.fspath(default_cache_dir()), "jax")


def enable_compile_cache(directory: str | os.PathLike[str] | None = None) -> str | None:
  """Turns JAX's persistent compilation cache on in ``directory`` (or off).

  Call it before the first compilation of the process: JAX opens its cache once.

  Args:
    directory: the cache directory (created on first write); None:
      ``$CNNJAX_COMPILE_CACHE`` if set, else :func:`default_compile_cache_dir`;
      ``"off"``: no persistent cache, nothing is written.

  Returns:
    The absolute cache directory, or None when off.
  """
  if directory is None:
    directory = os.environ.get("CNNJAX_COMPILE_CACHE") or None
  if directory is not None and os.fspath(directory).lower() == OFF:
    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  path = os.path.abspath(
      os.path.expanduser(os.fspath(default_compile_cache_dir() if directory is None else directory))
  )
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  # Cache every program: small CPU programs compile in well under JAX's 1 s default.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return path
