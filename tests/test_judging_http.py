"""The HTTP judge against a real loopback server that misbehaves on purpose."""

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from varro.config import ConfigError, JudgeConfig, VarroConfig, load_config
from varro.judging import JudgeError, LexicalJudge, RoundRequest, build_judge, rank_groups
from varro.judging.base import LETTERS
from varro.judging.http import BadAnswer, HttpJudge, parse_letter
from varro.judging.selection import GroupToRank

OUTCOMES = ("Oil prices surge after OPEC cuts output", "Gold climbs to a record")
# Generous for a loopback reply on a loaded machine; a "hang" step outlasts it whatever the load.
TIMEOUT_S = 3.0


class ScriptedServer:
    """Answers POSTs from a script: ("ok", text), ("status", code), ("hang", None) (no reply until the
    client gives up), ("not-json", body), ("last", None) (the last remaining letter, so every answer
    names its own request). When the script runs out it repeats its last step. `gate` holds each
    request until that many are in flight together, then `linger` seconds more (time for any request
    beyond a bound to arrive); `peak` is the most there ever were."""

    def __init__(self, script, gate=None, linger=0.0):
        self.script, self.requests, self.lock = list(script), [], threading.Lock()
        self.in_flight = self.peak = 0
        self.released = threading.Event()
        self.gate = threading.Barrier(gate, timeout=TIMEOUT_S) if gate else None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append((dict(self.headers), body))
                    step = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                    owner.in_flight += 1
                    owner.peak = max(owner.peak, owner.in_flight)
                try:
                    if owner.gate is not None:
                        with contextlib.suppress(threading.BrokenBarrierError):
                            owner.gate.wait()
                        time.sleep(linger)
                    self._answer(step, body)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _answer(self, step, body):
                kind, value = step
                if kind == "hang":
                    owner.released.wait(30 * TIMEOUT_S)
                    return
                if kind == "last":
                    kind, value = "ok", body["messages"][-1]["content"].rsplit(", ", 1)[-1].rstrip(").")
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
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def request(n=3, key="g1"):
    return RoundRequest(
        key=key, headline="OPEC meets", outcomes=OUTCOMES, candidates=tuple(f"prediction {i}" for i in range(n))
    )


def judge(url, retries, **kw):
    return HttpJudge(url, "judge-model", retries=retries, timeout_s=TIMEOUT_S, backoff_s=0.0, **kw)


def test_parse_letter_is_strict():
    assert parse_letter("B", "ABC") == 1
    assert parse_letter(" **(c).** \n", "ABC") == 2
    bad = ["", "B because it is best", "AB", "The answer is A", "1", "Because", "A good one is C", "B.Because", "B,C"]
    for text in bad:
        with pytest.raises(BadAnswer, match="not a single letter"):
            parse_letter(text, "ABC")
    with pytest.raises(BadAnswer, match="not among the remaining ABC"):
        parse_letter("H", "ABC")
    with pytest.raises(BadAnswer, match="not among the remaining ABC"):
        parse_letter("D. Because it names the assets", "ABC")


def test_a_letter_heading_an_explanation_or_after_reasoning_is_read():
    for text in ["B.", "B\n\nBecause it names oil.", "B. Because oil", "b) the oil one", "**B**: oil", "(B)\nbecause"]:
        assert parse_letter(text, "ABC") == 1, text
    assert parse_letter("<think>A or C? A names gold.</think>\n\nC", "ABC") == 2
    assert parse_letter("A looks good but</think>C", "ABC") == 2  # the server prefilled <think>
    with pytest.raises(BadAnswer, match="reasoning block never closed"):
        parse_letter("<think>A or C? A names", "ABC")
    with pytest.raises(BadAnswer, match="more than one lone letter"):
        parse_letter("A\nB", "ABC")
    with pytest.raises(BadAnswer, match="not a single letter"):
        parse_letter("<think>B</think>I think B", "ABC")


def test_garbage_wrong_letter_timeout_and_500_are_retried_and_counted():
    script = [("status", 500), ("ok", "I think B"), ("ok", "H"), ("hang", None), ("not-json", "<html>"), ("ok", "b")]
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


def test_rounds_go_out_concurrently_bounded_and_answers_keep_their_order():
    # 8 rounds of 2..9 candidates: each answer is its own round's last letter. The gate holds
    # requests until 3 are in flight, so a sequential judge never passes it (each request waits
    # out the gate's timeout and the peak stays 1); held a moment longer, an unbounded judge's
    # other rounds arrive meanwhile and the peak exceeds 3.
    rounds = [request(n, key=f"g{n}") for n in range(2, 10)]
    with ScriptedServer([("last", None)], gate=3, linger=0.3) as server:
        answers = judge(server.url, retries=0, concurrency=3).pick(rounds[:6])
        more = judge(server.url, retries=0, concurrency=3).pick([*rounds[6:], request(3, key="g-x")])
    assert server.peak == 3
    assert [a.choice for a in answers + more] == [n - 1 for n in range(2, 10)] + [2]
    assert all(a.retries == 0 and a.error is None for a in answers + more)


