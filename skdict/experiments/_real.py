"""Compositional concepts inside a real transformer: probing versus coding.

The synthetic studies know the true dictionary; on a real network the only
ground truth is the concepts each phrase names. :func:`compare_real` takes the
activations of :func:`skdict.datasets.load_phrase_activations` -- every colour
crossed with every object, some colour–object pairs held out of training while
each of their colours and objects is still seen in other pairs -- and asks of
every method the question an interpretability researcher asks of a sparse
autoencoder: on a pair never seen in training, can a probe still read the
colour and the object, and do the colour feature and the object feature both
fire? :func:`run_real` saves the records and a figure, as
:func:`~skdict.experiments.run_study` does for the synthetic studies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import mannwhitneyu
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, InvalidParameterError
from tqdm.auto import tqdm

from .._oracle import OracleDictionary
from .._params import count_from, is_count, validate_hyperparameters
from .._tensor import resolve_device, to_numpy
from .._typing import Bool, Int
from .._warnings import ignoring, warn
from ..datasets import load_phrase_activations
from ..datasets._phrases import _model_folder, model_name
from ..metrics import probe_accuracy, reconstruction_error
from ..metrics._inputs import as_matrices
from ..metrics._probing import check_probe
from ._compare import (
    ENVIRONMENT_KEYS,
    _plain,
    check_data,
    computed_with,
    methods_progress,
    resolve_methods,
)
from ._methods import (
    METHODS,
    SAE_METHODS,
    SEED,
    Method,
    MethodContext,
    PaperSettings,
    methods_needing_k,
)
from ._report import (
    OKABE_ITO,
    _format,
    _summary,
    align_rows,
    check_figure_size,
    check_plots_extra,
    check_records,
    error_bars_caption,
    fewer_seeds_note,
    figure_path,
    save_figure,
)
from ._runner import check_output_dir, save_records, saved_form
from ._studies import PRESETS, check_seeds

__all__ = [
    "REAL_METHODS",
    "REAL_RECORD_KEYS",
    "check_real_extra",
    "compare_real",
    "concept_features",
    "format_real_table",
    "plot_real",
    "run_real",
]

#: The concept families of the phrases; each is read by its own probe.
FAMILIES = ("color", "object")

#: Scores of the methods with a dictionary: None for the probe on raw activations.
DICTIONARY_KEYS = (
    "both_fire_val",
    "both_fire_ood",
    "stray_fire_val",
    "stray_fire_ood",
    "feature_auc_val",
    "feature_auc_ood",
    "mse_val",
    "mse_ood",
    "mse_gap",
    "l0_ood",
)

#: Keys present in every record returned by :func:`compare_real`.
REAL_RECORD_KEYS = (
    "method",
    "label",
    "n_components",
    "k",
    "settings",
    "color_acc_val",
    "color_acc_ood",
    "object_acc_val",
    "object_acc_ood",
    *DICTIONARY_KEYS,
    "fit_time",
    "transform_time",
    *ENVIRONMENT_KEYS,
)

#: Record keys of the table and figure, with their column headers.
TABLE_COLUMNS = {
    "color_acc_val": "colour seen",
    "color_acc_ood": "colour OOD",
    "object_acc_val": "object seen",
    "object_acc_ood": "object OOD",
    "both_fire_val": "both fire seen",
    "both_fire_ood": "both fire OOD",
    "stray_fire_ood": "stray fire OOD",
    "mse_val": "MSE seen",
    "mse_gap": "MSE gap",
}


def _concept_atoms(ctx: MethodContext) -> Any:
    """Return the least-squares concept directions of the training phrases.

    The atoms are rescaled to unit norm, as every other dictionary here and in
    the paper, which puts every concept at the same L1 price: the colour
    directions are about a third as long as the object ones, and at the
    paper's ``alpha`` FISTA would otherwise never find a colour worth its
    cost. Every phrase names one colour and one object, so the indicator
    columns of each family sum to one and least squares alone does not fix
    how the activations' mean splits between colour and object atoms; the
    minimum-norm split gives each family half, with as many colours as
    objects (``benchmarks/RESULTS.md`` shows how much the split matters).
    """
    data = ctx.data
    # The dependence above is known and resolved by the minimum-norm split.
    with ignoring(UserWarning, "The columns of y are linearly dependent"):
        atoms = OracleDictionary().fit(data.X_train, data.Z_train).components_
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


# The methods of the synthetic comparison, all fitted here on the training
# phrases: the synthetic study fits the oracle and the FISTA coders on the
# validation half it then codes, but here every probe learns on training codes,
# so every dictionary must come from there too. The oracle has no true
# dictionary to be given: its atoms are the concept directions that least
# squares finds from the concept indicators.
#: The real study's methods (:func:`compare_real`), by name.
REAL_METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "fista_oracle",
            "FISTA (oracle concept atoms)",
            "train",
            lambda ctx: OracleDictionary(
                _concept_atoms(ctx),
                alpha=ctx.settings.alpha,
                positive=True,
                device=ctx.device,
            ),
        ),
        dataclasses.replace(METHODS["dl_fista"], fit_on="train"),
        METHODS["sae_relu"],
        METHODS["sae_topk"],
        # Is a failure the SAE's dictionary or its encoder? FISTA on the
        # frozen TopK dictionary answers it, as in the synthetic study.
        dataclasses.replace(METHODS["sae_dict_fista"], fit_on="train"),
        # The probe reads the activations themselves: the identity transform.
        Method(
            "linear_probe",
            "Linear probe (raw activations)",
            "train",
            lambda ctx: FunctionTransformer(),
        ),
    ]
}


@dataclass
class _PhraseContext(MethodContext):
    """A method context whose sizes are choices, there being no true dictionary.

    The synthetic methods size SAEs and learned dictionaries by ``n_latents``
    and TopK by ``n_active``, read from the true codes; here they are
    ``width`` and ``k`` (defaults only because the base class has one).
    """

    width: int = 0
    k: int = 0

    @property
    def n_latents(self) -> int:
        return self.width

    @property
    def n_active(self) -> int:
        return self.k


def check_real_extra() -> None:
    """Raise :class:`ImportError`, naming what to install, without ``skdict[real]``.

    Raises
    ------
    ImportError
        Without the ``real`` extra (transformers and the bundled model).
    FileNotFoundError
        If the bundled model's folder is gone.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("transformers")  # skdict[real]
    >>> from skdict.experiments import check_real_extra
    >>> check_real_extra()  # nothing to say: the study can run
    """
    _model_folder(None)


# Fields of a load_phrase_activations Bunch that the study reads.
_PHRASE_FIELDS = (
    "Z",
    "X_train",
    "X_val",
    "X_ood",
    "Z_train",
    "train_index",
    "val_index",
    "ood_index",
    "color_id",
    "object_id",
    "colors",
)


def _auc(codes: np.ndarray, present: np.ndarray) -> np.ndarray:
    """ROC AUC of every code dimension as a score for ``present``, not symmetrised.

    The Mann-Whitney U of the samples with the concept against those without,
    over ``n_with * n_without``: ties count one half, as in ``roc_auc_score``.
    A feature *for* a concept must be higher when the concept is there, so a
    dimension that switches off for it scores below 0.5.
    """
    u = mannwhitneyu(
        codes[present], codes[~present], axis=0, method="asymptotic"
    ).statistic
    return np.asarray(u) / (present.sum() * (~present).sum())


def concept_features(codes: Any, Z: Any) -> np.ndarray:
    """Match every concept to its own code dimension, one-to-one, by AUC.

    Each code dimension is scored by its ROC AUC for each concept (a column of
    ``Z``, the concept present where positive), and concepts are paired with
    distinct dimensions maximising the summed AUC (Hungarian algorithm), so that
    a colour cannot claim the feature of the object it always came with.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, n_components)
        Codes of the samples the features are identified on (training data).
    Z : ndarray of shape (n_samples, n_concepts)
        Concept indicators, e.g. ``Z_train`` of
        :func:`~skdict.datasets.load_phrase_activations`.

    Returns
    -------
    ndarray of shape (n_concepts,)
        The code dimension of each concept; -1 for the concepts left without
        one when there are fewer dimensions than concepts.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict.experiments import concept_features
    >>> Z = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    >>> codes = np.array([[0.0, 0.1, 2.0], [0, 0, 1], [3, 0, 0], [2, 0.2, 0]])
    >>> concept_features(codes, Z)
    array([2, 0])
    """
    # The metrics' checks: each input is named (scikit-learn's check_array
    # named neither in a shape error) and a meta tensor is refused by name.
    matrices = as_matrices(
        {"codes": codes, "Z": Z}, dense=("codes", "Z"), promote=False
    )
    codes = to_numpy(matrices["codes"])
    present = to_numpy(matrices["Z"]) > 0
    constant = np.flatnonzero(present.all(axis=0) | ~present.any(axis=0))
    if constant.size:
        raise ValueError(
            f"Concepts {constant[:10].tolist()} (columns of Z) are present in "
            "every sample or in none, so no code dimension can be scored for "
            "them; identify features on samples with and without each concept."
        )
    auc = np.stack([_auc(codes, present[:, j]) for j in range(present.shape[1])])
    concepts, dims = linear_sum_assignment(auc, maximize=True)
    features = np.full(present.shape[1], -1)
    features[concepts] = dims
    return features


def _firing(
    codes: np.ndarray,
    Z: np.ndarray,
    features: np.ndarray,
    n_colors: int,
    threshold: float,
) -> dict[str, float | None]:
    """Both-fire and stray-fire rates and the features' AUC on one split."""
    present = Z > 0
    matched = features >= 0
    # A concept without a feature (-1) never fires: it reads a last column of
    # False appended to the activity.
    active = np.column_stack([np.abs(codes) > threshold, np.zeros(len(codes), bool)])
    fires = active[:, features]  # (n_samples, n_concepts)
    color = present[:, :n_colors].argmax(1)
    obj = n_colors + present[:, n_colors:].argmax(1)
    rows = np.arange(len(codes))
    # A concept present in every row of the split (one held-out pair) has no
    # row to fire stray on.
    stray = [
        fires[~present[:, j], j].mean()
        for j in np.flatnonzero(matched)
        if not present[:, j].all()
    ]
    # The AUC needs samples with and without the concept in the split.
    aucs = [
        _auc(codes[:, [features[j]]], present[:, j])[0]
        for j in np.flatnonzero(matched)
        if 0 < present[:, j].sum() < len(codes)
    ]
    return {
        "both_fire": float(np.mean(fires[rows, color] & fires[rows, obj])),
        "stray_fire": float(np.mean(stray)) if stray else None,
        "feature_auc": float(np.mean(aucs)) if aucs else None,
    }


