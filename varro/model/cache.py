"""Finding, building and holding the one model a process works with.

A checkpoint is named by the sha256 of its files
(`varro.checkpoints.checkpoint_sha256`, re-exported here), so an event that
records a `CheckpointRef` pins exactly which weights, config and tokenizer
produced its output. The model-holding worker keeps a `ModelCache`
across jobs: loading is paid once per checkpoint, not once per job.

Every load from disk hashes every file of the checkpoint first and refuses
bytes that are not the recorded ones (`varro.integrity.IntegrityError`, naming
the file); no hash is remembered by path or mtime, since a flipped bit keeps
both. A model already in memory is handed out again without reading the disk:
it was verified when it was loaded. Files read later from its directory
(optimizer and trainer state) are checked against `LoadedModel.manifest`.

Trained checkpoints are found through the artifact store (`varro.stores`): the
data directory's ``checkpoints/``, or a bucket's, fetched into the worker's
bounded cache and kept from eviction while the model is loaded.

The default model "varro-tiny" is built on first use into a cache shared by
every data directory (tests and demos reuse one build), under
``$VARRO_MODEL_CACHE`` or ``~/.cache/varro/models``, in a directory named by its
recipe hash. The build writes into a temporary directory and renames it into
place under a file lock, so concurrent processes never see half a model.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.errors import PermanentError, VarroError
from events.schema import CheckpointRef
from varro.artifacts import fsync_dir
from varro.checkpoints import CheckpointError, checkpoint_sha256, verify_all_but_weights, verify_checkpoint
from varro.model import build as tiny
from varro.model.memory import return_freed_memory

__all__ = ["LoadedModel", "ModelCache", "ModelError", "checkpoint_sha256", "ensure_default_model"]

if TYPE_CHECKING:
    from varro.config import VarroConfig
    from varro.stores import Store

REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


class ModelError(VarroError, RuntimeError):
    """A checkpoint is missing, incomplete, or its files do not match its recorded hash."""


class BaseModelMissing(ModelError, PermanentError):
    """model.base names a local directory that is not there or holds no model: a retry cannot help."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    ref: CheckpointRef
    path: Path
    manifest: dict[str, str]  # {file: sha256} as verified against `ref` when loaded


def trainable_copy(model: Any) -> Any:
    """A new module holding the same (immutable) arrays: training replaces them only in the copy,
    so the cached parent a model worker keeps between jobs is never mutated."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    copy = type(model)(model.args)
    copy.load_weights(tree_flatten(model.parameters()))
    mx.eval(copy.parameters())
    return copy


def load_local(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a local mlx_lm directory that is not a recorded checkpoint (a judge model)."""
    from mlx_lm import load

    loaded = load(str(path))  # (model, tokenizer), plus the config only when asked for
    return loaded[0], loaded[1]


def model_cache_root() -> Path:
    return Path(os.environ.get("VARRO_MODEL_CACHE") or "~/.cache/varro/models").expanduser()


def default_model_path(root: Path | None = None) -> Path:
    return (root or model_cache_root()) / f"{tiny.MODEL_NAME}-{tiny.recipe_hash()[:16]}"


def ensure_default_model(
    *, force: bool = False, root: Path | None = None, log: Callable[[str], None] = lambda _: None
) -> Path:
    """The built default model's directory; builds it first if it is not cached yet."""
    target = default_model_path(root)
    if _complete(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target) and not force:
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            tiny.build(staging / "model", log=log)
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging / "model", target)
            fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# A Hugging Face repo id is "owner/name" (or a bare name); anything else is a path on this machine.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(base: str) -> bool:
    """True when `base` names a directory rather than a hub repo: it starts like a path
    (/, ~, .), has more than one '/', or exists on disk."""
    return base.startswith(("/", "~", ".")) or not _HUB_ID.match(base) or Path(base).expanduser().exists()


def check_base(base: str) -> Path | None:
    """The local directory `base` names, checked to hold a model (weights not read); None for the
    default model or a hub repo id. A local-looking path that is not a model is a ModelError naming
    it, never a hub lookup."""
    if base == tiny.MODEL_NAME or not looks_local(base):
        return None
    path = Path(base).expanduser()
    if not path.is_dir():
        raise BaseModelMissing(f"model.base {base!r}: no such directory {path}")
    if not _complete(path):
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if not any(path.glob("*.safetensors")):
            missing.append("*.safetensors")
        raise BaseModelMissing(f"model.base {base!r}: {path} is not a model directory (missing {', '.join(missing)})")
    return path.resolve()


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in REQUIRED_FILES) and any(path.glob("*.safetensors"))


