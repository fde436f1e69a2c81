"""End-to-end: the daily chain through the real dispatcher, RQ workers, embedded
Valkey and the project's small model, over bundled sample days."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_py
from click.testing import CliRunner, Result

from jobs.daily import request_day
from varro.cli import main
from varro.config import load_config
from varro.headlines.collect import sample_dates
from varro.outputs import output_hashes
from varro.projections import project
from workers.dispatcher import Dispatcher
from workers.inprocess import drain, run_days
from workers.runtime import Runtime, set_runtime

pytestmark = pytest.mark.slow

DAYS = sample_dates()[:3]


def small_config(data_dir: Path, ns: str = "e2e"):
    """The default pipeline, shrunk so three days take well under a minute."""
    return load_config(
        overrides={
            "ns": ns,
            "data_dir": str(data_dir),
            "generation": {
                "max_headlines": 4,
                "profiles": {
                    "default": {"name": "default", "temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_tokens": 40}
                },
            },
            "train": {"minibatches": 2, "microbatch_size": 16},
            "workers": {"retries": 0},
        },
        environ={},
    )


def events_of(rt: Runtime, ns: str) -> list:
    return [stored.event for stored in rt.store(ns).read()]


def count_by(events, kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for event in events:
        if type(event).__name__ == kind:
            out[event.date] = out.get(event.date, 0) + 1
    return out


@pytest.fixture
def runtime(tmp_path, redis_client):
    rt = Runtime.create(small_config(tmp_path), redis=redis_client)
    yield rt
    rt.models.release()


CHAIN_DB = 1  # the function-scoped `redis_client` empties database 0 before every test


@dataclass
class Chain:
    """The three sample days of `chain`, and what each phase of building it left behind."""

    rt: Runtime
    data_dir: Path
    common: list[str]  # --data-dir and --redis-url for CLI commands on the chain's database
    first_run: list  # the log after the first run of the days, before anything else
    added_by_rerun: int  # events a second run of the same days recorded
    replay: Result  # `varro replay --ns e2e --into e2e-replay` of the first run
    verify: Result  # `varro verify --ns e2e --against e2e-replay` right after it

    @property
    def store(self):
        return self.rt.store("e2e")


@pytest.fixture(scope="module")
def chain(redis_server, tmp_path_factory):
    """Three sample days through the whole chain, built once for the module's tests.

    Phases, each recorded before the next changes the log: run the days, run
    them again, replay them into another namespace and verify it, then force a
    re-run of the last day. The tests check one thing each on what this left.
    """
    data_dir = tmp_path_factory.mktemp("chain")
    client = redis_py.Redis.from_url(redis_server.url, db=CHAIN_DB, decode_responses=False)
    client.flushdb()
    rt = Runtime.create(small_config(data_dir), redis=client)
    common = ["--data-dir", str(data_dir), "--redis-url", f"{redis_server.url}?db={CHAIN_DB}"]
    try:
        run_days(rt, "e2e", DAYS, source="sample")
        first_run = events_of(rt, "e2e")
        run_days(rt, "e2e", DAYS, source="sample")
        added_by_rerun = rt.store("e2e").count() - len(first_run)
        replay = CliRunner().invoke(main, ["replay", "--ns", "e2e", "--into", "e2e-replay", *common])
        verify = CliRunner().invoke(main, ["verify", "--ns", "e2e", "--against", "e2e-replay", *common])
        set_runtime(rt)  # the replay ran under the CLI's own runtime
        request_day(rt.context("e2e"), DAYS[2], trigger="manual", source="sample", force=True)
        drain(rt, Dispatcher(rt.redis, rt.cfg, name="force"), ["e2e"])
        yield Chain(rt, data_dir, common, first_run, added_by_rerun, replay, verify)
    finally:
        set_runtime(None)
        rt.models.release()
        client.flushdb()
        client.close()


def test_each_day_records_each_stage_once_on_a_valid_chain(chain):
    events = chain.first_run
    assert count_by(events, "DailyRunRequested") == {d: 1 for d in DAYS}
    assert count_by(events, "HeadlinesFetched") == {d: 1 for d in DAYS}
    assert count_by(events, "RolloutsGenerated") == {d: 1 for d in DAYS}
    assert count_by(events, "Ranked") == {d: 1 for d in DAYS[:2]}  # the last day has no next day yet
    assert count_by(events, "EpochTrained") == {d: 1 for d in DAYS[:2]}
    assert chain.store.verify().ok


def test_each_day_generates_with_the_checkpoint_trained_the_day_before(chain):
    def first(kind: str, day: str):
        return next(e for e in chain.first_run if type(e).__name__ == kind and e.date == day)

    trained = [first("EpochTrained", d) for d in DAYS[:2]]
    generated = [first("RolloutsGenerated", d) for d in DAYS]
    base = generated[0].checkpoint.sha256
    assert trained[0].parent_checkpoint.sha256 == base
    assert trained[1].parent_checkpoint.sha256 == trained[0].checkpoint.sha256
    assert generated[1].checkpoint.sha256 == trained[0].checkpoint.sha256
    assert generated[2].checkpoint.sha256 == trained[1].checkpoint.sha256
    assert len({base, trained[0].checkpoint.sha256, trained[1].checkpoint.sha256}) == 3


def test_a_day_is_ranked_against_the_next_days_headlines_with_rewards_in_0_1(chain):
    ranked = next(e for e in chain.first_run if type(e).__name__ == "Ranked" and e.date == DAYS[0])
    assert ranked.outcome_date == DAYS[1]
    rewards = [r for group in ranked.groups for r in group.rewards]
    assert rewards and min(rewards) >= 0.0 and max(rewards) <= 1.0 and ranked.stats.negatives == 0


def test_a_second_run_of_the_same_days_records_nothing(chain):
    assert chain.added_by_rerun == 0


def test_a_forced_request_reruns_the_days_chain_as_new_marked_events(chain):
    store = chain.store
    assert [e.forced for e in store.all_for("HeadlinesFetched", DAYS[2])] == [False, True]
    assert [e.forced for e in store.all_for("Ranked", DAYS[1])] == [False, True]
    assert [e.forced for e in store.all_for("EpochTrained", DAYS[1])] == [False, True]
    regenerated = store.all_for("RolloutsGenerated", DAYS[2])
    assert [e.forced for e in regenerated] == [False, True]
    assert regenerated[-1].checkpoint == store.latest("EpochTrained", DAYS[1]).checkpoint


def test_projections_hold_every_stages_files_and_the_checkpoint_links(chain):
    store = chain.store
    files = project(events_of(chain.rt, "e2e"), "e2e")
    for day in DAYS:
        headlines = json.loads(files[f"timestamped_storage_e2e/{day}_headlines.json"])
        assert len(headlines["headlines"]) == len(store.latest("HeadlinesFetched", day).headlines)
        assert f"timestamped_storage_e2e/{day}_predictions.json" in files
    for day in DAYS[:2]:
        evaluations = json.loads(files[f"timestamped_storage_e2e/{day}_evaluations.json"])
        assert evaluations
        assert f"timestamped_storage_e2e/{day}_outcome_tracking.json" in files
        assert f"training/gspo_e2e/gspo_training_{day}.json" in files
    checkpoints = chain.data_dir / "training" / "checkpoints" / "gspo_e2e"
    assert (checkpoints / "final_model" / "config.json").exists()
    assert (checkpoints / f"final_model_{DAYS[1].replace('-', '')}" / "config.json").exists()


def test_lineage_lists_the_forced_retrain_then_its_parents_epoch(chain):
    newest = chain.store.latest("EpochTrained", DAYS[1]).checkpoint.sha256
    lineage = CliRunner().invoke(main, ["lineage", newest[:12], "--ns", "e2e", *chain.common])
    assert lineage.exit_code == 0, lineage.output
    rows = [line for line in lineage.output.splitlines() if line.startswith("│ 2025")]
    # newest first: the forced re-train (same inputs, so the same checkpoint bytes), then its parent's epoch
    assert [row.split()[1] for row in rows] == [DAYS[1], DAYS[0]]
    assert "(forced)" in rows[0] and "(forced)" not in rows[1]


def test_replay_into_a_new_namespace_verifies_identical(chain):
    assert chain.replay.exit_code == 0, chain.replay.output
    assert chain.verify.exit_code == 0, chain.verify.output
    assert "identical" in chain.verify.output
    assert output_hashes(chain.first_run) == output_hashes(events_of(chain.rt, "e2e-replay"))


def test_rebuild_rewrites_the_projections_bit_identically_and_relinks_the_checkpoint(chain):
    first = project(events_of(chain.rt, "e2e"), "e2e")
    rolling = chain.data_dir / "training" / "checkpoints" / "gspo_e2e" / "final_model"
    rolling.unlink()
    result = CliRunner().invoke(main, ["rebuild", "--ns", "e2e", *chain.common])
    assert result.exit_code == 0, result.output
    assert {name: (chain.data_dir / name).read_bytes() for name in first} == first
    newest = chain.store.latest("EpochTrained", DAYS[1]).checkpoint.sha256
    assert rolling.resolve().name == newest  # the checkpoint links are a projection too


def test_verify_reports_first_difference(chain):
    other = Runtime(
        cfg=small_config(chain.data_dir, ns="b"),
        redis=chain.rt.redis,
        artifacts=chain.rt.artifacts,
        models=chain.rt.models,
    )
    run_days(other, "b", DAYS[:1], source="sample", seed=999)
    result = CliRunner().invoke(main, ["verify", "--ns", "e2e", "--against", "b", *chain.common])
    assert result.exit_code == 1
    assert f"first difference at {DAYS[0]} generate" in result.output


def test_backfill_fills_only_missing_days_and_dry_run_changes_nothing(runtime, tmp_path, redis_client):
    run_days(runtime, "e2e", [DAYS[0]], source="sample")
    url = redis_client.connection_pool.connection_kwargs["path"]
    common = ["--ns", "e2e", "--data-dir", str(tmp_path), "--redis-url", f"unix://{url}"]
    store = runtime.store("e2e")
    before = store.count()

    result = CliRunner().invoke(main, ["backfill", "--from", DAYS[0], "--to", DAYS[1], "--dry-run", *common])
    assert result.exit_code == 0, result.output
    assert store.count() == before
    assert "dry run" in result.output

    result = CliRunner().invoke(main, ["backfill", "--from", DAYS[0], "--to", DAYS[1], *common])
    assert result.exit_code == 0, result.output
    assert [e.date for e in events_of(runtime, "e2e") if type(e).__name__ == "DailyRunRequested"] == DAYS[:2]
    assert store.latest("EpochTrained", DAYS[0]) is not None
    assert store.latest("RolloutsGenerated", DAYS[1]) is not None

    result = CliRunner().invoke(main, ["backfill", "--from", DAYS[0], "--to", DAYS[1], "--reprocess", "all", *common])
    assert result.exit_code != 0
    assert "--into" in result.output


def test_backfill_resumes_a_requested_day_whose_chain_was_lost(runtime, tmp_path, redis_client):
    run_days(runtime, "e2e", [DAYS[0]], source="sample")
    request_day(runtime.context("e2e"), DAYS[1], trigger="manual", source="sample")
    # the dispatcher acks the request but its fetch job is lost (expired, flushed, ...)
    lost = Dispatcher(redis_client, runtime.cfg, name="lossy").consumer("e2e")
    for delivery in lost.read(count=10, block_ms=None):
        lost.ack(delivery.entry_id)
    store = runtime.store("e2e")
    assert store.latest("HeadlinesFetched", DAYS[1]) is None

    url = redis_client.connection_pool.connection_kwargs["path"]
    result = CliRunner().invoke(
        main,
        [
            "backfill",
            "--from",
            DAYS[0],
            "--to",
            DAYS[1],
            "--ns",
            "e2e",
            "--data-dir",
            str(tmp_path),
            "--redis-url",
            f"unix://{url}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert store.latest("EpochTrained", DAYS[0]) is not None
    assert store.latest("RolloutsGenerated", DAYS[1]).checkpoint == store.latest("EpochTrained", DAYS[0]).checkpoint
    assert len(store.all_for("DailyRunRequested", DAYS[1])) == 1


def test_override_ranks_against_chosen_day_then_continues(runtime, tmp_path, redis_client):
    # Day 1 ran; day 2 never came; day 3 was fetched and generated with the base model.
    first, skipped, third, fourth = sample_dates()[:4]
    run_days(runtime, "e2e", [first, third], source="sample")
    store = runtime.store("e2e")
    assert store.latest("Ranked", first) is None  # no next-day headlines, so nothing ranked it

    url = redis_client.connection_pool.connection_kwargs["path"]
    common = ["--ns", "e2e", "--data-dir", str(tmp_path), "--redis-url", f"unix://{url}"]
    status = CliRunner().invoke(main, ["status", *common])
    assert status.exit_code == 0, status.output
    assert f"no next-day headlines (rank them with `varro override`): {first}" in status.output
    refused = CliRunner().invoke(main, ["override", "--prediction-date", third, "--headlines-date", first, *common])
    assert refused.exit_code != 0 and "must be after" in refused.output

    result = CliRunner().invoke(
        main,
        [
            "override",
            "--prediction-date",
            first,
            "--headlines-date",
            third,
            "--ns",
            "e2e",
            "--data-dir",
            str(tmp_path),
            "--redis-url",
            f"unix://{url}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert store.latest("Ranked", first).outcome_date == third
    trained = store.latest("EpochTrained", first)
    assert trained is not None

    # the chain continues: day 4 ranks day 3 and trains it on top of the override's checkpoint
    run_days(runtime, "e2e", [fourth], source="sample")
    assert store.latest("EpochTrained", third).parent_checkpoint.sha256 == trained.checkpoint.sha256
    assert store.latest("RolloutsGenerated", fourth).checkpoint.sha256 == (
        store.latest("EpochTrained", third).checkpoint.sha256
    )
    assert store.latest("RolloutsGenerated", skipped) is None


def test_concurrent_daily_requests_give_one_run(tmp_path, redis_server):
    url = redis_server.url
    cmd = [
        sys.executable,
        "-m",
        "varro.cli",
        "daily",
        "--date",
        DAYS[0],
        "--source",
        "sample",
        "--ns",
        "race",
        "--data-dir",
        str(tmp_path),
        "--redis-url",
        url,
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert sum("already requested" not in out for out in outputs) == 1
    import redis as redis_py

    from events.store import EventStore

    store = EventStore(redis_py.Redis.from_url(url), "race")
    assert len(store.all_for("DailyRunRequested", DAYS[0])) == 1


class SwitchableJudge:
    """An OpenAI-compatible judge on loopback that answers 503 until it is switched on."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self
        self.healthy = False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                if owner.healthy:
                    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).encode()
                    self.send_response(200)
                else:
                    body = b"overloaded"
                    self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_failed_day_is_rerun_by_backfill_reprocess_failed(tmp_path, redis_client):
    judge = SwitchableJudge()
    try:
        cfg = small_config(tmp_path)
        import msgspec

        cfg = msgspec.structs.replace(
            cfg,
            judge=msgspec.structs.replace(
                cfg.judge,
                kind="http",
                fallback="none",
                http_url=judge.url,
                retries=1,
                http_backoff_s=0.0,
                http_timeout_s=5.0,
            ),
        )
        rt = Runtime.create(cfg, redis=redis_client)
        from workers.inprocess import RunFailed

        with pytest.raises(RunFailed, match=f"rank {DAYS[0]}"):
            run_days(rt, "e2e", DAYS[:2], source="sample")
        store = rt.store("e2e")
        assert store.latest("Ranked", DAYS[0]) is None

        url = redis_client.connection_pool.connection_kwargs["path"]
        common = ["--ns", "e2e", "--data-dir", str(tmp_path), "--redis-url", f"unix://{url}"]
        status = CliRunner().invoke(main, ["status", *common])
        assert status.exit_code == 3, status.output  # a failed day: exit 3 for monitors
        assert "failed" in status.output

        judge.healthy = True
        result = CliRunner().invoke(
            main, ["backfill", "--from", DAYS[0], "--to", DAYS[1], "--reprocess", "failed", *common]
        )
        assert result.exit_code == 0, result.output
        ranked = store.latest("Ranked", DAYS[0])
        assert ranked is not None and ranked.judge.startswith("http")
        assert store.latest("EpochTrained", DAYS[0]) is not None
        assert store.latest("RolloutsGenerated", DAYS[1]).checkpoint.sha256 == (
            store.latest("EpochTrained", DAYS[0]).checkpoint.sha256
        )
        rt.models.release()
    finally:
        judge.close()


