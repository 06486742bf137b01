"""One way to write a JSON document that a crash cannot leave half written (manifests, checkpoints)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = ["check_writable", "is_local", "local_path", "read_json", "write_json_atomic"]


def local_path(path: ObjectStoragePath) -> str | None:
    """The operating-system path of a ``file://`` storage path; ``None`` for other schemes."""
    protocol = getattr(path, "protocol", "") or ""
    if protocol in ("file", "local", ""):
        return str(getattr(path, "path", None) or path)
    return None


def is_local(path: ObjectStoragePath) -> bool:
    """True for a path on the local file system (``file://``)."""
    return local_path(path) is not None


def write_json_atomic(
    path: ObjectStoragePath, document: Any, *, indent: int | None = None, compact: bool = False
) -> str:
    """Write ``document`` as JSON to ``path`` so that readers see the old or the new file, never a part.

    Local files are written to a temporary name beside the target, flushed, fsynced and renamed over it
    (the folder is fsynced too). Object stores get one whole-object ``PUT``, which is atomic there.
    Returns the path as text.

    :param indent: as :func:`json.dumps`.
    :param compact: no spaces after separators, keys sorted (checkpoints).
    """
    if compact:
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    else:
        text = json.dumps(document, indent=indent, default=str)
    payload = text.encode("utf-8")
    local = local_path(path)
    if local is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.write(payload)
        return str(path)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    temporary = f"{local}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, local)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    _fsync_dir(os.path.dirname(local))
    return str(path)


def check_writable(folder: ObjectStoragePath) -> None:
    """Create ``folder`` and write, then delete, a small probe file in it.

    Tasks call it before any job exists, so that a results location that cannot be written (a missing
    bucket, no permission, a read-only disk) fails the task at once instead of after the work was done.

    :raises OSError: naming the folder and the storage's own reason.
    """
    probe = folder / f".sfbulk-write-check-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as handle:
            handle.write(b"ok")
        probe.unlink()
    except Exception as err:
        raise OSError(f"the results folder {folder} cannot be written: {err}") from err


def read_json(path: ObjectStoragePath) -> Any:
    """The JSON document at ``path``; ``None`` when the file is missing or empty."""
    try:
        with path.open("rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    return json.loads(raw) if raw.strip() else None


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
