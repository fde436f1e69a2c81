"""structlog everywhere: pretty on a terminal, JSON lines otherwise.

Standard-library loggers (RQ's `rq.worker`, redis, httpx) are routed through
the same processors, and context bound with
``structlog.contextvars.bind_contextvars(ns=..., date=..., event_id=..., job_id=...)``
is merged into every line, ours and theirs alike.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}


def configure_logging(level: str = "INFO", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging once per process (calling again reconfigures).

    Lines go to `stream` (default stderr); `json=None` picks JSON unless it is a terminal.
    """
    stream = sys.stderr if stream is None else stream
    tty = stream.isatty()
    level = level.upper()
    if level not in _LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(sorted(_LEVELS))}")
    if json is None:
        json = not tty
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=tty)
    # Tracebacks as data in JSON, without frame locals (they may hold whole batches).
    final = (
        [structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
        if json
        else []
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # RQ installs its own handlers (and a level) on `rq.worker` when a worker starts; send its
    # lines to ours, at our level, even after an in-process worker ran at another one.
    for name in ("rq", "rq.worker", "rq.scheduler", "rq.cron"):
        lib = logging.getLogger(name)
        for old in list(lib.handlers):
            lib.removeHandler(old)
        lib.setLevel(logging.NOTSET)
        lib.propagate = True
