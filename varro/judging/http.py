"""A judge behind any OpenAI-compatible chat-completions endpoint (llama.cpp,
vLLM, Ollama, LM Studio or a hosted API).

The answer must be exactly one letter among the remaining ones (any case;
surrounding quotes, brackets, a trailing period or colon and markdown emphasis
are tolerated; anything else is garbage). Timeouts, connection errors, non-2xx
replies, garbage and letters that are not on offer are retried up to
`retries` times, each retry counted; then the round is given up with the
reason, and the selection hands the group to the fallback judge.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import httpx

from varro.judging.base import RoundAnswer, RoundRequest
from varro.judging.prompt import JudgePrompt

_ANSWER = re.compile(r"""^[\s"'`*_(\[]*([A-Za-z])[\s"'`*_)\].:]*$""")


class BadAnswer(ValueError):
    """The server answered, but not with a valid letter."""


def parse_letter(content: str, letters: str) -> int:
    """Shown position of the single letter in `content`; BadAnswer otherwise."""
    match = _ANSWER.match(content)
    if match is None:
        raise BadAnswer(f"not a single letter: {content[:80]!r}")
    letter = match.group(1).upper()
    if letter not in letters:
        raise BadAnswer(f"letter {letter!r} is not among the remaining {letters}")
    return letters.index(letter)


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
        client: httpx.Client | None = None,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.name = f"http:{model}"
        self.url = url
        self.model = model
        self.retries = retries
        self.backoff_s = backoff_s
        self.prompt = prompt
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)

    def pick(self, rounds: Sequence[RoundRequest]) -> list[RoundAnswer]:
        return [self.ask(request) for request in rounds]

    def ask(self, request: RoundRequest) -> RoundAnswer:
        """One round, with up to `retries` retries; the last raw reply and error are kept."""
        body = {
            "model": self.model,
            "messages": self.prompt.messages(request),
            "temperature": 0.0,
            "max_tokens": 4,
        }
        raw, error = "", ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                raw, error = self._post(body), ""
                return RoundAnswer(choice=parse_letter(raw, request.letters), raw=raw, retries=attempt)
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

    def _post(self, body: dict) -> str:
        """The reply's message content; raises on transport errors, non-2xx or a malformed reply."""
        response = self.client.post(self.url, json=body)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise BadAnswer(f"message content is {type(content).__name__}, not text")
        return content
