"""Tables and figures of study records: mean ± sd over seeds per method and value."""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from .._files import write_atomically
from .._warnings import warn
from ..datasets._phrases import _is_missing

__all__ = [
    "FIGURE_METRICS",
    "METHOD_STYLES",
    "check_plots_extra",
    "describe_setting",
    "format_table",
    "plot_study",
    "summarize",
]

# The swept variables drawn on a logarithmic axis (sizes and penalties), as
# their figures' axes name them.
_LOGARITHMIC_AXES = {
    "n_latents": "number of latents",
    "n_active": "active latents per sample",
    "n_samples": "training samples",
    "alpha": "penalty alpha",
}

#: Panels of a study figure: record key -> axis label.
FIGURE_METRICS = {
    "mcc_ood": "MCC-OOD (top-variance dims)",
    "auc_ood": "best-feature AUC (OOD)",
    "acc_ood": "probe accuracy (OOD)",
    "mse_gap": "reconstruction gap (MSE OOD - ID)",
}


def check_records(records: Any, *, empty: bool = True) -> None:
    """Raise unless ``records`` is a sequence of record dicts (or empty, if allowed).

    One record, or a data frame of them, would otherwise fail deep inside the
    table or figure code.
    """
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(
        records, (Sequence, np.ndarray)
    ):
        hint = (
            "; for a data frame pass df.to_dict('records')"
            if hasattr(records, "to_dict") and not isinstance(records, Mapping)
            else "; wrap a single record in a list"
            if isinstance(records, Mapping)
            else ""
        )
        raise TypeError(
            "records must be a sequence of record dicts; got "
            f"{type(records).__name__}{hint}."
        )
    not_dicts = [type(r).__name__ for r in records if not isinstance(r, Mapping)]
    if not_dicts:
        raise TypeError(
            f"records must be a sequence of record dicts; it holds {not_dicts[0]}."
        )
    # Hand-made records failed with KeyError: 'label', or with "object of
    # type 'int' has no len()" when a table aligned an integer label.
    for i, record in enumerate(records):
        if not isinstance(record.get("label"), str):
            raise ValueError(
                f"records[{i}] has no 'label' (the method's name, a string); it "
                + (
                    f"holds label={record['label']!r}."
                    if "label" in record
                    else f"holds {', '.join(map(repr, record)) or 'nothing'}."
                )
            )
    if not empty and len(records) == 0:
        raise ValueError("records is empty; there is nothing to plot.")


def refuse_real_records(records: Sequence[Mapping[str, Any]]) -> None:
    """Raise if ``records`` are the real study's, which sweep nothing.

    ``load_records`` reads both kinds; the errors that came next named
    ``compare_methods`` and ``format_table``, which cannot show them.
    """
    # run_real's records say study="real"; compare_real's hold its accuracies.
    if any(r.get("study") == "real" or "color_acc_ood" in r for r in records):
        raise ValueError(
            "These are the real study's records; tabulate them with "
            "format_real_table and draw them with plot_real."
        )


def error_bars_caption(counts: Iterable[int]) -> str:
    """Say what a figure's error bars are, from the seeds behind its points.

    On the figure itself: a figure travels without the text that made it.
    """
    counts = list(counts) or [1]
    low, high = min(counts), max(counts)
    if high == 1:
        return "one seed: no error bars"
    seeds = f"{low}-{high}" if low < high else f"{high}"
    return f"error bars: 1 sd over {seeds} seeds"


