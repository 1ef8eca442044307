"""The compositional out-of-distribution benchmark of Barin Pacela et al. (2026).

Data follow the sparse linear model ``X = Z @ D`` (arXiv 2603.28744):
``D`` holds ``n_latents`` unit-norm Gaussian atoms, and every row of ``Z`` has
exactly ``n_active`` non-zero Uniform(0, 1) latents. Latent 0 is the *probed
concept*. The remaining latents are split into an ID pool and an OOD pool; in
training latent 0 only ever co-occurs with ID-pool latents, while the OOD test
set pairs it with OOD-pool latents -- latents seen in training, but never
together with latent 0 (given enough training samples per latent; see
:func:`make_compositional`). A model that has learned the concepts, rather than
their training combinations, codes the OOD set as well as the ID set.

Codes are generated without a per-sample Python loop: the supports of all rows
are drawn at once (:func:`_sample_subsets`), so a million samples over ten
thousand latents take seconds and, with ``sparse_codes=True``, memory in
proportion to the non-zeros.
"""

from __future__ import annotations

import inspect
import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval

from .._params import check_holdable, validate_hyperparameters
from .._tensor import rows_per_block
from .._typing import Bool, Float, Int, Seed
from .._warnings import warn

__all__ = ["make_compositional"]


def _sample_subsets(
    rng: np.random.Generator, n_rows: int, pool_size: int, k: int
) -> np.ndarray:
    """Draw one uniform ``k``-subset of ``range(pool_size)`` per row.

    Two exact samplers, whichever costs less per row:

    * Floyd's algorithm (Bentley & Floyd, "A sample of brilliance", CACM 1987),
      vectorised over rows: step ``j = pool_size - k, ..., pool_size - 1`` draws
      ``t`` in ``[0, j]`` and keeps ``t``, or ``j`` when ``t`` was already
      taken. Each step compares with the ``< k`` picks so far: ``O(k**2)``.
    * the ``k`` smallest of ``pool_size`` i.i.d. random keys: ``O(pool_size)``,
      better when ``k`` is large compared with the pool.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_rows : int
        Number of subsets.
    pool_size : int
        Size of the pool; must be at least ``k``.
    k : int
        Size of each subset.

    Returns
    -------
    ndarray of shape (n_rows, k) and dtype int32 (int64 for pools beyond int32)
        Each row sorted increasingly, entries distinct.
    """
    # int32 where it holds the pool keeps the drawn stream of every size that
    # fits (rng.integers draws differently per dtype).
    dtype = _index_dtype(pool_size)
    out = np.empty((n_rows, k), dtype=dtype)
    if k == 0 or n_rows == 0:
        return out
    if k * (k - 1) // 2 <= pool_size:
        for i, j in enumerate(range(pool_size - k, pool_size)):
            t = rng.integers(0, j + 1, size=n_rows, dtype=dtype)
            taken = (out[:, :i] == t[:, None]).any(axis=1)
            out[:, i] = np.where(taken, j, t)
    else:
        # Bounds the temporary (rows, pool) key matrix to 32 MiB of float64.
        block = rows_per_block(pool_size)
        for start in range(0, n_rows, block):
            keys = rng.random((min(block, n_rows - start), pool_size))
            out[start : start + block] = np.argpartition(keys, k - 1, axis=1)[:, :k]
    out.sort(axis=1)
    return out


def _index_dtype(size: int) -> type[np.signedinteger]:
    """Return the narrowest of int32 and int64 holding every index below ``size``."""
    return np.int32 if size <= np.iinfo(np.int32).max + 1 else np.int64


