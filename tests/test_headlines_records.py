"""Headline files record by record: each bad one skipped, counted and placed; the file read once, bounded."""

import json

import pytest

from varro.config import HeadlinesConfig
from varro.headlines import files
from varro.headlines.collect import collect, file_dates
from varro.headlines.files import read_file
from varro.headlines.normalize import MAX_HEADLINE_CHARS

CFG = HeadlinesConfig()
DAY = "2025-08-04"
WHEN = f"{DAY}T09:00:00Z"


def good(n: int, **extra) -> dict:
    return {"text": f"Gold rises {n}%", "link": f"https://g.example.com/{n}", "published": WHEN, **extra}


def test_each_bad_jsonl_line_costs_only_itself_and_is_named_by_line(tmp_path):
    lines = [
        json.dumps(good(1)).encode(),
        json.dumps(good(2, published="0001-01-01T00:00:00+05:00")).encode(),  # OverflowError in astimezone
        b'{"text": "Oil rises", "link": "https://o.example.com", "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"text": "Oil \\ud800 rises 2%", "link": "https://o.example.com/2", "published": "' + WHEN.encode() + b'"}',
        b'{"text": "Oil rises 3%", "link": "https://o.example.com/3", "published": ' + b"7" * 5000 + b"}",
        json.dumps(good(6, rank=0)).replace("0}", "9" * 5000 + "}").encode(),  # a long number elsewhere is harmless
        b'{"text": "Caf\xe9 shares rise", "link": "https://c.example.com"}',
        b"{not json",
        json.dumps(good(9)).encode(),
    ]
    path = tmp_path / "day.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = collect("files", DAY, CFG, paths=[path])
    assert [h.text for h in result.headlines] == ["Gold rises 1%", "Gold rises 6%", "Gold rises 9%"]
    [report] = result.reports
    assert report.status == "ok" and report.fetched == 9
    assert report.skipped == {
        "unreadable date (line 2, line 5)": 2,
        "JSON nested too deeply (line 3)": 1,
        "text is not valid Unicode (lone surrogate) (line 4)": 1,
        "not UTF-8 (line 7 byte 0xe9)": 1,
        "unreadable JSON line (line 8)": 1,
    }


