"""OracleDictionary: the ground-truth dictionary as an estimator.

The dictionary is given, or estimated by least squares from known codes
(:func:`estimate_dictionary`), and rows are coded on it with FISTA.
"""

from __future__ import annotations

from numbers import Integral, Real
from types import SimpleNamespace
from typing import Any, NamedTuple, Self

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    TransformerMixin,
)
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    _get_feature_names,
    check_is_fitted,
)

from ._concepts import ConceptNamesOutMixin, _check_concept_names, concept_names_of
from ._dictionary import (
    PROVIDER_CONSTRAINT,
    _listed,
    check_atom_norms,
    is_same_given,
    record_given,
    resolve_dictionary,
    sparse_atoms_slip,
    store_in_batch_type,
    take_providers_tags,
)
from ._fista_coder import FISTACoder
from ._fitting import forget_fit_on_failure, restored_on_failure
from ._learning._updates import lstsq_dictionary
from ._params import StrictParamsMixin, count_from, fit_context, is_count
from ._tensor import (
    DEVICE_CONSTRAINT,
    DetachedCloneMixin,
    accumulation_dtype,
    as_tensor,
    ieee_float32_products,
    ignores_autocast,
    is_sparse,
    outside_inference_mode,
    portable_state,
    rows_per_block,
    scipy_if_pandas_sparse,
    sparse_as_tensor,
    sparse_tensor_as_scipy,
    to_fitted,
    to_numpy,
    to_output,
    validate_codes,
    validate_input,
)
from ._typing import ArrayLike, Bool, Device, Float, Int
from ._warnings import warn

__all__ = ["OracleDictionary", "estimate_dictionary"]


def _largest_magnitude(A: Any) -> float:
    """``max |A|`` of a tensor or SciPy sparse array without a copy of ``|A|``."""
    if min(A.shape) == 0:
        return 0.0
    return max(float(A.max()), -float(A.min()))


