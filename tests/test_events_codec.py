"""The codec: golden bytes of every type keep decoding, bad bytes give typed errors,
old versions are upcast."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from events import codec, schema
from events.codec import decode, encode
from events.errors import EventDecodeError

TYPES = sorted(schema.EVENT_TYPES)
GOLDEN = sorted((Path(__file__).parent / "fixtures" / "events").glob("*.msgpack"))


@pytest.fixture
def run_dict(sample_events) -> dict:
    return msgspec.to_builtins(sample_events()["DailyRunRequested"])


@pytest.mark.parametrize("event_type", TYPES)
def test_every_type_has_a_golden_file_at_its_current_version(make_golden, event_type):
    path = make_golden.golden_path(event_type, schema.CURRENT_VERSIONS[event_type])
    assert path.is_file(), f"missing golden fixture {path.name}: run tests/fixtures/events/make_golden.py"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_files_decode_forever(path):
    event_type, version = path.name.split(".")[0], int(path.name.split(".")[1][1:])
    raw = path.read_bytes()
    event = decode(raw)
    assert type(event).__name__ == event_type
    assert event.schema_version == schema.CURRENT_VERSIONS[event_type]
    if version == schema.CURRENT_VERSIONS[event_type]:
        # every stored field reads back unchanged (new fields, nested ones too, may only add defaults)
        written = codec.decode_builtins(raw)
        assert _stored_part(msgspec.to_builtins(event), written) == written


def _stored_part(value, written):
    """`value` cut down to the fields `written` has, at every depth."""
    if isinstance(value, dict) and isinstance(written, dict):
        return {k: _stored_part(v, written[k]) for k, v in value.items() if k in written}
    if isinstance(value, list) and isinstance(written, list) and len(value) == len(written):
        return [_stored_part(v, w) for v, w in zip(value, written, strict=True)]
    return value


@pytest.mark.parametrize(
    "name", ["DailyRunRequested", "HeadlinesFetched", "RolloutsGenerated", "Ranked", "EpochTrained"]
)
def test_encode_decode_round_trip_is_exact(sample_events, name):
    event = sample_events()[name]
    raw = encode(event)
    assert decode(raw) == event
    assert encode(decode(raw)) == raw
    assert codec.entry_hash(raw) == codec.entry_hash(encode(sample_events()[name]))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xc1\x00garbage", "not a msgpack event"),
        (b"", "not a msgpack event"),
        (msgspec.msgpack.encode([1, 2, 3]), "expected a map"),
        (msgspec.msgpack.encode({"event_id": "x"}), "no 'type' field"),
    ],
)
def test_garbage_is_a_typed_error(data, message):
    with pytest.raises(EventDecodeError, match=message):
        decode(data)


def test_unknown_type_is_named(run_dict):
    with pytest.raises(EventDecodeError, match="unknown event type 'PortfolioRebalanced'"):
        decode(msgspec.msgpack.encode({**run_dict, "type": "PortfolioRebalanced"}))


def test_missing_field_is_named(run_dict):
    del run_dict["seed"]
    with pytest.raises(EventDecodeError, match=r"DailyRunRequested.*missing required field `seed`"):
        decode(msgspec.msgpack.encode(run_dict))


def test_wrong_field_type_is_named(run_dict):
    with pytest.raises(EventDecodeError, match=r"\$\.seed"):
        decode(msgspec.msgpack.encode({**run_dict, "seed": "many"}))


def test_future_schema_version_is_refused(run_dict):
    newer = schema.CURRENT_VERSIONS["DailyRunRequested"] + 1
    with pytest.raises(EventDecodeError, match=f"schema_version {newer} is newer than this code reads"):
        decode(msgspec.msgpack.encode({**run_dict, "schema_version": newer}))


def test_old_versions_are_upcast_step_by_step(monkeypatch, run_dict):
    """Simulate two schema bumps: v1 had `seed` as a string, v2 called it `rng_seed`."""
    monkeypatch.setitem(schema.CURRENT_VERSIONS, "DailyRunRequested", 3)
    monkeypatch.setitem(codec.UPCASTERS, ("DailyRunRequested", 1), lambda d: {**d, "rng_seed": int(d.pop("seed"))})
    monkeypatch.setitem(codec.UPCASTERS, ("DailyRunRequested", 2), lambda d: {**d, "seed": d.pop("rng_seed")})
    old = msgspec.msgpack.encode({**run_dict, "seed": "77", "schema_version": 1})
    event = decode(old)
    assert event.seed == 77 and event.schema_version == 3


def test_missing_upcaster_is_named(monkeypatch, run_dict):
    monkeypatch.setitem(schema.CURRENT_VERSIONS, "DailyRunRequested", 3)
    with pytest.raises(EventDecodeError, match="no upcaster from schema_version 2"):
        decode(msgspec.msgpack.encode(run_dict))


def test_a_v1_source_string_is_upcast_to_a_typed_source():
    """DailyRunRequested v1 recorded "files:/a,/b" or "replay:ns"; v2 holds each path whole."""
    from events.schema import HeadlineSource

    golden = decode((Path(__file__).parent / "fixtures" / "events" / "DailyRunRequested.v1.msgpack").read_bytes())
    assert golden.schema_version == 2 and golden.source == HeadlineSource(kind="feeds")
    for spec, source in [
        ("files:/a.jsonl,/b.jsonl", HeadlineSource(kind="files", paths=["/a.jsonl", "/b.jsonl"])),
        ("replay:prod", HeadlineSource(kind="replay", namespace="prod")),
        ("sample", HeadlineSource(kind="sample")),
    ]:
        old = {
            **codec.decode_builtins(
                encode(
                    decode(
                        (Path(__file__).parent / "fixtures" / "events" / "DailyRunRequested.v2.msgpack").read_bytes()
                    )
                )
            ),
            "schema_version": 1,
            "source": spec,
        }
        assert codec.from_builtins(old).source == source
    new = decode((Path(__file__).parent / "fixtures" / "events" / "DailyRunRequested.v2.msgpack").read_bytes())
    assert new.source.paths == ["/srv/news/a,b.jsonl", "/srv/news/c.jsonl"]  # a comma inside a path survives
