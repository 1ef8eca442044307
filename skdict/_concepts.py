"""Concept names: the output feature names of codes whose atoms are known concepts."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import (
    ClassNamePrefixFeaturesOutMixin,
)

from ._typing import ArrayLike
from ._warnings import warn


def _check_concept_names(fitted: np.ndarray | None, names: np.ndarray | None) -> None:
    """Refuse a batch whose ``y`` names its columns otherwise than the first.

    Concepts in another order would be summed into the wrong latents' atoms
    (an error of 0.32 against 2e-15), as scikit-learn refuses reordered
    feature names.
    """
    if fitted is None or names is None:
        if (fitted is None) != (names is None):
            warn(
                "y has no column names, but the oracle's first batch named its "
                "concepts: its columns are taken in that order."
                if names is None
                else "y names its columns, but the oracle's first batch did not: "
                "they are taken in the first batch's order.",
                UserWarning,
            )
        return
    if len(names) != len(fitted) or (names != fitted).any():
        raise ValueError(
            "The concept names of y differ from those of the first batch (in "
            f"name or order): {list(names)[:5]} against {list(fitted)[:5]}. "
            "Order y's columns as the first batch's."
        )


class ConceptNamesOutMixin(ClassNamePrefixFeaturesOutMixin):
    """Mixin: codes named after an oracle's concepts where the atoms are theirs.

    :class:`~skdict.OracleDictionary` fitted on a ``y`` with string column names,
    and the coders that keep its atoms (a :class:`~skdict.FISTACoder` on them, a
    :class:`~skdict.SparseAutoencoder` with them as its frozen decoder), name their
    codes after the concepts; other estimators name them as scikit-learn's
    decompositions do. ``_names_of_codes`` gives the names, recorded at fit.
    """

    def _names_of_codes(self) -> np.ndarray | None:
        return getattr(self, "_concept_names", None)

    def get_feature_names_out(self, input_features: ArrayLike = None) -> np.ndarray:
        """Return the names of the codes: an oracle's concepts where the atoms are.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Checked against the names seen in ``fit``, as scikit-learn's
            transformers check them; not used otherwise.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The concept names of an :class:`~skdict.OracleDictionary` estimated from
            a DataFrame ``y`` with string column names, for the oracle and
            for coders fitted on its atoms (a :class:`~skdict.FISTACoder`, or a
            :class:`~skdict.SparseAutoencoder` keeping them frozen); otherwise the
            class name and the code's index (``fistacoder0``, ...).
        """
        names = super().get_feature_names_out(input_features)
        concepts = self._names_of_codes()
        if concepts is None or len(concepts) != len(names):
            return names
        return np.asarray(concepts, dtype=object).copy()


def concept_names_of(provider: Any) -> np.ndarray | None:
    """Return the concept names an oracle gave its atoms, or None.

    ``provider`` is a fitted dictionary provider (a
    :class:`~sklearn.frozen.FrozenEstimator` passes attributes through):
    coders on an oracle's atoms name their codes after its concepts.
    """
    names = getattr(provider, "concept_names_", None)
    if names is None:
        # A coder that keeps an oracle's atoms (FISTACoder on them, or an SAE
        # with them as its frozen decoder) passes the names on, so that
        # wrapping the same atoms once more does not lose them.
        names_of_codes = getattr(provider, "_names_of_codes", None)
        names = names_of_codes() if callable(names_of_codes) else None
    return None if names is None else np.asarray(names, dtype=object).copy()
