"""The device mesh and how arrays are laid out on it.

Training is data-parallel over the mesh axis ``"data"``: each batch is split
along its first dimension; parameters and optimiser state are replicated, or, with
``train.shard_params``, split over the same axis (:func:`state_shardings`).  One
device is the degenerate one-element mesh; the code is the same.  In a
multi-host run (after :func:`jax.distributed.initialize`) each process feeds its
own share of the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
# Arrays with fewer elements stay replicated under ``train.shard_params``: splitting
# them saves next to nothing (2**14 float32 values are 64 KiB) and costs a collective
# each per step, and small leaves (biases, scalars, step counts) are most leaves.
SHARD_MIN_SIZE = 2 ** 14


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run through JAX's own distributed runtime.

    With no arguments JAX detects the cluster (SLURM, Cloud TPU, ...); otherwise give
    the coordinator's ``host:port`` (process 0's address), the process count and
    this process's id.  On CPU, cross-process collectives go through gloo."""
    # must run before any backend starts; harmless on GPU/TPU hosts
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def shard_spec(shape: Sequence[int], n_devices: int, min_size: int = SHARD_MIN_SIZE) -> PartitionSpec:
    """Where one array of ``shape`` lives under parameter sharding: its largest
    dimension divisible by ``n_devices`` (the first such, on a tie) split over the data
    axis, if it has at least ``min_size`` elements; otherwise replicated.

    The rule reads only the shape, so Adam's ``mu`` and ``nu`` get the layout of the
    parameter they mirror and the optimiser update is elementwise on each device's
    block, with no communication.  An array whose dimensions none divide evenly stays
    replicated rather than padded."""
    if n_devices <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    fits = [(size, -axis) for axis, size in enumerate(shape) if size % n_devices == 0]
    if not fits:
        return PartitionSpec()
    axis = -max(fits)[1]
    return PartitionSpec(*([None] * axis), DATA_AXIS)


def state_shardings(state: Any, mesh: Mesh, *, shard: bool = True,
                    min_size: int = SHARD_MIN_SIZE) -> Any:
    """A pytree of :class:`NamedSharding` for every array leaf of ``state`` (arrays or
    ``jax.ShapeDtypeStruct``): :func:`shard_spec`'s layout over ``mesh``'s data axis
    (FSDP / ZeRO-3: each device stores ``1/n`` of every large parameter and of its
    optimiser state), or, with ``shard=False``, everything replicated.

    The train step (:func:`fusionjax.training.step.make_steps`) takes these as its jit
    in/out shardings, gathers the parameters whole for the forward and backward pass
    and lays the gradients out like them, so each device updates only its blocks; the
    arithmetic is that of the replicated step."""
    n = mesh.devices.size

    def one(leaf):
        spec = shard_spec(np.shape(leaf), n, min_size) if shard else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, state)


def bytes_per_device(tree: Any) -> int:
    """The bytes of ``tree``'s arrays (or ``jax.ShapeDtypeStruct`` with a sharding) on
    each device: a replicated array counts whole, a split one by its block.  The
    layouts of :func:`state_shardings` split evenly, so every device holds as much.

    Read from the shardings, not the buffers: in a multi-process run an array placed
    by ``device_put`` may not list its shards (``addressable_shards`` raises)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        block = leaf.sharding.shard_shape(leaf.shape)
        total += int(np.prod(block, dtype=np.int64)) * leaf.dtype.itemsize
    return total


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` whole, as numpy, on every process.

    An array split over the devices of several processes is not addressable from
    any one of them: it is gathered with
    :func:`jax.experimental.multihost_utils.process_allgather`, a collective, so
    every process must call this (with the same tree) even if only one writes."""
    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)

    return jax.tree.map(one, tree)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A global host batch -> global arrays split over the data axis.

    Every process draws the same global batch (same seed); in a multi-process run
    each keeps its contiguous block of rows, the block its devices hold in a mesh
    ordered by process, so the result equals the single-process batch."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    index, count = jax.process_index(), jax.process_count()
    out = {}
    for k, v in batch.items():
        rows = len(v) // count
        out[k] = jax.make_array_from_process_local_data(sharding, v[index * rows:(index + 1) * rows])
    return out


def place_local_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a global batch (block ``process_index`` of it, as the data
    pipeline reads them) -> global arrays split over the data axis."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
