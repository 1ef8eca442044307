"""Cross-validation folds that test unseen combinations of known concepts.

The paper's benchmark trains on samples in which the probed concept never
co-occurs with some other concepts and tests on samples in which it does
(arXiv 2603.28744). :class:`CompositionalSplit` builds such folds
from any matrix of concept activity, so that hyper-parameters can be chosen
for compositional generalisation rather than for in-distribution fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _num_samples

from .._params import StrictParamsMixin
from .._tensor import is_tensor, raise_named, sparse_tensor_as_scipy, to_numpy
from .._typing import ArrayLike, Float, Int, Seed
from .._warnings import ignoring, warn

__all__ = ["CompositionalSplit"]


def _activity(y: Any, threshold: float, name: str = "y") -> sp.csc_matrix:
    """Boolean concept activity ``|y| > threshold`` as a CSC matrix."""
    if y is None:
        raise ValueError(
            "CompositionalSplit reads the concept activity from groups, or "
            "else from y: pass the true codes, or any (n_samples, n_concepts) "
            "indicator matrix, e.g. GridSearchCV(...).fit(X, y, groups=Z)."
        )
    if is_tensor(y) and y.layout != torch.strided:
        # Sparse tensors, as the metrics take them: SciPy's CSR of their values.
        y = sparse_tensor_as_scipy(y, name=name)
    elif is_tensor(y):
        y = to_numpy(y, name)
    elif isinstance(y, (list, tuple)):
        # A list holding None stayed an object array through check_array,
        # and failed in np.abs; as an array, None reads as NaN, refused below.
        try:
            y = np.asarray(y)
        except ValueError as exc:  # ragged rows: NumPy names no input
            raise_named(exc, f"Invalid {name}: ")
    if not sp.issparse(y) and np.ndim(y) != 2:
        raise ValueError(
            f"{name} must be a 2-D matrix of concept activity (n_samples, "
            f"n_concepts); got shape {np.shape(y)}. With class labels as y "
            "(a pipeline ending in a classifier), pass the concept activity as "
            "groups: GridSearchCV(...).fit(X, y, groups=Z)."
        )
    # NaN would otherwise read as inactive and the concept vanish from folds.
    try:
        y = check_array(y, accept_sparse=True, dtype="numeric", input_name=name)
    except (TypeError, ValueError) as exc:
        # check_array names the input in its NaN messages only.
        raise_named(exc, f"Invalid {name}: ", name=name)
    if sp.issparse(y):
        A = sp.csc_matrix(y, copy=True)
        A.data = np.abs(A.data) > threshold
    else:
        A = sp.csc_matrix(np.abs(y) > threshold)
    A.eliminate_zeros()
    return A.astype(np.int64)


def _shape(A: Any) -> tuple[int, ...] | None:
    """Return the shape of an array, tensor, sparse matrix or list; None if none."""
    if A is None:
        return None
    shape = getattr(A, "shape", None)
    if shape is None:
        try:
            shape = np.shape(A)
        except ValueError:  # ragged
            return None
    return tuple(shape)


def _candidate_pairs(A: sp.csc_matrix, concepts: np.ndarray | None) -> np.ndarray:
    """Concept pairs that may be held out, as an (n_pairs, 2) array.

    A pair qualifies when it co-occurs somewhere (there is something to test)
    and each of its concepts also occurs without the other (so it can remain
    in training once every sample holding the pair moves to the test set).
    """
    counts = A.sum(axis=0).A1
    co = sp.triu(A.T @ A, k=1).tocoo()
    first, second, together = co.row, co.col, co.data
    keep = (counts[first] > together) & (counts[second] > together)
    if concepts is not None:
        keep &= np.isin(first, concepts) | np.isin(second, concepts)
    return np.column_stack([first[keep], second[keep]])


def _class_labels(y: Any) -> np.ndarray | None:
    """``y`` as an array when it holds class labels, else None.

    ``y`` is not used to split when ``groups`` is given, so whatever it holds
    (NaN, None, mixed types) must not raise here: it is only looked at.
    """
    if y is None or sp.issparse(y) or (is_tensor(y) and y.layout != torch.strided):
        return None
    try:
        labels = to_numpy(y, "y") if is_tensor(y) else np.asarray(y)
        with ignoring(RuntimeWarning):  # NaN labels cast to integers
            kind = type_of_target(labels)
    except (TypeError, ValueError):
        return None
    return labels if kind in ("binary", "multiclass") else None


def _warn_single_class(labels: np.ndarray, fold: int) -> None:
    # A binary label that is the activity of a held-out concept is the same
    # in every test sample (each holds both concepts of a held-out pair):
    # a classifier that always answers it scores 1 there, so a search would
    # prefer whatever predicts it most.
    classes = np.unique(labels)
    if len(classes) == 1:
        warn(
            f"CompositionalSplit: the test set of fold {fold} holds a single "
            f"class of y ({classes.tolist()[0]!r}), so accuracy there rewards "
            "predicting it always, and ROC AUC is undefined. When y is the "
            "activity of a concept, hold out pairs of other concepts: concepts= "
            "without the labelled one, or its column left out of groups.",
            UserWarning,
        )


class CompositionalSplit(StrictParamsMixin, BaseCrossValidator):
    """Folds whose test samples combine concepts never seen together in training.

    Each fold holds out a random set of concept pairs: its test set is every
    sample in which both concepts of a held-out pair are active, its training
    set every other sample. No held-out pair therefore co-occurs in training,
    while each concept of a held-out pair still occurs there (with other
    concepts). A model scored on such folds is scored on compositional
    generalisation, as on the OOD set of
    :func:`~skdict.datasets.make_compositional`.

    Pairs are drawn in random order and held out as long as the test set stays
    within ``test_size`` samples and every concept of a test sample keeps at
    least one training sample, so that test samples combine known concepts
    only. Folds are drawn independently (as in
    :class:`~sklearn.model_selection.ShuffleSplit`), so test sets of different
    folds may overlap.

    The concept activity is read from ``groups`` when given, else from ``y``
    (e.g. the true codes: ``GridSearchCV.fit(X, Z)`` together with code-based
    scorers, or ``GridSearchCV.fit(X, labels, groups=Z)`` to tune a pipeline
    ending in a classifier): concept ``j`` is active in sample ``i`` when
    ``|y[i, j]| > threshold``.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds.
    test_size : float or int, default=0.2
        Upper bound on the test set of each fold: a fraction of the samples
        when a float in (0, 1), a number of samples when an int.
    concepts : array-like of int, default=None
        Only hold out pairs involving at least one of these concepts (e.g.
        ``[0]``, the probed concept of the paper's benchmark). None considers
        all pairs.
    threshold : float, default=0.0
        Activity threshold on ``|y|``.
    random_state : int, RandomState instance or None, default=None
        Controls the order in which pairs are tried. Pass an int for the same
        folds on every call of :meth:`split`.

    See Also
    --------
    skdict.datasets.make_compositional : The benchmark with a fixed
        compositional train/OOD split.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.model_selection import CompositionalSplit
    >>> y = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1],
    ...               [1, 1, 0], [1, 0, 1], [0, 1, 1]])
    >>> cv = CompositionalSplit(n_splits=2, test_size=2, random_state=1)
    >>> for train, test in cv.split(np.zeros((6, 1)), y):
    ...     print(train, test)
    [0 2 3 5] [1 4]
    [1 2 4 5] [0 3]

    In the first fold, concepts 0 and 2 co-occur in the test samples only,
    while each occurs in training with concept 1.
    """

    # As scikit-learn's group splitters: with metadata routing on,
    # GridSearchCV(...).fit(X, y, groups=Z) routes groups to split.
    __metadata_request__split = {"groups": True}

    _parameter_constraints: dict = {
        "n_splits": [Interval(Integral, 1, None, closed="left")],
        "test_size": [
            Interval(Real, 0, 1, closed="neither"),
            Interval(Integral, 1, None, closed="left"),
        ],
        "concepts": ["array-like", None],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_splits: Int = 5,
        *,
        test_size: Float | Int = 0.2,
        concepts: ArrayLike = None,
        threshold: Float = 0.0,
        random_state: Seed = None,
    ) -> None:
        self.n_splits = n_splits
        self.test_size = test_size
        self.concepts = concepts
        self.threshold = threshold
        self.random_state = random_state

    def split(
        self, X: ArrayLike, y: ArrayLike = None, groups: ArrayLike = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Generate indices to split data into training and test sets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; only its number of samples is used.
        y : array-like of shape (n_samples, n_concepts), default=None
            Concept activity (also a torch.Tensor or a sparse matrix), e.g.
            the true codes, when ``groups`` is None;
            otherwise not used to split (it may be, e.g., class labels), only
            looked at: class labels of a single class in a test fold warn.
        groups : array-like of shape (n_samples, n_concepts), default=None
            Concept activity (also a torch.Tensor or a sparse matrix); takes
            precedence over ``y``.

        Yields
        ------
        train : ndarray
            The training set indices for that split.
        test : ndarray
            The testing set indices for that split.

        Raises
        ------
        ValueError
            If the concept activity (``groups``, else ``y``) is missing or
            not 2-D, or no pair can be held out.

        Warns
        -----
        UserWarning
            If ``y`` holds class labels (beside ``groups``) of a single class
            in a test fold, where accuracy rewards predicting it always; or if
            every fold holds the same test samples.
        """
        self._validate_params()
        # The concept activity's own checks first: scikit-learn's split checks
        # the lengths before anything else, naming neither input (and a 3-D
        # groups of 60 rows had "inconsistent numbers of samples: [60, 1]").
        source = "y" if groups is None else "groups"
        activity = y if groups is None else groups
        shape = _shape(activity)
        if shape is None or len(shape) != 2:
            # Raises its named error (missing, not 2-D, unreadable); read
            # only then, as the folds read it again.
            _activity(activity, self.threshold, name=source)
        elif shape[0] != (n_samples := _num_samples(X)):
            raise ValueError(
                f"{source} has {shape[0]} rows, but X has {n_samples} samples; "
                "pass one row of concept activity per sample."
            )
        return super().split(X, y, groups)

    def get_n_splits(
        self, X: ArrayLike = None, y: ArrayLike = None, groups: ArrayLike = None
    ) -> int:
        """Return the number of splitting iterations.

        Parameters
        ----------
        X, y, groups : object
            Ignored, present for API compatibility.

        Returns
        -------
        n_splits : int
            The number of folds, ``n_splits``.
        """
        self._validate_params()
        return int(self.n_splits)  # an int, also for a NumPy integer given

    def _iter_test_masks(self, X=None, y=None, groups=None):
        source = "y" if groups is None else "groups"
        A = _activity(y if groups is None else groups, self.threshold, name=source)
        n_samples, n_concepts = A.shape
        concepts = self._concepts(n_concepts, source)
        pairs = _candidate_pairs(A, concepts)
        if len(pairs) == 0:
            among = "" if concepts is None else f" (among pairs with {concepts})"
            raise ValueError(
                f"No valid fold: no pair of concepts{among} co-occurs while each "
                "of the two also occurs without the other, so holding out any "
                "pair would leave one of its concepts without training samples."
            )
        max_test = self._max_test(n_samples)
        rows = A.tocsr()
        rng = check_random_state(self.random_state)
        labels = _class_labels(y) if groups is not None else None
        distinct = set()
        for fold in range(self.n_splits):
            test = self._fold(A, rows, pairs[rng.permutation(len(pairs))], max_test)
            if not test.any():
                raise ValueError(
                    "No valid fold: every pair that can be held out occurs in more "
                    f"than test_size={self.test_size} ({max_test}) samples, or in "
                    "every sample of some other concept; raise test_size."
                )
            if labels is not None:
                _warn_single_class(labels[test], fold)
            distinct.add(np.packbits(test).tobytes())
            yield test
        if len(distinct) == 1 < self.n_splits:
            # With few concepts (two have a single pair) every fold is the
            # same, and the scores' spread over folds reads as a measured
            # zero. (Independent folds may repeat by chance, as ShuffleSplit's.)
            warn(
                f"CompositionalSplit: all n_splits={self.n_splits} folds hold the "
                "same test samples (few concept pairs can be held out, or the "
                "draws coincided), so the scores do not vary over folds "
                "whatever the model's uncertainty. Use more concepts, another "
                "random_state, or n_splits=1.",
                UserWarning,
            )

    @staticmethod
    def _fold(
        A: sp.csc_matrix, rows: sp.csr_matrix, pairs: np.ndarray, max_test: int
    ) -> np.ndarray:
        """Hold out ``pairs`` in order while they fit; return the test mask."""
        test = np.zeros(A.shape[0], dtype=bool)
        n_test = 0
        train_count = A.sum(axis=0).A1
        for a, b in pairs:
            both = np.intersect1d(
                A.indices[A.indptr[a] : A.indptr[a + 1]],
                A.indices[A.indptr[b] : A.indptr[b + 1]],
                assume_unique=True,
            )
            moved = both[~test[both]]
            if moved.size == 0 or n_test + moved.size > max_test:
                continue
            touched, lost = np.unique(rows[moved].indices, return_counts=True)
            left = train_count[touched] - lost
            # Every concept of a test sample must stay known from training,
            # not only the held-out pair's: a concept found only with the
            # pair would otherwise be tested without ever being trained on.
            if (left <= 0).any():
                continue
            train_count[touched] = left
            test[moved] = True
            n_test += moved.size
            if n_test == max_test:
                break
        return test

    def _concepts(self, n_concepts: int, source: str) -> np.ndarray | None:
        if self.concepts is None:
            return None
        concepts = np.asarray(self.concepts).ravel()
        if not np.issubdtype(concepts.dtype, np.integer) or (
            concepts.size and (concepts.min() < 0 or concepts.max() >= n_concepts)
        ):
            raise ValueError(
                f"concepts must be column indices of {source} in "
                f"[0, {n_concepts - 1}]; "
                f"got {self.concepts!r}."
            )
        return concepts

    def _max_test(self, n_samples: int) -> int:
        if isinstance(self.test_size, Integral):
            return int(self.test_size)
        return int(np.floor(self.test_size * n_samples))
