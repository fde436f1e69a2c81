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
