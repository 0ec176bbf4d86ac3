"""Makes glibc's malloc keep and reuse freed host memory, so XLA:CPU steps stop page-faulting.

XLA:CPU allocates each execution's temporaries afresh, from one of its pool threads: about 194 MB
per default-model train step. glibc serves an allocation that large, on a thread other than the
main one, with a fresh mmap and returns it with munmap when the step ends, so the next step touches
about 50,000 new pages again, each a page fault: about 15% of a step on a 2-core CPU. With one
malloc arena, no mmap and no trimming, glibc keeps the freed block and hands it back next step.

The cost: memory freed after the peak is kept by the process rather than returned to the system.
ABCJAX_HOST_ALLOCATOR=default leaves glibc's settings alone. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

from abcjax.errors import AbcjaxError

ENV_VARIABLE = "ABCJAX_HOST_ALLOCATOR"
CHOICES = ("reuse", "default")
# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: the largest top of the heap kept, in bytes
_in_effect = "default"  # what configure_host_allocator applied to this process


def configure_host_allocator(environ: dict[str, str] | None = None) -> str:
    """Applies ABCJAX_HOST_ALLOCATOR (default "reuse") and returns what is in effect.

    Must run before JAX starts its CPU thread pools (before the first computation), because a
    thread keeps the malloc arena it was first given.
    """
    global _in_effect
    environ = os.environ if environ is None else environ
    choice = environ.get(ENV_VARIABLE, "reuse")
    if choice not in CHOICES:
        raise AbcjaxError(f"{ENV_VARIABLE}={choice!r} is not one of {', '.join(CHOICES)}: unset it, or pick one")
    if choice == "reuse" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
        if all(libc.mallopt(parameter, value) for parameter, value in settings):
            _in_effect = "reuse"
    return _in_effect


def allocator_in_effect() -> str:
    """What configure_host_allocator applied to this process: "reuse", or "default" before or without it."""
    return _in_effect
