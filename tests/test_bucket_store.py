"""The S3-compatible artifact store against a real S3 API on loopback (moto's server, started here).

Content addressing and atomicity hold in the bucket as on disk: bytes that do
not hash to their name are refused naming the object, a checkpoint is visible
only once its manifest is written (after every file), a server that fails or
stalls mid-upload leaves no visible checkpoint and the earlier ones intact, and
the worker's local checkpoint cache stays within its limit without evicting
what is in use. Where the bytes live is not part of any id.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import s3_fixtures
from gspo_fixtures import tiny_model, write_model_dir
from s3_fixtures import FailingProxy

from events.schema import CheckpointRef
from varro.artifacts import ArtifactCorrupted, ArtifactError, ArtifactStore
from varro.bucket import BucketStore
from varro.checkpoint_cache import CheckpointCache
from varro.checkpoints import TrainerState, checkpoint_manifest, checkpoint_sha256, save_checkpoint
from varro.config import ConfigError, VarroConfig, load_config, recorded_config_bytes
from varro.model.cache import ModelCache
from varro.stores import StoreUnavailable, open_store

pytestmark = pytest.mark.timeout(180)
moto_server, bucket = s3_fixtures.moto_server, s3_fixtures.bucket  # the loopback S3 server's fixtures


def bucket_config(tmp_path: Path, name: str, prefix: str = "exp", **artifacts) -> VarroConfig:
    return load_config(
        overrides={"data_dir": str(tmp_path), "artifacts": {"url": f"s3://{name}/{prefix}", **artifacts}},
        environ={},
    )


def new_checkpoint(store, tmp_path: Path, seed: int) -> CheckpointRef:
    """A real mlx_lm checkpoint saved where the store's trainer saves one (`checkpoint_root`)."""
    base = tmp_path / f"base-{seed}"
    if not base.exists():
        write_model_dir(tiny_model(1), base)
    return save_checkpoint(
        tiny_model(seed),
        parent_dir=base,
        data_dir=store.checkpoint_root,
        base_model="tiny",
        trainer_state=TrainerState(step=seed),
    )


def test_artifacts_round_trip_under_their_sha256(tmp_path, bucket, moto_server):
    store = open_store(bucket_config(tmp_path, bucket))
    assert isinstance(store, BucketStore)
    ref = store.put(b"token ids", kind="rollouts")
    assert store.get(ref) == b"token ids" and store.get(ref.sha256) == b"token ids"
    assert store.exists(ref) and not store.exists("0" * 64)
    key = f"exp/artifacts/{ref.sha256[:2]}/{ref.sha256}"
    assert moto_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"token ids"
    assert store.put(b"token ids", kind="rollouts") == ref  # idempotent


def test_a_file_artifact_is_uploaded_from_its_file_and_refused_once_changed(tmp_path, bucket, moto_server):
    """A streamed headline import's payload goes to the bucket from the file, under the hash read there."""
    from varro.integrity import file_sha256

    store = open_store(bucket_config(tmp_path, bucket))
    source = tmp_path / "day.jsonl"
    source.write_bytes(b'{"text": "Gold rises", "link": "https://g.example.com"}\n' * 5000)
    ref = store.put_file(source, file_sha256(source), kind="feed-payload")
    assert ref.size == source.stat().st_size and store.get(ref) == source.read_bytes()
    stale = ref.sha256
    source.write_bytes(b"other bytes\n")
    with pytest.raises(ArtifactError, match="changed since it was read"):
        store.put_file(source, "0" * 64, kind="feed-payload")
    assert store.get(stale) != b"other bytes\n" and not store.exists("0" * 64)


def test_a_corrupted_artifact_in_the_bucket_is_refused_naming_its_key(tmp_path, bucket, moto_server):
    store = open_store(bucket_config(tmp_path, bucket))
    ref = store.put(b"the recorded bytes", kind="rollouts")
    key = f"exp/artifacts/{ref.sha256[:2]}/{ref.sha256}"
    moto_server.client().put_object(Bucket=bucket, Key=key, Body=b"the recorded bytez")
    with pytest.raises(ArtifactCorrupted, match=f"s3://{bucket}/{key}"):
        store.get(ref)