def _evaluate(
    estimator: Any,
    data: Bunch,
    codes: dict[str, Any],
    probe: Any,
    threshold: float,
) -> dict[str, Any]:
    """Probe, firing and reconstruction scores of one fitted method."""
    record: dict[str, Any] = {}
    for family in FAMILIES:
        ids = data[f"{family}_id"]
        y = {split: ids[data[f"{split}_index"]] for split in codes}
        for split in ("val", "ood"):
            # probe_accuracy fits its probe on the first codes and reports, as
            # "acc_ood", the accuracy on the second: here the seen pairs' new
            # templates, then the held-out pairs.
            record[f"{family}_acc_{split}"] = probe_accuracy(
                codes["train"], y["train"], codes[split], y[split], probe=probe
            )["acc_ood"]
    record.update(dict.fromkeys(DICTIONARY_KEYS))
    # Only a dictionary has features to fire and reconstructs: the raw
    # activations of the probe have neither.
    if not hasattr(estimator, "components_"):
        return record
    Z = {split: data.Z[data[f"{split}_index"]] for split in codes}
    n_colors = len(data.colors)
    features = concept_features(codes["train"], Z["train"])
    for split in ("val", "ood"):
        scores = _firing(codes[split], Z[split], features, n_colors, threshold)
        record.update({f"{name}_{split}": value for name, value in scores.items()})
        X_hat = estimator.inverse_transform(codes[split])
        record[f"mse_{split}"] = reconstruction_error(data[f"X_{split}"], X_hat)
    record["mse_gap"] = record["mse_ood"] - record["mse_val"]
    record["l0_ood"] = float((np.abs(codes["ood"]) > threshold).sum(1).mean())
    return record


