"""Configuration: every mapping and YAML schema of the package in one place. The telescope
schema is one table, [`rubix_eqx.config.TELESCOPE_KEYS`][], read by the preset loader, the
run config and the docs; run configs (`rubix-eqx run`) are checked in full before
anything is computed. Errors are [`rubix_eqx.config.ConfigError`][] naming the key path."""

from ._error import ConfigError as ConfigError
from ._keys import Key as Key, TELESCOPE_KEYS as TELESCOPE_KEYS, wavelength_grid as wavelength_grid
from ._run import (
    apply_override as apply_override,
    build_galaxy as build_galaxy,
    build_gas as build_gas,
    build_observation as build_observation,
    build_pipeline as build_pipeline,
    build_pipeline_from as build_pipeline_from,
    build_ssp as build_ssp,
    check_config as check_config,
    load_config as load_config,
    RunSpec as RunSpec,
)
from ._telescope import telescope_fields as telescope_fields
from ._yaml import read_yaml as read_yaml
