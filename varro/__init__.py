"""Varro: event-sourced daily GSPO training of a language model on financial news.

Importing `varro` preloads an optimised BLAS before anything can import `mlx`
(see `varro.blas`); keep this the first thing the package does.
"""

from varro import blas as _blas

_blas.preload()

__version__ = "0.1.0"
