"""How values are typed under shard_map: which mesh axes a value differs over from device to device.

Primitives that JAX does not type for shard_map (cuDNN's RNN, FFI calls) need their operands and
results typed by hand, or JAX mixes up per-device values and values equal on every device.
"""

from __future__ import annotations

import jax


def varying_axes(value) -> frozenset:
    """The shard_map axes over which `value` differs from device to device (none outside shard_map)."""
    return jax.typeof(value).manual_axis_type.varying


def as_varying(value, axes: frozenset):
    """`value` typed as differing from device to device over `axes` (it may be typed over fewer)."""
    missing = tuple(sorted(axes - varying_axes(value)))
    return jax.lax.pcast(value, missing, to="varying") if missing else value


def typed_alike(*values) -> tuple:
    """`values`, each typed as differing from device to device over every axis any of them does."""
    axes = frozenset().union(*map(varying_axes, values))
    return tuple(as_varying(value, axes) for value in values)
