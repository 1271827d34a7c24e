"""Atomic Orbax checkpoints of a ``TrainState``, one per saved epoch.

Orbax writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp-*`` and renames it to
``<epoch>`` only once everything (arrays, then ``_CHECKPOINT_METADATA``) is written, so a run
killed mid-save leaves no directory that looks finished. On top of that, :class:`Checkpointer`
treats an ``<epoch>`` directory without ``_CHECKPOINT_METADATA`` (e.g. a half-finished copy)
as incomplete: such directories are moved aside to ``<epoch>.incomplete`` with a warning,
never restored. PRNG keys (typed key arrays in NNX RNG streams) are stored as raw key data.
"""

from __future__ import annotations

import os
import warnings

import jax

__all__ = ["Checkpointer", "complete_epochs"]

_METADATA = "_CHECKPOINT_METADATA"


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_savable(restored, target):
  return jax.tree.map(
      lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
      restored, target,
  )


def complete_epochs(directory: str | os.PathLike) -> list[int]:
  """Epochs with a finished checkpoint in ``directory``, sorted (missing directory: [])."""
  if not os.path.isdir(directory):
    return []
  return sorted(
      int(name) for name in os.listdir(directory)
      if name.isdigit() and os.path.isfile(os.path.join(directory, name, _METADATA))
  )


class Checkpointer:
  """Saves and restores ``TrainState`` pytrees under ``directory/<epoch>``.

  Args:
    directory: the checkpoint root (created if needed).
    keep: how many of the most recent checkpoints to keep.

  Example:
    >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=2)  # doctest: +SKIP
    >>> ckpt.save(3, state); ckpt.latest_epoch()  # doctest: +SKIP
    3
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    os.makedirs(self.directory, exist_ok=True)
    if jax.process_index() == 0:
      self._quarantine_incomplete()
    if jax.process_count() > 1:  # everyone sees the directory after the move
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("cnnjax.train.Checkpointer")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _quarantine_incomplete(self) -> None:
    for name in sorted(os.listdir(self.directory)):
      path = os.path.join(self.directory, name)
      if name.isdigit() and not os.path.isfile(os.path.join(path, _METADATA)):
        aside = f"{path}.incomplete"
        n = 1
        while os.path.exists(aside):
          aside, n = f"{path}.incomplete{n}", n + 1
        warnings.warn(
            f"Checkpointer: {path} has no {_METADATA}, so it is an unfinished checkpoint; "
            f"moved aside to {aside} and ignored.",
            stacklevel=3,
        )
        os.replace(path, aside)

  def epochs(self) -> list[int]:
    """The epochs with a complete checkpoint, ascending."""
    return complete_epochs(self.directory)

  def latest_epoch(self) -> int | None:
    """The most recent complete checkpoint's epoch, or None."""
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def save(self, epoch: int, state) -> None:
    """Writes ``state`` as the checkpoint of ``epoch`` and waits until it is final."""
    self._manager.save(epoch, args=self._ocp.args.StandardSave(_to_savable(state)), force=True)
    self._manager.wait_until_finished()

  def restore(self, epoch: int, target):
    """Reads the checkpoint of ``epoch`` into the structure, dtypes and shardings of ``target``.

    Args:
      epoch: a complete checkpoint's epoch (see :meth:`epochs`).
      target: a pytree like the saved one (e.g. a freshly initialised, placed state).

    Returns:
      The restored pytree, placed like ``target``.
    """
    if epoch not in self.epochs():
      raise ValueError(
          f"Checkpointer.restore: epoch got {epoch!r}; expected one of the complete "
          f"checkpoints {self.epochs()} in {self.directory}."
      )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        _to_savable(target),
    )
    restored = self._manager.restore(epoch, args=self._ocp.args.StandardRestore(abstract))
    return _from_savable(restored, target)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
