"""The paper's studies as grids of cells, with a quick and a paper preset.

A *cell* is one data setting (the arguments of
:func:`~skdict.datasets.make_compositional`), one seed, and the methods to run
on it, possibly with changed settings (the alpha sweep). The ``paper`` preset
uses the paper's grids and training settings (arXiv 2603.28744; 3 seeds),
with one difference: the paper repeats its penalty sweep at every
``n_latents`` of its frozen-decoder settings and for every SAE, where the
``alpha`` study sweeps the same penalties at ``n_latents=1000`` for the
oracle and the base SAE's dictionary. ``quick`` keeps the paper's data
(k = 10, 5,000 samples; 100 latents where a study fixes them at 1,000) but
shrinks the grids, the seeds, the SAE epochs and DL-FISTA's rounds so that a
study runs in a few minutes on a laptop CPU while already showing the
qualitative result.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._params import validate_hyperparameters
from ..datasets import make_compositional
from ._compare import resolve_methods
from ._methods import METHODS, SEED, Method, PaperSettings

__all__ = ["PRESETS", "STUDIES", "Cell", "Study", "study_cells"]

#: Names of the presets: ``"quick"`` (minutes on a CPU) and ``"paper"``.
PRESETS = ("quick", "paper")

#: Methods of the main comparison (vary_* studies).
_MAIN = (
    "fista_oracle",
    "dl_fista",
    "sae_relu",
    "sae_topk",
    "sae_batchtopk",
    "sae_jumprelu",
    "sae_mp",
    "linear_probe",
)
#: The controlled studies: what an SAE's dictionary is worth under FISTA.
_CONTROLLED = (
    "fista_oracle",
    "sae_topk",
    "sae_dict_fista",
    "sae_refined_fista",
    "dl_fista_sae_init",
    "oracle_sae_encoder",
)


@dataclass(frozen=True)
class Cell:
    """One unit of work: a data setting, a seed and the methods to run on it.

    Attributes
    ----------
    study : str
        Name of the study the cell belongs to.
    preset : str
        The preset whose training settings the cell uses.
    data_params : dict
        Keyword arguments of ``make_compositional`` (``random_state`` excluded).
    seed : int
        Seed of the data and of every estimator.
    methods : tuple of str
        Method names.
    setting_changes : dict
        Changes to :class:`PaperSettings` for this cell (e.g. ``alpha``).

    Examples
    --------
    >>> from skdict.experiments import study_cells
    >>> cell = study_cells("vary_sparsity", values=[5])[0]
    >>> cell.study, cell.data_params["n_active"], cell.seed
    ('vary_sparsity', 5, 0)
    """

    study: str
    preset: str
    data_params: dict[str, Any]
    seed: int
    methods: tuple[str, ...]
    setting_changes: dict[str, Any] = field(default_factory=dict)

    def settings(self, base: PaperSettings) -> PaperSettings:
        """Return the settings this cell runs with.

        Parameters
        ----------
        base : PaperSettings
            The preset's settings, which the cell's ``setting_changes`` amend.

        Returns
        -------
        PaperSettings
            ``base`` with the cell's ``setting_changes``.
        """
        return base.replace(**self.setting_changes)

    def key(self, method: str) -> str:
        """Return the identifier of one (cell, method) result, used to resume a run.

        Parameters
        ----------
        method : str
            A method name.

        Returns
        -------
        str
            Study, preset, data parameters and setting changes, seed and method.
        """
        params = {**self.data_params, **self.setting_changes}
        fields = ",".join(f"{k}={params[k]}" for k in sorted(params))
        return f"{self.study}|{self.preset}|{fields}|seed={self.seed}|{method}"


@dataclass(frozen=True)
class Study:
    """A sweep of one variable, with the grids of both presets.

    Attributes
    ----------
    name : str
        Identifier used by the command line.
    title : str
        Human-readable title.
    variable : str
        The swept variable: a ``make_compositional`` argument or a setting.
    grids : dict
        Preset name -> swept values.
    fixed : dict
        Preset name -> the data parameters held fixed.
    methods : tuple of str
        Methods run in every cell.

    Examples
    --------
    >>> from skdict.experiments import STUDIES
    >>> study = STUDIES["vary_latents"]
    >>> study.variable, study.grids["quick"]
    ('n_latents', (50, 100, 200))
    """

    name: str
    title: str
    variable: str
    grids: dict[str, tuple]
    fixed: dict[str, dict[str, Any]]
    methods: tuple[str, ...] = _MAIN


# The paper's data (k = 10, 5,000 samples) on smaller grids and one seed.
_QUICK_FIXED = {"n_active": 10, "n_samples": 5000}

#: The paper's studies, by name: each a :class:`Study` (swept variable, grids).
STUDIES: dict[str, Study] = {
    s.name: s
    for s in [
        Study(
            "vary_latents",
            "Number of latents",
            "n_latents",
            {"quick": (50, 100, 200), "paper": (50, 100, 500, 1000, 5000, 10000)},
            {"quick": _QUICK_FIXED, "paper": {"n_active": 10, "n_samples": 5000}},
        ),
        Study(
            "vary_sparsity",
            "Active latents per sample",
            "n_active",
            {"quick": (2, 5, 10), "paper": (2, 5, 10, 20, 50, 100)},
            {
                "quick": {"n_latents": 100, "n_samples": 5000},
                "paper": {"n_latents": 1000, "n_samples": 5000},
            },
        ),
        Study(
            "vary_samples",
            "Number of samples",
            "n_samples",
            {
                "quick": (500, 2000, 10000),
                "paper": (100, 500, 1000, 5000, 10000, 50000, 100000),
            },
            {
                "quick": {"n_latents": 100, "n_active": 10},
                "paper": {"n_latents": 100, "n_active": 10},
            },
        ),
        Study(
            "controlled",
            "SAE dictionaries under per-sample inference",
            "n_latents",
            {"quick": (50, 100, 200), "paper": (50, 100, 500, 1000, 5000, 10000)},
            {"quick": _QUICK_FIXED, "paper": {"n_active": 10, "n_samples": 5000}},
            _CONTROLLED,
        ),
        Study(
            "alpha",
            "FISTA penalty",
            "alpha",
            {
                "quick": (0.01, 0.03, 0.1, 0.3, 1.0),
                "paper": (0.001, 0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            },
            {
                "quick": {"n_latents": 100, **_QUICK_FIXED},
                "paper": {"n_latents": 1000, "n_active": 10, "n_samples": 5000},
            },
            ("fista_oracle", "sae_dict_fista"),
        ),
    ]
}

# The parameters data_params may set (a key make_compositional does not take
# failed inside the first cell's data, naming neither).
_DATA_PARAMETERS = tuple(inspect.signature(make_compositional).parameters)

#: SAE training epochs of the quick preset (the paper trains for 500).
QUICK_SAE_EPOCHS = 200

#: DL-FISTA's rounds in the quick preset (the paper runs 100).
QUICK_DICT_MAX_ITER = 30


def preset_settings(preset: str) -> PaperSettings:
    """Training settings of a preset: the paper's, or shorter SAE and DL-FISTA runs."""
    if preset == "paper":
        return PaperSettings()
    return PaperSettings(sae_epochs=QUICK_SAE_EPOCHS, dict_max_iter=QUICK_DICT_MAX_ITER)


