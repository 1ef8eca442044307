"""FISTACoder: per-sample FISTA codes on a given, provided or learned dictionary."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from numbers import Integral, Real
from typing import Any, Self

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.utils import _safe_indexing
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._concepts import ConceptNamesOutMixin, concept_names_of
from ._dictionary import (
    CODING_ESTIMATOR,
    EXPOSES_COMPONENTS,
    PROVIDER_CONSTRAINT,
    check_frozen_fitted,
    check_n_components,
    check_provider_features,
    fit_provider,
    fits_on_data,
    is_provider,
    is_same_given,
    provider_input,
    record_given,
    resolve_dictionary,
    sparse_atoms_slip,
    store_in_batch_type,
    take_providers_tags,
    torch_generator,
)
from ._fista._core import FISTAResult
from ._fista._driver import (
    _auto_batch_size,
    fista_encode,
)
from ._fitting import forget_fit_on_failure
from ._learning._alternation import learn_dictionary
from ._learning._atoms import initial_dictionary
from ._learning._online import batch_statistics, online_dictionary_update
from ._learning._updates import _normalize_atoms
from ._params import (
    StrictParamsMixin,
    check_holdable,
    count_from,
    fit_context,
    is_count,
)
from ._tensor import (
    DEVICE_CONSTRAINT,
    DetachedCloneMixin,
    as_tensor,
    ieee_float32_products,
    ignores_autocast,
    is_estimator,
    is_tensor,
    one_thread_for_small_work,
    outside_inference_mode,
    portable_state,
    sum_of_squares,
    to_fitted,
    to_output,
    validate_codes,
    validate_input,
    warn_if_all_zero,
)
from ._typing import ArrayLike, Bool, Device, Float, Int, Seed
from ._warnings import warn

__all__ = ["FISTACoder"]

# Automatic batches per step of FISTACoder.score (see there).
_SCORE_STEP_BATCHES = 4


class FISTACoder(
    StrictParamsMixin,
    ConceptNamesOutMixin,
    TransformerMixin,
    DetachedCloneMixin,
    BaseEstimator,
):
    """Sparse coding by per-sample FISTA, on CPU or GPU.

    Codes each sample ``x`` by solving the lasso
    ``min_z 0.5 * ||x - z @ components_||^2 + alpha * ||z||_1`` (with ``z >= 0``
    when ``positive``), the objective of
    :func:`sklearn.decomposition.sparse_encode`, to a certified relative
    duality gap ``tol``. The solver is batched over samples: every sample stops
    at its own tolerance, works on a small set of candidate atoms, and uses an
    accelerated proximal gradient with adaptive momentum restart.

    Parameters
    ----------
    dictionary : array-like, torch.Tensor, estimator or object, default=None
        The atoms, shape ``(n_components, n_features)``, or a *dictionary
        provider*: an estimator exposing ``components_`` (and optionally
        ``intercept_``, or ``mean_`` for scikit-learn's PCA family), cloned and
        fitted on ``X, y`` in :meth:`fit`, or a fitted one wrapped in
        :class:`sklearn.frozen.FrozenEstimator`, or any other object exposing
        ``components_`` (see :ref:`dictionaries`); the last two are used as
        they are. Samples are coded
        after subtracting the provider's intercept. ``None`` learns the atoms
        from ``X`` with DL-FISTA: rounds of FISTA codes alternate with the
        closed-form least-squares dictionary update, atoms kept at unit norm
        (see :ref:`dictionary-learning`); :meth:`partial_fit`
        learns them online from mini-batches instead.
    n_components : int, default=None
        Number of atoms to learn when ``dictionary`` is None; None takes the
        number of atoms of ``init``, else ``n_features``. With a given
        ``dictionary`` its atoms set the number of components, and a different
        ``n_components`` is an error.
    alpha : float, default=0.1
        Weight of the L1 penalty; positive. In the data's units: the default
        suits rows of norm about 1, and activations ten times longer need
        ``alpha`` ten times larger, or to be divided by their norm (see the
        user guide, :ref:`own-activations`). It also makes the stopping rule
        measurable: at ``alpha=0`` no dual point certifies a code (the duality
        gap is the whole objective), so every sample would run to ``max_iter``.
    positive : bool, default=False
        Constrain the codes to be non-negative.
    max_iter : int, default=1000
        Maximum number of FISTA iterations per sample (the active-set steps
        taken on supports that fill the feature space count as iterations).
    tol : float in [0, 1), default=1e-6
        A sample is coded once its duality gap is at most ``tol`` times its
        objective; this bounds the relative suboptimality of its code. The
        tolerance is floored at ``100 * eps`` of the data's dtype (about
        ``1.2e-5`` in float32), below which the gap is not measurable. With a
        small ``alpha``, rounding even the optimal codes to float32 can leave
        a larger gap: with ``max_iter`` above 50, float32 rows whose
        rounding, ``eps * ||x||`` times the longest atom's norm, exceeds the
        floored ``tol`` times ``alpha`` are therefore coded in float64 from
        the start, other float32 samples not certified after 50 iterations
        are finished in float64, and both are rounded back with a
        certificate covering the rounding. Rounding can
        keep even the optimum's gap above a ``tol`` close to machine
        precision; such samples run to ``max_iter`` and are reported
        unconverged. Nor can a gap be measured below about ``16 * eps *
        ||x||**2`` (float64 residuals), above ``tol`` times the objective
        when ``alpha`` is tiny beside the data (1e-10 with ``||x||`` near 1,
        at ``tol=1e-6``): such samples stop at that floor, reported
        unconverged by a warning that says so. When learning, also the
        relative change of the dictionary between two rounds,
        ``||D_new - D||_F / ||D||_F``, at which learning stops
        (leaving out atoms that no sample used in either round: they are
        re-drawn from residuals every round, see ``history_``). Without
        ``init``, momentum and the resampling of near-duplicate atoms keep the
        dictionary moving for many rounds (by 5-20 % a round after 25-35
        rounds on the paper's benchmark, often by 20 % or more to the end on
        small problems), and a search that settles still moves its atoms by
        more than the default ``tol`` (1e-5 to 1e-4 a round after 50 rounds
        at 100 latents), so learning usually runs all ``dict_max_iter``
        rounds; to refine a
        learned dictionary until it settles, pass it as ``init`` to a second
        fit (see :ref:`dictionary-learning`).
    init : array-like, torch.Tensor, estimator or object, default=None
        Warm start for the codes: an array of shape ``(n_samples,
        n_components)`` matching the ``X`` being coded, or an estimator whose
        ``transform(X)`` gives such codes (cloned and fitted on ``X, y`` in
        :meth:`fit`, or used as is when wrapped in
        :class:`~sklearn.frozen.FrozenEstimator`), e.g. a fitted
        :class:`SparseAutoencoder` sharing the dictionary. When ``dictionary``
        is None, ``init`` is instead the dictionary learning starts from:
        atoms of shape ``(n_components, n_features)`` or a dictionary provider,
        e.g. a fitted :class:`SparseAutoencoder` wrapped in
        :class:`~sklearn.frozen.FrozenEstimator` (its intercept is not used:
        learned dictionaries reconstruct around zero). None draws the atoms
        from the data. An estimator's warm-start codes are computed for all
        of ``X`` before :meth:`transform` codes it, beside the codes
        returned: twice their memory, whatever ``batch_size`` (:meth:`score`
        takes them a step at a time); code very large ``X`` in chunks.
    batch_size : int, default=None
        Number of samples coded at once; peak memory grows as ``batch_size *
        max(n_components, n_features)``, besides the codes returned. None
        picks at most ``2**24 / max(n_components, n_features)`` rows, and
        ``2**20 / n_features`` (at least 512) for each torch thread a batch is
        split between: the solver keeps several float64 copies of a batch's
        rows, and kept this small they stay in the caches (wide rows on few
        atoms code in about half the time of larger batches). Its memory,
        codes returned included, peaked at 140-340 MiB above the start for
        100,000 rows of 1,024 float32 features on 128-512 atoms, 190 MiB for
        131,072 rows of 64 features on 128 atoms and 300 MiB for 2,048 rows of
        4,096 features on 4,096 atoms (one thread;
        ``benchmarks/bench_memory.py``).
        Each batch also has a fixed cost (the solver's per-call work, a few
        milliseconds or more), so batches of a few samples are slow: on the
        CPU, 100 samples over 200 atoms took about 28 times as long one at
        a time as in one batch. Lower it to fit memory, not below. Other
        batch sizes (and torch thread counts, which split batches between
        threads) round products differently: codes move by rounding, and
        dictionary learning, a search, may end at other atoms of the same
        quality.
    device : str or torch.device, default="auto"
        Where to compute. ``"auto"`` uses a tensor input's own device, else
        CUDA when available, else the CPU. Outputs always come back in the
        input's array type, device and dtype.
    dict_max_iter : int, default=50
        Maximum number of dictionary-learning rounds when ``dictionary`` is None.
        Dictionaries with more than 3 atoms per feature learned without
        ``init`` code the first half of the rounds at ``1.5 * alpha``; given
        at least 110 rounds (and no more atoms than samples) they code the
        first 60 at ``1.5 * alpha`` and make the rounds between them and the
        last 30 the paper's inexact alternation, which very overcomplete
        dictionaries need (see the user guide, :ref:`inference`). Learning
        without ``init`` computes in float32 whatever the data's dtype (a
        search, solved to loose tolerances), unless the data's squared norms
        leave float32's range (then in float64); data whose largest entry
        lies beyond 2**+-50 (in float32 and float64) are first
        scaled by a power of two, as the lasso allows exactly. The atoms come
        back in the data's dtype.
    random_state : int, RandomState instance or None, default=None
        Seed for dictionary learning: the atoms drawn from the data at the
        start and those re-initialised during learning. None draws the seed
        from NumPy's global random state, as scikit-learn's estimators do
        (``np.random.seed`` sets it; ``torch.manual_seed`` does not). A
        :meth:`partial_fit` stream draws it once, at its first call. An
        unfitted estimator passed as ``dictionary`` or ``init`` is fitted
        with its own ``random_state``: set it too for a reproducible fit.
        On CUDA, fits repeat bit for bit only in torch's deterministic mode
        (``torch.use_deterministic_algorithms(True)``; see :ref:`reproduce`).
    verbose : int, default=0
        Show progress bars when positive; in :meth:`partial_fit`, whose calls
        code one chunk each, when at least 2 (a stream of chunks would
        otherwise draw one bar per chunk). With ``batch_size=None``, coding
        then runs in smaller batches, so that the bar moves: codes may differ
        by rounding from those coded without it.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_components, n_features)
        The dictionary atoms, in the array type of the data last given to
        :meth:`fit` or :meth:`partial_fit`, and in the precision of the data
        given to :meth:`fit` or to the first :meth:`partial_fit` (float32
        data: float32 atoms, from a float64 dictionary too).
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        Offset the data is reconstructed around: ``X ≈ codes @ components_ +
        intercept_`` (zero for a plain array dictionary).
    dictionary_ : estimator, object or None
        The fitted dictionary provider, when ``dictionary`` is an estimator
        (a frozen one as given); the object itself when it exposes
        ``components_`` without being an estimator; None for atoms given as
        an array and for a learned dictionary.
    init_ : estimator or None
        The fitted warm-start estimator, when ``init`` is an estimator.
    n_iter_ : int
        With a given dictionary, the largest number of FISTA iterations any
        training sample needed in :meth:`fit_transform` (0 after :meth:`fit`
        and :meth:`partial_fit`, which code nothing). When learning, the
        number of rounds :meth:`fit` ran plus the :meth:`partial_fit` calls
        since (``len(history_)`` unless the history was trimmed).
    history_ : list of dict
        When learning, one record per round of :meth:`fit` (or per
        :meth:`partial_fit` call): ``objective`` (mean over the samples of
        ``0.5 * ||x - z @ D||^2 + alpha * ||z||_1`` after the round's coding,
        on that round's atoms; while exploring, the codes are rough and the
        objective can rise and lie far above the returned atoms'),
        ``dictionary_change`` (relative Frobenius change of the atoms),
        ``n_unused`` (atoms no sample used: re-initialised in every round of
        :meth:`fit`, and by :meth:`partial_fit` only while exploring) and
        ``n_resampled`` (other near-duplicate atoms replaced; the two never
        add up to more than the atoms); :meth:`fit` also
        records ``alpha``, ``exploring``, ``inexact``,
        ``coding_tol`` and ``fista_iter``
        (see :ref:`dictionary-learning`). A stream adds a record (about 0.4 KB)
        per call for as long as it runs; learning never reads them, so a
        long stream may trim the list, e.g. ``del coder.history_[:-1000]``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    sklearn.decomposition.SparseCoder : CPU sparse coding with coordinate
        descent, LARS or OMP.

    Notes
    -----
    Unlike :class:`sklearn.decomposition.SparseCoder`, a coder with given
    atoms is fitted before it codes: :meth:`fit` checks the atoms against
    ``X`` and fits the providers (``dictionary``, ``init``), as any
    scikit-learn transformer does; ``FISTACoder(D).fit(X).transform(X)``, or
    :meth:`fit_transform`.

    :meth:`transform` reads ``alpha``, ``positive``, ``max_iter``, ``tol``,
    ``batch_size`` and ``device`` as they are when it is called:
    ``coder.set_params(alpha=0.05)`` after learning codes on the learned
    atoms at another penalty, without learning them again (scikit-learn's
    dictionary learners have ``transform_alpha`` for this).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import FISTACoder
    >>> rng = np.random.default_rng(0)
    >>> D = rng.standard_normal((8, 5))
    >>> D /= np.linalg.norm(D, axis=1, keepdims=True)
    >>> X = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0.5]]) @ D
    >>> coder = FISTACoder(dictionary=D, alpha=0.01, positive=True).fit(X)
    >>> codes = coder.transform(X)
    >>> codes.shape
    (1, 8)
    >>> bool(np.abs(coder.inverse_transform(codes) - X).max() < 0.05)
    True

    Without a dictionary, the coder learns one (DL-FISTA), keeping one
    record per round in ``history_``:

    >>> from skdict.datasets import make_compositional
    >>> from skdict.metrics import dictionary_similarity
    >>> data = make_compositional(n_latents=20, n_active=3, n_samples=400,
    ...                           random_state=0)
    >>> learner = FISTACoder(n_components=20, positive=True, dict_max_iter=50,
    ...                      random_state=0).fit(data.X_train)
    >>> bool(dictionary_similarity(data.dictionary, learner) > 0.95)
    True
    >>> len(learner.history_) == learner.n_iter_ == 50
    True

    or streams mini-batches through :meth:`partial_fit`:

    >>> stream = FISTACoder(n_components=20, positive=True, random_state=0)
    >>> for start in range(0, 200, 50):
    ...     stream = stream.partial_fit(data.X_train[start : start + 50])
    >>> stream.components_.shape, stream.n_iter_
    ((20, 12), 4)
    """

    _slips = (
        (
            "dictionary",
            is_count,
            "The 'dictionary' parameter of FISTACoder takes atoms (an array, or "
            "an estimator exposing components_); got {value!r}, a number. To "
            "learn a dictionary of {value} atoms from X, pass "
            "n_components={value}: FISTACoder(n_components={value}).",
        ),
        sparse_atoms_slip("dictionary", "FISTACoder"),
        sparse_atoms_slip("init", "FISTACoder"),
    )

    _parameter_constraints: dict = {
        "dictionary": PROVIDER_CONSTRAINT,
        "n_components": [count_from(1), None],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "positive": ["boolean"],
        "max_iter": [count_from(1)],
        # At tol >= 1 zero codes always pass: their gap is at most their
        # objective (tol=1.0 returned all-zero codes).
        "tol": [Interval(Real, 0, 1, closed="left")],
        "init": ["array-like", CODING_ESTIMATOR, EXPOSES_COMPONENTS, None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "device": DEVICE_CONSTRAINT,
        "dict_max_iter": [count_from(0)],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        dictionary: ArrayLike = None,
        *,
        n_components: Int | None = None,
        alpha: Float = 0.1,
        positive: Bool = False,
        max_iter: Int = 1000,
        tol: Float = 1e-6,
        init: ArrayLike = None,
        batch_size: Int | None = None,
        device: Device = "auto",
        dict_max_iter: Int = 50,
        random_state: Seed = None,
        verbose: Int | Bool = 0,
    ) -> None:
        self.dictionary = dictionary
        self.n_components = n_components
        self.alpha = alpha
        self.positive = positive
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.batch_size = batch_size
        self.device = device
        self.dict_max_iter = dict_max_iter
        self.random_state = random_state
        self.verbose = verbose

    @ignores_autocast
    @outside_inference_mode
    def fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Resolve (or learn) the dictionary.

        With a given dictionary, fitting resolves the provider (fitting a
        clone of an estimator, and of an ``init`` estimator) and codes
        nothing, as :class:`~sklearn.decomposition.SparseCoder` and
        :class:`~skdict.OracleDictionary` code only in ``transform``;
        :meth:`fit_transform` codes ``X`` once and reports ``n_iter_``.

        An invalid hyper-parameter is refused before the fit starts, and a
        fit interrupted with Ctrl-C (``KeyboardInterrupt``), both leave the
        estimator as it was before the call; a fit that raises any other
        error leaves it unfitted.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the dictionary and init estimators' ``fit``.

        Returns
        -------
        self : FISTACoder
            The fitted coder.
        """
        self._fit(X, y, code=False)
        return self

    @ignores_autocast
    @outside_inference_mode
    def fit_transform(self, X: ArrayLike, y: ArrayLike = None) -> Any:
        """Fit to ``X`` and return its codes (coded once).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the dictionary and init estimators' ``fit``.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        codes = self._fit(X, y)
        # A learned dictionary is known only once learning ends.
        return self.transform(X) if codes is None else codes

    @fit_context(prefer_skip_nested_validation=False)
    def _fit(self, X, y, code=True):
        with forget_fit_on_failure(self):
            self._forget_stream()
            X_t, origin = validate_input(self, X, reset=True, device=self.device)
            if self.dictionary is None:
                self._learn(X, X_t, y, origin)
                return None
            resolved = self._resolve_given(X, X_t, y, origin)
            if not code:
                self.n_iter_ = 0
                return None
            result = self._encode(X, X_t, resolved.components, resolved.intercept)
            self.n_iter_ = int(result.n_iter.max())
            return to_output(result.codes, origin, self)

    def _resolve_given(self, X, X_t, y, origin):
        # A given dictionary (array or provider) and the init estimator.
        resolved = resolve_dictionary(
            self.dictionary,
            X,
            y,
            device=X_t.device,
            dtype=X_t.dtype,
            n_features=self.n_features_in_,
        )
        check_n_components(
            self.n_components, resolved.components.shape[0], "the dictionary"
        )
        self.dictionary_ = resolved.estimator
        # Read now: the provider may be refitted on other concepts later.
        self._concept_names = concept_names_of(resolved.estimator)
        # What partial_fit checks the parameter against; None for a learned
        # dictionary.
        self._dictionary_param = record_given(self.dictionary)
        self.init_ = self._fit_init(X, y, resolved.components.shape[0])
        self.components_ = to_fitted(resolved.components, origin)
        self.intercept_ = to_fitted(resolved.intercept, origin)
        return resolved

    def _learn(self, X, X_t, y, origin):
        # dictionary=None: DL-FISTA on X (_learning._alternation.learn_dictionary).
        warn_if_all_zero(X_t, "the learned atoms are random")
        init = self._starting_dictionary(X, X_t, y)
        n_atoms = self._n_atoms(X_t, init)
        # A round's products: samples x atoms x features multiply-adds.
        macs = X_t.shape[0] * n_atoms * X_t.shape[1]
        # In IEEE float32 whatever the process's matmul precision, as coding:
        # learning from drawn atoms computes in float32 even for float64 data.
        with one_thread_for_small_work(macs, X_t.device), ieee_float32_products():
            result = learn_dictionary(
                X_t,
                n_atoms,
                alpha=self.alpha,
                positive=self.positive,
                init=init,
                dict_max_iter=self.dict_max_iter,
                tol=self.tol,
                max_iter=self.max_iter,
                batch_size=self.batch_size,
                generator=torch_generator(self.random_state),
                verbose=self.verbose,
            )
        # All-zero data was warned about above.
        if result.history and bool(X_t.any()) and not bool(result.codes.any()):
            _warn_if_no_code(X_t, result.components, self.alpha, self.positive)
        self._store_learned(result.components, origin)
        self.history_ = result.history
        self.n_iter_ = len(self.history_)
        # partial_fit continues from here, as from one long stream: the
        # statistics of the final codes, and atoms that are refined, not
        # explored (so no generator is needed).
        self._online_statistics = batch_statistics(result.codes, X_t)
        self._stream_explores = False

    def _forget_stream(self):
        # What an earlier fit or stream left for partial_fit to continue.
        for name in (
            "history_",
            "_online_statistics",
            "_rng_state",
            "_stream_explores",
        ):
            if hasattr(self, name):
                delattr(self, name)

    def _starting_dictionary(self, X, X_t, y):
        self.init_ = None
        if self.init is None:
            return None
        resolved = resolve_dictionary(
            self.init,
            X,
            y,
            device=X_t.device,
            dtype=X_t.dtype,
            n_features=self.n_features_in_,
            name="init",
        )
        self.init_ = resolved.estimator
        return resolved.components

    def _n_atoms(self, X_t, init):
        if init is not None:
            return check_n_components(self.n_components, init.shape[0], "init")
        n_atoms, n_features = self.n_components or X_t.shape[1], X_t.shape[1]
        # The atoms, and their n_atoms x n_atoms Gram matrix and statistics.
        check_holdable(
            n_atoms * max(n_atoms, n_features),
            X_t.dtype,
            f"n_components={n_atoms} atoms of n_features={n_features} features make",
        )
        return n_atoms

    def _store_learned(self, components, origin):
        self.dictionary_ = None
        # Learned atoms are no oracle's: names an earlier fit on an oracle's
        # atoms recorded (kept by a failed fit, which forgets only public
        # attributes) would otherwise name a stream's codes.
        self._concept_names = None
        self._dictionary_param = None
        self.components_ = to_fitted(components, origin)
        self.intercept_ = to_fitted(components.new_zeros(components.shape[1]), origin)

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Update a learned dictionary with one mini-batch.

        Online dictionary learning (Mairal et al., 2010): the batch is coded
        with FISTA, its statistics join running sums, and the atoms are
        refreshed by block coordinate descent on those sums, so data larger than
        memory can be streamed. The first call starts from ``init`` or from
        atoms drawn from the batch (random directions where it has fewer
        distinct non-zero rows than atoms, with a warning: start a stream with
        at least ``n_components`` distinct rows); after :meth:`fit`, the stream
        continues the fitted atoms and the statistics of the fit's final codes
        (``Z^T Z`` and ``Z^T X``, which :meth:`fit` keeps for this on the CPU,
        ``n_components**2`` values, as scikit-learn's
        :class:`~sklearn.decomposition.MiniBatchDictionaryLearning` does),
        weighted as if its samples had been streamed in batches like ``X``, and
        appends to its ``history_``. Atoms drawn from the batch are explored:
        those no sample has used yet, and the less used of two near-duplicates,
        are re-initialised from badly reconstructed samples. Atoms from ``init``
        or from :meth:`fit` are only refined. With a given ``dictionary`` there
        is nothing to learn: the first call resolves it as :meth:`fit` does,
        without coding, and later calls only check ``X``. Setting, changing (to
        other atoms, or a provider with other parameters) or clearing
        ``dictionary`` between calls is an error (call :meth:`fit` to start
        again; an array or provider changed in place is not always detected),
        and other parameters are checked as in :meth:`fit`; a batch in another
        dtype is converted to the atoms' (learning continues in the precision it
        started in).

        A stream learns less well than :meth:`fit` from the same samples, and
        more slowly: on ``make_compositional(50, 3, n_samples=4000)``, seeds
        0-5, at ``tol=1e-4``, six passes in batches of 100 end at dictionary
        similarity 0.92-0.95 where :meth:`fit` (40 rounds) reaches 0.97-0.999,
        at most 0.08 below it (batches of 500: 0.86-0.93, at most 0.11 below),
        in about eight times its time (``benchmarks/bench_partial_fit.py``).
        Stream when the data do not fit in memory.

        Each call is one step of the stream: its statistics are averaged over
        its rows, as in scikit-learn's
        :class:`~sklearn.decomposition.MiniBatchDictionaryLearning`, so a call
        with one row weighs as much as one with a full batch. Feed batches of
        similar sizes (merge a short last chunk into the next one, or drop it).
        The running statistics weigh old batches down only as Mairal et al.
        (2010) do, so a long stream adapts slowly to data that change: after
        1,000 calls on a new dictionary, a stream that had run 200 calls on
        another was at similarity 0.999 with it, one that had run 3,000 at
        0.932. Start a new stream (a fresh estimator, or ``init=`` the current
        atoms) when the data drift. A batch whose statistics overflow (entries
        far beyond the first batch's) raises a ``FloatingPointError`` and
        leaves the stream as it was.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A mini-batch.
        y : array-like, default=None
            Passed to the ``init`` (or ``dictionary``) estimator's ``fit`` on
            the first call.

        Returns
        -------
        self : FISTACoder
            The updated coder.
        """
        first = not hasattr(self, "components_")
        if not first:
            # scikit-learn validates partial_fit's parameters on the first
            # call only; set_params may have changed them since.
            self._validate_params()
        if not first and self._given != (self.dictionary is not None):
            raise ValueError(
                "partial_fit cannot switch between a given dictionary and a "
                "learned one: this coder was fitted with "
                f"{'a given' if self._given else 'a learned'} dictionary, but "
                f"dictionary is now {'None' if self.dictionary is None else 'set'}. "
                "Call fit, or partial_fit on a clone, to start again."
            )
        with forget_fit_on_failure(self) if first else nullcontext():
            return self._partial_fit(X, y, first)

    def _partial_fit(self, X, y, first):
        if first:
            # A first call starts afresh, whatever an earlier run left behind.
            self._forget_stream()
        X_t, origin = validate_input(self, X, reset=first, device=self.device)
        if not first:
            width = self.components_.shape[0]
            if self.n_components is not None and self.n_components != width:
                raise ValueError(
                    f"partial_fit continues the {width} "
                    f"{'given' if self._given else 'learned'} atoms; "
                    f"n_components={self.n_components} needs a new dictionary: "
                    "call fit, or partial_fit on a clone."
                )
        if self.dictionary is not None:
            if first:
                self._resolve_given(X, X_t, y, origin)
                self.n_iter_ = 0
            elif not is_same_given(self.dictionary, self._dictionary_param):
                raise ValueError(
                    "partial_fit continues the dictionary given at its first "
                    "call; a new dictionary needs a new fit: call fit, or "
                    "partial_fit on a clone."
                )
            else:
                store_in_batch_type(self, X_t, origin)
            return self
        if first or not hasattr(self, "_rng_state"):  # none after fit
            generator = torch_generator(self.random_state)
        else:
            # The stream's own generator, without a draw from random_state
            # (NumPy's global state when None) that it would discard.
            generator = torch.Generator()
            generator.set_state(self._rng_state)
        if first:
            init = self._starting_dictionary(X, X_t, y)
            # Atoms drawn from the data are explored; given ones refined.
            self._stream_explores = init is None
            if init is None:
                # The starting atoms are drawn from this batch, as fit draws
                # them from X.
                warn_if_all_zero(X_t, "the stream's starting atoms are random")
                n_atoms = self._n_atoms(X_t, None)
                init, n_rows = initial_dictionary(
                    X_t, n_atoms, generator, return_n_rows=True
                )
                if n_rows < n_atoms:
                    # The stream keeps a random atom that its samples use: 64
                    # atoms in 32 features, first chunks of 1 / 10 / 64 rows,
                    # then 1,000 a chunk, gave dictionary similarity 0.69-0.76
                    # / 0.77-0.80 / 0.90-0.94 (seeds 0-2). Repeated and zero
                    # rows supply no atom: counted in rows, a chunk of 60 rows,
                    # two of them distinct, started 18 of 20 atoms at random
                    # without a word.
                    rows = (
                        "rows" if n_rows == X_t.shape[0] else "distinct non-zero rows"
                    )
                    warn(
                        f"partial_fit's first chunk has {n_rows} {rows} for "
                        f"{n_atoms} atoms: {n_atoms - n_rows} atoms start "
                        "as random directions, which the stream keeps where "
                        "samples use them. Start it with at least "
                        f"{n_atoms} distinct rows.",
                        UserWarning,
                    )
            else:
                self._n_atoms(X_t, init)
                init = _normalize_atoms(init)[0]  # unit-norm atoms, as in fit
            self.history_ = []
        else:
            # Learning continues in the atoms' own precision, as in
            # SparseAutoencoder.partial_fit: a float32 batch must not round
            # float64 atoms (nor their running statistics) for good.
            init = as_tensor(self.components_, device=X_t.device)
            X_t = as_tensor(X_t, device=X_t.device, dtype=init.dtype, name="X")
            origin = origin._replace(dtype=init.dtype)
        statistics = getattr(self, "_online_statistics", None)
        if statistics is not None:
            # The running sums follow the atoms' dtype and the batch's device,
            # as the atoms do.
            statistics = {
                key: value.to(device=X_t.device, dtype=X_t.dtype)
                if torch.is_tensor(value)
                else value
                for key, value in statistics.items()
            }
        macs = X_t.shape[0] * init.shape[0] * X_t.shape[1]
        # In IEEE float32 whatever the process's matmul precision, as coding:
        # learning from drawn atoms computes in float32 even for float64 data.
        with one_thread_for_small_work(macs, X_t.device), ieee_float32_products():
            components, statistics, record = online_dictionary_update(
                X_t,
                init,
                statistics,
                alpha=self.alpha,
                positive=self.positive,
                max_iter=self.max_iter,
                tol=self.tol,
                batch_size=self.batch_size,
                generator=generator,
                explore=self._stream_explores,
                # A stream of chunks would otherwise draw a bar per chunk.
                verbose=int(self.verbose >= 2),
            )
        self._store_learned(components, origin)
        self._online_statistics = statistics
        self._rng_state = generator.get_state()
        self.history_.append(record)
        # Counted, not read from history_, which a long stream may trim.
        self.n_iter_ = (0 if first else self.n_iter_) + 1
        return self

    def _fit_init(self, X, y, n_atoms):
        if self.init is None:
            return None
        if not is_provider(self.init):
            # Codes, used by transform: checked now, so that a search or a
            # cross-validation fails at fit with the reason, not with NaN
            # scores from every score call.
            device = self.init.device if is_tensor(self.init) else "cpu"
            codes = as_tensor(self.init, device=device, name="init")
            if codes.shape[1] != n_atoms:
                raise ValueError(
                    f"init, the codes' warm start, has {codes.shape[1]} columns "
                    f"but the dictionary has {n_atoms} atoms."
                )
            return None
        if not hasattr(self.init, "transform"):
            # An object exposing only components_: atoms, not codes.
            raise ValueError(
                "With a given dictionary, init is the codes' warm start: an "
                "array of codes or an estimator with transform; "
                f"{type(self.init).__name__} only exposes components_, a "
                "starting dictionary for learning (dictionary=None)."
            )
        if fits_on_data(self.init):
            init = fit_provider(self.init, X, y, "init")
        else:  # frozen, or not an estimator
            if is_estimator(self.init):
                check_frozen_fitted(self.init, "init")
            check_provider_features(self.init, X, "init")
            init = self.init
        # Checked now, so that a search or a cross-validation fails at fit with
        # the reason, not with NaN scores from every score call.
        shape = _codes_shape(init, X)
        if len(shape) != 2 or shape[1] != n_atoms:
            raise ValueError(
                f"init, the codes' warm start, gives codes of shape {shape} per row "
                f"of X ({type(init).__name__}.transform) but the dictionary has "
                f"{n_atoms} atoms."
            )
        return init

    @property
    def _given(self) -> bool:
        """Whether the fitted atoms were given (True) or learned (False)."""
        return self._dictionary_param is not None

    def _warm_start(self, X, X_t: torch.Tensor) -> Callable[[slice], Any]:
        """Return a function giving the warm-start codes of a slice of rows.

        None (from zero) without ``init``; an array of codes is converted and
        checked once, an estimator's ``transform`` codes the rows asked for.
        """
        n_samples, n_components = X_t.shape[0], self._n_features_out
        if self.init is None or not self._given:
            # When learning, init is the starting dictionary, not codes.
            return lambda rows: None

        def checked(codes, name, n_rows):
            codes = as_tensor(codes, device=X_t.device, dtype=X_t.dtype, name=name)
            if tuple(codes.shape) != (n_rows, n_components):
                raise ValueError(
                    f"{name} must have shape (n_samples, n_components) = "
                    f"({n_rows}, {n_components}); got {tuple(codes.shape)}."
                    + (
                        " An array of codes warm-starts the X it was computed "
                        "for only; in a cross-validation or a search, pass an "
                        "estimator (e.g. FrozenEstimator(sae)) as init."
                        if name == "init"
                        else ""
                    )
                )
            return codes

        if not is_provider(self.init):
            # Also after a fit with an init estimator: the codes given now win.
            codes = checked(self.init, "init", n_samples)
            return lambda rows: codes[rows]
        if self.init_ is None:
            raise ValueError(
                "init is an estimator that was set after fit; call fit to "
                "fit it (transform uses the init estimator fitted by fit)."
            )
        # Row slices of X in its own type, for the estimator's transform.
        indexable = _indexable(X)

        def transformed(rows: slice):
            whole = rows.indices(n_samples)[:2] == (0, n_samples)
            X_rows = X if whole else _safe_indexing(indexable, rows)
            codes = self.init_.transform(provider_input(self.init_, X_rows))
            return checked(codes, "init.transform(X)", X_t[rows].shape[0])

        return transformed

    def _dictionary_tensors(self, X_t: torch.Tensor):
        D = as_tensor(self.components_, device=X_t.device, dtype=X_t.dtype)
        b = as_tensor(self.intercept_, device=X_t.device, dtype=X_t.dtype, ndim=1)
        return D, b

    @ignores_autocast
    def transform(self, X: ArrayLike) -> Any:
        """Sparse-code ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to code; ``intercept_`` is subtracted first.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        check_is_fitted(self)
        # Coding reads alpha, positive, max_iter, tol, ... as they are now.
        self._validate_params()
        check_same_namespace(X, self, attribute="components_", method="transform")
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(
            self._encode(X, X_t, *self._dictionary_tensors(X_t)).codes, origin, self
        )

    def _encode(self, X, X_t: torch.Tensor, D: torch.Tensor, b: torch.Tensor):
        init = self._warm_start(X, X_t)(slice(None))
        result = self._code(X_t, D, b, init, self.verbose)
        self._warn_unconverged(_unconverged_counts(result, self.max_iter), X_t.shape[0])
        return result

    def _code(self, X_t, D, b, init, verbose):
        return fista_encode(
            X_t,
            D,
            alpha=self.alpha,
            positive=self.positive,
            init=init,
            max_iter=self.max_iter,
            tol=self.tol,
            batch_size=self.batch_size,
            verbose=verbose,
            # Centred batch by batch: X - b would copy all of X (a zero
            # intercept, an array or learned dictionary's, needs no centring).
            offset=b if bool(b.any()) else None,
        )

    def _warn_unconverged(self, counts: tuple[int, int], n_samples: int) -> None:
        """Warn about the samples left uncertified (:func:`_unconverged_counts`)."""
        not_converged, at_floor = counts
        if not_converged > at_floor:
            warn(
                f"FISTA did not reach tol={self.tol} for "
                f"{not_converged - at_floor} of {n_samples} samples, within "
                f"max_iter={self.max_iter} iterations or at all (rounding can "
                "keep an optimum's gap above a tol close to machine precision); "
                "increase max_iter or tol.",
                ConvergenceWarning,
            )
        if at_floor:
            warn(
                f"FISTA could not certify tol={self.tol} for {at_floor} of "
                f"{n_samples} samples: their duality gap fell to what float64 "
                "rounding can measure (about 16 * eps * ||x||**2), which is "
                f"above tol times their objective. alpha={self.alpha} is tiny "
                "beside these samples: their codes are at the optimum to "
                "working precision, but to certify them, raise alpha or tol, or "
                "rescale X.",
                ConvergenceWarning,
            )

    @ignores_autocast
    def inverse_transform(self, X: ArrayLike) -> Any:
        """Reconstruct data from codes: ``X @ components_ + intercept_``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_components)
            Codes.

        Returns
        -------
        X_reconstructed : ndarray or torch.Tensor of shape (n_samples, n_features)
            In the array type, device and dtype of the codes (float64
            for integer and NumPy float16 codes).
        """
        codes, origin = validate_codes(self, X)
        D, b = self._dictionary_tensors(codes)
        return to_output((codes @ D).add_(b), origin)

    @ignores_autocast
    def score(self, X: ArrayLike, y: ArrayLike = None) -> float:
        """Negative mean squared reconstruction error of ``X`` (greater is better).

        ``-mean((X - inverse_transform(transform(X))) ** 2)`` over all entries.

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
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        D, b = self._dictionary_tensors(X_t)
        # The codes (n_samples x n_components, often many times the size of
        # X) are never needed whole: a batch of rows at a time is coded and
        # reduced to its squared error, so memory stays within batch_size's
        # bound, as in transform's solver.
        # The solver batches by batch_size within each step. Each step is a
        # call that prepares the dictionary again (its Gram matrix, Lipschitz
        # constant and float64 copy: about 40 ms at 4,000 atoms) and finishes
        # its stalled float32 samples in float64, so steps span a few
        # batches. 80,000 samples x 4,000 atoms, float32, one thread: 7.0 s
        # and +370 MiB peak in steps of one automatic batch, 6.2-6.4 s and
        # +760 MiB in steps of four, 6.1-6.3 s and +1,450 MiB for all codes
        # at once; the peak no longer grows with n_samples. A given
        # batch_size sets the steps too (steps of four automatic batches at
        # least took 4 GiB where transform took 0.8 GiB at batch_size=4096).
        n_samples = X_t.shape[0]
        # int(): a NumPy integer batch_size near its type's limit would wrap
        # around in the product (no rows scored, a score of 0).
        batch = min(int(self.batch_size or _auto_batch_size(*D.shape)), n_samples)
        step = _SCORE_STEP_BATCHES * max(batch, 1)
        starts = range(0, n_samples, step)
        warm_start = self._warm_start(X, X_t)
        squared_error = 0.0  # the mean, summed step by step
        not_converged = at_floor = 0
        for start in tqdm(
            starts, disable=self.verbose <= 0 or len(starts) < 2, desc="score"
        ):
            # In bounds: the array API leaves slices past the end unspecified.
            rows = slice(start, min(start + step, n_samples))
            X_rows = X_t[rows]
            # One step: the solver's own bar over its batches (none showed).
            inner = self.verbose if len(starts) == 1 else 0
            result = self._code(X_rows, D, b, warm_start(rows), verbose=inner)
            residual = X_rows - result.codes @ D - b
            # Finite wherever the mean fits a float64 (residuals above 1e154
            # squared to -inf), as reconstruction_error.
            squared_error += sum_of_squares(residual.double(), X_t.numel())
            counts = _unconverged_counts(result, self.max_iter)
            not_converged, at_floor = not_converged + counts[0], at_floor + counts[1]
        self._warn_unconverged((not_converged, at_floor), n_samples)
        return -squared_error

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __getstate__(self):
        return portable_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        take_providers_tags(tags, self.dictionary, self.init)
        return tags


