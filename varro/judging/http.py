"""A judge behind any OpenAI-compatible chat-completions endpoint (llama.cpp,
vLLM, Ollama, LM Studio, mlx_lm.server or a hosted API).

The reply must name exactly one letter among the remaining ones (see
varro.judging.answer for what is accepted; a reasoning block is dropped
first). Where the server supports it the answer is constrained (`constraint`):

- "logit_bias": +100 on the token of each remaining letter and one token to
  answer with, so the model can only pick among them (needs the served
  model's token ids: varro.judging.letter_tokens; mlx_lm.server, vLLM and
  llama.cpp honour it).
- "json_schema": a `response_format` JSON schema whose one field is an enum
  of the remaining letters (vLLM, llama.cpp, hosted APIs).
- "none": the free reply, within `max_tokens`.

The reply is validated strictly in every mode: a constraint the server
ignored gives garbage, not a guess. Timeouts, connection errors, non-2xx
replies, garbage and letters that are not on offer are retried up to
`retries` times, each retry counted; then the round is given up with the
reason, and the selection hands the group to the fallback judge.

Up to `concurrency` rounds are in flight at once (a server that batches, like
mlx_lm.server or vLLM, answers them together). Each round is its own request
and the answers come back in request order, so concurrency changes only the
speed, never the answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx

from varro.judging.answer import BadAnswer, parse_choice_json, parse_letter
from varro.judging.base import RoundAnswer, RoundRequest
from varro.judging.prompt import JudgePrompt

__all__ = ["BadAnswer", "HttpJudge", "parse_letter"]

Constraint = Literal["none", "logit_bias", "json_schema"]
CONSTRAINTS = ("none", "logit_bias", "json_schema")
LETTER_BIAS = 100  # the top of OpenAI's documented range: only the biased tokens stay reachable
JSON_MIN_TOKENS = 24  # room for {"choice": "B"} however the server spaces it


class HttpJudge:
    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        prompt: JudgePrompt = JudgePrompt(),
        concurrency: int = 1,
        constraint: Constraint = "none",
        letter_ids: Mapping[str, int] | None = None,
        max_tokens: int = 4,
        client: httpx.Client | None = None,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {constraint!r}")
        if constraint == "logit_bias" and not letter_ids:
            raise ValueError("the logit_bias constraint needs the letters' token ids")
        self.name = f"http:{model}"
        self.url = url
        self.model = model
        self.retries = retries
        self.backoff_s = backoff_s
        self.prompt = prompt
        self.concurrency = concurrency
        self.constraint = constraint
        self.letter_ids = dict(letter_ids or {})
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers, limits=limits)

    def pick(self, rounds: Sequence[RoundRequest]) -> list[RoundAnswer]:
        if self.concurrency == 1 or len(rounds) <= 1:
            return [self.ask(request) for request in rounds]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(rounds)), thread_name_prefix="judge") as pool:
            return list(pool.map(self.ask, rounds))

    def body(self, request: RoundRequest) -> dict[str, Any]:
        """The chat-completions request for one round, with its constraint."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": self.prompt.messages(request),
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        if self.constraint == "logit_bias":
            body["max_tokens"] = 1
            body["logit_bias"] = {str(self.letter_ids[letter]): LETTER_BIAS for letter in request.letters}
        elif self.constraint == "json_schema":
            body["max_tokens"] = max(self.max_tokens, JSON_MIN_TOKENS)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "judge_pick",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"choice": {"type": "string", "enum": list(request.letters)}},
                        "required": ["choice"],
                        "additionalProperties": False,
                    },
                },
            }
        return body

    def parse(self, content: str, letters: str) -> int:
        if self.constraint == "json_schema":
            return parse_choice_json(content, letters)
        return parse_letter(content, letters)

    def ask(self, request: RoundRequest) -> RoundAnswer:
        """One round, with up to `retries` retries; the last raw reply and error are kept."""
        body = self.body(request)
        raw, error = "", ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                raw, error = self._post(body), ""
                return RoundAnswer(choice=self.parse(raw, request.letters), raw=raw, retries=attempt)
            except BadAnswer as exc:
                error = str(exc)
            except httpx.TimeoutException:
                raw, error = "", f"timed out after {self.client.timeout.read}s"
            except httpx.HTTPStatusError as exc:
                raw, error = exc.response.text[:200], f"HTTP {exc.response.status_code}"
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                raw, error = "", f"{type(exc).__name__}: {exc}"
        return RoundAnswer(
            choice=None,
            raw=raw,
            retries=self.retries,
            error=f"{self.retries + 1} attempts failed, last: {error}",
        )

    def _post(self, body: dict[str, Any]) -> str:
        """The reply's message content; raises on transport errors, non-2xx or a malformed reply."""
        response = self.client.post(self.url, json=body)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise BadAnswer(f"message content is {type(content).__name__}, not text")
        return content