def compare_real(
    data: Bunch | None = None,
    methods: Sequence[str] | str | None = None,
    *,
    random_state: int | np.integer | None = 0,
    device: str | torch.device = "auto",
    settings: PaperSettings | None = None,
    n_components: int | None = None,
    k: int | None = 16,
    normalize: bool = True,
    probe: Any = None,
    fire_threshold: float = 1e-4,
    verbose: Int = 0,
) -> list[dict[str, Any]]:
    """Probe and code real activations, scoring seen against held-out pairs.

    Every method is fitted on the training phrases and codes the training,
    validation (seen colour–object pairs in new sentence templates) and OOD
    (held-out pairs) phrases. Then, per method:

    - **probes**: one ``probe`` per concept family (colour, object; 10-way
      classifiers for the default vocabulary) is trained on the training codes
      and scored on the validation and OOD codes
      (:func:`skdict.metrics.probe_accuracy`);
    - **firing** (methods with a dictionary): each concept is matched to its
      own code dimension on the training codes (:func:`concept_features`); a
      feature *fires* where its code exceeds ``fire_threshold``. Reported: the
      fraction of phrases where the colour's and the object's features both
      fire, the mean rate at which a concept's feature fires on phrases
      without the concept ("stray" firing), and the mean AUC of the matched
      features;
    - **reconstruction** (methods with a dictionary): mean squared error of
      ``inverse_transform`` on each split, and the OOD - seen gap.

    Methods (:data:`REAL_METHODS`):

    - ``fista_oracle``: :class:`~skdict.OracleDictionary` fitted by least
      squares on the concept indicators ``Z_train`` (one atom per colour and
      per object), its atoms rescaled to unit norm; non-negative FISTA codes;
    - ``dl_fista``: :class:`~skdict.FISTACoder` learning ``n_components``
      atoms (DL-FISTA), non-negative FISTA codes;
    - ``sae_relu``, ``sae_topk``: :class:`~skdict.SparseAutoencoder` of width
      ``n_components``, ReLU with an L1 penalty or the ``k`` largest latents;
    - ``sae_dict_fista``: FISTA codes on the TopK SAE's frozen dictionary,
      which tells a failure of the SAE's dictionary from one of its encoder;
    - ``linear_probe``: the probes on the activations themselves.

    Penalties and training follow ``settings``, the paper's by default (FISTA
    ``alpha=0.1``; SAEs: AdamW, lr 5e-4, batch 64, 500 epochs, L1 weight
    1e-4): at about 240 training phrases an SAE trains in seconds. They were
    set for data of norm about 1, hence ``normalize``.

    Parameters
    ----------
    data : Bunch, default=None
        The output of :func:`skdict.datasets.load_phrase_activations`; None
        loads its defaults (10 colours x 10 objects x 4 templates through
        all-MiniLM-L6-v2, 20 held-out pairs) with the split seeded by
        ``random_state``. Needs ``skdict[real]``. A Bunch edited by hand is
        checked first: one finite row per index of each split, one width,
        and ``Z_train`` of ``Z``'s concepts.
    methods : str or list of str, default=None
        Names from :data:`REAL_METHODS`; None runs all of them.
    random_state : int or None, default=0
        Seed of every estimator (and of the split when ``data`` is None), in
        ``[0, 2**32 - 1]``; None draws from NumPy's global state, as in
        :func:`~skdict.experiments.compare_methods`.
    device : str or torch.device, default="auto"
        Where estimators (and, when loading, the transformer) compute.
    settings : PaperSettings, default=None
        Penalties and training settings; the paper's when None.
    n_components : int, default=None
        Width of the SAEs and number of atoms DL-FISTA learns. None uses the
        activations' dimension (384 for MiniLM): an SAE of expansion factor 1,
        the narrowest usual one, already wider than there are training
        phrases. The oracle always has one atom per concept.
    k : int or None, default=16
        Latents kept per phrase by the SAEs that keep ``k`` (TopK, BatchTopK,
        matching pursuit; None only without them; at most their width, checked
        before any method runs). The colour carries about 3% of
        the variance of the object-token activations, the object about 90%:
        on the default phrases, TopK codes with k = 2 or 4 lose the colour even
        on seen pairs (probe accuracy at most 0.31), k = 8 keeps it on 54% to
        85% of them depending on the width, k = 16 on 93% to 96% (see
        ``benchmarks/RESULTS.md``).
    normalize : bool, default=True
        Divide all activations by the root-mean-square norm of the training
        activations (one scalar), so that the paper's penalties, set for data
        of norm about 1, keep their meaning: MiniLM's hidden states have norm
        about 12, at which ``alpha=0.1`` barely sparsifies. Reconstruction
        errors are then in these units (times the dimension, a fraction of the
        mean squared norm).
    probe : classifier, default=None
        The probe, cloned for every method and family. None standardises the
        codes and fits an L2-penalised
        :class:`~sklearn.linear_model.LogisticRegression` (``C=1``). The
        paper's unpenalised probe, ``LogisticRegression(C=np.inf)``, is
        ill-posed here: with 384 code dimensions and 24 training phrases per
        colour infinitely many probes separate the training phrases, and
        which one it returns, so its OOD accuracy, depends on where L-BFGS
        stops.
    fire_threshold : float, default=1e-4
        A feature fires on a phrase where its absolute code exceeds this (the
        default threshold of :func:`skdict.metrics.support_scores`).
    verbose : int, default=0
        Show a progress bar over methods when positive.

    Returns
    -------
    records : list of dict
        One per method with the keys of :data:`REAL_RECORD_KEYS`: probe
        accuracies ``{color,object}_acc_{val,ood}``; ``both_fire_*``,
        ``stray_fire_*`` and ``feature_auc_*`` (None for the probe on raw
        activations, which has no features; ``stray_fire_*`` also where every
        matched concept is present in every phrase of the split, and
        ``feature_auc_*`` where none is present in some phrases and absent
        from others); ``mse_val``, ``mse_ood``, ``mse_gap`` (None without a
        dictionary); ``l0_ood``, the mean number of firing code dimensions
        per OOD phrase (None for the probe); ``n_components`` (the
        representation's width) and ``fit_time``, ``transform_time`` in
        seconds.

    See Also
    --------
    run_real : Run over seeds, save the records and a figure.
    compare_methods : The same comparison on synthetic data.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("transformers")  # skdict[real]
    >>> import tempfile
    >>> from skdict.datasets import load_phrase_activations
    >>> from skdict.experiments import compare_real
    >>> data = load_phrase_activations(
    ...     colors=["red", "blue", "green"], objects=["car", "cup", "hat"],
    ...     ood_size=3, random_state=0, cache_dir=tempfile.mkdtemp())
    >>> [oracle, probe] = compare_real(data, ["fista_oracle", "linear_probe"])
    >>> oracle["n_components"], probe["n_components"]  # 6 concepts, 384 units
    (6, 384)
    >>> oracle["object_acc_ood"], probe["both_fire_ood"]  # the probe has no features
    (1.0, None)
    """
    # Checked before anything runs, not by the first estimator that takes
    # them after others have run.
    validate_hyperparameters(
        {
            "random_state": [SEED, None],
            "settings": [PaperSettings, None],
            "normalize": ["boolean"],
            "verbose": ["verbose"],
        },
        {
            "random_state": random_state,
            "settings": settings,
            "normalize": normalize,
            "verbose": verbose,
        },
        caller_name="compare_real",
    )
    chosen = resolve_methods(methods, REAL_METHODS)
    _check_settings(n_components, k, fire_threshold, "compare_real")
    _check_k_given(chosen, k, settings, "compare_real", n_components)
    check_probe(probe, "compare_real")
    resolve_device(device)  # before any method runs, data given or not
    if data is None:
        data = load_phrase_activations(random_state=random_state, device=device)
    check_data(data, _PHRASE_FIELDS, "skdict.datasets.load_phrase_activations")
    # Without n_components the SAEs are as wide as the activations.
    width = n_components or np.shape(data.X_train)[-1]
    _check_k_given(chosen, k, settings, "compare_real", width)
    for split, size in (("val", "val_size"), ("ood", "ood_size")):
        if len(data[f"X_{split}"]) == 0:
            raise ValueError(
                f"data has no {split} phrases, which compare_real scores; load "
                f"them with a positive {size} in load_phrase_activations."
            )
    _check_phrase_arrays(data, normalize)
    if normalize:
        # One scalar for all splits keeps every direction, hence every probe
        # and feature match, and gives the penalties the scale they were set
        # for. A copy: the caller's Bunch keeps its arrays.
        scale = np.sqrt(np.mean(np.sum(data.X_train**2, axis=1)))
        data = Bunch(**data)
        for key in ("X", "X_train", "X_val", "X_ood"):
            if key in data:
                data[key] = data[key] / scale
    if probe is None:
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    X = {split: data[f"X_{split}"] for split in ("train", "val", "ood")}
    context = _PhraseContext(
        data,
        PaperSettings() if settings is None else settings,
        None if random_state is None else int(random_state),
        device,
        width=n_components or X["train"].shape[1],
        k=k,
    )
    environment = computed_with(device, X["train"])
    saved_settings = saved_form(context.settings)
    records = []
    for method in methods_progress(chosen, verbose):
        # Building may train (sae_dict_fista's SAE, unless sae_topk ran
        # first; the oracle's atoms): part of the method's fit time.
        start = time.perf_counter()
        estimator = method.build(context)
        y_fit = data.Z_train if method.supervised else None
        estimator.fit(X["train"], y_fit)
        fit_time = time.perf_counter() - start
        if method.name in SAE_METHODS:  # sae_dict_fista reuses the TopK SAE
            context.keep_sae(method.name.removeprefix("sae_"), estimator)
        start = time.perf_counter()
        codes = {split: estimator.transform(values) for split, values in X.items()}
        transform_time = time.perf_counter() - start
        record = {
            "method": method.name,
            "label": method.label,
            "n_components": int(codes["train"].shape[1]),
            # What else decides the scores, as a study's records keep it.
            "k": k,
            "settings": saved_settings,
        }
        record.update(_evaluate(estimator, data, codes, probe, fire_threshold))
        record.update(fit_time=fit_time, transform_time=transform_time)
        record.update(environment)
        records.append({key: _plain(value) for key, value in record.items()})
    return records