def test_json_documents_skip_each_bad_record_by_number_and_line_and_keep_the_rest(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    doc = "\n".join(
        [
            "[",
            '{"text": "Gold rises 1%", "link": "https://g.example.com/1"},',
            ' {"text": "Oil \\udc00 rises", "link": "https://o.example.com"},',
            ' {"text": "Oil rises 2%", "link": "https://o.example.com/2", "published": ' + "1" * 5000 + "},",
            ' {"text": "Oil rises 3%", "link": "https://o.example.com/3", "deep": ' + deep + "},",
            " " + deep + ",",
            ' {"text": "Oil rises 4%" "link": "https://o.example.com/4"},',  # a missing comma inside the record
            ' {"text": "Gold rises 5%", "link": "https://g.example.com/5"}',
            "]",
        ]
    )
    path = tmp_path / "a.json"
    path.write_text(doc)
    read = read_file(path)
    assert read.status == "ok" and [i.title for i in read.items] == ["Gold rises 1%", "Gold rises 5%"]
    assert read.skipped == {
        "text is not valid Unicode (lone surrogate) (record 2 at line 3)": 1,
        "unreadable date (record 3 at line 4)": 1,
        "JSON nested too deeply (record 4 at line 5, record 5 at line 6)": 2,
        "unreadable JSON record (record 6 at line 7)": 1,
    }
    # the same records under "headlines", beside a member too deep to read that is not looked at
    wrapped = tmp_path / "b.json"
    wrapped.write_text('{"meta": ' + deep + ',\n "headlines": ' + doc + ', "more": ' + deep + "}")
    again = read_file(wrapped)
    assert again.status == "ok" and [i.title for i in again.items] == ["Gold rises 1%", "Gold rises 5%"]
    assert sum(again.skipped.values()) == 5 and "JSON nested too deeply (record 4 at line 6, record 5 at line 7)" in (
        again.skipped
    )


@pytest.mark.parametrize(
    "doc, error",
    [
        (
            '[{"text": "a", "link": "https://a.example.com"} {"text": "b"}]',
            "line 1: expected ',' or ']' after record 1",
        ),
        ('[\n{"text": "a", "link": "https://a.example.com"},\n{"text": "b', "invalid JSON at line 3"),
        ("[" * 100_000, "nested too deeply to read, and never closed"),
        ('[{"text": "a", "link": "https://a.example.com"}] []', "line 1: extra data after the list"),
        ('{"meta": [["a"], "headlines": []}', "the value of 'meta' never ends"),
    ],
)
def test_a_json_document_whose_structure_breaks_fails_with_where(tmp_path, doc, error):
    path = tmp_path / "x.json"
    path.write_text(doc)
    read = read_file(path)
    assert read.status == "failed" and error in read.error, read.error


def test_csv_unterminated_quote_and_oversized_record_cost_one_line(tmp_path):
    rows = [
        "text,link,published",
        f"Oil rises 1%,https://o.example.com/1,{WHEN}",
        f'"Oil rises 2%,https://o.example.com/2,{WHEN}',  # the quote never closes
        f"Oil rises 3%,https://o.example.com/3,{WHEN}",
        f'"Fed holds\nrates, signals cut",https://f.example.com/4,{WHEN}',  # a legal quoted newline: lines 5-6
        f'Apple 5" screens lift stocks,https://a.example.com/5,{WHEN}',  # a quote inside a field is literal
        f"{'x' * 200_000},https://x.example.com/6,{WHEN}",
        f"Oil rises 7%,https://o.example.com/7,{WHEN}",
        "Gold rises 8%,https://g.example.com/8,not a date",
        f'"Fed" cuts rates,https://f.example.com/9,{WHEN}',  # a stray quote: only this line is lost
    ]
    path = tmp_path / "day.csv"
    path.write_text("\n".join(rows) + "\n")
    result = collect("files", DAY, CFG, paths=[path])
    assert [h.text for h in result.headlines] == [
        "Oil rises 1%",
        "Oil rises 3%",
        "Fed holds rates, signals cut",
        'Apple 5" screens lift stocks',
        "Oil rises 7%",
    ]
    assert result.reports[0].skipped == {
        "CSV record over 100,000 characters (line 8)": 1,
        "unreadable date (line 10)": 1,
        "unbalanced CSV quote (line 3, line 11)": 2,
    }


def test_records_with_unreadable_dates_are_on_no_day(tmp_path):
    records = [good(1, published="2025-03-04T10:00:00Z"), good(2, published="2025-03-05T10:00:00Z")]
    records += [good(n, published=bad) for n, bad in enumerate(["yesterday", "2026-13-45", "31/02/2025"], 3)]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert file_dates([path]) == ["2025-03-04", "2025-03-05"]
    for day, kept in (("2025-03-04", "Gold rises 1%"), ("2025-03-05", "Gold rises 2%")):
        result = collect("files", day, CFG, paths=[path])
        assert [h.text for h in result.headlines] == [kept]
        assert result.reports[0].skipped["unreadable date (line 3, line 4, line 5)"] == 3


def test_a_file_is_parsed_once_for_all_its_days_and_again_when_it_changes(tmp_path, monkeypatch):
    calls = []
    parse = files._parse
    monkeypatch.setattr(files, "_parse", lambda *a: calls.append(a[2]) or parse(*a))
    records = [good(n, published=f"2025-03-{n:02d}T10:00:00Z") for n in range(1, 21)]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    days = file_dates([path])
    assert len(days) == 20
    for day in days:
        assert len(collect("files", day, CFG, paths=[path]).headlines) == 1
    assert calls == ["history.jsonl"]
    path.write_text(json.dumps(good(1, published="2025-04-01T10:00:00Z")) + "\n")
    assert file_dates([path]) == ["2025-04-01"] and len(calls) == 2


def test_a_file_over_the_size_limit_fails_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.jsonl"
    path.write_text("".join(json.dumps(good(n)) + "\n" for n in range(100)))
    size = path.stat().st_size
    monkeypatch.setattr(files, "_parse", lambda *a: pytest.fail("an oversized file was parsed"))
    cfg = HeadlinesConfig(max_file_bytes=1000)
    result = collect("files", DAY, cfg, paths=[path])
    assert result.reports[0].error == f"file is {size:,} bytes, over headlines.max_file_bytes=1,000"
    with pytest.raises(ValueError, match=r"over headlines\.max_file_bytes=1,000"):
        file_dates([path], cfg)


def test_headlines_longer_than_the_cap_are_skipped_and_counted(tmp_path):
    texts = [
        "Oil rises " + "x" * (MAX_HEADLINE_CHARS - 10),
        "Oil rises " + "y" * MAX_HEADLINE_CHARS,
        "Oil " * 1_250_000,
    ]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(good(n, text=t)) + "\n" for n, t in enumerate(texts)))
    result = collect("files", DAY, HeadlinesConfig(filter="off"), paths=[path])
    assert [len(h.text) for h in result.headlines] == [MAX_HEADLINE_CHARS]
    assert result.reports[0].skipped == {f"headline over {MAX_HEADLINE_CHARS} characters": 2}


