"""The generation prompt: config template -> chat template -> exact token ids.

The ids returned here are recorded in the roll-out artifact and are what the
trainer feeds the model later, so the prompt a checkpoint is trained on is
byte-for-byte the prompt it generated from (the original system re-rendered
and re-encoded text for training, and the two drifted apart).
"""

from __future__ import annotations

from typing import Any

from events.errors import PermanentError
from events.ids import canonical_hash
from events.schema import Headline
from varro.config import VarroConfig


class PromptError(PermanentError, ValueError):
    """The prompt template cannot be rendered for a headline (names the field)."""


def render_user_message(cfg: VarroConfig, headline: Headline, date: str) -> str:
    try:
        return cfg.generation.prompt_template.format(headline=headline.text, source=headline.source, date=date)
    except (KeyError, IndexError) as exc:
        raise PromptError(
            f"generation.prompt_template uses an unknown field {exc}; known: {{headline}}, {{source}}, {{date}}"
        ) from None


def messages(cfg: VarroConfig, headline: Headline, date: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": cfg.generation.system_prompt},
        {"role": "user", "content": render_user_message(cfg, headline, date)},
    ]


def prompt_ids(cfg: VarroConfig, tokenizer: Any, headline: Headline, date: str) -> list[int]:
    """Token ids of the full chat prompt, ending where the assistant's answer begins."""
    ids = tokenizer.apply_chat_template(
        messages(cfg, headline, date),
        add_generation_prompt=True,
        enable_thinking=cfg.model.enable_thinking,
        tokenize=True,
    )
    if isinstance(ids, dict):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def prompt_hash(cfg: VarroConfig, tokenizer: Any) -> str:
    """Names everything that turns a headline into prompt ids besides the tokenizer's vocabulary
    (which the checkpoint hash already covers)."""
    return canonical_hash(
        {
            "system_prompt": cfg.generation.system_prompt,
            "prompt_template": cfg.generation.prompt_template,
            "chat_template": getattr(tokenizer, "chat_template", None) or "",
            "enable_thinking": cfg.model.enable_thinking,
        }
    )
