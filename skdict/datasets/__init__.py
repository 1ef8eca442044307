"""Datasets: the compositional OOD benchmark and real transformer activations."""

from ._compositional import default_n_features, make_compositional
from ._phrases import load_phrase_activations

__all__ = ["default_n_features", "load_phrase_activations", "make_compositional"]
