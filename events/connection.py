"""Which Redis Varro talks to: `REDIS_URL` when given, else the embedded server.

A URL may carry a password (``redis://:PASSWORD@host/0``). Anything Varro
shows (doctor, errors, logs) goes through `redact` first, and child processes
get the URL through their environment, never their command line (`ps` shows
command lines to every user of the machine).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

from events.server import EmbeddedServer, ServerError

# scheme://userinfo@ : the userinfo (user, password or token) is what is hidden
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s]*@")
# redis-py also takes the password as a query parameter, and a TLS client key's passphrase (rediss://)
_QUERY_SECRET = re.compile(r"(?P<key>[?&](?:password|username|ssl_password)=)[^&\s]*", re.IGNORECASE)


def redact(text: str, url: str | None = None) -> str:
    """`text` with the credentials of every URL in it replaced by ``***``.

    With `url`, a bare occurrence of that URL's password (an error message
    quoting it alone) is hidden too.
    """
    out = _QUERY_SECRET.sub(r"\g<key>***", _USERINFO.sub(r"\g<scheme>***@", text))
    if url:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        for secret in {password, unquote(password)} if password else ():
            if secret:
                out = out.replace(secret, "***")
    return out


def connect(redis_url: str | None, data_dir: Path | str) -> redis.Redis:
    """A client with raw bytes responses (events are msgpack)."""
    url = redis_url or EmbeddedServer(Path(data_dir)).start()
    return redis.Redis.from_url(url, decode_responses=False)


class NoServer(ServerError):
    """A read found no server to read from, and reading never starts one over nothing."""


def connect_existing(redis_url: str | None, data_dir: Path | str) -> redis.Redis:
    """A client for reading: `REDIS_URL`, else the embedded server of `data_dir` if it runs or has data.

    It never creates: a data directory that does not exist (a typo) or holds no
    server data is an error naming it, with no directory made and no server
    started. A stopped server over recorded data (after a reboot) is started
    again, since that restores what is there and creates nothing new.
    """
    if redis_url:
        return redis.Redis.from_url(redis_url, decode_responses=False)
    root = Path(data_dir).expanduser()
    server = EmbeddedServer(root)
    if not root.is_dir():
        raise NoServer(f"no data directory {root}: nothing is recorded there (check --data-dir or VARRO_DATA_DIR)")
    if not server.has_data():
        raise NoServer(
            f"data directory {root} holds no event log (no server data under {server.dir}): "
            "check --data-dir, or run something there first"
        )
    return redis.Redis.from_url(server.start(), decode_responses=False)


def describe(redis_url: str | None, data_dir: Path | str) -> tuple[str, str]:
    """(url, "external" | "embedded") without starting anything."""
    if redis_url:
        return redis_url, "external"
    return EmbeddedServer(Path(data_dir)).url, "embedded"