def figure_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path, refusing one without a suffix.

    Matplotlib picks the format from the suffix and would add ``.png`` to a
    path without one, so the path returned would not be the file written.
    """
    path = Path(path)
    if not path.suffix:
        raise ValueError(
            f"path {str(path)!r} has no suffix; add one that names the format, "
            "such as .png or .pdf."
        )
    return path


def save_figure(fig: Any, path: Path, dpi: float) -> None:
    """Save ``fig`` to ``path`` (its suffix names the format) in one step.

    Written beside it and renamed, as the records are: runs sharing an output
    folder plot the same file, and a reader never sees half of one. Text in
    a PDF or PostScript file is in TrueType fonts, not matplotlib's default
    Type 3, which journals' submission checks refuse; in an SVG it stays
    text, which editors can change.
    """
    from matplotlib import rc_context

    fonts = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}

    def save(handle: Any) -> None:
        with rc_context(fonts):
            fig.savefig(handle, dpi=dpi, format=path.suffix[1:])

    write_atomically(path, save, binary=True)


def check_figure_size(figsize: Any, dpi: Any) -> tuple[tuple[float, float], float]:
    """Return ``figsize`` and ``dpi`` as numbers, refusing what cannot be drawn."""
    try:
        width, height = (float(side) for side in figsize)
    except (TypeError, ValueError):
        width = height = math.nan
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 < height):
        raise ValueError(
            "figsize must be a (width, height) pair of positive inches; "
            f"got {figsize!r}."
        )
    if isinstance(dpi, bool) or not isinstance(dpi, Real) or not 0 < dpi < math.inf:
        raise ValueError(f"dpi must be a positive number; got {dpi!r}.")
    return (width, height), float(dpi)


def summarize(
    records: Sequence[dict[str, Any]], metric: str = "mcc_ood"
) -> dict[str, dict[Any, tuple[float, float, int]]]:
    """Compute mean, sd and count of ``metric`` per method label and swept value.

    Records where the metric is None (e.g. reconstruction for a probe) are
    left out; a metric that no record holds is refused (a misspelt key would
    otherwise summarise to nothing), as are records of several swept
    variables, study records mixed with records without a value, and a
    record key seen twice (it would count as another seed). The tables and
    figures summarise alike.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`~skdict.experiments.run_study` (``label`` and
        ``value`` keys), or of :func:`~skdict.experiments.compare_methods`,
        whose single setting has no ``value`` (summarised under None).
    metric : str, default="mcc_ood"
        The record key to summarise (:data:`~skdict.experiments.RECORD_KEYS`).

    Returns
    -------
    dict
        ``{label: {value: (mean, sd, count)}}``, values in ascending order; the
        sd is the population standard deviation over seeds.

    Examples
    --------
    >>> from skdict.experiments import summarize
    >>> records = [
    ...     {"label": "FISTA", "value": 50, "mcc_ood": 1.0},
    ...     {"label": "FISTA", "value": 50, "mcc_ood": 0.5},
    ...     {"label": "probe", "value": 50, "mcc_ood": None},
    ... ]
    >>> summarize(records)  # {label: {value: (mean, sd, seeds)}}
    {'FISTA': {50: (0.75, 0.25, 2)}}
    """
    if (
        isinstance(records, (str, bytes, Mapping))
        or hasattr(records, "to_dict")
        or not isinstance(records, Iterable)
    ):
        # A single record, a data frame or None: says so (list() of None
        # raised "'NoneType' object is not iterable").
        check_records(records)
    records = list(records)  # read twice below: a generator only once
    check_records(records)
    refuse_real_records(records)
    if records and not any(metric in record for record in records):
        raise ValueError(
            f"metric={metric!r} is not a key of the records; they hold "
            f"{', '.join(map(repr, records[0]))}."
        )
    _check_one_kind(records)
    return _summary(records, metric)


def _summary(
    records: Sequence[dict[str, Any]], metric: str
) -> dict[str, dict[Any, tuple[float, float, int]]]:
    # summarize without its checks: a figure's panel may have no values.
    groups: dict[str, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    settings: dict[tuple[str, Any], set[str]] = defaultdict(set)
    for record in records:
        value = record.get(metric)
        if value is not None:
            if isinstance(value, (str, bytes, bool)) or not isinstance(value, Real):
                # float("cpu") failed with "could not convert string to float".
                raise ValueError(
                    f"metric={metric!r} is not a number in the records (got "
                    f"{value!r}); pass a numeric key of RECORD_KEYS."
                )
            groups[record["label"]][record.get("value")].append(float(value))
            settings[record["label"], record.get("value")].add(_setting_of(record))
    _leave_out_non_finite(groups, metric)
    mixed = [(group, found) for group, found in settings.items() if len(found) > 1]
    if mixed:
        # A results file keeps every run's records: runs with other settings
        # or data were averaged with the others as if they were more seeds.
        (label, value), found = mixed[0]
        # Every pooled cell counted: the first alone hid how many there are.
        n = len(mixed) - 1
        others = f" and in {n} other cell{'s' * (n > 1)}" if n else ""
        warn(
            f"Records of {len(found)} different settings are pooled as seeds of "
            f"{label!r} at value {value!r}{others} (their keys without the seed: "
            f"{', '.join(map(repr, sorted(found)))}); pass the records of one "
            "setting, e.g. those of one run_study call.",
            UserWarning,
        )
    return {
        label: {
            x: (float(np.mean(v)), float(np.std(v)), len(v))
            for x, v in sorted(by_value.items())
        }
        for label, by_value in groups.items()
    }


def _leave_out_non_finite(
    groups: dict[str, dict[Any, list[float]]], metric: str
) -> None:
    """Leave NaN and infinite scores out of ``groups``, naming them in a warning.

    A diverged fit's score made its cell's mean NaN, which tables printed as
    ``nan ± nan`` and figures drew as nothing, without a word; a method with
    no finite score now goes where methods without values go (``-`` in a
    table, "no values" on a panel).
    """
    found = {
        (label, x): sum(not math.isfinite(v) for v in values)
        for label, by_value in groups.items()
        for x, values in by_value.items()
        if not all(math.isfinite(v) for v in values)
    }
    if not found:
        return
    named = [
        f"{label!r}"
        + ("" if x is None else f" at {x!r}")
        + f" ({count} of {len(groups[label][x])})"
        for (label, x), count in found.items()
    ]
    more = f" and {len(named) - 5} more" if len(named) > 5 else ""
    warn(
        f"metric={metric!r} is NaN or infinite in some records, left out of the "
        f"means: {', '.join(named[:5])}{more}. A results file's records are not "
        "computed again on resume: remove them from it to rerun them.",
        UserWarning,
    )
    for label, x in found:
        finite = [v for v in groups[label][x] if math.isfinite(v)]
        if finite:
            groups[label][x] = finite
        else:
            del groups[label][x]
            if not groups[label]:
                del groups[label]


def _check_one_kind(records: Sequence[dict[str, Any]]) -> None:
    """Refuse records that a table or figure would mislabel or double count.

    Records of studies sweeping different variables were labelled with the
    first one's ("n_latents=3" for n_active=3); study records with
    compare_methods' (no value) failed inside ``sorted``; a record twice (two
    results files concatenated) counted as another seed.
    """
    if len({record.get("value") is None for record in records}) > 1:
        raise ValueError(
            "records mix run_study's (a swept value each) with records without a "
            "value (compare_methods'); summarise them apart."
        )
    variables = list(dict.fromkeys(record.get("variable") for record in records))
    if len(variables) > 1:
        raise ValueError(
            f"records sweep different variables ({', '.join(map(repr, variables))}); "
            "summarise each study's records apart."
        )
    keys = Counter(
        record["key"] for record in records if isinstance(record.get("key"), str)
    )
    repeated = [key for key, count in keys.items() if count > 1]
    if repeated:
        raise ValueError(
            f"records hold {keys[repeated[0]]} records of key {repeated[0]!r} (the "
            "same method, setting and seed, e.g. from two results files), which "
            "would count as more seeds; keep one of each, e.g. "
            "list({r['key']: r for r in records}.values())."
        )


def _setting_of(record: dict[str, Any]) -> str:
    """Return a study record's key without its seed: what its seeds share."""
    key = record.get("key")
    if not isinstance(key, str):  # records built by hand, or the real study's
        return ""
    return "|".join(part for part in key.split("|") if not part.startswith("seed="))


