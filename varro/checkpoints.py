"""Content-addressed, atomically written model checkpoints and their per-namespace projections.

A checkpoint is a standard mlx_lm directory, so stock `mlx_lm.load(path)` loads it:

    config.json            the parent's, with its dtype entry set to float32
    model.safetensors      every parameter in float32 (the training master
                           weights; LoRA adapters already fused in)
    tokenizer files        copied byte for byte from the parent
    optimizer.safetensors  AdamW state (absent after a LoRA epoch, whose
                           adapters are fused away)
    trainer_state.json     step, EMA reward baseline, seed, parent hash

Weights are saved in float32 on purpose: the next day resumes from exactly the
weights the optimizer produced, where a bf16 copy would round small updates
away (0.6B parameters take 2.4 GB on disk).

The directory's name is `checkpoint_sha256` of its files, so equal content is
stored once and a recorded hash names exactly one set of bytes. Writing goes to
a temporary directory beside the store, every file and the directory are
fsynced, then one rename publishes it: a crash leaves either nothing or a whole
checkpoint. The projections `training/checkpoints/gspo_<ns>/final_model` (rolling)
and `final_model_YYYYMMDD` (dated) are relative symlinks into the store, each
swapped in with one `os.replace`, so a reader always sees a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from events.errors import PermanentError
from events.ids import validate_date, validate_ns
from events.schema import CheckpointRef, EpochTrained
from varro.artifacts import fsync_dir

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
_NOT_COPIED = {
    "config.json",
    "model.safetensors.index.json",
    OPTIMIZER,
    TRAINER_STATE,
    "adapters.safetensors",
    "adapter_config.json",
}


class CheckpointError(PermanentError, RuntimeError):
    """A checkpoint is missing, incomplete, or a projection cannot be replaced safely."""


@dataclass(frozen=True)
class TrainerState:
    """What one day's training hands to the next, beside the weights."""

    step: int = 0
    ema_baseline: float | None = None
    seed: int | None = None
    parent_sha256: str | None = None


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """The content hash of a checkpoint directory.

    sha256 over the sorted lines ``<relative path>\\0<sha256 of file>\\n`` of every
    regular file below `path` (symlinks followed; hidden files skipped), so it
    names the bytes, not the directory's location or timestamps.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise CheckpointError(f"checkpoint directory {root} is empty")
    for file in files:
        h = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest.update(f"{file.relative_to(root).as_posix()}\0{h.hexdigest()}\n".encode())
    return digest.hexdigest()


def store_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "checkpoints"


def _write(path: Path, writer) -> None:
    writer(path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _save_safetensors(path: Path, arrays: dict[str, mx.array]) -> None:
    # sorted insertion order: MLX writes tensors in insertion order, and the
    # bytes must not depend on how the dict was built
    _write(
        path, lambda p: mx.save_safetensors(str(p), {k: arrays[k] for k in sorted(arrays)}, metadata={"format": "mlx"})
    )


def _config_bytes(parent: Path) -> bytes:
    try:
        config = json.loads((parent / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"parent checkpoint {parent} has no config.json") from None
    for key in ("torch_dtype", "dtype"):
        if key in config:
            config[key] = "float32"
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _copy_tokenizer_files(parent: Path, target: Path) -> None:
    for src in sorted(parent.iterdir()):
        name = src.name
        if name.startswith(".") or not src.is_file() or name in _NOT_COPIED:
            continue
        if name.startswith("model") and name.endswith(".safetensors"):
            continue
        _write(target / name, lambda p, s=src: shutil.copyfile(s, p))


# A temporary checkpoint directory this old was left by a process that died hard
# (SIGKILL, power loss); a save in progress touches its files far more often.
_ABANDONED_AFTER_S = 24 * 3600


def _remove_abandoned_temporaries(store: Path) -> None:
    now = time.time()
    for tmp in store.glob(".tmp-*"):
        if tmp.is_dir() and now - tmp.stat().st_mtime > _ABANDONED_AFTER_S:
            shutil.rmtree(tmp, ignore_errors=True)


def save_checkpoint(
    model: nn.Module,
    *,
    parent_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    base_model: str,
    trainer_state: TrainerState,
    optimizer_state: dict[str, mx.array] | None = None,
) -> CheckpointRef:
    """Write `model` (float32) as a new content-addressed checkpoint and return its ref.

    The model is not modified (unlike `mlx_lm.utils.save`, which empties it).
    """
    parent = Path(parent_dir)
    store = store_dir(data_dir)
    store.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temporaries(store)
    tmp = Path(tempfile.mkdtemp(dir=store, prefix=".tmp-"))
    try:
        weights = {k: v.astype(mx.float32) for k, v in tree_flatten(model.parameters())}
        _save_safetensors(tmp / WEIGHTS, weights)
        config = _config_bytes(parent)
        _write(tmp / "config.json", lambda p: p.write_bytes(config))
        _copy_tokenizer_files(parent, tmp)
        if optimizer_state:
            _save_safetensors(tmp / OPTIMIZER, dict(optimizer_state))
        state = json.dumps(asdict(trainer_state), sort_keys=True).encode()
        _write(tmp / TRAINER_STATE, lambda p: p.write_bytes(state))
        fsync_dir(tmp)
        digest = checkpoint_sha256(tmp)
        final = store / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
            fsync_dir(store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CheckpointRef(sha256=digest, base_model=base_model, path=str(final))


def load_trainer_state(path: str | os.PathLike[str]) -> tuple[TrainerState, dict[str, mx.array] | None]:
    """The trainer state and optimizer state saved beside a checkpoint (defaults for a base model)."""
    root = Path(path)
    state_file, opt_file = root / TRAINER_STATE, root / OPTIMIZER
    state = TrainerState(**json.loads(state_file.read_text())) if state_file.exists() else TrainerState()
    optimizer = dict(mx.load(str(opt_file))) if opt_file.exists() else None
    return state, optimizer


def projection_dir(data_dir: str | os.PathLike[str], ns: str) -> Path:
    return Path(data_dir) / "training" / "checkpoints" / f"gspo_{validate_ns(ns)}"


def rolling_path(data_dir: str | os.PathLike[str], ns: str) -> Path:
    return projection_dir(data_dir, ns) / "final_model"


def dated_path(data_dir: str | os.PathLike[str], ns: str, date: str) -> Path:
    return projection_dir(data_dir, ns) / f"final_model_{validate_date(date).replace('-', '')}"


def _swap_link(link: Path, target: Path) -> None:
    if link.exists() and not link.is_symlink():
        raise CheckpointError(f"{link} is a real directory, not a projection link; move it away first")
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def publish_all(trained: Iterable[EpochTrained], data_dir: str | os.PathLike[str], ns: str) -> int:
    """Re-point every dated link, and the rolling one, from the namespace's EpochTrained events.

    Later events for a date (forced re-runs) win; the rolling link follows the
    latest date. Used by `varro rebuild`, so links are a projection of the log too.
    """
    latest: dict[str, EpochTrained] = {}
    for event in trained:
        latest[event.date] = event
    for date in sorted(latest):
        publish(latest[date].checkpoint, data_dir, ns, date, rolling=date == max(latest))
    return len(latest)


def publish(
    ref: CheckpointRef, data_dir: str | os.PathLike[str], ns: str, date: str, *, rolling: bool = True
) -> list[Path]:
    """Point the namespace's dated (and, with `rolling`, the rolling) projection at a stored checkpoint."""
    target = store_dir(data_dir) / ref.sha256
    if not (target / WEIGHTS).is_file():
        raise CheckpointError(f"checkpoint {ref.sha256} is not in {store_dir(data_dir)}")
    links = [dated_path(data_dir, ns, date)] + ([rolling_path(data_dir, ns)] if rolling else [])
    links[0].parent.mkdir(parents=True, exist_ok=True)
    for link in links:
        _swap_link(link, target)
    fsync_dir(links[0].parent)
    return links
