"""The paper's methods, each one configuration of skdict's public estimators.

Every row of the paper's comparison (arXiv 2603.28744) is built here
from :class:`~skdict.FISTACoder`, :class:`~skdict.SparseAutoencoder`,
:class:`~skdict.OracleDictionary` and :class:`sklearn.linear_model.RidgeCV`,
with the paper's settings as defaults (:class:`PaperSettings`). Nothing here
reaches into an estimator's internals: composing the public pieces *is* the
experiment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import RidgeCV
from sklearn.utils import Bunch
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
)

from .._fista_coder import FISTACoder
from .._oracle import OracleDictionary
from .._params import validate_hyperparameters
from .._sae import SparseAutoencoder
from .._sae._estimator import ACTIVATIONS_WITH_K

__all__ = ["METHODS", "SAE_METHODS", "Method", "PaperSettings"]


#: A seed of the experiments: what NumPy's and torch's generators take.
SEED = Interval(Integral, 0, 2**32 - 1, closed="both")

SAE_METHODS = ("sae_relu", "sae_topk", "sae_batchtopk", "sae_jumprelu", "sae_mp")


@dataclass(frozen=True)
class PaperSettings:
    """Training and inference settings; the defaults are the paper's.

    Attributes
    ----------
    alpha : float
        L1 weight of every FISTA coder (the paper's lambda = 0.1).
    sae_epochs : int
        SAE training epochs (500).
    sae_lr : float
        AdamW learning rate (5e-4).
    sae_batch_size : int
        SAE mini-batch size (64).
    sae_bias_init : {"zero", "mean"}
        Initial decoder bias of the SAEs: zero, as in the paper, or the
        training data's mean (:class:`~skdict.SparseAutoencoder`'s default).
    sparsity_coef : float
        Weight of the ReLU SAE's L1 penalty and the JumpReLU SAE's L0 penalty
        (1e-4).
    dict_max_iter : int
        Dictionary-learning rounds for DL-FISTA (100; :class:`~skdict.FISTACoder`'s
        own default is 50).
    probe_alphas : tuple of float
        Ridge penalties searched by the supervised linear probe's
        leave-one-out cross-validation (the paper's 1e-6, 1e-4, 1e-2, 1 and
        10; the probe, as the paper's, fits no intercept).
    base_sae : {"topk", "relu", "batchtopk", "jumprelu", "mp"}
        The SAE activation whose fitted dictionary the SAE + FISTA methods
        reuse (``sae_dict_fista``, ``sae_refined_fista``, ``dl_fista_sae_init``;
        ``"topk"``).
    oracle_encoder_activation : {"relu", "topk", "batchtopk", "jumprelu", "mp"}
        Activation of the SAE encoder trained under the frozen oracle
        dictionary (``"relu"``).

    Examples
    --------
    >>> from skdict.experiments import PaperSettings
    >>> settings = PaperSettings()
    >>> settings.alpha, settings.sae_lr, settings.sae_epochs
    (0.1, 0.0005, 500)
    >>> settings.replace(sae_epochs=50).sae_epochs  # a copy with changes
    50
    """

    alpha: float = 0.1
    sae_epochs: int = 500
    sae_lr: float = 5e-4
    sae_batch_size: int = 64
    sae_bias_init: str = "zero"
    sparsity_coef: float = 1e-4
    dict_max_iter: int = 100
    probe_alphas: tuple[float, ...] = (1e-6, 1e-4, 1e-2, 1.0, 10.0)
    base_sae: str = "topk"
    oracle_encoder_activation: str = "relu"

    def __post_init__(self) -> None:
        # Each setting is checked by the constraint of the estimator parameter
        # it feeds, so that a bad value fails here, before any study runs,
        # with the message that estimator would give.
        coder = FISTACoder._parameter_constraints
        sae = SparseAutoencoder._parameter_constraints
        try:
            probe_alphas = np.asarray(self.probe_alphas, dtype=float)
        except (TypeError, ValueError):
            probe_alphas = np.empty(0)  # reported below, like any other bad value
        if (
            probe_alphas.ndim != 1
            or probe_alphas.size == 0
            or not np.all(np.isfinite(probe_alphas) & (probe_alphas > 0))
        ):
            raise ValueError(
                "The 'probe_alphas' parameter of PaperSettings must be a non-empty "
                f"sequence of positive floats; got {self.probe_alphas!r}."
            )
        validate_hyperparameters(
            {
                "alpha": coder["alpha"],
                "dict_max_iter": coder["dict_max_iter"],
                "sae_epochs": sae["max_epochs"],
                "sae_lr": sae["lr"],
                "sae_batch_size": sae["batch_size"],
                "sae_bias_init": sae["bias_init"],
                "sparsity_coef": sae["sparsity_coef"],
                "base_sae": [StrOptions({m.removeprefix("sae_") for m in SAE_METHODS})],
                "oracle_encoder_activation": sae["activation"],
            },
            dataclasses.asdict(self),
            caller_name="PaperSettings",
        )
        # Stored as the annotated Python types: NumPy scalars and arrays pass
        # the checks, but a study's results are saved as JSON and resumed by
        # comparing settings, and a list equal to the default tuple must
        # compare equal to it (and hash).
        normal = {"probe_alphas": tuple(float(a) for a in probe_alphas)}
        for setting in dataclasses.fields(self):
            if setting.type in ("int", "float"):
                normal[setting.name] = {"int": int, "float": float}[setting.type](
                    getattr(self, setting.name)
                )
        for name, value in normal.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> PaperSettings:
        """Return a copy with some settings changed.

        Parameters
        ----------
        **changes
            New values by setting name; an unknown name raises a ``TypeError``.

        Returns
        -------
        PaperSettings
            The new settings, validated as at construction.
        """
        return dataclasses.replace(self, **changes)


@dataclass
class MethodContext:
    """What a method's builder may use: the data, settings, seed and device.

    ``fitted_saes`` shares SAEs between methods of one comparison: the SAE +
    FISTA methods reuse the SAE trained by the ``sae_*`` method of the same
    activation instead of training it again. It is keyed by the SAE's
    parameters, so that a study can share it between comparisons of the same
    data (the alpha sweep's cells, whose SAEs do not depend on alpha).
    """

    data: Bunch
    settings: PaperSettings
    seed: int | None
    device: str
    fitted_saes: dict[str, SparseAutoencoder] = field(default_factory=dict)

    @property
    def n_latents(self) -> int:
        return self.data.dictionary.shape[0]

    @property
    def n_active(self) -> int:
        if "n_active" in self.data:
            return int(self.data.n_active)
        # A Bunch built by hand: every row of the generator's codes holds the
        # same number of latents, so the first row tells (dense or sparse).
        first = self.data.Z_train[:1]
        return int(
            first.count_nonzero() if sp.issparse(first) else np.count_nonzero(first)
        )

    def sae(self, activation: str) -> SparseAutoencoder:
        """Return an unfitted SAE with the paper's settings (width = n_latents)."""
        return SparseAutoencoder(**self._sae_params(activation))

    def _sae_params(self, activation: str) -> dict[str, Any]:
        s = self.settings
        uses_k = activation in ACTIVATIONS_WITH_K
        return dict(
            n_components=self.n_latents,
            activation=activation,
            k=self.n_active if uses_k else None,
            sparsity_coef=s.sparsity_coef,
            lr=s.sae_lr,
            batch_size=s.sae_batch_size,
            bias_init=s.sae_bias_init,
            max_epochs=s.sae_epochs,
            device=self.device,
            random_state=self.seed,
        )

    def fitted_sae(self, activation: str) -> SparseAutoencoder:
        """Return the SAE of this activation trained on the training half (cached)."""
        key = self._sae_key(activation)
        if key not in self.fitted_saes:
            self.fitted_saes[key] = self.sae(activation).fit(self.data.X_train)
        return self.fitted_saes[key]

    def keep_sae(self, activation: str, sae: SparseAutoencoder) -> None:
        """Share ``sae``, the fitted ``self.sae(activation)``, with later methods."""
        self.fitted_saes.setdefault(self._sae_key(activation), sae)

    def _sae_key(self, activation: str) -> str:
        # Everything an SAE trained on these data depends on.
        return repr(sorted(self._sae_params(activation).items()))

    def coder(self, **params: Any) -> FISTACoder:
        """Return a FISTA coder with the paper's lambda and non-negative codes."""
        return FISTACoder(
            alpha=self.settings.alpha,
            positive=True,
            device=self.device,
            random_state=self.seed,
            **params,
        )


@dataclass(frozen=True)
class Method:
    """One row of the comparison.

    Attributes
    ----------
    name : str
        Identifier used by :func:`~skdict.experiments.compare_methods` and the
        command line.
    label : str
        Name for tables and figures.
    fit_on : {"train", "val"}
        The split the estimator is fitted on. SAEs and the probe train on the
        training half; the oracle and DL-FISTA code the validation half, as in
        the paper.
    build : callable
        ``build(context) -> estimator`` (unfitted, or wrapping fitted parts);
        the context gives the comparison's ``data``, ``settings``
        (:class:`PaperSettings`), ``seed`` and ``device``.
    supervised : bool
        Fit with the ground-truth codes of ``fit_on`` as ``y``.
    uses_alpha : bool
        Codes with FISTA at ``PaperSettings.alpha``, the penalty the alpha
        study sweeps.
    uses_base_sae : bool
        Built on the SAE of ``PaperSettings.base_sae``, which it trains (in its
        ``fit_time``) unless the ``sae_*`` method of that activation runs in
        the same comparison (before it, whatever the order asked), or an
        earlier cell of a study on the same data trained it (the alpha
        sweep's cells).
    when_named : bool
        Runs only when named (or in a study that names it), not among the
        default methods of :func:`~skdict.experiments.compare_methods`.

    Examples
    --------
    >>> from skdict.experiments import METHODS
    >>> method = METHODS["dl_fista"]
    >>> method.label, method.fit_on, method.supervised
    ('DL-FISTA', 'val', False)
    """

    name: str
    label: str
    fit_on: str
    build: Callable[[MethodContext], BaseEstimator]
    supervised: bool = False
    uses_alpha: bool = False
    uses_base_sae: bool = False
    when_named: bool = False

    def __post_init__(self) -> None:
        # Any other value fitted on the validation split, which is also the
        # one scored in distribution: "Train" made every ID score in-sample.
        validate_hyperparameters(
            {"fit_on": [StrOptions({"train", "val"})], "build": [callable]},
            {"fit_on": self.fit_on, "build": self.build},
            caller_name="Method",
        )


def _sae_method(activation: str, label: str) -> Method:
    return Method(f"sae_{activation}", label, "train", lambda ctx: ctx.sae(activation))


def _frozen_base_sae(ctx: MethodContext) -> FrozenEstimator:
    return FrozenEstimator(ctx.fitted_sae(ctx.settings.base_sae))


#: Every method of the paper's comparison, by name: its :class:`Method` definition.
METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "fista_oracle",
            "FISTA (oracle dictionary)",
            "val",
            lambda ctx: OracleDictionary(
                ctx.data.dictionary,
                alpha=ctx.settings.alpha,
                positive=True,
                device=ctx.device,
            ),
            uses_alpha=True,
        ),
        Method(
            "dl_fista",
            "DL-FISTA",
            "val",
            lambda ctx: ctx.coder(
                n_components=ctx.n_latents, dict_max_iter=ctx.settings.dict_max_iter
            ),
            uses_alpha=True,
        ),
        _sae_method("relu", "SAE (ReLU)"),
        _sae_method("topk", "SAE (TopK)"),
        _sae_method("batchtopk", "SAE (BatchTopK)"),
        _sae_method("jumprelu", "SAE (JumpReLU)"),
        _sae_method("mp", "SAE (MP)"),
        Method(
            "sae_dict_fista",
            "SAE dictionary + FISTA",
            "val",
            lambda ctx: ctx.coder(dictionary=_frozen_base_sae(ctx)),
            uses_alpha=True,
            uses_base_sae=True,
        ),
        Method(
            "sae_refined_fista",
            "FISTA refined from SAE codes",
            "val",
            lambda ctx: ctx.coder(
                dictionary=_frozen_base_sae(ctx), init=_frozen_base_sae(ctx)
            ),
            uses_alpha=True,
            uses_base_sae=True,
        ),
        Method(
            "dl_fista_sae_init",
            "DL-FISTA from SAE dictionary",
            "val",
            lambda ctx: ctx.coder(
                n_components=ctx.n_latents,
                dict_max_iter=ctx.settings.dict_max_iter,
                init=_frozen_base_sae(ctx),
            ),
            uses_alpha=True,
            uses_base_sae=True,
            # The controlled study's warm start; not in the main comparison.
            when_named=True,
        ),
        Method(
            "oracle_sae_encoder",
            "Oracle dictionary + SAE encoder",
            "train",
            lambda ctx: ctx.sae(ctx.settings.oracle_encoder_activation).set_params(
                decoder=OracleDictionary(ctx.data.dictionary), freeze_decoder=True
            ),
        ),
        Method(
            "linear_probe",
            "Linear probe (ridge)",
            "train",
            lambda ctx: RidgeCV(alphas=ctx.settings.probe_alphas, fit_intercept=False),
            supervised=True,
        ),
    ]
}


def methods_needing_k(methods: Sequence[Method], settings: PaperSettings) -> list[str]:
    """Names of ``methods`` that build an SAE keeping ``k`` latents per sample.

    The ``sae_*`` method of such an activation, the methods on the base SAE
    when it is one, and the oracle's encoder when it is one.
    """
    needing = []
    for method in methods:
        activations = set()
        if method.name in SAE_METHODS:
            activations.add(method.name.removeprefix("sae_"))
        if method.uses_base_sae:
            activations.add(settings.base_sae)
        if method.name == "oracle_sae_encoder":
            activations.add(settings.oracle_encoder_activation)
        if activations & set(ACTIVATIONS_WITH_K):
            needing.append(method.name)
    return needing