def _codes_shape(init: Any, X: Any) -> tuple[int, ...]:
    """Return the shape of ``init``'s codes of one row of ``X``.

    From the width skdict's own estimators declare, or the atoms of weights
    that are not an estimator; else from coding X's first row, with no
    warnings filtered (a filter would drop other threads' warnings and hold
    a lock around the estimator's own code). Other estimators' declared
    widths are not trusted: LinearDiscriminantAnalysis declares n_classes - 1
    columns and gives fewer on rank-deficient data.
    """
    inner = init
    while isinstance(inner, FrozenEstimator):
        inner = inner.estimator
    if type(inner).__module__.startswith("skdict."):
        return (1, int(inner._n_features_out))
    if not is_estimator(inner) and hasattr(inner, "components_"):
        return (1, int(np.shape(inner.components_)[0]))
    first = X[:1] if is_tensor(X) else _safe_indexing(_indexable(X), slice(0, 1))
    return tuple(np.shape(init.transform(provider_input(init, first))))


def _indexable(X: Any) -> Any:
    """``X`` as :func:`~sklearn.utils._safe_indexing` takes its rows.

    In its own type, for an estimator's ``transform``; an object that is only
    convertible to an array is converted (once).
    """
    if hasattr(X, "shape") or isinstance(X, (list, tuple)):
        return X
    return np.asarray(X)


