"""`python -m crashing_dispatcher DATA_DIR NS MARKERS`: the real dispatcher loop, which holds at its first ack.

It is `varro dispatcher` (the same config, connection and loop) except that
`Consumer.ack` writes `MARKERS/held-ack` (naming the entry) and then waits to be
killed, so a test can `kill -9` it between enqueueing an event's jobs and
acking the event, at a moment it knows. tests/ must be on PYTHONPATH.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from events.connection import connect
from events.consumer import Consumer
from varro.config import load_config
from workers.dispatcher import Dispatcher


def main(data_dir: str, ns: str, markers: str) -> None:
    cfg = load_config(overrides={"ns": ns, "data_dir": data_dir})

    def ack(self: Consumer, entry_id: str) -> None:
        (Path(markers) / "held-ack").write_text(entry_id)
        time.sleep(600)  # until the test kills this process

    Consumer.ack = ack  # type: ignore[method-assign]
    Dispatcher(connect(cfg.redis_url, cfg.data_path), cfg, name="crashing").run([ns])


if __name__ == "__main__":
    main(*sys.argv[1:4])