class ModelCache:
    """Holds one loaded model and hands it out while the requested checkpoint matches."""

    def __init__(self, cfg: VarroConfig, store: Store | None = None):
        from varro.stores import open_store

        self.cfg = cfg
        self.store = store if store is not None else open_store(cfg)
        self._loaded: LoadedModel | None = None
        self._pinned: str | None = None  # the store checkpoint the loaded model was read from

    def base_path(self) -> Path:
        """Where the configured base model is on this machine (building varro-tiny if needed)."""
        base = self.cfg.model.base
        if base == tiny.MODEL_NAME:
            return ensure_default_model()
        local = check_base(base)
        if local is not None:
            return local
        from mlx_lm.utils import _download

        try:
            return Path(_download(base))
        except Exception as exc:  # huggingface_hub's many errors (offline, unknown repo, gated)
            raise ModelError(f"model.base {base!r}: cannot get it from the Hugging Face hub: {exc}") from None

    def base_ref(self) -> CheckpointRef:
        """The configured base model as a checkpoint reference, hashed from disk now.

        This names the base; it verifies nothing. Jobs use the base a namespace
        already recorded where there is one (`jobs.context.base_checkpoint`).
        """
        path = self.base_path()
        try:
            return CheckpointRef(sha256=checkpoint_sha256(path), base_model=self.cfg.model.base, path=str(path))
        except CheckpointError as exc:
            raise ModelError(str(exc)) from None

    def resolve(self, ref: CheckpointRef) -> Path:
        """Where a checkpoint's files are: its recorded path on this machine, else the artifact store's copy."""
        return self._locate(ref)[0]

    def _locate(self, ref: CheckpointRef) -> tuple[Path, bool]:
        """(directory, whether the store pinned it for us: release it with `store.release_checkpoint`)."""
        local = Path(ref.path) if ref.path and "://" not in ref.path else None
        if local is not None and _complete(local):
            return local, False
        stored = self.store.checkpoint_dir(ref.sha256)
        if stored is not None:
            if _complete(stored):
                return stored, True
            self.store.release_checkpoint(ref.sha256)
        where = [str(local)] if local is not None else []
        where.append(str(stored) if stored is not None else self.store.describe())
        raise ModelError(f"checkpoint {ref.sha256[:12]} ({ref.base_model}) not found at " + " or in ".join(where))

    def load(self, ref: CheckpointRef) -> LoadedModel:
        """The model of checkpoint `ref`: the one in memory, else loaded from disk after hashing every file."""
        if self._loaded is not None and self._loaded.ref.sha256 == ref.sha256:
            return self._loaded  # verified when it was loaded; the disk is not read again
        path, pinned = self._locate(ref)
        try:
            manifest = verify_checkpoint(path, ref.sha256)
            from mlx_lm import load

            self.release()
            loaded = load(str(path))  # (model, tokenizer), plus the config only when asked for
            model, tokenizer = loaded[0], loaded[1]
        except BaseException as exc:
            if pinned:
                self.store.release_checkpoint(ref.sha256)
            if isinstance(exc, CheckpointError):
                raise ModelError(str(exc)) from None
            raise
        self._loaded = LoadedModel(model=model, tokenizer=tokenizer, ref=ref, path=path, manifest=manifest)
        self._pinned = ref.sha256 if pinned else None
        return self._loaded

    def tokenizer(self, ref: CheckpointRef) -> Any:
        """The tokenizer of checkpoint `ref`, its files checked against the recorded hash, weights not read.

        Planning a day needs only the tokenizer (its chat template is part of the
        prompt hash), so a re-run of a recorded day does not load the weights.
        """
        if self._loaded is not None and self._loaded.ref.sha256 == ref.sha256:
            return self._loaded.tokenizer
        path, pinned = self._locate(ref)
        try:
            verify_all_but_weights(path, ref.sha256)
            from mlx_lm.utils import load_tokenizer

            return load_tokenizer(path)
        except CheckpointError as exc:
            raise ModelError(str(exc)) from None
        finally:
            if pinned:
                self.store.release_checkpoint(ref.sha256)

    def release(self) -> None:
        self._loaded = None
        if self._pinned is not None:
            self.store.release_checkpoint(self._pinned)
            self._pinned = None
        return_freed_memory()
