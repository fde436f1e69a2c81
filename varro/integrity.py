"""Failures that another attempt cannot fix, and the file check that raises the commonest one.

Whatever Varro reads from disk to train or generate (checkpoint weights,
optimizer and trainer state, artifacts) is named in the log by its sha256, and
is hashed again each time it is read. Bytes that do not match are corrupted:
retrying the job would read the same bytes, so workers fail such a job at once
instead of retrying it as if it were transient (see `workers.model_worker`).

This module imports nothing heavy (no mlx), so the forking fetch worker can
tell a permanent failure without loading the model stack.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from events.errors import PermanentError

__all__ = ["IntegrityError", "PermanentError", "file_sha256", "verify_file"]


class IntegrityError(PermanentError, RuntimeError):
    """A file's bytes do not match the sha256 recorded for them."""

    def __init__(self, path: str | os.PathLike[str], expected: str | None, actual: str, what: str = "file"):
        """`expected` None: the file is not part of what was recorded; `actual` "missing": it is gone.

        `path` may be an object store URL (``s3://bucket/key``): it is named as given."""
        self.path, self.expected, self.actual = Path(path), expected, actual
        self.location = os.fspath(path)
        if expected is None:
            problem = f"it hashes to sha256 {actual}, but no such file is recorded (it is not part of the checkpoint)"
        else:
            found = "is missing" if actual == "missing" else f"hashes to sha256 {actual}"
            problem = f"it {found}, but sha256 {expected} is recorded for it"
        super().__init__(
            f"corrupted {what} {self.location}: {problem}; restore it from a backup, or re-create it by re-running "
            "the job that wrote it with --force"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: str) -> Path:
    """`path`, after checking that its bytes hash to `expected`; `IntegrityError` otherwise."""
    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        actual = "missing"
    if actual != expected:
        raise IntegrityError(path, expected, actual)
    return Path(path)
