"""Content-addressed files under the data directory: the default store (`varro.stores`).

Large outputs (token ids, log-probs, raw feed payloads) are stored once under
their sha256 and named from events by `ArtifactRef`. Writes are atomic (temp
file, fsync, rename), so a crash leaves either the whole file or nothing, and
reads verify the hash so a corrupted file is an error, not silent bad data.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from events.errors import PermanentError
from events.ids import sha256_hex
from events.schema import ArtifactRef, CheckpointRef
from varro.integrity import IntegrityError, file_sha256


class ArtifactError(PermanentError, RuntimeError):
    """An artifact is missing or its bytes do not match its recorded hash."""


class ArtifactCorrupted(IntegrityError, ArtifactError):
    """An artifact's bytes do not match its name: permanent, never retried."""


class DiskWriteError(ArtifactError):
    """A file could not be written: the message names the path and the cause (ENOSPC, EACCES, EROFS...).

    Permanent: a full disk or a read-only directory stays so until a person acts,
    and retrying a whole training epoch against it only repeats the work.
    """

    def __init__(self, path: str | os.PathLike[str], cause: int | None, detail: str = ""):
        self.path, self.errno = Path(path), cause
        name = errno.errorcode.get(cause, "") if cause else ""
        reason = f"{name} ({os.strerror(cause)})" if cause else "unknown cause"
        super().__init__(f"cannot write {self.path}: {reason}" + (f"; {detail}" if detail else ""))


def write_cause(path: Path, exc: BaseException, needed: int = 0) -> int | None:
    """The errno behind a failed write of `path`: the exception's own, else what the file system
    says now (a writer like MLX's raises a bare RuntimeError with no errno)."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    directory = path if path.is_dir() else path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    try:
        stats = os.statvfs(directory)
    except OSError as err:
        return err.errno
    if stats.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if not os.access(directory, os.W_OK):
        return errno.EACCES
    if stats.f_bavail * stats.f_frsize <= max(needed, stats.f_frsize):
        return errno.ENOSPC
    return None


_CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half.

    A failed write raises DiskWriteError naming `path` and the cause; no temporary is left.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise DiskWriteError(path, write_cause(path, exc, len(data))) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(directory: str | os.PathLike[str]) -> Path:
    """`directory`, created if needed, after proving a file can be written in it (DiskWriteError if not).

    A probe write is the only honest test: permission bits say nothing of a
    read-only mount, and root passes every `os.access` check.
    """
    root = Path(directory).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".varro-write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DiskWriteError(root, write_cause(root, exc), "Varro's data directory must be writable") from None
    return root


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """The data directory as a `varro.stores.Store`: artifacts under ``artifacts/``, checkpoints under
    ``checkpoints/`` (where `save_checkpoint` writes them), links under ``training/checkpoints/``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @property
    def checkpoint_root(self) -> Path:
        return self.root

    def describe(self) -> str:
        return f"data directory {self.root}"

    def path(self, sha256: str) -> Path:
        return self.root / "artifacts" / sha256[:2] / sha256

    def put(self, data: bytes, kind: str) -> ArtifactRef:
        digest = sha256_hex(data)
        target = self.path(digest)
        if not self._intact(target, digest):  # missing, or rotted since: these bytes repair it
            atomic_write(target, data)
        return ArtifactRef(sha256=digest, size=len(data), kind=kind)

    def put_file(self, source: Path, sha256: str, kind: str) -> ArtifactRef:
        """`source`'s bytes as an artifact, copied by streaming (a headline file may be large);
        ArtifactError, nothing stored, when they no longer hash to `sha256` (the file changed since it was read)."""
        target = self.path(sha256)
        if self._intact(target, sha256):
            return ArtifactRef(sha256=sha256, size=target.stat().st_size, kind=kind)
        tmp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise ArtifactError(f"{source} changed since it was read (sha256 {sha256[:12]}...): import it again")
            os.replace(tmp, target)
            tmp = None
            fsync_dir(target.parent)
        except OSError as exc:
            raise DiskWriteError(target, write_cause(target, exc)) from exc
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return ArtifactRef(sha256=sha256, size=size, kind=kind)

    @staticmethod
    def _intact(target: Path, digest: str) -> bool:
        try:
            return file_sha256(target) == digest  # in blocks: a headline file may be large
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

    # ------------------------------------------------------------ checkpoints
    # (varro.checkpoints imports mlx: imported here only when a checkpoint is handled,
    # so the forking fetch worker's parent never loads it)

    def store_checkpoint(self, ref: CheckpointRef) -> CheckpointRef:
        return ref  # save_checkpoint already renamed it into checkpoints/ under this root

    def checkpoint_dir(self, sha256: str) -> Path | None:
        path = self.root / "checkpoints" / sha256
        return path if path.is_dir() else None

    def release_checkpoint(self, sha256: str) -> None:
        pass  # nothing is evicted from the data directory

    def publish(self, ref: CheckpointRef, ns: str, date: str, *, rolling: bool) -> None:
        from varro.checkpoints import publish

        publish(ref, self.root, ns, date, rolling=rolling)

    def materialise(self, ref: CheckpointRef, data_dir: Path) -> Path:
        return self.root / "checkpoints" / ref.sha256