def _check_phrase_arrays(data: Bunch, normalize: bool) -> None:
    """Refuse a phrase Bunch whose arrays do not fit together, by field.

    A Bunch edited by hand failed deep inside: a 1-D ``X_train`` in NumPy's
    sum, rows not matching their index as "y_ood has 6 labels for 5 rows",
    a ``Z_train`` missing concepts not at all (an oracle of the wrong width).
    """
    widths = set()
    for split in ("train", "val", "ood"):
        name, X = f"X_{split}", np.asarray(data[f"X_{split}"])
        rows = len(data[f"{split}_index"])
        if X.ndim != 2 or len(X) != rows:
            raise ValueError(
                f"data.{name} must hold one row per index of data.{split}_index "
                f"({rows}); got shape {X.shape}."
            )
        if not np.isfinite(X).all():
            raise ValueError(f"data.{name} contains NaN or infinity.")
        widths.add(X.shape[1])
    if len(widths) > 1:
        raise ValueError(
            f"data.X_train, X_val and X_ood must have one width; got {sorted(widths)}."
        )
    concepts = np.shape(data.Z)[1:]
    if np.shape(data.Z_train) != (len(data.train_index), *concepts):
        raise ValueError(
            f"data.Z_train must hold data.Z's rows of data.train_index, of shape "
            f"{(len(data.train_index), *concepts)}; got {np.shape(data.Z_train)}."
        )
    if normalize and not np.asarray(data.X_train).any():
        raise ValueError(
            "data.X_train is all zero: normalize=True has no scale to divide by."
        )


