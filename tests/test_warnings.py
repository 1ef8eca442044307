import functools
import pickle
import re
import threading
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_validate

from skdict import SparseAutoencoder
from skdict._warnings import ignoring

from .conftest import forked_during, requires_fork


def _in_thread(target):
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_a_block_ignores_its_own_threads_warnings_only():
    # Another thread's warning, issued while a block is open, is shown: the
    # process-wide "ignore" of a catch_warnings block silenced it.
    opened, issued = threading.Event(), threading.Event()

    def block():
        with ignoring(ConvergenceWarning):
            opened.set()
            issued.wait(10)
            warnings.warn("the block's own", ConvergenceWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker = _in_thread(block)
        opened.wait(10)
        warnings.warn("another thread's", ConvergenceWarning, stacklevel=1)
        issued.set()
        worker.join(10)
    assert [str(w.message) for w in caught] == ["another thread's"]


def test_a_list_restored_by_another_thread_silences_nothing_later():
    # A threaded search runs each task in a catch_warnings of scikit-learn's:
    # a task that saved the filter list while another thread's block was
    # open restores that block's filter after the block has closed. It must
    # not ignore anything there (it silenced every later ConvergenceWarning).
    opened, saved = threading.Event(), threading.Event()

    def other_library():
        opened.wait(10)
        with warnings.catch_warnings():  # saves the list holding the block's
            saved.set()
            closed.wait(10)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        closed = threading.Event()
        worker = _in_thread(other_library)
        with ignoring(ConvergenceWarning):
            opened.set()
            saved.wait(10)
        closed.set()
        worker.join(10)  # restores the list saved inside the block
        warnings.warn("after the block", ConvergenceWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["after the block"]


def test_blocks_overlapping_in_threads_leave_the_filters_as_they_were():
    before = list(warnings.filters)
    barrier = threading.Barrier(4)

    def block(message):
        with ignoring(UserWarning, message):
            barrier.wait(10)
            with warnings.catch_warnings(record=True) as caught:
                warnings.warn(message, UserWarning, stacklevel=1)
                warnings.warn("shown", UserWarning, stacklevel=1)
            barrier.wait(10)
        assert [str(w.message) for w in caught] == ["shown"]

    workers = [_in_thread(lambda m=m: block(m)) for m in ("a", "b", "c", "d")]
    for worker in workers:
        worker.join(10)
    assert warnings.filters == before


def test_the_block_is_ahead_of_filters_added_before_it():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ignoring(ConvergenceWarning, "expected"):
            warnings.warn("expected, ignored", ConvergenceWarning, stacklevel=1)
            with pytest.raises(ConvergenceWarning, match="other"):
                warnings.warn("other", ConvergenceWarning, stacklevel=1)


def _open_and_close_a_block(result):
    with ignoring(UserWarning):
        pass
    result.put(repr(warnings.filters))


@requires_fork
def test_a_child_forked_while_a_block_is_open_can_open_its_own():
    # A lock held for the whole block hung every child forked meanwhile at
    # its first block (probe_accuracy in a forked worker).
    block = functools.partial(ignoring, ConvergenceWarning)
    filters = forked_during(block, _open_and_close_a_block)
    assert filters is not None, "the child hung"
    # The parent thread's block does not exist in the child: nothing stays.
    assert "ignoring block" not in filters


def test_a_list_that_may_be_walked_is_never_edited_in_place():
    # warnings walks the list by index while match() lets other threads run:
    # an entry removed in place made a warning checked meanwhile skip the
    # filter after it (an "error" filter's warnings were shown, not raised).
    with ignoring(UserWarning):
        walked = warnings.filters
        seen = list(walked)
    assert walked == seen


def test_joblib_tasks_started_in_a_block_ignore_as_the_block_does():
    # probe_accuracy's probe may be a search: scikit-learn's Parallel copies
    # the caller's filters into each task, from their patterns.
    from joblib import parallel_backend
    from sklearn.utils.parallel import Parallel, delayed

    def task():
        warnings.warn("in a task", ConvergenceWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ignoring(ConvergenceWarning), parallel_backend("threading"):
            Parallel(n_jobs=2)(delayed(task)() for _ in range(4))
        Parallel(n_jobs=2, backend="threading")(delayed(task)() for _ in range(2))
    assert len(caught) == 2  # the tasks started after the block


def test_the_filter_is_sent_to_processes_as_the_open_blocks_pattern():
    import pickle

    with ignoring(UserWarning, "expected"):
        [entry] = [f for f in warnings.filters if "ignoring block" in repr(f[1])]
        sent = pickle.loads(pickle.dumps(entry[1]))
    assert sent.match("expected, in a worker") and not sent.match("other")


def test_a_block_ignores_its_own_category_only():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ignoring(RuntimeWarning, "shared"), ignoring(UserWarning, "other"):
            warnings.warn("shared text", UserWarning, stacklevel=1)
            warnings.warn("shared text", RuntimeWarning, stacklevel=1)
            warnings.warn("other text", UserWarning, stacklevel=1)
    assert [(w.category, str(w.message)) for w in caught] == [
        (UserWarning, "shared text")
    ]


def test_a_filter_left_behind_ignores_nothing_in_joblib_tasks():
    # A catch_warnings entered in a block and left after it leaves the
    # block's entry in the list; joblib tasks copy the list from the entries'
    # patterns, and that entry's must then match nothing.
    from joblib import parallel_backend
    from sklearn.utils.parallel import Parallel, delayed

    def task():
        warnings.warn("from a task", UserWarning, stacklevel=1)

    saved = warnings.catch_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ignoring(UserWarning, "unrelated"):
            saved.__enter__()
        saved.__exit__(None, None, None)
        with parallel_backend("threading", n_jobs=1):
            Parallel()(delayed(task)() for _ in range(1))
    assert [str(w.message) for w in caught] == ["from a task"]


def test_a_block_matches_the_message_whatever_its_case():
    # As warnings.filterwarnings, whose message pattern ignores case.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ignoring(UserWarning, "expected"):
            warnings.warn("Expected and ignored", UserWarning, stacklevel=1)
    assert caught == []


def test_a_pickled_block_pattern_still_ignores_case():
    # The pattern sent to a loky process.
    with ignoring(UserWarning, "expected"):
        entry = next(f for f in warnings.filters if f[2] is UserWarning)
        sent = pickle.loads(pickle.dumps(entry[1]))
    assert sent.flags & re.IGNORECASE and sent.match("Expected and ignored")


def test_warnings_from_a_cross_validation_name_the_callers_line():
    # joblib runs scikit-learn's model selection between its frames and the
    # user's: its frames are skipped too.
    X = np.random.default_rng(0).standard_normal((20, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_validate(SparseAutoencoder(3, k=2, max_epochs=1), X, cv=2)
    ours = [w for w in caught if "is used only with" in str(w.message)]
    assert ours and all(w.filename == __file__ for w in ours)
