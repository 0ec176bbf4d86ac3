"""One `abcjax train` per workdir: a second one on the same workdir is refused, naming the first.

Two runs writing one workdir would interleave checkpoints and metrics and delete each other's
partial saves. `train` holds an operating-system lock (`filelock`: flock on Linux and macOS) on
WORKDIR/train.lock for its whole run; the system releases it when the process ends, however it
ends. Beside it, WORKDIR/train.lock.holder names the holder (host and process id) for the message
a second run gets; a run that finds that file while it could take the lock knows that its holder
died without cleaning up, and says that it takes over.

In a multi-process run, process 0 holds the lock for all of them, and all of them stop if it
cannot. A gs:// workdir is not locked: Cloud Storage has no locks, so keep one run per gs:// workdir.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Iterator

import filelock
import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from abcjax import storage
from abcjax.errors import AbcjaxError
from abcjax.metrics import say

LOCK_NAME = "train.lock"
HOLDER_NAME = "train.lock.holder"


@contextlib.contextmanager
def holding(workdir: epath.Path) -> Iterator[None]:
    """Holds `workdir`'s lock for the block (process 0 of a run, local workdirs); refuses a held one."""
    lock, error = None, None
    if jax.process_index() == 0 and not storage.is_remote(workdir):
        lock = filelock.FileLock(str(workdir / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            error = AbcjaxError(
                f"{workdir} is in use by another abcjax train ({_holder(workdir) or 'holder unknown'}): "
                "wait for it to end or stop it, or give this run another --workdir"
            )
        except OSError as failure:
            error = AbcjaxError(f"cannot lock {workdir / LOCK_NAME} ({failure.strerror}): check that it is writable")
    if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(np.int32(error is None)):
        error = error or AbcjaxError(f"process 0 could not lock {workdir}: see its error")
    if error is not None:
        raise error
    if lock is None:
        yield
        return
    try:
        _claim(workdir)
        yield
    finally:
        (workdir / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()


def _claim(workdir: epath.Path) -> None:
    """Names this process as the holder, noting a holder that died without releasing the workdir."""
    left = _holder(workdir)
    if left:
        say(f"note: taking over {workdir} from an abcjax train that ended without releasing it ({left})")
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    storage.write_text_atomically(
        workdir / HOLDER_NAME, f"pid {os.getpid()} on host {socket.gethostname()}, since {started}\n", "the lock holder"
    )


def _holder(workdir: epath.Path) -> str | None:
    try:
        return (workdir / HOLDER_NAME).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
