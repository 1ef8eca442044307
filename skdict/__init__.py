"""skdict: scikit-learn estimators for sparse coding of neural-network activations."""

import importlib as _importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"

__all__ = ["FISTACoder", "OracleDictionary", "SparseAutoencoder", "__version__"]

# The estimators' modules load torch and scikit-learn, seconds of start-up:
# they are imported on first use, so that the command line, which loads them
# inside its handler of Ctrl-C, handles an interrupt from its first moment
# (one while they loaded printed a traceback of up to 56 lines).
_HOMES = {
    "FISTACoder": "._fista_coder",
    "OracleDictionary": "._oracle",
    "SparseAutoencoder": "._sae",
}

if TYPE_CHECKING:
    from ._fista_coder import FISTACoder
    from ._oracle import OracleDictionary
    from ._sae import SparseAutoencoder
else:
    # Hidden from type checkers, for which a module __getattr__ makes every
    # name exist (a misspelled import passed mypy).

    def __getattr__(name: str) -> object:
        if name not in _HOMES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(_HOMES[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*__all__, *(name for name in globals() if name[:2] == "__")})
