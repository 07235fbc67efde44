"""Where converted grids are cached: `$RUBIX_EQX_CACHE`, else `$XDG_CACHE_HOME/rubix_eqx`,
else `~/.cache/rubix_eqx`."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache directory for converted SSP grids (created on demand)."""
    if env := os.environ.get("RUBIX_EQX_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rubix_eqx"
