"""Logging: JSON lines carry bound context, and RQ's stdlib loggers go through structlog."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from varro.logging import configure_logging


@pytest.fixture
def json_lines():
    out = io.StringIO()
    configure_logging("INFO", json=True, stream=out)
    structlog.contextvars.clear_contextvars()
    yield lambda: [json.loads(x) for x in out.getvalue().splitlines() if x.strip()]
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_bound_context_appears_on_our_lines_and_rqs(json_lines):
    structlog.contextvars.bind_contextvars(ns="prod", date="2025-01-02", event_id="e1", job_id="j9")
    structlog.get_logger("varro.jobs").info("generated", rollouts=8)
    logging.getLogger("rq.worker").info("Job %s: OK", "j9")
    logging.getLogger("rq.worker").debug("below the level")
    ours, rqs = json_lines()
    for line in (ours, rqs):
        assert {line[k] for k in ("ns", "date", "event_id", "job_id")} == {"prod", "2025-01-02", "e1", "j9"}
    assert ours["event"] == "generated" and ours["rollouts"] == 8 and ours["level"] == "info"
    assert rqs["event"] == "Job j9: OK" and rqs["logger"] == "rq.worker"


def test_rq_setup_does_not_bypass_our_handler(json_lines):
    from rq.logutils import setup_loghandlers

    setup_loghandlers("INFO")  # what an RQ worker does on start-up
    logging.getLogger("rq.worker").warning("from rq")
    (line,) = json_lines()
    assert line["event"] == "from rq" and line["level"] == "warning"


def test_exceptions_are_structured(json_lines):
    try:
        raise ValueError("bad headline")
    except ValueError:
        structlog.get_logger().exception("failed")
    (line,) = json_lines()
    assert line["exception"][0]["exc_type"] == "ValueError"


def test_console_format_when_not_json():
    out = io.StringIO()
    try:
        configure_logging("DEBUG", json=False, stream=out)
        structlog.contextvars.bind_contextvars(ns="prod")
        structlog.get_logger("varro").debug("pretty", k=2)
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert "pretty" in text and "ns=prod" in text and "k=2" in text and not text.startswith("{")


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="log level 'LOUD'"):
        configure_logging("LOUD")
