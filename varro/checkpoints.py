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
stored once and a recorded hash names exactly one set of bytes. Beside them a
hidden `.varro-manifest.json` (outside the hash) lists each file's sha256, so a
checkpoint that no longer matches its name can say which file changed.

Reading a checkpoint to train or generate verifies it against the recorded
hash every time it is read from disk (`verify_checkpoint`, then each file read
later against the verified manifest: `load_trainer_state`, `save_checkpoint`'s
copies from the parent); a mismatch is a `varro.integrity.IntegrityError`
naming the file, which workers do not retry. Writing goes to
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from events.errors import PermanentError
from events.ids import validate_date, validate_ns
from events.schema import CheckpointRef, EpochTrained
from varro.artifacts import DiskWriteError, fsync_dir, write_cause
from varro.integrity import IntegrityError, file_sha256, verify_file

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
MANIFEST = ".varro-manifest.json"
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
    return manifest_sha256(checkpoint_manifest(path))


def checkpoint_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256 of its bytes} of every file `checkpoint_sha256` covers; hashes them all."""
    root = Path(path)
    return {name: file_sha256(root / name) for name in _checkpoint_files(root)}


def _checkpoint_files(root: Path) -> list[str]:
    """The relative paths `checkpoint_sha256` covers, in the order it hashes them."""
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise CheckpointError(f"checkpoint directory {root} is empty")
    return [file.relative_to(root).as_posix() for file in files]


def manifest_sha256(files: Mapping[str, str]) -> str:
    """The checkpoint hash a manifest stands for (path order as `checkpoint_sha256` walks them)."""
    digest = hashlib.sha256()
    for name in sorted(files, key=PurePosixPath):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


def verify_checkpoint(path: str | os.PathLike[str], expected: str) -> dict[str, str]:
    """Hash every file of the checkpoint at `path` now; its manifest if it is `expected`, else `IntegrityError`.

    The error names the file that changed when the checkpoint's stored manifest
    (itself checked against `expected`) can tell, else the directory.
    """
    root = Path(path)
    actual = checkpoint_manifest(root)
    digest = manifest_sha256(actual)
    if digest == expected:
        return actual
    recorded = _stored_manifest(root, expected)
    if recorded is not None:
        for name in sorted(set(recorded) | set(actual), key=PurePosixPath):
            if recorded.get(name) != actual.get(name):
                if name not in recorded:
                    raise IntegrityError(root / name, None, actual[name])
                raise IntegrityError(root / name, recorded[name], actual.get(name, "missing"))
    raise IntegrityError(root, expected, digest, what="checkpoint")


def verify_all_but_weights(path: str | os.PathLike[str], expected: str) -> dict[str, str]:
    """Check every file except the weights (``*.safetensors``) of the checkpoint at `path`; its manifest.

    For reading the tokenizer and config without the gigabytes of weights:
    the checkpoint's stored manifest, itself checked against `expected`, gives
    each file's recorded digest, and files on disk that it does not list are
    refused (a tokenizer reads whatever it finds). Without a stored manifest
    (a base model) every file is hashed, as `verify_checkpoint` does.
    """
    root = Path(path)
    recorded = _stored_manifest(root, expected)
    if recorded is None:
        return verify_checkpoint(root, expected)
    light = {n for n in (*_checkpoint_files(root), *recorded) if not n.endswith(".safetensors")}
    for name in sorted(light, key=PurePosixPath):
        if name not in recorded:
            raise IntegrityError(root / name, None, file_sha256(root / name))
        verify_file(root / name, recorded[name])
    return recorded


def _stored_manifest(root: Path, expected: str) -> dict[str, str] | None:
    """The hidden manifest saved with the checkpoint, only if it really describes `expected`."""
    try:
        files = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return None
    return files if manifest_sha256(files) == expected else None


def _check_bytes(path: Path, data: bytes, expected: str | None) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise IntegrityError(path, expected, actual)
    return data


def verified_file(root: str | os.PathLike[str], name: str, manifest: Mapping[str, str]) -> Path | None:
    """`root/name` after checking it against the verified `manifest`; None when the checkpoint has no such file."""
    if name not in manifest:
        return None
    return verify_file(Path(root) / name, manifest[name])


def store_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "checkpoints"


def _write(path: Path, writer: Callable[[Path], object], size: int = 0) -> None:
    """Run `writer(path)` and fsync the file; a failure is DiskWriteError naming the file and the cause.

    MLX reports a short write as a bare RuntimeError ("Unable to write N bytes
    to file."), without path or errno, so the cause is read from the file system.
    """
    try:
        writer(path)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, PermanentError):
            raise
        detail = "" if isinstance(exc, OSError) else str(exc)
        raise DiskWriteError(path, write_cause(path, exc, size), detail) from exc


def _load_arrays(path: Path) -> dict[str, mx.array]:
    """A safetensors file's arrays (mx.load's return type covers .npy and metadata too; this is neither)."""
    loaded = mx.load(str(path))
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} holds a single array, not named tensors")
    return dict(loaded)


def _save_safetensors(path: Path, arrays: dict[str, mx.array]) -> None:
    # sorted insertion order: MLX writes tensors in insertion order, and the
    # bytes must not depend on how the dict was built
    _write(
        path,
        lambda p: mx.save_safetensors(str(p), {k: arrays[k] for k in sorted(arrays)}, metadata={"format": "mlx"}),
        sum(a.nbytes for a in arrays.values()),
    )


def _config_bytes(parent: Path, manifest: Mapping[str, str] | None = None) -> bytes:
    try:
        raw = (parent / "config.json").read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"parent checkpoint {parent} has no config.json") from None
    if manifest is not None:
        _check_bytes(parent / "config.json", raw, manifest.get("config.json"))
    config = json.loads(raw.decode("utf-8"))
    for key in ("torch_dtype", "dtype"):
        if key in config:
            config[key] = "float32"
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _copier(source: Path) -> Callable[[Path], object]:
    return lambda target: shutil.copyfile(source, target)


def _copy_tokenizer_files(parent: Path, target: Path, names: Iterable[str] | None = None) -> list[str]:
    """Copy the parent's tokenizer files (those of `names` when given); returns the names copied."""
    copied = []
    for src in sorted(parent.iterdir()) if names is None else [parent / n for n in sorted(names) if "/" not in n]:
        name = src.name
        if name.startswith(".") or not src.is_file() or name in _NOT_COPIED:
            continue
        if name.startswith("model") and name.endswith(".safetensors"):
            continue
        _write(target / name, _copier(src))
        copied.append(name)
    return copied


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
    parent_manifest: Mapping[str, str] | None = None,
) -> CheckpointRef:
    """Write `model` (float32) as a new content-addressed checkpoint and return its ref.

    The model is not modified (unlike `mlx_lm.utils.save`, which empties it).
    With `parent_manifest` (the parent's verified manifest), the config and
    tokenizer files taken from the parent are checked against it as they are
    read, and only files it lists are copied.
    """
    parent = Path(parent_dir)
    store = store_dir(data_dir)
    try:
        store.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_temporaries(store)
        tmp = Path(tempfile.mkdtemp(dir=store, prefix=".tmp-"))
    except OSError as exc:
        raise DiskWriteError(store, write_cause(store, exc)) from None
    try:
        leaves = cast("list[tuple[str, mx.array]]", tree_flatten(model.parameters()))  # no destination: a list
        weights = {k: v.astype(mx.float32) for k, v in leaves}
        _save_safetensors(tmp / WEIGHTS, weights)
        config = _config_bytes(parent, parent_manifest)
        _write(tmp / "config.json", lambda p: p.write_bytes(config))
        copied = _copy_tokenizer_files(parent, tmp, parent_manifest)
        if optimizer_state:
            _save_safetensors(tmp / OPTIMIZER, dict(optimizer_state))
        state = json.dumps(asdict(trainer_state), sort_keys=True).encode()
        _write(tmp / TRAINER_STATE, lambda p: p.write_bytes(state))
        files = checkpoint_manifest(tmp)
        for name in copied:
            want = None if parent_manifest is None else parent_manifest[name]
            if want is not None and files[name] != want:  # the parent's file changed after it was verified
                raise IntegrityError(parent / name, want, files[name])
        digest = manifest_sha256(files)
        manifest = json.dumps({"sha256": digest, "files": files}, indent=1, sort_keys=True).encode()
        _write(tmp / MANIFEST, lambda p: p.write_bytes(manifest))
        fsync_dir(tmp)
        final = store / digest
        if final.exists() and _intact(final, digest):
            if not (final / MANIFEST).exists():  # saved before checkpoints carried one
                shutil.copyfile(tmp / MANIFEST, final / MANIFEST)
            shutil.rmtree(tmp)
        else:
            if final.exists():  # the stored copy rotted: the fresh bytes replace it (a forced re-run repairs)
                aside = store / f".corrupt-{digest}-{os.getpid()}"
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another writer (the same job run twice) published these very bytes first
                if not (final.exists() and _intact(final, digest)):
                    raise
                shutil.rmtree(tmp)
            fsync_dir(store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CheckpointRef(sha256=digest, base_model=base_model, path=str(final))


def _intact(path: Path, digest: str) -> bool:
    try:
        return checkpoint_sha256(path) == digest
    except CheckpointError:
        return False


def load_trainer_state(
    path: str | os.PathLike[str], manifest: Mapping[str, str] | None = None
) -> tuple[TrainerState, dict[str, mx.array] | None]:
    """The trainer state and optimizer state saved beside a checkpoint (defaults for a base model).

    Training passes the checkpoint's verified `manifest`: each file is hashed
    again as it is read and must match it (`IntegrityError` otherwise), and a
    file the manifest does not list is not part of the checkpoint. Without a
    manifest (inspection, tests) the files are read as they are.
    """
    root = Path(path)
    state_file, opt_file = root / TRAINER_STATE, root / OPTIMIZER
    if manifest is None:
        raw = state_file.read_bytes() if state_file.exists() else None
        opt = opt_file if opt_file.exists() else None
    else:
        # the small state is checked in the very bytes parsed; the optimizer (gigabytes) streams through the hash
        raw = _verified_bytes(state_file, manifest[TRAINER_STATE]) if TRAINER_STATE in manifest else None
        opt = verified_file(root, OPTIMIZER, manifest)
    state = TrainerState(**json.loads(raw)) if raw is not None else TrainerState()
    optimizer = _load_arrays(opt) if opt is not None else None
    return state, optimizer


def _verified_bytes(path: Path, expected: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(path, expected, "missing") from None
    return _check_bytes(path, data, expected)


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
