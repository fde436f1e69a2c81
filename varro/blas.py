"""Make MLX's CPU backend use an optimised BLAS on Linux.

The Linux `mlx[cpu]` wheel links the netlib *reference* BLAS, about 30x slower
than OpenBLAS on matmul. MLX resolves `cblas_*` through the dynamic linker's
global scope first, so loading OpenBLAS with RTLD_GLOBAL *before* `mlx` is
imported routes every MLX matmul to it. This module must therefore be imported
before anything imports `mlx`; `varro/__init__.py` does that.

Set `VARRO_BLAS=reference` to keep the bundled BLAS (benchmarks), or
`VARRO_BLAS=/path/to/libblas.so` to choose a library explicitly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_CANDIDATES = (
    "libopenblas.so.0",
    "libopenblasp-r0.so",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libblis.so.4",
)


@dataclass(frozen=True)
class BlasChoice:
    """Which BLAS MLX's CPU matmuls go to, and why."""

    library: str | None
    reason: str

    @property
    def optimised(self) -> bool:
        return self.library is not None


_choice: BlasChoice | None = None


def _load(name: str) -> bool:
    try:
        lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        return hasattr(lib, "cblas_sgemm")
    except (OSError, AttributeError):
        return False


def preload() -> BlasChoice:
    """Load an optimised BLAS into the global symbol scope once per process."""
    global _choice
    if _choice is not None:
        return _choice
    wanted = os.environ.get("VARRO_BLAS", "auto")
    if sys.platform != "linux":
        _choice = BlasChoice(None, "not Linux: MLX uses Accelerate/Metal")
    elif wanted == "reference":
        _choice = BlasChoice(None, "VARRO_BLAS=reference: bundled reference BLAS kept")
    elif "mlx.core" in sys.modules:
        _choice = BlasChoice(
            None,
            "mlx was imported before varro, too late to preload: MLX runs on the slow reference BLAS "
            "(import varro before mlx)",
        )
    elif wanted != "auto":
        if not _load(wanted):
            raise RuntimeError(f"VARRO_BLAS={wanted!r} could not be loaded or has no cblas_sgemm")
        _choice = BlasChoice(wanted, "VARRO_BLAS")
    else:
        found = ctypes.util.find_library("openblas")
        for name in ((found,) if found else ()) + _CANDIDATES:
            if _load(name):
                _choice = BlasChoice(name, "optimised BLAS found and preloaded")
                break
        else:
            _choice = BlasChoice(
                None,
                "no optimised BLAS installed (apt-get install libopenblas0-pthread): "
                "MLX runs on the slow reference BLAS",
            )
    if not _choice.optimised and sys.platform == "linux" and wanted != "reference":
        # impossible to miss: every process that would run 30x slow says so on stderr, once
        print(f"varro: WARNING: {_choice.reason}", file=sys.stderr)
    return _choice


def resolved_sgemm_library() -> str | None:
    """Path of the shared object that `cblas_sgemm` resolves to in the global scope."""
    if sys.platform != "linux":
        return None

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    libc = ctypes.CDLL(None)
    try:
        addr = ctypes.cast(libc.cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        return None
    info = DlInfo()
    libdl = ctypes.CDLL("libc.so.6")
    if libdl.dladdr(ctypes.c_void_p(addr), ctypes.byref(info)) == 0:
        return None
    fname: bytes = info.dli_fname  # a c_char_p field: ctypes hands it over as bytes
    return fname.decode()


# ------------------------------------------------------- NumPy's own BLAS
#
# NumPy's wheels carry their own OpenBLAS (scipy-openblas), separate from the one
# MLX is routed to above, with its own thread pool. Many small products in a row
# (the local judge's attention tiles) are no faster on two of its threads than on
# one, and on a shared machine, where a waiting pool thread is not scheduled, each
# product can stall for a time slice: measured 3-20 s instead of 0.7 s for the
# same attention (BENCHMARKS.md, judge).

_NUMPY_BLAS: tuple[Any, Any] | bool | None = False  # False: not looked up yet


def _numpy_blas_threads() -> tuple[Any, Any] | None:
    """(get, set) of NumPy's bundled OpenBLAS thread count, or None where NumPy has another BLAS."""
    global _NUMPY_BLAS
    if _NUMPY_BLAS is False:
        _NUMPY_BLAS = None
        import glob

        import numpy as np

        libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas*.so*"))):
            try:
                lib = ctypes.CDLL(path)
                get, put = lib.scipy_openblas_get_num_threads64_, lib.scipy_openblas_set_num_threads64_
            except (OSError, AttributeError):
                continue
            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
            _NUMPY_BLAS = (get, put)
            break
    return _NUMPY_BLAS if isinstance(_NUMPY_BLAS, tuple) else None


@contextlib.contextmanager
def numpy_blas_single_thread() -> Iterator[bool]:
    """NumPy's matmuls on one BLAS thread inside the block; yields whether NumPy's BLAS could be told."""
    found = _numpy_blas_threads()
    if found is None:
        yield False
        return
    get, put = found
    before = get()
    put(1)
    try:
        yield True
    finally:
        put(before)
