"""How well recovered codes expose a binary concept, in and out of distribution.

Both metrics follow the paper's protocol (arXiv 2603.28744): the best
single code dimension and the probe's weights are chosen on ID codes and
then applied unchanged to OOD codes, so the OOD figure measures
compositional generalisation rather than refitting. (As in the paper's
evaluation code, the best dimension's AUC is symmetrised on each split
alone: a dimension whose relation to the label flips sign out of
distribution still scores high there.)
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.utils import get_tags
from sklearn.utils._param_validation import Interval

from .._params import Satisfies, validate_hyperparameters
from .._tensor import ignores_autocast, sparse_tensor_as_scipy, to_numpy
from .._typing import Int
from .._warnings import ignoring, warn
from ._inputs import as_matrices, labels

__all__ = ["best_feature_auc", "probe_accuracy"]

# Elements of the (n_components, n_samples) rank arrays per block of columns:
# about 45 bytes each are alive at once (the sort's values and indices, two
# searchsorted arrays, float64 ranks), so 2**24 held 0.5-0.75 GiB whatever
# the codes' size (+489 MiB for 49 MiB of codes).
_RANK_BLOCK = 2**22


def _per_feature_auc(codes: torch.Tensor, y: np.ndarray) -> torch.Tensor:
    """ROC AUC of every code dimension as a score for ``y``, symmetrised.

    Uses the Mann-Whitney form ``AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-)``,
    ``R+`` being the sum of the positives' ranks with ties given their average
    rank, which equals :func:`sklearn.metrics.roc_auc_score` (ties count 1/2)
    but ranks all dimensions in one batched sort on the codes' device, where
    calling ``roc_auc_score`` per dimension costs about a millisecond each on
    the benchmark's splits. (At 10^6 rows of distinct values the sort is the
    slower, 0.75 s a dimension on one CPU thread against 0.44 s; it still
    keeps the work on a GPU where the codes are.)
    Returns ``max(AUC, 1 - AUC)``, so that a dimension anti-correlated with the
    label counts as informative.
    """
    n_samples, n_components = codes.shape
    positive = torch.as_tensor(y, dtype=torch.bool, device=codes.device)
    n_pos = int(positive.sum())
    n_neg = n_samples - n_pos
    auc = torch.empty(n_components, dtype=torch.float64, device=codes.device)
    block = max(1, _RANK_BLOCK // n_samples)
    for start in range(0, n_components, block):
        values = _column_block(codes, start, block).T.contiguous()
        ordered = torch.sort(values, dim=1).values
        below = torch.searchsorted(ordered, values, side="left")
        through = torch.searchsorted(ordered, values, side="right")
        # 1-based average rank of each entry among its column's values
        ranks = (below + through + 1).to(torch.float64) / 2
        rank_sum = ranks[:, positive].sum(dim=1)
        # The Mann-Whitney U, a multiple of 1/2: exact in float64.
        u = rank_sum - n_pos * (n_pos + 1) / 2
        # Symmetrised before the division, so that a dimension and its
        # negative tie exactly (1 - AUC would differ from it in the last bit
        # and the later dimension could win the argmax).
        auc[start : start + block] = torch.maximum(u, n_pos * n_neg - u) / (
            n_pos * n_neg
        )
    return auc


def _column_block(codes: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """Dense columns ``start:start + width`` of dense or sparse COO ``codes``."""
    if not codes.is_sparse:
        return codes[:, start : start + width]
    stop = min(start + width, codes.shape[1])
    columns = torch.arange(start, stop, device=codes.device)
    return codes.index_select(1, columns).to_dense()


@ignores_autocast
def best_feature_auc(
    codes_id: Any, y_id: Any, codes_ood: Any = None, y_ood: Any = None
) -> dict[str, Any]:
    """ROC AUC of the single code dimension that best separates the ID labels.

    Each code dimension is used on its own as a score for the label, with
    ``max(AUC, 1 - AUC)`` so that the sign does not matter. The dimension with
    the highest ID AUC is selected and its AUC reported on the ID data and,
    when given, on the OOD data, symmetrised there too (the paper's
    protocol: the sign is not carried over from ID). A code that isolates
    the concept in one dimension keeps its OOD AUC close to its ID AUC.

    Parameters
    ----------
    codes_id : array-like, torch.Tensor or sparse matrix of shape (n_id, \
n_components)
        Codes of ID samples (the paper uses the validation half).
    y_id : array-like of shape (n_id,)
        Binary labels of the ID samples.
    codes_ood : array-like, torch.Tensor or sparse matrix of shape (n_ood, \
n_components), default=None
        Codes of OOD samples.
    y_ood : array-like of shape (n_ood,), default=None
        Binary labels of the OOD samples; required with ``codes_ood``.

    Returns
    -------
    dict
        ``auc_id`` and ``auc_ood`` (None without OOD data), floats in
        [0.5, 1], and ``feature``, the index of the selected dimension (the
        first one in case of ties).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import best_feature_auc
    >>> codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    >>> codes_ood = np.array([[0.3, 0], [0.9, 0], [0.5, 0], [0.4, 0]])
    >>> best_feature_auc(codes, [0, 1, 0, 1], codes_ood, [0, 1, 0, 1])
    {'auc_id': 1.0, 'auc_ood': 0.75, 'feature': 0}
    """
    C_id, y_id, C_ood, y_ood = _splits(codes_id, y_id, codes_ood, y_ood, binary=True)
    per_feature = _per_feature_auc(C_id, y_id)
    feature = int(torch.argmax(per_feature))
    result = {"auc_id": float(per_feature[feature]), "auc_ood": None}
    if C_ood is not None:
        ood_column = _column_block(C_ood, feature, 1)
        result["auc_ood"] = float(_per_feature_auc(ood_column, y_ood)[0])
    return {**result, "feature": feature}


def _splits(
    codes_id: Any, y_id: Any, codes_ood: Any, y_ood: Any, *, binary: bool
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None, np.ndarray | None]:
    """Check the ID codes and labels, and the OOD ones when either is given."""
    C_id, y_id = _codes_and_labels(codes_id, y_id, "id", binary=binary, dense=False)
    if codes_ood is None and y_ood is None:
        return C_id, y_id, None, None
    C_ood, y_ood = _codes_and_labels(
        codes_ood,
        y_ood,
        "ood",
        binary=binary,
        n_components=C_id.shape[1],
        dense=False,
    )
    return C_id, y_id, C_ood, y_ood


def _codes_and_labels(
    codes: Any,
    y: Any,
    split: str,
    *,
    binary: bool,
    n_components: int | None = None,
    dense: bool = True,
) -> tuple[torch.Tensor, np.ndarray]:
    if codes is None or y is None:
        raise ValueError(f"codes_{split} and y_{split} must be given together.")
    name = f"codes_{split}"
    C = as_matrices({name: codes}, dense=(name,) if dense else ())[name]
    if n_components is not None and C.shape[1] != n_components:
        raise ValueError(
            f"{name} has {C.shape[1]} dimensions but codes_id has {n_components}."
        )
    return C, labels(y, name=f"y_{split}", n_samples=C.shape[0], binary=binary)


def probe_accuracy(
    codes_id: Any,
    y_id: Any,
    codes_ood: Any = None,
    y_ood: Any = None,
    *,
    max_iter: Int | None = 1000,
    probe: Any = None,
) -> dict[str, float | None]:
    """Accuracy of a linear probe trained on ID codes, on ID and OOD codes.

    The probe, by default an unpenalised
    :class:`~sklearn.linear_model.LogisticRegression` (``C=inf``, as in the
    paper), is fitted on the ID codes and labels and scored on them and, when
    given, on the OOD codes.

    The default probe sees the codes divided by a typical large magnitude of
    the ID codes (the 99th percentile of the non-zero ones), so that its
    accuracy does not depend on their scale. The
    unpenalised optimum does not, but where the ID codes are linearly
    separable it lies at infinity, and L-BFGS stops, by its gradient
    tolerance, on a separating hyperplane that does: the true codes of
    ``make_compositional(50, 5, n_samples=1000, random_state=0)`` multiplied
    by 100 gave an OOD accuracy of 0.488 (one class for every sample) instead
    of 0.97, and codes of magnitude 1e-4 stopped the solver after 3
    iterations, at 0.71 in distribution. Codes of methods whose scales differ
    are so probed alike. One scale for all dimensions leaves the relative
    scales of the dimensions to matter on separable codes: one dimension the
    label does not depend on, multiplied by 100, took that OOD accuracy from
    0.968 to 0.834. (A scale per dimension was tried and not kept: a
    dimension nearly silent in distribution, active out of it, then decided
    the OOD predictions, 0.49.) Where dimensions' scales differ for reasons
    of their own, pass an L2-penalised ``probe``. A ``probe`` passed in sees
    the codes as they are.

    The default probe keeps scikit-learn's default tolerance, ``tol=1e-4``,
    as the paper's does, so it also stops short of the optimum on codes that
    are not separable, where the relative scales then move its accuracy a
    little (5 of 220 random problems of 20-80 samples, by up to 0.024 in
    distribution). A tighter tolerance changes the benchmark's OOD accuracies
    (FISTA on the oracle dictionary, ``n_latents=100``: 0.95 to 0.51 at
    ``tol=1e-8``), which on nearly separable codes depend on where the solver
    stops; for the optimum itself pass
    ``probe=LogisticRegression(C=np.inf, tol=1e-8, max_iter=10_000)``.

    Parameters
    ----------
    codes_id : array-like, torch.Tensor or sparse matrix of shape (n_id, \
n_components)
        Codes of ID samples.
    y_id : array-like of shape (n_id,)
        Class labels of the ID samples (two or more classes).
    codes_ood : array-like, torch.Tensor or sparse matrix of shape (n_ood, \
n_components), default=None
        Codes of OOD samples.
    y_ood : array-like of shape (n_ood,), default=None
        Class labels of the OOD samples, in the labels of ``y_id`` (a class
        ``y_id`` lacks is refused: the probe cannot predict it); required
        with ``codes_ood``.
    max_iter : int, default=1000
        Iterations of the default probe's L-BFGS solver (unused with
        ``probe``). Spent on ID codes it separates, they are expected to run
        out (the optimum lies at infinity) and nothing is said; spent on codes
        it does not separate, a :class:`~sklearn.exceptions.ConvergenceWarning`
        says so.
    probe : classifier, default=None
        Another probe (cloned before fitting), e.g. an L2-penalised one where
        the unpenalised optimum is not unique (more code dimensions than the
        probe has samples to pin them down), or a search over one. Scored by
        the accuracy of its predictions, whatever its own ``score`` computes
        (a search's ``scoring``). Sparse codes reach it as a SciPy CSR matrix
        if its tags accept sparse input, else densified. Its warnings reach
        the caller as from its own ``fit``.

    Returns
    -------
    dict
        ``acc_id`` and ``acc_ood`` (None without OOD data).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.metrics import probe_accuracy
    >>> codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    >>> probe_accuracy(codes, [0, 1, 0, 1])
    {'acc_id': 1.0, 'acc_ood': None}
    """
    check_probe(probe, "probe_accuracy")
    if probe is None:
        validate_hyperparameters(
            {"max_iter": [Interval(Integral, 1, None, closed="left")]},
            {"max_iter": max_iter},
            caller_name="probe_accuracy",
        )
    # Both splits are checked before any fit.
    C_id, y_id, C_ood, y_ood = _splits(codes_id, y_id, codes_ood, y_ood, binary=False)
    if C_ood is not None:
        unseen = set(np.unique(y_ood).tolist()) - set(np.unique(y_id).tolist())
        if unseen:
            # The probe predicts y_id's classes only: y_ood in another
            # encoding ({-1, 1} against {0, 1}) scored 0.455 instead of 0.96.
            raise ValueError(
                f"y_ood holds classes {sorted(unseen, key=str)[:5]} that y_id does "
                "not; the probe learns y_id's classes only. Encode both with "
                "the same labels."
            )
    scale, default = 1.0, probe is None
    if default:
        if np.unique(y_id).size < 2:
            raise ValueError(
                "y_id must hold at least two classes for the logistic probe to "
                f"learn; got only {np.unique(y_id).tolist()}."
            )
        probe = LogisticRegression(C=np.inf, max_iter=max_iter)
    else:
        probe = clone(probe)
    features_id = _probe_input(C_id, probe)
    if default:
        scale = _code_scale(features_id)
        features_id = _scaled(features_id, scale)
    if default:
        with ignoring(ConvergenceWarning):
            # On linearly separable codes the unpenalised optimum lies at
            # infinity: L-BFGS stops (by its gradient tolerance, or at
            # max_iter) on a separating hyperplane, which is all the accuracy
            # needs. On other codes stopping at max_iter is news: below.
            probe.fit(features_id, y_id)
    else:
        # The caller's probe warns as in their own fit: an MLPClassifier
        # stopped after 2 iterations scored 0.49 without a word.
        probe.fit(features_id, y_id)
    # Accuracy itself, not probe.score: a search's score is its own scoring
    # (GridSearchCV(..., scoring="roc_auc") reported the AUC as accuracy).
    accuracy = {
        "acc_id": float(accuracy_score(y_id, probe.predict(features_id))),
        "acc_ood": None,
    }
    if default and accuracy["acc_id"] < 1 and probe.n_iter_.max() >= max_iter:
        warn(
            f"The default probe stopped at max_iter={max_iter} on ID codes that "
            f"are not linearly separable (ID accuracy {accuracy['acc_id']:.3f}): "
            "its accuracies may still change. Raise max_iter.",
            ConvergenceWarning,
        )
    if C_ood is not None:
        predicted = probe.predict(_scaled(_probe_input(C_ood, probe), scale))
        accuracy["acc_ood"] = float(accuracy_score(y_ood, predicted))
    return accuracy


def _code_scale(features: Any) -> float:
    """Return the 99th percentile of the non-zero ``|code|`` (1.0 if none).

    ``features`` are the probe's host copy of the codes, a NumPy array or a
    CSR matrix. A percentile rather than the largest: one outlying code of
    1e4 among codes of magnitude 1 would otherwise shrink the others to 1e-4,
    where the probe's solver stops at once.
    """
    values = features.data if sp.issparse(features) else features
    magnitudes = np.abs(values[values != 0])
    if not magnitudes.size:
        return 1.0
    return float(np.quantile(magnitudes, _SCALE_QUANTILE))


def _scaled(features: Any, scale: float) -> Any:
    # No copy of the codes for a probe of the caller's (scale 1).
    return features if scale == 1.0 else features / scale


# Which magnitude of the non-zero ID codes the default probe scales to 1.
_SCALE_QUANTILE = 0.99

_CLASSIFIER = Satisfies(
    lambda val: hasattr(val, "fit") and hasattr(val, "predict") and is_classifier(val),
    "a classifier (sklearn.base.is_classifier)",
)


def check_probe(probe: Any, caller_name: str) -> None:
    """Raise the error naming a ``probe`` that is not a classifier (or None).

    Probe accuracy compares predicted labels with the true ones; a regressor's
    predictions are not labels.
    """
    validate_hyperparameters(
        {"probe": [_CLASSIFIER, None]}, {"probe": probe}, caller_name=caller_name
    )


def _probe_input(codes: torch.Tensor, probe: Any) -> Any:
    """``codes`` for a scikit-learn probe: CSR when sparse and the probe takes it.

    A densified copy of sparse codes cost 48 times the probe's own time, and
    635 MiB, at 2,000 latents and 20,000 samples; probes that need dense
    input (their ``input_tags.sparse`` is False) still get it.
    """
    if not codes.is_sparse:
        return to_numpy(codes)
    if not get_tags(probe).input_tags.sparse:
        return to_numpy(codes.to_dense())
    return sparse_tensor_as_scipy(codes, name="codes")
