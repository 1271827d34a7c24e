"""One writer per run directory: an exclusive lock on ``<run>/.lock``.

The lock is a ``fcntl.flock`` on the file, held for as long as the writing process keeps
it open: it is released on :meth:`RunLock.release` and by the kernel when the process
dies, however it dies. The file also names its holder (PID, host, start time) for the
message a second writer gets. A file left by a dead process is a stale lock: the next
writer takes it over and :attr:`RunLock.stale` says whose it was. Where the file
system has no ``flock`` (some network file systems), the PID in the file decides: a
lock naming a running process on this host is held, any other is stale.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from typing import Any

from cnnjax.train.jsonfiles import loads

__all__ = ["RunInUseError", "RunLock"]

LOCK_FILE = ".lock"


class RunInUseError(ValueError):
  """Another process is writing the run directory."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


class RunLock:
  """An exclusive, non-blocking lock on a run directory.

  Args:
    directory: the run directory (created if missing).

  Example:
    >>> import tempfile
    >>> run = tempfile.TemporaryDirectory()
    >>> with RunLock(run.name):  # the only writer of the run directory
    ...   try:
    ...     RunLock(run.name).acquire()  # a second writer is refused
    ...   except RunInUseError as e:
    ...     print(type(e).__name__)
    RunInUseError
  """

  def __init__(self, directory: str | os.PathLike[str]):
    self.directory: str = os.path.abspath(os.fspath(directory))
    self.path: str = os.path.join(self.directory, LOCK_FILE)
    self.stale: dict[str, Any] | None = None  # the dead holder whose lock was taken over
    self._fd: int | None = None

  def _holder(self, fd: int) -> dict:
    try:
      os.lseek(fd, 0, os.SEEK_SET)
      data = os.read(fd, 4096)
      holder = loads(data) if data.strip() else {}
    except (OSError, ValueError):  # unreadable, not JSON, nested too deeply: no holder
      return {}
    return holder if isinstance(holder, dict) else {}

  def _in_use(self, holder: dict) -> RunInUseError:
    who = (
        (
            f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
            f"{holder.get('since', '?')}"
        )
        if holder
        else "another process"
    )
    return RunInUseError(
        f"train: out_dir {self.directory!r} is being written by {who} ({self.path}); "
        "expected one writer per run: wait for it to finish, stop it, or use another --out."
    )

  def acquire(self) -> RunLock:
    """Takes the lock, or raises :class:`RunInUseError` naming the holder."""
    import fcntl

    if self._fd is not None:
      return self
    os.makedirs(self.directory, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flock = True
      except BlockingIOError:
        raise self._in_use(self._holder(fd)) from None
      except OSError as e:  # no flock here: fall back on the recorded PID
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
          raise
        flock = False
      previous = self._holder(fd)
      pid = previous.get("pid")
      if isinstance(pid, int) and pid != os.getpid():
        alive = previous.get("host") == socket.gethostname() and _pid_alive(pid)
        if not flock and alive:
          raise self._in_use(previous)
        self.stale = previous  # flock free (or holder dead): its holder is gone
      os.ftruncate(fd, 0)
      os.lseek(fd, 0, os.SEEK_SET)
      os.write(
          fd,
          json.dumps(
              {
                  "pid": os.getpid(),
                  "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              }
          ).encode(),
      )
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd
    return self

  def release(self) -> None:
    """Releases the lock (the file stays, emptied, so no other writer's lock is unlinked)."""
    if self._fd is None:
      return
    with contextlib.suppress(OSError):
      os.ftruncate(self._fd, 0)
    os.close(self._fd)  # closing the descriptor drops the flock
    self._fd = None

  def __enter__(self) -> RunLock:
    return self.acquire()

  def __exit__(self, *exc: object) -> None:
    self.release()
