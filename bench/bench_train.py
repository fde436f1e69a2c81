"""Training throughput of one GSPO step: Varro's MLX trainer beside a plain PyTorch step.

    .venv/bin/python -m bench.bench_train [--models tiny,qwen3-0.6b] [--steps 3]

One "step" is what one minibatch costs in `varro.gspo.trainer`: forward over a
right-padded batch of prompt+response sequences in float32, response-token
log-probs, the GSPO loss against given π_old log-probs, backward, global
grad-norm clipping and an AdamW update of every weight (full fine-tuning).
The PyTorch side implements the same Qwen3 architecture and the same step in
plain PyTorch (full-vocabulary log-softmax, torch.optim.AdamW), CPU threads =
all cores. For the small model both start from the same weights, and the loss
of the second step (after one AdamW update) is printed for each, so the two can
be seen computing the same thing (the first step's loss does not depend on the
weights: there log π_θ − log π_old is the synthetic shift).

Each framework runs in its own subprocess, so peak memory (MLX's allocator peak,
and the process's resident-set high-water mark for both) is its own. Needs the
optional `bench` extra (torch); the MLX side runs without it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import varro  # noqa: F401  (preloads OpenBLAS before mlx)
from varro.model.shapes import QWEN3_0_6B, dimensions

MODELS = {
    # the project's default small model (varro.model.build.Recipe)
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=384,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=2048,
    ),
    "qwen3-0.6b": dimensions(QWEN3_0_6B),  # its published shape
}
COMMON = dict(
    model_type="qwen3", rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=4096, rope_theta=1000000.0
)
EPS_LOW, EPS_HIGH, LR = 3e-4, 4e-4, 1e-5


def synthetic(args, vocab, seed=0):
    """Token ids, response mask, advantages and π_old log-probs shared by both frameworks."""
    rng = np.random.default_rng(seed)
    length = args.prompt + args.response
    tokens = rng.integers(0, vocab, (args.batch, length)).astype(np.int64)
    adv = rng.normal(0, 1, args.batch).astype(np.float32)
    old_shift = rng.normal(0, 1e-3, (args.batch, length - 1)).astype(np.float32)
    return tokens, adv, old_shift


def init_weights(shape, seed=0):
    """HF-named float32 weights (normal, std 0.02; norms at 1) for the given shape."""
    rng = np.random.default_rng(seed)
    h, kv, hd, inter = shape["hidden_size"], shape["num_key_value_heads"], shape["head_dim"], shape["intermediate_size"]
    nh = shape["num_attention_heads"]
    w = {"model.embed_tokens.weight": rng.normal(0, 0.02, (shape["vocab_size"], h)), "model.norm.weight": np.ones(h)}
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update(
            {
                p + "self_attn.q_proj.weight": rng.normal(0, 0.02, (nh * hd, h)),
                p + "self_attn.k_proj.weight": rng.normal(0, 0.02, (kv * hd, h)),
                p + "self_attn.v_proj.weight": rng.normal(0, 0.02, (kv * hd, h)),
                p + "self_attn.o_proj.weight": rng.normal(0, 0.02, (h, nh * hd)),
                p + "self_attn.q_norm.weight": np.ones(hd),
                p + "self_attn.k_norm.weight": np.ones(hd),
                p + "mlp.gate_proj.weight": rng.normal(0, 0.02, (inter, h)),
                p + "mlp.up_proj.weight": rng.normal(0, 0.02, (inter, h)),
                p + "mlp.down_proj.weight": rng.normal(0, 0.02, (h, inter)),
                p + "input_layernorm.weight": np.ones(h),
                p + "post_attention_layernorm.weight": np.ones(h),
            }
        )
    return {k: v.astype(np.float32) for k, v in w.items()}


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ MLX (Varro's trainer)


def mlx_step(args, shape, weights_file="", compiled=False, kernels="auto"):
    """The trainer's minibatch step on synthetic data: (model, its TrainConfig, the epoch's data, loss_and_grad)."""
    import mlx.core as mx
    from mlx_lm.models import qwen3

    from varro.config import TrainConfig
    from varro.gspo.batch import TrainingSequence
    from varro.gspo.trainer import EpochData, make_loss_and_grad, prepare_policy, sequence_logprobs

    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs(**COMMON, **shape))
    if weights_file:
        model.load_weights(list(mx.load(weights_file).items()))
    cfg = TrainConfig(
        minibatches=1,
        microbatch_size=args.batch,
        learning_rate=LR,
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        compile=compiled,
        logprob_chunk=args.chunk,
    )
    model = prepare_policy(model, cfg, seed=0)
    mx.eval(model.parameters())
    tokens, adv, old_shift = synthetic(args, shape["vocab_size"])
    seqs = [
        TrainingSequence(
            headline_id="h",
            index=i,
            prompt_ids=tuple(int(t) for t in row[: args.prompt]),
            response_ids=tuple(int(t) for t in row[args.prompt :]),
            behaviour_logprobs=(0.0,) * args.response,
            reward=0.0,
            raw_score=None,
            rank=1,
        )
        for i, row in enumerate(tokens)
    ]
    old = sequence_logprobs(
        model, seqs, loss_on="response", chunk=cfg.logprob_chunk, batch_size=args.batch, kernels=kernels
    )
    old = [o + old_shift[i, args.prompt - 1 :] for i, o in enumerate(old)]
    data = EpochData(seqs=seqs, old=old, ref=None, advantages=adv, weights=np.ones(args.batch, np.float32))
    return model, cfg, data, make_loss_and_grad(model, cfg, kernels=kernels)


def run_mlx(args, shape, weights_file, compiled, kernels="auto", fused_adamw=True):
    import mlx.core as mx
    import mlx.optimizers as optim

    from varro.gspo.optimizer import FusedAdamW
    from varro.gspo.trainer import minibatch_gradient

    model, cfg, data, loss_and_grad = mlx_step(args, shape, weights_file, compiled, kernels)
    opt = (
        FusedAdamW(learning_rate=LR, weight_decay=0.0)
        if fused_adamw
        else optim.AdamW(learning_rate=LR, weight_decay=0.0, bias_correction=True)
    )
    part = np.arange(args.batch)
    times, losses, phases = [], [], []
    mx.reset_peak_memory()
    for _ in range(args.steps + 1):
        t = time.perf_counter()
        loss, grads, _ = minibatch_gradient(loss_and_grad, data, part, cfg)  # evaluates loss and gradients
        t_grad = time.perf_counter()
        if fused_adamw:  # the trainer's path: clipping inside the fused update
            opt.clip_and_update(model, grads, 1.0)
            t_clip = t_grad
        else:
            grads, _ = optim.clip_grad_norm(grads, 1.0)
            mx.eval(grads)
            t_clip = time.perf_counter()
            opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        del grads  # as the trainer does: not alive through the next step's backward
        times.append(time.perf_counter() - t)
        phases.append(dict(grad_s=t_grad - t, clip_s=t_clip - t_grad, adamw_s=time.perf_counter() - t_clip))
        losses.append(loss)
    return times, losses, mx.get_peak_memory() / 2**20, phases


# ------------------------------------------------------------------ plain PyTorch


def run_torch(args, shape, weights_file):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)

    class RMSNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + COMMON["rms_norm_eps"]) * self.weight

    h, nh, kv, hd = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(h, nh * hd, bias=False), nn.Linear(h, kv * hd, bias=False)
            self.v_proj, self.o_proj = nn.Linear(h, kv * hd, bias=False), nn.Linear(nh * hd, h, bias=False)
            self.q_norm, self.k_norm = RMSNorm(hd), RMSNorm(hd)

        def forward(self, x, cos, sin):
            b, length, _ = x.shape
            q = self.q_norm(self.q_proj(x).view(b, length, nh, hd)).transpose(1, 2)
            k = self.k_norm(self.k_proj(x).view(b, length, kv, hd)).transpose(1, 2)
            v = self.v_proj(x).view(b, length, kv, hd).transpose(1, 2)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.o_proj(out.transpose(1, 2).reshape(b, length, nh * hd))

    def rope(x, cos, sin):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = Attention()
            self.mlp = nn.Module()
            self.mlp.gate_proj = nn.Linear(h, shape["intermediate_size"], bias=False)
            self.mlp.up_proj = nn.Linear(h, shape["intermediate_size"], bias=False)
            self.mlp.down_proj = nn.Linear(shape["intermediate_size"], h, bias=False)
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(h), RMSNorm(h)

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            y = self.post_attention_layernorm(x)
            return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(y)) * self.mlp.up_proj(y))

    class Qwen3(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.embed_tokens = nn.Embedding(shape["vocab_size"], h)
            self.model.layers = nn.ModuleList([Layer() for _ in range(shape["num_hidden_layers"])])
            self.model.norm = RMSNorm(h)
            for p in self.parameters():
                if p.ndim == 2:
                    nn.init.normal_(p, std=0.02)

        def forward(self, tokens):
            length = tokens.shape[1]
            inv = COMMON["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
            freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv)
            cos, sin = torch.cat([freqs.cos()] * 2, -1), torch.cat([freqs.sin()] * 2, -1)
            x = self.model.embed_tokens(tokens)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return self.model.norm(x) @ self.model.embed_tokens.weight.T

    model = Qwen3()
    if weights_file:
        loaded = np.load(weights_file)
        model.load_state_dict({k: torch.from_numpy(loaded[k]) for k in loaded.files})
    tokens_np, adv_np, old_shift = synthetic(args, shape["vocab_size"])
    tokens, adv = torch.from_numpy(tokens_np), torch.from_numpy(adv_np)
    start = args.prompt - 1

    def response_logprobs():
        logits = model(tokens)[:, start:-1].float()
        return torch.log_softmax(logits, -1).gather(-1, tokens[:, start + 1 :, None])[..., 0]

    with torch.no_grad():
        old = response_logprobs() + torch.from_numpy(old_shift[:, start:])
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    times, losses = [], []
    for _ in range(args.steps + 1):
        t = time.perf_counter()
        logp = response_logprobs()
        ratio = torch.exp((logp - old).mean(-1))
        loss = -torch.minimum(ratio * adv, ratio.clamp(1 - EPS_LOW, 1 + EPS_HIGH) * adv).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return times, losses, None


# ------------------------------------------------------------------ driver


def worker(args):
    shape = MODELS[args.model]
    if args.framework == "torch":
        times, losses, peak = run_torch(args, shape, args.weights and args.weights + ".npz")
        phases = []
    else:
        times, losses, peak, phases = run_mlx(
            args,
            shape,
            args.weights and args.weights + ".safetensors",
            compiled=args.framework == "mlx-compiled",
            kernels="mlx" if args.framework == "mlx-mlx-kernels" else "auto",
            fused_adamw=args.framework != "mlx-stock-adamw",
        )
    timed = times[1:]  # the first step warms up (and compiles)
    tokens = args.batch * (args.prompt + args.response)
    print(
        json.dumps(
            dict(
                framework=args.framework,
                model=args.model,
                step_s=float(np.median(timed)),
                tokens_per_s=tokens / float(np.median(timed)),
                loss_after_update=losses[1],
                peak_mb=peak,
                rss_mb=rss_mb(),
                phases={k: float(np.median([p[k] for p in phases[1:]])) for k in phases[0]} if phases else {},
            )
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,qwen3-0.6b")
    parser.add_argument(
        "--frameworks",
        default="mlx,mlx-mlx-kernels,mlx-compiled,torch",
        help="mlx = the default config (model.kernels auto: NumPy softmax/SwiGLU on the CPU); "
        "mlx-mlx-kernels = MLX's own kernels; mlx-compiled = mx.compile (MLX's kernels); "
        "mlx-stock-adamw = the default with MLX's unfused optim.AdamW",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="run the frameworks this many times, alternating, for median and range"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=48)
    parser.add_argument("--response", type=int, default=80)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--weights", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from varro.blas import preload

    print(
        f"BLAS for MLX: {preload().library}; cores: {os.cpu_count()}; "
        f"batch {args.batch} x ({args.prompt} prompt + {args.response} response) tokens, "
        f"median of {args.steps} steps after 1 warm-up"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            weights = ""
            if model == "tiny":  # same starting weights on both sides
                import mlx.core as mx

                w = init_weights(MODELS[model])
                weights = str(Path(tmp) / "tiny")
                np.savez(weights + ".npz", **w)
                mx.save_safetensors(weights + ".safetensors", {k: mx.array(v) for k, v in w.items()})
            for repeat, fw in [(r, f) for r in range(args.repeats) for f in args.frameworks.split(",")]:
                cmd = [
                    sys.executable,
                    "-m",
                    "bench.bench_train",
                    "--worker",
                    "--framework",
                    fw,
                    "--model",
                    model,
                    "--weights",
                    weights,
                    *(f"--{k}={getattr(args, k)}" for k in ("steps", "batch", "prompt", "response", "chunk")),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
                if out.returncode != 0:
                    print(f"{fw} on {model} failed:\n{out.stderr[-2000:]}")
                    continue
                rows.append(dict(json.loads(out.stdout.strip().splitlines()[-1]), repeat=repeat))
                r = rows[-1]
                phases = " ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
                print(
                    f"{r['model']:>11} {r['framework']:>15}: {r['step_s']:7.3f} s/step "
                    f"{r['tokens_per_s']:9.1f} tok/s  loss1 {r['loss_after_update']:+.7f}  "
                    f"MLX peak {r['peak_mb'] or 0:8.1f} MB  RSS max {r['rss_mb']:8.1f} MB  {phases}  "
                    f"(repeat {repeat}, load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    baseline = "torch" if "torch" in args.frameworks.split(",") else args.frameworks.split(",")[-1]
    for model in args.models.split(","):
        for fw in args.frameworks.split(","):
            ratios = [
                base["step_s"] / row["step_s"]
                for repeat in range(args.repeats)
                for row in rows
                if (row["model"], row["framework"], row["repeat"]) == (model, fw, repeat)
                for base in rows
                if (base["model"], base["framework"], base["repeat"]) == (model, baseline, repeat)
            ]
            if fw != baseline and ratios:
                print(
                    f"{model}: {fw} against {baseline}, speed ratio per repeat {[round(r, 2) for r in ratios]}: "
                    f"median {np.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x"
                )


if __name__ == "__main__":
    main()
