"""Sparse autoencoders: torch modules, training loop and the sklearn estimator."""

from ._estimator import SparseAutoencoder

__all__ = ["SparseAutoencoder"]
