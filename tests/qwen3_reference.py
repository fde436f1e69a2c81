"""An independent float64 Qwen3 forward, the arbiter for the inference kernels' tests."""

import mlx.core as mx
import numpy as np


def reference_logits(model, ids: list[int]) -> np.ndarray:
    """An independent float64 Qwen3 forward over one sequence, written from the architecture, not from mlx_lm."""
    args = model.args
    w = {k: np.array(v.astype(mx.float32), dtype=np.float64) for k, v in _flat(model.parameters())}
    eps, heads, kv_heads, dim = args.rms_norm_eps, args.num_attention_heads, args.num_key_value_heads, args.head_dim

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def rope(x):  # (heads, T, dim), rotate-half (non-traditional)
        half = dim // 2
        freqs = args.rope_theta ** (-np.arange(half) * 2.0 / dim)
        angle = np.arange(x.shape[1])[:, None] * freqs[None]
        cos, sin = np.cos(angle), np.sin(angle)
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    h = w["model.embed_tokens.weight"][ids]
    steps = len(ids)
    causal = np.tril(np.ones((steps, steps), dtype=bool))
    for i in range(args.num_hidden_layers):
        p = f"model.layers.{i}."
        x = rms(h, w[p + "input_layernorm.weight"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(steps, heads, dim).transpose(1, 0, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(steps, kv_heads, dim).transpose(1, 0, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(steps, kv_heads, dim).transpose(1, 0, 2)
        q = rope(rms(q, w[p + "self_attn.q_norm.weight"]))
        k = rope(rms(k, w[p + "self_attn.k_norm.weight"]))
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)
        scores = np.where(causal, q @ k.transpose(0, 2, 1) * dim**-0.5, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = (probs @ v).transpose(1, 0, 2).reshape(steps, heads * dim)
        h = h + attn @ w[p + "self_attn.o_proj.weight"].T
        x = rms(h, w[p + "post_attention_layernorm.weight"])
        gate, up = x @ w[p + "mlp.gate_proj.weight"].T, x @ w[p + "mlp.up_proj.weight"].T
        h = h + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    return rms(h, w["model.norm.weight"]) @ w["model.embed_tokens.weight"].T


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], tree