def test_a_checkpoint_round_trips_through_the_bucket_into_another_machine_s_cache(tmp_path, bucket):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    ref = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))
    assert ref.path == f"s3://{bucket}/exp/checkpoints/{ref.sha256}.json"

    other_cfg = bucket_config(tmp_path / "generator", bucket)
    models = ModelCache(other_cfg)  # its own data directory and cache: nothing shared but the bucket
    loaded = models.load(ref)
    assert loaded.path == tmp_path / "generator" / "cache" / "checkpoints" / ref.sha256
    assert checkpoint_sha256(loaded.path) == ref.sha256
    assert loaded.manifest == checkpoint_manifest(trainer.cache.path(ref.sha256))
    models.release()


def test_a_corrupted_checkpoint_file_in_the_bucket_is_refused_and_never_cached(tmp_path, bucket, moto_server):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    ref = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))
    files = checkpoint_manifest(trainer.cache.path(ref.sha256))
    weights = f"exp/blobs/{files['model.safetensors'][:2]}/{files['model.safetensors']}"
    s3 = moto_server.client()
    data = bytearray(s3.get_object(Bucket=bucket, Key=weights)["Body"].read())
    data[-1] ^= 0x01
    s3.put_object(Bucket=bucket, Key=weights, Body=bytes(data))

    reader = open_store(bucket_config(tmp_path / "reader", bucket))
    with pytest.raises(ArtifactCorrupted, match=f"s3://{bucket}/{weights}"):
        reader.checkpoint_dir(ref.sha256)
    assert not reader.cache.has(ref.sha256)
    assert not list(reader.cache.checkpoints.glob(".tmp-*"))  # the partial download is gone too


def test_a_checkpoint_whose_file_is_gone_from_the_bucket_is_an_error_naming_it(tmp_path, bucket, moto_server):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    ref = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))
    sha = checkpoint_manifest(trainer.cache.path(ref.sha256))["config.json"]
    moto_server.client().delete_object(Bucket=bucket, Key=f"exp/blobs/{sha[:2]}/{sha}")
    reader = open_store(bucket_config(tmp_path / "reader", bucket))
    with pytest.raises(ArtifactError, match=f"lists config.json, but s3://{bucket}/exp/blobs/.* is missing"):
        reader.checkpoint_dir(ref.sha256)
    assert not reader.cache.has(ref.sha256)


def test_a_manifest_that_is_not_the_recorded_checkpoint_is_refused(tmp_path, bucket, moto_server):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    ref = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))
    key = f"exp/checkpoints/{ref.sha256}.json"
    s3 = moto_server.client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    manifest["files"]["config.json"] = "0" * 64
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    reader = open_store(bucket_config(tmp_path / "reader", bucket))
    with pytest.raises(ArtifactCorrupted, match=f"checkpoint manifest s3://{bucket}/{key}"):
        reader.checkpoint_dir(ref.sha256)


def test_a_checkpoint_not_in_the_bucket_is_not_found(tmp_path, bucket):
    reader = open_store(bucket_config(tmp_path, bucket))
    assert reader.checkpoint_dir("ab" * 32) is None


@pytest.mark.parametrize("mode", ["500", "drop", "stall"])
def test_a_server_failing_mid_upload_leaves_no_visible_checkpoint_and_the_previous_one_intact(
    tmp_path, bucket, moto_server, monkeypatch, mode
):
    proxy = FailingProxy(moto_server.port, mode=mode, stall_s=3.0)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        cfg = bucket_config(tmp_path / "trainer", bucket, retries=1, read_timeout_s=0.5, connect_timeout_s=0.5)
        trainer = open_store(cfg)
        first = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))

        second = new_checkpoint(trainer, tmp_path, seed=6)
        proxy.fail_after(2)  # two files of the second checkpoint go up, then the server fails
        with pytest.raises(StoreUnavailable, match=f"cannot upload s3://{bucket}/exp/blobs/"):
            trainer.store_checkpoint(second)
        assert proxy.failed >= 1
    finally:
        proxy.close()

    s3 = moto_server.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="exp/checkpoints/").get("Contents", [])]
    assert keys == [f"exp/checkpoints/{first.sha256}.json"]  # the failed one has no manifest: invisible
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    reader = open_store(bucket_config(tmp_path / "reader", bucket))
    assert reader.checkpoint_dir(second.sha256) is None
    path = reader.checkpoint_dir(first.sha256)
    assert path is not None and checkpoint_sha256(path) == first.sha256


