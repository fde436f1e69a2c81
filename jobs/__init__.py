"""Pipeline actions, one module per stage.

Importing the package imports `varro` first, so its BLAS preload runs before
anything here can import mlx, whatever order a caller imports modules in."""

import varro  # noqa: F401  (must precede any mlx import)
