"""An S3-compatible bucket as Varro's artifact and checkpoint store.

Chosen by ``artifacts.url = "s3://bucket/prefix"``; the endpoint and the
credentials come from the environment as boto3 reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), so no secret is
in a config file or a recorded event. The client is boto3: the reference S3
client, kept by AWS and released every week, that speaks to every
S3-compatible server (MinIO, Ceph, R2, GCS's XML API, moto), streams large
files as multipart uploads and ranged reads (s3transfer), and exposes the
connect/read timeouts and retry policy this store bounds each request with.
(fsspec/s3fs adds an async layer and a filesystem abstraction Varro does not
need; obstore is younger and adds a Rust extension.)

Layout under the prefix::

    artifacts/<sha[:2]>/<sha>        an artifact, named by the sha256 of its bytes
    blobs/<sha[:2]>/<sha>            one file of a checkpoint, by its sha256
    checkpoints/<checkpoint sha>.json   the checkpoint's manifest {file: sha256}

One object is visible whole or not at all (S3 publishes a PUT, or a multipart
upload, only when it completes). A checkpoint is visible once its manifest is:
its files are uploaded first under their content names, the manifest last, so
an upload that fails part-way leaves no manifest, only unreferenced blobs, and
every checkpoint recorded before is untouched. A reader trusts a manifest only
if it hashes to the checkpoint sha256 recorded in the log
(`varro.checkpoints.manifest_sha256`), and each file only if its bytes hash to
the manifest's entry; a mismatch is `ArtifactCorrupted` naming the object's
key, and the bytes are never used.

Every request is bounded by `artifacts.connect_timeout_s` and
`artifacts.read_timeout_s` and retried `artifacts.retries` times by botocore;
past that it is `StoreUnavailable` naming the object (a retry of the whole job
may succeed later: content-addressed puts are idempotent).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from events.ids import sha256_hex
from events.schema import ArtifactRef, CheckpointRef
from varro.artifacts import ArtifactCorrupted, ArtifactError, DiskWriteError, fsync_dir, write_cause
from varro.checkpoint_cache import CheckpointCache
from varro.integrity import file_sha256
from varro.stores import BucketLocation, StoreUnavailable

if TYPE_CHECKING:
    from varro.config import ArtifactsConfig

MANIFEST_FILE = ".varro-manifest.json"  # varro.checkpoints.MANIFEST (that module imports mlx)


class BucketStore:
    """`varro.stores.Store` over one bucket and prefix, with a bounded local checkpoint cache."""

    def __init__(self, location: BucketLocation, cfg: ArtifactsConfig, *, cache_dir: Path, client: Any = None):
        self.location = location
        self.cache = CheckpointCache(cache_dir, cfg.cache_mb * 1024 * 1024)
        self.client = client if client is not None else make_client(cfg)
        from boto3.s3.transfer import TransferConfig

        # files over 64 MiB go up and down in 64 MiB parts, 4 at a time; each part is one request of the
        # client, under its timeouts and retries, and a failed part fails the file (an upload is aborted)
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)

    @property
    def checkpoint_root(self) -> Path:
        return self.cache.root

    def describe(self) -> str:
        endpoint = self.client.meta.endpoint_url
        return f"bucket {self.location.url()} at {endpoint}, checkpoint cache {self.cache.root}"

    def reachable(self) -> str | None:
        """None when the bucket answers within the timeouts, else why not (for `varro doctor`)."""
        try:
            self._call("reach", "", self.client.head_bucket, Bucket=self.location.bucket)
        except Exception as exc:  # doctor reports whatever it is, on one line
            return _reason(exc)
        return None

    # -------------------------------------------------------------- objects

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(...)`, with the store's failures named by the object they concern."""
        from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            if _missing(exc):
                raise
            raise StoreUnavailable(f"cannot {what} s3://{self.location.bucket}/{key}: {_reason(exc)}") from None
        except (BotoCoreError, S3UploadFailedError, S3TransferFailedError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, BotoCoreError) and not _is_network(exc):
                raise  # the local disk's (a full cache directory), not the store's
            raise StoreUnavailable(f"cannot {what} s3://{self.location.bucket}/{key}: {_reason(exc)}") from None

    def _read(self, key: str) -> bytes | None:
        """The object's bytes, None when there is no such object."""
        from botocore.exceptions import ClientError

        def fetch() -> bytes:
            body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        try:
            data: bytes = self._call("read", key, fetch)
        except ClientError:  # _call re-raises only "no such key"
            return None
        return data

    def _write(self, key: str, data: bytes) -> None:
        self._put(key, data, sha256_hex(data))

    def _put(self, key: str, body: bytes | BinaryIO, sha256: str, **extra: Any) -> None:
        """One object, its sha256 in its metadata; `body` bytes or an open file (botocore streams it)."""
        self._call(
            "write",
            key,
            self.client.put_object,
            Bucket=self.location.bucket,
            Key=key,
            Body=body,
            Metadata={"sha256": sha256},
            **extra,
        )

    def artifact_key(self, sha256: str) -> str:
        return self.location.key("artifacts", sha256[:2], sha256)

    def blob_key(self, sha256: str) -> str:
        return self.location.key("blobs", sha256[:2], sha256)

    def manifest_key(self, sha256: str) -> str:
        return self.location.key("checkpoints", f"{sha256}.json")

    def put(self, data: bytes, kind: str) -> ArtifactRef:
        digest = sha256_hex(data)
        # always written: the same name holds the same bytes, and a rotted copy is replaced
        self._write(self.artifact_key(digest), data)
        return ArtifactRef(sha256=digest, size=len(data), kind=kind)

    def put_file(self, source: Path, sha256: str, kind: str) -> ArtifactRef:
        """`source`'s bytes as an artifact, uploaded from the file (botocore streams a file body);
        ArtifactError when it no longer hashes to `sha256` (it changed since it was read)."""
        key = self.artifact_key(sha256)
        with open(source, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            if file_sha256(source) != sha256:
                raise ArtifactError(f"{source} changed since it was read (sha256 {sha256[:12]}...): import it again")
            self._put(key, body, sha256, ContentLength=size)
        return ArtifactRef(sha256=sha256, size=size, kind=kind)

    def get(self, ref: ArtifactRef | str) -> bytes:
        digest = ref if isinstance(ref, str) else ref.sha256
        key = self.artifact_key(digest)
        data = self._read(key)
        if data is None:
            raise ArtifactError(f"artifact {digest} is missing: no object s3://{self.location.bucket}/{key}")
        actual = sha256_hex(data)
        if actual != digest:
            raise ArtifactCorrupted(f"s3://{self.location.bucket}/{key}", digest, actual, what="artifact")
        return data

    def exists(self, ref: ArtifactRef | str) -> bool:
        from botocore.exceptions import ClientError

        key = self.artifact_key(ref if isinstance(ref, str) else ref.sha256)
        try:
            self._call("look up", key, self.client.head_object, Bucket=self.location.bucket, Key=key)
        except ClientError:
            return False
        return True

    # ---------------------------------------------------------- checkpoints

    def store_checkpoint(self, ref: CheckpointRef) -> CheckpointRef:
        """Upload the checkpoint saved in the cache: every file under its sha256, then the manifest."""
        import msgspec

        from varro.checkpoints import checkpoint_manifest, manifest_sha256, verified_file

        local = self.cache.path(ref.sha256)
        self.cache.pin(ref.sha256)
        try:
            files = checkpoint_manifest(local)  # read from disk now, so hashed now
            if manifest_sha256(files) != ref.sha256:
                raise ArtifactCorrupted(local, ref.sha256, manifest_sha256(files), what="checkpoint")
            sizes = {}
            for name in sorted(files):
                path = verified_file(local, name, files)
                assert path is not None
                sizes[name] = path.stat().st_size
                key = self.blob_key(files[name])
                self._call(
                    "upload",
                    key,
                    self.client.upload_file,
                    str(path),
                    self.location.bucket,
                    key,
                    ExtraArgs={"Metadata": {"sha256": files[name]}},
                    Config=self.transfer,
                )
            manifest = {"sha256": ref.sha256, "files": files, "sizes": sizes}
            self._write(self.manifest_key(ref.sha256), json.dumps(manifest, indent=1, sort_keys=True).encode())
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"{exc}; checkpoint {ref.sha256[:12]} is not stored (its manifest goes up only after every file)"
            ) from None
        finally:
            self.cache.unpin(ref.sha256)
        self.cache.trim()
        return msgspec.structs.replace(ref, path=self.location.url("checkpoints", f"{ref.sha256}.json"))

    def _manifest(self, sha256: str) -> dict[str, str] | None:
        """The checkpoint's {file: sha256}, if its manifest is stored and names exactly `sha256`."""
        from varro.checkpoints import manifest_sha256

        key = self.manifest_key(sha256)
        raw = self._read(key)
        if raw is None:
            return None
        where = f"s3://{self.location.bucket}/{key}"
        try:
            files = json.loads(raw)["files"]
            ok = isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise ArtifactCorrupted(where, sha256, sha256_hex(raw), what="checkpoint manifest")
        actual = manifest_sha256(files)
        if actual != sha256:
            raise ArtifactCorrupted(where, sha256, actual, what="checkpoint manifest")
        return dict(files)

    def _download(self, sha256: str, files: dict[str, str], store: Path) -> Path:
        """Fetch every file of the checkpoint into `store/<sha256>` (one rename of a verified whole)."""
        from botocore.exceptions import ClientError

        try:
            store.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=store, prefix=".tmp-"))
        except OSError as exc:
            raise DiskWriteError(store, write_cause(store, exc)) from None
        try:
            for name in sorted(files):
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                key = self.blob_key(files[name])
                try:
                    self._call(
                        "download",
                        key,
                        self.client.download_file,
                        self.location.bucket,
                        key,
                        str(target),
                        Config=self.transfer,
                    )
                except ClientError:  # _call re-raises only "no such key"
                    where = f"s3://{self.location.bucket}/{key}"
                    raise ArtifactError(f"checkpoint {sha256} lists {name}, but {where} is missing") from None
                except OSError as exc:  # the local disk (the store's own failures are StoreUnavailable)
                    raise DiskWriteError(target, write_cause(target, exc)) from None
                actual = file_sha256(target)
                if actual != files[name]:
                    raise ArtifactCorrupted(f"s3://{self.location.bucket}/{key}", files[name], actual, what="object")
            manifest = json.dumps({"sha256": sha256, "files": files}, indent=1, sort_keys=True).encode()
            (tmp / MANIFEST_FILE).write_bytes(manifest)
            for path in tmp.rglob("*"):
                if path.is_file():
                    with open(path, "rb+") as fh:
                        os.fsync(fh.fileno())
            final = store / sha256
            if final.exists():  # a partial or rotted copy: the verified download replaces it
                aside = store / f".corrupt-{sha256}-{os.getpid()}"
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            os.rename(tmp, final)
            fsync_dir(store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def checkpoint_dir(self, sha256: str) -> Path | None:
        self.cache.pin(sha256)
        try:
            if not self.cache.has(sha256):
                files = self._manifest(sha256)
                if files is None:
                    self.cache.unpin(sha256)
                    return None
                self._download(sha256, files, self.cache.checkpoints)
                self.cache.trim()
        except BaseException:
            self.cache.unpin(sha256)
            raise
        return self.cache.path(sha256)

    def release_checkpoint(self, sha256: str) -> None:
        self.cache.unpin(sha256)

    def publish(self, ref: CheckpointRef, ns: str, date: str, *, rolling: bool) -> None:
        pass  # a worker's cache is bounded: the links are written by `varro rebuild` where they are wanted

    def materialise(self, ref: CheckpointRef, data_dir: Path) -> Path:
        from varro.checkpoints import CheckpointError, checkpoint_sha256, store_dir

        target = store_dir(data_dir) / ref.sha256
        try:
            if checkpoint_sha256(target) == ref.sha256:
                return target
        except (CheckpointError, OSError):
            pass
        files = self._manifest(ref.sha256)
        if files is None:
            raise ArtifactError(f"checkpoint {ref.sha256} is not in {self.location.url()} (no manifest)")
        return self._download(ref.sha256, files, store_dir(data_dir))


def make_client(cfg: ArtifactsConfig) -> Any:
    """A boto3 S3 client whose every request has a connect and a read timeout and bounded retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=cfg.read_timeout_s,
        retries={"total_max_attempts": cfg.retries + 1, "mode": "standard"},
        # path-style addressing works with every S3-compatible server (no DNS per bucket)
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client("s3", config=config)


def _missing(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _is_network(exc: OSError) -> bool:
    """An OSError from the connection (reset, refused), not from the local disk."""
    return isinstance(exc, ConnectionError | TimeoutError)
