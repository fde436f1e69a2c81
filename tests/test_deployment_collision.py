"""`varro run` and `varro backfill` on a namespace a deployment's dispatcher is consuming:
refused with a reason that names it, before anything is recorded (it used to exit 1 with
"did not complete" while the deployment quietly did the work)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from events.store import EventStore
from varro.cli import main
from workers.dispatcher import PRESENCE_TTL_S, active_dispatchers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
NS = "dep"
DAY = "2025-08-04"


def test_run_and_backfill_refuse_a_namespace_a_running_dispatcher_consumes(redis_server, redis_client, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    common = ["--ns", NS, "--data-dir", str(tmp_path), "--redis-url", redis_server.url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "varro.cli", "dispatcher", *common],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not active_dispatchers(redis_client, NS, besides="test") and time.monotonic() < deadline:
            assert proc.poll() is None, "the dispatcher died"
            time.sleep(0.2)
        (name,) = active_dispatchers(redis_client, NS, besides="test")
        for command in (
            ["run", "--from", DAY, "--to", DAY, "--source", "sample"],
            ["backfill", "--from", DAY, "--to", DAY, "--source", "sample"],
        ):
            result = CliRunner().invoke(main, [*command, *common])
            assert result.exit_code == 2, result.output
            assert "running deployment" in result.output and name in result.output, result.output
            assert "did not complete" not in result.output
            assert "Traceback" not in result.output
        assert EventStore(redis_client, NS).count() == 0  # refused before anything was recorded
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    # a stopped (or killed) dispatcher's presence expires: then runs go ahead again
    deadline = time.monotonic() + 3 * PRESENCE_TTL_S
    while active_dispatchers(redis_client, NS, besides="test") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert active_dispatchers(redis_client, NS, besides="test") == []
