"""Survey runs: many galaxies × many views, one cube per combination, resumable from a
JSON-lines manifest (`rubix-eqx survey survey.yaml --out DIR`; docs/survey.md)."""

from ._survey import (
    available_memory as available_memory,
    EmptyFieldError as EmptyFieldError,
    estimate_memory as estimate_memory,
    GalaxyFileError as GalaxyFileError,
    GalaxyValueError as GalaxyValueError,
    load_survey as load_survey,
    MemoryGuardError as MemoryGuardError,
    read_manifest as read_manifest,
    run_survey as run_survey,
    Survey as Survey,
    SurveyItem as SurveyItem,
    SurveyResult as SurveyResult,
    verify_outputs as verify_outputs,
)