def _check_k_given(
    chosen: list[Method],
    k: Any,
    settings: Any,
    caller_name: str,
    width: int | None = None,
) -> None:
    """Refuse ``k=None``, or a ``k`` above ``width``, where a chosen SAE needs k.

    The SAE would refuse it only when its turn came, after the methods before
    it had run (and, for run_real, after the transformer).
    """
    if not isinstance(settings, (PaperSettings, type(None))):
        return  # a bad settings object is its own check's to name
    needing = methods_needing_k(chosen, settings or PaperSettings())
    if not needing:
        return
    if k is None:
        raise InvalidParameterError(
            f"The 'k' parameter of {caller_name} must be an int for "
            f"{', '.join(needing)}, whose SAEs keep k latents per sample; got None."
        )
    if width is not None and is_count(k) and k > width:
        raise InvalidParameterError(
            f"The 'k' parameter of {caller_name} must be at most the SAEs' "
            f"{width} latents for {', '.join(needing)}; got {k}."
        )


def _check_settings(
    n_components: Any, k: Any, fire_threshold: Any, caller_name: str
) -> None:
    """Raise the error naming a bad width, TopK ``k`` or firing threshold."""
    validate_hyperparameters(
        {
            "n_components": [count_from(1), None],
            "k": [count_from(1), None],
            "fire_threshold": [Interval(Real, 0, None, closed="left")],
        },
        {"n_components": n_components, "k": k, "fire_threshold": fire_threshold},
        caller_name=caller_name,
    )


