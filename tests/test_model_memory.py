"""A finished stage hands MLX's cache of freed buffers back to the system."""

import contextlib
import subprocess
import sys

import mlx.core as mx

from varro.model.memory import return_freed_memory


def test_freed_buffers_are_handed_back():
    big = mx.random.normal((4 * 2**20,)) + 1  # two 16 MiB buffers
    mx.eval(big)
    del big
    assert mx.get_cache_memory() >= 16 * 2**20  # MLX keeps what was freed for reuse
    return_freed_memory()
    assert mx.get_cache_memory() == 0


def test_a_process_without_mlx_does_not_import_it():
    code = "import sys; from varro.model.memory import return_freed_memory as r; r(); print('mlx.core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_job_hands_the_cache_back_even_when_it_fails(tmp_path, redis_client):
    import pytest

    from varro.artifacts import ArtifactStore
    from varro.config import load_config
    from workers import tasks
    from workers.runtime import Runtime, set_runtime

    cfg = load_config(overrides={"ns": "mem", "data_dir": str(tmp_path)}, environ={})
    set_runtime(Runtime(cfg=cfg, redis=redis_client, artifacts=ArtifactStore(tmp_path), models=None))
    try:
        for fails in (False, True):
            expected = pytest.raises(RuntimeError) if fails else contextlib.nullcontext()
            with expected, tasks._job_context("mem", "2025-08-05", "c", "train"):
                held = mx.random.normal((4 * 2**20,)) + 1
                mx.eval(held)
                del held
                assert mx.get_cache_memory() >= 16 * 2**20
                if fails:
                    raise RuntimeError("the job failed")
            assert mx.get_cache_memory() == 0
    finally:
        set_runtime(None)
