"""Hyper-parameter validation: scikit-learn's constraints, with stricter integers.

scikit-learn's ``Interval(Integral, ...)`` accepts ``True`` (a Python bool is
an ``Integral``) and NumPy integers of any width. Handed on to torch, a bool
fails deep inside a kernel (``randn(True, ...)``), and a narrow NumPy integer
wraps around in arithmetic without an error (``np.uint8(10) * 64`` is 128;
``np.int32(65536) ** 2`` is 0), so a ``k`` or an ``n_components`` of that type
silently changes the result. Both are rejected here, by name, before anything
runs: NumPy integers must have 64 bits. So are bools where a real
number is expected (``alpha=True`` ran as 1.0). NumPy floats of any width
are accepted, as scikit-learn accepts them; the solvers take them as Python
floats.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, ParamSpec, TypeVar

import numpy as np
from sklearn import get_config
from sklearn.base import _fit_context
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    validate_parameter_constraints,
)
from sklearn.utils._param_validation import validate_params as _sklearn_validate_params

__all__ = [
    "Satisfies",
    "StrictParamsMixin",
    "check_holdable",
    "count_from",
    "fit_context",
    "is_array_like",
    "is_count",
    "validate_hyperparameters",
    "validate_params",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

# The smallest range an integer hyper-parameter's type must hold: products of
# sizes (rows x atoms, k x batch, atoms squared) must not wrap around. At 32
# bits, n_components=np.int32(65536) squared to 0 and the matching-pursuit SAE
# skipped its size guard, asking for 17 GB on 64 rows of 4 features.
_MIN_INTEGER_BITS = 64

# torch holds sizes and counts in 64-bit integers, and tqdm a total in a C
# ssize_t: past this, an iteration count or a number of atoms failed inside
# them ("Overflow when unpacking long long", "int too large to convert to C
# ssize_t"), naming no parameter.
_LARGEST_COUNT = 2**63 - 1


def validate_params(
    parameter_constraints: dict[str, list], *, prefer_skip_nested_validation: bool
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Scikit-learn's ``validate_params``, with integers and reals checked strictly.

    Bools and narrow NumPy integers are refused where a number is expected,
    as :func:`validate_hyperparameters` refuses them (``threshold=True`` ran
    as 1.0). Typed to keep the decorated signature: scikit-learn ships no
    type information, so its decorator would hide the public metrics'
    signatures from type checkers.

    Examples
    --------
    >>> from numbers import Real
    >>> from sklearn.utils._param_validation import Interval
    >>> from skdict._params import validate_params
    >>> @validate_params(
    ...     {"x": [Interval(Real, 0, None, closed="left")]},
    ...     prefer_skip_nested_validation=True,
    ... )
    ... def root(x: float) -> float:
    ...     return x**0.5
    >>> root(4.0)
    2.0
    >>> root(True)
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'x' parameter of \
root must be a float; got True, a bool.
    """

    def decorator(function: Callable[_P, _R]) -> Callable[_P, _R]:
        checked = _sklearn_validate_params(
            parameter_constraints,
            prefer_skip_nested_validation=prefer_skip_nested_validation,
        )(function)
        signature = inspect.signature(function)

        @functools.wraps(function)
        def strictly_checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not get_config()["skip_parameter_validation"]:
                try:
                    bound = signature.bind(*args, **kwargs)
                except TypeError:
                    pass  # the call itself raises it, as without the check
                else:
                    # scikit-learn's constraints first, as validate_hyperparameters
                    # orders them: 2**64 for a threshold in [0, 1] is out of range,
                    # whatever its type.
                    validate_parameter_constraints(
                        parameter_constraints,
                        bound.arguments,
                        caller_name=function.__qualname__,
                    )
                    _refuse_loose_numbers(
                        parameter_constraints, bound.arguments, function.__qualname__
                    )
            return checked(*args, **kwargs)

        return strictly_checked

    return decorator


