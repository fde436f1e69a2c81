"""Throughput against the number of worker processes, where the CPU is not the limit.

Two stages whose time is waiting on other machines, each run with 1, 2 and 4
real worker processes (`varro worker model` / `varro worker fetch`, started
here) on one embedded Valkey server (started here, AOF on, as Varro runs it):

* judging: one day's ranking in `--shards` shard jobs (the tasks the
  dispatcher enqueues for `workers.rank_shards`), the HTTP judge against a
  loopback OpenAI-compatible server that answers "A" after `--latency-ms`
  without using the CPU (bench_judge_http's latency server: a hosted API,
  where the time is the round trip). Timed from the first shard enqueued to
  the merged `Ranked` recorded. The first row is one unsharded rank job on
  one worker (the default), so the row after it is what sharding itself costs.
  Every run records the same seed, so every run's ranking, sharded or not,
  must hash the same (checked: the figure is for the real work).
* fetching: `--namespaces` namespaces each fetching today's RSS from feeds on
  a loopback server that answers each after `--feed-latency-ms` (the test
  feed server, tests/fixtures/feeds/server.py). One day's feeds are already
  fetched in parallel threads inside its job; what more workers add is
  several days' fetch jobs at once. Timed from the first job enqueued to the
  last `HeadlinesFetched` recorded.

Workers are started and registered before the clock starts and stopped after,
so start-up (importing mlx) is not counted. Repeats alternate the order of the
worker counts so a change in machine load hits all of them; the summary is the
median and range, each repeat's speed-up over the first row, and the load average.

    PYTHONPATH=$PWD .venv/bin/python -m bench.bench_scale [--repeats 3] [--latency-ms 200] [--shards 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import msgspec
import redis as redis_lib
from rq import Worker

from bench.bench_judge_http import OUTCOMES, day, start_latency_server
from events.ids import canonical_hash, derive_event_id, today_utc
from events.schema import (
    ArtifactRef,
    CheckpointRef,
    GenerationStats,
    Headline,
    HeadlinesFetched,
    Ranked,
    RolloutGroup,
    RolloutsGenerated,
    RolloutSummary,
    SamplerSpec,
)
from events.server import EmbeddedServer
from events.store import EventStore
from jobs.context import JobContext
from jobs.daily import request_day
from varro.artifacts import ArtifactStore
from varro.config import VarroConfig, load_config
from varro.headlines.spec import as_source
from varro.logging import configure_logging
from workers.dispatcher import FETCH_QUEUE, MODEL_QUEUE, Dispatcher, JobSpec, plan
from workers.queues import queue

ROOT = Path(__file__).resolve().parent.parent
D, OUTCOME_DAY = "2025-03-03", "2025-03-04"
WORKERS = (1, 2, 4)
START_S = 180  # for N workers to import and register on a loaded 2-core machine
RUN_S = 600


def load_feed_server() -> type:
    """The headline tests' loopback feed server, with a slow feed of today's stories added."""
    spec = importlib.util.spec_from_file_location(
        "varro_feed_server", ROOT / "tests" / "fixtures" / "feeds" / "server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class SlowFeeds(module.FeedServer):  # type: ignore[name-defined,misc]
        """/slow-today/<n>: today's two stories, after `slow_s` (a feed far away, not a busy CPU)."""

        def route(self, h: BaseHTTPRequestHandler) -> None:
            if h.path.startswith("/slow-today/"):
                time.sleep(self.slow_s)
                return self._send(h, 200, module._today_feed())
            return super().route(h)

    return SlowFeeds


def env_of(overrides: dict, prefix: str = "VARRO_") -> dict[str, str]:
    """The VARRO_SECTION__KEY environment a worker reads `overrides` from."""
    out = {}
    for k, v in overrides.items():
        if isinstance(v, dict):
            out.update(env_of(v, f"{prefix}{k.upper()}__"))
        else:
            out[f"{prefix}{k.upper()}"] = str(v)
    return out


class Workers:
    """N `varro worker <role>` processes, each in its own process group, registered before use."""

    def __init__(self, role: str, n: int, url: str, data_dir: Path, env: dict[str, str], logs: Path):
        base = {**os.environ, **env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        base.pop("REDIS_URL", None)
        base.pop("VARRO_CONFIG", None)
        args = ["--log-level", "WARNING", "worker", role, "--redis-url", url, "--data-dir", str(data_dir)]
        self.procs = []
        for i in range(n):
            log = (logs / f"{role}-{n}-{i}-{time.monotonic_ns()}.log").open("wb")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "varro.cli", *args],
                    cwd=ROOT,
                    env=base,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:.0f}s: {what}")
        time.sleep(every_s)


def registered(redis: redis_lib.Redis, n: int) -> Callable[[], bool]:
    return lambda: len(Worker.all(connection=redis)) == n


