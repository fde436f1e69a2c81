"""Published shapes of the models Varro is built for: estimates, tests and benchmarks at their size, no download.

`QWEN3_0_6B` is the architecture part of Qwen/Qwen3-0.6B's config.json (the
published checkpoint is bfloat16; the dtype is left to the caller). Random
weights of this shape cost what the real model costs to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QWEN3_0_6B: dict[str, Any] = {
    "model_type": "qwen3",
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "intermediate_size": 3072,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
}

DIMENSIONS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)
"""The fields that size the model (what a benchmark varies); the rest are its numerics."""


def dimensions(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sizing fields of a config.json-style mapping."""
    return {name: config[name] for name in DIMENSIONS}