def _sample_codes(
    rng: np.random.Generator,
    n_rows: int,
    *,
    n_latents: int,
    n_active: int,
    n_ood: int,
    ood: bool,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Draw codes of one split as CSR and their labels ``Z[:, 0] > 0.5``.

    ID rows (the recipe's settings A and B, drawn with probability 1/2 each):
    latent 0 plus ``n_active - 1`` latents of the ID pool ``1 .. n_latents -
    n_ood - 1``, or ``n_active`` latents from all of ``1 .. n_latents - 1``.
    OOD rows (setting C): latent 0 plus ``n_active - 1`` latents of the OOD pool
    ``n_latents - n_ood .. n_latents - 1``.
    """
    support = np.empty((n_rows, n_active), dtype=_index_dtype(n_latents))
    if ood:
        with_probe = np.ones(n_rows, dtype=bool)
        first, pool = n_latents - n_ood, n_ood
    else:
        with_probe = rng.random(n_rows) < 0.5
        first, pool = 1, n_latents - n_ood - 1
        without = ~with_probe
        support[without] = 1 + _sample_subsets(
            rng, int(without.sum()), n_latents - 1, n_active
        ).astype(support.dtype, copy=False)
    support[with_probe, 0] = 0
    # Offsets added in the support's dtype: a pool that fits int32 can still
    # end beyond it (the ID draw above at n_latents = 2**31 + 1 too).
    support[with_probe, 1:] = first + _sample_subsets(
        rng, int(with_probe.sum()), pool, n_active - 1
    ).astype(support.dtype, copy=False)
    # 1 - U[0, 1) lies in (0, 1]: no drawn value is exactly zero, so every row
    # keeps exactly n_active stored non-zeros.
    values = 1.0 - rng.random((n_rows, n_active))
    labels = (with_probe & (values[:, 0] > 0.5)).astype(np.int64)
    nnz = n_rows * n_active
    indptr = np.arange(0, nnz + 1, n_active, dtype=_index_dtype(nnz + 1))
    codes = sp.csr_matrix(
        (values.ravel(), support.ravel(), indptr), shape=(n_rows, n_latents)
    )
    # Supports are sorted and duplicate-free by construction.
    codes.has_sorted_indices = True
    return codes, labels


def default_n_features(n_latents: Int, n_active: Int) -> int:
    """Observation dimension of the benchmark when none is given.

    The compressed-sensing bound ``max(k + 1, ceil(2 k ln(n_latents / k)))``
    with ``k = n_active``: Gaussian measurements of that many dimensions
    recover ``k``-sparse codes (Candès & Tao, 2006; the constant 2 is the
    paper's).

    Parameters
    ----------
    n_latents : int
        Number of latents.
    n_active : int
        Non-zero latents per sample.

    Returns
    -------
    int
        The number of features.

    Raises
    ------
    ValueError
        If ``n_latents`` or ``n_active`` is not an integer in the range
        :func:`make_compositional` accepts, or ``n_active >= n_latents``.

    Examples
    --------
    >>> from skdict.datasets import default_n_features
    >>> default_n_features(100, 10)
    47
    """
    validate_hyperparameters(
        {name: _PARAMETER_CONSTRAINTS[name] for name in ("n_latents", "n_active")},
        {"n_latents": n_latents, "n_active": n_active},
        caller_name="default_n_features",
    )
    _check_active(n_latents, n_active)
    bound = math.ceil(2 * n_active * math.log(n_latents / n_active))
    return int(max(n_active + 1, bound))


def _check_active(n_latents: int, n_active: int) -> None:
    if n_active >= n_latents:
        raise ValueError(
            f"n_active={n_active} must be smaller than n_latents={n_latents}: "
            "samples without latent 0 draw n_active latents from the other "
            f"{n_latents - 1}."
        )


def _check_recipe(n_latents: int, n_active: int, n_features: int, n_ood: int) -> None:
    _check_active(n_latents, n_active)
    if n_ood > n_latents - 1:
        raise ValueError(
            f"n_ood_latents={n_ood} must be at most n_latents - 1 = "
            f"{n_latents - 1} (latent 0 belongs to neither pool)."
        )
    n_id = n_latents - n_ood - 1
    for pool, size, span in (
        ("ID", n_id, f"1..{n_latents - n_ood - 1}"),
        ("OOD", n_ood, f"{n_latents - n_ood}..{n_latents - 1}"),
    ):
        if size < n_active - 1:
            raise ValueError(
                f"n_active={n_active} needs at least {n_active - 1} latents in the "
                f"{pool} pool to go with latent 0, but with n_latents={n_latents} "
                f"and n_ood_latents={n_ood} it holds {size} (latents {span}); "
                "lower n_active, change n_ood_latents or raise n_latents."
            )
    if n_features < n_active:
        raise ValueError(
            f"n_features={n_features} is smaller than n_active={n_active}: "
            "n_active atoms in fewer dimensions are linearly dependent, so even "
            "the true support would not determine the codes. The "
            f"compressed-sensing default for this setting is "
            f"{default_n_features(n_latents, n_active)}."
        )


_PARAMETER_CONSTRAINTS = {
    "n_latents": [Interval(Integral, 2, None, closed="left")],
    "n_active": [Interval(Integral, 1, None, closed="left")],
    "n_features": [Interval(Integral, 1, None, closed="left"), None],
    "n_samples": [Interval(Integral, 2, None, closed="left")],
    "n_ood_latents": [Interval(Integral, 1, None, closed="left"), None],
    "noise": [Interval(Real, 0, None, closed="left")],
    "sparse_codes": ["boolean"],
    "random_state": ["random_state"],
}


def _shown(count: int) -> str:
    # A count from --values 1e300 has 301 digits.
    return str(count) if count < 10**12 else f"{count:.3g}"


def _resolve_recipe(
    n_latents: int,
    n_active: int,
    n_features: int | None,
    n_ood_latents: int | None,
    n_samples: int,
    sparse_codes: bool,
) -> tuple[int, int]:
    """Return ``(n_features, n_ood)`` with defaults filled in, or raise."""
    n_ood = n_latents // 2 if n_ood_latents is None else n_ood_latents
    if n_features is None:
        n_features = default_n_features(n_latents, n_active)
    _check_recipe(n_latents, n_active, n_features, n_ood)
    # Python integers: the products cannot wrap around. Past the bound NumPy
    # failed halfway through a run.
    check_holdable(
        n_latents * n_features,
        np.float64,
        f"n_latents={_shown(n_latents)} atoms in n_features={_shown(n_features)} "
        "dimensions make a dictionary of",
    )
    # The data, and the codes (dense, or n_active values a row).
    width = max(n_features, n_active if sparse_codes else n_latents)
    check_holdable(
        n_samples * width,
        np.float64,
        f"n_samples={_shown(n_samples)} rows of {width} values make",
    )
    return n_features, n_ood


def check_compositional_params(**params: Any) -> None:
    """Raise the error :func:`make_compositional` would raise for ``params``.

    Nothing is generated, so a sweep can check all of its settings before the
    first one runs.

    Parameters
    ----------
    **params
        Keyword arguments of :func:`make_compositional`.

    Raises
    ------
    TypeError
        For an unknown keyword or a value of the wrong type.
    ValueError
        For a value out of range or an impossible recipe.
    """
    bound = inspect.signature(make_compositional).bind(**params)
    bound.apply_defaults()
    validate_hyperparameters(
        _PARAMETER_CONSTRAINTS, bound.arguments, caller_name="make_compositional"
    )
    args = bound.arguments
    _resolve_recipe(
        args["n_latents"],
        args["n_active"],
        args["n_features"],
        args["n_ood_latents"],
        args["n_samples"],
        args["sparse_codes"],
    )


def make_compositional(
    n_latents: Int = 100,
    n_active: Int = 10,
    *,
    n_features: Int | None = None,
    n_samples: Int = 5000,
    n_ood_latents: Int | None = None,
    noise: Float = 0.0,
    sparse_codes: Bool = False,
    random_state: Seed = None,
) -> Bunch:
    """Generate the compositional OOD benchmark of Barin Pacela et al. (2026).

    Samples are ``X = Z @ dictionary`` (plus optional Gaussian noise), with
    ``dictionary`` made of ``n_latents`` unit-norm atoms with i.i.d. N(0, 1)
    entries, and every row of ``Z`` holding exactly ``n_active`` non-zero
    latents, each Uniform(0, 1). Latent 0 is the probed concept; the label is
    ``Z[:, 0] > 0.5``. With ``n_ood = n_ood_latents`` (default
    ``n_latents // 2``), the *ID pool* is latents ``1 .. n_latents - n_ood - 1``
    and the *OOD pool* latents ``n_latents - n_ood .. n_latents - 1``:

    * an ID sample (train and validation) holds, with probability 1/2,
      latent 0 plus ``n_active - 1`` latents of the ID pool, and otherwise
      ``n_active`` latents drawn from all of ``1 .. n_latents - 1``;
    * an OOD sample holds latent 0 plus ``n_active - 1`` latents of the OOD
      pool.

    OOD-pool latents therefore appear in training, but never together with
    latent 0: the OOD set tests whether a model composes known concepts in
    unseen combinations. With few training samples per latent some are never
    drawn (about ``exp(-n_train * n_active / (2 * (n_latents - 1)))`` of
    them: 8 % at ``n_latents=5000, n_active=10, n_samples=5000``), and OOD
    samples holding those also test unseen concepts. Read more in arXiv
    2603.28744.

    Parameters
    ----------
    n_latents : int, default=100
        Number of latents (dictionary atoms), at least 2.
    n_active : int, default=10
        Number ``k`` of non-zero latents in every sample; smaller than
        ``n_latents``, and at most one more than the size of each pool. With
        ``n_active=1`` every OOD sample holds latent 0 alone, as half the
        training samples do: the OOD set then holds no unseen combination
        (a warning says so).
    n_features : int, default=None
        Dimension of the observations, at least ``n_active``. None uses the
        compressed-sensing bound ``max(k + 1, ceil(2 k ln(n_latents / k)))``
        (:func:`default_n_features`).
    n_samples : int, default=5000
        Number of ID samples, split into ``n_samples // 2`` training and
        ``n_samples - n_samples // 2`` validation samples. ``n_samples // 2``
        OOD samples are drawn as well.
    n_ood_latents : int, default=None
        Size of the OOD pool, between 1 and ``n_latents - 1``; None means
        ``n_latents // 2``.
    noise : float, default=0.0
        Standard deviation of isotropic Gaussian noise added to every ``X``
        (the codes and labels are unchanged). The paper's benchmark is
        noiseless.
    sparse_codes : bool, default=False
        Return the codes as :class:`scipy.sparse.csr_matrix` instead of dense
        arrays. Memory then grows with ``n_samples * n_active`` rather than
        ``n_samples * n_latents``.
    random_state : int, RandomState instance or None, default=None
        Seed for the dictionary, the codes and the noise. Pass an int for
        reproducible output across calls. The seed draws one 31-bit seed of a
        NumPy ``Generator``, so two ints can give the same data (4963 and
        25569 do; a sweep over 10,000 seeds holds such a pair with
        probability 0.02). At a given seed the
        codes and labels do not depend on ``noise`` or ``sparse_codes``, but
        they do on every size, ``n_features`` included: the dictionary is
        drawn first, from the same stream.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        X_train : ndarray of shape (n_samples // 2, n_features)
            Training observations, ``Z_train @ dictionary`` (+ noise).
        Z_train : ndarray or csr_matrix of shape (n_samples // 2, n_latents)
            Ground-truth codes of the training observations.
        y_train : ndarray of shape (n_samples // 2,)
            Training labels, 1 where ``Z_train[:, 0] > 0.5`` and 0 elsewhere.
        X_val : ndarray of shape (n_samples - n_samples // 2, n_features)
            Validation observations, drawn like the training ones.
        Z_val : ndarray or csr_matrix of shape (n_samples - n_samples // 2, \
n_latents)
            Ground-truth codes of the validation observations.
        y_val : ndarray of shape (n_samples - n_samples // 2,)
            Validation labels.
        X_ood : ndarray of shape (n_samples // 2, n_features)
            Out-of-distribution observations: latent 0 with OOD-pool latents.
        Z_ood : ndarray or csr_matrix of shape (n_samples // 2, n_latents)
            Ground-truth codes of the OOD observations.
        y_ood : ndarray of shape (n_samples // 2,)
            OOD labels.
        dictionary : ndarray of shape (n_latents, n_features)
            The atoms as unit-norm rows.
        id_latents : ndarray of shape (n_latents - n_ood - 1,)
            The ID pool: the latents that co-occur with latent 0 in training.
        ood_latents : ndarray of shape (n_ood,)
            The OOD pool: the latents that co-occur with latent 0 only in the
            OOD set.
        n_active : int
            The number of non-zero latents per sample (the true ``k``, e.g.
            for a TopK autoencoder).

    Raises
    ------
    ValueError
        If ``n_active >= n_latents``, if ``n_ood_latents > n_latents - 1``, if
        a pool is too small to supply the ``n_active - 1`` latents that go
        with latent 0, if ``n_features < n_active``, or if the dictionary,
        data or codes would hold more entries than an array can.

    See Also
    --------
    skdict.model_selection.CompositionalSplit : Cross-validation folds whose
        test samples hold concept pairs never seen together in training.

    Examples
    --------
    >>> from skdict.datasets import make_compositional
    >>> data = make_compositional(n_latents=20, n_active=3, n_samples=100,
    ...                           random_state=0)
    >>> data.X_train.shape, data.Z_train.shape, data.X_ood.shape
    ((50, 12), (50, 20), (50, 12))
    >>> int((data.Z_ood[:, 0] > 0).sum())
    50
    >>> bool((data.Z_train[:, 0] > 0)[(data.Z_train[:, 10:] > 0).any(axis=1)].any())
    False
    """
    # The arguments, before anything else is defined.
    validate_hyperparameters(
        _PARAMETER_CONSTRAINTS, dict(locals()), caller_name="make_compositional"
    )
    n_features, n_ood = _resolve_recipe(
        n_latents, n_active, n_features, n_ood_latents, n_samples, sparse_codes
    )

    if n_active == 1:
        warn(
            "n_active=1: every OOD sample holds latent 0 alone, as about half "
            "the training samples do, so the OOD set holds no combination "
            "unseen in training; the paper's smallest n_active is 2.",
            UserWarning,
        )

    # One seed drawn from the caller's RandomState (scikit-learn's convention)
    # feeds a Generator, whose samplers are several times faster at 10**7 draws.
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    rng = np.random.default_rng(seed)

    dictionary = rng.standard_normal((n_latents, n_features))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)

    n_train = n_samples // 2
    recipe = dict(n_latents=n_latents, n_active=n_active, n_ood=n_ood)
    sampled = {
        name: _sample_codes(rng, n_rows, ood=ood, **recipe)
        for name, n_rows, ood in (
            ("train", n_train, False),
            ("val", n_samples - n_train, False),
            ("ood", n_train, True),
        )
    }
    # Noise is drawn after every code, so that for a given seed the codes do
    # not depend on the noise level.
    splits = {}
    for name, (codes, labels) in sampled.items():
        X = codes @ dictionary
        if noise > 0:
            X += noise * rng.standard_normal(X.shape)
        splits[f"X_{name}"] = X
        splits[f"Z_{name}"] = codes if sparse_codes else codes.toarray()
        splits[f"y_{name}"] = labels

    return Bunch(
        **splits,
        dictionary=dictionary,
        id_latents=np.arange(1, n_latents - n_ood),
        ood_latents=np.arange(n_latents - n_ood, n_latents),
        # A Python int whatever integer type was passed (results are saved as
        # JSON).
        n_active=int(n_active),
    )
