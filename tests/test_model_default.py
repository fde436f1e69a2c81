"""The default model: builds once, loads with stock mlx_lm, has a Qwen3-style chat template."""

import json
import shutil

import pytest

from events.schema import CheckpointRef
from varro.config import ModelConfig, VarroConfig
from varro.integrity import IntegrityError
from varro.model import build as tiny
from varro.model.cache import ModelCache, ModelError, checkpoint_sha256, default_model_path


@pytest.fixture(scope="module")
def stock(tiny_model_path):
    from mlx_lm import load

    return load(str(tiny_model_path))


def test_default_model_is_a_qwen3_checkpoint_in_the_mlx_lm_layout(tiny_model_path):
    assert tiny_model_path == default_model_path()
    names = {p.name for p in tiny_model_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_model_path / "config.json").read_text())
    assert config["model_type"] == "qwen3"
    assert config["tie_word_embeddings"] is True
    assert 1000 <= config["vocab_size"] <= 4096


def test_stock_mlx_lm_load_and_chat_template(stock):
    _model, tokenizer = stock
    im_end = tokenizer.convert_tokens_to_ids(tiny.IM_END)
    assert im_end in tokenizer.eos_token_ids
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Headline: Oil rises"}]
    off = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False, tokenize=False)
    on = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True, tokenize=False)
    assert off.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    ids = tokenizer.encode(off, add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids(tiny.IM_START) in ids
    assert (
        tokenizer.decode(tokenizer.encode("Buy NVDA; yields 4.2% €", add_special_tokens=False))
        == "Buy NVDA; yields 4.2% €"
    )


def test_corpus_examples_all_have_six_sections():
    from varro.structure import structure_score

    examples = tiny.parse_corpus(tiny.corpus_text())
    assert 60 <= len(examples) <= 120
    assert all(structure_score(e.prediction) == 1.0 for e in examples)
    assert len({e.headline for e in examples}) == len(examples)


def test_malformed_corpus_record_is_named():
    with pytest.raises(tiny.CorpusError, match="record 2"):
        tiny.parse_corpus("Headline: a\nSource: b\n\nMarket Impact: x\n%%\nno header here")


def test_model_cache_loads_once_and_verifies_the_hash(tiny_model_path, tmp_path):
    cache = ModelCache(VarroConfig(data_dir=str(tmp_path)))
    ref = cache.base_ref()
    assert ref.sha256 == checkpoint_sha256(tiny_model_path) and ref.base_model == "varro-tiny"
    first = cache.load(ref)
    assert cache.load(ref) is first
    assert first.tokenizer.eos_token_ids

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_path, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    with pytest.raises(IntegrityError, match=f"corrupted checkpoint {copy}: it hashes to"):
        cache.load(CheckpointRef(sha256="f" * 64, base_model="x", path=str(copy)))
    with pytest.raises(ModelError, match="not found"):
        cache.load(CheckpointRef(sha256="e" * 64, base_model="x"))


def test_checkpoints_in_the_data_dir_resolve_by_hash(tiny_model_path, tmp_path):
    cfg = VarroConfig(data_dir=str(tmp_path))
    sha = checkpoint_sha256(tiny_model_path)
    shutil.copytree(tiny_model_path, tmp_path / "checkpoints" / sha)
    loaded = ModelCache(cfg).load(CheckpointRef(sha256=sha, base_model="varro-tiny"))
    assert loaded.path == tmp_path / "checkpoints" / sha


def test_local_directory_as_base_model(tiny_model_path, tmp_path):
    cfg = VarroConfig(data_dir=str(tmp_path), model=ModelConfig(base=str(tiny_model_path)))
    ref = ModelCache(cfg).base_ref()
    assert ref.path == str(tiny_model_path.resolve()) and ref.sha256 == checkpoint_sha256(tiny_model_path)


def test_recipe_hash_names_the_seed_and_corpus():
    assert tiny.recipe_hash() == tiny.recipe_hash()
    assert tiny.recipe_hash(tiny.Recipe(seed=7)) != tiny.recipe_hash()
