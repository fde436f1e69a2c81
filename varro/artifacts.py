"""Content-addressed files under the data directory.

Large outputs (token ids, log-probs, raw feed payloads) are stored once under
their sha256 and named from events by `ArtifactRef`. Writes are atomic (temp
file, fsync, rename), so a crash leaves either the whole file or nothing, and
reads verify the hash so a corrupted file is an error, not silent bad data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from events.errors import PermanentError
from events.ids import sha256_hex
from events.schema import ArtifactRef
from varro.integrity import IntegrityError


class ArtifactError(PermanentError, RuntimeError):
    """An artifact is missing or its bytes do not match its recorded hash."""


class ArtifactCorrupted(IntegrityError, ArtifactError):
    """An artifact's bytes do not match its name: permanent, never retried."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / "artifacts" / sha256[:2] / sha256

    def put(self, data: bytes, kind: str) -> ArtifactRef:
        digest = sha256_hex(data)
        target = self.path(digest)
        if not self._intact(target, digest):  # missing, or rotted since: these bytes repair it
            atomic_write(target, data)
        return ArtifactRef(sha256=digest, size=len(data), kind=kind)

    @staticmethod
    def _intact(target: Path, digest: str) -> bool:
        try:
            return sha256_hex(target.read_bytes()) == digest
        except FileNotFoundError:
            return False

    def get(self, ref: ArtifactRef | str) -> bytes:
        digest = ref if isinstance(ref, str) else ref.sha256
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"artifact {digest} is missing: no file {target}") from None
        actual = sha256_hex(data)
        if actual != digest:
            raise ArtifactCorrupted(target, digest, actual, what="artifact")
        return data

    def exists(self, ref: ArtifactRef | str) -> bool:
        return self.path(ref if isinstance(ref, str) else ref.sha256).exists()
