"""The device mesh, how arrays are placed on it, and the multi-host set-up.

Data parallelism with pmap semantics: a 1-D mesh over every device of every process, named
DATA_AXIS; parameters are replicated, batches are split along their first dimension.

Several processes (one per host, or several on one machine) join through JAX's own runtime,
`jax.distributed`: each runs the same program on the same inputs, builds the same global mesh, and
feeds only its own devices. Nothing here coordinates processes by other means.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax._src import cloud_tpu_init
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from abcjax.errors import AbcjaxError, first_line

DATA_AXIS = "data"
# Where each setting of a multi-process run is read from when its flag is not given.
DISTRIBUTED_ENV = {
    "coordinator_address": "ABCJAX_COORDINATOR_ADDRESS",
    "num_processes": "ABCJAX_NUM_PROCESSES",
    "process_id": "ABCJAX_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a multi-process run, as `jax.distributed.initialize` takes it."""

    coordinator_address: str  # HOST:PORT of process 0, where JAX's coordination service listens
    num_processes: int
    process_id: int  # 0 .. num_processes - 1


def process_group(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: dict[str, str] | None = None,
) -> ProcessGroup | None:
    """The group the flags give, each one missing taken from its ABCJAX_* variable; None when none is set.

    All three or none: a process that guessed the others would join the wrong run or wait forever.
    """
    environ = os.environ if environ is None else environ
    flags = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    values, sources = {}, {}
    for key, flag in flags.items():
        if flag is not None:
            values[key], sources[key] = flag, f"--{key}"
        elif environ.get(DISTRIBUTED_ENV[key]):
            values[key], sources[key] = environ[DISTRIBUTED_ENV[key]], DISTRIBUTED_ENV[key]
    if not values:
        return None
    missing = [f"--{key} (or {DISTRIBUTED_ENV[key]})" for key in flags if key not in values]
    if missing:
        raise AbcjaxError(
            f"a multi-process run needs --coordinator_address, --num_processes and --process_id together; "
            f"missing {', '.join(missing)}: give all three, or none for one process"
        )
    group = ProcessGroup(
        _check_address(values["coordinator_address"], sources["coordinator_address"]),
        _whole_number(values["num_processes"], sources["num_processes"]),
        _whole_number(values["process_id"], sources["process_id"]),
    )
    if group.num_processes < 1:
        raise AbcjaxError(
            f"{sources['num_processes']} {group.num_processes} must be at least 1: the number of processes started"
        )
    if not 0 <= group.process_id < group.num_processes:
        raise AbcjaxError(
            f"{sources['process_id']} {group.process_id} must be in [0, {group.num_processes}): "
            "each process its own number, 0 on the coordinator's host"
        )
    return group


def _whole_number(value, source: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AbcjaxError(f"{source}={value!r} is not a whole number: give one, e.g. {source}=2") from None


def _check_address(address: str, source: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AbcjaxError(
            f"{source} {address!r} is not HOST:PORT: give process 0's host and a free port on it, e.g. 10.0.0.1:8476"
        )
    return address


def initialize_distributed(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins the other processes of the run through `jax.distributed`; call it before any other JAX use.

    Settings come from the flags or ABCJAX_* variables (see `process_group`); one process needs none.
    With none, a Cloud TPU VM still joins its pod slice: `jax.distributed.initialize()` reads the
    slice's hosts and this host's number from the TPU metadata server (or GKE's TPU_WORKER_*
    variables). JAX sets `running_in_cloud_tpu_vm` at import, from the TPU chips and libtpu it
    finds, without any network call; elsewhere (a laptop, a GPU box) nothing is started.
    On CPU the processes' collectives go over TCP with gloo, JAX 0.10's default
    `jax_cpu_collectives_implementation`.
    """
    group = process_group(coordinator_address, num_processes, process_id)
    if group is None:
        if cloud_tpu_init.running_in_cloud_tpu_vm:
            _join()
    elif group.num_processes > 1:
        _join(**dataclasses.asdict(group))


def _join(**settings) -> None:
    """`jax.distributed.initialize`, its failure (no coordinator answering, a port in use) as one line."""
    try:
        jax.distributed.initialize(**settings)
    except (RuntimeError, ValueError) as error:
        raise AbcjaxError(
            f"could not join the other processes ({first_line(error)}): start every process with the same "
            "--coordinator_address and --num_processes, and check process 0's host and port are reachable"
        ) from None


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh of every device of every process, in jax.devices() order, or of `devices`: the
    compile-only devices of a slice that abcjax compiles for ahead of time (abcjax.tpu_compile).

    jax.devices() lists all processes' devices in the same order on each of them, so every process
    builds the same mesh, and the global batch (`train.batch_size`) is split over all of them.
    """
    return Mesh(np.array(jax.devices() if devices is None else list(devices)), (DATA_AXIS,))


def check_divisible(batch_size: int, mesh: Mesh, what: str) -> None:
    """Every device takes the same number of rows; say so plainly when the batch does not split."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise AbcjaxError(f"{what}={batch_size} does not split over {devices} devices: use a multiple of {devices}")


def round_up(count: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that holds `count` rows."""
    return -(-count // multiple) * multiple


def round_up_to_devices(count: int, mesh: Mesh) -> int:
    """The smallest multiple of the device count that holds `count` rows."""
    return round_up(count, mesh.devices.size)


def replicated(mesh: Mesh) -> NamedSharding:
    """How parameters and the training text are placed: whole on every device."""
    return NamedSharding(mesh, P())


def rows_split(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """How batches are placed: split along `axis` over the data axis of the mesh."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Places a tree of host arrays whole on every device."""
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: _put(np.asarray(x), sharding), tree)


def shard_rows(array: np.ndarray, mesh: Mesh, axis: int = 0) -> jax.Array:
    """Splits a host array along `axis` over the data axis of the mesh."""
    return _put(np.asarray(array), rows_split(mesh, axis))


def _put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Every process holds the whole array; each device takes its own slice of it.

    make_array_from_callback asks only for the slices of this process's devices, so with several
    processes each feeds its own devices from its identical copy, and nothing crosses hosts.
    """
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(tree):
    """Every array of `tree` whole, as numpy, on every process.

    np.asarray cannot read an array whose rows sit on other processes' devices; process_allgather
    assembles it with a collective, so every process must call this at the same point. With one
    process it is np.asarray.
    """
    return multihost_utils.process_allgather(tree, tiled=True)
