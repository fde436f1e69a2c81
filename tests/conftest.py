"""Shared test set-up. `varro` is imported first so OpenBLAS is preloaded before mlx."""

import pytest
import redis as redis_py

import varro  # noqa: F401  (must precede any mlx import)
from events.server import EmbeddedServer
from events.store import EventStore


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One real embedded Valkey for the whole test session (unix socket, AOF on)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    """A raw-bytes client on an empty database."""
    client = redis_py.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def event_store(redis_client):
    """Factory: `event_store(ns="test")` -> an EventStore on the emptied test database."""

    def make(ns: str = "test", **kwargs) -> EventStore:
        return EventStore(redis_client, ns, **kwargs)

    return make


def _load_make_golden():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "events" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("varro_test_make_golden", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def make_golden():
    """tests/fixtures/events/make_golden.py as a module (sample events, golden paths)."""
    return _load_make_golden()


@pytest.fixture
def sample_events(make_golden):
    """Factory: `sample_events(ns, date)` -> one realistic event of every type, a valid lineage."""
    return make_golden.sample_events


@pytest.fixture(scope="session")
def tiny_model_path():
    """The project's own small model ("varro-tiny"), built once into the shared model
    cache ($VARRO_MODEL_CACHE or ~/.cache/varro/models) and reused by every test run."""
    from varro.model.cache import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="module")
def loaded(tiny_model_path, tmp_path_factory):
    """varro-tiny loaded through mlx_lm, one instance per test module (a module may change it)."""
    from varro.config import VarroConfig
    from varro.model.cache import ModelCache

    cache = ModelCache(VarroConfig(data_dir=str(tmp_path_factory.mktemp("data"))))
    return cache.load(cache.base_ref())