def timed_with_workers(
    redis: redis_lib.Redis, role: str, n: int, url: str, data_dir: Path, env: dict[str, str], logs: Path, work
) -> float:
    """Seconds `work()` takes (it enqueues and waits for its events) with `n` registered workers."""
    wait_for(registered(redis, 0), START_S, "the previous workers to go")
    workers = Workers(role, n, url, data_dir, env, logs)
    try:
        wait_for(registered(redis, n), START_S, f"{n} {role} workers to register", every_s=0.2)
        started = time.perf_counter()
        work()
        return time.perf_counter() - started
    finally:
        workers.stop()


def record_judging_day(ctx: JobContext, groups: int, size: int) -> None:
    """A day's roll-outs and the next day's headlines, and a request that records the seed and config."""
    request_day(ctx, D, trigger="bench", source="sample", seed=42)
    store, texts = ctx.store, day(groups, size)
    headlines = [Headline(id=g.headline_id, text=g.headline, source="bench") for g in texts]
    fetched = HeadlinesFetched(
        event_id=derive_event_id(store.ns, "HeadlinesFetched", D, ["bench"]),
        ns=store.ns,
        date=D,
        correlation_id="bench",
        headlines=headlines,
        sources=[],
        source_kind="file",
    )
    store.append(fetched)
    summaries = [
        RolloutGroup(
            headline_id=g.headline_id,
            prompt_tokens=0,
            rollouts=[
                RolloutSummary(index=i, seed=i, text=t, n_tokens=0, truncated=False, structure_score=0.0)
                for i, t in enumerate(g.texts)
            ],
        )
        for g in texts
    ]
    store.append(
        RolloutsGenerated(
            event_id=derive_event_id(store.ns, "RolloutsGenerated", D, [fetched.event_id]),
            ns=store.ns,
            date=D,
            correlation_id="bench",
            headlines_event_id=fetched.event_id,
            checkpoint=CheckpointRef(sha256="0" * 64, base_model="bench"),
            sampler=SamplerSpec(),
            group_size=size,
            base_seed=42,
            prompt_hash="0" * 64,
            groups=summaries,
            artifact=ArtifactRef(sha256="0" * 64, size=0, kind="rollouts"),
            stats=GenerationStats(
                headlines=groups,
                rollouts=groups * size,
                generated_tokens=0,
                truncated=0,
                avg_structure_score=0.0,
                wall_s=0.0,
            ),
        )
    )
    store.append(
        HeadlinesFetched(
            event_id=derive_event_id(store.ns, "HeadlinesFetched", OUTCOME_DAY, ["bench"]),
            ns=store.ns,
            date=OUTCOME_DAY,
            correlation_id="bench",
            headlines=[Headline(id=f"o{i}", text=t, source="bench") for i, t in enumerate(OUTCOMES)],
            sources=[],
            source_kind="file",
        )
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def summarise(title: str, unit: str, per_run: float, times: dict[str, list[float]]) -> None:
    """One table; speed-ups are over the first row, repeat by repeat."""
    print(f"\n{title}")
    print(f"| workers | seconds (median) | range | {unit} (median) | speed-up over the first row (each repeat) |")
    print("|---|---|---|---|---|")
    first = next(iter(times.values()))
    for label, ts in times.items():
        ratios = [one / t for one, t in zip(first, ts, strict=True)]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"| {label} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} | "
            f"{per_run / statistics.median(ts):.2f} | {statistics.median(ratios):.2f}x ({each}) |"
        )


