"""Type aliases shared across the package."""

from typing import TYPE_CHECKING, TypeAlias

from jaxtyping import ArrayLike, Real


if TYPE_CHECKING:
    RealScalarLike: TypeAlias = float | int | ArrayLike
else:
    RealScalarLike = Real[ArrayLike, ""]