def test_sharded_generation_merges_into_the_same_rollouts_as_one_job(tmp_path, redis_client):
    import msgspec

    base = small_config(tmp_path, ns="reference")
    # 2 headlines a generation pass, so the 4 headlines make 2 passes for 3 shard jobs
    base = msgspec.structs.replace(base, generation=msgspec.structs.replace(base.generation, batch_size=16))
    reference = Runtime.create(base, redis=redis_client)
    run_days(reference, "reference", DAYS[:1], source="sample", seed=42)

    sharded_cfg = msgspec.structs.replace(
        base, ns="sharded", workers=msgspec.structs.replace(base.workers, generate_shards=3)
    )
    sharded = Runtime(cfg=sharded_cfg, redis=redis_client, artifacts=reference.artifacts, models=reference.models)
    run_days(sharded, "sharded", DAYS[:1], source="sample", seed=42)

    merged = sharded.store("sharded").all_for("RolloutsGenerated", DAYS[0])
    single = reference.store("reference").all_for("RolloutsGenerated", DAYS[0])
    assert len(merged) == 1 and len(single) == 1
    assert merged[0].artifact.sha256 == single[0].artifact.sha256
    assert not redis_client.keys(b"varro:{sharded}:shards:*")  # coordination state is cleaned up
    from workers.dispatcher import MODEL_QUEUE
    from workers.queues import queue

    model_queue = queue(MODEL_QUEUE, redis_client)
    finished = [model_queue.fetch_job(j) for j in model_queue.finished_job_registry.get_job_ids()]
    funcs = sorted(j.func_name for j in finished if j is not None and j.meta.get("ns") == "sharded")
    assert funcs == ["workers.tasks.generate_shard"] * 3 + ["workers.tasks.merge_generated"]
    reference.models.release()