# What the seeds of one run share; records differing in any of these come
# from runs with other settings.
_RUN_KEYS = ("n_components", "k", "settings", "preset", "model", "layer", "position")


def _check_one_run(records: Sequence[dict[str, Any]]) -> None:
    """Refuse a seed's record twice; warn about settings pooled as seeds.

    Without either, two results files concatenated showed "1.00 ± 0.00" for
    one seed, and runs at k=2 and k=16 were averaged as seeds.
    """

    def run_of(record: dict[str, Any]) -> str:
        run = {key: record.get(key) for key in _RUN_KEYS}
        return json.dumps(run, sort_keys=True, default=str)

    seen = Counter(
        (record["label"], record["seed"], run_of(record))
        for record in records
        if record.get("seed") is not None
    )
    repeated = [(triple, count) for triple, count in seen.items() if count > 1]
    if repeated:
        (label, seed, _), count = repeated[0]
        raise ValueError(
            f"records hold {count} records of {label!r} at seed {seed} (e.g. from "
            "two results files), which would count as more seeds; keep one of "
            "each."
        )
    runs: dict[str, set[str]] = defaultdict(set)
    for record in records:
        runs[record["label"]].add(run_of(record))
    mixed = [(label, found) for label, found in runs.items() if len(found) > 1]
    if mixed:
        label, found = mixed[0]
        warn(
            f"Records of {len(found)} different settings are pooled as seeds of "
            f"{label!r} (they differ in {', '.join(_differing(records, label))}); "
            "pass the records of one run.",
            UserWarning,
        )


def _differing(records: Sequence[dict[str, Any]], label: str) -> list[str]:
    """Return the run keys whose values differ among ``label``'s records."""
    own = [record for record in records if record["label"] == label]
    return [
        key
        for key in _RUN_KEYS
        if len({json.dumps(r.get(key), sort_keys=True, default=str) for r in own}) > 1
    ]


def _check_real_records(records: Sequence[dict[str, Any]], *, empty: bool) -> None:
    """Refuse what is not the real study's records before reading them.

    A synthetic study's records (``load_records`` reads both kinds) failed
    with ``KeyError: None``, or were taken for two results files; a record
    without a label failed with ``KeyError: 'label'``.
    """
    check_records(records, empty=empty)
    swept = next((r["variable"] for r in records if "variable" in r), None)
    if swept is not None:
        raise ValueError(
            f"These are a synthetic study's records (they sweep {swept}); "
            "format them with format_table and plot them with plot_study."
        )
    _check_one_run(records)


def _stats(records: Sequence[dict[str, Any]], key: str) -> dict[str, tuple]:
    """Mean, sd and count of ``key`` per method over seeds."""
    # This study sweeps nothing: every record is filed under None.
    flat = _summary(records, key)
    return {label: by_value[None] for label, by_value in flat.items()}


def format_real_table(records: Sequence[dict[str, Any]]) -> str:
    """Format the real study's records: one row per method, one column per score.

    Cells are means over seeds, ± one sd when there are several; ``-`` where a
    method has no such score (firing and reconstruction of raw activations).

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`compare_real` or :func:`run_real`: one run's. A
        method's record at one seed twice is refused (it would count as
        another seed); records of other settings (``k``, ``n_components``,
        training settings, model, layer, position) warn, being pooled as
        seeds. :func:`plot_real` checks alike.

    Returns
    -------
    str
        The table, columns aligned, and a last line naming the cells that
        average fewer seeds than the most, when there are any.

    Examples
    --------
    >>> records = [{"label": "A", "color_acc_val": 1.0, "color_acc_ood": 0.5}]
    >>> print(format_real_table(records).splitlines()[1][:40].rstrip())
    A              1.00        0.50
    """
    _check_real_records(records, empty=True)
    stats = {key: _stats(records, key) for key in TABLE_COLUMNS}
    labels = list(dict.fromkeys(record["label"] for record in records))
    rows = [["method", *TABLE_COLUMNS.values()]]
    for label in labels:
        cells = [label]
        for key in TABLE_COLUMNS:
            if label not in stats[key]:
                cells.append("-")
                continue
            cells.append(_format(*stats[key][label], key))
        rows.append(cells)
    counts = {
        f"{label} {name}": stats[key][label][2]
        for key, name in TABLE_COLUMNS.items()
        for label in labels
        if label in stats[key]
    }
    return align_rows(rows) + fewer_seeds_note(counts)