def _format(mean: float, sd: float, count: int, metric: str) -> str:
    """Format a table cell: the mean over seeds, ± their sd when there are several."""
    # Scores live in [0, 1]; reconstruction errors can be orders smaller.
    mean_spec, sd_spec = (".1e", ".0e") if metric.startswith("mse") else (".2f", ".2f")
    if count == 1:  # one seed measures no spread: "± 0.00" would claim one
        return f"{mean:{mean_spec}}"
    return f"{mean:{mean_spec}} ± {sd:{sd_spec}}"


def describe_setting(records: Sequence[dict[str, Any]]) -> str:
    """Describe what a study held fixed, e.g. ``"n_active=5, n_samples=2000"``.

    Examples
    --------
    >>> describe_setting([{"variable": "n_latents", "n_latents": 20,
    ...                    "n_active": 5, "n_samples": 2000}])
    'n_active=5, n_samples=2000'
    """
    if not records:
        return ""
    variable = records[0].get("variable")
    fixed = [
        f"{key}={records[0][key]}"
        for key in ("n_latents", "n_active", "n_samples", "alpha")
        if key in records[0] and key != variable
    ]
    return ", ".join(fixed)


def format_table(records: Sequence[dict[str, Any]], metric: str = "mcc_ood") -> str:
    """Format a text table: one row per method, one column per swept value.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`~skdict.experiments.run_study`, or of
        :func:`~skdict.experiments.compare_methods` (one column).
    metric : str, default="mcc_ood"
        The record key shown in the cells
        (:data:`~skdict.experiments.RECORD_KEYS`): the mean over seeds, ±
        their standard deviation when there are several; ``-`` where a method
        has no value. A key that no record holds is refused.

    Returns
    -------
    str
        The table, columns aligned, and a last line naming the cells that
        average fewer seeds than the most (a seed without a score, or with a
        NaN) when there are any; ``"<metric>: no values"`` when every
        record's value is None.

    Examples
    --------
    >>> records = [
    ...     {"label": "A", "value": 10, "mcc_ood": 0.9, "variable": "n"},
    ...     {"label": "A", "value": 10, "mcc_ood": 0.7, "variable": "n"},
    ... ]
    >>> print(format_table(records))
    mcc_ood         n=10
    A        0.80 ± 0.10
    """
    check_records(records)
    summary = summarize(records, metric)
    if not summary:
        return f"{metric}: no values"
    variable = records[0].get("variable", "value")
    values = sorted({x for by_value in summary.values() for x in by_value})
    spread = any(n > 1 for by_value in summary.values() for *_, n in by_value.values())
    single = "mean ± sd" if spread else "mean"  # compare_methods' one column
    header = [metric] + [single if x is None else f"{variable}={x}" for x in values]
    rows = [header]
    # Every method, in the records' order: one without a value anywhere (the
    # linear probe's reconstruction, say) shows as a row of ``-``.
    for label in dict.fromkeys(record["label"] for record in records):
        by_value = summary.get(label, {})
        cells = [label]
        for x in values:
            if x in by_value:
                cells.append(_format(*by_value[x], metric))
            else:
                cells.append("-")
        rows.append(cells)
    counts = {
        label + ("" if x is None else f" at {variable}={x}"): n
        for label, by_value in summary.items()
        for x, (*_, n) in by_value.items()
    }
    return align_rows(rows) + fewer_seeds_note(counts)


