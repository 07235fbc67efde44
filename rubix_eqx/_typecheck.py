"""The runtime type checker applied to the data classes a user constructs."""

from beartype import beartype, BeartypeConf


# `is_pep484_tower` lets an `int` pass where a `float` is annotated.
typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