def test_the_daily_cap_is_shared_across_sources_not_won_by_the_biggest(tmp_path):
    """One 2,000-item source beside 13 of 4 items: the small ones keep everything, the big one the rest."""
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(good(n, text=f"Stock {n} rises")) + "\n" for n in range(2000)))
    small = []
    for s in range(13):
        path = tmp_path / f"small{s}.jsonl"
        path.write_text(
            "".join(
                json.dumps(good(n, text=f"Bond {s}-{n} yields rise", link=f"https://b.example.com/{s}/{n}")) + "\n"
                for n in range(4)
            )
        )
        small.append(path)
    cfg = HeadlinesConfig(cap_per_day=64)
    result = collect("files", DAY, cfg, paths=[big, *small])
    kept = {r.source: r.kept for r in result.reports}
    assert len(result.headlines) == 64
    assert kept == {"big.jsonl": 12, **{f"small{s}.jsonl": 4 for s in range(13)}}
    assert result.reports[0].skipped == {"over the daily cap": 1988}
    reversed_order = collect("files", DAY, cfg, paths=[*reversed(small), big])
    assert {h.id for h in reversed_order.headlines} == {h.id for h in result.headlines}
    tight = collect("files", DAY, HeadlinesConfig(cap_per_day=20), paths=[big, *small])
    assert sorted(r.kept for r in tight.reports) == [1] * 8 + [2] * 6, "one round each, then the lowest hashes"


def _articles(path, *, records: int, body_chars: int, long_line: int, long_chars: int) -> None:
    """A JSONL news dump: each record a headline beside a long article body, one line far too long."""
    body = "The desk reports. " * (body_chars // 18)
    with open(path, "w") as out:
        for n in range(1, records + 1):
            if n == long_line:
                out.write('{"text": "Oil rises", "link": "https://o.example.com/x", "body": "')
                out.write("z" * long_chars)
                out.write('"}\n')
                continue
            day = f"2025-03-{n % 15 + 1:02d}T10:00:00Z"
            out.write(f'{{"text": "Gold rises {n}%", "link": "https://g.example.com/{n}", "published": "{day}", ')
            out.write(f'"body": "{body}"}}\n')


def test_a_large_jsonl_import_holds_one_record_in_memory_not_the_file(tmp_path):
    """80 MB of articles, 15 days, one 20 MB line: the import's peak memory is a few MB, the long
    line is skipped by its number without being read whole, and the stored payload is the file."""
    import tracemalloc

    from varro.artifacts import ArtifactStore
    from varro.integrity import file_sha256

    path = tmp_path / "dump.jsonl"
    _articles(path, records=1500, body_chars=40_000, long_line=700, long_chars=20_000_000)
    size = path.stat().st_size
    assert size > 75_000_000
    cfg = HeadlinesConfig(max_file_bytes=200_000_000, max_record_bytes=1_000_000, filter="off")
    tracemalloc.start()
    try:
        days = file_dates([path], cfg)
        results = [collect("files", day, cfg, paths=[path]) for day in days]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(days) == 15 and sum(len(r.headlines) for r in results) == 15 * 64
    assert results[0].reports[0].skipped["line over 1,000,000 bytes (line 700)"] == 1
    assert peak < 10_000_000, f"peak {peak:,} bytes importing a {size:,}-byte file"
    payload = results[0].payloads["dump.jsonl"]
    assert (payload.sha256, payload.size) == (file_sha256(path), size)
    store = ArtifactStore(tmp_path / "data")
    tracemalloc.start()
    try:
        ref = store.put_file(payload.path, payload.sha256, kind="feed-payload")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000 and ref.size == size and file_sha256(store.path(ref.sha256)) == payload.sha256


def test_a_file_changed_after_its_read_is_not_stored_under_the_old_hash(tmp_path):
    from varro.artifacts import ArtifactError, ArtifactStore

    path = tmp_path / "day.jsonl"
    path.write_text(json.dumps(good(1)) + "\n")
    payload = read_file(path).payload
    path.write_text(json.dumps(good(2)) + "\n")
    store = ArtifactStore(tmp_path / "data")
    with pytest.raises(ArtifactError, match="changed since it was read"):
        store.put_file(payload.path, payload.sha256, kind="feed-payload")
    assert not store.exists(payload.sha256) and not list((tmp_path / "data").rglob("*.tmp"))


def test_csv_is_read_record_by_record_with_lines_numbered_as_before(tmp_path):
    """A 30 MB CSV line between good rows (\\r\\n and bare \\r endings): skipped by its line, not read whole."""
    import tracemalloc

    path = tmp_path / "day.csv"
    with open(path, "w", newline="") as out:
        out.write(f"text,link,published\r\nOil rises 1%,https://o.example.com/1,{WHEN}\r")
        out.write(f'"Fed holds\nrates",https://f.example.com/2,{WHEN}\n')
        out.write("x" * 30_000_000 + f",https://x.example.com/3,{WHEN}\n")
        out.write(f"Oil rises 4%,https://o.example.com/4,{WHEN}\n")
    tracemalloc.start()
    try:
        result = collect("files", DAY, HeadlinesConfig(max_file_bytes=100_000_000), paths=[path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [h.text for h in result.headlines] == ["Oil rises 1%", "Fed holds rates", "Oil rises 4%"]
    assert result.reports[0].skipped == {"CSV record over 100,000 characters (line 5)": 1}
    assert peak < 5_000_000, f"peak {peak:,} bytes"