def test_run_command_over_a_file_source_defaults_to_the_files_dates(tmp_path, redis_client):
    lines = [
        {
            "text": "Fed holds rates steady as inflation cools to 2.9%",
            "link": "https://news.example/a",
            "source": "wire",
            "published": "2025-09-01T13:00:00Z",
        },
        {
            "text": "Oil falls 3% as OPEC+ signals higher output",
            "link": "https://news.example/b",
            "source": "wire",
            "published": "2025-09-01T15:00:00Z",
        },
        {
            "text": "Treasury yields drop after Fed decision; dollar slips",
            "link": "https://news.example/c",
            "source": "wire",
            "published": "2025-09-02T09:00:00Z",
        },
    ]
    feed = tmp_path / "head,lines.jsonl"  # a comma in a path: recorded whole, read back whole
    feed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = redis_client.connection_pool.connection_kwargs["path"]
    env = {"VARRO_GENERATION__PROFILES__DEFAULT__MAX_TOKENS": "24", "VARRO_WORKERS__RETRIES": "0"}
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--source",
            "files",
            "--file",
            str(feed),
            "--ns",
            "files",
            "--data-dir",
            str(tmp_path / "data"),
            "--redis-url",
            f"unix://{url}",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "2 day(s) 2025-09-01 .. 2025-09-02" in result.output
    assert "Varro: per-day summary" in result.output
    from events.store import EventStore

    store = EventStore(redis_client, "files")
    assert [len(store.latest("HeadlinesFetched", d).headlines) for d in ("2025-09-01", "2025-09-02")] == [2, 1]
    assert store.latest("EpochTrained", "2025-09-01") is not None
    assert (tmp_path / "data" / "timestamped_storage_files" / "2025-09-01_evaluations.json").exists()
