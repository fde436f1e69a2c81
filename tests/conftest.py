"""Shared test set-up. `varro` is imported first so OpenBLAS is preloaded before mlx."""

import varro  # noqa: F401  (must precede any mlx import)