def test_a_server_stalling_mid_download_leaves_nothing_in_the_cache(tmp_path, bucket, moto_server, monkeypatch):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    ref = trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=5))
    proxy = FailingProxy(moto_server.port, mode="stall", stall_s=3.0)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        reader = open_store(bucket_config(tmp_path / "reader", bucket, retries=1, read_timeout_s=0.5))
        proxy.fail_after(3)  # the manifest and two files come down, then the server stops answering
        with pytest.raises(StoreUnavailable, match=f"cannot download s3://{bucket}/exp/blobs/"):
            reader.checkpoint_dir(ref.sha256)
    finally:
        proxy.close()
    assert not reader.cache.has(ref.sha256)
    assert [p.name for p in reader.cache.checkpoints.iterdir()] == []  # no partial directory left behind
    assert not reader.cache.pinned(ref.sha256)


def test_an_unreachable_server_is_a_clear_error_naming_the_object(tmp_path, bucket, monkeypatch):
    from s3_fixtures import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    store = open_store(bucket_config(tmp_path, bucket, retries=0, connect_timeout_s=0.5))
    with pytest.raises(StoreUnavailable, match=f"cannot write s3://{bucket}/exp/artifacts/"):
        store.put(b"x", kind="config")


def fill(cache: CheckpointCache, sha: str, size: int) -> None:
    path = cache.path(sha)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"\0" * size)


def test_the_cache_evicts_least_recently_used_and_never_what_is_in_use(tmp_path):
    import os

    cache = CheckpointCache(tmp_path, limit_bytes=2500)
    for i, sha in enumerate(("a" * 64, "b" * 64, "c" * 64)):
        fill(cache, sha, 1000)
        os.utime(cache.path(sha), (1000 + i, 1000 + i))  # a, then b, then c last used
    other_process = CheckpointCache(tmp_path, limit_bytes=2500)  # its own lock descriptors, like another worker
    other_process.pin("a" * 64)  # the oldest is in use elsewhere
    assert cache.trim() == ["b" * 64]  # so the next oldest goes
    assert cache.has("a" * 64) and cache.has("c" * 64) and cache.size_bytes() == 2000

    fill(cache, "d" * 64, 1000)
    cache.pin("d" * 64)
    cache.pin("c" * 64)
    assert cache.trim() == [] and cache.size_bytes() == 3000  # everything in use: over the limit, nothing lost
    cache.unpin("c" * 64)
    other_process.unpin("a" * 64)
    assert cache.trim() == ["a" * 64]  # a is least recently used of those free (pinning c touched it)
    assert cache.has("c" * 64) and cache.has("d" * 64)


def test_the_worker_cache_stays_bounded_and_keeps_the_loaded_model(tmp_path, bucket):
    trainer = open_store(bucket_config(tmp_path / "trainer", bucket))
    refs = [trainer.store_checkpoint(new_checkpoint(trainer, tmp_path, seed=s)) for s in (5, 6, 7)]
    one = sum(f.stat().st_size for f in trainer.cache.path(refs[0].sha256).rglob("*") if f.is_file())

    cfg = bucket_config(tmp_path / "worker", bucket)
    models = ModelCache(cfg)
    models.store.cache.limit_bytes = int(one * 1.5)  # room for one checkpoint, not two
    first = models.load(refs[0])
    reader = open_store(cfg)  # a second reader on the same cache: it must not take the loaded one away
    reader.cache.limit_bytes = models.store.cache.limit_bytes
    assert reader.checkpoint_dir(refs[1].sha256) is not None
    assert models.store.cache.has(refs[0].sha256)  # in use by the loaded model: kept, the cache over its limit
    reader.release_checkpoint(refs[1].sha256)
    models.release()
    models.load(refs[2])  # the older two are free now: only the one in use stays
    assert sorted(p.name for p in models.store.cache.checkpoints.iterdir() if not p.name.startswith(".")) == [
        refs[2].sha256
    ]
    assert first.ref == refs[0]
    models.release()


