"""The device mesh and how arrays are laid out on it.

Training is data-parallel over the mesh axis ``"data"``: each batch is split
along its first dimension, parameters and optimiser state are replicated.  One
device is the degenerate one-element mesh; the code is the same.  In a
multi-host run (after :func:`jax.distributed.initialize`) each process feeds its
own share of the global batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


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
