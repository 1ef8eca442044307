"""Fit, code and score every method on one compositional data set."""

from __future__ import annotations

import functools
import hashlib
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.sparse as sp
import sklearn
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.utils import Bunch
from tqdm.auto import tqdm

from .._params import validate_hyperparameters
from .._sae import SparseAutoencoder
from .._tensor import (
    _all_finite,
    float32_product_precision,
    resolve_device,
    to_numpy,
)
from .._typing import Int
from .._warnings import warn
from ..metrics import (
    best_feature_auc,
    dictionary_similarity,
    mcc_score,
    probe_accuracy,
    reconstruction_error,
    support_scores,
)
from ..metrics._matching import some_latent_varies
from ..metrics._scorers import estimator_codes
from ._methods import (
    METHODS,
    SAE_METHODS,
    SEED,
    Method,
    MethodContext,
    PaperSettings,
)

__all__ = [
    "ENVIRONMENT_KEYS",
    "RECORD_KEYS",
    "compare_methods",
    "computed_with",
    "resolve_methods",
]

#: Where a record was computed. Its figures repeat bit for bit with the same
#: seed only with the same of each: thread counts, devices and processors
#: round products differently, which dictionary learning and SAE training
#: amplify. ``processor`` is the CPU's model name, or the GPU's for a CUDA
#: device; ``float32_precision`` that of float32 products there (TF32 or
#: bfloat16 where torch was told to trade precision for speed);
#: ``skdict_source`` a digest of skdict's source files (but those that only
#: print and draw records), which tells
#: records of edited code apart where the version (of a development
#: install) does not; ``deterministic`` whether torch's deterministic
#: algorithms were on, which CUDA training needs to repeat bit for bit.
ENVIRONMENT_KEYS = (
    "device",
    "processor",
    "threads",
    "float32_precision",
    "torch_version",
    "numpy_version",
    "scipy_version",
    "sklearn_version",
    "skdict_version",
    "skdict_source",
    "deterministic",
)

#: Keys present in every record returned by :func:`compare_methods`.
RECORD_KEYS = (
    "method",
    "label",
    "mcc_id",
    "mcc_ood",
    "auc_id",
    "auc_ood",
    "acc_id",
    "acc_ood",
    "mse_id",
    "mse_ood",
    "mse_gap",
    "dictionary_similarity",
    "support_f1_ood",
    "l0_ood",
    "fit_time",
    "transform_time",
    *ENVIRONMENT_KEYS,
)


