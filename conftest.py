"""Test-session setup shared by the doctests in skdict/ and the tests in tests/."""

import os

# scikit-learn's array-API dispatch (and its estimator checks for it) needs
# SciPy's array-API mode, which must be switched on before SciPy is imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
