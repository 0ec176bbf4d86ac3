"""Paths that are local or in Cloud Storage (`gs://BUCKET/...`): workdirs and sampled tunes.

A pod's workers share one workdir only through a bucket, and a spot VM's local disk dies with it,
so the workdir may live in Cloud Storage. `etils.epath`, which Orbax already uses, gives one Path
type for both; this module adds what differs: Cloud Storage has no directories and no cheap
rename, but an upload appears whole or not at all, so a file is replaced by rename locally and by
a plain write there.
"""

from __future__ import annotations

import errno
import importlib.util

from etils import epath

from abcjax.errors import AbcjaxError, first_line


def is_remote(path: str | epath.PathLike) -> bool:
    """True for a URL such as gs://BUCKET/DIR, False for a path on this machine's disk."""
    return "://" in str(path)


def as_path(text: str | epath.PathLike) -> epath.Path:
    """`text` as a Path: a local one made absolute (Orbax requires it), a URL as it is."""
    return epath.Path(text) if is_remote(text) else epath.Path(text).absolute()


def check_reachable(path: epath.Path, what: str) -> None:
    """A one-line error, before any work, when a gs:// path cannot be used; nothing to check locally.

    `what` names the flag for the message, e.g. "--workdir".
    """
    if not is_remote(path):
        return
    text = str(path)
    scheme = text.split("://", 1)[0]
    if scheme != "gs":
        raise AbcjaxError(f"{what} {text}: {scheme}:// is not supported; give a local path or a gs://BUCKET/DIR path")
    if importlib.util.find_spec("gcsfs") is None:
        raise AbcjaxError(f"{what} {text} needs Cloud Storage support: pip install 'abcjax[gcs]'")
    bucket = text[len("gs://") :].split("/", 1)[0]
    if not bucket:
        raise AbcjaxError(f"{what} {text} names no bucket: give gs://BUCKET/DIR")
    try:
        bucket_exists = epath.Path(f"gs://{bucket}").exists()
    except Exception as error:  # credentials, network, permissions: each client library has its own types
        raise AbcjaxError(
            f"cannot reach gs://{bucket} ({first_line(error)}): check the bucket name and your credentials "
            "(gcloud auth application-default login)"
        ) from None
    if not bucket_exists:
        raise AbcjaxError(f"bucket gs://{bucket} does not exist: create it (gcloud storage buckets create) first")


def make_directory(path: epath.Path, what: str) -> None:
    """Creates a local directory and its parents; a Cloud Storage "directory" needs nothing."""
    if is_remote(path):
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AbcjaxError(f"cannot use {path} as {what} ({error.strerror}): give a directory path") from None


def parent_exists(path: epath.Path) -> bool:
    """Whether `path` could be written now: its local directory exists (always, in Cloud Storage)."""
    return is_remote(path) or path.parent.is_dir()


def write_text_atomically(path: epath.Path, text: str, what: str) -> None:
    """Writes `text` to `path` so that a reader sees the old file or the new one, never half of one.

    `what` names the file for the error message, e.g. "the tunebook".
    """
    write_bytes_atomically(path, text.encode("utf-8"), what)


def write_bytes_atomically(path: epath.Path, data: bytes, what: str) -> None:
    """Writes `data` to `path` so that a reader sees the old file or the new one, never half of one."""
    temporary = path if is_remote(path) else path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_bytes(data)
        if temporary != path:
            temporary.replace(path)
    except OSError as error:
        if temporary != path:
            temporary.unlink(missing_ok=True)
        reason = error.strerror or first_line(error)
        raise AbcjaxError(f"cannot write {what} {path} ({reason}): {write_hint(error)}") from None


def write_hint(error: OSError) -> str:
    """What to do about a failed write, by its cause."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "free space on its disk (nothing written before is lost), then run the same command again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check that it is writable"
    return "check that its directory exists and is writable"
