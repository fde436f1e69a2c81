"""The BLAS preload holds whatever order a caller imports modules in, and says so when it cannot."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the reference-BLAS problem is Linux-only")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)


def test_importing_a_job_module_first_still_preloads_openblas_before_mlx():
    done = _run("import jobs.train, workers.tasks; from varro import blas; c = blas.preload(); print(c.library)")
    assert done.stdout.strip() not in ("", "None"), done.stderr
    assert "WARNING" not in done.stderr


def test_mlx_imported_before_varro_is_reported_loudly_on_stderr():
    done = _run("import mlx.core; import varro; from varro import blas; print(blas.preload().optimised)")
    assert done.stdout.strip() == "False"
    assert "varro: WARNING: mlx was imported before varro" in done.stderr


def test_asking_for_the_reference_blas_is_quiet():
    done = subprocess.run(
        [sys.executable, "-c", "import varro; from varro import blas; print(blas.preload().optimised)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "VARRO_BLAS": "reference"},
    )
    assert done.stdout.strip() == "False" and "WARNING" not in done.stderr


def _top_level_imports(path):
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def test_every_benchmark_and_script_imports_varro_before_mlx():
    """A benchmark that imports mlx first measures the 30x slower reference BLAS (this happened: an
    import sorter moved `import varro` below `import mlx.core` and bench_generation ran on it)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    late = []
    for path in sorted([*root.glob("bench/*.py"), *root.glob("scripts/*.py")]):
        names = list(_top_level_imports(path))
        first_mlx = next((i for i, n in enumerate(names) if n.split(".")[0] in ("mlx", "mlx_lm")), None)
        first_varro = next((i for i, n in enumerate(names) if n.split(".")[0] in ("varro", "jobs", "workers")), None)
        if first_mlx is not None and (first_varro is None or first_varro > first_mlx):
            late.append(path.name)
    assert not late, f"import varro before mlx in {late}"


def test_numpy_matmuls_go_single_threaded_inside_the_block_and_back_afterwards():
    """The local judge's many small attention products run on one of NumPy's BLAS threads (a
    stalled second thread cost seconds a round on a shared machine); the count is restored after."""
    from varro import blas

    found = blas._numpy_blas_threads()
    if found is None:
        pytest.skip("this NumPy does not bundle scipy-openblas")
    get, put = found
    put(2)
    try:
        with blas.numpy_blas_single_thread() as told:
            assert told and get() == 1
        assert get() == 2
    finally:
        put(os.cpu_count() or 1)
