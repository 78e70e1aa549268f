"""Where bitsearch keeps files between runs (compiled harnesses, cost-model results, kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BITSEARCH_CACHE`` if set, else ``~/.cache/bitsearch``."""
    env = os.environ.get("BITSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bitsearch"


__all__ = ["cache_dir"]
