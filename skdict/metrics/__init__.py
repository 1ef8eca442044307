"""Metrics and scorers for recovered codes and dictionaries with known ground truth.

Matching metrics (:func:`mcc_score`, :func:`dictionary_similarity`,
:func:`support_scores`) pair learned and true latents one-to-one; probing
metrics (:func:`best_feature_auc`, :func:`probe_accuracy`) choose on ID codes
and report on ID and OOD codes; :func:`reconstruction_error` and
:func:`compositional_gap` measure the fit. The scorers plug into
``GridSearchCV(scoring=...)`` with the true codes passed as ``y``.

Comparisons with the truth take it first, as scikit-learn's ``y_true``
(``mcc_score(Z, codes)``); probing metrics take codes and labels in the order
of ``fit(X, y)`` (``probe_accuracy(codes_id, y_id, codes_ood, y_ood)``).
"""

from ._matching import dictionary_similarity, mcc_score, support_scores
from ._probing import best_feature_auc, probe_accuracy
from ._reconstruction import compositional_gap, reconstruction_error
from ._scorers import (
    make_code_scorer,
    make_dictionary_similarity_scorer,
    mcc_scorer,
    neg_reconstruction_error_scorer,
    support_f1_scorer,
)

__all__ = [
    "best_feature_auc",
    "compositional_gap",
    "dictionary_similarity",
    "make_code_scorer",
    "make_dictionary_similarity_scorer",
    "mcc_score",
    "mcc_scorer",
    "neg_reconstruction_error_scorer",
    "probe_accuracy",
    "reconstruction_error",
    "support_f1_scorer",
    "support_scores",
]
