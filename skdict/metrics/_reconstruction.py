"""Reconstruction error, in distribution and out of it.

Under the paper's noiseless model a method that has learned the concepts
reconstructs OOD samples as well as ID ones; the OOD - ID gap of the
reconstruction error measures how much of its fit was tied to the training
combinations (arXiv 2603.28744).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._tensor import (
    accumulation_dtype,
    ignores_autocast,
    raise_named,
    rows_per_block,
    sum_of_squares,
)
from ._inputs import as_matrices

__all__ = ["compositional_gap", "reconstruct", "reconstruction_error"]


@ignores_autocast
def reconstruction_error(X: Any, X_reconstructed: Any) -> float:
    """Mean squared error over all entries between data and its reconstruction.

    Parameters
    ----------
    X : array-like, torch.Tensor or sparse matrix of shape (n_samples, n_features)
        The data.
    X_reconstructed : array-like, torch.Tensor or sparse matrix of shape \
(n_samples, n_features)
        Its reconstruction, e.g. ``estimator.inverse_transform(codes)``.

    Returns
    -------
    float
        ``mean((X - X_reconstructed) ** 2)``; lower is better.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import reconstruction_error
    >>> reconstruction_error(np.ones((2, 2)), np.zeros((2, 2)))
    1.0
    """
    arrays = as_matrices(
        {"X": X, "X_reconstructed": X_reconstructed},
        dense=("X", "X_reconstructed"),
        promote=False,
    )
    X, X_hat = arrays["X"], arrays["X_reconstructed"]
    if X.shape != X_hat.shape:
        raise ValueError(
            f"X has shape {tuple(X.shape)} but X_reconstructed has shape "
            f"{tuple(X_hat.shape)}."
        )
    # Differences and squares in float64, a block of rows at a time: float32
    # squares of 1e20 overflowed to inf and those of 1e-25 underflowed to 0,
    # and float32 differences of +-3e38 overflowed; a float32 side beside a
    # float64 one is not copied whole. (MPS has no float64: float32 there.)
    work = accumulation_dtype(X.device, torch.float32)
    step = rows_per_block(X.shape[1])

    def differences():
        for start in range(0, X.shape[0], step):
            rows = slice(start, start + step)
            yield X[rows].to(work) - X_hat[rows].to(work)

    total = sum(block.square().sum() for block in differences())
    if torch.isfinite(total):
        return float(total) / X.numel()
    # Squares beyond float64's range (differences above 1e154): a second
    # pass, which only these inputs pay for, sums each block's relative to
    # its largest difference.
    return sum(sum_of_squares(block, X.numel()) for block in differences())


def reconstruct(estimator: Any, X: Any) -> Any:
    """Return ``estimator.inverse_transform(estimator.transform(X))``.

    Parameters
    ----------
    estimator : fitted estimator
        Anything with ``transform`` and ``inverse_transform``.
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        The data.

    Returns
    -------
    array-like or torch.Tensor of shape (n_samples, n_features)
    """
    _check_reconstructs(estimator)
    return estimator.inverse_transform(estimator.transform(X))


def _check_reconstructs(estimator: Any) -> None:
    if not hasattr(estimator, "inverse_transform"):
        raise TypeError(
            f"{type(estimator).__name__} has no inverse_transform, so its "
            "reconstruction error is undefined."
        )


def compositional_gap(estimator: Any, X_id: Any, X_ood: Any) -> dict[str, float]:
    """Reconstruction error of a fitted estimator on ID and OOD data, and the gap.

    Parameters
    ----------
    estimator : fitted estimator
        Anything with ``transform`` and ``inverse_transform`` (skdict coders
        and autoencoders, sklearn's PCA).
    X_id : array-like or torch.Tensor of shape (n_id, n_features)
        In-distribution data (the paper uses the validation half).
    X_ood : array-like or torch.Tensor of shape (n_ood, n_features)
        Out-of-distribution data.

    Returns
    -------
    dict
        ``mse_id``, ``mse_ood`` (see :func:`reconstruction_error`) and
        ``gap = mse_ood - mse_id``: positive when OOD samples are
        reconstructed worse.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skdict.metrics import compositional_gap
    >>> X_id = np.array([[1.0, 0, 0], [2, 0, 0], [0, 1, 0], [0, 3, 0]])
    >>> pca = PCA(n_components=2).fit(X_id)
    >>> gap = compositional_gap(pca, X_id, np.array([[0.0, 0, 3]]))
    >>> round(gap["mse_id"], 12), round(gap["gap"], 6)
    (0.0, 3.0)
    """
    # Before the data's checks, whose errors are prefixed with the split's
    # name: "X_id: LinearRegression has no inverse_transform" blamed the data.
    _check_reconstructs(estimator)
    for name, X in (("X_id", X_id), ("X_ood", X_ood)):
        # Checked by name: the estimator's own check would name neither.
        if X is None or np.ndim(X) != 2:
            raise ValueError(
                f"{name} must be a 2-D array of samples (n_samples, n_features); "
                f"got {'None' if X is None else f'{np.ndim(X)} dimension(s)'}."
            )
        expected = getattr(estimator, "n_features_in_", None)
        if expected is not None and np.shape(X)[1] != expected:
            raise ValueError(
                f"{name} has {np.shape(X)[1]} features, but "
                f"{type(estimator).__name__} was fitted on {expected}."
            )
    mse = {}
    for split, X in (("id", X_id), ("ood", X_ood)):
        try:
            reconstructed = reconstruct(estimator, X)
        except (ValueError, TypeError) as error:
            # The estimator's own checks call either array "X" (a TypeError
            # for sparse input).
            raise_named(error, f"X_{split}: ")
        mse[f"mse_{split}"] = reconstruction_error(X, reconstructed)
    return {**mse, "gap": mse["mse_ood"] - mse["mse_id"]}
