"""Bytes read from disk to train or generate are checked against their recorded hash on every read.

A flipped bit keeps a file's path, size and mtime, so nothing short of hashing
the bytes again finds it; the failure names the file and both digests, and
workers fail such a job at once instead of retrying it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from gspo_fixtures import tiny_model, write_model_dir
from rq import Retry

from events.schema import CheckpointRef
from varro.artifacts import ArtifactError, ArtifactStore
from varro.checkpoints import TrainerState, checkpoint_sha256, save_checkpoint, verify_checkpoint
from varro.config import VarroConfig
from varro.integrity import IntegrityError, PermanentError
from varro.model.cache import ModelCache
from workers.model_worker import ModelWorker
from workers.queues import queue

pytestmark = pytest.mark.timeout(120)


def flip_one_bit_keeping_mtime(path: Path, offset: int = -1) -> tuple[str, str]:
    """Corrupt `path` the way bit rot does; returns (sha256 before, sha256 after)."""
    before_stat = path.stat()
    data = bytearray(path.read_bytes())
    before = hashlib.sha256(data).hexdigest()
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before_stat.st_atime_ns, before_stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == before_stat.st_mtime_ns and path.stat().st_size == before_stat.st_size
    return before, hashlib.sha256(data).hexdigest()


@pytest.fixture
def saved(tmp_path):
    base = write_model_dir(tiny_model(4), tmp_path / "base")
    model = tiny_model(5)
    ref = save_checkpoint(
        model, parent_dir=base, data_dir=tmp_path / "data", base_model="tiny", trainer_state=TrainerState(step=1)
    )
    return base, ref, VarroConfig(data_dir=str(tmp_path / "data"))


def test_a_weights_file_corrupted_with_its_mtime_kept_is_refused_by_the_cache(saved):
    _, ref, cfg = saved
    cache = ModelCache(cfg)
    assert cache.load(ref).manifest["model.safetensors"]
    cache.release()  # the worker moved on to another checkpoint; this one must come from disk again
    weights = Path(ref.path) / "model.safetensors"
    recorded, corrupted = flip_one_bit_keeping_mtime(weights)
    for attempt in (cache, ModelCache(cfg)):  # the same cache (it hashed this directory before) and a new one
        with pytest.raises(IntegrityError) as failure:
            attempt.load(ref)
        assert str(weights) in str(failure.value)
        assert recorded in str(failure.value) and corrupted in str(failure.value)


def test_a_model_in_memory_is_reused_without_reading_the_disk(saved):
    _, ref, cfg = saved
    cache = ModelCache(cfg)
    first = cache.load(ref)
    flip_one_bit_keeping_mtime(Path(ref.path) / "model.safetensors")
    assert cache.load(ref) is first  # verified when loaded; what is in memory did not change


def test_a_base_model_without_a_manifest_names_its_directory(saved):
    base, _, cfg = saved
    ref = CheckpointRef(sha256=checkpoint_sha256(base), base_model="tiny", path=str(base))
    flip_one_bit_keeping_mtime(base / "model.safetensors")
    with pytest.raises(IntegrityError, match=f"corrupted checkpoint {base}: it hashes to sha256 [0-9a-f]{{64}}"):
        ModelCache(cfg).load(ref)


def test_verify_checkpoint_names_a_missing_and_an_extra_file(saved):
    _, ref, _ = saved
    root = Path(ref.path)
    assert verify_checkpoint(root, ref.sha256) == {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()
        for name in (
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "trainer_state.json",
        )
    }
    (root / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=f"corrupted file {root / 'extra.bin'}.*not part of the checkpoint"):
        verify_checkpoint(root, ref.sha256)
    (root / "extra.bin").unlink()
    (root / "trainer_state.json").unlink()
    with pytest.raises(IntegrityError, match=f"corrupted file {root / 'trainer_state.json'}: it is missing"):
        verify_checkpoint(root, ref.sha256)


def test_a_corrupted_artifact_names_its_file_and_both_digests(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.put(b"token ids and log-probs", kind="rollouts")
    path = store.path(ref.sha256)
    _, corrupted = flip_one_bit_keeping_mtime(path)
    with pytest.raises(IntegrityError) as failure:
        store.get(ref)
    assert isinstance(failure.value, ArtifactError) and isinstance(failure.value, PermanentError)
    assert str(path) in str(failure.value) and ref.sha256 in str(failure.value) and corrupted in str(failure.value)
    assert store.put(b"token ids and log-probs", kind="rollouts") == ref  # writing the bytes again repairs it
    assert store.get(ref) == b"token ids and log-probs"
    path.unlink()
    with pytest.raises(ArtifactError, match=f"no file {path}"):
        store.get(ref)


def corrupt_job(counter: str) -> None:
    with open(counter, "a") as fh:
        fh.write("run\n")
    raise IntegrityError(counter, "a" * 64, "b" * 64)


def transient_job(counter: str) -> None:
    with open(counter, "a") as fh:
        fh.write("run\n")
    raise ConnectionError("the judge is down")


@pytest.mark.parametrize(("func", "runs"), [(corrupt_job, 1), (transient_job, 3)])
def test_workers_do_not_retry_a_permanent_failure(redis_client, tmp_path, func, runs):
    counter = tmp_path / "runs"
    q = queue("varro-test", redis_client)
    job = q.enqueue_call(func, kwargs={"counter": str(counter)}, retry=Retry(max=2))
    ModelWorker([q], connection=redis_client).work(burst=True)
    assert len(counter.read_text().splitlines()) == runs
    assert job.get_status(refresh=True) == "failed"


def test_jobs_load_the_base_by_the_hash_the_namespace_recorded(saved, event_store, sample_events):
    import msgspec

    from jobs.context import JobContext, base_checkpoint, parent_checkpoint

    base, _, cfg = saved
    cfg = msgspec.structs.replace(cfg, ns="pin", model=msgspec.structs.replace(cfg.model, base=str(base)))
    ctx = JobContext(cfg=cfg, store=event_store("pin"), artifacts=ArtifactStore(cfg.data_path), models=ModelCache(cfg))
    assert base_checkpoint(ctx) == ctx.models.base_ref()  # nothing recorded yet: hashed from disk
    recorded = ctx.models.base_ref()
    events = sample_events("pin", "2025-01-02")
    ctx.store.append(events["HeadlinesFetched"])
    ctx.store.append(msgspec.structs.replace(events["RolloutsGenerated"], checkpoint=recorded))
    flip_one_bit_keeping_mtime(base / "model.safetensors")
    assert base_checkpoint(ctx) == recorded and parent_checkpoint(ctx, "2025-01-05") == recorded
    assert ctx.models.base_ref() != recorded  # hashing the disk again would have renamed the corrupted base
    with pytest.raises(IntegrityError, match=f"corrupted checkpoint {base}"):
        ctx.models.load(parent_checkpoint(ctx, "2025-01-05"))


def test_the_tokenizer_alone_is_checked_without_reading_the_weights(saved):
    _, ref, cfg = saved
    root = Path(ref.path)
    flip_one_bit_keeping_mtime(root / "model.safetensors")
    assert ModelCache(cfg).tokenizer(ref).encode("t5 t9") == [5, 9]  # the weights are not what planning reads
    (root / "chat_template.jinja").write_text("{{ 'forged' }}")
    with pytest.raises(IntegrityError, match=f"corrupted file {root / 'chat_template.jinja'}"):
        ModelCache(cfg).tokenizer(ref)
    (root / "chat_template.jinja").unlink()
    recorded, corrupted = flip_one_bit_keeping_mtime(root / "tokenizer.json", offset=10)
    with pytest.raises(IntegrityError, match=f"corrupted file {root / 'tokenizer.json'}.*{corrupted}.*{recorded}"):
        ModelCache(cfg).tokenizer(ref)
