"""Shared input handling of the metrics: codes as tensors on one device.

Metrics accept NumPy arrays, torch tensors on any device and, for code
matrices, SciPy sparse matrices (such as the codes of
:func:`skdict.datasets.make_compositional` with ``sparse_codes=True``). The
large products run in torch on the device of the first tensor argument (else
on the default device of :func:`skdict._tensor.resolve_device`); assignment
problems and scikit-learn estimators then run on NumPy copies of the small
results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.multiclass import type_of_target

from .._tensor import (
    as_tensor,
    is_sparse,
    is_tensor,
    resolve_device,
    scipy_if_pandas_sparse,
    sparse_as_tensor,
    to_numpy,
)

__all__ = ["as_matrices", "compute_device", "labels"]


def compute_device(*arrays: Any) -> torch.device:
    """Return the device of the first tensor among ``arrays``, else the default.

    Meta tensors are passed over, so that each is refused under its own name
    rather than the other arrays being moved to the meta device first.
    """
    for A in arrays:
        if is_tensor(A) and A.device.type != "meta":
            return A.device
    return resolve_device("auto")


def _code_tensor(A: Any, device: torch.device, name: str) -> torch.Tensor:
    A = scipy_if_pandas_sparse(A)
    if is_sparse(A):
        return sparse_as_tensor(A, device=device, name=name)
    return as_tensor(A, device=device, name=name)


def as_matrices(
    arrays: dict[str, Any], *, dense: tuple[str, ...] = (), promote: bool = True
) -> dict[str, torch.Tensor]:
    """Turn 2-D code matrices into tensors on one device (one dtype if ``promote``).

    Parameters
    ----------
    arrays : dict of str to array-like, tensor or sparse matrix
        The matrices, keyed by the parameter names used in error messages.
        All must have the same number of rows.
    dense : tuple of str, default=()
        Names of the matrices that are returned dense even when given sparse.
    promote : bool, default=True
        Return every matrix in the widest floating dtype among the inputs.
        False keeps each in its own floating dtype (at least float32), for
        metrics that promote a block of rows at a time: float32 codes beside
        float64 true codes otherwise took a whole float64 copy.

    Returns
    -------
    dict of str to torch.Tensor
        Dense tensors, or coalesced sparse COO tensors for sparse input.
    """
    device = compute_device(*arrays.values())
    tensors = {name: _code_tensor(A, device, name) for name, A in arrays.items()}
    dtype = torch.float32
    for T in tensors.values():
        dtype = torch.promote_types(dtype, T.dtype)
    rows = {name: T.shape[0] for name, T in tensors.items()}
    if len(set(rows.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in rows.items())
        raise ValueError(f"The matrices must have as many rows: {shown}.")
    empty = [name for name, n in rows.items() if n == 0]
    if empty:
        raise ValueError(
            f"{empty[0]} has 0 rows; the metric needs at least one sample."
        )
    # NumPy input meets sklearn's check_array, which refuses it; tensors and
    # sparse matrices did not, and a metric of nothing crashed or scored 0.
    narrow = [name for name, T in tensors.items() if T.shape[1] == 0]
    if narrow:
        raise ValueError(f"{narrow[0]} has 0 columns; the metric needs at least one.")
    out = {}
    for name, T in tensors.items():
        T = T.to(dtype if promote else torch.promote_types(torch.float32, T.dtype))
        out[name] = T.to_dense() if name in dense and T.is_sparse else T
    return out


def _missing(value: Any) -> bool:
    """None, NaN, or pandas' NA (neither equal nor unequal to itself)."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas' NA: "boolean value of NA is ambiguous"
        return type(value).__module__.startswith("pandas")


def labels(y: Any, *, name: str, n_samples: int, binary: bool) -> np.ndarray:
    """Return labels ``y`` as a 1-D NumPy array, checked against the codes.

    Parameters
    ----------
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels.
    name : str
        Parameter name for error messages.
    n_samples : int
        Number of rows of the codes the labels go with.
    binary : bool
        Require exactly two classes and return 1 for the larger, 0 for the
        other; otherwise return the labels as they are.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    y = to_numpy(y, name)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}.")
    if y.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {y.shape[0]} labels for {n_samples} rows of codes."
        )
    if (y.dtype.kind in "fc" and np.isnan(y).any()) or (
        y.dtype.kind == "O" and any(_missing(v) for v in y)
    ):
        # np.unique folds NaN into one more "class": [nan, 0, 0] passed as
        # two classes, and no label then equalled the positive one (None
        # failed inside np.unique).
        raise ValueError(f"{name} contains missing values (NaN, None or NA).")
    if y.dtype.kind in "fc" and np.isinf(y).any():
        raise ValueError(f"{name} contains infinity; class labels must be finite.")
    try:
        classes = np.unique(y)
    except TypeError as error:  # object labels of types with no common order
        types = sorted({type(v).__name__ for v in y})
        raise ValueError(
            f"{name} mixes labels of types {types} that cannot be compared with "
            "each other; give labels of one type."
        ) from error
    if not binary:
        # A classifier's labels: continuous values failed inside the probe,
        # with scikit-learn's "Unknown label type" naming no parameter.
        kind = type_of_target(y, input_name=name)
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"{name} must hold class labels; got {kind} values such as "
                f"{classes[:3].tolist()}."
            )
        return y
    if classes.size != 2:
        raise ValueError(
            f"{name} must hold exactly two classes; got {classes.size} "
            f"({classes[:5].tolist()})."
        )
    return (y == classes[1]).astype(np.int64)
