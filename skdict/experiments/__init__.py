"""The paper's studies, built only from skdict's public estimators.

:func:`compare_methods` runs every method of the paper's comparison on one
data set from :func:`skdict.datasets.make_compositional`; :func:`run_study`
sweeps a variable over a grid of such data sets, saving records as it goes;
:func:`format_table` and :func:`plot_study` summarise them. The command
``skdict reproduce`` drives all of it.
"""

from ._compare import RECORD_KEYS, compare_methods
from ._methods import METHODS, PaperSettings
from ._report import format_table, plot_study, summarize
from ._runner import load_records, run_study
from ._studies import PRESETS, STUDIES, study_cells

__all__ = [
    "METHODS",
    "PRESETS",
    "RECORD_KEYS",
    "STUDIES",
    "PaperSettings",
    "compare_methods",
    "format_table",
    "load_records",
    "plot_study",
    "run_study",
    "study_cells",
    "summarize",
]
