"""An HTTP client whose every socket operation stops at the current attempt's wall-clock deadline.

httpx's timeouts are per operation: a server that sends one header byte every
couple of seconds never trips a 10 s read timeout and holds a fetch for as long
as it likes. Here each connect, TLS handshake, read and write is given at most
the time left before the deadline set with `deadline(...)` for the calling
thread, and fails with a timeout once none is left, so headers and body
together end by the deadline however the server paces them.

A TLS read or handshake is bounded the same way: CPython's ssl module counts a
socket timeout down across the whole call, however the record trickles in (this
is relied on, not tested here: the tests use plain HTTP on loopback).

Name resolution is bounded too: getaddrinfo takes no timeout and blocks for as
long as the system resolver likes (a dead DNS server: tens of seconds per
name), so each lookup runs on a daemon thread of its own and the attempt waits
for it only until the deadline. A lookup still hung then is abandoned, never
joined (a daemon thread does not hold up the process's exit), and at most
`MAX_PENDING_LOOKUPS` may be pending at once, so a resolver that never answers
costs a few idle threads, not the day.

Where a request may go is judged here too (`public_only`): inside that scope a
connection to a loopback, private, link-local, unspecified, multicast or
reserved address is refused with InternalAddressRefused, judged on the address
the socket is connected to when each request goes out, so neither a name that
rebinds between lookups nor a kept-alive connection opened for an intranet feed
gets a public feed's redirect onto the machine's own network.

Proxies: the environment's (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) are not used; httpx
would route them through a transport of its own, past every bound here. A proxy is
named in headlines.proxy, and its connections go through the same deadline-bound
backend, so a server behind it is cut at the deadline like one reached directly.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpcore
import httpx

_local = threading.local()

MAX_PENDING_LOOKUPS = 16
_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound this thread's requests to the monotonic time `at` (nested scopes keep the earlier one)."""
    outer = getattr(_local, "deadline", None)
    _local.deadline = at if outer is None else min(at, outer)
    try:
        yield
    finally:
        _local.deadline = outer


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` shortened to the time left before this thread's deadline; `error` once none is left."""
    at = getattr(_local, "deadline", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the attempt's deadline has passed")
    return left if timeout is None else min(timeout, left)


class InternalAddressRefused(Exception):
    """A connection the thread's `public_only` scope forbids: the address is loopback, private and so on.

    Not an httpcore error, so httpx passes it through unmapped and the caller tells it from a
    network failure (it is never retried).
    """


def internal_address(address: str) -> str | None:
    """What makes `address` internal (loopback, private, link-local, unspecified, multicast,
    reserved), None for a public one. An IPv4-mapped IPv6 address is judged as its IPv4 one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None


@contextlib.contextmanager
def public_only(enabled: bool = True) -> Iterator[None]:
    """While enabled, this thread's requests may only go to public addresses: a connection to an
    internal one (see `internal_address`) raises InternalAddressRefused instead of sending anything.

    The address judged is the one the socket is connected to, for a new connection and a reused
    keep-alive one alike, so a name that resolves (or rebinds) to an internal address is refused
    however it got there. Through a proxy the connection is to the proxy; there the target
    name's addresses, as resolved here, are judged instead (the proxy's own lookup may differ).
    """
    outer = getattr(_local, "public_only", False)
    _local.public_only = enabled or outer
    try:
        yield
    finally:
        _local.public_only = outer


def went_internal(*, forget: bool = False) -> bool | None:
    """Whether this thread's latest request went to an internal address; None when no request went
    through this module's transport since the last `forget`."""
    went = getattr(_local, "went_internal", None)
    if forget:
        _local.went_internal = None
    return went


def _check_address(address: str, host: str) -> None:
    kind = internal_address(address)
    _local.went_internal = kind is not None
    if kind is not None and getattr(_local, "public_only", False):
        named = f"{host} is" if host == address else f"{host} resolves to {address},"
        raise InternalAddressRefused(f"{named} a {kind} address")


PROXIED_LOOKUP_S = 2.0


def _check_proxied(host: str, port: int) -> None:
    """Judge a proxied request by its target's name: the proxy, not this machine, connects to it.

    A literal address is judged as it is; a name by its addresses as resolved here, within
    PROXIED_LOOKUP_S (and the attempt's deadline); a name that does not resolve here in that
    time counts as public, since reaching it is the proxy's business.
    """
    try:
        addresses = resolve(host, port, _bounded(PROXIED_LOOKUP_S, httpcore.ConnectTimeout))
    except (httpcore.ConnectError, httpcore.ConnectTimeout):
        _local.went_internal = False
        return
    inside = next((a for a in addresses if internal_address(a) is not None), None)
    _check_address(inside or addresses[0], host)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, address: str | None = None, host: str = ""):
        self._inner = inner
        self._address, self._host = address, host  # where the socket is connected; None: not judged (a proxy)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._address is not None:  # every request, a reused connection's too, is judged as it goes out
            _check_address(self._address, self._host)
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._address, self._host)

    def get_extra_info(self, info: str):
        return self._inner.get_extra_info(info)


def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses `host` resolves to, in the resolver's order, within `timeout` seconds.

    httpcore.ConnectTimeout when the resolver has not answered by then (the
    lookup is left to finish on its own thread), httpcore.ConnectError when it
    says the name does not resolve.
    """
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]  # a literal address: nothing to look up
    started = time.monotonic()
    if not _lookups.acquire(timeout=None if timeout is None else max(0.0, timeout)):
        raise httpcore.ConnectTimeout(f"resolving {host}: {MAX_PENDING_LOOKUPS} earlier lookups still pending")
    answer: list = []
    done = threading.Event()

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)
        finally:
            _lookups.release()
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
    if not done.wait(left):
        raise httpcore.ConnectTimeout(f"resolving {host} did not finish within the attempt's deadline")
    result = answer[0]
    if isinstance(result, OSError):
        raise httpcore.ConnectError(f"cannot resolve {host}: {result}")
    addresses = list(dict.fromkeys(info[4][0] for info in result))
    if not addresses:
        raise httpcore.ConnectError(f"cannot resolve {host}: no address")
    return addresses


class _DeadlineBackend(httpcore.SyncBackend):
    def __init__(self, *, judged: bool = True) -> None:
        self.judged = judged  # False behind a proxy: the connections go to the proxy, not to the feeds

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        # The name is resolved here, bounded; the connects below are given literal addresses only.
        addresses = resolve(host, port, _bounded(timeout, httpcore.ConnectTimeout))
        if self.judged and getattr(_local, "public_only", False):
            public = [a for a in addresses if internal_address(a) is None]
            if not public:
                _check_address(addresses[0], host)  # raises, naming the address
            addresses = public
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = super().connect_tcp(
                    address, port, _bounded(timeout, httpcore.ConnectTimeout), local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # refused or unreachable: try the next address
                failure = exc
                continue
            return _DeadlineStream(stream, address if self.judged else None, host)
        assert failure is not None
        raise failure


class _DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (its exception mapping and streams), over the deadline-bound backend.

    httpx has no public hook for the network backend, so the pool it builds is
    replaced by an identical one that uses `_DeadlineBackend`; the slowloris
    test in tests/test_headlines_hostile.py fails if this stops working. With
    `proxy` (an http:// or https:// forward proxy) the pool is httpcore's proxy
    pool over the same backend: the connection to the proxy, and so everything
    relayed through it, ends by the attempt's deadline too
    (tests/test_headlines_network.py puts a slowloris behind a proxy).
    """

    def __init__(self, proxy: str | None = None) -> None:
        super().__init__()
        limits = {"max_connections": 100, "max_keepalive_connections": 20, "keepalive_expiry": 5.0}
        self._proxied = proxy is not None
        if proxy is None:
            self._pool = httpcore.ConnectionPool(
                ssl_context=httpx.create_ssl_context(), network_backend=_DeadlineBackend(), **limits
            )
            return
        via = httpx.Proxy(url=proxy)
        if via.url.scheme not in ("http", "https"):
            raise ValueError(f"headlines.proxy must be an http:// or https:// URL, not {proxy!r}")
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=via.url.raw_scheme, host=via.url.raw_host, port=via.url.port, target=via.url.raw_path
            ),
            proxy_auth=via.raw_auth,
            proxy_headers=via.headers.raw,
            ssl_context=httpx.create_ssl_context(),
            proxy_ssl_context=via.ssl_context,
            network_backend=_DeadlineBackend(judged=False),
            **limits,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._proxied:
            _check_proxied(request.url.host, request.url.port or (443 if request.url.scheme == "https" else 80))
        return super().handle_request(request)


def bounded_client(user_agent: str, proxy: str | None = None) -> httpx.Client:
    """A client for feeds: deadline-bound sockets, no automatic redirects or decoding (done by the caller).

    The environment's proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) and .netrc are not used
    (trust_env=False): a proxy is headlines.proxy, which goes through the same bounded
    transport. `environment_proxies` names the variables set, for a one-line warning.
    """
    return httpx.Client(
        headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
        transport=_DeadlineTransport(proxy),
        follow_redirects=False,
        trust_env=False,
    )


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def environment_proxies(environ: dict[str, str] | None = None) -> list[str]:
    """The proxy variables set in the environment, which feeds do not use (see `bounded_client`)."""
    env = os.environ if environ is None else environ
    return [name for name in PROXY_VARIABLES if env.get(name)]
