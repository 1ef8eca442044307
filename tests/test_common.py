"""scikit-learn's estimator checks over every public estimator."""

import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdict import FISTACoder, OracleDictionary, SparseAutoencoder


def public_estimators():
    # A provider that adapts to whatever n_features each check uses.
    return [
        FISTACoder(PCA(n_components=1), alpha=0.01),
        # Dictionary learning: as many atoms as features, a few rounds.
        FISTACoder(dict_max_iter=3, random_state=0),
        OracleDictionary(PCA(n_components=1)),
        # Estimated from the checks' targets, taken as one latent's codes.
        OracleDictionary(),
        # One small SAE per activation family; k=1 because some checks set
        # n_components=1.
        *(
            SparseAutoencoder(
                4, activation=activation, k=1, max_epochs=3, batch_size=16
            )
            for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp")
        ),
    ]


def expected_failed_checks(estimator):
    if isinstance(estimator, OracleDictionary):
        # The oracle's atoms are given or solved in closed form: fit iterates
        # nothing, so there is no n_iter_ to report.
        return {"check_transformer_n_iter": "fit runs no iterations"}
    return {}


def _wants_cuda(check) -> bool:
    """Whether an array-API check runs on a CUDA device."""
    keywords = getattr(check, "keywords", {})
    return keywords.get("device_name") == "cuda" or any(
        getattr(value, "device", None) == "cuda" for value in keywords.values()
    )


@parametrize_with_checks(
    public_estimators(), expected_failed_checks=expected_failed_checks
)
def test_sklearn_compatible(estimator, check):
    # scikit-learn skips its CUDA checks only where torch was built without
    # CUDA; a CUDA build on a machine without a usable GPU must skip them too.
    if _wants_cuda(check) and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    check(estimator)
