"""The local judge: any `mlx_lm` model picks the next letter, constrained and batched.

Constrained: the answer is the argmax of the next-token logits restricted to
the token ids of the letters still on offer, so no round can yield an invalid
or duplicate pick, whatever the model (a random one included). The
log-probabilities of the offered letters, renormalised over them, are the
round's raw scores.

Batched and prefix-sharing: every prompt of a day starts with the same text
(instruction and outcome headlines). Its keys and values are computed once per
day and shared by all rows; each round then runs one batched forward over the
round texts of all groups (in chunks of `batch_size` rows). The round texts
differ in length, so they are left-padded *after* the shared prefix: row i is
``[prefix | pad_i | round_i]``, with RoPE positions that continue the prefix
without a gap (`SharedPrefixCache`, varro.judging.shared_prefix).

Attention, where the time goes: on the CPU (``attention="auto"``) the layers'
attention runs in NumPy, one row and one block of 64 queries at a time, over
the prefix keys and the row's own suffix keys only, so pad columns and pad
queries are never computed and each score tile stays in cache
(`shared_prefix.attention`; MLX's CPU `exp` is scalar, and the scores are most
of a round's work). ``attention="mlx"``, and any model whose layers cannot be
routed, keeps mlx_lm's own attention over the broadcast prefix with a mask
over the pad columns. Either way every row computes what an unpadded forward
of its own prompt would, up to float32 rounding (tested on both paths).

The forward runs in two calls (all but the last column, then the last column)
so that the output projection is only applied where a letter is read. Of the
first call only the keys and values are read, so its last layer's attention
is left to MLX's lazy path and never evaluated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, make_prompt_cache

from varro.judging.base import LETTERS, JudgeError, RoundAnswer, RoundRequest, best_position
from varro.judging.prompt import JudgePrompt
from varro.judging.shared_prefix import SharedPrefixCache, route

_SPLIT = "\x00VARRO-ROUND\x00"


@dataclass(frozen=True)
class PromptTemplate:
    """How a request becomes token ids, and which token id each answer letter is."""

    chat: bool
    answer_cue: str
    letter_ids: tuple[int, ...]


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=special))


def _letter_ids(tokenizer: Any, spelling: str) -> tuple[int, ...] | None:
    """Token ids of 'A'..'Z' written as `spelling` (e.g. ' {}'), if each is one distinct token."""
    ids = [_encode(tokenizer, spelling.format(letter), special=False) for letter in LETTERS]
    if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
        return None
    return tuple(i[0] for i in ids)


def prompt_template(tokenizer: Any, *, chat: bool | None = None) -> PromptTemplate:
    """Chat template when the tokenizer has one, plain text otherwise.

    After a chat template's assistant header the answer is a bare letter; in
    plain text it follows ``Answer:`` as ``' A'`` where the tokenizer has such
    tokens, else as ``'A'`` after ``'Answer: '``, so the letter is tokenised the
    way it would be in running text.
    """
    use_chat = bool(getattr(tokenizer, "has_chat_template", False)) if chat is None else chat
    spellings = [("", "{}"), ("", " {}")] if use_chat else [("\nAnswer:", " {}"), ("\nAnswer: ", "{}")]
    for cue, spelling in spellings:
        ids = _letter_ids(tokenizer, spelling)
        if ids is not None:
            return PromptTemplate(chat=use_chat, answer_cue=cue, letter_ids=ids)
    raise JudgeError("the judge tokenizer has no single-token spelling of the letters A-Z")


class MlxJudge:
    """Greedy, letter-constrained choice by a local model; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "mlx",
        batch_size: int = 32,
        prompt: JudgePrompt = JudgePrompt(),
        chat: bool | None = None,
        # "auto": NumPy's blocked attention on the CPU, mlx_lm's elsewhere (see the module docstring)
        attention: Literal["auto", "mlx", "numpy"] = "auto",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if attention not in ("auto", "mlx", "numpy"):
            raise ValueError(f"attention must be 'auto', 'mlx' or 'numpy', got {attention!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.prompt = prompt
        self.template = prompt_template(tokenizer, chat=chat)
        # NumPy's attention where the model's layers can be routed to it: on the CPU for "auto"
        self.numpy_attention = (
            attention == "numpy" or (attention == "auto" and mx.default_device() == mx.cpu)
        ) and route(model)
        if attention == "numpy" and not self.numpy_attention:
            raise JudgeError("attention = 'numpy' needs mlx_lm attention layers (self_attn calling its module's sdpa)")
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[mx.array, mx.array]]] = OrderedDict()

    # --------------------------------------------------------------- text

    def texts(self, request: RoundRequest) -> tuple[str, str]:
        """The request's prompt as (shared prefix, round part); their concatenation is the prompt."""
        shared, round_text = self.prompt.shared(request.outcomes), self.prompt.round(request)
        if not self.template.chat:
            return shared, round_text + self.template.answer_cue
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": shared + _SPLIT + round_text}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
        head, sep, tail = rendered.partition(_SPLIT)
        if not sep:
            raise JudgeError("the judge's chat template altered the prompt text; use chat=False")
        return head, tail

    def prompt_ids(self, request: RoundRequest) -> tuple[list[int], list[int]]:
        head, tail = self.texts(request)
        return _encode(self.tokenizer, head, special=not self.template.chat), _encode(
            self.tokenizer, tail, special=False
        )

    # ------------------------------------------------------------ judging

    def pick(self, rounds: Sequence[RoundRequest]) -> list[RoundAnswer]:
        answers: dict[int, RoundAnswer] = {}
        by_prefix: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, request in enumerate(rounds):
            head, tail = self.prompt_ids(request)
            by_prefix.setdefault(tuple(head), []).append((i, tail))
        for shared, rows in by_prefix.items():
            prefix = self._prefix(shared)
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                logits = self._next_token_logits(prefix, [tail for _, tail in chunk])
                for (i, _), row in zip(chunk, logits, strict=True):
                    answers[i] = self._answer(rounds[i], row)
        return [answers[i] for i in range(len(rounds))]

    def _answer(self, request: RoundRequest, logits: np.ndarray) -> RoundAnswer:
        offered = logits[list(self.template.letter_ids[: len(request.candidates)])].astype(np.float64)
        top = offered.max()
        logprobs = offered - top - np.log(np.exp(offered - top).sum())
        choice = best_position(logprobs.tolist())
        return RoundAnswer(choice=choice, raw=request.letters[choice], scores=tuple(logprobs.tolist()))

    def _prefix(self, head: tuple[int, ...]) -> list[tuple[mx.array, mx.array]]:
        """Keys and values of the shared prefix, computed once and kept for the day."""
        if head in self._prefixes:
            self._prefixes.move_to_end(head)
            return self._prefixes[head]
        if not head:
            raise JudgeError("the judge prompt has an empty shared prefix")
        cache = make_prompt_cache(self.model)
        if any(type(c) is not KVCache for c in cache):
            kinds = sorted({type(c).__name__ for c in cache})
            raise JudgeError(f"the batched judge needs plain KV caches; this model uses {', '.join(kinds)}")
        self.model(mx.array(head)[None], cache=cache)
        layers = [(c.keys[..., : c.offset, :], c.values[..., : c.offset, :]) for c in cache]
        mx.eval(layers)
        self._prefixes[head] = layers
        while len(self._prefixes) > 2:
            self._prefixes.popitem(last=False)
        return layers

    def _next_token_logits(self, prefix: list[tuple[mx.array, mx.array]], tails: list[list[int]]) -> np.ndarray:
        """Logits after each row's prompt, one batched forward over the round parts."""
        if any(not t for t in tails):
            raise JudgeError("a judge round prompt encoded to no tokens")
        width = max(len(t) for t in tails)
        pads = [width - len(t) for t in tails]
        tokens = mx.array([[0] * pad + tail for pad, tail in zip(pads, tails, strict=True)])
        cache = [SharedPrefixCache(k, v, pads, numpy=self.numpy_attention) for k, v in prefix]
        if width > 1:
            # Of this call only the keys and values are read (by the next). The last layer's attention
            # output feeds nothing, so it stays on the lazy MLX path, which is never evaluated.
            cache[-1].numpy = False
            self.model(tokens[:, :-1], cache=cache)
            cache[-1].numpy = self.numpy_attention
        logits = self.model(tokens[:, -1:], cache=cache)[:, -1, :].astype(mx.float32)
        return np.array(logits)
