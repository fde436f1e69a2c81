"""A Redis password in REDIS_URL never reaches the screen or a child's command line."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from events.connection import redact
from varro.cli import main

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret-Pa55"


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def secret_url(monkeypatch, tmp_path):
    url = f"redis://:{PASSWORD}@127.0.0.1:{_refused_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("VARRO_DATA_DIR", str(tmp_path / "data"))
    return url


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("rediss://user:pw@host/1", "rediss://***@host/1"),
        ("see redis://token@h/0 and unix:///tmp/s.sock", "see redis://***@h/0 and unix:///tmp/s.sock"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:p@ss@host/0", "redis://***@host/0"),  # an unescaped @ in the password hides it all
        ("unix://:pw@/tmp/valkey.sock?db=0", "unix://***@/tmp/valkey.sock?db=0"),
        # TLS: the client key's passphrase travels in the query too (redis-py's ssl_password)
        (
            "rediss://h:6380/0?ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_password=kp",
            "rediss://h:6380/0?ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_password=***",
        ),
        ("rediss://h/0?ssl_password=kp&ssl_cert_reqs=required", "rediss://h/0?ssl_password=***&ssl_cert_reqs=required"),
    ],
)
def test_redact_hides_credentials_in_urls(text, shown):
    assert redact(text) == shown


def test_redact_hides_a_bare_password_of_the_given_url():
    assert redact(f"AUTH {PASSWORD} failed", f"redis://:{PASSWORD}@h/0") == "AUTH *** failed"


def test_doctor_does_not_print_the_password(secret_url):
    result = _invoke("doctor")
    assert result.exit_code == 1  # the server is unreachable
    assert "redis://***@127.0.0.1" in result.output
    assert PASSWORD not in result.output


@pytest.mark.parametrize("command", [["status"], ["events", "tail"]])
def test_connection_errors_do_not_print_the_password(secret_url, command):
    result = _invoke(*command)
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output


def test_dashboard_passes_the_url_through_the_environment(secret_url, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda args, **kwargs: calls.append((args, kwargs)) or 0)
    result = _invoke("dashboard", "--port", "9999")
    assert result.exit_code == 0, result.output
    ((args, kwargs),) = calls
    assert not any(PASSWORD in a for a in args)
    assert "--json" in args and "--redis-url" not in args
    assert kwargs["env"]["RQ_DASHBOARD_REDIS_URL"] == secret_url


def test_rq_dashboard_reads_its_url_from_the_environment(monkeypatch, secret_url):
    cli = pytest.importorskip("rq_dashboard.cli")
    monkeypatch.setenv("RQ_DASHBOARD_REDIS_URL", secret_url)
    ctx = cli.run.make_context("rq-dashboard", ["--json"], auto_envvar_prefix="RQ_DASHBOARD")
    assert ctx.params["redis_url"] == (secret_url,)
    assert ctx.params["json"] is True