def _unconverged_counts(result: FISTAResult, max_iter: int) -> tuple[int, int]:
    """Count the samples of ``result`` not converged, and those stopped early.

    An unconverged sample that spent fewer than ``max_iter`` iterations
    stopped at the rounding floor of its gap (see :class:`FISTAResult`).
    """
    unconverged = ~result.converged
    early = unconverged & (result.n_iter < max_iter)
    return int(unconverged.sum()), int(early.sum())


def _warn_if_no_code(
    X: torch.Tensor, components: torch.Tensor, alpha: float, positive: bool
) -> None:
    """Warn when ``alpha`` leaves every code of ``X`` on the atoms zero.

    Otherwise silent: learning stops once every atom stays unused, and
    returns rows of X as atoms that no code uses. Every lasso code is zero
    exactly when no correlation ``<x, d>`` exceeds ``alpha`` (no positive one,
    for non-negative codes).
    """
    atoms = components.to(X.dtype)
    largest = 0.0
    for block in X.split(_auto_batch_size(*components.shape)):
        correlations = block @ atoms.T
        if not positive:
            correlations = correlations.abs()
        largest = max(largest, float(correlations.max()))
    if largest > alpha:
        return
    warn(
        f"No sample uses any learned atom: alpha={alpha} is above every "
        f"correlation of a sample with the atoms (at most {largest:.3g}), so "
        "every code is zero. alpha is in the units of X: lower it, or rescale X.",
        UserWarning,
    )
