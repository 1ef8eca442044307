"""Dictionary providers: what a coder takes as its dictionary, and their checks.

A *dictionary provider* is anything exposing ``components_`` of shape
``(n_components, n_features)`` and, optionally, ``intercept_`` of shape
``(n_features,)`` -- the offset the model reconstructs around (an SAE's decoder
bias). scikit-learn's PCA family calls that offset ``mean_``; it is used when
``intercept_`` is absent. A provider may be given as

* an array or tensor: the atoms themselves, with a zero intercept;
* an estimator: cloned and fitted on ``(X, y)`` in the coder's ``fit``;
* a fitted estimator wrapped in :class:`sklearn.frozen.FrozenEstimator`: used
  as it is, never refitted.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import get_config
from sklearn.base import (
    clone,
)
from sklearn.frozen import FrozenEstimator
from sklearn.utils import check_random_state, get_tags
from sklearn.utils.validation import (
    _check_feature_names,
    _get_feature_names,
    _is_fitted,
    check_is_fitted,
)

from ._params import Satisfies
from ._tensor import (
    ArrayOrigin,
    as_tensor,
    in_namespace_of,
    is_estimator,
    is_tensor,
    to_fitted,
    to_numpy,
)
from ._warnings import warn


class ResolvedDictionary(NamedTuple):
    """A provider turned into tensors.

    Attributes
    ----------
    components : torch.Tensor of shape (n_components, n_features)
    intercept : torch.Tensor of shape (n_features,)
        The provider's ``intercept_`` (or ``mean_``), zero when it has none.
    estimator : estimator or None
        The fitted provider (the clone, or the frozen estimator) when the
        dictionary came from an estimator.
    has_intercept : bool
        Whether the provider gave the intercept.
    """

    components: torch.Tensor
    intercept: torch.Tensor
    estimator: Any
    has_intercept: bool


def is_provider(obj: Any) -> bool:
    """Return True when ``obj`` provides atoms as opposed to being them.

    A provider is an estimator (fitted on the data, or frozen), or any other
    object exposing its atoms as ``components_`` (and optionally its offset
    as ``intercept_``), e.g. the weights of a model trained elsewhere.
    """
    return is_estimator(obj) or exposes_components(obj)


def exposes_components(obj: Any) -> bool:
    """Return True when ``obj`` holds atoms as ``components_``.

    Not a class: ``SparseAutoencoder`` itself (the parentheses forgotten) has
    ``components_`` as a property, and failed later in a float conversion of
    it.
    """
    return not isinstance(obj, type) and hasattr(obj, "components_")


def fits_on_data(obj: Any) -> bool:
    """Return True when resolving ``obj`` fits a clone of it on the data.

    A frozen estimator, and an object that is not an estimator, are used as
    they are; arrays need no fitting.
    """
    return is_estimator(obj) and not isinstance(obj, FrozenEstimator)


def fit_provider(estimator: Any, X: Any, y: Any = None, name: str | None = None) -> Any:
    """Fit a clone of the provider ``estimator`` on ``X`` and ``y``.

    When the fit fails and ``estimator`` was fitted already, the error gets a
    note naming the parameter ``name`` and :class:`~sklearn.frozen.FrozenEstimator`:
    a fitted oracle passed as it is failed with "requires y", which said
    nothing of the clone being fitted again.

    Under array-API dispatch, an estimator that does not declare array-API
    support (``DictionaryLearning``, ``NMF``, a ``Pipeline``) is fitted on
    NumPy copies of array-API arrays and tensors; handed them, it fails deep
    inside scikit-learn. Without dispatch, so is every estimator but skdict's
    own: scikit-learn reads its input through NumPy, which refuses GPU
    tensors and tensors that require grad. Its fitted atoms are converted as
    any array is, and :func:`provider_input` gives its ``transform`` NumPy
    copies too.
    """
    if _needs_host_arrays(estimator):
        X, y = _host_array(X), _host_array(y)
    try:
        return clone(estimator).fit(X, y)
    except Exception as error:
        if name is not None and _is_fitted(estimator):
            error.add_note(
                f"{name}, a fitted {type(estimator).__name__}, is cloned and "
                "fitted again on X; to use its fitted atoms as they are, pass "
                "it wrapped in sklearn.frozen.FrozenEstimator."
            )
        raise


def check_frozen_fitted(frozen: FrozenEstimator, name: str) -> None:
    """Refuse a frozen estimator that is not fitted, naming the parameter."""
    check_is_fitted(
        frozen.estimator,
        msg=(
            f"{name}, a FrozenEstimator of {type(frozen.estimator).__name__}, is "
            "not fitted: fit the estimator before freezing it, or pass it "
            "unfrozen to be fitted on X."
        ),
    )


def provider_input(estimator: Any, X: Any) -> Any:
    """Return ``X`` as the fitted provider ``estimator``'s ``transform`` takes it.

    NumPy copies for an estimator without array-API support under dispatch
    (see :func:`fit_provider`); otherwise ``X`` in the namespace and device
    the estimator was fitted in (:func:`~skdict._tensor.in_namespace_of`).
    """
    if _needs_host_arrays(estimator):
        return _host_array(X)
    return in_namespace_of(X, estimator)


def _needs_host_arrays(estimator: Any) -> bool:
    if not get_config()["array_api_dispatch"]:
        return not _is_skdict_estimator(estimator)
    tags = _tags_of(estimator)
    return not (tags is not None and tags.array_api_support)


def _is_skdict_estimator(estimator: Any) -> bool:
    # skdict's estimators (and subclasses of them) take tensors on any
    # device without dispatch.
    while isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    return any(
        cls.__module__.partition(".")[0] == "skdict" for cls in type(estimator).__mro__
    )


def check_provider_features(estimator: Any, X_user: Any, name: str) -> None:
    """Check ``X``'s column names against those a pre-fitted provider saw.

    A provider fitted elsewhere (frozen, or not an estimator) holds its atoms
    in the column order of its own training data; X in another order would
    be coded on atoms read in the wrong order, and the coder would then
    record X's order as its own. The same error and warnings as scikit-learn
    gives when such a provider's own ``transform`` is called with X.
    """
    while isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    if not is_estimator(estimator) and not hasattr(estimator, "feature_names_in_"):
        # Weights from elsewhere (SimpleNamespace(components_=W)) say nothing
        # of their columns: nothing to check, and no warning that they were
        # "fitted without feature names".
        return
    try:
        _check_feature_names(estimator, X_user, reset=False)
    except ValueError as error:
        raise ValueError(
            f"X's columns differ from those {name} ({type(estimator).__name__}) "
            f"was fitted on. {error}"
        ) from error


def check_atom_columns(atoms: Any, X_user: Any, name: str) -> None:
    """Check the column names of atoms given as a data frame against ``X``'s.

    Atoms are read by position: a frame of atoms whose columns are X's in
    another order was read in the wrong order without a word (MCC 0.97 ->
    0.57 with X's columns reversed), where a fitted provider's recorded
    column names are checked (:func:`check_provider_features`). Names that
    are not X's at all (a pipeline's ``num__a`` for ``a``) say nothing of the
    order, and only warn; frames of another width are left to the atoms'
    dimension check.
    """
    try:
        atom_names = _get_feature_names(atoms)
        x_names = _get_feature_names(X_user)
    except TypeError:  # names mixing strings and numbers: no names to go by
        return
    if atom_names is None or (x_names is not None and len(x_names) != len(atom_names)):
        return
    if x_names is None:
        warn(
            f"X has no feature names, but the atoms of {name} have column names: "
            "X's columns are read in the atoms' order.",
            UserWarning,
        )
    elif set(x_names) == set(atom_names) and (x_names != atom_names).any():
        raise ValueError(
            f"The columns of {name}'s atoms are X's in another order (atoms: "
            f"{atom_names[:5].tolist()}..., X: {x_names[:5].tolist()}...); atoms are "
            f"read by position. Reorder them as X's, e.g. {name}[list(X.columns)]."
        )
    elif (x_names != atom_names).any():
        warn(
            f"The columns of {name}'s atoms are not named as X's (atoms: "
            f"{atom_names[:5].tolist()}..., X: {x_names[:5].tolist()}...); X's "
            "columns are read in the atoms' order.",
            UserWarning,
        )


def take_providers_tags(tags: Any, *params: Any) -> None:
    """Make ``tags`` ask of ``X`` and ``y`` what the providers among ``params`` do.

    A skdict estimator fits its unfitted providers on ``(X, y)``, so it
    requires ``y`` whenever one of them does (an oracle without atoms), takes
    ``y`` with several columns when one of them does (an oracle's codes, one
    column per latent), and takes only non-negative ``X`` when one of them
    does (``FISTACoder(NMF(3))``, which said it took any ``X``).
    """
    fitted_here = [
        provider_tags
        for param in params
        if fits_on_data(param) and (provider_tags := _tags_of(param)) is not None
    ]
    tags.target_tags.required = any(t.target_tags.required for t in fitted_here)
    tags.target_tags.multi_output = any(t.target_tags.multi_output for t in fitted_here)
    tags.input_tags.positive_only = tags.input_tags.positive_only or any(
        t.input_tags.positive_only for t in fitted_here
    )


def _tags_of(estimator: Any) -> Any:
    try:
        return get_tags(estimator)
    except AttributeError:  # an estimator predating scikit-learn's tags
        return None


def _host_array(A: Any) -> Any:
    # Strided tensors and array-API arrays only: lists, data frames and sparse
    # matrices are what any scikit-learn estimator takes.
    if (is_tensor(A) and A.layout == torch.strided) or (
        hasattr(A, "__array_namespace__") and not isinstance(A, np.ndarray)
    ):
        return to_numpy(A)
    return A


class GivenRecord(NamedTuple):
    """A given dictionary as a fit saw it, for later calls to compare against."""

    #: The parameter's value.
    dictionary: Any
    #: A snapshot of its ``get_params(deep=True)`` when it is an estimator.
    params: dict | None


def record_given(dictionary: Any) -> GivenRecord:
    """Record the ``dictionary`` (or ``decoder``) parameter a fit started from."""
    params = dictionary.get_params(deep=True) if is_estimator(dictionary) else None
    return GivenRecord(dictionary, params)


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    # Arrays compare by value, NaN equal to NaN: joblib stores every NumPy
    # array on its own, so a model saved with joblib and loaded again holds
    # two equal arrays where it held one array twice (and pickle two NaN
    # floats where it held one).
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if is_tensor(a) or is_tensor(b):
        return (
            is_tensor(a)
            and is_tensor(b)
            and (a.shape, a.dtype, a.device, a.layout)
            == (b.shape, b.dtype, b.device, b.layout)
            and a.layout == torch.strided
            and _equal_tensors(a, b)
        )
    if is_estimator(a) or is_estimator(b):
        return False  # another estimator object, whatever its parameters
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # e.g. other array types
        return False


def _equal_tensors(a: torch.Tensor, b: torch.Tensor) -> bool:
    if torch.equal(a, b):
        return True
    if not a.is_floating_point():
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def is_same_given(dictionary: Any, record: GivenRecord) -> bool:
    """Return True when ``dictionary`` is still the one ``record`` holds.

    An estimator must be the same object (a refitted one of equal parameters
    has other atoms) with the same parameters, since ``set_params`` with a
    nested key (``dictionary__alpha=...``) changes it in place. An array
    compares by value.
    """
    if not _same_value(dictionary, record.dictionary):
        return False
    if record.params is None:
        return True
    params = dictionary.get_params(deep=True)
    return params.keys() == record.params.keys() and all(
        _same_value(params[name], value) for name, value in record.params.items()
    )


#: Parameter constraint: an object exposing ``components_``.
EXPOSES_COMPONENTS = Satisfies(exposes_components, "an object exposing 'components_'")
#: An estimator, as providers and ``init`` take it: ``fit`` to be fitted, and
#: ``get_params`` for ``clone`` (an object with ``fit`` alone was taken for an
#: array, and failed with "float() argument must be ... not 'MyDict'").
ESTIMATOR = Satisfies(
    is_estimator, "an estimator (with 'fit', and 'get_params' for clone)"
)
#: An estimator whose ``transform`` gives codes (``init`` with given atoms).
CODING_ESTIMATOR = Satisfies(
    lambda val: is_estimator(val) and hasattr(val, "transform"),
    "an estimator with 'transform' (and 'fit' and 'get_params')",
)
#: Parameter constraint of a dictionary provider (``dictionary``, ``decoder``).
PROVIDER_CONSTRAINT = ["array-like", ESTIMATOR, EXPOSES_COMPONENTS, None]


def sparse_atoms_slip(name: str, owner: str) -> tuple[str, Any, str]:
    """Return a ``_slips`` entry that refuses SciPy sparse atoms by name.

    The generic message of the constraint (see
    :class:`~skdict._params.StrictParamsMixin`) said they were not array-like.
    """
    return (
        name,
        sp.issparse,
        f"The {name!r} parameter of {owner} takes dense atoms; got a SciPy "
        "sparse matrix of shape {shape}. Pass " + f"{name}.toarray().",
    )


def check_dictionary(
    components: torch.Tensor, *, n_features: int | None = None, name: str = "dictionary"
) -> None:
    """Raise a ``ValueError`` naming ``name`` unless the atoms are usable.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Atoms as rows.
    n_features : int, default=None
        Expected number of features (that of ``X``), when known.
    name : str, default="dictionary"
        The parameter the atoms came from, for error messages.
    """
    if components.shape[0] == 0:
        raise ValueError(
            f"{name} has zero atoms (shape {tuple(components.shape)}); a dictionary "
            "needs at least one row."
        )
    if n_features is not None and components.shape[1] != n_features:
        raise ValueError(
            f"{name} has atoms of dimension {components.shape[1]}, but X has "
            f"{n_features} features; the dictionary must have shape "
            f"(n_components, {n_features})."
            + (
                " (Without a dictionary, init is the dictionary that learning "
                "starts from; codes warm-start coding on a given dictionary.)"
                if name == "init"
                else ""
            )
        )
    # A row is zero when its largest and its smallest entries are: two
    # reductions, where abs().amax() first copied every atom (7 against 50 ms
    # on 8,192 atoms of 1,024 float32 features, one thread), in every fit and
    # in each of OracleDictionary's transforms.
    zero = torch.nonzero(
        (components.amax(dim=1) == 0) & (components.amin(dim=1) == 0)
    ).flatten()
    if zero.numel():
        raise ValueError(
            f"{name} has zero-norm atoms at rows {_listed(zero)}; every atom must be "
            "non-zero."
        )
    check_atom_norms(components, name=name)


def _listed(indices: torch.Tensor, limit: int = 10) -> str:
    """Format ``indices`` for a message: the first ``limit``, and how many more."""
    more = indices.numel() - limit
    return f"{indices[:limit].tolist()}" + (f" (and {more} more)" if more > 0 else "")


def check_n_components(n_components: int | None, n_atoms: int, source: str) -> int:
    """Return ``n_atoms``, refusing an ``n_components`` that disagrees with it.

    A conflicting width is a mistake to report, not a setting to ignore;
    ``source`` names where the atoms came from ("the dictionary", "init").
    """
    if n_components not in (None, n_atoms):
        raise ValueError(
            f"n_components={n_components} does not match the {n_atoms} atoms of "
            f"{source}; leave n_components=None to take it from {source}."
        )
    return n_atoms


def check_atom_norms(
    components: torch.Tensor,
    *,
    name: str = "dictionary",
    remedy: str = "rescale the dictionary, e.g. to unit-norm rows",
) -> None:
    """Raise a ``ValueError`` unless every atom's norm is positive and finite.

    Non-zero atoms whose norm or squared norm under- or overflows in the
    compute precision (norms below about 1e-19 or above 1e19 in float32,
    1e-154 and 1e154 in float64, or float64 atoms cast to float32 beyond its
    range) would divide by zero or infinity in the normalisation, the Gram
    matrix and the step size.

    Parameters
    ----------
    components : torch.Tensor of shape (n_components, n_features)
        Atoms as rows, in the precision they are computed in.
    name : str, default="dictionary"
        The parameter the atoms came from, for error messages.
    remedy : str
        What the message advises.
    """
    norms = torch.linalg.vector_norm(components, dim=1)
    # Squared norms enter the step size 1 / ||D||_2^2: they must be normal
    # numbers too (float32 atoms of norm 1e-20 gave NaN codes).
    squares = norms**2
    usable = (squares >= torch.finfo(norms.dtype).tiny) & torch.isfinite(squares)
    unusable = torch.nonzero(~usable).flatten()
    if unusable.numel():
        dtype = str(components.dtype).removeprefix("torch.")
        # The norm itself, scaled by the largest entry: torch's norm of an
        # atom of entries 1e-200 underflows to 0 although float64 holds it.
        row = components[unusable[0]]
        norm = float(row.abs().amax())
        if math.isfinite(norm):
            norm = _max_row_norm(row.unsqueeze(0))
        what = (
            f"is {norm:g} in {dtype}"
            if norm in (0.0, math.inf)
            else f"({norm:.3g}) squares outside the normal range of {dtype}"
        )
        raise ValueError(
            f"{name} has atoms at rows {_listed(unusable)} whose norm {what}; {remedy}."
        )


def resolve_dictionary(
    dictionary: Any,
    X_user: Any = None,
    y: Any = None,
    *,
    device: torch.device,
    dtype: torch.dtype,
    n_features: int | None = None,
    name: str = "dictionary",
) -> ResolvedDictionary:
    """Turn an array, estimator or frozen estimator into atoms and an intercept.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor or estimator
        The provider.
    X_user, y : array-like, default=None
        The data an unfitted estimator is fitted on, in the caller's own type.
    device, dtype :
        Where and in which precision the returned tensors live.
    n_features : int, default=None
        Expected atom dimension.
    name : str, default="dictionary"
        The parameter name, for error messages.

    Returns
    -------
    ResolvedDictionary
    """
    estimator = None
    if is_provider(dictionary):
        if not fits_on_data(dictionary):
            estimator = dictionary
            if isinstance(dictionary, FrozenEstimator):
                check_frozen_fitted(dictionary, name)
            if X_user is not None:
                check_provider_features(estimator, X_user, name)
        else:
            if X_user is None:
                raise ValueError(
                    f"{name} is an unfitted estimator; it is fitted on X in fit()."
                )
            estimator = fit_provider(dictionary, X_user, y, name)
        if not hasattr(estimator, "components_"):
            raise TypeError(
                f"{name} must expose 'components_' (n_components, n_features) after "
                f"fitting; {type(dictionary).__name__} does not."
            )
        components = as_tensor(
            estimator.components_, device=device, name=f"{name}.components_"
        )
        offset = getattr(estimator, "intercept_", getattr(estimator, "mean_", None))
    else:
        if X_user is not None:
            check_atom_columns(dictionary, X_user, name)
        components = as_tensor(dictionary, device=device, name=name)
        offset = None
    # Checked in their own precision first, so that atoms a cast to ``dtype``
    # under- or overflows are named as such, not as zero or infinite atoms.
    check_dictionary(components, n_features=n_features, name=name)
    # Fitted estimators keep what they were fitted with: without a copy, the
    # atoms could share memory with the caller's array (a decoder that goes
    # on training, an estimator refitted later) and change under them.
    components = components.to(dtype=dtype, copy=True)
    check_atom_norms(components, name=name)
    if offset is None:
        intercept = torch.zeros(components.shape[1], device=device, dtype=dtype)
    else:
        intercept = as_tensor(
            offset, device=device, dtype=dtype, name=f"{name}.intercept_", ndim=1
        ).clone()
        if intercept.shape[0] != components.shape[1]:
            raise ValueError(
                f"{name}.intercept_ has {intercept.shape[0]} entries, but the atoms "
                f"have dimension {components.shape[1]}."
            )
    return ResolvedDictionary(components, intercept, estimator, offset is not None)


def store_in_batch_type(estimator: Any, X_t: torch.Tensor, origin: ArrayOrigin) -> None:
    """Hand a given dictionary's fitted atoms out in a stream's latest array type.

    A :meth:`partial_fit` stream over a given dictionary has nothing to
    update, but its ``components_`` and ``intercept_`` follow the array type
    of the latest batch (``origin``, of ``X_t``), as learned atoms do, in
    their own precision.
    """
    components = as_tensor(estimator.components_, device=X_t.device)
    intercept = as_tensor(estimator.intercept_, device=X_t.device, ndim=1)
    origin = origin._replace(dtype=components.dtype)
    estimator.components_ = to_fitted(components, origin)
    estimator.intercept_ = to_fitted(intercept, origin)


def torch_generator(random_state: Any) -> torch.Generator:
    """Return a CPU torch generator seeded from a scikit-learn ``random_state``.

    Examples
    --------
    >>> import torch
    >>> from skdict._dictionary import torch_generator
    >>> a = torch.rand(2, generator=torch_generator(0))
    >>> b = torch.rand(2, generator=torch_generator(0))
    >>> bool((a == b).all())
    True
    """
    seed = check_random_state(random_state).randint(2**31 - 1)
    return torch.Generator().manual_seed(int(seed))


def _max_row_norm(X: torch.Tensor) -> float:
    # Scaled first, so that the norms of rows near the dtype's range are finite.
    scale = float(X.abs().amax()) if X.numel() else 0.0
    if scale == 0.0:
        return 0.0
    return scale * float(torch.linalg.vector_norm(X / scale, dim=1).max())
