"""`rediss://`: Varro through a TLS-terminating endpoint in front of a password-protected Valkey.

The bundled server has no TLS, so the test puts a small TLS proxy (Python's `ssl`, a
certificate made here for 127.0.0.1) in front of the `secured` server of
test_password_server, the way stunnel or a cloud endpoint would. What is tested is
what Varro owns: the URL with its `ssl_*` query parameters reaches redis-py as
given, the loop's commands work through it, secrets stay off the screen, and an
untrusted certificate is one clear error before anything is recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
import redis as redis_py
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_password_server import PASSWORD, secured  # noqa: F401  (the fixture)

from varro.cli import main


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "varro-test-tls")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tls_endpoint(secured, tmp_path):  # noqa: F811
    """127.0.0.1:PORT speaking TLS, forwarding to the password-protected server; yields (port, CA file)."""
    _, backend_port = secured
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(10)
                client = context.wrap_socket(raw, server_side=True)
                client.settimeout(None)
            except (ssl.SSLError, OSError):  # a client that refuses the certificate
                raw.close()
                continue
            backend = socket.create_connection(("127.0.0.1", backend_port))
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], cert
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_the_loop_s_commands_go_through_rediss_with_the_ca_in_the_url(tls_endpoint, secured, tmp_path):  # noqa: F811
    port, ca = tls_endpoint
    plain_url, _ = secured
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    common = ["--ns", "tls", "--data-dir", str(tmp_path / "data")]
    done = CliRunner().invoke(
        main, ["daily", "--date", "2025-08-05", "--source", "sample", *common], env={"REDIS_URL": url}
    )
    assert done.exit_code == 0, done.output
    assert "2025-08-05 requested in tls" in done.output and PASSWORD not in done.output
    assert redis_py.Redis.from_url(plain_url).xlen("varro:{tls}:stream") == 1  # it went through the endpoint
    doctor = CliRunner().invoke(main, ["doctor", *common], env={"REDIS_URL": url})
    assert "redis reachable" in doctor.output and "yes" in doctor.output, doctor.output
    assert PASSWORD not in doctor.output
    tail = CliRunner().invoke(main, ["events", "tail", *common], env={"REDIS_URL": url})
    assert tail.exit_code == 0 and "DailyRunRequested" in tail.output, tail.output


def test_an_untrusted_certificate_is_one_clear_error_and_records_nothing(tls_endpoint, secured, tmp_path):  # noqa: F811
    port, _ = tls_endpoint
    plain_url, _ = secured
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"  # no ssl_ca_certs: the system's CAs do not know this one
    result = CliRunner().invoke(
        main,
        ["daily", "--date", "2025-08-05", "--source", "sample", "--ns", "tls2", "--data-dir", str(tmp_path / "d")],
        env={"REDIS_URL": url},
    )
    assert result.exit_code != 0
    assert "certificate" in result.output.lower(), result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert redis_py.Redis.from_url(plain_url).xlen("varro:{tls2}:stream") == 0
