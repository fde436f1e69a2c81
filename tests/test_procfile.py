"""The deployment: every Procfile process under honcho against the embedded server,
a manual `varro daily`, and the day's chain carried out by the real dispatcher,
forking fetch worker and model worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from events.connection import connect
from events.store import EventStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DAY = "2025-08-04"


def free_port() -> int:
    """A loopback port nobody holds now; honcho gives each process this + 100·i."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_procfile_processes_carry_out_a_daily_request(tmp_path):
    bindir = Path(sys.executable).parent
    honcho = bindir / "honcho"
    if not honcho.exists():
        pytest.skip("honcho is not installed (pip install -e '.[ops]')")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VARRO_DATA_DIR": str(tmp_path),
        "VARRO_NS": "deploy",
        "VARRO_GENERATION__MAX_HEADLINES": "2",
        "VARRO_GENERATION__PROFILES__DEFAULT__MAX_TOKENS": "24",
    }
    env.pop("REDIS_URL", None)
    subprocess.run([bindir / "varro", "server", "start", "--data-dir", str(tmp_path)], env=env, check=True)
    proc = subprocess.Popen(
        [honcho, "start", "-f", str(ROOT / "Procfile"), "-p", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        done = subprocess.run(
            [bindir / "varro", "daily", "--date", DAY, "--source", "sample"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        store = EventStore(connect(None, tmp_path), "deploy")
        deadline = time.monotonic() + 240
        while store.latest("RolloutsGenerated", DAY) is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            time.sleep(1)
        generated = store.latest("RolloutsGenerated", DAY)
        assert generated is not None, "the deployment did not carry out the day in time"
        assert len(generated.groups) == 2
        assert [type(s.event).__name__ for s in store.read()] == [
            "DailyRunRequested",
            "HeadlinesFetched",
            "RolloutsGenerated",
        ]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output = proc.communicate()[0].decode()
        subprocess.run([bindir / "varro", "server", "stop", "--data-dir", str(tmp_path)], env=env)
    for name in ("dispatcher.1", "fetch.1", "model.1", "scheduler.1", "dashboard.1"):
        assert name in output, f"{name} did not start:\n{output[-3000:]}"
