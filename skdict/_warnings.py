"""Warnings attributed to the user's line, not to a library frame.

A warning raised deep in a fit passes through scikit-learn's wrappers
(``_fit_context``, ``set_output``, ``Pipeline``) and skdict's own helpers, so
no fixed ``stacklevel`` names the caller: with ``stacklevel=3`` FISTA's
``ConvergenceWarning`` pointed at ``sklearn/base.py`` from ``fit`` and at
``sklearn/utils/_set_output.py`` from ``transform``, and a filter on the
user's module never matched it. The level is counted here instead, past every
frame inside skdict, scikit-learn and joblib (``warnings.warn``'s
``skip_file_prefixes`` does this from Python 3.12 on).
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import joblib
import sklearn

__all__ = ["ignoring", "warn"]

# joblib runs the fits of scikit-learn's model selection (cross_validate,
# GridSearchCV), between its frames and the user's.
_LIBRARY_FOLDERS = tuple(
    os.path.dirname(os.path.abspath(module_file)) + os.sep
    for module_file in (__file__, sklearn.__file__, joblib.__file__)
)


def _in_library(filename: str) -> bool:
    # "<stdin>", "<string>", "<ipython-input-...>": code typed or generated
    # by the user, not a file (abspath would resolve it against the cwd).
    if filename.startswith("<"):
        return False
    return os.path.abspath(filename).startswith(_LIBRARY_FOLDERS)


def warn(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as a ``category`` warning at the first outside frame.

    Parameters
    ----------
    message : str
        The warning's text.
    category : type of Warning
        Its class, e.g. :class:`~sklearn.exceptions.ConvergenceWarning`.

    Examples
    --------
    >>> import warnings
    >>> from skdict._warnings import warn
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("codes may be inexact", UserWarning)
    >>> caught[0].filename.endswith("_warnings.py")
    False
    """
    frame = sys._getframe(1)
    # stacklevel=2 names warn's caller; each library frame adds one.
    level = 2
    while frame.f_back is not None and _in_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


# One lock for every block of skdict that changes the warning filters:
# catch_warnings saves and restores the process's filter list, so two such
# blocks overlapping in threads (probe_accuracy under a threaded GridSearchCV)
# could restore a list that still holds the other's "ignore", silencing every
# later ConvergenceWarning of the process. Reentrant: an ignored block may
# fit an estimator that enters another.
_FILTERS_LOCK = threading.RLock()


@contextmanager
def ignoring(category: type[Warning], message: str = "") -> Iterator[None]:
    """Ignore warnings of ``category`` (matching ``message``) in the block.

    Unlike a bare :class:`warnings.catch_warnings`, blocks of skdict entered
    from several threads at once do not leave each other's filters behind:
    they run one at a time, so a block must not wait for other threads that
    enter one. Other libraries' ``catch_warnings`` blocks are not covered
    (Python 3.14's context-aware warnings cover them).

    Examples
    --------
    >>> import warnings
    >>> from skdict._warnings import ignoring
    >>> before = list(warnings.filters)
    >>> with ignoring(UserWarning, "expected"):
    ...     warnings.warn("expected and ignored")
    >>> warnings.filters == before
    True
    """
    with _FILTERS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message, category)
        yield
