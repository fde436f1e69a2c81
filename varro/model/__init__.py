"""Model loading and the project's own small default model (see `build` and `cache`)."""
