"""The LSTM's gate arithmetic on the CPU as compiled kernels (abcjax/csrc/lstm_cpu_kernels.cc),
called through XLA's FFI from inside abcjax.lstm's scans, one call per time step and direction.

XLA:CPU runs a step's gate arithmetic as about ten small kernels, several single-threaded, with a
thread-pool round trip each; these do it in one vectorized pass on every core. `pip install`
compiles them into abcjax/_lstm_cpu_kernels*.so (setup.py). Where that could not be done (no C++
compiler), or with ABCJAX_CPU_KERNELS=off, abcjax runs the same arithmetic as XLA's kernels, and
`status()` says which is in use (`abcjax bench` reports it). The sampler's one-character step uses
a third kernel, the cell over independent rows.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import os
import pathlib

import jax
import jax.numpy as jnp

from abcjax.errors import AbcjaxError
from abcjax.shard_types import as_varying, typed_alike, varying_axes

ENV_VARIABLE = "ABCJAX_CPU_KERNELS"
CHOICES = ("on", "off")
LIBRARY_STEM = "_lstm_cpu_kernels"
SOURCE = pathlib.PurePath("csrc/lstm_cpu_kernels.cc")  # in the package, built by setup.py
STALE_BUILD = "stale build"  # how status() begins its reason for a library built from other source
_FORWARD_TARGET = "abcjax_lstm_forward_step"
_BACKWARD_TARGET = "abcjax_lstm_backward_step"
_CELL_TARGET = "abcjax_lstm_cell_step"


PACKAGE_DIRECTORY = pathlib.Path(__file__).parent


def status(environ: dict[str, str] | None = None, directory: pathlib.Path | None = None) -> str:
    """ "on", or "off (why)": ABCJAX_CPU_KERNELS=off, or no loadable library of the same source in
    `directory` (default: the package's)."""
    environ = os.environ if environ is None else environ
    directory = PACKAGE_DIRECTORY if directory is None else directory
    choice = environ.get(ENV_VARIABLE, "on")
    if choice not in CHOICES:
        raise AbcjaxError(f"{ENV_VARIABLE}={choice!r} is not one of {', '.join(CHOICES)}: unset it, or pick one")
    if choice == "off":
        return f"off ({ENV_VARIABLE}=off)"
    problem = _load(directory)
    return f"off ({problem})" if problem else "on"


def in_use() -> bool:
    """Whether abcjax.lstm's fused LSTM calls these kernels when it runs on the CPU."""
    return status() == "on"


@functools.cache
def _load(directory: pathlib.Path) -> str | None:
    """Loads the library in `directory` and registers its three handlers with XLA, once; what went
    wrong, or None.

    A library built from other source than `directory`'s csrc/ is not used: an editable install
    keeps its library when a pull changes the source, and the Python side of a change may rely on
    the new kernels' behaviour.
    """
    candidates = [directory / f"{LIBRARY_STEM}{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    found = [path for path in candidates if path.exists()]
    reinstall = f"pip install -e . in {directory.parent}"
    if not found:
        return f"not built: reinstall abcjax where a C++ compiler is installed ({reinstall})"
    try:
        library = ctypes.CDLL(str(found[0]))
    except OSError as error:
        return f"{found[0].name} does not load ({error}): reinstall abcjax"
    if _built_from(library) != _source_sha256(directory):
        return f"{STALE_BUILD}: {found[0].name} was built from other source than {SOURCE}: rebuild it ({reinstall})"
    symbols = {
        _FORWARD_TARGET: "AbcjaxLstmForwardStep",
        _BACKWARD_TARGET: "AbcjaxLstmBackwardStep",
        _CELL_TARGET: "AbcjaxLstmCellStep",
    }
    for target, symbol in symbols.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return None


def _built_from(library: ctypes.CDLL) -> str | None:
    """The SHA-256 of the source the library was built from; None for one built before it said."""
    try:
        built_from = library.AbcjaxLstmKernelsSource
    except AttributeError:
        return None
    built_from.restype = ctypes.c_char_p
    return built_from().decode()


def _source_sha256(directory: pathlib.Path) -> str | None:
    """The SHA-256 of the kernels' source next to the library, as setup.py computes it."""
    try:
        return hashlib.sha256((directory / SOURCE).read_bytes()).hexdigest()
    except OSError:
        return None


def _call(
    target: str,
    result_shapes: list[tuple[int, ...]],
    operands: list,
    aliases: dict[int, int],
    vmap_method: str = "sequential",
) -> list:
    """The FFI call on float32 (and int32 step) operands, its results typed for shard_map like its
    operands: an FFI call's results get no shard_map type of their own. Under jax.vmap, each example
    is its own call (`sequential`), or one call takes the whole batch as leading axes
    (`broadcast_all`, for a kernel whose rows are independent)."""
    operands = typed_alike(*operands)
    varying = varying_axes(operands[0])
    results = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in result_shapes]
    call = jax.ffi.ffi_call(target, results, input_output_aliases=aliases, vmap_method=vmap_method)
    outputs = call(*operands)
    return [as_varying(output, varying) for output in outputs]


def forward_step(recurrent, step, cell, hidden, gates, outputs, cells, previous_hiddens):
    """Step `step` of the forward scan, in place in the four buffers.

    recurrent [4H, B] (W^T h), cell and hidden [H, B] -> (gates, outputs, cells, previous_hiddens,
    new cell, new hidden). Row `step` of gates [T, B, 4H] holds the gate inputs x W_in + b and comes
    back holding the activations, feature-major ([4H, B]); the step writes its hidden state into
    outputs [T, B, H], its cell into cells [T, H, B] and the incoming hidden state into
    previous_hiddens [H, T, B]. The new cell and hidden state take the incoming ones' memory
    (aliased), so the scan does not copy its carry at every step.
    """
    units, batch = cell.shape
    buffers = [gates, outputs, cells, previous_hiddens]
    shapes = [buffer.shape for buffer in buffers] + [(units, batch), (units, batch), (4 * units, batch)]
    operands = [recurrent, step.astype(jnp.int32), cell, hidden, *buffers]
    *results, _scratch = _call(_FORWARD_TARGET, shapes, operands, {4: 0, 5: 1, 6: 2, 7: 3, 2: 4, 3: 5})
    return tuple(results)


def backward_step(d_outputs, step, d_hidden, d_cell, cells, initial_cell, buffer):
    """Step `step` of the backward scan, in place in `buffer`.

    d_outputs [T, B, H], the gradients carried from step + 1 [H, B], cells [T, H, B] and the first
    step's incoming cell [H, B] -> (buffer, d_gates [4H, B], gradient of the incoming cell [H, B]).
    Row `step` of buffer [T, 4H, B] holds the step's activations and comes back holding the gate
    gradients batch-major ([B, 4H]). The incoming cell's gradient takes the carried one's memory.
    """
    units, batch = d_cell.shape
    shapes = [buffer.shape, (4 * units, batch), (units, batch), (units, batch)]
    operands = [d_outputs, step.astype(jnp.int32), d_hidden, d_cell, cells, initial_cell, buffer]
    *results, _scratch = _call(_BACKWARD_TARGET, shapes, operands, {6: 0, 3: 2})
    return tuple(results)


def cell_step(gates, cell):
    """The LSTM cell of the sampler's step for independent rows, batch-major: gates [..., 4H] (the
    pre-activations) and cell [..., H] -> (new cell, new hidden). Vmapped, it is one call for all
    the rows."""
    return tuple(_call(_CELL_TARGET, [cell.shape, cell.shape], [gates, cell], {}, vmap_method="broadcast_all"))
