"""What a failed ``fit`` leaves behind: nothing, or, when interrupted, the fit before.

scikit-learn records ``n_features_in_`` while validating ``X``, before the
rest of ``fit`` can fail (a dictionary of the wrong width, a provider that
cannot be fitted). Left in place, that new width beside the previous fit's
``components_`` lets the next ``transform`` pass validation and fail deep
inside torch. Forgetting every fitted attribute instead makes it raise
:class:`~sklearn.exceptions.NotFittedError`, which says what to do.

An interruption (Ctrl-C: ``KeyboardInterrupt``) is no verdict on the previous
fit: the estimator is left as it was before the call, as scikit-learn's
``DictionaryLearning`` is (it assigns its attributes at the end) and as
skdict's ``partial_fit`` promises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["forget_fit_on_failure", "restored_on_failure"]


@contextmanager
def forget_fit_on_failure(estimator: Any) -> Iterator[None]:
    """Delete ``estimator``'s fitted attributes if the enclosed block raises.

    Fitted attributes are those scikit-learn's ``check_is_fitted`` looks for:
    names ending with an underscore and not starting with two. On a
    ``KeyboardInterrupt``, every attribute is instead set back to what it was
    when the block began (a fit builds new objects rather than changing the
    previous fit's in place).

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> from skdict._fitting import forget_fit_on_failure
    >>> est = BaseEstimator()
    >>> est.components_ = [1.0]
    >>> try:
    ...     with forget_fit_on_failure(est):
    ...         est.n_features_in_ = 3
    ...         raise ValueError("bad dictionary")
    ... except ValueError:
    ...     pass
    >>> [name for name in vars(est) if name.endswith("_")]
    []
    >>> est.components_ = [1.0]
    >>> try:
    ...     with forget_fit_on_failure(est):
    ...         est.components_ = [2.0]
    ...         raise KeyboardInterrupt
    ... except KeyboardInterrupt:
    ...     pass
    >>> est.components_
    [1.0]
    """
    before = dict(vars(estimator))
    try:
        yield
    except KeyboardInterrupt:
        _restore(estimator, before)
        raise
    except BaseException:
        for name in [n for n in vars(estimator) if _is_fitted_name(n)]:
            delattr(estimator, name)
        raise


def _is_fitted_name(name: str) -> bool:
    return name.endswith("_") and not name.startswith("__")


@contextmanager
def restored_on_failure(estimator: Any) -> Iterator[None]:
    """Set every attribute of ``estimator`` back if the enclosed block raises.

    For updates of a fitted estimator (``partial_fit``'s later calls) that
    build new objects rather than change the old ones in place: a call that
    fails leaves the estimator as it was.

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> from skdict._fitting import restored_on_failure
    >>> est = BaseEstimator()
    >>> est.components_ = [1.0]
    >>> try:
    ...     with restored_on_failure(est):
    ...         est.components_ = [2.0]
    ...         raise ValueError("bad batch")
    ... except ValueError:
    ...     pass
    >>> est.components_
    [1.0]
    """
    before = dict(vars(estimator))
    try:
        yield
    except BaseException:
        _restore(estimator, before)
        raise


def _restore(estimator: Any, before: dict[str, Any]) -> None:
    vars(estimator).clear()
    vars(estimator).update(before)
