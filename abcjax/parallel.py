"""The device mesh and how arrays are placed on it.

Data parallelism with pmap semantics: a 1-D mesh over every device JAX sees, named DATA_AXIS;
parameters are replicated, batches are split along their first dimension. One host today: the
multi-host set-up (jax.distributed) is still to come.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from abcjax.errors import AbcjaxError

DATA_AXIS = "data"
# Where compiled programs are kept between runs; ABCJAX_COMPILATION_CACHE overrides it.
DEFAULT_COMPILATION_CACHE = pathlib.Path.home() / ".cache" / "abcjax" / "xla"


def enable_compilation_cache() -> None:
    """Keeps compiled steps on disk, so a second run of the same config skips XLA compilation."""
    jax.config.update(
        "jax_compilation_cache_dir", os.environ.get("ABCJAX_COMPILATION_CACHE", str(DEFAULT_COMPILATION_CACHE))
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def make_mesh() -> Mesh:
    """A 1-D mesh of all devices, in jax.devices() order."""
    return Mesh(np.array(jax.devices()), (DATA_AXIS,))


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    """Every device takes the same number of rows; say so plainly when the batch does not split."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise AbcjaxError(f"{what}={batch_size} does not split over {devices} devices: use a multiple of {devices}")


def round_up_to_devices(count: int, mesh: Mesh) -> int:
    """The smallest multiple of the device count that holds `count` rows."""
    devices = mesh.devices.size
    return -(-count // devices) * devices


def replicate(tree, mesh: Mesh):
    """Places a tree of host arrays whole on every device."""
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(lambda x: _put(np.asarray(x), sharding), tree)


def shard_rows(array: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Splits a host array along `axis` over the data axis of the mesh."""
    spec = P(*([None] * axis), DATA_AXIS)
    return _put(np.asarray(array), NamedSharding(mesh, spec))


def _put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Every process holds the whole array; each device takes its own slice of it."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
