"""A full or unwritable disk is a permanent error naming the file and the cause (issue 13, item 11).

Real file systems: a 64 KiB tmpfs for a full disk and a read-only tmpfs, mounted
when the tests run as root (root ignores permission bits); without root, a full
disk cannot be made and is skipped, and the read-only case uses a mode-0500
directory (EACCES).
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from events.errors import PermanentError
from varro.artifacts import ArtifactStore, DiskWriteError, check_writable

pytestmark = pytest.mark.timeout(120)


def _mount(path, options: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return path


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system: the first large write fills it."""
    path = _mount(tmp_path / "full", "size=64k")
    yield path
    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def read_only(tmp_path):
    """(a directory nothing can be written in, the errno expected)."""
    if os.geteuid() == 0:
        path = _mount(tmp_path / "ro", "ro,size=64k")
        yield path, errno.EROFS
        subprocess.run(["umount", str(path)], check=True)
    else:
        path = tmp_path / "ro"
        path.mkdir()
        path.chmod(0o500)
        yield path, errno.EACCES
        path.chmod(0o700)


def test_an_artifact_on_a_full_disk_names_the_file_and_enospc_and_leaves_no_temporary(full_disk):
    store = ArtifactStore(full_disk)
    data = os.urandom(256 * 1024)
    with pytest.raises(DiskWriteError) as caught:
        store.put(data, kind="rollouts")
    err = caught.value
    assert isinstance(err, PermanentError)  # workers fail it at once instead of retrying a full disk
    assert err.errno == errno.ENOSPC
    assert err.path == store.path(caught.value.path.name)
    assert f"cannot write {store.path(err.path.name)}: ENOSPC (No space left on device)" in str(err)
    assert [p.name for p in err.path.parent.iterdir()] == []  # the temporary is gone


def test_an_artifact_in_a_read_only_directory_names_the_cause(read_only):
    path, cause = read_only
    with pytest.raises(DiskWriteError) as caught:
        ArtifactStore(path).put(b"x" * 10, kind="config")
    assert caught.value.errno == cause
    assert str(path / "artifacts") in str(caught.value) and errno.errorcode[cause] in str(caught.value)
    with pytest.raises(DiskWriteError, match=errno.errorcode[cause]):
        check_writable(path / "data")


def test_a_checkpoint_on_a_full_disk_names_the_file_and_enospc_not_a_bare_runtime_error(full_disk, loaded):
    from varro.checkpoints import TrainerState, save_checkpoint

    with pytest.raises(DiskWriteError) as caught:
        save_checkpoint(
            loaded.model,
            parent_dir=loaded.path,
            data_dir=full_disk,
            base_model="varro-tiny",
            trainer_state=TrainerState(step=1, ema_baseline=0.0, seed=1, parent_sha256=loaded.ref.sha256),
        )
    err = caught.value
    assert isinstance(err, PermanentError) and err.errno == errno.ENOSPC
    assert err.path.parent.parent == full_disk / "checkpoints" and err.path.name == "model.safetensors"
    assert "ENOSPC" in str(err) and str(err.path) in str(err)
    assert list((full_disk / "checkpoints").iterdir()) == []  # the temporary checkpoint is removed


def test_a_checkpoint_store_that_cannot_be_created_names_it(read_only, loaded):
    from varro.checkpoints import TrainerState, save_checkpoint

    path, cause = read_only
    with pytest.raises(DiskWriteError) as caught:
        save_checkpoint(
            loaded.model,
            parent_dir=loaded.path,
            data_dir=path,
            base_model="varro-tiny",
            trainer_state=TrainerState(step=1, ema_baseline=0.0, seed=1, parent_sha256=loaded.ref.sha256),
        )
    assert caught.value.errno == cause and caught.value.path == path / "checkpoints"
