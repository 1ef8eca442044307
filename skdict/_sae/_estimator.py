"""The :class:`SparseAutoencoder` estimator."""

from __future__ import annotations

import copy
import itertools
import math
import weakref
from numbers import Integral, Real
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import _safe_indexing
from sklearn.utils._array_api import check_same_namespace
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from .._concepts import ConceptNamesOutMixin, concept_names_of
from .._dictionary import (
    PROVIDER_CONSTRAINT,
    check_n_components,
    fits_on_data,
    is_same_given,
    record_given,
    resolve_dictionary,
    sparse_atoms_slip,
    take_providers_tags,
    torch_generator,
)
from .._fitting import forget_fit_on_failure
from .._learning._updates import _normalize_atoms
from .._params import (
    StrictParamsMixin,
    check_holdable,
    count_from,
    fit_context,
    is_array_like,
)
from .._tensor import (
    DEVICE_CONSTRAINT,
    DetachedCloneMixin,
    as_tensor,
    ignores_autocast,
    origin_of,
    outside_inference_mode,
    portable_state,
    to_fitted,
    to_output,
    validate_codes,
    validate_input,
    warn_if_all_zero,
)
from .._typing import ArrayLike, Bool, Device, Float, Int, Seed
from .._warnings import warn
from ._modules import ACTIVATIONS, SAE, SparseCodes, build_sae
from ._training import RowSubset, chunks, evaluate, make_optimizer, train

__all__ = ["SparseAutoencoder"]

#: Activations that keep ``k`` latents per sample, and so need ``k``.
ACTIVATIONS_WITH_K = ("topk", "batchtopk", "mp")
_AUX_ACTIVATIONS = ("topk", "batchtopk")
# Largest deviation from unit norm accepted for frozen matching-pursuit atoms.
_UNIT_NORM_TOL = 1e-4
# Parameters that define the module and what the optimiser trains: training
# cannot continue across a change to them.
_MODEL_PARAMS = ("n_components", "activation", "k", "bandwidth", "freeze_decoder")


