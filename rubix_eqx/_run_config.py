"""Moved to `rubix_eqx.config`; kept only for `fit/_infer.py` until it imports
`rubix_eqx.config` (then delete this file)."""

from .config import (  # noqa: F401
    build_observation as build_observation,
    build_pipeline_from as build_pipeline_from,
    build_ssp as build_ssp,
    check_config as check_config,
)
