"""scikit-learn's estimator checks over every public estimator."""

from sklearn.decomposition import PCA
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdict import FISTACoder, SparseAutoencoder


def public_estimators():
    # A provider that adapts to whatever n_features each check uses.
    return [
        FISTACoder(PCA(n_components=1), alpha=0.01),
        # One small SAE per activation family; k=1 because some checks set
        # n_components=1.
        *(
            SparseAutoencoder(
                4, activation=activation, k=1, max_epochs=3, batch_size=16
            )
            for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp")
        ),
    ]


@parametrize_with_checks(public_estimators())
def test_sklearn_compatible(estimator, check):
    check(estimator)