def test_where_bytes_live_is_not_recorded_and_enters_no_hash(tmp_path):
    local = load_config(overrides={"data_dir": str(tmp_path)}, environ={})
    remote = load_config(
        overrides={"data_dir": str(tmp_path)},
        environ={"VARRO_ARTIFACTS__URL": "s3://bucket/prefix", "VARRO_ARTIFACTS__CACHE_MB": "10"},
    )
    assert remote.artifacts.url == "s3://bucket/prefix" and remote.artifacts.cache_mb == 10
    assert recorded_config_bytes(remote) == recorded_config_bytes(local)
    for section in ("generation", "judge", "train", "model", "headlines"):
        assert remote.section_hash(section) == local.section_hash(section)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("s3:/nobucket", "is not a URL"),
        ("gs://bucket/prefix", "unknown scheme 'gs'"),
        ("s3://", "names no valid bucket"),
        ("s3://Bad_Bucket/x", "names no valid bucket"),
        ("s3://bucket/a//b", "empty or relative part"),
    ],
)
def test_a_bad_artifacts_url_is_a_config_error_naming_it(url, problem):
    with pytest.raises(ConfigError, match=f"artifacts.url: .*{problem}"):
        load_config(overrides={"artifacts": {"url": url}}, environ={})


def test_boto3_missing_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs boto3, which is not installed; pip install 'varro\[s3\]'"):
        load_config(overrides={"artifacts": {"url": "s3://bucket/x"}}, environ={})


def test_a_bad_url_fails_the_command_in_one_line_before_anything_is_recorded(tmp_path, redis_server):
    import os

    env = {**os.environ, "VARRO_ARTIFACTS__URL": "s3:/nobucket"}
    args = ["daily", "--date", "2025-01-06", "--source", "sample", "--ns", "badurl"]
    args += ["--data-dir", str(tmp_path / "data"), "--redis-url", redis_server.url]
    done = subprocess.run([sys.executable, "-m", "varro.cli", *args], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "artifacts.url" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    import redis as redis_py

    from events.store import EventStore

    assert "badurl" not in EventStore.namespaces(redis_py.Redis.from_url(redis_server.url))
    assert not (tmp_path / "data").exists()


def test_doctor_reports_the_store(tmp_path, bucket, moto_server, monkeypatch):
    from click.testing import CliRunner

    from varro.cli import main

    monkeypatch.setenv("VARRO_ARTIFACTS__URL", f"s3://{bucket}/exp")
    result = CliRunner().invoke(main, ["doctor", "--data-dir", str(tmp_path)])
    line = next(line for line in result.output.splitlines() if line.startswith("artifacts"))
    assert f"bucket s3://{bucket}/exp at {moto_server.url}" in line and "(reachable)" in line

    monkeypatch.setenv("VARRO_ARTIFACTS__URL", "s3://no-such-bucket-here/exp")
    result = CliRunner().invoke(main, ["doctor", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "unreachable" in next(line for line in result.output.splitlines() if line.startswith("artifacts"))

    monkeypatch.delenv("VARRO_ARTIFACTS__URL")
    result = CliRunner().invoke(main, ["doctor", "--data-dir", str(tmp_path)])
    line = next(line for line in result.output.splitlines() if line.startswith("artifacts"))
    assert line.split(None, 1)[1] == f"data directory {tmp_path}"


def test_the_data_directory_store_keeps_its_layout(tmp_path):
    store = open_store(load_config(overrides={"data_dir": str(tmp_path)}, environ={}))
    assert isinstance(store, ArtifactStore) and store.checkpoint_root == tmp_path
    ref = store.put(b"bytes", kind="config")
    assert (tmp_path / "artifacts" / ref.sha256[:2] / ref.sha256).read_bytes() == b"bytes"
    saved = new_checkpoint(store, tmp_path, seed=5)
    assert store.store_checkpoint(saved) == saved  # already in place: the ref is recorded as saved
    assert store.checkpoint_dir(saved.sha256) == tmp_path / "checkpoints" / saved.sha256
    store.publish(saved, "ns", "2025-01-06", rolling=True)
    assert (tmp_path / "training/checkpoints/gspo_ns/final_model").resolve().name == saved.sha256
