"""Datasets: the compositional OOD benchmark with known ground truth."""

from ._compositional import default_n_features, make_compositional

__all__ = ["default_n_features", "make_compositional"]