#: Figure panels: title -> (record keys drawn as bars side by side, what the
#: y axis measures).
FIGURE_PANELS = {
    "colour probe accuracy": (("color_acc_val", "color_acc_ood"), "accuracy"),
    "object probe accuracy": (("object_acc_val", "object_acc_ood"), "accuracy"),
    "colour and object features both fire": (
        ("both_fire_val", "both_fire_ood"),
        "fraction of phrases",
    ),
    "reconstruction gap": (("mse_gap",), "MSE held-out - seen"),
}


# Bars of each split, in colours of Okabe & Ito's palette (see
# METHOD_STYLES), the held-out ones hatched as well, for greyscale print; the
# gap (held-out minus seen) is neither, so it has a colour of its own and no
# legend entry.
_SPLIT_BARS = {
    "val": {"label": "seen pairs", "color": OKABE_ITO["blue"]},
    "ood": {"label": "held-out pairs", "color": OKABE_ITO["orange"], "hatch": "//"},
    "gap": {"label": "_held-out minus seen", "color": OKABE_ITO["grey"]},
}


def plot_real(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (12, 8),
    dpi: float = 120,
) -> Path:
    """Save a 2 x 2 bar chart of the real study: seen versus held-out pairs.

    One group of bars per method; error bars are one sd over seeds. A method
    without a score (the raw-activation probe has no features) gets no bar.
    The reconstruction gap, one bar per method, is grey: it is neither split.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`compare_real` or :func:`run_real`.
    path : path
        Where to save the figure; the format follows the suffix (e.g. ``.png``).
    title : str, default=None
        Figure title; None uses a description of the study.
    figsize : (float, float), default=(12, 8)
        Width and height in inches; e.g. ``(7, 6)`` for a paper's text width.
    dpi : float, default=120
        Resolution of raster formats; a ``.pdf`` or ``.svg`` path gives a
        vector figure, with its text in TrueType fonts (PDF) or as text (SVG).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("transformers")  # skdict[real]
    >>> _ = pytest.importorskip("matplotlib")  # skdict[plots]
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdict.datasets import load_phrase_activations
    >>> from skdict.experiments import compare_real, plot_real
    >>> out = tempfile.TemporaryDirectory()
    >>> data = load_phrase_activations(
    ...     colors=["red", "blue", "green"],
    ...     objects=["car", "cup", "hat"],
    ...     ood_size=3,
    ...     random_state=0,
    ...     cache_dir=out.name,
    ... )
    >>> records = compare_real(data, ["fista_oracle", "linear_probe"])
    >>> plot_real(records, Path(out.name) / "phrases.png").name
    'phrases.png'
    >>> out.cleanup()
    """
    _check_real_records(records, empty=False)
    path = figure_path(path)
    figsize, dpi = check_figure_size(figsize, dpi)
    check_plots_extra()
    # A bare Figure draws and saves without pyplot, so the caller's backend
    # (a notebook's, a GUI's) and pyplot's list of open figures stay as they are.
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(record["label"] for record in records))
    # Constrained layout, the method names under the bottom row only: at a
    # paper's width the rotated names ran under the neighbouring panel, a
    # title was cut at the edge and the legend covered the labels.
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    x = np.arange(len(labels))
    counts = []  # the seeds behind each bar, for the legend
    for ax, (panel, (keys, measured)) in zip(
        axes.flat, FIGURE_PANELS.items(), strict=True
    ):
        width = 0.8 / len(keys)
        for i, key in enumerate(keys):
            stats = _stats(records, key)
            counts += [count for _, _, count in stats.values()]
            means = [stats[label][0] if label in stats else np.nan for label in labels]
            # One seed measures no spread: no bar of zero length with caps
            # (NaN draws none), also beside methods of several seeds.
            sds = [
                stats[label][1] if label in stats and stats[label][2] > 1 else np.nan
                for label in labels
            ]
            several = any(count > 1 for _, _, count in stats.values())
            offset = (i - (len(keys) - 1) / 2) * width
            ax.bar(
                x + offset,
                means,
                width,
                yerr=sds if several else None,
                capsize=3,
                **_SPLIT_BARS[key.rpartition("_")[2] if len(keys) > 1 else "gap"],
            )
        for position, label in zip(x, labels, strict=True):
            if label not in stats:  # no features, no reconstruction
                ax.text(position, 0, "n/a", ha="center", va="bottom", color="gray")
        ax.set_title(panel)
        ax.set_ylabel(measured)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize="small")
        ax.set_xlim(-0.5, len(labels) - 0.5)  # bars of NaN do not widen it
        ax.grid(True, axis="y", alpha=0.3)
        if len(keys) > 1:
            ax.set_ylim(0, 1.05)
        else:
            ax.axhline(0, color="black", linewidth=0.8)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        ncol=2,
        title=error_bars_caption(counts),
    )
    fig.suptitle(title or "Real activations: seen versus held-out colour-object pairs")
    save_figure(fig, path, dpi)
    return path


