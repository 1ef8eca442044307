"""The paper's studies, built only from skdict's public estimators.

:func:`compare_methods` runs every method of the paper's comparison on one
data set from :func:`skdict.datasets.make_compositional`; :func:`run_study`
sweeps a variable over a grid of such data sets, saving records as it goes;
:func:`format_table` and :func:`plot_study` summarise them.
:func:`compare_real` and :func:`run_real` ask the same questions of a real
transformer's activations on colour–object phrases
(:func:`skdict.datasets.load_phrase_activations`). The command
``skdict reproduce`` drives all of it.
"""

from ._compare import ENVIRONMENT_KEYS, RECORD_KEYS, compare_methods
from ._methods import METHODS, Method, PaperSettings
from ._real import (
    REAL_METHODS,
    REAL_RECORD_KEYS,
    check_real_extra,
    compare_real,
    concept_features,
    format_real_table,
    plot_real,
    run_real,
)
from ._report import (
    FIGURE_METRICS,
    METHOD_STYLES,
    format_table,
    plot_study,
    summarize,
)
from ._runner import load_records, run_study
from ._studies import PRESETS, STUDIES, Cell, Study, study_cells

__all__ = [
    "ENVIRONMENT_KEYS",
    "FIGURE_METRICS",
    "METHODS",
    "METHOD_STYLES",
    "PRESETS",
    "REAL_METHODS",
    "REAL_RECORD_KEYS",
    "RECORD_KEYS",
    "STUDIES",
    "Cell",
    "Method",
    "PaperSettings",
    "Study",
    "check_real_extra",
    "compare_methods",
    "compare_real",
    "concept_features",
    "format_real_table",
    "format_table",
    "load_records",
    "plot_real",
    "plot_study",
    "run_real",
    "run_study",
    "study_cells",
    "summarize",
]