class SparseAutoencoder(
    StrictParamsMixin,
    ConceptNamesOutMixin,
    TransformerMixin,
    DetachedCloneMixin,
    BaseEstimator,
):
    """Sparse autoencoder (ReLU-L1, TopK, BatchTopK, JumpReLU or matching pursuit).

    Learns an encoder ``z = act((x - intercept_) @ W_enc.T + b_enc)`` and a decoder
    ``x_hat = z @ components_ + intercept_`` with unit-norm atoms, by AdamW on
    ``mean((x_hat - x) ** 2) + sparsity_coef * mean_b P(z_b)`` over mini-batches.
    The defaults are the training settings of Barin Pacela et al. (2026), "Stop
    probing, start coding" (AdamW, lr 5e-4, batch 64, 500 epochs, penalty
    weight 1e-4, JumpReLU thresholds and bandwidth 1e-3), except that the
    decoder bias starts at the data mean (``bias_init="zero"`` is theirs).

    Parameters
    ----------
    n_components : int, default=None
        Number of latents (the SAE's width). None takes it from ``decoder``,
        or without one uses ``n_features`` (sparse dictionaries are usually
        wider: pass the width you want).
    activation : {"relu", "topk", "batchtopk", "jumprelu", "mp"}, default="relu"
        ``"relu"``: ReLU with the L1 penalty ``P(z) = ||z||_1``.
        ``"topk"``: the ``k`` largest pre-activations of each sample, rectified
        (Gao et al., 2024). ``"batchtopk"``: the ``k * batch`` largest over the
        batch in training, a learned threshold at inference (Bussmann et al.,
        2024). ``"jumprelu"``: learned per-latent thresholds with the L0 penalty
        ``P(z) = ||z||_0`` through straight-through estimators (Rajamanoharan et
        al., 2024). ``"mp"``: ``k`` steps of matching pursuit over the decoder
        atoms, no encoder; its codes are signed (each step takes the atom of
        largest absolute correlation), the others' non-negative.
    k : int, default=None
        Active latents per sample for ``"topk"``, ``"batchtopk"`` (on average)
        and ``"mp"`` (pursuit steps); required by them, ignored by the others.
    sparsity_coef : float, default=1e-4
        Weight of the penalty of ``"relu"`` and ``"jumprelu"``; ignored by the
        others, whose sparsity is structural. The paper's 1e-4 leaves ReLU
        codes nearly dense: on ``make_compositional(50, 5, n_samples=4000)``
        (5 true latents per sample, rows of norm 1.2 on average) 46.9 of 50 latents
        fire, against 22.9 at 1e-3 and 6.9 at 1e-2 (MCC 0.43, 0.54, 0.82).
        Like FISTA's ``alpha``, it depends on the data's scale.
    lr : float, default=5e-4
        AdamW learning rate.
    batch_size : int, default=64
        Samples per training step.
    max_epochs : int, default=500
        Passes over the training data; one when nothing is trainable
        (``activation="mp"`` with ``freeze_decoder=True``), as every further
        pass would repeat the first.
    decoder : array-like, torch.Tensor, estimator or object, default=None
        Initial atoms, shape ``(n_components, n_features)``, or a dictionary
        provider: an estimator exposing ``components_`` (and optionally
        ``intercept_``), cloned and fitted on ``X, y``, or a fitted one wrapped
        in :class:`sklearn.frozen.FrozenEstimator`, or any other object
        exposing ``components_`` (see :ref:`dictionaries`). The encoder starts as the
        transpose of the atoms; a provider's intercept starts the decoder bias.
        None draws the encoder at random (Kaiming-uniform) and starts the
        decoder as its transpose.
    freeze_decoder : bool, default=False
        Train the encoder only: ``components_`` and ``intercept_`` stay exactly
        those of ``decoder`` (an array's intercept is zero). With an oracle
        dictionary this is the paper's "oracle dictionary + SAE encoder".
    device : str or torch.device, default="auto"
        Where to compute. ``"auto"`` uses a tensor input's own device, else
        CUDA when available, else the CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the validation split and the shuffling;
        two fits on the CPU with the same seed and torch thread count give
        identical weights (other thread counts round wide products
        differently, which training carries into the weights). The
        initial weights do not depend on the data's precision or device
        beyond rounding, so float32 and float64 fits with one seed start from
        the same model. None draws the seed from NumPy's global random state,
        as scikit-learn's estimators do (``np.random.seed`` sets it;
        ``torch.manual_seed`` does not). An unfitted ``decoder`` estimator
        is fitted with its own ``random_state``, as scikit-learn's
        meta-estimators fit theirs: set it too for a reproducible fit. On
        CUDA, fits repeat bit for bit only in torch's deterministic mode
        (``torch.use_deterministic_algorithms(True)``; see :ref:`reproduce`).
    verbose : int, default=0
        Show a progress bar over epochs when positive; in
        :meth:`partial_fit`, whose calls are one epoch each, when at least 2
        (a stream of batches would otherwise draw one bar per batch).
    weight_decay : float, default=0.01
        AdamW's decoupled weight decay (torch's default, which the paper used),
        on every trained parameter: JumpReLU's ``log_threshold`` too, which it
        pulls towards 0 (thresholds towards 1).
    bias_init : {"mean", "zero"}, default="mean"
        Initial decoder bias when ``decoder`` gives none: the training data's
        mean, or zero (the paper's setting).
    aux_k : int, default=None
        Number of dead latents in the auxiliary-k loss of Gao et al. (2024) for
        ``"topk"`` and ``"batchtopk"``: the ``aux_k`` most active dead latents
        (see ``dead_after``) learn to reconstruct the residual. None switches
        it off (the paper's setting).
    aux_coef : float, default=1/32
        Weight of the auxiliary-k loss (Gao et al.'s alpha).
    dead_after : int, default=None
        Training samples a latent must go without firing to count as dead,
        for ``aux_k`` and ``history_``'s ``dead_fraction``. Counted in whole
        epochs (a :meth:`partial_fit` call is one): a latent is dead once the
        epochs since it last fired hold at least ``dead_after`` samples --
        after one epoch without firing when epochs are that large, after as
        many small :meth:`partial_fit` batches as make up ``dead_after``
        samples. None: ``ceil(10 * n_components / k)``
        for the activations with ``k`` (a latent firing at the average rate
        fires ten times in as many samples), one epoch for the others.
    bandwidth : float, default=1e-3
        Bandwidth of the JumpReLU straight-through estimators: a threshold
        learns only from pre-activations within about a bandwidth of it.
        The thresholds are learned as logarithms by AdamW, whose steps are
        about ``lr`` whatever the gradient's size, so a threshold grows at
        most about ``exp(lr * steps)``-fold from ``threshold_init``; in
        short runs that, not ``sparsity_coef``, bounds how sparse the codes
        get. 100 epochs on ``make_compositional(20, 3, n_samples=400)`` left
        the mean L0 at 15.9 of 20 for every ``sparsity_coef`` from 1e-4 to
        100; on 800 samples with ``bandwidth`` and ``threshold_init`` 0.05,
        ``sparsity_coef`` 0.01 and 100 both gave an L0 of 12.4 (thresholds
        at most 0.073, 1.4 times their start, after 700 steps), and 1.7 and
        0.4 with ``lr=5e-3``. For sparser JumpReLU codes, raise ``lr``,
        ``max_epochs`` or ``threshold_init`` rather than ``sparsity_coef``
        alone.
    threshold_init : float, default=1e-3
        Initial JumpReLU threshold of every latent.
    validation_fraction : float, default=None
        Fraction of the training data held out to stop early: training stops
        once the validation loss has not improved by a relative ``tol`` for
        ``n_iter_no_change`` epochs, and the best weights are kept. None trains
        on everything for ``max_epochs``. An unfitted ``decoder`` estimator
        and ``bias_init="mean"`` see the training part only. Only the weights
        go back to the best epoch: the optimiser's moments and the firing
        statistics that :meth:`partial_fit` continues from are those of the
        last epoch.
    n_iter_no_change : int, default=10
        Patience of early stopping, in epochs.
    tol : float, default=1e-4
        Relative improvement of the validation loss that resets the patience,
        in ``[0, 1)``. Reaching ``max_epochs`` before the patience runs out
        raises a :class:`~sklearn.exceptions.ConvergenceWarning`, as
        scikit-learn's MLP estimators do.

    Attributes
    ----------
    components_ : ndarray or torch.Tensor of shape (n_components, n_features)
        Decoder atoms (unit-norm rows; a frozen decoder's atoms as given), in
        the array type of the data last given to :meth:`fit` or
        :meth:`partial_fit`: a copy of ``module_.W_dec``, which follows any
        change made to the module. Change the atoms through ``module_``:
        NumPy copies are read-only, and a tensor changed in place is copied
        afresh at the next read (an edited copy was what later readers, such
        as ``FISTACoder(FrozenEstimator(sae))``, saw, while the SAE itself
        coded with the module's atoms).
    intercept_ : ndarray or torch.Tensor of shape (n_features,)
        Decoder bias: ``X ≈ transform(X) @ components_ + intercept_``; it is
        subtracted from ``X`` before encoding. Read-only as ``components_``.
    module_ : torch.nn.Module
        The trained torch module: encoder ``W_enc``, ``b_enc`` (none for
        ``"mp"``), decoder ``W_dec`` (the atoms as rows) and ``b_dec``;
        JumpReLU ``log_threshold``, BatchTopK ``threshold``. Its ``state_dict``
        saves the weights and ``load_state_dict`` restores them, which
        ``components_``, ``intercept_`` and every method then use (to resume
        a :meth:`partial_fit` stream exactly, with its optimiser state and
        counters, pickle the estimator instead); change
        parameters in place under :func:`torch.no_grad`, not through
        ``.data`` and not with torch's fused optimisers (neither counts the
        change in the parameter's version, which the estimator's copies of
        the module and of its atoms go by). The
        module is trained with hand-written gradients: its ``encode`` and
        ``forward`` take activations of shape (n_samples, n_features) and run
        without autograd; matching-pursuit modules, and TopK ones of at
        least 256 latents with ``k`` at most an eighth of them, give codes in
        a compressed form (each row's active values and their columns, with
        a ``to_dense()`` method; BatchTopK ones only in training,
        where a batch keeps ``k`` per sample on average); :meth:`transform`
        gives dense ones. A frozen decoder's parameters do not require gradients.
    decoder_ : estimator, object or None
        The fitted dictionary provider, when ``decoder`` is an estimator (a
        frozen one as given); the object itself when it exposes
        ``components_`` without being an estimator; None otherwise.
    n_iter_ : int
        Epochs run (one per :meth:`partial_fit` call).
    history_ : list of dict
        Per epoch: ``epoch``, ``loss`` (training objective), ``mse``
        (reconstruction), ``l0`` (mean non-zero codes per sample; for
        ``"mp"``, pursuit steps with a non-zero coefficient),
        ``dead_fraction`` (latents dead in the sense of ``dead_after``), plus
        ``val_loss`` and ``val_mse`` with a validation split. Training-set figures are
        averaged over the epoch's samples (each step weighted by its batch size),
        from the codes training uses: for ``"batchtopk"`` the batch-level
        top-k (``l0`` is ``k``, less where a batch has fewer than ``k`` positive
        pre-activations per sample), where :meth:`transform`, :meth:`score`
        and the validation figures apply the learned threshold.
        :meth:`partial_fit` adds a record (about 0.4 KB) per call for as long
        as a stream runs; training never reads them, so a long stream may trim
        the list, e.g. ``del sae.history_[:-1000]``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    FISTACoder : Per-sample sparse inference, e.g. with this model's dictionary.

    Notes
    -----
    Gradients are computed by hand and the loop is kept tight because, at the
    paper's size, a step is dominated by kernel-dispatch overhead; small CPU
    problems also run on one thread while fitting (see
    ``benchmarks/RESULTS.md``). A training or validation loss, or a
    parameter after training, that becomes NaN or infinite raises
    ``FloatingPointError``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import SparseAutoencoder
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 8))
    >>> sae = SparseAutoencoder(16, activation="topk", k=2, max_epochs=5,
    ...                         random_state=0).fit(X)
    >>> codes = sae.transform(X)
    >>> codes.shape
    (200, 16)
    >>> int((codes != 0).sum(axis=1).max())
    2
    >>> bool(np.allclose(np.linalg.norm(sae.components_, axis=1), 1.0))
    True
    >>> sae.inverse_transform(codes).shape
    (200, 8)
    """

    _slips = (
        (
            "n_components",
            is_array_like,
            "The 'n_components' parameter of SparseAutoencoder is a number of "
            "latents; got an array of shape {shape}. To start from given atoms, "
            "pass them as decoder=... (freeze_decoder=True keeps them).",
        ),
        sparse_atoms_slip("decoder", "SparseAutoencoder"),
    )

    _parameter_constraints: dict = {
        "n_components": [count_from(1), None],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "k": [count_from(1), None],
        "sparsity_coef": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [count_from(1)],
        "decoder": PROVIDER_CONSTRAINT,
        "freeze_decoder": ["boolean"],
        "device": DEVICE_CONSTRAINT,
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "bias_init": [StrOptions({"mean", "zero"})],
        "aux_k": [count_from(1), None],
        "aux_coef": [Interval(Real, 0, None, closed="left")],
        "dead_after": [count_from(1), None],
        "bandwidth": [Interval(Real, 0, None, closed="neither")],
        "threshold_init": [Interval(Real, 0, None, closed="neither")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "n_iter_no_change": [count_from(1)],
        # A relative improvement of 100 % or more is out of reach of a
        # non-negative loss: tol=1 would call every epoch stale.
        "tol": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        n_components: Int | None = None,
        *,
        activation: str = "relu",
        k: Int | None = None,
        sparsity_coef: Float = 1e-4,
        lr: Float = 5e-4,
        batch_size: Int = 64,
        max_epochs: Int = 500,
        decoder: ArrayLike = None,
        freeze_decoder: Bool = False,
        device: Device = "auto",
        random_state: Seed = None,
        verbose: Int | Bool = 0,
        weight_decay: Float = 0.01,
        bias_init: str = "mean",
        aux_k: Int | None = None,
        aux_coef: Float = 1 / 32,
        dead_after: Int | None = None,
        bandwidth: Float = 1e-3,
        threshold_init: Float = 1e-3,
        validation_fraction: Float | None = None,
        n_iter_no_change: Int = 10,
        tol: Float = 1e-4,
    ) -> None:
        self.n_components = n_components
        self.activation = activation
        self.k = k
        self.sparsity_coef = sparsity_coef
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.decoder = decoder
        self.freeze_decoder = freeze_decoder
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.weight_decay = weight_decay
        self.bias_init = bias_init
        self.aux_k = aux_k
        self.aux_coef = aux_coef
        self.dead_after = dead_after
        self.bandwidth = bandwidth
        self.threshold_init = threshold_init
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol

    # ------------------------------------------------------------------ fit

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Train the autoencoder on ``X`` from a fresh initialisation.

        An invalid hyper-parameter is refused before the fit starts, and a
        fit interrupted with Ctrl-C (``KeyboardInterrupt``), both leave the
        estimator as it was before the call; a fit that raises any other
        error leaves it unfitted.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the ``decoder`` estimator's ``fit``.

        Returns
        -------
        self : SparseAutoencoder
            The fitted autoencoder.
        """
        self._check_settings()
        with forget_fit_on_failure(self):
            X_t, origin = validate_input(self, X, reset=True, device=self.device)
            generator = torch_generator(self.random_state)
            warn_if_all_zero(X_t, "every latent stays dead")
            X_train, X_val, train_rows = self._split(X_t, generator)
            if train_rows is not None and fits_on_data(self.decoder):
                # A decoder estimator is fitted on the training rows only: the
                # validation rows judge early stopping and must stay unseen.
                if y is not None:
                    try:
                        check_consistent_length(X, y)
                    except ValueError as exc:
                        raise ValueError(
                            f"y, passed to the decoder estimator, must have one row "
                            f"per sample of X: {exc}"
                        ) from exc
                X, y = _take_rows(X, train_rows), _take_rows(y, train_rows)
            module, decoder = self._init_module(X, y, X_train, generator)
            optimizer = self._optimizer(module)
            result = self._train(module, X_train, optimizer, generator, X_val=X_val)
            if X_val is not None and not result.stopped_early:
                warn(
                    f"SparseAutoencoder stopped at max_epochs={self.max_epochs} "
                    "before early stopping could: the validation loss did not "
                    f"stall (improve by less than a relative tol={self.tol}) "
                    f"for n_iter_no_change={self.n_iter_no_change} epochs "
                    "running. Raise max_epochs to let early stopping decide.",
                    ConvergenceWarning,
                )
            self.history_, self.n_iter_, self.decoder_ = [], 0, decoder
            self._concept_names = self._concepts_of(decoder)
            self._store(module, optimizer, generator, result, origin)
        return self

    @ignores_autocast
    @outside_inference_mode
    @fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X: ArrayLike, y: ArrayLike = None) -> Self:
        """Train for one epoch over ``X``, continuing from the current state.

        The first call initialises the model from ``X``; later calls keep the
        weights, the optimiser's moments and the shuffling stream, so a
        stream of batches trains as one long run. After a :meth:`fit` that
        stopped early, that is the best epoch's weights with the last
        epoch's optimiser moments; ``history_`` continues with records that
        have no validation scores. ``max_epochs`` and
        ``validation_fraction`` do not apply. Training parameters changed
        with ``set_params`` between calls (``lr``, ``weight_decay``,
        ``sparsity_coef``, ``batch_size``, ...) apply from the next call;
        changing ``n_components``, ``activation``, ``k`` (of the activations
        that take it), ``bandwidth`` (of JumpReLU), ``freeze_decoder`` or a
        frozen ``decoder`` (to other atoms, or a
        provider with other parameters; one changed in place is not always
        detected) raises a ``ValueError``, as
        that needs a new model (:meth:`fit`); invalid values raise as in
        :meth:`fit`. A call that raises leaves the model as it was: one
        whose loss diverges (``FloatingPointError``), or one interrupted
        (``KeyboardInterrupt``, out of memory). For that, each call first
        copies the model and the optimiser's state (three times the weights'
        memory, for the time of the call): on an SAE of 8,192 latents over
        512 features, a call of one optimisation step took about 86 ms
        against 42 ms a step within an epoch, so stream chunks of many
        ``batch_size`` batches. Within a call, each ``batch_size`` rows (and
        a shorter last batch) make one optimiser step, so a call of a few rows
        is a full step on a noisy gradient: merge short chunks into the next
        rather than stream them alone.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A batch of training data.
        y : array-like, default=None
            Passed to the ``decoder`` estimator's ``fit`` on the first call.

        Returns
        -------
        self : SparseAutoencoder
            The updated autoencoder.
        """
        if not hasattr(self, "module_"):
            self._check_settings()
            with forget_fit_on_failure(self):
                X_t, origin = validate_input(self, X, reset=True, device=self.device)
                generator = torch_generator(self.random_state)
                module, decoder = self._init_module(X, y, X_t, generator)
                optimizer = self._optimizer(module)
                # One epoch per call: a bar per call only from verbose=2.
                quieter = self.verbose - 1
                result = self._train(
                    module, X_t, optimizer, generator, epochs=1, verbose=quieter
                )
                self.history_, self.n_iter_, self.decoder_ = [], 0, decoder
                self._concept_names = self._concepts_of(decoder)
                self._store(module, optimizer, generator, result, origin)
            return self
        # scikit-learn validates partial_fit's parameters on the first call
        # only; set_params may have changed them since.
        self._validate_params()
        self._check_same_model()
        self._check_k(self.module_.n_components)
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        # Kept to leave the model as it was, not with NaN or half-trained
        # weights, if this call diverges or is interrupted.
        snapshot = copy.deepcopy((self.module_, self._optimizer_state))
        module = self.module_.to(X_t.device)
        # Training continues in the model's own precision, and the fitted
        # attributes keep it: a batch in another dtype must not round them.
        X_t = as_tensor(X_t, device=X_t.device, dtype=module.W_dec.dtype, name="X")
        origin = origin._replace(dtype=X_t.dtype)
        generator = torch.Generator().set_state(self._rng_state)
        optimizer = self._optimizer(module)
        if optimizer is not None:
            optimizer.load_state_dict(self._optimizer_state)
            # The loaded state carries the previous call's values: a changed
            # lr or weight_decay (a schedule) applies from this call on, as
            # in scikit-learn's SGD estimators.
            for group in optimizer.param_groups:
                group.update(lr=self.lr, weight_decay=self.weight_decay)
        try:
            result = self._train(
                module,
                X_t,
                optimizer,
                generator,
                epochs=1,
                samples_since_fired=self._samples_since_fired,
                first_epoch=self.n_iter_ + 1,
                verbose=self.verbose - 1,
            )
        except BaseException:
            # A diverging loss, and equally an interruption (Ctrl-C, out of
            # memory) halfway through the epoch: the weights were updated in
            # place, and the loaded optimiser shares the saved state's tensors.
            self.module_, self._optimizer_state = snapshot
            raise
        self._store(module, optimizer, generator, result, origin)
        return self

    def _check_same_model(self) -> None:
        """Refuse to continue training after a change to the model's structure."""
        fitted_with = getattr(self, "_model_params", None)
        if fitted_with is None:  # pickled before these were recorded
            return
        for name, value in fitted_with.items():
            if not self._affects_model(name):
                continue
            if name == "decoder":
                if not is_same_given(self.decoder, value):
                    raise ValueError(
                        "partial_fit continues the model whose frozen decoder "
                        "was given at its first call; a new decoder needs a "
                        "new model: call fit, or partial_fit on a clone."
                    )
            elif getattr(self, name) != value:
                raise ValueError(
                    f"partial_fit continues the model fitted with {name}={value!r}; "
                    f"{name}={getattr(self, name)!r} needs a new model: call fit, "
                    "or partial_fit on a clone."
                )

    def _affects_model(self, name: str) -> bool:
        """Whether the parameter ``name``'s value shapes the current model."""
        if name == "n_components":  # None: the fitted width, as from a decoder
            return self.n_components is not None
        if name == "k":
            return self.activation in ACTIVATIONS_WITH_K
        if name == "bandwidth":
            return self.activation == "jumprelu"
        if name == "decoder":  # only a frozen decoder is the model's own
            return self.freeze_decoder
        return True

    def _split(self, X_t, generator):
        """Return the training rows, the validation rows and the training indices."""
        if self.validation_fraction is None:
            return X_t, None, None
        n = X_t.shape[0]
        n_val = math.ceil(self.validation_fraction * n)
        if n - n_val < 1:
            samples = "1 sample" if n == 1 else f"{n} samples"
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves no training "
                f"sample out of {samples}; lower it or pass more samples."
            )
        order = torch.randperm(n, generator=generator, device="cpu")
        train_rows = order[n_val:]
        return (
            RowSubset(X_t, train_rows),
            RowSubset(X_t, order[:n_val]),
            train_rows.numpy(),
        )

    def _init_module(self, X, y, X_t, generator):
        """Return the initialised module and the fitted decoder provider (or None)."""
        n_features = X_t.shape[1]
        atoms, bias, provider = None, None, None
        n_components = self.n_components
        if self.decoder is not None:
            resolved = resolve_dictionary(
                self.decoder,
                X,
                y,
                device=X_t.device,
                dtype=X_t.dtype,
                n_features=n_features,
                name="decoder",
            )
            provider = resolved.estimator
            atoms = resolved.components
            n_components = check_n_components(
                n_components, atoms.shape[0], "the decoder"
            )
            if self.freeze_decoder or resolved.has_intercept:
                bias = resolved.intercept
            if not self.freeze_decoder:
                atoms = _normalize_atoms(atoms)[0]
        elif n_components is None:
            # As FISTACoder and scikit-learn's decompositions: one latent per
            # feature (SparseAutoencoder() could not be fitted).
            n_components = n_features
        check_holdable(
            n_components * n_features,
            X_t.dtype,
            f"n_components={n_components} latents of n_features={n_features} "
            "features make",
        )
        self._check_k(n_components)
        if self.k is not None and self.activation not in ACTIVATIONS_WITH_K:
            # SparseAutoencoder(50, k=5) trained a ReLU SAE firing 48 of its
            # 50 latents: the activation was left at its default.
            warn(
                f"k={self.k} is used only with activation 'topk', 'batchtopk' "
                f"or 'mp'; it is ignored with activation={self.activation!r}. "
                "Pass activation='topk' for k active latents per sample.",
                UserWarning,
            )
        if self.aux_k is not None and self.activation not in _AUX_ACTIVATIONS:
            # As scikit-learn warns of a parameter its other settings ignore.
            warn(
                f"aux_k={self.aux_k} is used only with activation 'topk' or "
                f"'batchtopk'; it is ignored with activation={self.activation!r}.",
                UserWarning,
            )
        if bias is None and self.bias_init == "mean":
            bias = X_t.mean(dim=0)
        if self.activation == "mp" and self.freeze_decoder:
            norms = torch.linalg.vector_norm(atoms, dim=1)
            if not bool(
                torch.allclose(
                    norms, torch.ones_like(norms), rtol=0, atol=_UNIT_NORM_TOL
                )
            ):
                raise ValueError(
                    "activation='mp' with freeze_decoder=True needs unit-norm "
                    f"decoder atoms; their norms range over [{float(norms.min()):.4g}, "
                    f"{float(norms.max()):.4g}]. Normalise the rows of the decoder."
                )
        module = build_sae(
            self.activation,
            n_features,
            n_components,
            k=self.k,
            bandwidth=self.bandwidth,
            threshold_init=self.threshold_init,
            dtype=X_t.dtype,
            device=X_t.device,
        )
        module.reset_parameters(generator, decoder=atoms, bias=bias)
        if self.freeze_decoder:
            # Training leaves them alone whatever the flag; an optimiser a user
            # builds over module_.parameters() must too.
            module.W_dec.requires_grad_(False)
            module.b_dec.requires_grad_(False)
        return module, provider

    def _check_settings(self) -> None:
        """Refuse the settings that are wrong whatever the data.

        Before :func:`forget_fit_on_failure`: as an invalid hyper-parameter,
        they leave a fitted estimator as it was (a refit with
        ``activation='topk'`` and no ``k`` discarded the previous fit).
        """
        if self.freeze_decoder and self.decoder is None:
            raise ValueError(
                "freeze_decoder=True needs a decoder: pass decoder= an array of "
                "atoms or an estimator exposing components_."
            )
        self._check_k(self.n_components)

    def _check_k(self, n_components: int | None) -> None:
        """Check ``k`` and ``aux_k`` (against ``n_components`` when known)."""
        if self.activation in ACTIVATIONS_WITH_K:
            if self.k is None:
                raise ValueError(
                    f"activation={self.activation!r} needs k, the number of active "
                    "latents per sample; got k=None."
                )
            if n_components is not None and self.k > n_components:
                raise ValueError(
                    f"k={self.k} must be at most {self._width(n_components)}."
                )
        if (
            n_components is not None
            and self.activation in _AUX_ACTIVATIONS
            and self.aux_k is not None
            and self.aux_k > n_components
        ):
            raise ValueError(
                f"aux_k={self.aux_k} must be at most {self._width(n_components)}."
            )

    def _width(self, n_components: int) -> str:
        """Name the SAE's width ``n_components`` for a message."""
        if self.n_components is not None:
            return f"n_components={n_components}"
        source = "per decoder atom" if self.decoder is not None else "per feature"
        return f"the {n_components} latents (n_components=None: one {source})"

    def _dead_after(self, n_components: int) -> int:
        """Return the samples without firing that make a latent dead (0: one epoch)."""
        if self.dead_after is not None:
            return self.dead_after
        if self.activation in ACTIVATIONS_WITH_K:
            return math.ceil(10 * n_components / self.k)
        return 0

    def _optimizer(self, module):
        return make_optimizer(
            module,
            lr=self.lr,
            weight_decay=self.weight_decay,
            train_decoder=not self.freeze_decoder,
        )

    def _train(
        self,
        module,
        X_t,
        optimizer,
        generator,
        *,
        epochs=None,
        X_val=None,
        samples_since_fired=None,
        first_epoch=1,
        verbose=None,
    ):
        return train(
            module,
            X_t,
            optimizer=optimizer,
            generator=generator,
            epochs=self.max_epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            sparsity_coef=self.sparsity_coef,
            train_decoder=not self.freeze_decoder,
            aux_k=self.aux_k if self.activation in _AUX_ACTIVATIONS else None,
            aux_coef=self.aux_coef,
            dead_after=self._dead_after(module.n_components),
            samples_since_fired=samples_since_fired,
            X_val=X_val,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            first_epoch=first_epoch,
            verbose=self.verbose if verbose is None else verbose,
        )

    def _store(self, module, optimizer, generator, result, origin) -> None:
        self.__dict__.pop("_moved_module", None)
        self.module_ = module
        self._model_params = {name: getattr(self, name) for name in _MODEL_PARAMS}
        self._model_params["n_components"] = module.n_components
        self._model_params["decoder"] = record_given(self.decoder)
        # components_ and intercept_ are made from the module when read.
        self._fitted_origin = origin
        self._decoder_copies = {}
        # In place: a copy per call made long streams slower with every call
        # (1.4 ms a call at the start, 11 ms after a million calls).
        self.history_.extend(result.history)
        self.n_iter_ += len(result.history)
        self._optimizer_state = None if optimizer is None else optimizer.state_dict()
        self._rng_state = generator.get_state()
        self._samples_since_fired = result.samples_since_fired

    @property
    def components_(self) -> Any:  # documented in the class docstring
        return self._decoder_attribute("W_dec", "components_")

    @components_.setter
    def components_(self, value: Any) -> None:
        self._refuse_decoder_assignment("W_dec", "components_")

    @property
    def intercept_(self) -> Any:  # documented in the class docstring
        return self._decoder_attribute("b_dec", "intercept_")

    @intercept_.setter
    def intercept_(self, value: Any) -> None:
        self._refuse_decoder_assignment("b_dec", "intercept_")

    def _refuse_decoder_assignment(self, name: str, attribute: str) -> None:
        raise AttributeError(
            f"{attribute} is read from module_.{name}, which transform and "
            "inverse_transform use: change that instead, in place under "
            f"torch.no_grad() (e.g. sae.module_.{name}.copy_(torch.as_tensor(new)))."
        )

    def _decoder_attribute(self, name: str, attribute: str) -> Any:
        """``module_``'s decoder parameter ``name``, as the fitted ``attribute``.

        Read from the module, so that it follows a ``load_state_dict`` or an
        in-place change (under :func:`torch.no_grad`) made to ``module_``: a
        copy stored once went stale, and ``dictionary_similarity`` or
        ``FISTACoder(dictionary=FrozenEstimator(sae))`` used the old atoms
        while ``transform`` used the new ones. The copy, in the array type of
        the data last fitted on, is kept while the module and the parameter's
        storage and version counter stay the same (as in :meth:`_module_for`),
        so that reading it costs nothing and arrays handed out before do not
        change with the module.
        """
        module = self.__dict__.get("module_")
        if module is None:  # unfitted: hasattr must say False
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {attribute!r}"
            )
        param = getattr(module, name)
        # An inference tensor has no version counter to tell an in-place
        # change by (made inside inference mode): no key, never kept, copied
        # afresh at every read.
        key = None if param.is_inference() else _version_key(param)
        held = self._decoder_copies.get(name)
        if (
            held is not None
            and held[0]() is module
            and held[1] == key
            and _unchanged(held[2], held[3])
        ):
            return held[2]
        # Outside inference mode: a copy made inside it would be an inference
        # tensor, which autograd and in-place operations refuse afterwards.
        with torch.inference_mode(False):
            value = to_fitted(param.detach().clone(), self._fitted_origin)
        if isinstance(value, np.ndarray):
            # An edit of the copy would reach every later reader of the
            # attribute but not the module that codes.
            value.flags.writeable = False
        if key is not None:
            # A weak reference: a module replaced or forgotten is not kept.
            self._decoder_copies[name] = (
                weakref.ref(module),
                key,
                value,
                _version_of(value),
            )
        return value

    # ------------------------------------------------------------ transform

    def _module_for(self, T: torch.Tensor) -> SAE:
        """Return the fitted module on ``T``'s device and dtype (copied if moved).

        The copy is kept for the next call: copying and casting the module
        took 80 % of the time of coding small batches in another dtype (an
        8,192-atom model, batches of 16 rows: 49 ms a call against 4.6 ms).
        It is reused only for the same module object (held, so that its id
        cannot pass to another) whose parameters and buffers keep their
        storage and version counters: training, an in-place change, a
        ``load_state_dict`` or a ``.data`` assignment makes a fresh one. An
        in-place change through ``.data`` (``p.data.copy_(...)``) bypasses
        version counters, as it does autograd's checks, and is not seen:
        change parameters under :func:`torch.no_grad` instead.
        """
        module = self.module_
        W = module.W_dec
        if W.device == T.device and W.dtype == T.dtype:
            return module
        tensors = list(itertools.chain(module.parameters(), module.buffers()))
        if any(t.is_inference() for t in tensors):
            # No version counters to tell a change by (a state loaded in
            # inference mode): copied afresh every call.
            return copy.deepcopy(module).to(device=T.device, dtype=T.dtype)
        key = (T.device, T.dtype, tuple(_version_key(t) for t in tensors))
        cached = getattr(self, "_moved_module", None)
        if cached is not None and cached[0] is module and cached[1] == key:
            return cached[2]
        moved = copy.deepcopy(module).to(device=T.device, dtype=T.dtype)
        self._moved_module = (module, key, moved)
        return moved

    def _encode(self, module: SAE, X_t: torch.Tensor) -> torch.Tensor:
        """Dense codes of ``X_t``, coded in chunks of rows."""
        codes = X_t.new_empty(X_t.shape[0], module.n_components)
        start = 0
        for rows in chunks(module, X_t):
            chunk = module.encode(rows)
            if isinstance(chunk, SparseCodes):
                chunk = chunk.to_dense()
            codes[start : start + len(rows)] = chunk
            start += len(rows)
        return codes

    def fit_transform(self, X: ArrayLike, y: ArrayLike = None) -> Any:
        """Train the autoencoder on ``X`` and return its codes.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Training data.
        y : array-like, default=None
            Passed to the ``decoder`` estimator's ``fit``.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        return self.fit(X, y).transform(X)

    @ignores_autocast
    def transform(self, X: ArrayLike) -> Any:
        """Encode ``X``.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray or torch.Tensor of shape (n_samples, n_components)
            In the array type, device and dtype of ``X`` (float64 for
            integer and NumPy float16 input, as in scikit-learn).
        """
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="components_", method="transform")
        X_t, origin = validate_input(self, X, reset=False, device=self.device)
        return to_output(self._encode(self._module_for(X_t), X_t), origin, self)

    @ignores_autocast
    def inverse_transform(self, X: ArrayLike) -> Any:
        """Decode codes: ``X @ components_ + intercept_``.

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
        with torch.no_grad():
            return to_output(self._module_for(codes).decode(codes), origin)

    @ignores_autocast
    def score(self, X: ArrayLike, y: ArrayLike = None) -> float:
        """Negative mean squared reconstruction error of ``X`` (greater is better).

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
        check_same_namespace(X, self, attribute="components_", method="score")
        X_t, _ = validate_input(self, X, reset=False, device=self.device)
        sums, _ = evaluate(self._module_for(X_t), X_t)
        return -float(sums[0]) / X_t.numel()

    @property
    def _n_features_out(self):
        # The module's, not components_'s: no copy of the atoms to count them.
        return self.module_.n_components

    def _concepts_of(self, decoder):
        # Read at fit: the provider may be refitted on other concepts later,
        # and trained atoms are no longer the concepts.
        return concept_names_of(decoder) if self.freeze_decoder else None

    def __getstate__(self):
        state = super().__getstate__()  # the instance's own __dict__
        # Caches, rebuilt on demand: the moved module, and the fitted
        # attributes' copies and origin (an origin may hold an array
        # namespace, a module, which does not pickle).
        caches = ("_moved_module", "_decoder_copies", "_fitted_origin")
        state = {k: v for k, v in state.items() if k not in caches}
        origin = self.__dict__.get("_fitted_origin")
        if origin is not None and "module_" in state:
            # The fitted attributes' array type, as an empty array of it.
            state["_fitted_type"] = to_fitted(torch.empty(0, device="cpu"), origin)
        return portable_state(state)

    def __setstate__(self, state):
        # Pickles made before components_ was read from the module hold it,
        # and those of the first versions that read it, its copies.
        copies = state.pop("_decoder_copies", None) or {}
        held = copies.get("W_dec")
        sample = state.pop(
            "_fitted_type",
            state.pop("components_", None if held is None else held[2]),
        )
        state.pop("intercept_", None)
        if sample is not None:
            state["_fitted_origin"] = origin_of(sample)
        state["_decoder_copies"] = {}
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        take_providers_tags(tags, self.decoder)
        return tags


def _version_of(value: Any) -> int | None:
    """Return the in-place version counter of a tensor handed out, else None."""
    if isinstance(value, torch.Tensor) and not value.is_inference():
        return value._version
    return None


def _unchanged(value: Any, version: int | None) -> bool:
    """Whether a tensor handed out is as it was (a caller may have edited it)."""
    return version is None or value._version == version


def _version_key(tensor: torch.Tensor) -> tuple[int, int]:
    """Storage and version counter of ``tensor``: a change to either is a change.

    Not for inference tensors, which have no version counter.
    """
    return tensor.data_ptr(), tensor._version


def _take_rows(values: Any, rows: np.ndarray) -> Any:
    """Return the given rows of ``values`` (array, list, tensor or sparse matrix)."""
    if values is None:
        return None
    if sp.issparse(values):
        return values.tocsr()[rows]
    if isinstance(values, torch.Tensor) and values.layout != torch.strided:
        # index_select has no kernels for the compressed layouts (CSR, CSC).
        coo = values if values.layout == torch.sparse_coo else values.to_sparse()
        return coo.index_select(0, torch.as_tensor(rows, device=values.device))
    return _safe_indexing(values, rows)