def describe_data(data: Bunch) -> str:
    """One line naming the model, layer, position and vocabulary of ``data``."""
    return (
        f"{model_name(data.model)}, layer {data.layer}, {data.position} token(s); "
        f"{len(data.colors)} colours x {len(data.objects)} objects x "
        f"{len(data.templates)} templates, {len(data.ood_pairs)} held-out pairs"
    )


def run_real(
    *,
    preset: str = "quick",
    seeds: Sequence[Int] | None = None,
    methods: Sequence[str] | str | None = None,
    data_params: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    out: str | os.PathLike = "skdict_results",
    settings: PaperSettings | None = None,
    n_components: int | None = None,
    k: int | None = 16,
    probe: Any = None,
    progress: Bool = True,
) -> list[dict[str, Any]]:
    """Run the real-activation study for some seeds; save records and a figure.

    Writes ``<out>/real-<preset>.json`` (after every seed, atomically) and
    ``<out>/real-<preset>.png``; a new run replaces both. The figure needs
    matplotlib (the ``plots`` extra), checked before anything runs.

    Parameters
    ----------
    preset : {"quick", "paper"}, default="quick"
        The number of seeds: ``(0,)`` for quick, ``(0, 1, 2)`` for paper, as
        in the synthetic studies. Both train with the paper's settings, which
        take seconds at this size.
    seeds : sequence of int, default=None
        Seeds of the split and of every estimator; None takes the preset's.
    methods : str or sequence of str, default=None
        Names from :data:`REAL_METHODS`; None runs all.
    data_params : dict, default=None
        Arguments of :func:`~skdict.datasets.load_phrase_activations` (other
        than ``random_state`` and ``device``), e.g. another vocabulary, model
        or layer.
    device : str or torch.device, default="auto"
        Where the transformer and the estimators compute.
    out : path, default="skdict_results"
        Output folder; created if needed.
    settings : PaperSettings, default=None
        Training settings; the paper's when None.
    n_components : int, default=None
        Width of the learned dictionaries and SAEs; see :func:`compare_real`.
    k : int or None, default=16
        TopK's ``k``; see :func:`compare_real`.
    probe : classifier, default=None
        The concept probe; see :func:`compare_real`.
    progress : bool, default=True
        Show progress bars.

    Returns
    -------
    list of dict
        The records of :func:`compare_real` for every seed, with ``study``,
        ``preset``, ``seed``, ``model``, ``layer`` and ``position`` added.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("transformers")  # skdict[real]
    >>> _ = pytest.importorskip("matplotlib")  # and skdict[plots], for the figure
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdict.experiments import run_real
    >>> out = tempfile.TemporaryDirectory()
    >>> records = run_real(
    ...     methods=["fista_oracle", "linear_probe"],
    ...     data_params=dict(
    ...         colors=["red", "blue", "green"],
    ...         objects=["car", "cup", "hat"],
    ...         ood_size=3,
    ...         cache_dir=out.name,
    ...     ),
    ...     out=out.name,
    ...     progress=False,
    ... )
    >>> [record["method"] for record in records]
    ['fista_oracle', 'linear_probe']
    >>> sorted(path.name for path in Path(out.name).glob("real-*"))
    ['real-quick.json', 'real-quick.png']
    >>> out.cleanup()
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {list(PRESETS)}.")
    # Fail before the transformer runs (a bad last seed would otherwise throw
    # away the training of every seed before it).
    _check_settings(n_components, k, 0.0, "run_real")
    chosen = resolve_methods(methods, REAL_METHODS)
    _check_k_given(chosen, k, settings, "run_real", n_components)
    check_probe(probe, "run_real")
    validate_hyperparameters(
        {"progress": ["boolean"], "settings": [PaperSettings, None]},
        {"progress": progress, "settings": settings},
        caller_name="run_real",
    )
    check_plots_extra()
    if seeds is None:
        seeds = (0,) if preset == "quick" else (0, 1, 2)
    seeds = check_seeds(seeds, "run_real")
    resolve_device(device)
    out = check_output_dir(out)
    name = f"real-{preset}"
    records: list[dict[str, Any]] = []
    title = None
    for seed in tqdm(seeds, disable=not progress, desc="real", unit="seed"):
        data = load_phrase_activations(
            **(data_params or {}), random_state=seed, device=device
        )
        title = describe_data(data)
        seed_records = compare_real(
            data,
            methods,
            random_state=seed,
            device=device,
            settings=settings,
            n_components=n_components,
            k=k,
            probe=probe,
            verbose=int(progress),
        )
        for record in seed_records:
            record.update(
                study="real",
                preset=preset,
                seed=seed,
                model=model_name(data.model),
                layer=data.layer,
                position=data.position,
            )
        records.extend(seed_records)
        save_records(out / f"{name}.json", records)
    plot_real(records, out / f"{name}.png", title=title)
    return records
