"""Warnings attributed to the user's line, not to a library frame.

A warning raised deep in a fit passes through scikit-learn's wrappers
(``_fit_context``, ``set_output``, ``Pipeline``) and skdict's own helpers, so
no fixed ``stacklevel`` names the caller: with ``stacklevel=3`` FISTA's
``ConvergenceWarning`` pointed at ``sklearn/base.py`` from ``fit`` and at
``sklearn/utils/_set_output.py`` from ``transform``, and a filter on the
user's module never matched it. The level is counted here instead, past every
frame inside skdict, scikit-learn and joblib (``warnings.warn``'s
``skip_file_prefixes`` does this from Python 3.12 on).
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import joblib
import sklearn

__all__ = ["ignoring", "warn"]

# joblib runs the fits of scikit-learn's model selection (cross_validate,
# GridSearchCV), between its frames and the user's.
_LIBRARY_FOLDERS = tuple(
    os.path.dirname(os.path.abspath(module_file)) + os.sep
    for module_file in (__file__, sklearn.__file__, joblib.__file__)
)


def _in_library(filename: str) -> bool:
    # "<stdin>", "<string>", "<ipython-input-...>": code typed or generated
    # by the user, not a file (abspath would resolve it against the cwd).
    if filename.startswith("<"):
        return False
    return os.path.abspath(filename).startswith(_LIBRARY_FOLDERS)


def warn(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as a ``category`` warning at the first outside frame.

    Parameters
    ----------
    message : str
        The warning's text.
    category : type of Warning
        Its class, e.g. :class:`~sklearn.exceptions.ConvergenceWarning`.

    Examples
    --------
    >>> import warnings
    >>> from skdict._warnings import warn
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("codes may be inexact", UserWarning)
    >>> caught[0].filename.endswith("_warnings.py")
    False
    """
    frame = sys._getframe(1)
    # stacklevel=2 names warn's caller; each library frame adds one.
    level = 2
    while frame.f_back is not None and _in_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


# Ignoring a warning in a block, for the block's own thread only. Python
# before 3.14 has one filter list per process, and catch_warnings saves and
# restores it whole: blocks overlapping in threads (probe_accuracy under a
# threaded GridSearchCV, whose joblib tasks each run in a catch_warnings of
# scikit-learn's) restored lists that still held another block's "ignore",
# and every later ConvergenceWarning of the process was silent (16 of 60
# threaded searches). A lock around the blocks could not cover other
# libraries' catch_warnings, and children forked while it was held hung.
# Instead the filter's message pattern is an object whose match() consults
# the thread's open blocks (warnings calls match() on whatever pattern a
# filter holds): a filter left behind by someone's restore ignores nothing.
_open_here = threading.local()
_EDIT_LOCK = threading.Lock()  # held only to edit the filter list
_filters: dict[type[Warning], tuple] = {}
# The patterns of all threads' open blocks, by category (a pattern leaves
# once its last block closes): what joblib tasks started from a block
# receive (see _InOpenBlock.pattern), and whether any block is open.
_open_patterns: dict[type[Warning], collections.Counter] = collections.defaultdict(
    collections.Counter
)


class _InOpenBlock:
    """A filter's message pattern matching only within the thread's blocks."""

    def __init__(self, category: type[Warning]) -> None:
        self.category = category

    def match(self, text: str) -> bool:
        return any(
            category is self.category and pattern.match(text)
            for category, pattern in getattr(_open_here, "blocks", ())
        )

    @property
    def pattern(self) -> str:
        # The regular expression others read from a filter: scikit-learn's
        # Parallel re-creates the caller's filters in each task from it, in
        # the task's thread, which has no block open. So it stands for every
        # thread's open blocks: work a block hands to joblib (a search as
        # probe_accuracy's probe) ignores what the block does, as it did
        # when the block's filter was the process's (and so, while a block
        # is open, do joblib tasks started elsewhere).
        patterns = list(_open_patterns[self.category])
        return "|".join(f"(?:{pattern})" for pattern in patterns) or "(?!)"

    def __reduce__(self) -> tuple:
        # Sent to a process (loky's workers), as the regular expression of
        # the blocks open when sent.
        return re.compile, (self.pattern, re.IGNORECASE)

    def __repr__(self) -> str:
        return f"<skdict: {self.category.__name__} in an ignoring block>"


def _without(entry: tuple) -> list:
    return [item for item in warnings.filters if item is not entry]


# The list is replaced, never edited in place: warnings walks it by index
# while it calls match(), which lets other threads run, and an entry removed
# in place made a warning checked meanwhile skip the filter after it (194 of
# 6.6 million warnings under simplefilter("error") were shown, not raised).
def _remove_all(entry: tuple) -> None:
    if any(item is entry for item in warnings.filters):
        warnings.filters = _without(entry)


@contextmanager
def ignoring(category: type[Warning], message: str = "") -> Iterator[None]:
    """Ignore warnings of ``category`` (matching ``message``) in the block.

    Only warnings issued by the block's own thread are ignored, and those of
    joblib tasks started while it is open (scikit-learn's ``Parallel``
    copies the filters into its tasks; on the threading backend the tasks
    rebuild the one process-wide list concurrently, and one task's warning
    in a few searches is shown: 6 of 20 threaded searches as the probe of
    ``probe_accuracy`` showed one); other threads' warnings are shown as
    their filters say. The filter list is the same after the block as
    before unless another thread swaps it meanwhile (a ``catch_warnings``
    entered during the block and left after it): the entry then left in it
    ignores nothing outside a block, and a block's own warnings can be shown
    while the other thread's list is in place. On Python 3.14's
    context-aware warnings (free-threaded builds), a plain
    :class:`warnings.catch_warnings` is all this needs.

    Examples
    --------
    >>> import warnings
    >>> from skdict._warnings import ignoring
    >>> before = list(warnings.filters)
    >>> with ignoring(UserWarning, "expected"):
    ...     warnings.warn("expected and ignored")
    >>> warnings.filters == before
    True
    """
    if getattr(sys.flags, "context_aware_warnings", False):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message, category)
            yield
        return
    blocks = _open_here.__dict__.setdefault("blocks", [])
    depth, counted = len(blocks), False
    try:
        blocks.append((category, re.compile(message, re.IGNORECASE)))
        with _EDIT_LOCK:
            entry = _filters.setdefault(
                category, ("ignore", _InOpenBlock(category), category, None, 0)
            )
            _open_patterns[category][message] += 1
            counted = True
            # First in the list, ahead of any filter added since ("error"
            # included), as filterwarnings would put it.
            if not warnings.filters or warnings.filters[0] is not entry:
                warnings.filters = [entry, *_without(entry)]
        yield
    finally:
        del blocks[depth:]  # an interruption may have come before the append
        with _EDIT_LOCK:
            if counted:
                _open_patterns[category][message] -= 1
                if not _open_patterns[category][message]:
                    del _open_patterns[category][message]
            if not _open_patterns[category] and category in _filters:
                _remove_all(_filters[category])


def _after_fork_in_child() -> None:
    # A fork while another thread edited the list would leave the lock held
    # in the child, and only the forking thread's blocks are still open there.
    global _EDIT_LOCK
    _EDIT_LOCK = threading.Lock()
    _open_patterns.clear()
    for category, pattern in getattr(_open_here, "blocks", ()):
        _open_patterns[category][pattern.pattern] += 1
    for category, entry in _filters.items():
        if not _open_patterns[category]:
            _remove_all(entry)


os.register_at_fork(after_in_child=_after_fork_in_child)