@dataclass(frozen=True)
class Bench:
    redis: redis_lib.Redis
    url: str
    cfg: VarroConfig
    data_dir: Path
    env: dict[str, str]
    logs: Path

    def judge(self, ns: str, n: int, shards: int, groups: int, size: int) -> tuple[float, str]:
        """(seconds, output hash) of ranking one recorded day in `shards` jobs with `n` model workers."""
        store = EventStore(self.redis, ns)
        ctx = JobContext(
            cfg=msgspec.structs.replace(self.cfg, ns=ns),
            store=store,
            artifacts=ArtifactStore(self.data_dir),
            models=None,
        )
        record_judging_day(ctx, groups, size)
        specs = plan(store.latest("HeadlinesFetched", OUTCOME_DAY), store, rank_shards=shards)

        def judge_day() -> None:
            dispatcher = Dispatcher(self.redis, self.cfg)
            for spec in specs:
                dispatcher.enqueue(spec)
            wait_for(lambda: store.latest("Ranked", D) is not None or _failed(self.redis), RUN_S, "the Ranked")

        seconds = timed_with_workers(self.redis, "model", n, self.url, self.data_dir, self.env, self.logs, judge_day)
        ranked = store.latest_of(Ranked, D)
        if ranked is None or ranked.stats.primary_share != 1.0:
            raise SystemExit(f"judging with {n} workers did not complete cleanly; logs in {self.logs}")
        return seconds, canonical_hash(msgspec.to_builtins(ranked.groups))

    def fetch(self, prefix: str, n: int, namespaces: int) -> float:
        """Seconds for `n` fetch workers to record today's headlines in each of `namespaces` namespaces."""
        today = today_utc()
        stores = [EventStore(self.redis, f"{prefix}-{k}") for k in range(namespaces)]

        def done() -> bool:
            return all(s.latest("HeadlinesFetched", today) is not None for s in stores)

        def fetch_days() -> None:
            dispatcher = Dispatcher(self.redis, self.cfg)
            source = msgspec.to_builtins(as_source("rss"))
            for s in stores:
                dispatcher.enqueue(JobSpec("fetch", s.ns, today, "bench", "bench", {"source": source}))
            wait_for(lambda: done() or _failed(self.redis), RUN_S, "every HeadlinesFetched")

        seconds = timed_with_workers(self.redis, "fetch", n, self.url, self.data_dir, self.env, self.logs, fetch_days)
        if not done():
            raise SystemExit(f"fetching with {n} workers did not complete cleanly; logs in {self.logs}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the HTTP judge's answer time")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--namespaces", type=int, default=8, help="fetch jobs at once (one per namespace)")
    parser.add_argument("--feeds", type=int, default=4, help="feeds of each fetch")
    parser.add_argument("--feed-latency-ms", type=float, default=1000.0)
    parser.add_argument("--only", choices=["judge", "fetch"], default=None)
    args = parser.parse_args()
    configure_logging("WARNING")  # the enqueue lines would bury the figures

    work_dir = Path(tempfile.mkdtemp(prefix="bench_scale."))
    data_dir, logs = work_dir / "data", work_dir / "logs"
    logs.mkdir(parents=True)
    server = EmbeddedServer(work_dir / "redis")
    server.start()
    redis = redis_lib.Redis.from_url(server.url)
    judge_httpd, judge_url = start_latency_server(args.latency_ms / 1000)
    feeds = load_feed_server()(slow_s=args.feed_latency_ms / 1000).start()
    feeds_file = work_dir / "feeds.toml"
    feeds_file.write_text(
        "[markets]\n" + "".join(f'wire{i} = "{feeds.url(f"/slow-today/{i}")}"\n' for i in range(args.feeds))
    )
    overrides = {
        "judge": {"kind": "http", "http_url": judge_url, "http_model": "bench", "retries": 0, "http_timeout_s": 60},
        "headlines": {"feeds_file": str(feeds_file), "retries": 0, "timeout_s": 30},
    }
    cfg = load_config(overrides={"data_dir": str(data_dir), **overrides}, environ={})
    bench = Bench(redis, server.url, cfg, data_dir, env_of(overrides), logs)
    # (label, workers, shards); the first is today's default, one rank job
    judge_cases = [("1, one rank job", 1, 1), *((f"{n}, {args.shards} shards", n, args.shards) for n in WORKERS)]
    judge_times: dict[str, list[float]] = {label: [] for label, _, _ in judge_cases}
    fetch_times: dict[str, list[float]] = {str(n): [] for n in WORKERS}
    hashes: set[str] = set()
    print(f"work dir {work_dir}; load average at start {load()}", flush=True)
    loads = [load()]
    try:
        for repeat in range(args.repeats):
            forward = repeat % 2 == 0
            if args.only != "fetch":
                for label, n, shards in judge_cases if forward else judge_cases[::-1]:
                    ns = f"judge-{repeat}-{n}-{shards}"
                    seconds, digest = bench.judge(ns, n, shards, args.groups, args.group_size)
                    hashes.add(digest)
                    judge_times[label].append(seconds)
                    print(f"repeat {repeat + 1}, {label}: judged the day in {seconds:.2f}s", flush=True)
                    loads.append(load())
            if args.only != "judge":
                for n in WORKERS if forward else WORKERS[::-1]:
                    seconds = bench.fetch(f"fetch-{repeat}-{n}", n, args.namespaces)
                    fetch_times[str(n)].append(seconds)
                    print(f"repeat {repeat + 1}, {n} fetch workers: {args.namespaces} fetches in {seconds:.2f}s")
                    loads.append(load())
    finally:
        judge_httpd.shutdown()
        feeds.stop()
        redis.close()
        server.stop()

    print(f"\nload average (1, 5, 15 min) at start and after each step: {'; '.join(loads)}")
    if args.only != "fetch":
        if len(hashes) != 1:
            raise SystemExit(f"the runs ranked differently: {len(hashes)} output hashes")
        summarise(
            f"Judging: {args.groups} groups x {args.group_size} roll-outs ({args.group_size - 1} rounds each, plus "
            f"the agreement re-judge of {cfg.judge.agreement_sample} groups), HTTP judge answering after "
            f"{args.latency_ms:g} ms, one request at a time per job; every run's ranking hashes the same "
            f"({next(iter(hashes))[:16]})",
            "groups/s",
            args.groups,
            judge_times,
        )
    if args.only != "judge":
        summarise(
            f"Fetching: {args.namespaces} namespaces' fetch of today, {args.feeds} feeds each answering after "
            f"{args.feed_latency_ms:g} ms",
            "fetches/s",
            args.namespaces,
            fetch_times,
        )


def _failed(redis: redis_lib.Redis) -> bool:
    """A job in a failed registry ends the wait (the run is then reported as not clean)."""
    return any(queue(name, redis).failed_job_registry.count for name in (FETCH_QUEUE, MODEL_QUEUE))


if __name__ == "__main__":
    main()
