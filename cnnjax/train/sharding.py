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

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "initialize_distributed",
    "make_mesh",
    "put_global",
    "replicated",
    "to_host",
]

DATA_AXIS = "data"
_initialized = False


def initialize_distributed(enabled: bool | None = None) -> bool:
  """Joins a multi-process run with ``jax.distributed.initialize()`` when asked.

  Args:
    enabled: True: initialise (JAX reads the coordinator address, process count and id from
      the environment or the cluster: SLURM, Open MPI, TPU pods, ...). False: never. None:
      only when the ``JAX_COORDINATOR_ADDRESS`` environment variable is set.

  Returns:
    Whether ``jax.distributed`` is (now) initialised by this module.

  Example:
    >>> initialize_distributed(False)
    False
  """
  global _initialized
  if enabled is None:
    enabled = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if enabled and not _initialized:
    jax.distributed.initialize()
    _initialized = True
  return _initialized


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


def put_global(tree, sharding: NamedSharding):
  """Places a pytree of host arrays (the same on every process) with ``sharding``.

  Works unchanged with one process (it is then ``jax.device_put``) and with many, where
  each process supplies the shards its devices hold.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def to_host(tree):
  """NumPy copies of replicated arrays, from this process's first shard.

  Unlike ``jax.device_get`` this also works in multi-process runs, where a global array is
  not fully addressable from one process (every replica holds the same values).
  """
  def get(x):
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))
    return x

  return jax.tree.map(get, tree)
