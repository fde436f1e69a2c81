"""MLX CPU matmul and model forward speed: the wheel's bundled reference BLAS vs the optimised one.

Each side runs in its own subprocess, because the BLAS is chosen once per
process before `mlx` is imported (VARRO_BLAS=reference keeps the bundled one;
auto preloads OpenBLAS, see varro.blas).

    .venv/bin/python bench/bench_blas.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(repeats: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import time

    import mlx.core as mx
    from mlx_lm.models import qwen3

    import varro  # noqa: F401  (preloads the BLAS before mlx)
    from varro import blas
    from varro.model.shapes import QWEN3_0_6B, dimensions

    choice = blas.preload()
    out: dict = {
        "blas": choice.library or "bundled reference",
        "sgemm_from": blas.resolved_sgemm_library() or "the mlx wheel (not in the global scope)",
    }

    def best(fn) -> float:
        mx.eval(fn())
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            mx.eval(fn())
            times.append(time.perf_counter() - started)
        return min(times)

    for n in (512, 1024):
        a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
        mx.eval(a, b)
        out[f"matmul_{n}_gflops"] = 2 * n**3 / best(lambda a=a, b=b: a @ b) / 1e9

    shapes = {
        "tiny": dict(
            hidden_size=128,
            num_hidden_layers=4,
            intermediate_size=384,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            vocab_size=2048,
            tokens=(8, 256),
        ),
        "qwen3-0.6b": dict(dimensions(QWEN3_0_6B), tokens=(1, 64)),
    }
    for name, shape in shapes.items():
        batch, length = shape.pop("tokens")
        args = qwen3.ModelArgs(
            model_type="qwen3",
            rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            rope_theta=1e6,
            tie_word_embeddings=True,
            **shape,
        )
        model = qwen3.Model(args)
        mx.eval(model.parameters())
        tokens = mx.random.randint(0, shape["vocab_size"], (batch, length))
        out[f"forward_{name}_{batch}x{length}_s"] = best(lambda model=model, tokens=tokens: model(tokens))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.repeats)))
        return
    results = {}
    for side in ("reference", "auto"):
        env = dict(os.environ, VARRO_BLAS=side)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    ref, opt = results["reference"], results["auto"]
    print(f"reference: {ref['blas']} (cblas_sgemm from {ref['sgemm_from']})")
    print(f"optimised: {opt['blas']} (cblas_sgemm from {opt['sgemm_from']})")
    print(f"{'measure':36s} {'reference':>12s} {'optimised':>12s} {'ratio':>8s}")
    for key in ref:
        if key in ("blas", "sgemm_from"):
            continue
        ratio = opt[key] / ref[key] if key.endswith("gflops") else ref[key] / opt[key]
        print(f"{key:36s} {ref[key]:12.3f} {opt[key]:12.3f} {ratio:7.1f}x")


if __name__ == "__main__":
    main()
