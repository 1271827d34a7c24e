"""Data parallelism with ``jax.sharding``: one code path for one device or many, one host or many.

A 1-D ``Mesh`` over a ``"data"`` axis holds every device used; batches are sharded along
their leading axis (``P("data")``), parameters, optimizer state and the device-resident
dataset are replicated (``P()``). Under ``jax.jit`` XLA inserts the gradient all-reduce
(and the cross-device BatchNorm statistics), so the step function is written as for one
device. Across hosts, ``jax.distributed.initialize`` joins the processes first; every
process holds the same data and draws the same permutation, so global arrays are built with
``jax.make_array_from_callback`` from identical host copies.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "PeerLostError",
    "batch_sharding",
    "initialize_distributed",
    "is_peer_failure",
    "make_mesh",
    "put_global",
    "replicated",
    "to_host",
]

DATA_AXIS = "data"
_initialized = False


def initialize_distributed(
    enabled: bool | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
  """Joins a multi-process run with ``jax.distributed.initialize`` when asked.

  Args:
    enabled: True: initialise. False: never. None: when any of the three arguments below is
      given or the ``JAX_COORDINATOR_ADDRESS`` environment variable is set.
    coordinator_address: ``HOST:PORT`` of process 0's coordination service, with
      ``num_processes`` and ``process_id``. All three None: JAX detects the cluster
      (SLURM, Open MPI, TPU pods, ``JAX_COORDINATOR_ADDRESS``, ...).
    num_processes: how many processes take part.
    process_id: this process's rank, in ``[0, num_processes)``.

  Returns:
    Whether ``jax.distributed`` is (now) initialised by this module.

  Raises:
    ValueError: only some of the three given, a malformed address or rank, or none given
      and no cluster detected.

  Example:
    >>> initialize_distributed(False)
    False
  """
  global _initialized
  given = {
      "coordinator_address": coordinator_address,
      "num_processes": num_processes,
      "process_id": process_id,
  }
  explicit = any(v is not None for v in given.values())
  if explicit and enabled is False:
    raise ValueError(
        "initialize_distributed: enabled got False with a coordinator address, process "
        "count or id; expected enabled=None or True with them."
    )
  if enabled is None:
    enabled = explicit or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if not enabled or _initialized:
    return _initialized
  if explicit:
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError(
          f"initialize_distributed: got {', '.join(k for k in given if k not in missing)} "
          f"without {', '.join(missing)}; expected all three (--coordinator-address "
          "HOST:PORT --num-processes N --process-id I), or none for cluster detection."
      )
    host, _, port = str(coordinator_address).rpartition(":")
    if not host or not port.isdigit():
      raise ValueError(
          f"initialize_distributed: coordinator_address got {coordinator_address!r}; "
          "expected HOST:PORT such as 127.0.0.1:12345."
      )
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or (num_processes < 1):
      raise ValueError(
          f"initialize_distributed: num_processes got {num_processes!r}; expected a "
          "positive int."
      )
    if (
        isinstance(process_id, bool)
        or not isinstance(process_id, int)
        or not (0 <= process_id < num_processes)
    ):
      raise ValueError(
          f"initialize_distributed: process_id got {process_id!r}; expected an int in "
          f"[0, {num_processes})."
      )
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except RuntimeError as e:
    if "must be called before" not in str(e):
      raise
    raise ValueError(
        "initialize_distributed: JAX already started its backend in this process; expected "
        "the multi-process setup (--distributed, --coordinator-address) before any JAX "
        "computation."
    ) from None
  except ValueError as e:
    if "coordinator_address" in str(e) and not explicit:
      raise ValueError(
          "initialize_distributed: got no coordinator address and detected no cluster "
          "(SLURM, Open MPI, TPU, JAX_COORDINATOR_ADDRESS); expected --coordinator-address "
          "HOST:PORT --num-processes N --process-id I."
      ) from None
    raise
  _initialized = True
  return _initialized


class PeerLostError(RuntimeError):
  """A multi-process run lost one of its processes (a collective or barrier failed)."""


# What the CPU collectives (Gloo) and the coordination service say when a peer is gone.
_PEER_SIGNS = (
    "Gloo",
    "Connection closed by peer",
    "Connection reset",
    "UNAVAILABLE",
    "coordination service",
    "DEADLINE_EXCEEDED",
    "barrier",
)


def is_peer_failure(error: BaseException) -> bool:
  """Whether ``error``, raised in a multi-process run, says another process is gone."""
  if jax.process_count() < 2:
    return False
  text = f"{type(error).__name__}: {error}"
  return any(sign in text for sign in _PEER_SIGNS)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the ``"data"`` axis.

  Args:
    num_devices: with one process, use the first this many local devices (None: all). In a
      multi-process run all global devices are used and this must be None or their count.

  Returns:
    A ``jax.sharding.Mesh`` with axis names ``("data",)``.

  Example:
    >>> make_mesh(1).axis_names
    ('data',)
  """
  devices = jax.devices()
  if num_devices is not None:
    if not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices):
      raise ValueError(
          f"make_mesh: num_devices got {num_devices!r}; expected None or an int in "
          f"[1, {len(devices)}] (the devices visible to JAX)."
      )
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError(
          f"make_mesh: num_devices got {num_devices!r}; expected None or {len(devices)} "
          "(all global devices) in a multi-process run."
      )
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of arrays copied on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The sharding of batches: leading axis split over the ``"data"`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def put_global(tree: Any, sharding: NamedSharding) -> Any:
  """Places a pytree of host arrays (the same on every process) with ``sharding``.

  Works unchanged with one process (it is then ``jax.device_put``) and with many, where
  each process supplies the shards its devices hold.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """NumPy copies of replicated arrays, from this process's first shard.

  Unlike ``jax.device_get`` this also works in multi-process runs, where a global array is
  not fully addressable from one process (every replica holds the same values).
  """

  def get(x):
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))
    return x

  return jax.tree.map(get, tree)
