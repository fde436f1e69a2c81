"""A finished stage hands MLX's cache of freed buffers back to the system."""

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
