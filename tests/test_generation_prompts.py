"""Prompts: rendered through the checkpoint's chat template; the hash names what shapes them."""

import msgspec
import pytest

from events.schema import Headline
from varro.config import GenerationConfig, ModelConfig, VarroConfig
from varro.prompts import PromptError, prompt_hash, prompt_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model_path)


HEADLINE = Headline(id="h1", text="Copper rallies on Chilean mine strike", source="Reuters")


def test_prompt_ids_are_the_chat_rendering_ending_at_the_answer(tokenizer):
    cfg = VarroConfig()
    ids = prompt_ids(cfg, tokenizer, HEADLINE, "2025-01-02")
    text = tokenizer.decode(ids)
    assert cfg.generation.system_prompt in text
    assert "Headline: Copper rallies on Chilean mine strike\nSource: Reuters\nDate: 2025-01-02" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt_ids(cfg, tokenizer, HEADLINE, "2025-01-02") == ids


def test_thinking_and_templates_change_ids_and_hash(tokenizer):
    base = VarroConfig()
    thinking = msgspec.structs.replace(base, model=ModelConfig(enable_thinking=True))
    other = msgspec.structs.replace(base, generation=GenerationConfig(prompt_template="News: {headline}"))
    assert tokenizer.decode(prompt_ids(thinking, tokenizer, HEADLINE, "2025-01-02")).endswith("<|im_start|>assistant\n")
    hashes = {prompt_hash(c, tokenizer) for c in (base, thinking, other)}
    assert len(hashes) == 3
    assert prompt_hash(VarroConfig(), tokenizer) == prompt_hash(base, tokenizer)


def test_unknown_template_field_is_named(tokenizer):
    cfg = msgspec.structs.replace(VarroConfig(), generation=GenerationConfig(prompt_template="{headline} {ticker}"))
    with pytest.raises(PromptError, match="ticker"):
        prompt_ids(cfg, tokenizer, HEADLINE, "2025-01-02")