def _check_alpha_methods(study: str, chosen: list[Method]) -> None:
    """Refuse methods that do not code with FISTA in a sweep of its penalty."""
    ignoring = [method.name for method in chosen if not method.uses_alpha]
    if ignoring:
        verb = "does" if len(ignoring) == 1 else "do"
        using = [name for name, method in METHODS.items() if method.uses_alpha]
        raise ValueError(
            f"The study {study!r} sweeps FISTA's penalty, which "
            f"{', '.join(ignoring)} {verb} not use: the results would repeat at "
            f"every alpha. Choose among {', '.join(using)}."
        )


def study_cells(
    study: str,
    preset: str = "quick",
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | str | None = None,
    *,
    values: Sequence[Any] | None = None,
    data_params: dict[str, Any] | None = None,
) -> list[Cell]:
    """Expand a study into cells.

    Parameters
    ----------
    study : str
        A key of :data:`STUDIES`.
    preset : {"quick", "paper"}, default="quick"
        Grid and training settings.
    seeds : sequence of int, default=None
        Seeds; ``(0,)`` for quick and ``(0, 1, 2)`` for paper when None.
    methods : str or sequence of str, default=None
        Run these methods of :data:`~skdict.experiments.METHODS` instead of
        the study's own (the alpha study takes only those that code with
        FISTA).
    values : sequence, default=None
        Swept values replacing the preset's grid.
    data_params : dict, default=None
        ``make_compositional`` arguments replacing the preset's fixed ones.

    Returns
    -------
    list of Cell
        One per swept value and seed (value by value), each with all the
        methods.

    Examples
    --------
    >>> from skdict.experiments import study_cells
    >>> cells = study_cells("vary_latents", values=[50, 100], seeds=[0, 1])
    >>> [(cell.data_params["n_latents"], cell.seed) for cell in cells]
    [(50, 0), (50, 1), (100, 0), (100, 1)]
    >>> cells[0].data_params
    {'n_active': 10, 'n_samples': 5000, 'n_latents': 50}
    """
    if study not in STUDIES:
        real = " (the real-activation study is run_real)" if study == "real" else ""
        raise ValueError(
            f"Unknown study {study!r}; choose from {sorted(STUDIES)}{real}."
        )
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {list(PRESETS)}.")
    spec = STUDIES[study]
    for name, given in (("seeds", seeds), ("values", values)):
        if given is not None and not is_sequence(given):
            raise TypeError(
                f"{name} must be a sequence (e.g. [{given!r}]) or None; got "
                f"{type(given).__name__} {given!r}."
            )
    unknown = sorted(set(data_params or {}) - set(_DATA_PARAMETERS))
    if unknown:
        raise ValueError(
            f"data_params holds {', '.join(map(repr, unknown))}, which "
            "make_compositional does not take; its parameters are "
            f"{', '.join(_DATA_PARAMETERS)}."
        )
    if seeds is None:
        seeds = (0,) if preset == "quick" else (0, 1, 2)
    if methods is None:
        methods = spec.methods
    else:
        chosen = resolve_methods(methods)
        if spec.variable == "alpha":
            _check_alpha_methods(study, chosen)
        methods = tuple(method.name for method in chosen)
    is_size = spec.variable in ("n_latents", "n_active", "n_samples")
    if values is None:
        values = spec.grids[preset]
    # A repeated seed or value would be run again and counted as another seed,
    # and 1 and 1.0 (or NumPy and Python numbers) would make different resume
    # keys for the same cell: plain numbers, each once, in the order given.
    values = _unique(_plain_number(v, "int" if is_size else "float") for v in values)
    if not values:
        raise ValueError(
            "values is empty; pass None for the preset's grid, or at least one "
            f"value of {spec.variable}."
        )
    seeds = check_seeds(seeds, "study_cells")
    for name, reason in (
        (spec.variable, f"the variable study {study!r} sweeps; pass values="),
        ("random_state", "set by each seed; pass seeds="),
    ):
        if name in (data_params or {}):
            raise ValueError(f"data_params may not hold {name!r}: it is {reason}.")
    methods = _unique(methods)
    fixed = {
        name: _plain_number(value, "plain")
        for name, value in {**spec.fixed[preset], **(data_params or {})}.items()
    }
    cells = []
    for value in values:
        params = dict(fixed)
        changes: dict[str, Any] = {}
        if is_size:
            params[spec.variable] = value
        else:
            changes[spec.variable] = value
        for seed in seeds:
            cells.append(Cell(study, preset, params, seed, tuple(methods), changes))
    return cells


