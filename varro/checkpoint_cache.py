"""A bounded local directory of checkpoints fetched from an object store.

A worker reading checkpoints from a bucket keeps the ones it fetched here, so a
model is downloaded once per machine and `mlx_lm.load` reads a local directory.
The layout is a data directory's checkpoint store (``checkpoints/<sha256>``), so
`varro.checkpoints.save_checkpoint` writes a new checkpoint straight into it.

The cache holds at most `limit_bytes`: after a checkpoint is added, the least
recently used ones are removed until it fits again, except those in use. "In
use" is a shared `flock` on the checkpoint's lock file, held from the moment a
reader asks for it until it lets go (a model worker keeps it for as long as the
model is loaded); eviction takes the lock exclusively without waiting and skips
the checkpoint when it cannot, so a process never loses a directory it reads,
whichever process on the machine evicts. A cache whose checkpoints are all in
use grows past the limit rather than break a reader.

Directories appear by one rename of a complete download, so a reader sees a
whole checkpoint or none, and what it reads is still hashed against the
recorded manifest before it is used (`varro.model.cache.ModelCache.load`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

import structlog

log = structlog.get_logger("varro.checkpoint_cache")


class CheckpointCache:
    def __init__(self, root: Path, limit_bytes: int):
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self._pins: dict[str, list[int]] = {}

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def path(self, sha256: str) -> Path:
        return self.checkpoints / sha256

    def _lock_path(self, sha256: str) -> Path:
        return self.root / "locks" / f"{sha256}.lock"

    def pin(self, sha256: str) -> None:
        """Keep `sha256` from eviction (by any process) until `unpin`; marks it most recently used.

        Pin before looking for the directory: an eviction that already holds the
        lock finishes first, and the reader then finds the directory gone.
        """
        lock = self._lock_path(sha256)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        self._pins.setdefault(sha256, []).append(fd)
        self.touch(sha256)

    def unpin(self, sha256: str) -> None:
        fds = self._pins.get(sha256)
        if not fds:
            return
        os.close(fds.pop())  # closing the descriptor drops its lock
        if not fds:
            del self._pins[sha256]

    def pinned(self, sha256: str) -> bool:
        """Whether this process holds `sha256` in use."""
        return bool(self._pins.get(sha256))

    def touch(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):  # not fetched yet
            os.utime(self.path(sha256))

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_dir()

    def entries(self) -> list[tuple[float, int, str]]:
        """(last used, bytes, sha256) of every cached checkpoint, least recently used first."""
        out = []
        for path in self.checkpoints.glob("*") if self.checkpoints.is_dir() else []:
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                used = path.stat().st_mtime
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            except FileNotFoundError:  # evicted meanwhile by another process
                continue
            out.append((used, size, path.name))
        return sorted(out)

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def trim(self) -> list[str]:
        """Evict least recently used checkpoints not in use until the cache fits; the evicted hashes."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        evicted = []
        for _, size, sha in entries:
            if total <= self.limit_bytes:
                break
            if self._evict(sha):
                total -= size
                evicted.append(sha)
        if total > self.limit_bytes:
            log.warning("checkpoint cache over its limit: the rest is in use", bytes=total, limit=self.limit_bytes)
        return evicted

    def _evict(self, sha256: str) -> bool:
        if self.pinned(sha256):
            return False
        lock = self._lock_path(sha256)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use by another process
            aside = self.checkpoints / f".evict-{sha256}-{os.getpid()}"
            try:
                os.rename(self.path(sha256), aside)
            except FileNotFoundError:
                return False
            shutil.rmtree(aside, ignore_errors=True)
            log.info("checkpoint evicted from cache", sha256=sha256)
            return True
        finally:
            os.close(fd)