def fit_context(
    *, prefer_skip_nested_validation: bool
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Scikit-learn's ``_fit_context``, typed to keep the decorated signature.

    It checks the estimator's parameters before ``fit`` runs; typed here so
    that checkers see ``fit`` return the estimator rather than ``Any``.

    Examples
    --------
    >>> from sklearn.base import BaseEstimator
    >>> from skdict._params import fit_context
    >>> class Counter(BaseEstimator):
    ...     _parameter_constraints = {"start": [int]}
    ...
    ...     def __init__(self, start=0):
    ...         self.start = start
    ...
    ...     @fit_context(prefer_skip_nested_validation=True)
    ...     def fit(self, X, y=None):
    ...         self.count_ = self.start + len(X)
    ...         return self
    >>> Counter(start=1).fit([[0], [1]]).count_
    3
    """
    return _fit_context(prefer_skip_nested_validation=prefer_skip_nested_validation)


def validate_hyperparameters(
    constraints: dict[str, list], params: dict[str, Any], caller_name: str
) -> None:
    """Check ``params`` against sklearn ``constraints``, integers strictly.

    Parameters
    ----------
    constraints : dict
        Parameter name -> list of sklearn constraints.
    params : dict
        Parameter name -> value.
    caller_name : str
        The estimator or function named in the error.

    Raises
    ------
    InvalidParameterError
        If a value breaks its constraints, or is a bool or a NumPy integer
        narrower than 64 bits where a number is expected.

    Examples
    --------
    >>> from numbers import Integral, Real
    >>> from sklearn.utils._param_validation import Interval
    >>> from skdict._params import validate_hyperparameters
    >>> constraints = {"k": [Interval(Integral, 1, None, closed="left")]}
    >>> validate_hyperparameters(constraints, {"k": 3}, "SparseAutoencoder")
    >>> validate_hyperparameters(constraints, {"k": True}, "SparseAutoencoder")
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'k' parameter of \
SparseAutoencoder must be an int; got True, a bool.
    """
    validate_parameter_constraints(constraints, params, caller_name=caller_name)
    _refuse_loose_numbers(constraints, params, caller_name)


def _refuse_loose_numbers(
    constraints: dict[str, list], params: dict[str, Any], caller_name: str
) -> None:
    """Refuse bools, and narrow NumPy integers, where a number is expected."""
    for name, value in params.items():
        expected = _expected_number(constraints.get(name, ()))
        if expected is None:
            continue
        if isinstance(value, (bool, np.bool_)):
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller_name} must be "
                f"{'an int' if expected is Integral else 'a float'}; "
                f"got {value!r}, a bool."
            )
        if (
            expected is Real
            and isinstance(value, Integral)
            and not isinstance(value, np.integer)
            and not -(2**63) <= int(value) < 2**63
        ):
            # torch takes a Python int as a 64-bit one: a real parameter of
            # 2**64 failed inside it ("int too big to convert"). Integer
            # parameters bound their own sizes (a batch_size of 2**70 means
            # every row; make_compositional names the array it would make).
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller_name} must be a float; got "
                f"{value!r}, an int beyond 64 bits. Pass float(...)."
            )
        if isinstance(value, np.integer) and np.iinfo(value).bits < _MIN_INTEGER_BITS:
            kind = "an int" if expected is Integral else "a float, an int"
            raise InvalidParameterError(
                f"The {name!r} parameter of {caller_name} must be {kind} or a "
                f"NumPy integer of at least {_MIN_INTEGER_BITS} bits, whose "
                f"arithmetic does not wrap around; got {value!r}. Pass "
                f"{'int' if expected is Integral else 'float'}(...)."
            )


class Satisfies(HasMethods):
    """A parameter constraint: objects for which ``predicate`` is true.

    scikit-learn's constraint types are closed, and ``HasMethods`` is the one
    that describes an object by what it has; ``description`` names it in the
    error. A predicate that raises ``AttributeError`` or ``TypeError`` (a
    class passed for an instance, an object without scikit-learn's tags)
    counts as false, so that the error names the parameter.

    Examples
    --------
    >>> from skdict._params import Satisfies, validate_hyperparameters
    >>> even = Satisfies(lambda n: n % 2 == 0, "an even number")
    >>> validate_hyperparameters({"n": [even]}, {"n": 3}, "f")
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'n' parameter of \
f must be an even number. Got 3 instead.
    """

    def __init__(self, predicate: Any, description: str):
        super().__init__([])
        self.predicate, self.description = predicate, description

    def is_satisfied_by(self, val: Any) -> bool:
        try:
            return bool(self.predicate(val))
        except (AttributeError, TypeError):
            return False

    def __str__(self) -> str:
        return self.description


def count_from(low: int) -> Interval:
    """Return the constraint of a count: an integer from ``low`` to what torch holds.

    Examples
    --------
    >>> from skdict._params import count_from, validate_hyperparameters
    >>> constraints = {"max_iter": [count_from(1)]}
    >>> validate_hyperparameters(constraints, {"max_iter": 2**64}, "f")
    Traceback (most recent call last):
    ...
    sklearn.utils._param_validation.InvalidParameterError: The 'max_iter' parameter \
of f must be an int in the range [1, 9223372036854775807]. Got 18446744073709551616 \
instead.
    """
    return Interval(Integral, low, _LARGEST_COUNT, closed="both")


def check_holdable(n_values: int, dtype: Any, what: str) -> None:
    """Raise a ``ValueError`` if ``n_values`` of ``dtype`` are more than an array holds.

    ``dtype`` is a NumPy or a torch dtype.

    NumPy and torch count an array's bytes in a signed 64-bit integer; past
    that they failed with "Maximum allowed dimension exceeded" or "Storage
    size calculation overflowed", naming no parameter. ``what`` opens the
    message and names the parameters that set the size.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict._params import check_holdable
    >>> check_holdable(10**20, np.float64, "n_samples=10**20 rows make")
    Traceback (most recent call last):
    ...
    ValueError: n_samples=10**20 rows make 1e+20 float64 values, more than an array \
can hold.
    """
    torch_name = str(dtype).removeprefix("torch.")  # torch.float32 -> float32
    dtype = np.dtype(torch_name if torch_name != str(dtype) else dtype)
    if n_values > _LARGEST_COUNT // dtype.itemsize:
        raise ValueError(
            f"{what} {n_values:.3g} {dtype.name} values, more than an array can hold."
        )


def is_count(value: Any) -> bool:
    """Return True for an integer that is not a bool: a likely ``n_components``."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def is_array_like(value: Any) -> bool:
    """Return True for a list, a tuple, or an array of one or more dimensions."""
    return isinstance(value, (list, tuple)) or bool(getattr(value, "ndim", 0))


def _expected_number(constraints: list) -> type | None:
    """Integral or Real where an ``Interval`` constraint expects one, else None."""
    types = {c.type for c in constraints or () if isinstance(c, Interval)}
    if Integral in types:
        return Integral
    return Real if Real in types else None


class StrictParamsMixin:
    """Mixin: ``_validate_params`` checks ``_parameter_constraints``, integers strictly.

    For estimators it replaces scikit-learn's ``BaseEstimator._validate_params``
    by :func:`validate_hyperparameters` on the same constraints; splitters
    such as :class:`~skdict.model_selection.CompositionalSplit` use it too.
    ``_slips`` names likely mix-ups of one parameter for another, each as
    ``(parameter, test of its value, message)``: a value that passes the test
    raises the message (formatted with ``value`` and ``shape``) instead of
    the constraint's generic one.
    """

    _slips: tuple[tuple[str, Callable[[Any], bool], str], ...] = ()

    def _validate_params(self) -> None:
        # Also called outside fit (partial_fit's later calls, transform):
        # the global switch that skips fit's validation skips these too.
        if get_config()["skip_parameter_validation"]:
            return
        for name, slipped, message in self._slips:
            value = getattr(self, name)
            if slipped(value):
                raise InvalidParameterError(
                    message.format(value=value, shape=np.shape(value))
                )
        validate_hyperparameters(
            self._parameter_constraints,
            {name: getattr(self, name) for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )
