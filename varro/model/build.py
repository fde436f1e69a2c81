"""Build "varro-tiny": the project's own small Qwen3-architecture model.

Tests and the default demo must never download a model, yet they need one that
behaves like the real thing: a byte-level BPE tokenizer with a Qwen3-style chat
template (im_start/im_end, switchable thinking), a `model_type: qwen3` config,
and weights whose roll-outs look like six-section predictions and differ
between samples. This module trains both from the bundled corpus in about a
minute on two CPU cores and writes the standard mlx_lm layout (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json), so stock
`mlx_lm.load(path)` loads it like any downloaded checkpoint.

The build is a pure function of this file, the corpus and the seed;
`recipe_hash` names that combination and keys the on-disk cache.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from events.errors import PermanentError
from events.ids import sha256_hex
from varro.config import DEFAULT_PROMPT_TEMPLATE, DEFAULT_SYSTEM_PROMPT

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn
    from tokenizers import Tokenizer

Log = Callable[[str], None]

MODEL_NAME = "varro-tiny"

IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_START, THINK_END = "<think>", "</think>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END, THINK_START, THINK_END)

# Qwen3's template, reduced to what Varro uses: system/user/assistant turns and
# the `enable_thinking` switch. With thinking off the assistant turn opens with
# an empty think block, exactly as Qwen3 renders it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


@dataclass(frozen=True)
class Recipe:
    """Everything besides the corpus and this file's code that shapes the build."""

    seed: int = 1234
    vocab_size: int = 2048
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 5e-3
    warmup_steps: int = 20


class CorpusError(PermanentError, ValueError):
    """The bundled corpus is malformed (names the record)."""


@dataclass(frozen=True)
class Example:
    headline: str
    source: str
    prediction: str


CORPUS_PATH = Path(__file__).resolve().parent.parent / "data" / "corpus" / "predictions.txt"


def corpus_text() -> str:
    return CORPUS_PATH.read_text(encoding="utf-8")


def parse_corpus(text: str) -> list[Example]:
    """Records separated by `%%` lines: Headline:, Source:, blank line, prediction."""
    examples = []
    for number, block in enumerate(text.split("\n%%\n"), start=1):
        head, sep, body = block.strip().partition("\n\n")
        fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        if not sep or "Headline" not in fields or "Source" not in fields or not body.strip():
            raise CorpusError(f"corpus record {number} needs Headline:, Source:, a blank line and a prediction")
        examples.append(Example(fields["Headline"].strip(), fields["Source"].strip(), body.strip()))
    return examples


def recipe_hash(recipe: Recipe = Recipe()) -> str:
    """Names one build: this file's code, the recipe, the corpus and the default prompts."""
    parts = [
        Path(__file__).read_bytes(),
        json.dumps(asdict(recipe), sort_keys=True).encode(),
        corpus_text().encode(),
        DEFAULT_SYSTEM_PROMPT.encode(),
        DEFAULT_PROMPT_TEMPLATE.encode(),
    ]
    return sha256_hex(b"\x1f".join(sha256_hex(p).encode() for p in parts))


# ----------------------------------------------------------------- tokenizer


def train_tokenizer(examples: list[Example], vocab_size: int) -> Tokenizer:
    """Byte-level BPE, so any text (tickers, symbols, other scripts) still encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [DEFAULT_SYSTEM_PROMPT, DEFAULT_PROMPT_TEMPLATE]
    texts += [f"{e.headline}\n{e.source}\n{e.prediction}" for e in examples]
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of one of `SPECIAL_TOKENS`, which training the tokenizer always assigns."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise CorpusError(f"the trained tokenizer has no id for the special token {token!r}")
    return found


def write_tokenizer(tokenizer: Tokenizer, out: Path, max_length: int) -> None:
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {
                "content": t,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": True,
            }
            for t in SPECIAL_TOKENS
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


# --------------------------------------------------------------------- model


def model_config(recipe: Recipe, vocab_size: int, eos_ids: list[int]) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": recipe.hidden_size,
        "num_hidden_layers": recipe.num_hidden_layers,
        "num_attention_heads": recipe.num_attention_heads,
        "num_key_value_heads": recipe.num_key_value_heads,
        "head_dim": recipe.head_dim,
        "intermediate_size": recipe.intermediate_size,
        "max_position_embeddings": recipe.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": recipe.rope_theta,
        "tie_word_embeddings": True,
        "vocab_size": vocab_size,
        "eos_token_id": eos_ids,
        "torch_dtype": "float32",
    }


def chat_sequences(examples: list[Example], hf_tokenizer: Any, seed: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) rendered exactly as generation renders prompts."""
    rng = np.random.default_rng(seed)
    im_end = hf_tokenizer.convert_tokens_to_ids(IM_END)
    sequences = []
    for example in examples:
        day = int(rng.integers(0, 730))
        date = (np.datetime64("2024-01-01") + day).astype(str)
        user = DEFAULT_PROMPT_TEMPLATE.format(headline=example.headline, source=example.source, date=date)
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": user}]
        prompt = hf_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        prompt_ids = hf_tokenizer.encode(prompt, add_special_tokens=False)
        response_ids = [*hf_tokenizer.encode(example.prediction, add_special_tokens=False), im_end]
        sequences.append((prompt_ids, response_ids))
    return sequences


def train_model(
    config: dict[str, Any], sequences: list[tuple[list[int], list[int]]], recipe: Recipe, log: Log = print
) -> nn.Module:
    """Plain next-token cross-entropy on the response tokens (EOS included), AdamW, cosine decay."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.models import qwen3

    mx.random.seed(recipe.seed)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
    mx.eval(model.parameters())

    length = max(len(p) + len(r) for p, r in sequences)
    tokens = np.zeros((len(sequences), length), dtype=np.int32)
    mask = np.zeros((len(sequences), length - 1), dtype=bool)
    for i, (prompt, response) in enumerate(sequences):
        ids = prompt + response
        tokens[i, : len(ids)] = ids
        mask[i, len(prompt) - 1 : len(ids) - 1] = True

    schedule = optim.join_schedules(
        [
            optim.linear_schedule(1e-2 * recipe.learning_rate, recipe.learning_rate, recipe.warmup_steps),
            optim.cosine_decay(recipe.learning_rate, recipe.steps - recipe.warmup_steps, 0.1 * recipe.learning_rate),
        ],
        [recipe.warmup_steps],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.01)

    def loss_fn(model: nn.Module, batch: mx.array, positions: mx.array, targets: mx.array) -> mx.array:
        # Project only the response positions onto the vocabulary: on CPU the
        # softmax's exp, not the matmuls, dominates a step of a model this small.
        hidden = model.model(batch[:, :-1]).reshape(-1, config["hidden_size"])[positions]
        logits = model.model.embed_tokens.as_linear(hidden)
        loss: mx.array = nn.losses.cross_entropy(logits, targets, reduction="mean")
        return loss

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def step(batch: mx.array, positions: mx.array, targets: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, batch, positions, targets)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(model, grads)
        value: mx.array = loss
        return value

    rng = np.random.default_rng(recipe.seed)
    order: list[int] = []
    started = time.perf_counter()
    for i in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order.extend(rng.permutation(len(sequences)).tolist())
        rows, order = order[: recipe.batch_size], order[recipe.batch_size :]
        # Trim the batch to its longest row: MLX on CPU pays for every padded position.
        width = int(math.ceil(max(len(sequences[r][0]) + len(sequences[r][1]) for r in rows) / 32) * 32)
        width = min(width, length)
        batch = tokens[rows, :width]
        positions = np.flatnonzero(mask[rows, : width - 1])
        targets = batch[:, 1:].reshape(-1)[positions]
        loss = step(mx.array(batch), mx.array(positions), mx.array(targets))
        mx.eval(loss, model.parameters(), optimizer.state)
        if i % 50 == 0 or i == recipe.steps - 1:
            log(f"step {i:4d}  loss {loss.item():.3f}  {time.perf_counter() - started:.1f}s")
    return model


def build(out: Path, recipe: Recipe = Recipe(), log: Log = print) -> Path:
    """Train the tokenizer and the model and write the checkpoint into `out` (created)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from transformers import AutoTokenizer

    examples = parse_corpus(corpus_text())
    out.mkdir(parents=True, exist_ok=False)
    tokenizer = train_tokenizer(examples, recipe.vocab_size)
    write_tokenizer(tokenizer, out, recipe.max_position_embeddings)
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out))
    eos_ids = [special_id(tokenizer, IM_END), special_id(tokenizer, END_OF_TEXT)]
    config = model_config(recipe, tokenizer.get_vocab_size(), eos_ids)
    sequences = chat_sequences(examples, hf_tokenizer, recipe.seed)
    log(f"{len(examples)} examples, vocab {config['vocab_size']}, {sum(len(p) + len(r) for p, r in sequences)} tokens")
    model = train_model(config, sequences, recipe, log=log)
    flat = cast("list[tuple[str, mx.array]]", tree_flatten(model.parameters()))  # no destination: a list
    weights = dict(sorted(flat, key=lambda item: item[0]))  # parameter paths are unique
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return out
