"""A job for the liveness tests, run by real `varro worker` processes (tests/ is on their PYTHONPATH).

`held_fetch` is the real fetch job behind a gate: its first attempt writes a
marker and then holds (so the test can kill its worker mid-job, at a moment it
knows); every later attempt goes straight through to `workers.tasks.fetch`,
which records the day's `HeadlinesFetched`. Attempts are counted by marker
files, so a re-run in another process sees the first one.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from workers import tasks


def held_fetch(ns: str, date: str, cause: str, correlation_id: str, source: str, markers: str) -> str | None:
    folder = Path(markers)
    attempt = len(list(folder.glob("attempt-*"))) + 1
    (folder / f"attempt-{attempt}-pid-{os.getpid()}").write_text(f"{time.time()}\n")
    if attempt == 1:
        time.sleep(600)  # until the test kills this worker
    return tasks.fetch(ns, date, cause, correlation_id, source=source)


def attempts(markers: Path) -> list[tuple[int, int, float]]:
    """(attempt, pid, started at) of each attempt so far, in order."""
    out = []
    for path in markers.glob("attempt-*"):
        _, attempt, _, pid = path.name.split("-")
        out.append((int(attempt), int(pid), float(path.read_text())))
    return sorted(out)


def kill_server_then_finish(data_dir: str, markers: str, down_s: float = 2.0) -> int:
    """First attempt: kill -9 the embedded server under the running job, start it again `down_s`
    later, and return into a worker that cannot record the result; later attempts just finish."""
    from events.server import EmbeddedServer

    folder = Path(markers)
    attempt = len(list(folder.glob("attempt-*"))) + 1
    (folder / f"attempt-{attempt}-pid-{os.getpid()}").write_text(f"{time.time()}\n")
    if attempt == 1:
        server = EmbeddedServer(data_dir)
        server.kill()
        threading.Timer(down_s, server.start).start()
    return attempt
