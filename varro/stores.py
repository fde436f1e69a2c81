"""Where artifact and checkpoint bytes live: one interface, two backends.

* the data directory (`varro.artifacts.ArtifactStore`), the default: artifacts
  under ``artifacts/``, checkpoints under ``checkpoints/``, and the checkpoint
  links written where the checkpoint is trained;
* an S3-compatible bucket (`varro.bucket.BucketStore`), chosen by
  ``artifacts.url = "s3://bucket/prefix"``, for workers on machines that share
  no filesystem. Checkpoints are read through a bounded local cache
  (`varro.checkpoint_cache`) and the links are written by `varro rebuild` on the
  machine that asks for them.

Either way every object is named by its sha256 and verified when it is read,
and a checkpoint is visible only once all of it is stored. Which backend holds
the bytes is a machine setting (like `data_dir`): it is not recorded with a run
and never enters an event id, so the same day gives the same ids from either.

This module imports no client library, so a bad `artifacts.url` (or boto3
missing) is one clear configuration error before anything is recorded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from events.errors import VarroError
from events.schema import ArtifactRef, CheckpointRef
from varro.config import ConfigError

if TYPE_CHECKING:
    from varro.config import ArtifactsConfig, VarroConfig


class StoreUnavailable(VarroError, RuntimeError):
    """The object store did not answer in time or failed a request: the message names the object.

    Not permanent: the server may come back, and RQ's retry of the job repeats
    the request (content-addressed writes are idempotent).
    """


class StoreConfigError(ConfigError):
    """`artifacts.url` names no store this installation can use."""


@dataclass(frozen=True)
class BucketLocation:
    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def parse_s3_url(url: str) -> BucketLocation:
    """``s3://bucket[/prefix]`` -> its bucket and prefix; StoreConfigError naming the setting otherwise."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreConfigError(
            f"artifacts.url: {url!r} is not a URL; use s3://BUCKET/PREFIX, or leave it unset for the data directory"
        )
    if scheme != "s3":
        raise StoreConfigError(
            f"artifacts.url: unknown scheme {scheme!r} in {url!r}; only s3:// is supported "
            "(leave it unset for the data directory)"
        )
    bucket, _, prefix = rest.partition("/")
    # S3's bucket naming rules: 3-63 characters of lower-case letters, digits, dots and hyphens
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket):
        raise StoreConfigError(f"artifacts.url: {url!r} names no valid bucket (s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise StoreConfigError(f"artifacts.url: {url!r} has an empty or relative part in its prefix")
    return BucketLocation(bucket=bucket, prefix=prefix)


def check_store_config(cfg: ArtifactsConfig) -> None:
    """Refuse, at configuration time, an `artifacts.url` that no backend here can serve."""
    if cfg.url is None or cfg.url == "":
        return
    parse_s3_url(cfg.url)
    if importlib.util.find_spec("boto3") is None:
        raise StoreConfigError(
            f"artifacts.url: {cfg.url!r} needs boto3, which is not installed; pip install 'varro[s3]'"
        )


class Store(Protocol):
    """What jobs and workers need from where bytes live.

    Artifacts are immutable blobs named by sha256. Checkpoints are directories
    that `mlx_lm.load` reads, named by `varro.checkpoints.checkpoint_sha256`.
    """

    @property
    def checkpoint_root(self) -> Path:
        """The directory `varro.checkpoints.save_checkpoint` writes a new checkpoint under (its `data_dir`)."""
        ...

    def put(self, data: bytes, kind: str) -> ArtifactRef: ...

    def put_file(self, source: Path, sha256: str, kind: str) -> ArtifactRef:
        """A file's bytes as an artifact, streamed (never read whole); ArtifactError when they no
        longer hash to `sha256`, the hash of what the caller read there."""
        ...

    def get(self, ref: ArtifactRef | str) -> bytes:
        """The artifact's bytes, verified against its name (`ArtifactCorrupted` otherwise)."""
        ...

    def exists(self, ref: ArtifactRef | str) -> bool: ...

    def store_checkpoint(self, ref: CheckpointRef) -> CheckpointRef:
        """Make the checkpoint just saved under `checkpoint_root` visible to every reader; its ref to record."""
        ...

    def checkpoint_dir(self, sha256: str) -> Path | None:
        """A local directory holding the checkpoint's files (fetched first where needed), kept
        from eviction until `release_checkpoint`; None when the store does not hold it."""
        ...

    def release_checkpoint(self, sha256: str) -> None: ...

    def publish(self, ref: CheckpointRef, ns: str, date: str, *, rolling: bool) -> None:
        """Point the namespace's checkpoint links at `ref` where this store keeps them up to date
        after each epoch (the data directory); a bucket leaves them to `varro rebuild`."""
        ...

    def materialise(self, ref: CheckpointRef, data_dir: Path) -> Path:
        """The checkpoint as a complete directory under `data_dir`'s checkpoint store, for the links
        `varro rebuild` writes there (copied from the store where it is not there yet)."""
        ...

    def describe(self) -> str:
        """One line for `varro doctor`: where the bytes are."""
        ...


def open_store(cfg: VarroConfig) -> Store:
    """The store `cfg.artifacts` names: the data directory, or the bucket of `artifacts.url`."""
    check_store_config(cfg.artifacts)
    if not cfg.artifacts.url:
        from varro.artifacts import ArtifactStore

        return ArtifactStore(cfg.data_path)
    from varro.bucket import BucketStore

    cache = Path(cfg.artifacts.cache_dir).expanduser() if cfg.artifacts.cache_dir else cfg.data_path / "cache"
    return BucketStore(parse_s3_url(cfg.artifacts.url), cfg.artifacts, cache_dir=cache)
