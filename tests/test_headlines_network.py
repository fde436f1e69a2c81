"""Where a feed fetch may connect: redirects of a public feed stay on public addresses, and a
proxy is the configured one, bounded like a direct connection, never the environment's.

Tests reach loopback only, so "public" is injected: 127.0.0.1 is taken as a public
address, 127.0.0.2 stays what it is (loopback, internal). Everything else is the real
path: real keep-alive HTTP/1.1 servers on both addresses (the same port, so the
port rule lets the redirect through), a real forward proxy, the real transport and
its resolver.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import structlog
from feed_fixtures import server_module

from varro.config import HeadlinesConfig
from varro.headlines import transport
from varro.headlines.collect import collect
from varro.headlines.feeds import Feed, fetch_feed
from varro.headlines.transport import bounded_client

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
FEED = (FIXTURES / "rss1.xml").read_bytes()
TODAY = "2025-07-30"
PUBLIC, INTERNAL = "127.0.0.1", "127.0.0.2"


class KeepAliveServer:
    """HTTP/1.1 with keep-alive on `host`: /feed (an RSS feed), /to?<url> (a 302 there); requests recorded."""

    def __init__(self, host: str, port: int = 0):
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                if self.path.startswith("/to?"):
                    code, body, extra = 302, b"", {"Location": unquote(self.path[4:])}
                else:
                    code, body, extra = 200, FEED, {"Content-Type": "application/rss+xml"}
                self.send_response(code)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers(monkeypatch):
    """(public, internal): servers on 127.0.0.1 and 127.0.0.2 at one port; 127.0.0.1 judged public."""
    real = transport.internal_address

    def judged(address: str) -> str | None:
        return None if address == PUBLIC else real(address)

    monkeypatch.setattr(transport, "internal_address", judged)
    public = KeepAliveServer(PUBLIC)
    internal = KeepAliveServer(INTERNAL, public.port)
    yield public, internal
    public.stop()
    internal.stop()


def feeds_config(tmp_path, entries) -> HeadlinesConfig:
    lines = ["[markets]"] + [f'{name} = "{url}"' for name, url in entries]
    (tmp_path / "feeds.toml").write_text("\n".join(lines) + "\n")
    return HeadlinesConfig(feeds_file=str(tmp_path / "feeds.toml"), timeout_s=5, retries=2, backoff_s=0.01)


def test_a_public_feed_is_not_redirected_to_an_internal_address(tmp_path, servers, monkeypatch):
    public, internal = servers
    resolver = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # a name that resolves to the internal address
        return resolver(INTERNAL if host == "rebind.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    to_internal = internal.url("/feed")
    by_name = internal.url("/feed", host="rebind.test")
    cfg = feeds_config(
        tmp_path,
        [
            ("inward", public.url(f"/to?{to_internal}")),
            ("by-name", public.url(f"/to?{by_name}")),
            ("outward", public.url(f"/to?{public.url('/feed')}")),
            ("intranet", internal.url(f"/to?{to_internal}")),
        ],
    )
    day = collect("rss", TODAY, cfg, today=TODAY)
    reports = {r.source: r for r in day.reports}
    assert reports["inward"].error == (
        f"HTTP 302 redirect to {to_internal!r} refused: {INTERNAL} is a loopback address, and the feed itself is public"
    )
    assert reports["by-name"].error == (
        f"HTTP 302 redirect to {by_name!r} refused: rebind.test resolves to {INTERNAL}, a loopback address, "
        "and the feed itself is public"
    )
    assert reports["outward"].status == "ok" and reports["outward"].final_url == public.url("/feed")
    assert reports["intranet"].status == "ok", "an internal feed may redirect inside its own network"
    assert internal.requests.count("/feed") == 1, "only the intranet feed's own redirect reached the internal server"
    assert sorted(public.requests).count(f"/to?{to_internal}") == 1, "a refused redirect is not retried"


def test_a_kept_alive_internal_connection_is_not_reused_for_a_public_feed_s_redirect(servers):
    """The pool holds a live connection to the internal server; the public feed's redirect there is
    judged as its request goes out, not only when a connection is opened."""
    public, internal = servers
    cfg = HeadlinesConfig(timeout_s=5, retries=0)
    with bounded_client(cfg.user_agent) as client:
        intranet = fetch_feed(client, Feed("intranet", internal.url("/feed"), "markets"), cfg)
        assert intranet.status == "ok" and internal.requests == ["/feed"]
        inward = fetch_feed(client, Feed("inward", public.url(f"/to?{internal.url('/feed')}"), "markets"), cfg)
    assert inward.status == "failed" and f"refused: {INTERNAL} is a loopback address" in inward.error
    assert internal.requests == ["/feed"], "nothing was sent on the kept-alive internal connection"


def test_internal_addresses_are_named_by_kind():
    kinds = {
        "127.0.0.1": "loopback",
        "::1": "loopback",
        "::ffff:10.1.2.3": "private",
        "192.168.1.9": "private",
        "169.254.169.254": "link-local",
        "fe80::1%eth0": "link-local",
        "0.0.0.0": "unspecified",
        "224.0.0.1": "multicast",
        "93.184.216.34": None,
        "2606:4700::1111": None,
    }
    assert {address: transport.internal_address(address) for address in kinds} == kinds


class ForwardProxy:
    """A CONNECT-less HTTP forward proxy on loopback: takes ``GET http://host:port/path``, asks the
    upstream in origin form, and relays the answer as it arrives, byte by byte if it trickles."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                if not (chunk := client.recv(4096)):
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.requests.append(target)
            parts = urlsplit(target)
            with socket.create_connection((parts.hostname, parts.port or 80), timeout=120) as upstream:
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                upstream.sendall(f"{method} {path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
                while data := upstream.recv(4096):
                    client.sendall(data)

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def feed_server():
    srv = server_module().FeedServer(drip_s=0.3).start()
    yield srv
    srv.stop()


@pytest.fixture
def proxy():
    relay = ForwardProxy()
    yield relay
    relay.stop()


def proxied_day(tmp_path, feed_server, **settings):
    feeds = [("good", feed_server.url("/feeds/rss1.xml")), ("loris", feed_server.url("/slowloris"))]
    cfg = feeds_config(tmp_path, feeds)
    cfg = HeadlinesConfig(**{**settings_of(cfg), "timeout_s": 1.5, "retries": 0, **settings})
    start = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        day = collect("rss", TODAY, cfg, today=TODAY)
    return {r.source: r for r in day.reports}, time.monotonic() - start, logs


def settings_of(cfg: HeadlinesConfig) -> dict:
    return {name: getattr(cfg, name) for name in cfg.__struct_fields__}


def test_a_slowloris_behind_the_configured_proxy_is_cut_at_the_attempt_deadline(tmp_path, feed_server, proxy):
    """The header bytes trickle through the proxy one every 0.3 s; the proxy connection is the
    bounded transport's, so the 1.5 s attempt deadline still ends it."""
    reports, elapsed, _ = proxied_day(tmp_path, feed_server, proxy=proxy.url)
    assert reports["good"].status == "ok" and reports["good"].kept == 2
    assert reports["loris"].error == "no complete answer within 1.5s (gave up after 1 attempt)"
    assert sorted(proxy.requests) == sorted([feed_server.url("/feeds/rss1.xml"), feed_server.url("/slowloris")])
    assert elapsed < 30, f"the slowloris drips for 60 s; the day took {elapsed:.1f} s"


def test_environment_proxies_are_not_used_and_say_so(tmp_path, feed_server, proxy, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    reports, elapsed, logs = proxied_day(tmp_path, feed_server)
    assert proxy.requests == [], "a proxy from the environment was used"
    assert reports["good"].status == "ok"
    assert reports["loris"].error == "no complete answer within 1.5s (gave up after 1 attempt)"
    assert elapsed < 30, f"the slowloris drips for 60 s; the day took {elapsed:.1f} s"
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "environment proxy ignored: feeds use headlines.proxy only"
    assert warning["variables"] == "HTTP_PROXY,HTTPS_PROXY,ALL_PROXY"


@pytest.mark.parametrize(
    "url", ["socks5://127.0.0.1:1080", "127.0.0.1:3128", "http://", "http://h:port", "socks5://u:s3cret@h:1080"]
)
def test_a_proxy_that_is_not_an_http_url_is_a_config_error(url):
    from varro.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"headlines\.proxy: must be an http:// or https:// URL") as refused:
        load_config(overrides={"headlines": {"proxy": url}}, environ={})
    assert "s3cret" not in str(refused.value)


def test_the_proxy_is_a_machine_setting_never_recorded_with_a_run():
    from varro.config import config_from_recorded, load_config, recorded_config_bytes

    here = load_config(overrides={"headlines": {"proxy": "http://user:s3cret@10.0.0.1:3128"}}, environ={})
    recorded = recorded_config_bytes(here)
    assert b"s3cret" not in recorded and b'"proxy"' not in recorded
    there = load_config(overrides={"headlines": {"proxy": "http://10.9.9.9:3128"}}, environ={})
    assert config_from_recorded(recorded, machine=there).headlines.proxy == "http://10.9.9.9:3128"


def test_through_a_proxy_a_public_feed_is_not_redirected_to_an_internal_address(tmp_path, servers, proxy):
    """Behind a proxy the connection is the proxy's, so the target is judged by its name's addresses."""
    public, internal = servers
    to_internal = internal.url("/feed")
    cfg = HeadlinesConfig(proxy=proxy.url, timeout_s=5, retries=0)
    with bounded_client(cfg.user_agent, cfg.proxy) as client:
        inward = fetch_feed(client, Feed("inward", public.url(f"/to?{to_internal}"), "markets"), cfg)
        outward = fetch_feed(client, Feed("outward", public.url(f"/to?{public.url('/feed')}"), "markets"), cfg)
    assert inward.error == (
        f"HTTP 302 redirect to {to_internal!r} refused: {INTERNAL} is a loopback address, and the feed itself is public"
    )
    assert outward.status == "ok" and internal.requests == []
    assert to_internal not in proxy.requests and public.url("/feed") in proxy.requests
