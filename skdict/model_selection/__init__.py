"""Model selection for compositional generalisation."""

from ._split import CompositionalSplit

__all__ = ["CompositionalSplit"]
