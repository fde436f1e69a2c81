"""The proof that machines need share no filesystem: two sample days run by two model workers with
separate data directories, one Redis and one bucket (moto's S3 server on loopback) record exactly the
events one machine records with the data directory as its store.

Both runs use one namespace name in two databases of the same embedded Valkey, so not only the
output hashes (what `varro verify` compares) but the event ids themselves can be compared. Generation
is split in two shards so both workers take part: a shard's artifact written by one worker is merged
by the other, and a checkpoint trained by one is generated from by whichever takes the next job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_py
import s3_fixtures
from click.testing import CliRunner
from rq import Worker

from events.schema import DailyRunRequested
from events.store import EventStore
from varro.checkpoints import checkpoint_sha256, rolling_path
from varro.cli import main
from varro.config import load_config
from varro.headlines.collect import sample_dates
from workers.dispatcher import MODEL_QUEUE
from workers.inprocess import failed_jobs, run_days
from workers.operations import compare_outputs
from workers.queues import SERIALIZER
from workers.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
moto_server, bucket = s3_fixtures.moto_server, s3_fixtures.bucket

DAYS = sample_dates()[:2]
NS = "proof"
CONFIG = """
ns = "proof"
[generation]
max_headlines = 4
[generation.profiles.default]
name = "default"
temperature = 0.8
top_p = 0.95
top_k = 50
max_tokens = 40
[train]
minibatches = 2
microbatch_size = 16
[workers]
retries = 0
generate_shards = 2
"""


def events_of(store: EventStore) -> list:
    return [stored.event for stored in store.read()]


def model_workers(redis) -> list[Worker]:
    return [w for w in Worker.all(connection=redis, serializer=SERIALIZER) if MODEL_QUEUE in w.queue_names()]


class Process:
    """`python -m varro.cli ARGS` in its own process group, logging to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "varro.cli", "--log-level", "INFO", *args],
            stdout=open(log, "wb"),  # noqa: SIM115  (closed with the process)
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def test_two_workers_sharing_only_redis_and_a_bucket_record_what_one_machine_records(
    tmp_path, redis_server, redis_client, bucket, moto_server, monkeypatch
):
    config = tmp_path / "varro.toml"
    config.write_text(CONFIG)

    # one machine, the data directory as its store: the reference
    solo = Runtime.create(load_config(config, overrides={"data_dir": str(tmp_path / "solo")}, environ={}), redis_client)
    assert solo.cfg.artifacts.url is None
    run_days(solo, NS, DAYS, source="sample")
    solo.models.release()

    # the same days through a deployment: dispatcher, fetch worker and two model workers, each its own data dir
    url = f"{redis_server.url}?db=1"
    deployed = redis_py.Redis.from_url(url)
    deployed.flushdb()
    env = {
        **os.environ,
        **moto_server.env(),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "VARRO_ARTIFACTS__URL": f"s3://{bucket}/{NS}",
    }
    env.pop("REDIS_URL", None)

    def machine(name: str, *args: str) -> Process:
        common = ["--config", str(config), "--redis-url", url, "--data-dir", str(tmp_path / name)]
        return Process([*args, *common], tmp_path / f"{name}.log", env)

    processes = [
        machine("dispatcher", "dispatcher"),
        machine("fetcher", "worker", "fetch"),
        machine("worker-a", "worker", "model"),
        machine("worker-b", "worker", "model"),
    ]
    try:
        # both model workers listening before any job exists, so the two shards of a day go one to each
        deadline = time.monotonic() + 180
        while len(model_workers(deployed)) < 2:
            assert time.monotonic() < deadline, [(p.log.name, p.output()[-3000:]) for p in processes]
            time.sleep(0.5)
        for day in DAYS:
            request = ["daily", "--date", day, "--source", "sample", "--config", str(config), "--redis-url", url]
            done = subprocess.run(
                [sys.executable, "-m", "varro.cli", *request, "--data-dir", str(tmp_path / "requester")],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        store = EventStore(deployed, NS)
        runtime = Runtime.create(load_config(config, overrides={"data_dir": str(tmp_path / "observer")}), deployed)
        deadline = time.monotonic() + 600
        while store.latest("EpochTrained", DAYS[0]) is None or store.latest("RolloutsGenerated", DAYS[1]) is None:
            failures = failed_jobs(runtime, NS)
            dead = [p for p in processes if p.proc.poll() is not None]
            assert not failures and not dead, (failures, [(p.log.name, p.output()[-3000:]) for p in processes])
            assert time.monotonic() < deadline, [(p.log.name, p.output()[-3000:]) for p in processes]
            time.sleep(1)
    finally:
        for p in processes:
            p.stop()

    mine, theirs = events_of(solo.store(NS)), events_of(store)
    rows = compare_outputs(mine, theirs)
    assert {(r.date, r.stage) for r in rows} == {(d, s) for d in DAYS for s in ("fetch", "generate")} | {
        (DAYS[0], "rank"),
        (DAYS[0], "train"),
    }
    assert [r for r in rows if r.verdict != "same"] == []
    # the same ids, type by type and day by day (the two runs append in different orders)
    assert sorted((type(e).__name__, e.date, e.event_id) for e in mine) == sorted(
        (type(e).__name__, e.date, e.event_id) for e in theirs
    )
    for day in DAYS:  # the recorded config holds no trace of where the bytes live
        assert store.latest_of(DailyRunRequested, day).config == solo.store(NS).latest_of(DailyRunRequested, day).config
    trained = store.latest("EpochTrained", DAYS[0]).checkpoint
    assert trained.path == f"s3://{bucket}/{NS}/checkpoints/{trained.sha256}.json"

    # both workers worked, each from its own disk: no checkpoint store in either data directory, only caches
    for name in ("worker-a", "worker-b"):
        log = (tmp_path / f"{name}.log").read_text(errors="replace")
        assert "Job OK" in log, log[-3000:]
        assert not (tmp_path / name / "checkpoints").exists()
        assert not (tmp_path / name / "artifacts").exists()
    cached = [p for n in ("worker-a", "worker-b") for p in (tmp_path / n / "cache" / "checkpoints").glob("*")]
    assert trained.sha256 in {p.name for p in cached}

    # the links are a projection written where they are asked for, from the log and the bucket
    viewer = tmp_path / "viewer"
    monkeypatch.setenv("VARRO_ARTIFACTS__URL", f"s3://{bucket}/{NS}")  # the bucket fixture set AWS_* here
    result = CliRunner().invoke(main, ["rebuild", "--ns", NS, "--data-dir", str(viewer), "--redis-url", url])
    assert result.exit_code == 0, result.output
    link = rolling_path(viewer, NS)
    assert link.is_symlink() and link.resolve().name == trained.sha256
    assert checkpoint_sha256(link) == trained.sha256
