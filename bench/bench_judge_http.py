"""Groups ranked per second by the HTTP judge: rounds sent concurrently against one at a time.

Both sides rank the same day against the same real OpenAI-compatible server,
mlx_lm.server serving varro-tiny on loopback (started here, offline, with the
OpenBLAS preload that `import varro` does, as a varro worker would have), with
the `logit_bias` constraint (one token per round, always a valid letter). The
server batches concurrent requests, so the concurrent side saves on the
server's work as well as on the round trips. Each run uses its own selection
seed, so its shown orders and prompts are new to the server's prompt cache
(the shared prefix, instruction and outcome headlines, is cached as in a real
day). Repeats alternate the two sides so a change in machine load hits both;
the summary is the median and range.
A third row is today's default request (no constraint, 4 tokens, 3 retries):
varro-tiny never answers a letter freely, so every group falls back.

`--latency-ms N` runs the same comparison against a loopback server that
answers "A" after N ms without using the CPU: a hosted API, where the time is
the round trip and not this machine's.

    .venv/bin/python -m bench.bench_judge_http [--groups 16] [--group-size 8] [--concurrency 8] [--repeats 5]
    .venv/bin/python -m bench.bench_judge_http --latency-ms 50
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from varro.config import JudgeConfig
from varro.judging import LexicalJudge, build_judge, rank_groups
from varro.judging.selection import GroupToRank
from varro.model.cache import ensure_default_model

OUTCOMES = tuple(
    f"{asset} {move} after {event}"
    for asset in ("Oil", "Gold", "Treasury yields", "Bank stocks")
    for move in ("surges", "slides")
    for event in ("OPEC cuts output", "the Fed holds rates")
)
SECTIONS = ("Market Impact", "Specific Assets", "Trade Recommendation", "Timeframe", "Risk Factors", "World View")


def day(groups: int, size: int) -> list[GroupToRank]:
    """Roll-outs of about the length generation writes (six short sections)."""
    return [
        GroupToRank(
            headline_id=f"h{g}",
            headline=f"Headline {g}: OPEC weighs a deeper output cut",
            texts=tuple(
                " ".join(f"{s}: {OUTCOMES[(g + j + k) % len(OUTCOMES)]} ({g}-{j})." for k, s in enumerate(SECTIONS))
                for j in range(size)
            ),
        )
        for g in range(groups)
    ]


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # `import varro` first preloads OpenBLAS (varro.blas); then the server runs as `python -m mlx_lm.server`.
    argv = ["mlx_lm.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    launch = f"import runpy, sys, varro; sys.argv = {argv!r}; runpy.run_module('mlx_lm.server', run_name='__main__')"
    command = [sys.executable, "-c", launch]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/v1/models", timeout=2.0).status_code == 200:
                return proc, f"{base}/v1/chat/completions"
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"mlx_lm.server did not start: {log.read_text()[-2000:]}")


def start_latency_server(latency_s: float) -> tuple[ThreadingHTTPServer, str]:
    """A stand-in for a remote API: every answer is "A", after `latency_s` of waiting."""
    reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A"}}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency_s)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"


def run(cfg: JudgeConfig, groups: list[GroupToRank], seed: int) -> tuple[float, float]:
    """(groups/s, primary share) of ranking the day once."""
    judge = build_judge("http", cfg)
    started = time.perf_counter()
    ranked = rank_groups(groups, OUTCOMES, judge, LexicalJudge(), seed=seed)
    elapsed = time.perf_counter() - started
    judge.client.close()
    return len(groups) / elapsed, sum(g.judge == judge.name for g in ranked) / len(ranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=None, help="a latency-only loopback server instead")
    args = parser.parse_args()

    model = ensure_default_model()
    groups = day(args.groups, args.group_size)
    if args.latency_ms is None:
        proc, url = start_server(model, Path("/tmp") / f"bench_judge_http.{os.getpid()}.log")
        server = "mlx_lm.server + varro-tiny"
        stop = proc.terminate
    else:
        httpd, url = start_latency_server(args.latency_ms / 1000)
        server = f"a server answering after {args.latency_ms:g} ms"
        stop = httpd.shutdown
    try:
        common = dict(kind="http", http_url=url, http_model="default_model", http_timeout_s=120.0)
        constrained = dict(common, http_constraint="logit_bias", http_tokenizer=str(model), retries=0)
        sides = {
            "sequential": JudgeConfig(**constrained, http_concurrency=1),
            f"concurrent ({args.concurrency})": JudgeConfig(**constrained, http_concurrency=args.concurrency),
        }
        seeds = iter(range(1000, 2000))
        for cfg in sides.values():  # warm-up: the server's first requests load and cache the shared prefix
            run(cfg, groups[:2], next(seeds))
        rates: dict[str, list[float]] = {name: [] for name in sides}
        shares: dict[str, list[float]] = {name: [] for name in sides}
        for repeat in range(args.repeats):
            names = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
            for name in names:
                rate, share = run(sides[name], groups, next(seeds))
                rates[name].append(rate)
                shares[name].append(share)
                print(f"repeat {repeat + 1} {name}: {rate:.2f} groups/s, primary share {share:.2f}", flush=True)
        today = JudgeConfig(**common, http_concurrency=1, http_backoff_s=0.0)
        today_rate, today_share = run(today, groups, next(seeds)) if args.latency_ms is None else (None, None)
        load = Path("/proc/loadavg").read_text().split()[:3]
    finally:
        stop()

    print(
        f"\n{args.groups} groups x {args.group_size} roll-outs, {len(OUTCOMES)} outcome headlines, "
        f"{server} on loopback, {args.repeats} alternating repeats; load average {' '.join(load)}"
    )
    print("| judge requests | groups/s (median) | range | primary share |")
    print("|---|---|---|---|")
    for name in sides:
        r, low = rates[name], min(shares[name])
        print(f"| logit_bias, {name} | {statistics.median(r):.2f} | {min(r):.2f}–{max(r):.2f} | {low:.2f} |")
    if today_rate is not None:
        today_row = "no constraint, 4 tokens, 3 retries, sequential (today's default)"
        print(f"| {today_row} | {today_rate:.2f} | one run | {today_share:.2f} |")
    seq, con = (statistics.median(rates[name]) for name in sides)
    print(f"\nconcurrent / sequential: {con / seq:.2f}x (median groups/s)")


if __name__ == "__main__":
    main()
