"""Verified, atomic Orbax checkpoints of a ``TrainState``, one per saved epoch.

Orbax writes each checkpoint into a temporary directory (``<epoch>.orbax-checkpoint-tmp``
in the installed Orbax 0.12) and renames it to ``<epoch>`` only once everything is
written, so a run killed mid-save leaves no directory that looks finished. On top of that:

* **Checksums.** After each save, the SHA-256 and size of every file of the checkpoint
  are written to ``<epoch>/cnnjax_sha256.json`` (atomically). A checkpoint is *verified*
  when every listed file is there with its size and digest and no other file is.
  :meth:`Checkpointer.latest_verified` (used by resume, ``cnnjax eval`` and the NaN
  stop's "last good checkpoint") checks the newest first; one that fails is moved aside
  to ``<epoch>.corrupt`` with a one-line warning, and the previous one is tried. A run
  written before cnnjax kept checksums (no checkpoint of the directory has one) is
  restored unverified, with a warning.
* **Leftovers of a kill.** A writer (``cleanup=True``, which the training loop passes
  while it holds the run's lock) deletes Orbax's temporary directories under every name
  its versions use (``<epoch>.orbax-checkpoint-tmp``, ``<epoch>.orbax-checkpoint-tmp-<n>``
  as earlier versions name them, ``<epoch>.partial_save.orbax-checkpoint-tmp`` of partial
  saves), numbered directories without ``_CHECKPOINT_METADATA`` (e.g. a half-finished
  copy) and the ``<epoch>.incomplete`` directories earlier cnnjax versions moved such
  directories to, each with a one-line warning. A finished checkpoint (``<epoch>`` with
  its metadata) and a quarantined one (``<epoch>.corrupt``) are never deleted. Readers
  (``cleanup=False``) only ignore them all.

* **Asynchronous saves.** With ``asynchronous=True`` (the training loop's choice in a
  one-process run) :meth:`Checkpointer.save` returns once Orbax has copied the arrays off
  the devices; the files, the rename and the checksums are written on a background thread
  while training goes on. Everything that reads checkpoints (and the next save, and
  :meth:`Checkpointer.close`) first waits for it; an error of the background save is
  raised there, as a one-line :class:`CheckpointWriteError` naming the checkpoint (and the
  OS error, e.g. "No space left on device"). A kill during the background write leaves an
  unfinished checkpoint, cleaned up as above, and the previous one is used.
  :meth:`Checkpointer.close` shuts Orbax's threads down even after a failed save.

PRNG keys (typed key arrays in NNX RNG streams) are stored as raw key data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import warnings
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.train.jsonfiles import read_json

if TYPE_CHECKING:  # imported when a Checkpointer is made
  import orbax.checkpoint as ocp

__all__ = [
    "CHECKSUM_FILE",
    "CheckpointError",
    "CheckpointWriteError",
    "Checkpointer",
    "complete_epochs",
    "verify_checkpoint",
]

_METADATA = "_CHECKPOINT_METADATA"
CHECKSUM_FILE = "cnnjax_sha256.json"
# What a killed save leaves, under the names of this Orbax and its neighbours (see
# orbax/checkpoint/_src/path/atomicity.py: TMP_DIR_SUFFIX, and step.py's
# TMP_DIR_STEP_PATTERN), and cnnjax's old "<epoch>.incomplete<k>". Never a bare number.
_UNFINISHED = re.compile(
    r"^\d+(\.[A-Za-z_]+)?\.orbax-checkpoint-tmp(-[^/]*)?$|^\d+\.incomplete\d*$"
)


class CheckpointError(ValueError):
  """A checkpoint cannot be used (it failed verification or does not fit the target) or
  could not be written."""


class CheckpointWriteError(CheckpointError, OSError):
  """A checkpoint could not be written (a full disk, an unwritable directory): one line
  naming it. An ``OSError`` too, whose ``errno`` is the OS error's when one was found
  (Orbax and TensorStore report a full disk as a ``ValueError``)."""


def _chain(error: BaseException | None):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _write_reason(error: BaseException) -> tuple[str, int | None]:
  """A short reason for a failed write and its errno: the OS error if there is one (in
  the chain, or in TensorStore's message as ``os_error_code='28'``), with the first line
  of the error."""
  lines = str(error).strip().splitlines()
  detail = f"{type(error).__name__}: {lines[0] if lines else ''}"
  detail = detail if len(detail) <= 200 else detail[:197] + "..."
  code = next((e.errno for e in _chain(error) if isinstance(e, OSError) and e.errno), None)
  if code is None:
    match = re.search(r"os_error_code='?(\d+)", str(error))
    code = int(match[1]) if match else None
  return (f"{os.strerror(code)} ({detail})" if code else detail), code


def _release_orphaned_waiters() -> int:
  """Lets the background threads of a failed Orbax save end now; returns how many.

  Workaround for Orbax 0.12.8 (``orbax/checkpoint/_src/futures/future.py``):
  ``_SignalingThread.run`` sends its completion signals only when its work succeeds or
  is cancelled. When the work fails (a full disk, a run directory replaced by a file),
  the threads that wait for those signals wait out their timeout
  (``multihost.coordination_timeout()``, 300 s), and as they are not daemon threads the
  process cannot exit before: ``cnnjax train`` printed its one-line error, then hung for
  five minutes. Each such thread is cancelled and the signals it waits for are set, so
  that it wakes, sees the cancellation and returns (its coroutine, never awaited, makes
  Python warn when it is collected: ``cnnjax``'s commands collect it quietly). One
  process only (the signals then live in this process's memory). A canary in
  ``tests/train/test_train_run_files.py`` fails once Orbax signals failed work itself.
  """
  try:
    from orbax.checkpoint._src.futures import future as orbax_future
  except ImportError:  # another Orbax layout: nothing known to release
    return 0
  waiting = [
      t
      for t in threading.enumerate()
      if isinstance(t, orbax_future._SignalingThread) and t.is_alive()
  ]
  if not waiting:
    return 0
  for waiter in waiting:
    with contextlib.suppress(RuntimeError):  # its event loop is closed: past its work
      waiter.cancel()
  for waiter in waiting:
    orbax_future.set_signals(waiter._receive_signals, operation_id=waiter._operation_id)
  for waiter in waiting:
    threading.Thread.join(waiter, timeout=10)  # (Orbax's join raises when cancelled)
  return len(waiting)


def _check_checksums(value) -> str | None:
  files = value.get("files") if isinstance(value, dict) else None
  if not isinstance(files, dict):
    return "no 'files' object"
  for rel, entry in files.items():
    if not (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], int)
        and not isinstance(entry[0], bool)
        and entry[0] >= 0
        and isinstance(entry[1], str)
        and re.fullmatch(r"[0-9a-f]{64}", entry[1])
    ):
      return f"files[{rel!r}] got {str(entry)[:80]}, not [size, SHA-256 hex]"
  return None


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_savable(restored, target):
  return jax.tree.map(
      lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
      restored,
      target,
  )


def complete_epochs(directory: str | os.PathLike[str]) -> list[int]:
  """Epochs with a finished (not necessarily verified) checkpoint, sorted (missing: [])."""
  if not os.path.isdir(directory):
    return []
  return sorted(
      int(name)
      for name in os.listdir(directory)
      if name.isdigit() and os.path.isfile(os.path.join(directory, name, _METADATA))
  )


def _digests(path: str) -> dict[str, list]:
  """``{relative path: [size, sha256 hex]}`` of every file below ``path`` but the checksums."""
  out = {}
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      rel = os.path.relpath(full, path).replace(os.sep, "/")
      if rel in (CHECKSUM_FILE, CHECKSUM_FILE + ".tmp"):
        continue
      h = hashlib.sha256()
      with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      out[rel] = [os.path.getsize(full), h.hexdigest()]
  return out


def _write_checksums(path: str) -> None:
  tmp = os.path.join(path, CHECKSUM_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"format": 1, "files": _digests(path)}, f, indent=1, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(path, CHECKSUM_FILE))


def verify_checkpoint(path: str | os.PathLike[str]) -> str | None:
  """Checks a checkpoint directory against its ``cnnjax_sha256.json``.

  Args:
    path: a checkpoint directory (``<run>/checkpoints/<epoch>``).

  Returns:
    None if every listed file has its size and SHA-256 and there is no other file; else
    a short reason (the first difference found).

  Example:
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> verify_checkpoint(tmp.name)  # an empty directory
    'no cnnjax_sha256.json'
  """
  path = os.fspath(path)
  try:
    expected = read_json(
        os.path.join(path, CHECKSUM_FILE),
        check=_check_checksums,
        expected=f"the {CHECKSUM_FILE} cnnjax writes",
    )["files"]
  except FileNotFoundError:
    return f"no {CHECKSUM_FILE}"
  except (OSError, ValueError) as e:
    return f"unreadable {CHECKSUM_FILE} ({type(e).__name__}: {e})"
  try:
    got = _digests(path)
  except OSError as e:
    return f"unreadable file ({e})"
  for rel, (size, digest) in sorted(expected.items()):
    if rel not in got:
      return f"{rel} is missing"
    if got[rel][0] != size:
      return f"{rel} has {got[rel][0]} bytes, expected {size}"
    if got[rel][1] != digest:
      return f"{rel} has SHA-256 {got[rel][1][:12]}..., expected {digest[:12]}..."
  extra = sorted(set(got) - set(expected))
  if extra:
    return f"unexpected file {extra[0]}"
  return None


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


class Checkpointer:
  """Saves, verifies and restores ``TrainState`` pytrees under ``directory/<epoch>``.

  Args:
    directory: the checkpoint root (created if needed when ``cleanup``).
    keep: how many of the most recent checkpoints to keep.
    cleanup: this process writes the run (it holds the run's lock): delete what a
      killed writer left (see the module docstring) and quarantine checkpoints that
      fail verification. False: read only; failed checkpoints are skipped, not moved.
    asynchronous: :meth:`save` returns once the arrays are off the devices and writes
      the checkpoint on a background thread (one process only: a multi-process run saves
      synchronously).

  Example:
    >>> import os, tempfile
    >>> import jax.numpy as jnp
    >>> tmp = tempfile.TemporaryDirectory()
    >>> ckpt = Checkpointer(os.path.join(tmp.name, "checkpoints"), keep=2)
    >>> ckpt.save(3, {"w": jnp.ones(2)}); ckpt.latest_verified()  # any pytree of arrays
    3
    >>> verify_checkpoint(ckpt.path(3)) is None  # every file as its checksum says
    True
    >>> ckpt.close()
  """

  def __init__(
      self,
      directory: str | os.PathLike[str],
      *,
      keep: int = 2,
      cleanup: bool = True,
      asynchronous: bool = False,
  ):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.directory: str = os.path.abspath(directory)
    self.cleanup = cleanup
    if cleanup:
      os.makedirs(self.directory, exist_ok=True)
      if jax.process_index() == 0:
        self._remove_unfinished()
      _sync("cnnjax.train.Checkpointer")  # everyone sees the directory after the cleanup
    self._keep = keep
    self._manager: ocp.CheckpointManager | None = None
    self._skipped: set[int] = set()  # failed verification (read only: not moved)
    self._asynchronous = asynchronous and jax.process_count() == 1
    self._writer: threading.Thread | None = None  # the background save, if any
    self._error: BaseException | None = None  # what it raised

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      options = self._ocp.CheckpointManagerOptions(
          max_to_keep=self._keep,
          create=self.cleanup,
          enable_async_checkpointing=self._asynchronous,
      )  # (Orbax's read_only=True would log three warnings; a reader never saves anyway)
      self._manager = self._ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def _remove_unfinished(self) -> None:
    for name in sorted(os.listdir(self.directory)):
      path = os.path.join(self.directory, name)
      unfinished = (name.isdigit() and not os.path.isfile(os.path.join(path, _METADATA))) or (
          _UNFINISHED.match(name) is not None
      )
      if unfinished and os.path.isdir(path):
        warnings.warn(
            f"Checkpointer: deleted {path}, an unfinished checkpoint (no {_METADATA}) left "
            "by a killed or failed save.",
            stacklevel=3,
        )
        shutil.rmtree(path)

  def path(self, epoch: int) -> str:
    return os.path.join(self.directory, str(epoch))

  def epochs(self) -> list[int]:
    """The epochs with a finished checkpoint (not yet verified), ascending."""
    self.wait()
    return [e for e in complete_epochs(self.directory) if e not in self._skipped]

  def latest_epoch(self) -> int | None:
    """The most recent finished checkpoint's epoch (not verified; see latest_verified)."""
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def _legacy(self) -> bool:
    """No checkpoint here has checksums: a run written before cnnjax kept them."""
    return not any(
        os.path.exists(os.path.join(self.path(e), CHECKSUM_FILE))
        for e in complete_epochs(self.directory)
    )

  def verify(self, epoch: int) -> str | None:
    """None if the checkpoint of ``epoch`` is intact, else why not (see verify_checkpoint)."""
    self.wait()
    if self._legacy():
      return None
    return verify_checkpoint(self.path(epoch))

  def quarantine(self, epoch: int, reason: str) -> None:
    """Moves a failed checkpoint aside (``<epoch>.corrupt``; read only: skips it), warning."""
    path = self.path(epoch)
    if not self.cleanup:
      self._skipped.add(epoch)
      warnings.warn(f"Checkpointer: {path} failed verification ({reason}); skipped.", stacklevel=3)
      return
    aside, n = f"{path}.corrupt", 1
    while os.path.exists(aside):
      aside, n = f"{path}.corrupt{n}", n + 1
    warnings.warn(
        f"Checkpointer: {path} failed verification ({reason}); moved to {aside}.", stacklevel=3
    )
    os.replace(path, aside)
    if self._manager is not None:
      self._manager.reload()

  def latest_verified(self, *, collective: bool = True) -> int | None:
    """The newest checkpoint that passes verification; failed newer ones are quarantined.

    Args:
      collective: in a multi-process run, process 0 verifies and all processes get its
        answer (every process must call this). False: verify locally, move nothing.

    Returns:
      The epoch, or None if no checkpoint is intact.
    """
    self.wait()
    if collective and jax.process_count() > 1:
      from jax.experimental import multihost_utils

      epoch = self._latest_verified(move=True) if jax.process_index() == 0 else None
      epoch = int(multihost_utils.broadcast_one_to_all(np.int32(-1 if epoch is None else epoch)))
      if self._manager is not None:
        self._manager.reload()
      return None if epoch < 0 else epoch
    return self._latest_verified(move=collective)

  def _latest_verified(self, *, move: bool) -> int | None:
    legacy = self._legacy()
    for epoch in reversed(self.epochs()):
      reason = None if legacy else verify_checkpoint(self.path(epoch))
      if reason is None:
        if legacy:
          warnings.warn(
              f"Checkpointer: {self.path(epoch)} has no checksums (written before cnnjax "
              "kept them); restoring it unverified.",
              stacklevel=4,
          )
        return epoch
      if move:
        self.quarantine(epoch, reason)
    return None

  def save(self, epoch: int, state: Any) -> None:
    """Writes ``state`` as the checkpoint of ``epoch``, then its checksums.

    Asynchronous (see the constructor): returns once the arrays are copied off the
    devices (``state`` may then be donated or changed); :meth:`wait` waits for the files.
    """
    self.wait()
    try:
      self.manager.save(epoch, args=self._ocp.args.StandardSave(_to_savable(state)), force=True)
    except Exception as e:
      raise self._write_error(epoch, e) from e
    if not self._asynchronous:
      self._finish(epoch)
      return
    self._writer = threading.Thread(
        target=self._finish_in_background, args=(epoch,), name=f"cnnjax-checkpoint-{epoch}"
    )
    self._writer.start()

  def _finish(self, epoch: int) -> None:
    try:
      self.manager.wait_until_finished()
      if jax.process_index() == 0:
        _write_checksums(self.path(epoch))
    except Exception as e:
      raise self._write_error(epoch, e) from e
    _sync(f"cnnjax.train.Checkpointer.save.{epoch}")

  def _write_error(self, epoch: int, error: Exception) -> Exception:
    """``error`` of a failed save as one line naming the checkpoint (a lost peer of a
    multi-process run is left as it is, for the training loop to recognise)."""
    from cnnjax.train.sharding import is_peer_failure

    if is_peer_failure(error) or isinstance(error, CheckpointError):
      return error
    reason, code = _write_reason(error)
    written = CheckpointWriteError(
        f"Checkpointer.save: could not write {self.path(epoch)}: {reason}."
    )
    written.errno = code
    return written

  def _finish_in_background(self, epoch: int) -> None:
    try:
      self._finish(epoch)
    except BaseException as e:  # raised by wait(), in the caller's thread
      self._error = e

  def wait(self) -> None:
    """Waits for a background save to finish; raises what it raised, if anything."""
    writer, self._writer = self._writer, None
    if writer is not None:
      writer.join()
    error, self._error = self._error, None
    if error is not None:
      raise error

  def restore(self, epoch: int, target: Any) -> Any:
    """Reads the checkpoint of ``epoch`` into the structure, dtypes and shardings of ``target``.

    Args:
      epoch: a finished checkpoint's epoch (see :meth:`epochs`).
      target: a pytree like the saved one (e.g. a freshly initialised, placed state).

    Returns:
      The restored pytree, placed like ``target``.

    Raises:
      CheckpointError: no such checkpoint, it fails verification, or Orbax cannot read it
        into ``target`` (the message is one line).
    """
    if epoch not in self.epochs():
      raise CheckpointError(
          f"Checkpointer.restore: epoch got {epoch!r}; expected one of the complete "
          f"checkpoints {self.epochs()} in {self.directory}."
      )
    reason = self.verify(epoch)
    if reason is not None:
      raise CheckpointError(
          f"Checkpointer.restore: {self.path(epoch)} failed verification ({reason})."
      )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        _to_savable(target),
    )
    try:
      restored = self.manager.restore(epoch, args=self._ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax/tensorstore: structure, shape, or unreadable files
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      raise CheckpointError(
          f"Checkpointer.restore: {self.path(epoch)} could not be read into the target state "
          f"({type(e).__name__}: {first[:300]})."
      ) from e
    return _from_savable(restored, target)

  def close(self, *, quiet: bool = False) -> None:
    """Waits for a background save, then releases Orbax's resources (its threads are
    shut down even when the save failed).

    Args:
      quiet: do not raise a failed save's error (the caller is already on its way out
        with another one).

    Raises:
      CheckpointError: the background save failed (unless ``quiet``).
    """
    errors = []
    try:
      self.wait()
    except Exception as e:
      errors.append(e)
    manager, self._manager = self._manager, None
    if manager is not None:
      for step in (manager.wait_until_finished, manager.close):
        try:
          step()
        except Exception as e:  # already raised by wait(), or Orbax's own shutdown
          errors.append(e)
    if errors and jax.process_count() == 1:
      try:
        _release_orphaned_waiters()
      except Exception as e:  # a workaround must not hide the save's own error
        warnings.warn(
            f"Checkpointer.close: could not release Orbax's waiting threads "
            f"({type(e).__name__}: {e}); the process may wait for them at exit.",
            stacklevel=2,
        )
    if errors and not quiet:
      raise errors[0]