def _sparse_code_statistics(
    codes: Any, X: torch.Tensor, code_scale: float, x_scale: float, work: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Z^T Z`` and ``Z^T X`` of scaled sparse codes, in O(nnz) products.

    ``codes`` is a SciPy CSR array. Densified chunks would cost
    ``n_samples * n_latents**2`` multiply-adds for ``Z^T Z`` (1,000 latents,
    10,000 samples: 0.57 s against 0.04 s for the sparse products).
    """
    scaled = codes.astype(np.float64) / code_scale
    gram = torch.as_tensor((scaled.T @ scaled).toarray(), device="cpu")
    cross = X.new_zeros(codes.shape[1], X.shape[1], dtype=work)
    chunk = rows_per_block(X.shape[1])
    for start in range(0, X.shape[0], chunk):
        Z = sparse_as_tensor(
            scaled[start : start + chunk], device=X.device, dtype=work, name="y"
        )
        X_chunk = X[start : start + chunk].to(work) / x_scale
        cross += torch.sparse.mm(Z.t(), X_chunk)
    return gram.to(device=X.device, dtype=work), cross


def estimate_dictionary(X: torch.Tensor, codes: Any) -> torch.Tensor:
    """Least-squares atoms from known codes: ``argmin_D ||X - codes @ D||_F``.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        Data.
    codes : array-like, torch.Tensor or sparse matrix of shape \
(n_samples, n_latents) or (n_samples,)
        Ground-truth codes; the statistics of sparse matrices (SciPy, or
        sparse tensors) are formed by sparse products, those of dense codes a
        chunk of rows at a time.

    Returns
    -------
    torch.Tensor of shape (n_latents, n_features)
        The atoms, on ``X``'s device and in its dtype (computed in float64
        where the device has it), not normalised: noiseless ``X = codes @ D``
        gives back ``D`` exactly up to rounding.

    Raises
    ------
    ValueError
        If ``codes`` does not have one row per sample, or a latent is zero in
        every sample (its atom is not determined by the data).

    Warns
    -----
    UserWarning
        If the columns of ``codes`` are linearly dependent, e.g. two latents
        always active together with proportional values: their atoms are not
        determined by the data, and the minimum-norm solution is returned.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skdict._oracle import estimate_dictionary
    >>> D = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    >>> Z = np.array([[1.0, 0.0], [0.5, 2.0], [0.0, 1.0]])
    >>> D_hat = estimate_dictionary(torch.from_numpy(Z @ D), Z)
    >>> D_hat.shape
    torch.Size([2, 3])

    Noiseless data give the atoms back up to rounding:

    >>> torch.allclose(D_hat, torch.from_numpy(D), rtol=0, atol=1e-12)
    True
    """
    return atoms_from_statistics(code_statistics(X, codes), X.dtype)


class CodeStatistics(NamedTuple):
    """``Z^T Z`` and ``Z^T X`` of codes and data scaled to a largest entry of 1.

    ``gram`` holds ``(Z / code_scale)^T (Z / code_scale)`` and ``cross``
    ``(Z / code_scale)^T (X / x_scale)``, in float64 where the device has it.
    """

    gram: torch.Tensor
    cross: torch.Tensor
    code_scale: float
    x_scale: float

    def merged(self, other: CodeStatistics) -> CodeStatistics:
        """Return the statistics of both sets of rows, at the larger scales.

        Each side is rescaled by ratios of at most 1, so sums of batches of
        any units stay as far from float64's limits as one batch's.
        """
        code_scale = max(self.code_scale, other.code_scale)
        x_scale = max(self.x_scale, other.x_scale)

        def rescaled(stats: CodeStatistics) -> tuple[torch.Tensor, torch.Tensor]:
            c, x = stats.code_scale / code_scale, stats.x_scale / x_scale
            device = self.gram.device
            return (
                stats.gram.to(device) * (c * c),
                stats.cross.to(device) * (c * x),
            )

        (g1, c1), (g2, c2) = rescaled(self), rescaled(other)
        return CodeStatistics(g1 + g2, c1 + c2, code_scale, x_scale)


def _warn_if_class_labels(y: Any) -> None:
    """Warn that a 1-D ``y`` of more than two whole numbers looks like class labels.

    A classifier pipeline hands its labels to every step, and a 1-D ``y`` is
    one latent's codes: labels 0-19 made one atom, scaled by the class index,
    with a plausible score after it and no warning.
    """
    if sp.issparse(y):
        return
    ndim = getattr(y, "ndim", None)
    if ndim is None:  # a list, or another object NumPy reads
        try:
            y = np.asarray(y)
        except (TypeError, ValueError):
            return  # ragged rows: refused with the codes, naming y
        ndim = y.ndim
    if ndim != 1:
        return
    values = to_numpy(y, name="y")
    if values.dtype.kind not in "iuf" or not np.isfinite(values).all():
        return  # NaN and inf are refused with the codes, naming y
    if type_of_target(values) != "multiclass":
        return
    warn(
        f"y is 1-D and holds {len(np.unique(values))} whole numbers, like class "
        "labels; a 1-D y is the codes of one latent, so one atom is estimated. "
        "For an atom per class, one-hot encode the labels first (e.g. "
        "OneHotEncoder().fit_transform(labels.reshape(-1, 1))).",
        UserWarning,
    )


def code_statistics(X: torch.Tensor, codes: Any) -> CodeStatistics:
    """Return the least-squares statistics of ``X`` on known ``codes``.

    See :func:`estimate_dictionary` for ``codes`` and the errors raised.
    """
    n_samples = X.shape[0]
    # The normal equations square the codes' condition number: in float32 a
    # well-posed problem (1,000 latents, k=5, 5,000 samples, cond(Z) = 752)
    # looked singular, and 12 atoms came back wrong (cosine down to -0.17).
    # They are formed and solved in float64 where the device has it, a chunk
    # of rows at a time (a float64 copy of X would double its memory), and
    # the atoms returned in X's dtype.
    work = accumulation_dtype(X.device, X.dtype)

    # Codes keep their own precision until a chunk is cast to ``work``.
    code_dtype = None if work == torch.float64 else work

    def dense(block, column=True):
        block = block.toarray() if sp.issparse(block) else block
        T = as_tensor(block, device=X.device, dtype=code_dtype, name="y", ndim=None)
        return T.reshape(-1, 1) if column and T.ndim == 1 else T

    codes = scipy_if_pandas_sparse(codes)
    if is_sparse(codes) and not sp.issparse(codes):
        codes = sparse_tensor_as_scipy(codes, name="y")
    if sp.issparse(codes):
        if codes.dtype.kind not in "biuf":
            raise ValueError(
                f"y must hold real codes; got a sparse matrix of dtype {codes.dtype}."
            )
        # A copy: SciPy sums duplicate entries and sorts indices in place (on
        # max(), for one), which would rewrite the caller's arrays.
        codes = sp.csr_array(codes, copy=True)
        given = shape = codes.shape
    else:
        codes = dense(codes, column=False)
        given = tuple(codes.shape)  # the error names the shape as given
        codes = codes.reshape(-1, 1) if codes.ndim == 1 else codes
        shape = tuple(codes.shape)
    if len(shape) != 2 or shape[0] != n_samples:
        raise ValueError(
            f"y must hold the codes of the {n_samples} samples of X, shape "
            f"(n_samples, n_latents); got shape {given}."
        )
    if shape[1] == 0:
        raise ValueError(
            f"y must hold at least one latent (column); got shape {given}, "
            "which would give an oracle of zero atoms."
        )
    # The normal equations are formed for codes and X scaled to a largest
    # entry of 1 (scalars, undone on the atoms, which leave the least-squares
    # and minimum-norm solutions as they are): their entries then stay far
    # from float64's limits whatever the data's units (codes of scale 1e-155
    # or 1e154 gave NaN atoms or a failed eigendecomposition).
    if sp.issparse(codes) and not np.isfinite(codes.data).all():
        raise ValueError("y contains NaN or infinity.")
    code_scale = _largest_magnitude(codes) or 1.0
    x_scale = _largest_magnitude(X) or 1.0
    if sp.issparse(codes):
        gram, cross = _sparse_code_statistics(codes, X, code_scale, x_scale, work)
    else:
        chunk = rows_per_block(max(shape[1], X.shape[1]))
        gram = X.new_zeros(shape[1], shape[1], dtype=work)
        cross = X.new_zeros(shape[1], X.shape[1], dtype=work)
        for start in range(0, n_samples, chunk):
            Z = dense(codes[start : start + chunk]).to(work) / code_scale
            gram += Z.T @ Z
            cross += Z.T @ (X[start : start + chunk].to(work) / x_scale)
    return CodeStatistics(gram, cross, code_scale, x_scale)


def atoms_from_statistics(
    stats: CodeStatistics, dtype: torch.dtype, *, silent_ok: bool = False
) -> torch.Tensor:
    """Return the least-squares atoms of :func:`code_statistics`, in ``dtype``.

    See :func:`estimate_dictionary` for the errors raised and the warning.
    With ``silent_ok``, latents zero in every sample get zero atoms instead
    of an error (a stream's batches so far may not hold every latent).
    """
    gram, cross = stats.gram, stats.cross
    code_scale, x_scale = stats.code_scale, stats.x_scale
    silent = torch.nonzero(gram.diagonal() == 0).flatten()
    if silent.numel() and not silent_ok:
        raise ValueError(
            f"Latents {_listed(silent)} are zero in every sample of y, so their atoms "
            "cannot be estimated from X; drop those columns or add samples where "
            "they are active."
        )
    atoms = lstsq_dictionary(
        gram,
        cross,
        singular_warning=(
            "The columns of y are linearly dependent (for example, two latents "
            "always active together in proportion), so X does not determine "
            "their atoms; the minimum-norm least-squares atoms are returned."
        ),
    )
    # X / x_scale = (Z / code_scale) (D code_scale / x_scale).
    exact = atoms * (x_scale / code_scale)
    atoms = exact.to(dtype)
    # Codes of 1e-150 for float32 data of order 1 ask for atoms of 1e150
    # (stored as inf), codes of 1e150 for atoms of 1e-150 (stored as 0).
    lost = (exact != 0).any(dim=1) & (atoms == 0).all(dim=1)
    if not bool(torch.isfinite(atoms).all()) or bool(lost.any()):
        relation = "small" if not bool(torch.isfinite(atoms).all()) else "large"
        advice = " or pass X in float64" if dtype != torch.float64 else ""
        raise ValueError(
            f"The least-squares atoms of X on y leave {dtype}'s range: y's "
            f"entries (up to {code_scale:.3g}) are too {relation} for X's (up "
            f"to {x_scale:.3g}). Rescale y{advice}."
        )
    return atoms


# The most values of Z^T Z and Z^T X an oracle keeps after fit (32 MiB in
# float64, about 2,000 latents), for partial_fit to continue from.
_KEPT_STATISTICS = 2**22


def _string_columns(y: Any) -> np.ndarray | None:
    """Return the column names of ``y`` (a DataFrame) when all are strings.

    A Series named by a string (the 1-D ``y`` of one concept) gives its name.
    Column names mixing strings and other types are refused, as scikit-learn
    refuses them in ``X`` (they were dropped silently).
    """
    if getattr(y, "ndim", None) == 1:
        name = getattr(y, "name", None)
        return np.asarray([name], dtype=object) if isinstance(name, str) else None
    try:
        return _get_feature_names(y)
    except TypeError as error:
        # scikit-learn's message says to convert X.columns, which is not
        # where the names are.
        kinds = sorted({type(name).__name__ for name in y.columns})
        raise TypeError(
            f"The column names of y mix types ({kinds}); they name the concepts "
            "(get_feature_names_out), so all must be strings: convert them, e.g. "
            "y.columns = y.columns.astype(str)."
        ) from error


class OracleDictionary(
    StrictParamsMixin,
    ConceptNamesOutMixin,
    TransformerMixin,
    DetachedCloneMixin,
    BaseEstimator,
):
    """The ground-truth dictionary as an estimator, with FISTA codes.

    The ceiling of the paper's comparison (Barin Pacela et al., 2026, arXiv
    2603.28744): per-sample sparse inference with the right dictionary. With
    ``dictionary`` given, :meth:`fit` only checks it against ``X``; without
    one, :meth:`fit` estimates it by least squares from ground-truth codes
    ``y``, ``argmin_D ||X - y D||_F`` -- an oracle wherever concept labels
    exist, such as known concept directions in real activations.
    :meth:`transform` codes with the FISTA solver of :class:`FISTACoder`
    (``positive=True`` by default here, for concept codes), and
    ``components_`` exposes the atoms, so the oracle is also a dictionary
    provider: ``FISTACoder(dictionary=OracleDictionary(D))`` or
    ``SparseAutoencoder(decoder=OracleDictionary(D), freeze_decoder=True)``.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor, estimator or object, default=None
        The true atoms, shape ``(n_latents, n_features)``, or a dictionary
        provider (see :class:`FISTACoder`). None estimates them from ``y`` in
        :meth:`fit`.
    alpha : float, default=0.1
        Weight of the L1 penalty of the codes; positive (see
        :class:`~skdict.FISTACoder`).
    positive : bool, default=True
        Constrain the codes to be non-negative (the paper's setting).
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample.
    tol : float in [0, 1), default=1e-6
        Relative duality gap at which a sample's code is accepted.
    batch_size : int, default=None
        Number of samples coded at once; None picks it as
        :class:`~skdict.FISTACoder` does.
    device : str or torch.device, default="auto"
        Where to compute; ``"auto"`` uses a tensor input's own device, else
        CUDA when available.
    verbose : int, default=0
        Show progress bars when positive.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_latents, n_features)
        The atoms, in the array type and precision of the data given to
        :meth:`fit` (float32 data: float32 atoms, from a float64 dictionary
        too, so that coding float64 data later uses the rounded atoms). A
        :meth:`partial_fit` stream keeps the precision of its first batch
        and hands the atoms out in the array type of its latest.
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        The provider's intercept, zero for atoms given as an array or estimated
        from ``y``.
    dictionary_ : estimator, object or None
        The fitted provider, when ``dictionary`` is an estimator (a frozen
        one as given); the object itself when it exposes ``components_``
        without being an estimator; None otherwise.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.
    concept_names_ : ndarray of shape (n_latents,) or None
        The string column names of ``y`` (a DataFrame of concept labels),
        which name the codes (:meth:`get_feature_names_out`, and the columns
        of ``set_output(transform="pandas")``); with a given ``dictionary``,
        the concept names of its atoms when it is a fitted oracle or a coder
        that keeps an oracle's atoms; None otherwise. Column names mixing
        strings and other types are refused, as in ``X``.

    See Also
    --------
    FISTACoder : FISTA codes on any dictionary, or on one it learns.

    Examples
    --------
    >>> from skdict import OracleDictionary
    >>> from skdict.datasets import make_compositional
    >>> data = make_compositional(n_latents=20, n_active=3, n_samples=400,
    ...                           random_state=0)
    >>> oracle = OracleDictionary().fit(data.X_train, data.Z_train)
    >>> bool(abs(oracle.components_ - data.dictionary).max() < 1e-8)
    True
    >>> oracle.transform(data.X_ood).shape
    (200, 20)
    """

    _slips = (
        (
            "dictionary",
            is_count,
            "The 'dictionary' parameter of OracleDictionary takes atoms (an "
            "array, or an estimator exposing components_); got {value!r}, a "
            "number. Without atoms, the oracle estimates one per column of y: "
            "OracleDictionary().fit(X, y).",
        ),
        sparse_atoms_slip("dictionary", "OracleDictionary"),
    )

    _parameter_constraints: dict = {
        "dictionary": PROVIDER_CONSTRAINT,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "positive": ["boolean"],
        "max_iter": [count_from(1)],
        # At tol >= 1 zero codes always pass: their gap is at most their
        # objective.
        "tol": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": DEVICE_CONSTRAINT,
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        dictionary: ArrayLike = None,
        *,
        alpha: Float = 0.1,
        positive: Bool = True,
        max_iter: Int = 1000,
        tol: Float = 1e-6,
        batch_size: Int | None = None,
        device: Device = "auto",
        verbose: Int | Bool = 0,
    ) -> None:
        self.dictionary = dictionary
        self.alpha = alpha
        self.positive = positive
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.device = device
        self.verbose = verbose

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Check the given dictionary against ``X``, or estimate it from ``y``.

        An invalid hyper-parameter is refused before the fit starts, and a
        fit interrupted with Ctrl-C (``KeyboardInterrupt``), both leave the
        estimator as it was before the call; a fit that raises any other
        error leaves it unfitted.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            Ground-truth codes, required when ``dictionary`` is None (e.g.
            ``Z_train`` of :func:`~skdict.datasets.make_compositional`); a 1-D
            ``y`` is the codes of one latent. Class labels are not codes:
            one-hot encode them first (e.g.
            ``OneHotEncoder().fit_transform(labels.reshape(-1, 1))``, a sparse
            matrix), which makes each class's atom the mean of its samples.
            With a given dictionary, passed to the provider's ``fit``.

        Returns
        -------
        self : OracleDictionary
            The fitted oracle.
        """
        with forget_fit_on_failure(self):
            X_t, origin = validate_input(self, X, reset=True, device=self.device)
            if self.dictionary is None:
                if y is None:
                    raise ValueError(
                        "OracleDictionary without a dictionary requires y to be "
                        "passed, but the target y is None: y holds the ground-truth "
                        "codes, shape (n_samples, n_latents), from which the atoms "
                        "are estimated."
                    )
                components = self._estimate(X_t, y, previous=None, streaming=False)
                intercept = X_t.new_zeros(X_t.shape[1])
                self.dictionary_ = None
                self.concept_names_ = _string_columns(y)
            else:
                self._statistics, self._estimated = None, False
                self._dictionary_param = record_given(self.dictionary)
                resolved = resolve_dictionary(
                    self.dictionary,
                    X,
                    y,
                    device=X_t.device,
                    dtype=X_t.dtype,
                    n_features=self.n_features_in_,
                )
                components, intercept = resolved.components, resolved.intercept
                self.dictionary_ = resolved.estimator
                self.concept_names_ = concept_names_of(resolved.estimator)
            self.components_ = to_fitted(components, origin)
            self.intercept_ = to_fitted(intercept, origin)
            return self

    def _estimate(self, X_t, y, previous, streaming):
        """Least-squares atoms from the statistics of ``X_t`` on ``y`` (and earlier)."""
        _warn_if_class_labels(y)
        # In IEEE float32 for float32 data, whatever the process's matmul
        # precision (TF32 keeps 10 bits of each input).
        with ieee_float32_products():
            stats = code_statistics(X_t, y)
            if previous is not None:
                if stats.gram.shape != previous.gram.shape:
                    raise ValueError(
                        f"y has {stats.gram.shape[0]} latents, but the oracle "
                        f"estimates {previous.gram.shape[0]} from the batches so "
                        "far; call fit, or partial_fit on a clone, to start again."
                    )
                stats = previous.merged(stats)
            components = atoms_from_statistics(stats, X_t.dtype, silent_ok=streaming)
        silent = torch.nonzero(stats.gram.diagonal() == 0).flatten()
        if silent.numel():
            warn(
                f"Latents {_listed(silent)} have been zero in every batch passed "
                "to partial_fit so far, so their atoms are not determined yet: "
                "they stay zero, and transform refuses them, until a batch "
                "holds them.",
                UserWarning,
            )
        # Checked now, not at the first transform: least-squares atoms scale
        # as X over y (y = 1e200 codes gave atoms of norm 1e-200).
        determined = torch.nonzero(stats.gram.diagonal() > 0).flatten()
        check_atom_norms(
            components[determined],
            name="The dictionary estimated from X and y",
            remedy="the atoms scale as X over y: rescale y (the codes) or X",
        )
        # Z^T Z and Z^T X, n_latents x (n_latents + n_features) float64 values,
        # for partial_fit to continue from: always in a stream, and after fit
        # up to 32 MiB (a fit on 10,000 latents would otherwise keep 800 MB).
        kept = stats.gram.numel() + stats.cross.numel() <= _KEPT_STATISTICS
        self._statistics = stats if streaming or kept else None
        self._estimated = True
        return components

    @ignores_autocast
    @outside_inference_mode
    def partial_fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Update the atoms estimated from ``y`` with one batch, or check ``X``.

        Without a dictionary, the least-squares statistics ``Z^T Z`` and
        ``Z^T X`` (in float64, ``n_latents x (n_latents + n_features)``
        values, kept on the estimator) gather the batches, so the atoms of
        data larger than memory are those :meth:`fit` would estimate from
        all of them at once, to rounding; a first call starts them, and a
        call after :meth:`fit` continues the fit's (which :meth:`fit` keeps
        while ``n_latents * (n_latents + n_features)`` is at most 2**22
        values, 32 MiB: about 1,700 latents at 768 features; beyond, start
        the stream with :meth:`partial_fit`, which keeps them whatever their
        size). Each call solves the ``n_latents`` system again (0.3 s at
        2,000 latents), so stream batches of many rows. A ``y`` with named
        columns must name them as the first batch did. Latents not yet active in any
        batch have zero atoms, with a warning, until a batch holds them;
        :meth:`transform` refuses them until then. With a given dictionary
        there is nothing to update: the first call is :meth:`fit`, later calls
        check ``X``. Changing between a given dictionary and none, or the
        dictionary itself, between calls is an error (call :meth:`fit` to
        start again; an array or provider changed in place is not always
        detected). A call that raises leaves the oracle as it was.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A batch of data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            The batch's ground-truth codes, required without a dictionary
            (as in :meth:`fit`); with one, passed to the provider's ``fit`` on
            the first call.

        Returns
        -------
        self : OracleDictionary
            The updated oracle.
        """
        first = not hasattr(self, "components_")
        self._validate_params()
        if first and self.dictionary is not None:
            return self.fit(X, y)
        # Oracles pickled by earlier versions hold no record of how they were
        # fitted: the parameter says.
        estimated = getattr(self, "_estimated", self.dictionary is None)
        if not first and (self.dictionary is None) != estimated:
            raise ValueError(
                "partial_fit cannot switch between a given dictionary and one "
                "estimated from y: this oracle was fitted with "
                f"{'atoms estimated from y' if estimated else 'a given dictionary'}"
                f", but dictionary is now "
                f"{'None' if self.dictionary is None else 'set'}. Call fit, or "
                "partial_fit on a clone, to start again."
            )
        if self.dictionary is not None:
            record = getattr(self, "_dictionary_param", None)  # None: pickled before
            if record is not None and not is_same_given(self.dictionary, record):
                raise ValueError(
                    "partial_fit continues the dictionary given at its first call; "
                    "a new dictionary needs a new fit: call fit, or partial_fit "
                    "on a clone."
                )
            X_t, origin = validate_input(self, X, reset=False, device=self.device)
            store_in_batch_type(self, X_t, origin)
            return self
        with forget_fit_on_failure(self) if first else restored_on_failure(self):
            X_t, origin = validate_input(self, X, reset=first, device=self.device)
            if y is None:
                raise ValueError(
                    "OracleDictionary without a dictionary requires y to be "
                    "passed, but the target y is None: y holds the batch's "
                    "ground-truth codes, shape (n_samples, n_latents)."
                )
            previous = None if first else getattr(self, "_statistics", None)
            if not first and previous is None:
                why = (
                    f"for {self.components_.shape[0]} latents they take more "
                    f"than {_KEPT_STATISTICS} values"
                    if hasattr(self, "_statistics")
                    else "it was fitted by an earlier skdict version"
                )
                raise ValueError(
                    f"fit kept no statistics to continue from: {why}. Start the "
                    "stream with partial_fit on a clone (partial_fit keeps them "
                    "whatever their size)."
                )
            names = _string_columns(y)
            if not first:
                _check_concept_names(self.concept_names_, names)
                # The atoms keep the stream's first precision, as FISTACoder's
                # and SparseAutoencoder's streams do: one float32 batch
                # rounded float64 atoms, and every later transform with them.
                dtype = as_tensor(self.components_, device=X_t.device).dtype
                X_t = as_tensor(X_t, device=X_t.device, dtype=dtype, name="X")
                origin = origin._replace(dtype=dtype)
            components = self._estimate(X_t, y, previous, streaming=True)
            if first:
                self.dictionary_, self.concept_names_ = None, names
            # Both in the latest batch's array type.
            self.intercept_ = to_fitted(X_t.new_zeros(X_t.shape[1]), origin)
            self.components_ = to_fitted(components, origin)
        return self

    def _check_determined(self) -> None:
        stats = getattr(self, "_statistics", None)
        if stats is None:
            return
        silent = torch.nonzero(stats.gram.diagonal() == 0).flatten()
        if silent.numel():
            raise ValueError(
                f"The atoms of latents {_listed(silent)} are not determined: they "
                "have been zero in every batch passed to partial_fit so far. "
                "Pass batches where they are active first."
            )

    def _coder(self):
        # FISTACoder on this fitted oracle: the one home of FISTA coding.
        # The atoms as weights that name no columns: X's were checked by the
        # oracle itself, and the coder's check of a frozen oracle repeated its
        # feature-name warnings.
        weights = SimpleNamespace(
            components_=self.components_, intercept_=self.intercept_
        )
        # Its output as skdict returns it, whatever the global
        # set_config(transform_output=...): the oracle's own output is
        # wrapped once, by its own transform (a DataFrame from the coder
        # crashed to_output).
        return FISTACoder(
            weights,
            alpha=self.alpha,
            positive=self.positive,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            device=self.device,
            verbose=self.verbose,
        ).set_output(transform="default")

    def fit_transform(self, X: ArrayLike, y: ArrayLike = None) -> Any:
        """Fit the oracle (see :meth:`fit`) and return the codes of ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : array-like, torch.Tensor or sparse matrix of shape (n_samples, \
n_latents) or (n_samples,), default=None
            Ground-truth codes, required when ``dictionary`` is None; with a
            given dictionary, passed to the provider's ``fit``.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        return self.fit(X, y).transform(X)

    @ignores_autocast
    def transform(self, X: ArrayLike) -> Any:
        """Sparse-code ``X`` on the oracle atoms with FISTA.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code; ``intercept_`` is subtracted first.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_latents)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        check_is_fitted(self)
        # Coding reads alpha, positive, max_iter, tol, ... as they are now.
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="transform")
        self._check_determined()
        # Converted once: a dask array or a float16 memmap converted again by
        # the coder was computed or copied twice.
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(self._coder().fit_transform(X_t), origin, self)

    @ignores_autocast
    def inverse_transform(self, X: ArrayLike) -> Any:
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_latents)
            Codes.

        Returns
        -------
        X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)
            In the array type, device and dtype of the codes (float64
            for integer and NumPy float16 codes).
        """
        self._check_determined()
        return reconstruct(self, X)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def _names_of_codes(self) -> np.ndarray | None:
        return getattr(self, "concept_names_", None)

    @ignores_autocast
    def score(self, X: ArrayLike, y: ArrayLike = None) -> float:
        """Negative mean squared reconstruction error of ``X`` (greater is better).

        ``-mean((X - inverse_transform(transform(X))) ** 2)`` over all entries,
        as :meth:`skdict.FISTACoder.score`, so that model selection without a
        ``scoring`` compares the oracle with learned dictionaries.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            Minus the mean squared error; 0 for a perfect reconstruction.
        """
        check_is_fitted(self)
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="score")
        self._check_determined()
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        # FISTACoder's own score, in the compute precision (a reconstruction
        # returned in float16 first would round it). Its partial_fit resolves
        # this oracle without coding, so X is coded once, and converted once.
        return self._coder().partial_fit(X_t).score(X_t)

    def __getstate__(self):
        return portable_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        take_providers_tags(tags, self.dictionary)
        # Without a dictionary, fit needs the ground-truth codes; y holds one
        # column of codes per latent.
        tags.target_tags.required |= self.dictionary is None
        tags.target_tags.multi_output = True
        return tags


def reconstruct(estimator: Any, codes: Any) -> Any:
    """Return ``codes @ components_ + intercept_`` of a fitted provider.

    :class:`OracleDictionary`'s ``inverse_transform``: the codes' array type,
    device and dtype decide the output's, and computations run where the
    estimator's ``device`` parameter says.

    Parameters
    ----------
    estimator : fitted estimator
        Exposes ``components_``, ``intercept_`` and a ``device`` parameter.
    codes : array-like or torch.Tensor of shape (n_samples, n_components)
        Codes.

    Returns
    -------
    X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import OracleDictionary
    >>> from skdict._oracle import reconstruct
    >>> oracle = OracleDictionary(np.eye(2)).fit(np.ones((3, 2)))
    >>> reconstruct(oracle, np.array([[1.0, 2.0]]))
    array([[1., 2.]])
    """
    Z, origin = validate_codes(estimator, codes)
    D = as_tensor(estimator.components_, device=Z.device, dtype=Z.dtype)
    b = as_tensor(estimator.intercept_, device=Z.device, dtype=Z.dtype, ndim=1)
    return to_output((Z @ D).add_(b), origin)