def fewer_seeds_note(counts: Mapping[str, int]) -> str:
    """Return a table's last line naming its cells of fewer seeds, or ``""``.

    A seed without a score (or with a NaN) is left out of its cell, which
    then averages fewer seeds than its neighbours, and nothing in the cell
    says so.
    """
    most = max(counts.values(), default=0)
    fewer = [f"{cell} ({n})" for cell, n in counts.items() if n < most]
    if not fewer:
        return ""
    more = f" and {len(fewer) - 5} more" if len(fewer) > 5 else ""
    return f"\nfewer seeds than {most}: {', '.join(fewer[:5])}{more}"


def align_rows(rows: Sequence[Sequence[str]]) -> str:
    """Join rows of cells into text columns: the first left-aligned, others right.

    Examples
    --------
    >>> print(align_rows([["method", "acc"], ["A", "0.9"], ["longer", "1.0"]]))
    method  acc
    A       0.9
    longer  1.0
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def check_plots_extra() -> None:
    """Raise :class:`ImportError`, naming what to install, without matplotlib.

    Figures are drawn after a study's models have run; a command that draws
    them checks first, so that a missing extra does not end a long run.
    """
    if _is_missing("matplotlib"):
        raise ImportError(
            "the figures need matplotlib, which is not installed; install it "
            'with: pip install "matplotlib>=3.7" (the "plots" extra: pip install '
            '".[plots]" in the skdict source folder)'
        )


# Okabe & Ito's palette ("Color Universal Design", 2002), safe for the common
# colour-vision deficiencies; its yellow is left out, too light on white.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "green": "#009E73",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}

#: Colour, marker and line style of each method in study figures. Fixed by
#: name, so that a method looks the same in every figure whatever else ran,
#: and told apart by marker and line as well as colour: in greyscale, and for
#: readers who confuse some of the colours. Solid lines code with FISTA, dashed
#: ones with an SAE encoder, the probe is dotted. Within a family, colours that
#: look alike in greyscale or to deuteranopes (TopK's green and BatchTopK's
#: purple, ReLU's orange and JumpReLU's sky blue) have dashes of their own.
METHOD_STYLES: dict[str, tuple[str, str, Any]] = {
    "fista_oracle": (OKABE_ITO["black"], "o", "-"),
    "dl_fista": (OKABE_ITO["vermillion"], "s", "-"),
    "sae_dict_fista": (OKABE_ITO["blue"], "D", "-"),
    "sae_refined_fista": (OKABE_ITO["sky blue"], "v", "-"),
    "dl_fista_sae_init": (OKABE_ITO["purple"], "P", "-"),
    "sae_relu": (OKABE_ITO["orange"], "^", "--"),
    "sae_topk": (OKABE_ITO["green"], "X", "--"),
    "sae_batchtopk": (OKABE_ITO["purple"], "h", "-."),
    "sae_jumprelu": (OKABE_ITO["sky blue"], "<", (0, (6, 2, 1, 2, 1, 2))),
    "sae_mp": (OKABE_ITO["blue"], ">", "--"),
    "oracle_sae_encoder": (OKABE_ITO["black"], "d", "--"),
    "linear_probe": (OKABE_ITO["grey"], "*", ":"),
}

# Records of methods without a style above take these in turn: each colour
# with its marker, then again with the next line style (24 in all).
_OTHER_STYLES = [
    (colour, marker, line)
    for line in ("-.", ":", (0, (5, 1, 1, 1, 1, 1)))
    for colour, marker in zip(
        list(OKABE_ITO.values()), ["o", "s", "^", "v", "D", "<", ">", "p"], strict=True
    )
]


def _styles(records: Sequence[dict[str, Any]]) -> dict[str, tuple[str, str, Any]]:
    """Return each label's colour, marker and line style (see :data:`METHOD_STYLES`).

    A record without a ``method`` (built by hand) takes the style of the
    method whose label it has.
    """
    from ._methods import METHODS

    named = {method.label: name for name, method in METHODS.items()}
    styles: dict[str, tuple[str, str, Any]] = {}
    others = 0
    for record in records:
        label = record["label"]
        if label in styles:
            continue
        style = METHOD_STYLES.get(record.get("method", named.get(label)))
        if style is None or style in styles.values():
            style = _OTHER_STYLES[others % len(_OTHER_STYLES)]
            others += 1
        styles[label] = style
    return styles


def _tick_label(value: float) -> str:
    """``value`` as a tick label: ``5k``, ``1M``, as 5000 and 10000 ran together."""
    # Whole thousands; millions and billions to three decimals (1.25M
    # rather than 1250k).
    for factor, step, suffix in (
        (10**9, 10**6, "G"),
        (10**6, 10**3, "M"),
        (10**3, 10**3, "k"),
    ):
        if value >= factor and float(value).is_integer() and value % step == 0:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def plot_study(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (11, 8),
    dpi: float = 120,
) -> Path:
    """Save a 2 x 2 figure of :data:`FIGURE_METRICS` against the swept variable.

    One line per method, in its colour, marker and line style of
    :data:`~skdict.experiments.METHOD_STYLES` (the same in every figure);
    error bars one sd over seeds, as the legend says, with the methods moved
    apart a little along a logarithmic axis so that neither their bars nor
    equal scores hide each other. The x axis is logarithmic for sweeps over
    sizes and penalties. The AUC and probe-accuracy panels mark chance (0.5:
    the benchmark's OOD labels are balanced) where scores come near it, named
    in the legend; the reconstruction gap, which spans orders of magnitude
    and changes sign, is drawn on a symmetric logarithmic axis when its
    values do. A panel names the methods it has no values for.

    Parameters
    ----------
    records : sequence of dict
        Records of :func:`~skdict.experiments.run_study`.
    path : path
        Where to save the figure; the format follows the suffix (e.g. ``.png``),
        which is required.
    title : str, default=None
        Figure title; None uses the swept variable's name.
    figsize : (float, float), default=(11, 8)
        Width and height in inches; a smaller figure has larger text relative
        to it: e.g. ``(7, 5.5)`` for a paper's text width, ``(3.5, 6)`` for
        one of its two columns (the legend takes as many columns as the width
        holds, and the rest of the height).
    dpi : float, default=120
        Resolution of raster formats; a ``.pdf`` or ``.svg`` path gives a
        vector figure, with its text in TrueType fonts (PDF) or as text (SVG).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If the records sweep no value, e.g. those of
        :func:`~skdict.experiments.compare_methods`: they have one setting
        per method, which :func:`format_table` shows; if a size or penalty
        swept is not a positive number; or for a bad ``figsize`` or ``dpi``.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("matplotlib")  # skdict[plots]
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdict.experiments import plot_study, run_study
    >>> out = tempfile.TemporaryDirectory()
    >>> records = run_study(
    ...     "vary_latents",
    ...     values=[20, 40],
    ...     methods=["fista_oracle"],
    ...     data_params={"n_samples": 100},
    ...     out=out.name,
    ...     progress=False,
    ... )
    >>> plot_study(records, Path(out.name) / "latents.png").name
    'latents.png'
    >>> out.cleanup()
    """
    check_records(records, empty=False)
    refuse_real_records(records)
    path = figure_path(path)
    figsize, dpi = check_figure_size(figsize, dpi)
    if any(record.get("value") is None for record in records):
        raise ValueError(
            "plot_study draws records of run_study, which sweep a value; these "
            "have none (records of compare_methods have one setting per "
            "method: format_table shows them)."
        )
    _check_one_kind(records)
    variable = records[0].get("variable", "value")
    logarithmic = variable in _LOGARITHMIC_AXES
    if logarithmic:
        bad = [
            r["value"]
            for r in records
            if isinstance(r["value"], bool)
            or not isinstance(r["value"], Real)
            or not 0 < r["value"] < math.inf
        ]
        if bad:
            raise ValueError(
                f"{variable} is drawn on a logarithmic axis, which needs positive "
                f"finite numbers; the records hold {bad[0]!r}."
            )
    check_plots_extra()
    # A bare Figure draws and saves without pyplot, so the caller's backend
    # (a notebook's, a GUI's) and pyplot's list of open figures stay as they are.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    # One style per method across the panels, and a legend of every method:
    # styled panel by panel, a method without values in a panel (the probe
    # has no reconstruction gap) shifted every later method's colour there,
    # and the legend, read from the first panel, named them wrongly.
    styles = _styles(records)
    labels = list(styles)
    summaries = {metric: _summary(records, metric) for metric in FIGURE_METRICS}
    counts = [
        count
        for summary in summaries.values()
        for by_value in summary.values()
        for _, _, count in by_value.values()
    ]
    # Constrained layout keeps room for the legend below the panels whatever
    # its rows (a fixed tenth of the height was clipped and covered the axis
    # labels at a column's width, or with nine methods at (7, 5.5)).
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    # Methods moved apart along a logarithmic axis, all of them within 7 % of
    # the value whatever their number: bars of close means are told apart,
    # equal scores do not hide each other, and the lines still meet the ticks
    # of the swept values by eye.
    step = min(1.03, 1.07 ** (2 / max(1, len(labels) - 1)))
    chance = False
    for ax, (metric, axis_label) in zip(axes.flat, FIGURE_METRICS.items(), strict=True):
        for label, by_value in summaries[metric].items():
            colour, marker, line = styles[label]
            xs = list(by_value)
            means = [by_value[x][0] for x in xs]
            sds = [by_value[x][1] for x in xs]
            # One seed measures no spread: no bars of zero length with caps.
            several = any(by_value[x][2] > 1 for x in xs)
            if logarithmic:
                shift = step ** (labels.index(label) - (len(labels) - 1) / 2)
                xs = [x * shift for x in xs]
            ax.errorbar(
                xs,
                means,
                yerr=sds if several else None,
                color=colour,
                marker=marker,
                markersize=7,
                linestyle=line,
                capsize=3,
                label=label,
            )
        chance |= _mark_reference(ax, metric, summaries[metric])
        absent = [label for label in labels if label not in summaries[metric]]
        if absent:
            # A method missing from a panel is said to be, not left to the
            # reader to find (the probe reconstructs nothing).
            ax.set_title(
                "no values: " + ", ".join(absent),
                loc="right",
                fontsize="small",
                color="0.35",
            )
        # On two lines: upright, the long labels ran into the next panel's.
        ax.set_ylabel(axis_label.replace(" (", "\n("))
        ax.grid(True, alpha=0.3)
        if logarithmic:
            ax.set_xscale("log")
            # Label the swept values themselves, not powers of ten.
            values = sorted({r["value"] for r in records})
            ax.set_xticks(values, [_tick_label(v) for v in values])
            ax.minorticks_off()
            if len(values) == 1:
                # Shared log axes around one point shrink to rounding width.
                margin = max(1.5, 1.1 * step ** ((len(labels) - 1) / 2))
                ax.set_xlim(values[0] / margin, values[0] * margin)
    for ax in axes[1]:
        ax.set_xlabel(_LOGARITHMIC_AXES.get(variable, variable))
    handles = [
        Line2D([], [], color=colour, marker=marker, linestyle=line, label=label)
        for label, (colour, marker, line) in styles.items()
    ]
    if chance:
        handles.append(Line2D([], [], label="chance (0.5)", **_CHANCE_LINE))
    # As many columns as the width holds (about 2.4 in for a method's name).
    columns = max(1, min(len(handles), int(figsize[0] // 2.4)))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=columns,
        title=error_bars_caption(counts),
    )
    fig.suptitle(title or variable)
    save_figure(fig, path, dpi)
    return path


# The chance level, named in the legend (a label beside the line covered the
# points at chance).
_CHANCE_LINE = {"color": "0.5", "linewidth": 1, "linestyle": (0, (1, 3))}


def _mark_reference(ax: Any, metric: str, summary: dict) -> bool:
    """Draw what a panel's values are read against; return whether chance is.

    An AUC of 0.5 is chance, and the OOD probe labels of the benchmark are
    balanced, so that 0.5 is chance accuracy too: scores near it look like a
    ranking without the line, drawn where the scores come within 0.1 of it. A
    reconstruction gap spans orders of magnitude (SAEs' 1e-2 beside FISTA's
    1e-5) and changes sign: a symmetric logarithmic axis, linear within a
    hundredth of the largest gap, tells apart the gaps above that.
    """
    drawn = False
    # The data's own range, before a reference line widens it.
    low = ax.get_ylim()[0]
    if metric in ("auc_ood", "acc_ood") and low < 0.6:
        # Only near chance: drawn under scores of 0.95-0.99 it squeezed their
        # spread into a tenth of the panel.
        ax.axhline(0.5, label="chance", zorder=0, **_CHANCE_LINE)
        drawn = True
    if metric == "mse_gap":
        sizes = [
            abs(mean)
            for by_value in summary.values()
            for mean, _, _ in by_value.values()
            if math.isfinite(mean) and mean != 0
        ]
        if len(sizes) > 1 and max(sizes) > 100 * min(sizes):
            # Linear within a hundredth of the largest gap, logarithmic beyond.
            ax.set_yscale("symlog", linthresh=max(sizes) / 100)
            # Limits afresh, with margins on the new scale (those of the
            # linear one cut the top marker in half).
            ax.relim()
            ax.autoscale_view()
            ax.axhline(0, color="0.5", linewidth=0.8, zorder=0)
    return drawn
