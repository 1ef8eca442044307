"""Dictionary providers: where a coder's atoms come from.

A *dictionary provider* is anything exposing ``components_`` of shape
``(n_components, n_features)`` and, optionally, ``intercept_`` of shape
``(n_features,)`` -- the offset the model reconstructs around (an SAE's decoder
bias). scikit-learn's PCA family calls that offset ``mean_``; it is used when
``intercept_`` is absent. A provider may be given as

* an array or tensor: the atoms themselves, with a zero intercept;
* an estimator: cloned and fitted on ``(X, y)`` in the coder's ``fit``;
* a fitted estimator wrapped in :class:`sklearn.frozen.FrozenEstimator`: used
  as it is, never refitted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from ._tensor import as_tensor

__all__ = [
    "ResolvedDictionary",
    "check_dictionary",
    "is_provider",
    "resolve_dictionary",
]


class ResolvedDictionary(NamedTuple):
    """A provider turned into tensors.

    Attributes
    ----------
    components : torch.Tensor of shape (n_components, n_features)
    intercept : torch.Tensor of shape (n_features,)
    estimator : estimator or None
        The fitted provider (the clone, or the frozen estimator) when the
        dictionary came from an estimator.
    """

    components: torch.Tensor
    intercept: torch.Tensor
    estimator: Any


def is_provider(obj: Any) -> bool:
    """Return True when ``obj`` is an estimator (as opposed to an array of atoms)."""
    return hasattr(obj, "fit") and hasattr(obj, "get_params")


def check_dictionary(
    components: torch.Tensor, *, n_features: int | None = None, name: str = "dictionary"
) -> None:
    """Raise a ``ValueError`` naming ``name`` unless the atoms are usable.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Atoms as rows.
    n_features : int, default=None
        Expected number of features (that of ``X``), when known.
    name : str, default="dictionary"
        The parameter the atoms came from, for error messages.
    """
    if components.shape[0] == 0:
        raise ValueError(
            f"{name} has zero atoms (shape {tuple(components.shape)}); a dictionary "
            "needs at least one row."
        )
    if n_features is not None and components.shape[1] != n_features:
        raise ValueError(
            f"{name} has atoms of dimension {components.shape[1]}, but X has "
            f"{n_features} features; the dictionary must have shape "
            f"(n_components, {n_features})."
        )
    zero = torch.nonzero(components.abs().amax(dim=1) == 0).flatten()
    if zero.numel():
        shown = zero[:10].tolist()
        more = f" (and {zero.numel() - 10} more)" if zero.numel() > 10 else ""
        raise ValueError(
            f"{name} has zero-norm atoms at rows {shown}{more}; every atom must be "
            "non-zero."
        )


def resolve_dictionary(
    dictionary: Any,
    X_user: Any = None,
    y: Any = None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    n_features: int | None = None,
    name: str = "dictionary",
) -> ResolvedDictionary:
    """Turn an array, estimator or frozen estimator into atoms and an intercept.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor or estimator
        The provider.
    X_user, y : array-like, default=None
        The data an unfitted estimator is fitted on, in the caller's own type.
    device, dtype :
        Where and in which precision the returned tensors live.
    n_features : int, default=None
        Expected atom dimension.
    name : str, default="dictionary"
        The parameter name, for error messages.

    Returns
    -------
    ResolvedDictionary
    """
    estimator = None
    if is_provider(dictionary):
        if isinstance(dictionary, FrozenEstimator):
            estimator = dictionary
            check_is_fitted(estimator.estimator)
        else:
            if X_user is None:
                raise ValueError(
                    f"{name} is an unfitted estimator; it is fitted on X in fit()."
                )
            estimator = clone(dictionary).fit(X_user, y)
        if not hasattr(estimator, "components_"):
            raise TypeError(
                f"{name} must expose 'components_' (n_components, n_features) after "
                f"fitting; {type(dictionary).__name__} does not."
            )
        components = as_tensor(
            estimator.components_,
            device=device,
            dtype=dtype,
            name=f"{name}.components_",
        )
        offset = getattr(estimator, "intercept_", getattr(estimator, "mean_", None))
    else:
        components = as_tensor(dictionary, device=device, dtype=dtype, name=name)
        offset = None
    check_dictionary(components, n_features=n_features, name=name)
    if offset is None:
        intercept = torch.zeros(components.shape[1], device=device, dtype=dtype)
    else:
        intercept = as_tensor(
            offset, device=device, dtype=dtype, name=f"{name}.intercept_", ndim=1
        )
        if intercept.shape[0] != components.shape[1]:
            raise ValueError(
                f"{name}.intercept_ has {intercept.shape[0]} entries, but the atoms "
                f"have dimension {components.shape[1]}."
            )
    return ResolvedDictionary(components, intercept, estimator)
