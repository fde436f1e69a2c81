"""The loopback feed server of tests/fixtures/feeds/server.py, loaded once for every test that serves feeds."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

FEEDS = Path(__file__).parent / "fixtures" / "feeds"


@functools.cache
def server_module() -> ModuleType:
    """The fixture server's module (a file beside the feeds, not a package): `FeedServer` and its helpers."""
    spec = importlib.util.spec_from_file_location("varro_test_feed_server", FEEDS / "server.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {FEEDS / 'server.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