def computed_with(device: str | torch.device, X: Any) -> dict[str, Any]:
    """Return the :data:`ENVIRONMENT_KEYS` entries of records computed now.

    ``device`` is resolved as the estimators resolve it for their data ``X``
    (``"auto"``: a tensor's own device); ``threads`` is torch's thread count
    in the calling thread.
    """
    from .. import __version__  # the package's, set before this is called

    resolved = resolve_device(device, X)
    return {
        "device": str(resolved),
        "processor": (
            torch.cuda.get_device_name(resolved)
            if resolved.type == "cuda"
            else _cpu_name()
        ),
        "threads": torch.get_num_threads(),
        "float32_precision": float32_product_precision(resolved),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "sklearn_version": sklearn.__version__,
        "skdict_version": __version__,
        "skdict_source": _source_digest(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


@functools.cache
def _cpu_name() -> str:
    """Return the CPU's model name (``platform.processor`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown"


# Modules that only show records (tables, figures, the command line): an
# edit to them changes no record, and is left out of the digest.
_PRESENTATION = ("__main__.py", "experiments/_report.py")


@functools.cache
def _source_digest() -> str:
    """Return the first 12 hex digits of a SHA-256 of the code behind records.

    Every Python file of skdict but those of ``_PRESENTATION``.
    """
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name not in _PRESENTATION:
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def warm_up(device: torch.device) -> None:
    """Run one small kernel of each library the methods use on ``device``.

    A GPU starts lazily: the CUDA context at the first transfer, cuBLAS at the
    first product, cuSOLVER at the first factorisation, cuSPARSE at the first
    sparse product; half a second to several seconds that would count in the
    fit time of whichever method comes first.
    """
    eye = torch.eye(2, device=device)
    torch.linalg.cholesky_ex(eye @ eye)
    torch.sparse.mm(eye.to_sparse(), eye)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_methods(
    methods: Sequence[str] | str | None, registry: dict[str, Method] = METHODS
) -> list[Method]:
    """Validate method names; return their definitions, once each.

    None means every method of ``registry`` but those run only when named.
    """
    if methods is None:
        return [method for method in registry.values() if not method.when_named]
    if isinstance(methods, str):
        methods = [methods]
    elif not isinstance(methods, Iterable):
        raise ValueError(
            f"methods must be a method name or a list of them, from "
            f"{sorted(registry)}; got {methods!r}."
        )
    # A repeated method would be fitted again and its records averaged as if
    # they came from two seeds.
    methods = list(dict.fromkeys(methods))
    if not methods:
        # None means all: an empty list is a mistake, and would run nothing
        # (run_real then saved an empty results file over the last one).
        raise ValueError(
            f"methods is empty; pass None for the default methods, or some of "
            f"{sorted(registry)}."
        )
    unknown = [m for m in methods if m not in registry]
    if unknown:
        raise ValueError(
            f"Unknown method(s) {unknown}; choose from {sorted(registry)}."
        )
    return [registry[m] for m in methods]


_COMPOSITIONAL_FIELDS = (
    "X_train",
    "Z_train",
    "X_val",
    "Z_val",
    "y_val",
    "X_ood",
    "Z_ood",
    "y_ood",
    "dictionary",
)


def check_data(
    data: Any,
    required: Sequence[str] = _COMPOSITIONAL_FIELDS,
    source: str = "skdict.datasets.make_compositional",
) -> None:
    """Raise ``ValueError`` unless ``data`` is a Bunch with the ``required`` fields."""
    if not isinstance(data, Bunch):
        raise ValueError(
            f"data must be the Bunch returned by {source}; got {type(data).__name__}."
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise ValueError(
            f"data must be the Bunch returned by {source}; missing fields: {missing}."
        )


def check_compositional_data(data: Bunch) -> None:
    """Raise ``ValueError`` naming a field of ``data`` the methods cannot use.

    The splits' shapes must agree, and no field may be a tensor off the CPU.

    A Bunch assembled by hand (other data in the benchmark's layout) would
    otherwise fail inside a metric, under a parameter name the caller never
    passed, or be scored against a subset of its latents.
    """
    for name, value in data.items():
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            # The linear probe's scikit-learn estimators read NumPy arrays;
            # given tensors on a GPU, they failed after every other method ran.
            raise ValueError(
                f"data.{name} is a tensor on {value.device}; pass the NumPy "
                "arrays of make_compositional, and device= to compute on the GPU."
            )
    n_latents, n_features = np.shape(data.dictionary)
    for split in ("train", "val", "ood"):
        n_rows = np.shape(data[f"X_{split}"])[0]
        expected = {
            f"X_{split}": (n_rows, n_features),
            f"Z_{split}": (n_rows, n_latents),
        }
        for name, shape in expected.items():
            if tuple(np.shape(data[name])) != shape:
                raise ValueError(
                    f"data.{name} has shape {tuple(np.shape(data[name]))}; with "
                    f"{n_rows} rows in X_{split} and a dictionary of shape "
                    f"{(n_latents, n_features)}, it must be {shape}."
                )
        for name in (f"X_{split}", f"Z_{split}"):
            _refuse_non_finite(data[name], name)
        # y_train is used by no method, and may be left out.
        y = data.get(f"y_{split}")
        if y is not None and len(y) != n_rows:
            raise ValueError(
                f"data.y_{split} has {len(y)} labels for the {n_rows} rows of "
                f"data.X_{split}."
            )


def _refuse_non_finite(values: Any, name: str) -> None:
    # Named here: the first estimator's check says "Input X contains NaN",
    # whichever field holds it.
    if isinstance(values, torch.Tensor):  # sparse, bfloat16 or with a graph
        values = values.detach()
        if values.layout == torch.sparse_coo:
            values = values.coalesce()
        if values.layout != torch.strided:
            values = values.values()
        finite = not values.is_floating_point() or _all_finite(values)
    else:
        values = values.data if sp.issparse(values) else np.asarray(values)
        finite = values.dtype.kind not in "fc" or bool(np.isfinite(values).all())
    if not finite:
        raise ValueError(f"data.{name} contains NaN or infinity.")


def _evaluate(
    method: Method,
    estimator: Any,
    data: Bunch,
    codes_id: Any,
    codes_ood: Any,
    matchable: dict[str, bool],
) -> dict[str, Any]:
    """Score one fitted method's codes against the true codes and dictionary.

    ``matchable`` says, for ``"Z_val"`` and ``"Z_ood"``, whether a latent
    varies there (:func:`_matchable`), so that codes can be matched to them.
    """
    Z_val, Z_ood = data.Z_val, data.Z_ood
    single = {
        name: np.unique(to_numpy(data[name])).size < 2 for name in ("y_val", "y_ood")
    }
    # A small split can draw every sample on one side of the label. Without
    # both classes in y_val, the probe cannot be trained nor a feature
    # chosen; without them in y_ood, only the OOD AUC is undefined.
    if single["y_val"]:
        auc = {"auc_id": None, "auc_ood": None}
        acc = {"acc_id": None, "acc_ood": None}
        undefined = "auc_id, auc_ood, acc_id and acc_ood"
    elif single["y_ood"]:
        auc = best_feature_auc(codes_id, data.y_val)
        acc = probe_accuracy(codes_id, data.y_val, codes_ood, data.y_ood)
        undefined = "auc_ood"
    else:
        auc = best_feature_auc(codes_id, data.y_val, codes_ood, data.y_ood)
        acc = probe_accuracy(codes_id, data.y_val, codes_ood, data.y_ood)
    if single["y_val"] or single["y_ood"]:
        held = " and ".join(name for name, one in single.items() if one)
        warn(
            f"{held} {'hold' if ' and ' in held else 'holds'} a single class; "
            f"{undefined} of {method.name!r} {'are' if ' and ' in undefined else 'is'}"
            " None. More samples (n_samples) give both classes.",
            UndefinedMetricWarning,
        )
    # Code dimensions are identified with latents by their atoms, as in the
    # paper's support recovery: a matching by correlation on the OOD codes
    # themselves would be fitted on the very samples it scores, and favour
    # the methods whose atoms are wrong (TopK SAE, n_latents=50: F1 0.42 by
    # correlation, 0.34 by atoms). Without atoms (the linear probe), the
    # correlation matching is the only one.
    atoms = (
        dictionary_similarity(data.dictionary, estimator.components_, detailed=True)
        if hasattr(estimator, "components_")
        else None
    )
    # Without atoms and without a varying OOD latent (a single OOD sample),
    # the matching would be fitted on nothing but overlaps in the scored
    # samples: a probe's F1 of 0.29 on one sample meant nothing.
    support_defined = atoms is not None or matchable["Z_ood"]
    if not all(matchable.values()):
        one = " and ".join(name for name, ok in matchable.items() if not ok)
        undefined = ", ".join(
            (["mcc_id"] if not matchable["Z_val"] else [])
            + (["mcc_ood"] if not matchable["Z_ood"] else [])
            + ([] if support_defined else ["support_f1_ood"])
        )
        warn(
            f"No latent of {one} varies (a single sample, or constant columns); "
            f"{undefined} of {method.name!r} set to None. More samples "
            "(n_samples) define them.",
            UndefinedMetricWarning,
        )
    # Defined without a varying latent too where atoms match the latents:
    # constant latents are then matched on their supports' overlap.
    support = support_scores(
        Z_ood, codes_ood, matching=None if atoms is None else atoms.matching
    )
    record: dict[str, Any] = {
        "mcc_id": mcc_score(Z_val, codes_id) if matchable["Z_val"] else None,
        # The paper's MCC-OOD keeps the code dimensions of highest OOD variance.
        "mcc_ood": (
            mcc_score(Z_ood, codes_ood, top_variance=True)
            if matchable["Z_ood"]
            else None
        ),
        "auc_id": auc["auc_id"],
        "auc_ood": auc["auc_ood"],
        "acc_id": acc["acc_id"],
        "acc_ood": acc["acc_ood"],
        "support_f1_ood": support["f1"] if support_defined else None,
        "l0_ood": support["l0_pred"],
        "mse_id": None,
        "mse_ood": None,
        "mse_gap": None,
        "dictionary_similarity": None,
    }
    if hasattr(estimator, "inverse_transform"):
        mse_id = reconstruction_error(data.X_val, estimator.inverse_transform(codes_id))
        mse_ood = reconstruction_error(
            data.X_ood, estimator.inverse_transform(codes_ood)
        )
        record.update(mse_id=mse_id, mse_ood=mse_ood, mse_gap=mse_ood - mse_id)
    if atoms is not None:
        record["dictionary_similarity"] = atoms.mean_cosine
    return record


def methods_progress(methods: Sequence[Any], verbose: int) -> Iterator[Any]:
    """Iterate over ``methods`` behind a progress bar naming the running one.

    The finished bar stays only when it is the outermost one: inside a
    study's bar over its cells, one finished bar per cell would pile up.
    (tqdm's ``leave=None`` means that in a terminal, but closes the bar in a
    notebook.)
    """
    outermost = not tqdm._instances  # the bars open now, disabled ones aside
    bar = tqdm(methods, disable=verbose <= 0, desc="methods", leave=outermost)
    for method in bar:
        bar.set_postfix_str(method.name)
        yield method


def run_order(methods: list[Method], base_sae: str) -> list[Method]:
    """Return ``methods`` with the base SAE's method before those built on it.

    After them, it trained the same SAE again (``["sae_dict_fista",
    "sae_topk"]`` trained two, hours each at the paper's sizes); first, it
    shares its SAE with them (:class:`MethodContext`).
    """
    names = [method.name for method in methods]
    base = f"sae_{base_sae}"
    if base not in names:
        return methods
    first = next(i for i, m in enumerate(methods) if m.uses_base_sae or m.name == base)
    others = [m for m in methods[first:] if m.name != base]
    return [*methods[:first], methods[names.index(base)], *others]


def compare_methods(
    data: Bunch,
    methods: Sequence[str] | str | None = None,
    *,
    random_state: int | np.integer | None = None,
    device: str | torch.device = "auto",
    settings: PaperSettings | None = None,
    verbose: Int = 0,
) -> list[dict[str, Any]]:
    """Run the paper's methods on one compositional data set and score them.

    Each method is a configuration of skdict's public estimators (see
    :data:`skdict.experiments.METHODS`): SAEs and the linear probe are fitted on
    ``data.X_train``; the oracle and DL-FISTA code ``data.X_val``, as in the
    paper. Every method's codes of ``X_val`` (ID) and ``X_ood`` (OOD) are then
    scored against the true codes.

    Parameters
    ----------
    data : Bunch
        The output of :func:`skdict.datasets.make_compositional`.
    methods : str or list of str, default=None
        Method names of :data:`METHODS`; None runs every method but
        ``dl_fista_sae_init``, a second dictionary learning started from the
        SAE's atoms that only the controlled study runs (by name). The SAE +
        FISTA methods reuse the SAE trained for ``settings.base_sae`` when
        both run (its ``sae_*`` method runs first; the records come in the
        order asked).
    random_state : int, default=None
        Seed for every estimator's initialisation, in ``[0, 2**32 - 1]``
        (None: drawn from NumPy's global state, as scikit-learn's estimators
        draw, so repeatable only after ``np.random.seed``).
    device : str or torch.device, default="auto"
        Where estimators compute (see :class:`skdict.FISTACoder`).
    settings : PaperSettings, default=None
        Training and inference settings; the paper's when None.
    verbose : int, default=0
        Show a progress bar over methods when positive.

    Returns
    -------
    records : list of dict
        One per method, with the keys of :data:`RECORD_KEYS`: MCC (ID, and
        OOD restricted to the top-variance code dimensions as in the paper),
        best-single-feature AUC and logistic-probe accuracy (with an
        ``UndefinedMetricWarning``, all four None when ``y_val`` holds a
        single class, ``auc_ood`` None when ``y_ood`` does, as in very small
        data sets; likewise the MCC of a split with a single sample, and on
        such OOD data the support F1 of a method without atoms),
        reconstruction MSE
        and its OOD - ID gap (None without ``inverse_transform``), matched
        dictionary similarity (None without ``components_``), OOD support F1
        (code dimensions matched to latents by their atoms, as in the paper;
        by correlation for methods without ``components_``) and L0, and
        wall-clock ``fit_time`` and ``transform_time`` (both splits) in
        seconds. An SAE + FISTA method counts the training of its
        SAE in its ``fit_time`` unless it reuses the SAE of an earlier method.

    Examples
    --------
    >>> from skdict.datasets import make_compositional
    >>> from skdict.experiments import compare_methods
    >>> data = make_compositional(n_latents=12, n_active=2, n_samples=200,
    ...                           random_state=0)
    >>> [record] = compare_methods(data, ["fista_oracle"], random_state=0)
    >>> record["mcc_ood"] > 0.9
    True
    """
    check_data(data)
    check_compositional_data(data)
    # Fields given as lists are arrays to every method and metric.
    data = Bunch(
        **{
            name: np.asarray(value) if isinstance(value, (list, tuple)) else value
            for name, value in data.items()
        }
    )
    chosen = resolve_methods(methods)
    # Checked here, not by the first estimator that takes the seed: that may
    # come after other methods have run for minutes.
    validate_hyperparameters(
        {
            "random_state": [SEED, None],
            "settings": [PaperSettings, None],
            "verbose": ["verbose"],
        },
        {"random_state": random_state, "settings": settings, "verbose": verbose},
        caller_name="compare_methods",
    )
    resolve_device(device)  # likewise, before any method runs
    if settings is None:
        settings = PaperSettings()
    order = run_order(chosen, settings.base_sae)
    records = {
        record["method"]: record
        for record in _method_records(
            data, order, settings, random_state, device, verbose
        )
    }
    return [records[method.name] for method in chosen]  # in the order asked


def _method_records(
    data: Bunch,
    chosen: list[Method],
    settings: PaperSettings,
    random_state: int | None,
    device: str | torch.device,
    verbose: int,
    fitted_saes: dict[str, SparseAutoencoder] | None = None,
) -> Iterator[dict[str, Any]]:
    """Fit and score ``chosen`` in turn, yielding each method's record.

    The body of :func:`compare_methods`, on checked arguments; a study saves
    each record as it comes, so that a failure or an interruption loses only
    the method it was in. ``fitted_saes``, shared between calls on the same
    data, lets them reuse each other's SAEs (see :class:`MethodContext`).
    """
    context = MethodContext(data, settings, random_state, device)
    if fitted_saes is not None:
        context.fitted_saes = fitted_saes
    environment = computed_with(device, data.X_train)
    if environment["device"].startswith("cuda"):
        warm_up(torch.device(environment["device"]))
    if any("sae" in method.name for method in chosen):
        # A process's first torch optimiser imports torch's compiler stack
        # (about 860 modules, 1.1-1.5 s on one CPU thread), which would count
        # in the fit time of whichever SAE method happens to come first.
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    matchable = _matchable(data)
    for method in methods_progress(chosen, verbose):
        # Building an SAE + FISTA method trains its SAE unless an earlier
        # method did: that training is part of this method's fit time.
        start = time.perf_counter()
        estimator = method.build(context)
        X_fit = data.X_train if method.fit_on == "train" else data.X_val
        y_fit = None
        if method.supervised:
            y_fit = data.Z_train if method.fit_on == "train" else data.Z_val
            if sp.issparse(y_fit):  # scikit-learn's regressors need dense targets
                y_fit = y_fit.toarray()
        estimator.fit(X_fit, y_fit)
        fit_time = time.perf_counter() - start
        if method.name in SAE_METHODS:  # later SAE + FISTA methods reuse it
            context.keep_sae(method.name.removeprefix("sae_"), estimator)
        start = time.perf_counter()
        codes_id = estimator_codes(estimator, data.X_val)
        codes_ood = estimator_codes(estimator, data.X_ood)
        transform_time = time.perf_counter() - start
        record = {"method": method.name, "label": method.label}
        record.update(
            _evaluate(method, estimator, data, codes_id, codes_ood, matchable)
        )
        record.update(fit_time=fit_time, transform_time=transform_time)
        record.update(environment)
        yield {key: _plain(value) for key, value in record.items()}


def _matchable(data: Bunch) -> dict[str, bool]:
    """Whether a latent of ``Z_val`` and of ``Z_ood`` varies.

    Matching codes to latents needs one: two samples at least
    (make_compositional accepts n_samples=2, one OOD sample), not all alike
    (data built by hand).
    """
    return {name: some_latent_varies(data[name]) for name in ("Z_val", "Z_ood")}


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (NumPy floats become Python floats)."""
    if isinstance(value, np.generic):
        return value.item()
    return value
