"""The HTTP judge against a real OpenAI-compatible server: mlx_lm.server serving varro-tiny on loopback.

varro-tiny is an untrained model: asked freely it answers "to to to" or "drive the.", so every group
falls back. With `logit_bias` on the remaining letters' tokens the server can only answer a letter,
so every round is the judge's own pick.
"""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from varro.config import JudgeConfig
from varro.judging import GroupToRank, build_judges, rank_day

OUTCOMES = ("Oil prices surge after OPEC cuts output", "Gold climbs to a record", "Fed holds rates")
ASSETS = ("oil", "gold", "rates", "stocks")
START_S = 120  # loading varro-tiny takes a few seconds idle; bounded generously for a loaded machine


@pytest.fixture(scope="module")
def mlx_server(tiny_model_path, tmp_path_factory):
    """mlx_lm.server on a free loopback port, offline (the model is a local directory)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("mlx-server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "mlx_lm.server",
        "--model",
        str(tiny_model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlx_lm.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/v1/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlx_lm.server did not answer within {START_S}s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"{base}/v1/chat/completions"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def day_groups(n_groups=4, size=4):
    return [
        GroupToRank(
            headline_id=f"h{i}",
            headline=f"Headline {i}: OPEC weighs output cut",
            texts=tuple(f"Market Impact: {ASSETS[j % len(ASSETS)]} moves {i}-{j}." for j in range(size)),
        )
        for i in range(n_groups)
    ]


def judge_config(url, **kw):
    # "default_model" is mlx_lm.server's name for the model it was started with.
    return JudgeConfig(
        kind="http", http_url=url, http_model="default_model", http_timeout_s=60.0, http_backoff_s=0.0, **kw
    )


def test_with_logit_bias_every_group_is_ranked_by_the_judge_itself(mlx_server, tiny_model_path):
    cfg = judge_config(mlx_server, http_constraint="logit_bias", http_tokenizer=str(tiny_model_path), retries=0)
    judge, fallback = build_judges(cfg)
    day = rank_day(day_groups(), OUTCOMES, judge, fallback, seed=7, agreement_groups=2)
    assert day.stats.primary_share == 1.0
    for group in day.groups:
        assert group.judge == "http:default_model" and group.fallback_reason is None and group.retries == 0
        assert sorted(group.ranks) == [1, 2, 3, 4] and len(group.rounds) == 3
        assert all(r.raw in "ABCD" and len(r.raw) == 1 for r in group.rounds)


def test_asked_freely_the_untrained_model_falls_back(mlx_server):
    # The measured problem the constraint solves: without it the same server gives no valid letter.
    judge, fallback = build_judges(judge_config(mlx_server, retries=0, http_concurrency=1))
    day = rank_day(day_groups(n_groups=2), OUTCOMES, judge, fallback, seed=7, agreement_groups=0)
    assert day.stats.primary_share < 1.0
    assert any(g.judge == "lexical" and "not a single letter" in g.fallback_reason for g in day.groups)