def test_concurrent_and_sequential_judges_rank_identically():
    groups = [
        GroupToRank(headline_id=f"g{i}", headline="h", texts=tuple(f"t{i}-{j}" for j in range(3 + i % 4)))
        for i in range(6)
    ]
    with ScriptedServer([("last", None)]) as server:
        one = rank_groups(groups, OUTCOMES, judge(server.url, retries=0), None, seed=5)
        many = rank_groups(groups, OUTCOMES, judge(server.url, retries=0, concurrency=4), None, seed=5)
    assert one == many and all(g.judge == "http:judge-model" for g in one)


def test_logit_bias_asks_for_one_token_of_the_remaining_letters_only():
    ids = {letter: 1000 + i for i, letter in enumerate(LETTERS)}
    with ScriptedServer([("ok", "B")]) as server:
        [answer] = judge(server.url, retries=0, constraint="logit_bias", letter_ids=ids).pick([request(3)])
    _, body = server.requests[0]
    assert answer.choice == 1
    assert body["logit_bias"] == {"1000": 100, "1001": 100, "1002": 100} and body["max_tokens"] == 1
    assert "response_format" not in body


def test_a_server_that_ignores_the_constraint_is_still_validated_and_falls_back():
    ids = {letter: i for i, letter in enumerate(LETTERS)}
    groups = [GroupToRank(headline_id="g1", headline="OPEC", texts=("oil prices surge opec", "", "gold"))]
    with ScriptedServer([("ok", "to to to")]) as server:
        j = judge(server.url, retries=1, constraint="logit_bias", letter_ids=ids)
        [ranked] = rank_groups(groups, OUTCOMES, j, LexicalJudge(), seed=5)
    assert ranked.judge == "lexical" and "not a single letter: 'to to to'" in ranked.fallback_reason
    assert len(server.requests) == 2


def test_json_schema_sends_an_enum_of_the_remaining_letters_and_reads_the_choice():
    script = [("ok", '{"choice": "Z"}'), ("ok", "B"), ("ok", '<think>hm</think>{"choice": "c"}')]
    with ScriptedServer(script) as server:
        [answer] = judge(server.url, retries=2, constraint="json_schema").pick([request(3)])
    assert answer.choice == 2 and answer.retries == 2
    _, body = server.requests[0]
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["properties"]["choice"]["enum"] == ["A", "B", "C"] and schema["required"] == ["choice"]
    assert body["max_tokens"] >= 16 and "logit_bias" not in body


def test_json_schema_refuses_replies_that_are_not_one_valid_choice():
    with ScriptedServer([("ok", '{"choice": "AB"}')]) as server:
        [answer] = judge(server.url, retries=1, constraint="json_schema").pick([request(3)])
    assert answer.choice is None and "choice is not a single letter" in answer.error
    with ScriptedServer([("ok", "B")]) as server:
        [answer] = judge(server.url, retries=0, constraint="json_schema").pick([request(3)])
    assert answer.error == "1 attempts failed, last: not JSON: 'B'"


def test_the_letter_ids_come_from_the_served_models_tokenizer(tiny_model_path, tmp_path):
    from tokenizers import Tokenizer

    cfg = JudgeConfig(
        kind="http", http_constraint="logit_bias", http_tokenizer=str(tiny_model_path), http_concurrency=4
    )
    built = build_judge("http", cfg)
    tokenizer = Tokenizer.from_file(str(tiny_model_path / "tokenizer.json"))
    assert built.constraint == "logit_bias" and built.concurrency == 4
    assert all(tokenizer.decode([built.letter_ids[letter]]) == letter for letter in LETTERS)
    with pytest.raises(JudgeError, match=re.escape("no tokenizer.json at")):
        build_judge("http", JudgeConfig(kind="http", http_constraint="logit_bias", http_tokenizer=str(tmp_path)))
    with pytest.raises(JudgeError, match=re.escape("needs judge.http_tokenizer")):
        build_judge("http", JudgeConfig(kind="http", http_constraint="logit_bias"))


def test_the_constraint_settings_are_checked_when_the_config_is_loaded():
    with pytest.raises(ConfigError, match=re.escape("judge.http_tokenizer: must be set to the served model")):
        load_config(overrides={"judge": {"http_constraint": "logit_bias"}}, environ={})
    with pytest.raises(ConfigError, match=re.escape("judge.http_concurrency: must be >= 1, got 0")):
        load_config(overrides={"judge": {"http_concurrency": 0}}, environ={})
    with pytest.raises(ConfigError, match=re.escape("judge.http_constraint")):
        load_config(overrides={"judge": {"http_constraint": "grammar"}}, environ={})


def test_the_new_judge_settings_keep_recorded_ids():
    # The judge section's hash before these settings existed (it enters every Ranked event id).
    recorded = "55a455a3fcf29ff92f640fe4e87ab16e3887b524eefcedebedba790cea707d28"
    assert VarroConfig().section_hash("judge") == recorded
    # Concurrency is speed, not identity: any value keeps the id.
    assert VarroConfig(judge=JudgeConfig(http_concurrency=16)).section_hash("judge") == recorded
    # A constraint changes what the judge is asked, so it is part of the id.
    constrained = JudgeConfig(http_constraint="logit_bias", http_tokenizer="/m")
    assert VarroConfig(judge=constrained).section_hash("judge") != recorded
