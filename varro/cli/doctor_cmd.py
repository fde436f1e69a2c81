"""`varro doctor`: what this installation runs on, in one screen."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import click
import redis

import varro
from events.connection import describe, redact
from events.server import EmbeddedServer, valkey_binary
from varro import blas
from varro.cli.common import config_options
from varro.config import VarroConfig


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _redis_report(url: str, kind: str, data_dir: Path) -> tuple[bool, list[tuple[str, str]]]:
    """Probe Redis without starting anything: doctor observes, it does not change state."""
    rows = [("redis url", redact(url)), ("redis kind", kind)]
    if kind == "embedded" and not EmbeddedServer(data_dir).status().running:
        rows.append(("redis reachable", "no (embedded server not running; it starts on first use)"))
        return True, rows
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        info = client.info("server")
        rows.append(("redis reachable", "yes"))
        rows.append(
            (
                "redis server",
                f"{'valkey' if 'valkey_version' in info else 'redis'} "
                f"{info.get('valkey_version') or info.get('redis_version')}",
            )
        )
        return True, rows
    except (redis.RedisError, OSError) as exc:
        rows.append(("redis reachable", f"NO: {redact(str(exc), url)}"))
        return False, rows


def _valkey_binary_version() -> str:
    try:
        out = subprocess.run([str(valkey_binary()), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().split(" sha=")[0]
    except Exception as exc:
        return f"unavailable ({exc})"


def _model_kernels(setting: str, device: str) -> str:
    """What `model.kernels` resolves to here (see varro.model.forward)."""
    if setting != "auto":
        return setting
    if device.startswith("Device(cpu"):
        from varro.model.forward import SUPPORTED

        return f"auto: numpy softmax/SwiGLU for {', '.join(sorted(SUPPORTED))} models on the CPU, mlx otherwise"
    return "auto: mlx on this device"


def _mlx_device() -> str:
    try:
        import mlx.core as mx
    except Exception as exc:
        return f"mlx not importable ({exc})"
    return str(mx.default_device())


def _artifacts_report(cfg: VarroConfig) -> tuple[bool, str]:
    """Where artifacts and checkpoints live, and, for a bucket, whether it answers."""
    if not cfg.artifacts.url:
        return True, f"data directory {cfg.data_path}"
    from varro.bucket import BucketStore
    from varro.stores import open_store

    store = open_store(cfg)
    assert isinstance(store, BucketStore)
    problem = store.reachable()
    return problem is None, store.describe() + (f" (unreachable: {problem})" if problem else " (reachable)")


@click.command()
@config_options
def doctor(cfg: VarroConfig) -> None:
    """Report versions, the Redis in use, the data directory, the MLX device and the BLAS in use.

    Exits 1 when something Varro needs is broken (an unreachable Redis or artifact bucket)."""
    choice = blas.preload()
    device = _mlx_device()  # after preload, so the report shows what MLX really resolves
    url, kind = describe(cfg.redis_url, cfg.data_path)
    redis_ok, redis_rows = _redis_report(url, kind, cfg.data_path)
    artifacts_ok, artifacts = _artifacts_report(cfg)
    rows = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("varro", varro.__version__),
        ("mlx", _version("mlx")),
        ("mlx-lm", _version("mlx-lm")),
        ("rq", _version("rq")),
        ("redis-py", _version("redis")),
        ("msgspec", _version("msgspec")),
        ("structlog", _version("structlog")),
        ("valkey binary", _valkey_binary_version()),
        *redis_rows,
        ("data dir", f"{cfg.data_path} ({'exists' if cfg.data_path.is_dir() else 'not created yet'})"),
        ("artifacts", artifacts),
        ("namespace", cfg.ns),
        ("mlx device", device),
        ("blas preload", f"{choice.library or 'none'}: {choice.reason}"),
        ("blas sgemm", blas.resolved_sgemm_library() or "unresolved"),
        ("model kernels", _model_kernels(cfg.model.kernels, device)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if not redis_ok or not artifacts_ok:
        sys.exit(1)