def check_seeds(seeds: Sequence[int], caller: str) -> tuple[int, ...]:
    """Return ``seeds`` as plain ints, each once, refusing any outside ``SEED``.

    A repeated seed would be run again and counted as another seed; NumPy
    integers become Python ones, which saved JSON and resume keys can hold.
    """
    seeds = _unique(_plain_number(seed, "int") for seed in seeds)
    if not seeds:
        raise ValueError(
            f"{caller}: seeds is empty; pass None for the preset's seeds, or "
            "at least one seed."
        )
    for seed in seeds:
        validate_hyperparameters({"seeds": [SEED]}, {"seeds": seed}, caller)
    return seeds


def is_sequence(value: Any) -> bool:
    """Whether ``value`` is a collection of items (not a string or a number)."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


def _plain_number(value: Any, kind: str) -> Any:
    """Return ``value`` as a Python number of ``kind`` ("int", "float" or "plain").

    "int" (sizes, seeds) turns integers (NumPy's too) into ``int``, "float" (swept
    settings such as alpha) turns every real number into ``float``, and
    "plain" only turns NumPy scalars into Python ones. Anything else (a
    string, a fractional size, a bool) is returned unchanged, for the data
    generator or :class:`PaperSettings` to reject by name.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    if kind == "int":
        return int(value) if isinstance(value, numbers.Integral) else value
    if kind == "float":
        return float(value)
    return value.item() if hasattr(value, "item") else value
