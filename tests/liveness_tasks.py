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


# where `gated_train`'s attempts hold, in order; the attempt after the last goes straight through
TRAIN_GATES = ("training", "saving", "publishing")


def gated_train(ns: str, date: str, cause: str, correlation_id: str, markers: str, force: bool = False) -> str | None:
    """The real train job, whose first attempts each hold at one point of the job until the test kills them.

    Attempt 1 holds once the epoch's update is computed, before anything is saved
    (mid-training); attempt 2 once every checkpoint file is written and fsynced
    into the save's temporary directory, before the rename that publishes it
    (mid-save); attempt 3 once `EpochTrained` is recorded, before the projection
    links move (between the record and the rolling checkpoint). Each holding
    attempt writes `held-<gate>` first, so the test kills it at a known moment.
    """
    import jobs.train as train_module
    import varro.checkpoints as checkpoints

    folder = Path(markers)
    attempt = len(list(folder.glob("attempt-*"))) + 1
    (folder / f"attempt-{attempt}-pid-{os.getpid()}").write_text(f"{time.time()}\n")
    gate = TRAIN_GATES[attempt - 1] if attempt <= len(TRAIN_GATES) else None

    def hold(name: str) -> None:
        if gate == name:
            (folder / f"held-{name}").write_text(f"{time.time()}\n")
            time.sleep(600)  # until the test kills this worker

    real_epoch, real_fsync, real_publish = train_module.train_epoch, checkpoints.fsync_dir, checkpoints.publish

    def epoch(*args, **kwargs):
        result = real_epoch(*args, **kwargs)
        hold("training")
        return result

    def fsync_dir(path):
        real_fsync(path)
        if Path(path).name.startswith(".tmp-"):  # the save's last step before its rename
            hold("saving")

    def publish(*args, **kwargs):
        hold("publishing")
        return real_publish(*args, **kwargs)

    # the data directory's store publishes through varro.checkpoints.publish
    train_module.train_epoch, checkpoints.fsync_dir, checkpoints.publish = epoch, fsync_dir, publish
    try:
        return tasks.train(ns, date, cause, correlation_id, force=force)
    finally:  # the worker process lives on: the next job gets the real functions
        train_module.train_epoch, checkpoints.fsync_dir, checkpoints.publish = real_epoch, real_fsync, real_publish


def paired_train(ns: str, date: str, cause: str, correlation_id: str, markers: str, copy: str) -> str | None:
    """The real train job, run as two copies of one job in two workers at once (`copy` tells them apart).

    Each copy waits for the other twice: at the rename that moves its finished
    checkpoint into the store (both have checked that no checkpoint of that hash
    is there yet), and at the append of `EpochTrained`. So both publish the
    same bytes and record the same event at the same moment.
    """
    import types

    import varro.checkpoints as checkpoints
    from events.store import EventStore

    folder = Path(markers)

    def meet(point: str) -> None:
        (folder / f"{point}-{copy}").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        while len(list(folder.glob(f"{point}-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)

    def rename(src, dst):
        if Path(src).name.startswith(".tmp-"):
            meet("rename")
        return os.rename(src, dst)

    real_os, real_append = checkpoints.os, EventStore.append

    def append(self, event, *args, **kwargs):
        meet("append")
        return real_append(self, event, *args, **kwargs)

    checkpoints.os = types.SimpleNamespace(**{**vars(os), "rename": rename})  # type: ignore[assignment]
    EventStore.append = append  # type: ignore[method-assign]
    try:
        return tasks.train(ns, date, cause, correlation_id)
    finally:
        checkpoints.os, EventStore.append = real_os, real_append  # type: ignore[method-assign]


def overrunning(markers: str, seconds: float) -> None:
    """A job that runs past its timeout: each attempt leaves a marker, then outstays its limit."""
    folder = Path(markers)
    attempt = len(list(folder.glob("overrun-*"))) + 1
    (folder / f"overrun-{attempt}-pid-{os.getpid()}").write_text(f"{time.time()}\n")
    time.sleep(seconds)
    (folder / f"overrun-{attempt}-finished").write_text("the timeout did not stop me\n")


def after_overrun(markers: str) -> str:
    """The next job on the same worker: it runs only if the worker outlived the timed-out job."""
    (Path(markers) / "after-overrun").write_text(f"{os.getpid()}\n")
    return "ran"
