"""The HTTP judge against a real loopback server that misbehaves on purpose."""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from varro.judging import LexicalJudge, RoundRequest, rank_groups
from varro.judging.http import BadAnswer, HttpJudge, parse_letter
from varro.judging.selection import GroupToRank

OUTCOMES = ("Oil prices surge after OPEC cuts output", "Gold climbs to a record")


class ScriptedServer:
    """Answers POSTs from a script: ("ok", text), ("status", code), ("sleep", s), ("not-json", body).
    When the script runs out it repeats its last step."""

    def __init__(self, script):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append((dict(self.headers), body))
                    step = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                kind, value = step
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "ok", "A"
                if kind == "status":
                    self._send(value, b"server error")
                elif kind == "not-json":
                    self._send(200, value.encode())
                else:
                    reply = {"choices": [{"message": {"role": "assistant", "content": value}}]}
                    self._send(200, json.dumps(reply).encode())

            def _send(self, code, payload):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def request(n=3, key="g1"):
    return RoundRequest(
        key=key, headline="OPEC meets", outcomes=OUTCOMES, candidates=tuple(f"prediction {i}" for i in range(n))
    )


def judge(url, retries, **kw):
    return HttpJudge(url, "judge-model", retries=retries, timeout_s=0.3, backoff_s=0.0, **kw)


def test_parse_letter_is_strict():
    assert parse_letter("B", "ABC") == 1
    assert parse_letter(" **(c).** \n", "ABC") == 2
    for bad in ["", "B because it is best", "AB", "The answer is A", "1"]:
        with pytest.raises(BadAnswer, match="not a single letter"):
            parse_letter(bad, "ABC")
    with pytest.raises(BadAnswer, match="not among the remaining ABC"):
        parse_letter("H", "ABC")


def test_garbage_wrong_letter_timeout_and_500_are_retried_and_counted():
    script = [("status", 500), ("ok", "I think B"), ("ok", "H"), ("sleep", 1.0), ("not-json", "<html>"), ("ok", "b")]
    with ScriptedServer(script) as server:
        [answer] = judge(server.url, retries=5).pick([request()])
    assert answer.choice == 1 and answer.raw == "b" and answer.retries == 5 and answer.error is None
    assert len(server.requests) == 6


def test_spent_retries_give_up_with_the_reason():
    with ScriptedServer([("status", 503)]) as server:
        [answer] = judge(server.url, retries=2).pick([request()])
    assert answer.choice is None and answer.retries == 2
    assert answer.error == "3 attempts failed, last: HTTP 503"
    assert len(server.requests) == 3


def test_the_request_carries_the_prompt_model_and_key():
    with ScriptedServer([("ok", "C")]) as server:
        [answer] = judge(server.url, retries=0, api_key="sekret").pick([request()])
    headers, body = server.requests[0]
    assert answer.choice == 2 and answer.retries == 0
    assert headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    user = body["messages"][-1]["content"]
    assert OUTCOMES[0] in user and "C: prediction 2" in user and "(A, B, C)" in user


def test_a_group_falls_back_after_retries_and_the_fallback_is_recorded():
    groups = [GroupToRank(headline_id="g1", headline="OPEC", texts=("oil prices surge opec", "", "gold"))]
    with ScriptedServer([("ok", "Z")]) as server:
        [ranked] = rank_groups(groups, OUTCOMES, judge(server.url, retries=1), LexicalJudge(), seed=5)
    assert ranked.judge == "lexical"
    assert ranked.fallback_reason.startswith("http:judge-model gave no valid pick in round 1")
    assert "letter 'Z' is not among the remaining ABC" in ranked.fallback_reason
    assert ranked.retries == 1
    assert len(ranked.failed_rounds) == 1 and ranked.failed_rounds[0].pick is None
    assert ranked.failed_rounds[0].raw == "Z" and ranked.failed_rounds[0].retries == 1
    assert ranked.ranks == [1, 3, 2] and len(ranked.rounds) == 2


def test_a_well_behaved_server_ranks_every_group():
    groups = [GroupToRank(headline_id=f"g{i}", headline="h", texts=tuple(f"t{j}" for j in range(8))) for i in range(2)]
    with ScriptedServer([("ok", "A")]) as server:
        ranked = rank_groups(groups, OUTCOMES, judge(server.url, retries=0), None, seed=5)
    assert len(server.requests) == 14
    for g in ranked:
        assert g.judge == "http:judge-model" and g.retries == 0
        assert [g.ranks[r.shown[0]] for r in g.rounds] == list(range(1, 8))
