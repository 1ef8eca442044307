"""skdict: scikit-learn estimators for sparse coding of neural-network activations."""

from ._dictionary import OracleDictionary
from ._fista import FISTACoder
from ._sae import SparseAutoencoder

__version__ = "0.1.0.dev0"

__all__ = ["FISTACoder", "OracleDictionary", "SparseAutoencoder", "__version__"]
