"""Telescope presets: YAML files in `configs/telescopes/` (shipped in the wheel as
`rubix_eqx/telescope/presets/`)."""

from pathlib import Path


def preset_dir() -> Path:
    """The folder holding the preset YAML files."""
    packaged = Path(__file__).parents[1] / "telescope" / "presets"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs" / "telescopes"


def presets() -> list[str]:
    """Names of the available telescope presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))
