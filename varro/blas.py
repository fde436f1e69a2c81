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

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

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
