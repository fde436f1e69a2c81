"""Small, deterministic inputs for the GSPO and checkpoint tests: a tiny random
Qwen3, synthetic roll-out groups, and an mlx_lm-loadable model directory."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models import qwen3

from varro.gspo.batch import TrainingSequence

VOCAB = 128
ARGS = dict(
    model_type="qwen3",
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    vocab_size=VOCAB,
    head_dim=16,
    tie_word_embeddings=True,
    max_position_embeddings=512,
    rope_theta=10000.0,
)


def tiny_model(seed: int = 0) -> qwen3.Model:
    mx.random.seed(seed)
    model = qwen3.Model(qwen3.ModelArgs(**ARGS))
    mx.eval(model.parameters())
    return model


def clone(model: qwen3.Model) -> qwen3.Model:
    copy = qwen3.Model(model.args)
    copy.load_weights(tree_flatten(model.parameters()))
    return copy


def make_groups(
    n_groups: int = 3, group_size: int = 8, seed: int = 0, prompt_len=(3, 9), response_len=(2, 12)
) -> list[list[TrainingSequence]]:
    """Random prompts/responses with rank-derived rewards 1 − (rank−1)/(G−1)."""
    rng = np.random.default_rng(seed)
    groups = []
    for h in range(n_groups):
        prompt = tuple(int(t) for t in rng.integers(1, VOCAB, rng.integers(*prompt_len)))
        ranks = rng.permutation(group_size) + 1
        group = []
        for i in range(group_size):
            resp = tuple(int(t) for t in rng.integers(1, VOCAB, rng.integers(*response_len)))
            group.append(
                TrainingSequence(
                    headline_id=f"h{h}",
                    index=i,
                    prompt_ids=prompt,
                    response_ids=resp,
                    behaviour_logprobs=tuple(float(x) for x in rng.normal(-4.8, 0.3, len(resp))),
                    reward=1 - (int(ranks[i]) - 1) / (group_size - 1),
                    raw_score=None,
                    rank=int(ranks[i]),
                )
            )
        groups.append(group)
    return groups


def write_model_dir(model: qwen3.Model, path: Path, dtype=mx.float32) -> Path:
    """A stock mlx_lm directory: config.json, model.safetensors and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<eos>": 0, **{f"t{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(str(path))
    config = dict(ARGS, eos_token_id=0, torch_dtype="bfloat16" if dtype == mx.bfloat16 else "float32")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    weights = {k: v.astype(dtype) for k, v in tree_flatten(model.parameters())}
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    return path
