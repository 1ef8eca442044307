"""FISTA solver and FISTACoder: optimality against independent references, API."""

import copy
import itertools
import pickle
import re
import signal
import threading
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA, DictionaryLearning, sparse_encode
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import Lasso
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from benchmarks.bench_fista import twinned_problem
from benchmarks.bench_syncs import HostReads
from skdict import (
    FISTACoder,
    OracleDictionary,
    SparseAutoencoder,
    _fista_coder,
    _oracle,
)
from skdict._fista import _core, _driver, _newton, _problem, _threads, _working_set
from skdict._fista._core import _take_square, lipschitz_constant
from skdict._fista._driver import fista_encode
from skdict._fista._newton import (
    _active_set,
    _newton_on_support,
    _polish,
    _support_indices,
)
from skdict._fista._problem import _group_maxima, _group_size
from skdict._fista._working_set import _merge_widths, _next_working_sets
from skdict.metrics import dictionary_similarity, reconstruction_error

from .conftest import (
    cuda,
    lasso_objective,
    mps,
    patch_everywhere,
    random_dictionary,
    sparse_codes,
)


def tight_lasso(X, D, alpha, positive):
    """sklearn's coordinate descent run to a 1e-13 duality gap, sample by sample."""
    n_features = D.shape[1]
    lasso = Lasso(
        alpha=alpha / n_features,  # sklearn divides the squared loss by n_samples
        fit_intercept=False,
        tol=1e-13,
        max_iter=200_000,
        positive=positive,
    )
    return np.array([lasso.fit(D.T, x).coef_.copy() for x in X])


def brute_force_lasso(x, D, alpha, positive):
    """Exact lasso by enumerating supports and sign patterns (tiny problems only)."""
    m = D.shape[0]
    G, b = D @ D.T, D @ x
    best, best_z = 0.5 * x @ x, np.zeros(m)
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            S = list(support)
            signs_set = (
                [(1.0,) * size] if positive else itertools.product((-1, 1), repeat=size)
            )
            for signs in signs_set:
                s = np.array(signs)
                try:
                    zS = np.linalg.solve(G[np.ix_(S, S)], b[S] - alpha * s)
                except np.linalg.LinAlgError:
                    continue
                if np.any(zS * s <= 0):
                    continue
                z = np.zeros(m)
                z[S] = zS
                value = lasso_objective(x[None], z[None], D, alpha)[0]
                if value < best:
                    best, best_z = value, z
    return best_z


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("shape", [(60, 20), (300, 40), (40, 80)])
def test_objective_matches_tight_sklearn_lasso(rng, positive, shape):
    n_components, n_features = shape
    D = random_dictionary(rng, n_components, n_features)
    X = sparse_codes(rng, 20, n_components, 5) @ D + 0.01 * rng.standard_normal(
        (20, n_features)
    )
    alpha = 0.05
    ours = fista_encode(
        torch.from_numpy(X),
        torch.from_numpy(D),
        alpha=alpha,
        positive=positive,
        tol=1e-9,
        max_iter=20_000,
    )
    assert bool(ours.converged.all())
    reference = tight_lasso(X, D, alpha, positive)
    f_ours = lasso_objective(X, ours.codes.numpy(), D, alpha)
    f_ref = lasso_objective(X, reference, D, alpha)
    np.testing.assert_allclose(f_ours, f_ref, rtol=1e-6)
    if positive:
        assert (ours.codes >= 0).all()


@pytest.mark.parametrize("positive", [False, True])
def test_never_worse_than_sparse_encode(rng, positive):
    D = random_dictionary(rng, 200, 30)
    X = sparse_codes(rng, 50, 200, 6) @ D
    codes = FISTACoder(D, alpha=0.1, positive=positive).fit(X).transform(X)
    sk = sparse_encode(X, D, algorithm="lasso_cd", alpha=0.1, positive=positive)
    f_ours = lasso_objective(X, codes, D, 0.1)
    f_sk = lasso_objective(X, sk, D, 0.1)
    assert np.all(f_ours <= f_sk * (1 + 1e-6))


@settings(max_examples=25, deadline=None)
@given(
    n_components=st.integers(1, 4),
    n_features=st.integers(1, 4),
    alpha=st.floats(0.01, 1.0),
    positive=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_brute_force_on_tiny_problems(n_components, n_features, alpha, positive, seed):
    rng = np.random.default_rng(seed)
    D = random_dictionary(rng, n_components, n_features)
    X = rng.standard_normal((3, n_features))
    ours = fista_encode(
        torch.from_numpy(X),
        torch.from_numpy(D),
        alpha=alpha,
        positive=positive,
        tol=1e-12,
        max_iter=50_000,
    ).codes.numpy()
    exact = np.array([brute_force_lasso(x, D, alpha, positive) for x in X])
    f_ours = lasso_objective(X, ours, D, alpha)
    f_exact = lasso_objective(X, exact, D, alpha)
    np.testing.assert_allclose(f_ours, f_exact, rtol=1e-8, atol=1e-10)


def test_batching_and_masking_do_not_change_codes(rng):
    """A sample coded alone (nothing to mask) gets the code it gets in a batch."""
    D = random_dictionary(rng, 120, 25)
    X = sparse_codes(rng, 40, 120, 4) @ D
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    batch = fista_encode(Xt, Dt, alpha=0.05, positive=True, tol=1e-12).codes
    alone = torch.cat(
        [
            fista_encode(Xt[i : i + 1], Dt, alpha=0.05, positive=True, tol=1e-12).codes
            for i in range(len(X))
        ]
    )
    chunked = fista_encode(Xt, Dt, alpha=0.05, positive=True, tol=1e-12, batch_size=7)
    torch.testing.assert_close(batch, alone, atol=1e-7, rtol=0)
    torch.testing.assert_close(batch, chunked.codes, atol=1e-7, rtol=0)


@pytest.mark.parametrize("inference", [False, True])
def test_shares_solved_by_worker_threads_match_one_thread(
    rng, monkeypatch, two_threads, inference
):
    """With two torch threads a batch is split between two worker threads
    (each running one intra-op thread), batch by batch, warm starts included,
    also under the caller's inference mode; the codes are those of one thread."""
    patch_everywhere(monkeypatch, _threads, "_MIN_SHARE_ROWS", 16)
    D = random_dictionary(rng, 120, 25)
    X = sparse_codes(rng, 90, 120, 4) @ D
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    init = torch.from_numpy(sparse_codes(rng, 90, 120, 4))
    assert _threads._share_count(40, torch.device("cpu")) == 2
    with torch.inference_mode(inference):
        split = fista_encode(
            Xt, Dt, alpha=0.05, positive=True, tol=1e-12, init=init, batch_size=40
        )
    torch.set_num_threads(1)
    assert _threads._share_count(40, torch.device("cpu")) == 1
    single = fista_encode(
        Xt, Dt, alpha=0.05, positive=True, tol=1e-12, init=init, batch_size=40
    )
    assert bool(split.converged.all())
    assert split.codes.is_inference() == inference
    torch.testing.assert_close(split.codes, single.codes, atol=1e-7, rtol=0)


def test_a_batch_too_small_to_split_runs_on_one_intra_op_thread(rng, two_threads):
    """With several torch threads, a batch below two shares is still solved by
    a worker of one intra-op thread: where other processes keep the cores
    busy, torch's parallel kernels wait at barriers (4x to 40x slower)."""
    D = random_dictionary(rng, 60, 20)
    X = torch.from_numpy(sparse_codes(rng, 64, 60, 3) @ D)
    assert _threads._share_count(64, torch.device("cpu")) == 1
    seen = []
    solve = _working_set._encode_batch

    def recording(*args, **kwargs):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return solve(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_driver, "_encode_batch", recording)
        split = fista_encode(X, torch.from_numpy(D), alpha=0.05, tol=1e-10)
    assert seen and all(
        ident != threading.get_ident() and threads == 1 for ident, threads in seen
    )
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    inline = fista_encode(X, torch.from_numpy(D), alpha=0.05, tol=1e-10)
    # The same solve, up to MKL's rounding, which depends on memory alignment
    # unless MKL_CBWR=...,STRICT (1e-15 with its AVX2 kernels).
    torch.testing.assert_close(split.codes, inline.codes, atol=1e-12, rtol=0)


def test_a_worker_that_fails_to_start_raises_its_own_error_at_once(
    rng, monkeypatch, two_threads
):
    # The others waited 30 s at the start barrier, and the pool's
    # BrokenThreadPool hid the worker's own error.
    patch_everywhere(monkeypatch, _threads, "_MIN_SHARE_ROWS", 16)
    real, calls = _threads.set_own_thread_count, []

    def failing_second(count, default):
        calls.append(count)
        if len(calls) == 2:
            time.sleep(0.2)  # the first worker is waiting for it by now
            raise RuntimeError("can't start new thread")
        real(count, default)

    monkeypatch.setattr(_threads, "set_own_thread_count", failing_second)
    D = torch.from_numpy(random_dictionary(rng, 60, 20))
    X = torch.from_numpy(sparse_codes(rng, 64, 60, 3)) @ D
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        fista_encode(X, D, alpha=0.05)
    assert time.perf_counter() - started < 10
    monkeypatch.setattr(_threads, "set_own_thread_count", real)
    assert bool(fista_encode(X, D, alpha=0.05).converged.all())
    assert torch.get_num_threads() == 2


def test_worker_threads_leave_later_threads_their_thread_count(
    rng, monkeypatch, two_threads
):
    """The workers run one intra-op thread each; threads started during and
    after a solve still begin with the caller's count (a threaded search's
    worker started during another's solve kept one thread, and repeated
    searches differed by rounding), and the calling thread's count is never
    set (torch.set_num_threads would pin its MKL thread count past
    threadpoolctl's reach)."""
    patch_everywhere(monkeypatch, _threads, "_MIN_SHARE_ROWS", 16)
    set_num_threads, callers = torch.set_num_threads, []

    def recording(n):
        callers.append(threading.get_ident())
        set_num_threads(n)

    def thread_count_of_a_new_thread():
        counts = []
        thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return counts[0]

    during, solve = [], _working_set._encode_batch

    def solving(*args, **kwargs):
        during.append((torch.get_num_threads(), thread_count_of_a_new_thread()))
        return solve(*args, **kwargs)

    monkeypatch.setattr(torch, "set_num_threads", recording)
    monkeypatch.setattr(_driver, "_encode_batch", solving)
    D = random_dictionary(rng, 60, 20)
    X = torch.from_numpy(sparse_codes(rng, 64, 60, 3) @ D)
    fista_encode(X, torch.from_numpy(D), alpha=0.05)
    assert len(callers) > 2 and threading.get_ident() not in callers
    assert during and all(counts == (1, 2) for counts in during)
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2] and torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "failing, error", [(0, KeyboardInterrupt), (1, RuntimeError), (1, MemoryError)]
)
def test_a_failing_share_stops_the_other_workers(
    rng, monkeypatch, two_threads, failing, error
):
    """An exception in one share's solve (Ctrl-C's KeyboardInterrupt, an
    error) ends the call without waiting for the other shares: the pool's
    exit waits for its running workers (Ctrl-C during a stream's partial_fit
    took 20 s to return on 2 threads), and results collected in order waited
    for the shares before a failed one."""
    patch_everywhere(monkeypatch, _threads, "_MIN_SHARE_ROWS", 16)
    D = random_dictionary(rng, 60, 20)
    X = torch.from_numpy(sparse_codes(rng, 64, 60, 3) @ D)
    assert _threads._share_count(64, torch.device("cpu")) == 2
    stopped, running = [], threading.Event()

    def share(problem, *args, **kwargs):
        if torch.equal(problem.X[0], X[32 * failing]):
            # Once the other runs: one not started yet is cancelled instead.
            assert running.wait(10)
            raise error
        running.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a share that would not end
            try:
                _threads._stop_if_requested()
            except _threads._Stopped:
                stopped.append(threading.get_ident())
                raise
            time.sleep(1e-3)
        raise AssertionError("the worker was not asked to stop")

    monkeypatch.setattr(_driver, "_encode_batch", share)
    with pytest.raises(error):
        fista_encode(X, torch.from_numpy(D), alpha=0.05)
    assert len(stopped) == 1 and stopped[0] != threading.get_ident()
    monkeypatch.undo()
    # The flag is the call's: the next call's workers run to the end.
    result = fista_encode(X, torch.from_numpy(D), alpha=0.05)
    assert bool(result.converged.all())


@pytest.mark.parametrize("as_tensor", [False, True])
def test_fitted_atoms_do_not_share_the_callers_memory(rng, as_tensor):
    D = random_dictionary(rng, 12, 6)
    X = sparse_codes(rng, 20, 12, 2) @ D
    given = torch.from_numpy(D.copy()) if as_tensor else D.copy()
    data = torch.from_numpy(X) if as_tensor else X
    for coder in (FISTACoder(given), OracleDictionary(given)):
        before = coder.fit(data).transform(data)
        given *= 2.0  # e.g. a decoder that goes on training
        np.testing.assert_array_equal(np.asarray(coder.transform(data)), before)
        given /= 2.0


@pytest.mark.parametrize("as_tensor", [False, True])
def test_fitted_intercept_does_not_share_the_providers_memory(rng, as_tensor):
    D = random_dictionary(rng, 6, 4)
    X = rng.standard_normal((12, 4))
    b = torch.ones(4, dtype=torch.float64) if as_tensor else np.ones(4)
    provider = SimpleNamespace(components_=D, intercept_=b)
    for estimator in (FISTACoder(provider), OracleDictionary(provider)):
        estimator.fit(X)
        provider.intercept_ += 7.0  # e.g. a decoder bias that goes on training
        np.testing.assert_array_equal(np.asarray(estimator.intercept_), np.ones(4))
        provider.intercept_ -= 7.0


def test_learning_after_a_given_provider_forgets_it(rng):
    # dictionary_ is None for a learned dictionary, whatever was given before.
    X = rng.standard_normal((12, 4))
    Z = rng.uniform(size=(12, 6))
    coder = FISTACoder(OracleDictionary()).fit(X, Z)
    assert coder.dictionary_ is not None
    coder.set_params(dictionary=None, n_components=3, dict_max_iter=1, random_state=0)
    assert coder.fit(X).dictionary_ is None


@pytest.mark.parametrize("estimator", [FISTACoder, OracleDictionary])
def test_score_of_an_unfitted_estimator_says_so(estimator):
    with pytest.raises(NotFittedError):
        estimator(np.eye(3)).score(np.ones((4, 3)))


def test_momentum_table_does_not_grow_with_max_iter(rng, monkeypatch):
    """A huge max_iter costs nothing until used (the table of 10**9 steps
    was 8 GB); steps past the table's end keep its last momentum and still
    converge to the certified tolerance."""
    D = random_dictionary(rng, 30, 10)
    X = rng.standard_normal((12, 10))
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    assert bool(fista_encode(Xt, Dt, alpha=0.05, max_iter=10**9).converged.all())
    monkeypatch.setattr(_working_set, "_MOMENTUM_STEPS", 3)
    lengths, table = [], _working_set._momentum_table
    monkeypatch.setattr(
        _working_set, "_momentum_table", lambda n, z: lengths.append(n) or table(n, z)
    )
    short = fista_encode(Xt, Dt, alpha=0.05, tol=1e-10)
    assert lengths and max(lengths) == 4  # the patched table, not max_iter's
    assert bool(short.converged.all())
    primal, gap = duality_gap(X, short.codes.numpy(), D, 0.05, False)
    assert np.all(gap <= 1e-10 * primal)


def test_samples_stop_at_their_own_tolerance(rng):
    """An easy sample (x = 0) needs no iterations while hard ones keep going."""
    D = random_dictionary(rng, 80, 20)
    X = sparse_codes(rng, 10, 80, 6) @ D
    X[0] = 0.0
    result = fista_encode(
        torch.from_numpy(X), torch.from_numpy(D), alpha=0.01, tol=1e-10
    )
    assert result.n_iter[0] == 0
    assert result.n_iter[1:].min() > 0
    assert bool(result.converged.all())


@pytest.mark.parametrize("tol", [1e-3, 1e-2, 1e-1])
def test_loose_tolerances_bound_each_samples_suboptimality(rng, tol):
    # Dictionary learning codes its rounds to loose gaps; every code must still
    # be within tol of its optimum, relative to its objective.
    D = random_dictionary(rng, 120, 25)
    X = sparse_codes(rng, 40, 120, 8) @ D + 0.05 * rng.standard_normal((40, 25))
    result = fista_encode(torch.from_numpy(X), torch.from_numpy(D), alpha=0.1, tol=tol)
    assert bool(result.converged.all())
    f = lasso_objective(X, result.codes.numpy(), D, 0.1)
    f_star = lasso_objective(X, tight_lasso(X, D, 0.1, False), D, 0.1)
    assert np.all(f >= f_star - 1e-12)
    assert np.all(f - f_star <= tol * f)


def test_warm_start_from_the_solution_is_immediate(rng):
    D = random_dictionary(rng, 100, 30)
    X = sparse_codes(rng, 30, 100, 5) @ D
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    cold = fista_encode(Xt, Dt, alpha=0.1, positive=True, tol=1e-10)
    warm = fista_encode(Xt, Dt, alpha=0.1, positive=True, tol=1e-10, init=cold.codes)
    assert int(warm.n_iter.sum()) < int(cold.n_iter.sum()) // 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_precisions_reach_the_optimum(rng, dtype):
    D = random_dictionary(rng, 150, 30)
    X = sparse_codes(rng, 30, 150, 5) @ D
    result = fista_encode(
        torch.from_numpy(X).to(dtype),
        torch.from_numpy(D).to(dtype),
        alpha=0.1,
        positive=True,
    )
    assert result.codes.dtype == dtype and bool(result.converged.all())
    reference = tight_lasso(X, D, 0.1, True)
    f_ours = lasso_objective(X, result.codes.double().numpy(), D, 0.1)
    f_ref = lasso_objective(X, reference, D, 0.1)
    rtol = 1e-6 if dtype == torch.float32 else 1e-9
    np.testing.assert_allclose(f_ours, f_ref, rtol=rtol)


def duality_gap(X, Z, D, alpha, positive):
    """Lasso duality gap at the scaled residual, computed independently in NumPy."""
    R = X - Z @ D
    corr = R @ D.T
    worst = corr.max(axis=1) if positive else np.abs(corr).max(axis=1)
    s = np.minimum(1.0, alpha / np.maximum(worst, 1e-300))
    primal = 0.5 * (R * R).sum(axis=1) + alpha * np.abs(Z).sum(axis=1)
    dual = s * (X * R).sum(axis=1) - 0.5 * s**2 * (R * R).sum(axis=1)
    return primal, primal - dual


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dense_solutions_use_all_atoms(rng):
    """Tiny alpha on a small dictionary: the support fills the space."""
    D = random_dictionary(rng, 70, 30)
    X = rng.standard_normal((10, 30))
    ours = fista_encode(torch.from_numpy(X), torch.from_numpy(D), alpha=1e-3, tol=1e-10)
    assert bool(ours.converged.all())
    assert (ours.codes != 0).sum(dim=1).min() > 20
    primal, gap = duality_gap(X, ours.codes.numpy(), D, 1e-3, False)
    assert np.all(gap <= 1e-9 * primal)
    # sklearn's coordinate descent stalls here; FISTA must do at least as well.
    ref = tight_lasso(X, D, 1e-3, False)
    assert np.all(
        lasso_objective(X, ours.codes.numpy(), D, 1e-3)
        <= lasso_objective(X, ref, D, 1e-3) * (1 + 1e-9)
    )


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("start", ["zero", "support"])
def test_active_set_reaches_the_lasso_optimum(rng, positive, start):
    """The active-set method alone, from zero (a homotopy-like path) or from a
    random support, against sklearn's coordinate descent on each row's
    working-set problem ``z A z / 2 - c.z + a |z|_1`` with ``A = D D^T``,
    ``c = D x``."""
    n_atoms, n_features, alpha = 30, 20, 0.05
    D = random_dictionary(rng, n_atoms, n_features)
    X = rng.standard_normal((6, n_features))
    A = torch.from_numpy(D @ D.T).expand(6, -1, -1).contiguous()
    c = torch.from_numpy(X @ D.T)
    a = torch.full((6, 1), alpha, dtype=torch.float64)
    z0 = np.zeros((6, n_atoms))
    if start == "support":
        # A random face of fewer atoms than features (non-singular).
        for row in z0:
            picked = rng.choice(n_atoms, 10, replace=False)
            row[picked] = rng.uniform(0.1, 1.0, 10) * (
                1 if positive else rng.choice([-1, 1], 10)
            )
    steps = torch.full((6,), 200)
    codes, ran, taken = _active_set(A, c, a, torch.from_numpy(z0), positive, steps)
    assert bool(ran.all()) and bool((taken > 0).all())
    # A face of more atoms than features is singular: those rows are left to
    # the caller, unchanged.
    singular = z0.copy()
    singular[0, :25] = 0.5
    kept, ran_singular, _ = _active_set(
        A, c, a, torch.from_numpy(singular), positive, steps
    )
    assert not bool(ran_singular[0]) and bool(ran_singular[1:].all())
    np.testing.assert_array_equal(kept[0].numpy(), singular[0])
    torch.testing.assert_close(kept[1:], codes[1:], rtol=0, atol=1e-12)
    if positive:
        assert bool((codes >= 0).all())
    ours = lasso_objective(X, codes.numpy(), D, alpha)
    reference = lasso_objective(X, tight_lasso(X, D, alpha, positive), D, alpha)
    np.testing.assert_allclose(ours, reference, rtol=1e-10)
    assert np.all(ours <= lasso_objective(X, z0, D, alpha))


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize(
    ("n_atoms", "n_features", "alpha"), [(200, 40, 0.05), (120, 32, 0.01)]
)
def test_supports_filling_the_space_finish_by_active_sets(
    rng, monkeypatch, positive, n_atoms, n_features, alpha
):
    """Gaussian data on a random dictionary: supports near the number of
    features, where working sets start with the active-set method; every
    sample is certified and as good as sklearn's tight coordinate descent."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return _active_set(*args, **kwargs)

    monkeypatch.setattr(_working_set, "_active_set", counted)
    D = random_dictionary(rng, n_atoms, n_features)
    X = rng.standard_normal((12, n_features))
    ours = fista_encode(
        torch.from_numpy(X), torch.from_numpy(D), alpha=alpha, positive=positive
    )
    assert calls and bool(ours.converged.all())
    assert (ours.codes != 0).sum(dim=1).min() >= 0.75 * n_features
    reference = lasso_objective(X, tight_lasso(X, D, alpha, positive), D, alpha)
    assert np.all(
        lasso_objective(X, ours.codes.numpy(), D, alpha) <= reference * (1 + 1e-9)
    )


def test_active_set_steps_count_against_max_iter(rng):
    # Warm starts with supports filling the space start with the active-set
    # method; its steps are iterations, and no sample takes more than
    # max_iter of them.
    D = torch.from_numpy(random_dictionary(rng, 200, 40))
    X = torch.from_numpy(rng.standard_normal((4, 40)))
    warm = fista_encode(X, D, alpha=0.1).codes
    assert (warm != 0).sum(dim=1).min() >= 30
    for max_iter in (1, 7, 60):
        result = fista_encode(X, D, alpha=0.01, init=warm, max_iter=max_iter)
        assert int(result.n_iter.max()) <= max_iter
    # A row stopped after a few steps is still no worse than its start.
    A = (D @ D.T).expand(4, -1, -1).contiguous()
    c, a = X @ D.T, torch.full((4, 1), 0.01, dtype=torch.float64)
    codes, ran, taken = _active_set(A, c, a, warm, False, torch.tensor([1, 2, 3, 500]))
    assert taken[:3].tolist() == [1, 2, 3] and bool(ran.all())
    before, after = (
        lasso_objective(X.numpy(), Z.numpy(), D.numpy(), 0.01) for Z in (warm, codes)
    )
    assert np.all(after <= before + 1e-12)


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_a_singular_warm_start_face_does_not_loop():
    # A working set whose warm start has more atoms than features: the
    # active-set start cannot run, and the working-set gap (float32 Gram
    # matrices) passed where the full certificate did not. The row came back
    # to the same working set with nothing spent, forever.
    rng = np.random.default_rng(1039)
    rng.integers(32, 65, size=3)
    alpha = float(10 ** rng.uniform(-3, np.log10(0.2)))  # 0.0188
    rng.integers(2, size=2)
    rng.uniform()
    D = random_dictionary(rng, 356, 49)
    X = rng.standard_normal((25, 49)) * rng.uniform(0.1, 10, (25, 1))
    D, X = torch.tensor(D, dtype=torch.float32), torch.tensor(X, dtype=torch.float32)
    warm = fista_encode(X, D, alpha=alpha * float(rng.uniform(1.5, 10))).codes

    def stuck(signum, frame):
        raise TimeoutError("fista_encode did not return")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(60)
    try:
        result = fista_encode(X, D, alpha=alpha, init=warm, max_iter=49)
        assert int(result.n_iter.max()) <= 49
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_tolerance_below_rounding_returns_the_optimum():
    # Supports of 63 atoms filling 63 features, rows of norms up to 70: at
    # tol=1e-11 rounding keeps some working sets' gaps at their own optimum
    # just above tol. They spun there to the whole budget, without the atoms
    # the full certificate asked for, and returned codes up to 27 % above the
    # lasso optimum.
    rng = np.random.default_rng(1066)
    n_features, m, n = rng.integers(32, 65), rng.integers(64, 401), rng.integers(20, 80)
    alpha = float(10 ** rng.uniform(-3, np.log10(0.2)))  # 0.00115
    rng.integers(2, size=2)
    rng.uniform()
    D = random_dictionary(rng, m, n_features)
    X = rng.standard_normal((n, n_features)) * rng.uniform(0.1, 10, (n, 1))
    # Nine of the 65 rows: before the fix they too came back 2 % above the
    # optimum (row 53), in a fifth of the time of all of them.
    D, X = torch.from_numpy(D), torch.from_numpy(X[50:59])
    kwargs = dict(alpha=alpha, positive=True, max_iter=1000)
    reference = fista_encode(X, D, tol=1e-9, **kwargs)
    assert bool(reference.converged.all())
    tight = fista_encode(X, D, tol=1e-11, **kwargs)
    objective = lasso_objective(X.numpy(), tight.codes.numpy(), D.numpy(), alpha)
    best = lasso_objective(X.numpy(), reference.codes.numpy(), D.numpy(), alpha)
    # The reference is within 1e-9 of the optimum by its certificate.
    np.testing.assert_array_less(objective, best * (1 + 2e-9))


def test_a_gap_below_float64_rounding_stops_early_and_says_why():
    # alpha tiny beside the data: each x lies in the span of two of four
    # atoms, ||x|| near 1, alpha=1e-10. The optimum's gap from float64
    # residuals stays at a few eps * x.x, above tol times the objective
    # (about alpha ||z||_1): rows ran all max_iter iterations and a warning
    # blamed max_iter, though their codes were the optimum to 1e-18.
    rng = np.random.default_rng(23)
    D = random_dictionary(rng, 4, 6)
    X = rng.uniform(0.5, 2, size=(200, 1)) * np.array([0.7, 0.0, 0.3, 0.0]) @ D
    alpha = 1e-10
    with pytest.warns(
        ConvergenceWarning, match="could not certify.*rounding"
    ) as caught:
        codes = FISTACoder(D, alpha=alpha).fit(X).transform(X)
    assert not any("increase max_iter" in str(w.message) for w in caught)
    result = fista_encode(torch.from_numpy(X), torch.from_numpy(D), alpha=alpha)
    assert int(result.n_iter.max()) < 100 and not bool(result.converged.all())
    # The optimum on the support {0, 2}: G_SS z = D_S x - alpha sign(z).
    support = D[[0, 2]]
    exact = np.linalg.solve(support @ support.T, support @ X.T - alpha).T
    np.testing.assert_allclose(codes[:, [0, 2]], exact, rtol=1e-12)
    assert np.all(codes[:, [1, 3]] == 0)


def test_a_gap_below_float64_rounding_on_working_sets_is_not_converged():
    # As above, on 40 atoms in 6 features: the rows stay on working sets
    # instead of the all-atoms solver, whose floor the test above reaches.
    rng = np.random.default_rng(23)
    D = random_dictionary(rng, 40, 6)
    a, b = rng.uniform(0.5, 2, size=(2, 200, 1))
    X = torch.from_numpy(0.7 * a * D[0] + 0.3 * b * D[2])
    result = fista_encode(X, torch.from_numpy(D), alpha=1e-10)
    assert int(result.n_iter.max()) < 1000
    assert not bool(result.converged.all())


def _code_at_the_warm_starts_gap(x, D, z0, alpha, margin):
    """Code the rows x from z0 at a tol just below z0's relative duality gap.

    The warm start is then certified only if the certificate misreads its gap.
    """
    primal, gap = duality_gap(x, z0, D, alpha, False)
    tol = float(gap[0] / primal[0]) * (1 - margin)
    result = fista_encode(
        torch.from_numpy(x),
        torch.from_numpy(D),
        alpha=alpha,
        tol=tol,
        init=torch.from_numpy(z0),
    )
    return result, tol


def test_a_warm_start_violated_by_a_negative_correlation_is_not_certified():
    # The warm start is optimal on atom 1; atom 0's correlation is -1, beyond
    # -alpha. tol sits just below its gap, in the band where the float32
    # screen defers to the exact float64 maximum of |r.d_j|.
    D, x, alpha = np.eye(2), np.array([[-1.0, 2.0]]), 0.98
    z0 = np.array([[0.0, 2.0 - alpha]])
    result, _ = _code_at_the_warm_starts_gap(x, D, z0, alpha, margin=1e-7)
    assert bool(result.converged.all())
    np.testing.assert_allclose(result.codes.numpy(), [[-0.02, 1.02]], atol=1e-12)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_certificates_with_long_atoms_cover_the_float32_rounding(seed):
    # Atoms of norm 1000: a rounding bound in unit-atom terms is 1000 times
    # too small, and warm starts whose exact gap is just above tol passed.
    rng = np.random.default_rng(seed)
    D = 1000 * random_dictionary(rng, 12, 30)
    x, alpha = 1000 * rng.standard_normal((1, 30)), 2e4
    lasso = Lasso(alpha=alpha / 30, fit_intercept=False, tol=1e-14, max_iter=10**6)
    z0 = np.concatenate([[0.0], lasso.fit(D[1:].T, x[0]).coef_])[None]
    result, tol = _code_at_the_warm_starts_gap(x, D, z0, alpha, margin=1e-9)
    assert bool(result.converged[0])
    primal, gap = duality_gap(x, result.codes.numpy(), D, alpha, False)
    assert gap[0] <= tol * primal[0]


def test_unconverged_rows_and_rows_at_the_rounding_floor_are_counted_apart():
    # Rows at the floor have their own warning; the max_iter one counts the
    # others only.
    coder = FISTACoder(np.eye(2), max_iter=7)
    with pytest.warns(ConvergenceWarning) as caught:
        coder._warn_unconverged((5, 2), 10)
    first, second = (str(w.message) for w in caught)
    assert "for 3 of 10 samples, within max_iter=7" in first
    assert "for 2 of 10 samples: their duality gap fell" in second


@pytest.mark.parametrize("seed", [684, 0, 1, 2])
def test_no_row_returns_costing_more_than_its_warm_start(seed):
    # Signed near-duplicate atoms in 3 to 9 features, float32 coded in
    # float32 throughout: a row that ran out of max_iter came back 0.1 %
    # above the warm start it was given (seed 684).
    rng = np.random.default_rng(seed)
    n_features, m, n = rng.integers(2, 10), rng.integers(20, 100), rng.integers(5, 40)
    D = rng.standard_normal((m, n_features))
    if rng.integers(2):
        k = m // 3
        D[k : 2 * k] = D[:k] * rng.choice([-1, 1], (k, 1)) + rng.standard_normal(
            (k, n_features)
        ) * 10 ** rng.uniform(-10, -2)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((n, n_features)) * rng.uniform(0.1, 10, (n, 1))
    alpha = float(np.abs(X @ D.T).max() * 10 ** rng.uniform(-5, -0.5))
    rng.integers(2, size=2)
    rng.uniform()
    rng.integers(4, size=3)
    X32, D32 = torch.from_numpy(X).float(), torch.from_numpy(D).float()
    warm = fista_encode(
        X32, D32, alpha=alpha * float(rng.uniform(0.5, 3)), positive=True
    ).codes
    result = fista_encode(
        X32,
        D32,
        alpha=alpha,
        positive=True,
        init=warm,
        tol=2.9e-6,
        max_iter=200,
        float64_finish=False,
    )
    before, after = (
        lasso_objective(X32.numpy(), Z.numpy(), D32.numpy(), alpha)
        for Z in (warm, result.codes)
    )
    assert np.all(after <= before * (1 + 1e-12))


@pytest.mark.parametrize(
    "n_components, n_features, support",
    [(40, 2, 40), (40, 2, 8), (100, 8, 100), (200, 16, 200)],
)
def test_a_warm_start_denser_than_any_solution_starts_from_zero(
    n_components, n_features, support
):
    # Codes on at least max(8, 2 * n_features) atoms went to the all-atoms
    # solver, whose Newton steps stop at that support size: 860-935
    # iterations for 20-25 from zero, or none converged within max_iter.
    # (40, 2, 8): exactly that many atoms.
    g = torch.Generator().manual_seed(0)
    D = torch.randn(n_components, n_features, generator=g, dtype=torch.float64)
    D /= D.norm(dim=1, keepdim=True)
    X = torch.randn(6, n_features, generator=g, dtype=torch.float64)
    alpha = 1e-4 * float((X @ D.T).abs().max())
    cold = fista_encode(X, D, alpha=alpha)
    dense = torch.zeros(6, n_components, dtype=torch.float64)
    dense[:, :support] = 0.5
    warm = fista_encode(X, D, alpha=alpha, init=dense)
    assert warm.converged.all()
    torch.testing.assert_close(warm.n_iter, cold.n_iter, rtol=0, atol=0)
    torch.testing.assert_close(warm.codes, cold.codes, rtol=0, atol=0)


def test_a_dense_warm_start_already_optimal_is_kept_as_it_is():
    # Three copies of each of 20 atoms in 3 features: codes spread evenly
    # over the copies are optimal, on 9 atoms per row (more than twice the
    # features). Certified at once, not recomputed from zero.
    g = torch.Generator().manual_seed(1)
    base = torch.randn(20, 3, generator=g, dtype=torch.float64)
    base /= base.norm(dim=1, keepdim=True)
    X = torch.randn(50, 3, generator=g, dtype=torch.float64)
    optimum = fista_encode(X, base, alpha=0.01, tol=1e-12, max_iter=100000).codes
    spread = optimum.repeat_interleave(3, dim=1) / 3
    result = fista_encode(X, base.repeat_interleave(3, dim=0), alpha=0.01, init=spread)
    assert bool(result.converged.all())
    assert int(result.n_iter.max()) == 0
    torch.testing.assert_close(result.codes, spread, rtol=0, atol=0)


def test_dense_warm_starts_on_few_atoms_per_feature_stay_with_the_all_atoms_solver(
    monkeypatch,
):
    # With n_components <= 2 * n_features every atom is "twice the features"
    # away: restarting such rows from zero took twice as long.
    calls = []
    all_atoms = _working_set._fista_all_atoms

    def spy(problem, rows, z, *args):
        calls.append(z.clone())
        return all_atoms(problem, rows, z, *args)

    monkeypatch.setattr(_working_set, "_fista_all_atoms", spy)
    g = torch.Generator().manual_seed(0)
    D = torch.randn(100, 60, generator=g, dtype=torch.float64)
    D /= D.norm(dim=1, keepdim=True)
    X = torch.randn(5, 60, generator=g, dtype=torch.float64)
    dense = torch.full((5, 100), 0.1, dtype=torch.float64)
    result = fista_encode(X, D, alpha=0.01, positive=True, init=dense)
    assert len(calls) == 1 and bool(result.converged.all())
    torch.testing.assert_close(calls[0], dense, rtol=0, atol=0)  # from the start


def test_restarted_rows_that_reach_the_all_atoms_solver_keep_their_warm_start(
    monkeypatch,
):
    # A restarted row works on a copy of its warm start: should it reach the
    # all-atoms solver and come back worse, the warm start is written back.
    calls = []

    def worse_codes(problem, rows, z, lipschitz, tol, max_iter):
        calls.append(rows.numel())
        return 3 * z + 1, max_iter, torch.zeros(rows.numel(), dtype=torch.bool)

    monkeypatch.setattr(_working_set, "_fista_all_atoms", worse_codes)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 4))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    D = torch.from_numpy(np.repeat(base, 10, axis=0))  # 40 atoms, w_cap = 8
    X = torch.from_numpy(rng.standard_normal((6, 4)))
    warm = torch.from_numpy(rng.uniform(0, 0.05, (6, 40)))  # overfull, not optimal
    result = fista_encode(X, D, alpha=0.05, init=warm, max_iter=30)
    assert calls
    before, after = (
        lasso_objective(X.numpy(), Z.numpy(), D.numpy(), 0.05)
        for Z in (warm, result.codes)
    )
    assert np.all(after <= before * (1 + 1e-12))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_all_atoms_path_keeps_a_better_warm_start(rng, monkeypatch, dtype):
    """Rows handed to the all-atoms solver (here every row: 8 atoms) keep
    their warm start when that solver returns codes that cost more."""
    calls = []

    def worse_codes(problem, rows, z, lipschitz, tol, max_iter):
        calls.append(rows.numel())
        n = rows.numel()
        return 3 * z + 1, max_iter, torch.zeros(n, dtype=torch.bool)

    monkeypatch.setattr(_working_set, "_fista_all_atoms", worse_codes)
    D = torch.from_numpy(random_dictionary(rng, 8, 4)).to(dtype)
    X = torch.from_numpy(rng.standard_normal((6, 4))).to(dtype)
    warm = torch.from_numpy(rng.uniform(0, 0.5, (6, 8))).to(dtype)
    result = fista_encode(
        X, D, alpha=0.05, init=warm, max_iter=30, float64_finish=False
    )
    assert calls
    torch.testing.assert_close(result.codes, warm, rtol=0, atol=0)


def test_lipschitz_constant_is_the_squared_spectral_norm(rng):
    D = torch.from_numpy(rng.standard_normal((300, 40)))
    expected = torch.linalg.matrix_norm(D, ord=2).item() ** 2
    assert lipschitz_constant(D) == pytest.approx(expected, rel=1e-5)
    assert lipschitz_constant(D.T) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shape", [(30, 10), (10, 30), (60, 20)])
def test_lipschitz_constant_is_never_below_the_squared_spectral_norm(rng, shape):
    # Power iteration approaches ||D||_2^2 from below; the step 1 / L must not
    # be longer than the gradient allows, so the estimate is inflated past it.
    A = rng.standard_normal(shape)
    expected = np.linalg.norm(A, 2) ** 2
    estimate = lipschitz_constant(torch.from_numpy(A))
    assert expected <= estimate <= expected * (1 + 1e-5)


@pytest.mark.parametrize("max_iter", [500, 3, 40])
@pytest.mark.parametrize("shape", [(300, 40), (12, 12), (5, 90)])
def test_lipschitz_constant_reads_its_estimates_in_groups(
    rng, monkeypatch, shape, max_iter
):
    # Read one by one, the estimates were host syncs each iteration; read in
    # groups, the result is the same to the last bit.
    D = torch.from_numpy(rng.standard_normal(shape))
    with HostReads() as grouped:
        estimate = lipschitz_constant(D, max_iter=max_iter)
    monkeypatch.setattr(_core, "_POWER_READS_EVERY", 1)
    with HostReads() as one_by_one:
        assert lipschitz_constant(D, max_iter=max_iter) == estimate
    iterations = one_by_one.count - 1  # the scale's read, then one an iteration
    assert 3 <= iterations <= max_iter
    group = 16  # skdict._fista._core._POWER_READS_EVERY
    assert grouped.count == 1 + -(-iterations // group)


@pytest.mark.parametrize("m", [1000, 1003, 48])
def test_next_working_sets_take_the_best_groups(rng, m):
    """The support comes first, then the maxima of the best groups whose
    maximum is not a support atom, all distinct, whatever the row order."""
    n = 40
    size = _group_size(m)
    n_groups = m // size
    assert (size, n_groups) == {1000: (8, 125), 1003: (1, 1003), 48: (1, 48)}[m]
    scores = torch.from_numpy(rng.standard_normal((n, m)))
    atoms = torch.stack([torch.from_numpy(rng.permutation(m)[:10]) for _ in range(n)])
    values = torch.from_numpy(
        rng.uniform(0.1, 1.0, (n, 10)) * (rng.random((n, 10)) < 0.6)
    )
    values[0] = 0.0  # an empty support
    # Make some support atoms the maximum of their group.
    rows = torch.arange(n).unsqueeze(1)
    scores[rows, atoms[:, :3]] = 5.0 + torch.arange(3.0, dtype=scores.dtype)
    widths = torch.from_numpy(rng.integers(12, 17, n)).sort().values
    keep = torch.from_numpy(rng.permutation(n))  # row i of the batch is scores[keep[i]]
    group_max = _group_maxima(scores, size)
    assert group_max.shape == (n, n_groups)
    new_atoms, new_values = _next_working_sets(
        atoms, values, scores, keep, group_max[keep].clone(), widths
    )
    assert new_atoms.shape == new_values.shape == (n, int(widths.max()))
    for i in range(n):
        w, row = int(widths[i]), scores[keep[i]]
        support = atoms[i][values[i] != 0]
        count = support.numel()
        got = new_atoms[i, :w]
        assert got[:count].tolist() == support.tolist()
        torch.testing.assert_close(new_values[i, :count], values[i][values[i] != 0])
        assert not bool(new_values[i, count:w].any())
        assert len(set(got.tolist())) == w
        # Expected: the maxima of the best groups, masked where a support atom
        # is the maximum.
        group_of = torch.arange(m) // size
        best = {}
        for atom in torch.argsort(row, descending=True).tolist():
            best.setdefault(int(group_of[atom]), atom)
        ranked = [
            a
            for a in sorted(best.values(), key=lambda a: -row[a])
            if a not in support.tolist()
        ]
        assert got[count:].tolist() == ranked[: w - count]


def test_small_width_groups_join_wider_ones(monkeypatch):
    monkeypatch.setattr(_working_set, "_MIN_GROUP_ROWS", 10)
    width = torch.tensor([8] * 3 + [12] * 20 + [16] * 4 + [20] * 5 + [24] * 2)
    widths, counts = _merge_widths(width)
    # 8 joins 12; 16 and 20 join 24, the widest, which stays however small.
    assert (widths, counts) == ([12, 24], [23, 11])
    assert width.tolist() == [12] * 23 + [24] * 11
    width = torch.tensor([8] * 12 + [12] * 2)
    assert _merge_widths(width) == ([8, 12], [12, 2])


def test_take_square_matches_advanced_indexing(rng):
    G = torch.from_numpy(rng.standard_normal((30, 30)))
    idx = torch.from_numpy(rng.integers(0, 30, (7, 5)))
    expected = G[idx.unsqueeze(2), idx.unsqueeze(1)]
    torch.testing.assert_close(_take_square(G, idx), expected, rtol=0, atol=0)
    stack = torch.from_numpy(rng.standard_normal((9, 6, 6)))
    rows = torch.tensor([8, 0, 3])
    idx = torch.from_numpy(rng.integers(0, 6, (3, 4)))
    expected = torch.stack([stack[r][i][:, i] for r, i in zip(rows, idx, strict=True)])
    got = _take_square(stack, idx, base=rows * 36)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape, density",
    [((30, 12), 0.4), ((40, 200), 0.03), ((25, 64), 0.0), ((6, 5), 1.0)],
    ids=["cumulative-sums", "scattered-non-zeros", "all-zero", "full"],
)
def test_support_indices_put_the_support_first(rng, shape, density):
    z = torch.from_numpy(rng.standard_normal(shape) * (rng.random(shape) < density))
    z[0] = 0.0
    idx, valid = _support_indices(z)
    width = int((z != 0).sum(dim=1).max())
    # Reference: each row's non-zero positions in order, then its zeros in order.
    expected = torch.tensor(
        [
            (
                torch.nonzero(row).flatten().tolist()
                + torch.nonzero(row == 0).flatten().tolist()
            )[:width]
            for row in z
        ],
        dtype=torch.long,
    ).reshape(shape[0], width)
    torch.testing.assert_close(idx, expected, rtol=0, atol=0)
    torch.testing.assert_close(
        valid, (z != 0).sum(dim=1, keepdim=True) > torch.arange(width)
    )


def face_objective(u, G, b, alpha):
    """0.5 u G u - b.u + alpha |u|_1, the lasso in Gram form."""
    return 0.5 * u @ G @ u - b @ u + alpha * np.abs(u).sum()


@pytest.mark.parametrize("flip", [False, True])
def test_newton_step_solves_the_face(rng, flip):
    # The face's optimum u is built in: b = G u + alpha sign(z). With u of z's
    # signs the step lands on it; with one sign flipped it stops at the first
    # zero on the way and lowers the face objective.
    A = rng.standard_normal((4, 10))
    G, alpha = A @ A.T, 0.05
    z = np.array([0.3, -0.2, 0.1, 0.4])
    sign = np.sign(z)
    u = np.array([0.5, -0.1, 0.2, 0.3])
    if flip:
        u[2] = -0.2
    rhs = G @ u  # = b - alpha * sign
    b = rhs + alpha * sign
    solution, ok, moved = _newton_on_support(
        torch.from_numpy(G)[None],
        torch.from_numpy(rhs)[None],
        torch.from_numpy(z)[None],
        torch.ones(1, 4, dtype=torch.bool),
        partial=True,
    )
    if not flip:
        assert bool(ok) and not bool(moved)
        np.testing.assert_allclose(solution[0].numpy(), u, rtol=1e-10)
    else:
        assert bool(moved) and int((solution[0] == 0).sum()) == 1
        assert solution[0, 2] == 0  # the coordinate whose sign would flip
        assert face_objective(solution[0].numpy(), G, b, alpha) < face_objective(
            z, G, b, alpha
        )


@pytest.mark.parametrize("n_atoms, n_features", [(6, 4), (13, 5), (40, 9)])
def test_newton_step_shrinks_singular_supports(rng, n_atoms, n_features):
    """More atoms than dimensions: moves along null vectors of G_SS keep the
    residual, do not raise the objective and drop one atom per null
    dimension, down to the rank, with one eigendecomposition."""
    D = random_dictionary(rng, n_atoms, n_features)
    x = rng.standard_normal(n_features)
    z = rng.uniform(0.1, 1.0, n_atoms)
    G, b, alpha = D @ D.T, D @ x, 0.01
    valid = torch.ones(1, n_atoms, dtype=torch.bool)
    for partial, expect in ((False, False), (True, True)):
        solution, ok, moved = _newton_on_support(
            torch.from_numpy(G)[None],
            torch.from_numpy(b - alpha)[None],
            torch.from_numpy(z)[None],
            valid,
            partial=partial,
        )
        assert not bool(ok) and bool(moved) == expect
    new = solution[0].numpy()
    assert int((new != 0).sum()) == n_features and np.all(new >= 0)
    np.testing.assert_allclose(new @ D, z @ D, atol=1e-10)
    assert (
        lasso_objective(x[None], new[None], D, alpha)
        <= lasso_objective(x[None], z[None], D, alpha) + 1e-12
    )


@pytest.mark.parametrize("seed", range(8))
def test_null_move_on_a_near_duplicate_pair_lowers_the_objective(seed):
    # Two atoms at an angle of 1e-8 sharing a coefficient's weight: the null
    # direction of G_SS moves weight from one to the other, the L1 norm
    # unchanged to first order and the residual by 1e-8 of the move, so
    # that phi's slope along it decides which way lowers phi. Oriented by
    # the L1 norm's slope alone, the move went uphill half the time, and
    # was refused: such rows stalled (test below).
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(3)
    a /= np.linalg.norm(a)
    twin = a + 1e-8 * rng.standard_normal(3)
    D = np.vstack([a, twin / np.linalg.norm(twin), rng.standard_normal(3)])
    D[2] /= np.linalg.norm(D[2])
    x = rng.standard_normal(3)
    z = np.array([0.3, 0.3, 0.2])
    G, alpha = D @ D.T, 0.05
    rhs = D @ x - alpha * np.sign(z)
    solution, ok, moved = _newton_on_support(
        torch.from_numpy(G)[None],
        torch.from_numpy(rhs)[None],
        torch.from_numpy(z)[None],
        torch.ones(1, 3, dtype=torch.bool),
        partial=True,
    )
    new = solution[0].numpy()
    assert not bool(ok) and bool(moved)
    assert np.count_nonzero(new[:2]) == 1 and new[2] > 0
    assert face_objective(new, G, D @ x, alpha) < face_objective(z, G, D @ x, alpha)


@pytest.mark.parametrize("positive", [False, True])
def test_small_alpha_converges_without_warning(rng, positive):
    """Tiny alpha on 50 atoms in 12 dimensions: supports fill the space and
    the working-set solves stall until the active-set moves finish them.

    (In float32 the relative gap of even the rounded optimum is about
    eps * ||x|| / alpha, far above the float32 tolerance floor here.)
    """
    D = random_dictionary(rng, 50, 12)
    X = sparse_codes(rng, 40, 50, 3) @ D
    X[:10] = rng.standard_normal((10, 12))  # not exactly representable sparsely
    result = fista_encode(
        torch.from_numpy(X), torch.from_numpy(D), alpha=1e-4, positive=positive
    )
    assert bool(result.converged.all())
    primal, gap = duality_gap(X, result.codes.numpy(), D, 1e-4, positive)
    assert np.all(gap <= 1e-6 * primal)
    assert int(result.n_iter.max()) < 400
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        FISTACoder(D, alpha=1e-4, positive=positive).fit_transform(X)


def test_many_batches_and_working_set_rounds(rng, monkeypatch):
    """Several batches, several working-set rounds and sizes, with and without
    the full Gram matrix: the codes are the tight lasso's."""
    D = random_dictionary(rng, 400, 40)
    X = sparse_codes(rng, 90, 400, 12) @ D + 0.01 * rng.standard_normal((90, 40))
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    calls = []
    solve = _working_set._solve_working_sets

    def counting(problem, rows, atoms, *args):
        calls.append((rows.numel(), atoms.shape[1]))
        return solve(problem, rows, atoms, *args)

    monkeypatch.setattr(_working_set, "_solve_working_sets", counting)
    with_gram = fista_encode(Xt, Dt, alpha=0.05, tol=1e-10, batch_size=40)
    assert len(calls) >= 3 * 3  # three batches, several rounds each
    assert len({width for _, width in calls}) >= 2
    grams = _record_grams(monkeypatch)
    monkeypatch.setattr(_driver, "_MAX_GRAM_ELEMENTS", 0)
    without = fista_encode(Xt, Dt, alpha=0.05, tol=1e-10, batch_size=40)
    assert grams == [False] * 3  # three batches, none with the full Gram
    assert bool(with_gram.converged.all()) and bool(without.converged.all())
    torch.testing.assert_close(with_gram.codes, without.codes, atol=1e-7, rtol=0)
    reference = tight_lasso(X, D, 0.05, False)
    np.testing.assert_allclose(
        lasso_objective(X, with_gram.codes.numpy(), D, 0.05),
        lasso_objective(X, reference, D, 0.05),
        rtol=1e-8,
    )


@pytest.mark.parametrize("n_components", [40, 70])  # Gram and residual forms
def test_all_atoms_path_without_full_gram(rng, monkeypatch, n_components):
    """Dense solutions are solved on all atoms; without the full Gram matrix the
    Newton steps gather the atoms and the gradient uses the residual form."""
    D = random_dictionary(rng, n_components, 30)
    # Rows enough for the full Gram to pay (_MIN_GRAM_ROWS_PER_ATOM): with 8,
    # both calls had gone without it.
    X = rng.standard_normal((40, 30))
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    grams, all_atoms, solve = (
        _record_grams(monkeypatch),
        [],
        _working_set._fista_all_atoms,
    )
    monkeypatch.setattr(
        _working_set,
        "_fista_all_atoms",
        lambda problem, *a, **k: all_atoms.append(problem) or solve(problem, *a, **k),
    )
    ours = fista_encode(Xt, Dt, alpha=1e-3, tol=1e-10)
    monkeypatch.setattr(_driver, "_MAX_GRAM_ELEMENTS", 0)
    no_gram = fista_encode(Xt, Dt, alpha=1e-3, tol=1e-10)
    assert grams == [True, False]
    assert [problem.gram is not None for problem in all_atoms] == [True, False]
    for result in (ours, no_gram):
        assert bool(result.converged.all())
        primal, gap = duality_gap(X, result.codes.numpy(), D, 1e-3, False)
        assert np.all(gap <= 1e-9 * primal)


def _record_grams(monkeypatch):
    """Whether each batch problem fista_encode builds holds the full Gram."""
    grams = []

    class Recording(_problem._Problem):
        def __init__(self, *args, gram, **kwargs):
            grams.append(gram is not None)
            super().__init__(*args, gram=gram, **kwargs)

    monkeypatch.setattr(_driver, "_Problem", Recording)
    return grams


def _check_certificates(make_problem, atoms, values, primal, gap, rounding):
    """At tolerances between the samples' exact relative gaps, certificates
    from float32 correlations bound the exact gaps from above and take the
    exact decisions: near each tolerance some samples' bounds straddle it."""
    ratios = np.sort(gap / primal)
    # Midpoints of ratios further apart than the exact gaps' own rounding.
    apart = np.diff(ratios) > 4 * np.max(rounding / primal)
    midpoints = ((ratios[:-1] + ratios[1:]) / 2)[apart]
    assert midpoints.size >= 3
    rows = torch.arange(primal.size)
    for tol in np.quantile(midpoints, [0.1, 0.5, 0.9], method="nearest"):
        problem = make_problem(float(tol))
        got_primal, got_gap, _, _ = problem.certify_sparse(atoms, values, rows)
        got_primal, got_gap = got_primal.numpy(), got_gap.numpy()
        np.testing.assert_allclose(got_primal, primal, rtol=1e-12)
        assert np.all(got_gap >= gap - rounding)
        np.testing.assert_array_equal(got_gap <= tol * got_primal, gap <= tol * primal)


def test_float32_codes_are_certified_in_float64(rng, monkeypatch):
    """Large supports in float32: gaps whose decision float32 rounding could
    flip are recomputed in float64, so the returned codes meet the float32
    tolerance when measured exactly, and certificates hold exactly."""
    D = random_dictionary(rng, 400, 120)
    X = sparse_codes(rng, 30, 400, 40) @ D
    X32, D32 = torch.from_numpy(X).float(), torch.from_numpy(D).float()
    result = fista_encode(X32, D32, alpha=0.1, positive=True)
    assert bool(result.converged.all())
    Xd, Dd = X32.double().numpy(), D32.double().numpy()
    primal, gap = duality_gap(Xd, result.codes.double().numpy(), Dd, 0.1, True)
    assert np.all(gap <= 100 * np.finfo(np.float32).eps * primal)
    codes = result.codes
    atoms, _ = _support_indices(codes)
    # With a float64 copy of the dictionary, and converting blocks of atoms.
    patch_everywhere(monkeypatch, _problem, "_AUTO_BATCH_ELEMENTS", 4 * 120 * 64)
    for D64 in (D32.double(), None):

        def problem(tol, D64=D64):
            return _problem._Problem(
                X32,
                D32,
                gram=None,
                alpha=0.1,
                positive=True,
                D64=D64,
                tol=tol,
                max_norm=1.0 + 1e-5,
            )

        _check_certificates(
            problem,
            atoms,
            codes.gather(1, atoms),
            primal,
            gap,
            100 * np.finfo(np.float64).eps * primal,
        )
        # The dense float64 objective reads the atoms whole, or in blocks of
        # 64 (the patched budget: 4 x 120 features x 64 atoms).
        assert len(list(problem(1e-6)._blocks64())) == (1 if D64 is not None else 7)
        objective = problem(1e-6).objective(torch.arange(len(X32)), codes)
        np.testing.assert_allclose(objective.numpy(), primal, rtol=1e-12)


@pytest.mark.parametrize(
    "dtype, scale",
    [(torch.float64, 1.0), (torch.float32, 1.0), (torch.float64, 1e200)],
)
def test_an_offset_is_subtracted_batch_by_batch(rng, dtype, scale):
    # A provider's intercept is subtracted from each batch: X - b made a copy
    # of all of X. The codes are those of the centred copy, bit for bit, in
    # the float64 finish of float32 rows (alpha=0.01) and after rescaling.
    D = torch.from_numpy(random_dictionary(rng, 30, 12)).to(dtype)
    b = torch.from_numpy(rng.standard_normal(12)).to(dtype)
    X = (torch.from_numpy(sparse_codes(rng, 70, 30, 3)).to(dtype) @ D + b) * scale
    kwargs = dict(alpha=0.01 * scale, positive=True, batch_size=16)
    expected = fista_encode(X - b * scale, D, **kwargs)
    got = fista_encode(X, D, offset=b * scale, **kwargs)
    torch.testing.assert_close(got.codes, expected.codes, rtol=0, atol=0)
    assert torch.equal(got.n_iter, expected.n_iter)
    assert torch.equal(got.converged, expected.converged)


def test_automatic_batches_are_sized_by_the_wider_of_atoms_and_features(
    rng, monkeypatch
):
    # Wide rows on few atoms: batches sized by the atoms alone took every
    # row at once (100,000 rows of 1,024 features on 16 atoms peaked at 7
    # times the data, whatever their number).
    batches = []

    class Recording(_problem._Problem):
        def __init__(self, X, *args, **kwargs):
            batches.append(X.shape[0])
            super().__init__(X, *args, **kwargs)

    monkeypatch.setattr(_driver, "_Problem", Recording)
    patch_everywhere(monkeypatch, _problem, "_AUTO_BATCH_ELEMENTS", 10 * 64)
    D = random_dictionary(rng, 4, 64)
    X = torch.from_numpy(sparse_codes(rng, 25, 4, 2) @ D)
    expected = fista_encode(X, torch.from_numpy(D), batch_size=25).codes
    batches.clear()
    codes = fista_encode(X, torch.from_numpy(D)).codes
    assert batches == [10, 10, 5]
    torch.testing.assert_close(codes, expected, rtol=0, atol=1e-12)
    batches.clear()
    FISTACoder(D).fit(X).transform(X)  # the estimator's automatic batches
    assert batches == [10, 10, 5]


@pytest.mark.parametrize(("alpha", "scale"), [(1e-3, 1.0), (1e-2, 1.0), (1e-3, 100.0)])
def test_float32_small_alpha_is_finished_in_float64(rng, alpha, scale):
    """With a small alpha, rounding the optimal codes to float32 leaves a gap
    above float32's floor at their own dual point: such samples are finished
    in float64 and rounded, certified, at the float64 objective."""
    D = random_dictionary(rng, 20, 10)
    X = scale * rng.standard_normal((50, 10))
    codes = {}
    for dtype in (torch.float64, torch.float32):
        result = fista_encode(
            torch.from_numpy(X).to(dtype),
            torch.from_numpy(D).to(dtype),
            alpha=alpha,
            max_iter=2000,
        )
        assert bool(result.converged.all()), dtype
        assert int(result.n_iter.max()) < 500, dtype
        codes[dtype] = result.codes.double().numpy()
    D32 = D.astype(np.float32).astype(np.float64)
    exact, _ = duality_gap(X, codes[torch.float64], D, alpha, False)
    rounded, _ = duality_gap(
        X.astype(np.float32), codes[torch.float32], D32, alpha, False
    )
    np.testing.assert_allclose(rounded, exact, rtol=1e-5)


def test_float64_finish_works_a_batch_of_stalled_rows_at_a_time(rng, monkeypatch):
    # batch_size bounds the memory of the float64 finish too: its copies of
    # the stalled rows are made a batch at a time, with the same results.
    D = random_dictionary(rng, 20, 10)
    X = torch.from_numpy(rng.standard_normal((50, 10))).float()
    D32 = torch.from_numpy(D).float()
    whole = fista_encode(X, D32, alpha=0.01, max_iter=2000)
    rows = []
    encode = _driver._encode

    def recording(X_batch, *args, **kwargs):
        if X_batch.dtype == torch.float64:
            rows.append(X_batch.shape[0])
        return encode(X_batch, *args, **kwargs)

    monkeypatch.setattr(_driver, "_encode", recording)
    batched = fista_encode(X, D32, alpha=0.01, max_iter=2000, batch_size=8)
    assert sum(rows) > 8 and max(rows) <= 8  # several batches of stalled rows
    assert bool(batched.converged.all())
    # Both certified within tol of each row's optimum; the codes themselves
    # may differ by rounding (MKL's AVX2 kernels: 3e-6).
    np.testing.assert_allclose(
        lasso_objective(X, batched.codes, D32, 0.01),
        lasso_objective(X, whole.codes, D32, 0.01),
        rtol=3e-5,
    )
    torch.testing.assert_close(batched.codes, whole.codes, rtol=0, atol=1e-4)


def test_float32_samples_finished_in_float64_count_all_their_iterations(rng):
    # max_iter bounds every sample's iterations, those of its float32 start
    # (50) and of its float64 finish together, and n_iter reports the sum.
    D = torch.from_numpy(random_dictionary(rng, 20, 10)).float()
    X = torch.from_numpy(rng.standard_normal((50, 10))).float()
    alpha = 0.05  # a few rows stall in float32 that the rounding bound lets in
    start = fista_encode(X, D, alpha=alpha, max_iter=50, float64_finish=False)
    routed = _driver._float32_floor_rows(
        X, D, None, alpha=alpha, tol=_driver._effective_tol(1e-6, torch.float32), step=8
    )
    finished = ~start.converged & ~routed
    assert finished.sum() >= 3  # the float64 finish has work to do
    result = fista_encode(X, D, alpha=alpha, max_iter=60)
    assert int(result.n_iter.max()) <= 60
    assert bool((result.n_iter[finished] > 50).all())
    kept = start.converged & ~routed
    torch.testing.assert_close(result.n_iter[kept], start.n_iter[kept])


@pytest.mark.parametrize("alpha", [1e-3, 0.02])
def test_float32_rows_below_their_rounding_floor_start_in_float64(
    rng, alpha, monkeypatch
):
    # Rows where one float32 rounding of the correlations, eps ||x|| max ||d||,
    # exceeds the tolerance's share of alpha cannot be certified in float32:
    # they skip the float32 iterations (at alpha=1e-3 every row: before, all
    # 50 rows ran 50 float32 iterations, then were finished in float64).
    D = torch.from_numpy(random_dictionary(rng, 20, 10)).float()
    X = torch.from_numpy(rng.standard_normal((50, 10))).float()
    offset = torch.from_numpy(rng.standard_normal(10)).float() / 4
    init = torch.from_numpy(np.abs(rng.standard_normal((50, 20)))).float() / 10
    routed = _driver._float32_floor_rows(
        X,
        D,
        offset,
        alpha=alpha,
        tol=_driver._effective_tol(1e-6, torch.float32),
        step=8,
    )
    assert routed.any()
    coded32 = []
    encode = _driver._encode

    def recording(X_batch, *args, rows=None, **kwargs):
        if X_batch.dtype == torch.float32:
            coded32.append(X_batch.shape[0] if rows is None else rows.numel())
        return encode(X_batch, *args, rows=rows, **kwargs)

    monkeypatch.setattr(_driver, "_encode", recording)
    kwargs = dict(alpha=alpha, positive=True, init=init, offset=offset, batch_size=8)
    result = fista_encode(X, D, **kwargs)
    assert sum(coded32) == int((~routed).sum())
    assert bool(result.converged.all())
    assert result.codes.dtype == torch.float32
    monkeypatch.undo()
    # The same codes as float64 throughout, to the certified tolerance.
    exact = fista_encode(
        X.double(),
        D.double(),
        **{**kwargs, "init": init.double(), "offset": offset.double()},
    )
    np.testing.assert_allclose(
        lasso_objective(X - offset, result.codes, D, alpha),
        lasso_objective(X.double() - offset.double(), exact.codes, D.double(), alpha),
        rtol=2e-5,
    )
    # Rows coded in float64 from the start count their float64 iterations.
    assert bool((result.n_iter[routed] <= 1000).all())
    assert bool((result.n_iter[routed] > 0).all())


def test_float32_rounding_floor_scales_with_the_atoms_and_the_penalty():
    # The bound is scale-free: (s X, s alpha) routes the rows of (X, alpha),
    # and atoms twice as long double each row's rounding.
    X = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    D = torch.eye(2)
    tol = _driver._effective_tol(1e-6, torch.float32)
    eps = torch.finfo(torch.float32).eps
    alpha = 5.0 * eps / tol / 1.5  # row 0: ||x|| = 5 is 1.5 times the bound
    rows = _driver._float32_floor_rows(X, D, None, alpha=alpha, tol=tol, step=2)
    assert rows.tolist() == [True, False, False]
    scaled = _driver._float32_floor_rows(
        X * 1024, D, None, alpha=alpha * 1024, tol=tol, step=2
    )
    assert scaled.tolist() == rows.tolist()
    longer = _driver._float32_floor_rows(
        X, 2 * D, None, alpha=2 * alpha, tol=tol, step=2
    )
    assert longer.tolist() == rows.tolist()
    # An offset is subtracted first: rows at the offset have nothing to code.
    centred = _driver._float32_floor_rows(X, D, X[0], alpha=alpha, tol=tol, step=2)
    assert centred.tolist() == [False, True, True]


@pytest.fixture
def matmul_precision():
    """Restore torch's process-wide float32 matmul settings after the test."""
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("per-backend fp32_precision needs torch >= 2.9")
    backends = [
        torch.backends,
        torch.backends.cuda.matmul,
        torch.backends.mkldnn.matmul,
    ]
    legacy = torch.get_float32_matmul_precision()
    saved = [backend.fp32_precision for backend in backends]
    yield lambda: [b.fp32_precision for b in backends[1:]]
    # The legacy setting first: setting it also sets the per-backend ones.
    torch.set_float32_matmul_precision(legacy)
    for backend, value in zip(backends, saved, strict=True):
        backend.fp32_precision = value


@pytest.mark.parametrize("api", ["legacy", "per backend", "global"])
def test_certificates_compute_in_ieee_float32_whatever_the_matmul_precision(
    rng, monkeypatch, matmul_precision, api
):
    # TF32 products round inputs to 10 mantissa bits, past the float32
    # rounding bound the certificates rely on; torch sets them three ways
    # (the legacy getter raises after the newer two).
    D = torch.from_numpy(random_dictionary(rng, 8, 5)).float()
    X = torch.from_numpy(rng.standard_normal((6, 5))).float()
    if api == "legacy":
        torch.set_float32_matmul_precision("high")
    elif api == "per backend":
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    else:
        torch.backends.fp32_precision = "tf32"
    before = matmul_precision()
    seen = []
    encode = _driver._encode

    def recording(*args, **kwargs):
        seen.append(matmul_precision())
        return encode(*args, **kwargs)

    monkeypatch.setattr(_driver, "_encode", recording)
    fista_encode(X, D, alpha=0.1)
    assert seen and all(state == ["ieee", "ieee"] for state in seen)
    assert matmul_precision() == before  # restored
    monkeypatch.setattr(_driver, "_encode", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        fista_encode(X, D, alpha=0.1)
    assert matmul_precision() == before


def test_a_precision_set_during_coding_is_kept(rng, monkeypatch, matmul_precision):
    # Set meanwhile (e.g. by another thread), the caller's own setting is
    # not reverted when the coding call ends; the untouched one is restored.
    D = torch.from_numpy(random_dictionary(rng, 8, 5)).float()
    X = torch.from_numpy(rng.standard_normal((6, 5))).float()
    mkldnn_before = torch.backends.mkldnn.matmul.fp32_precision
    encode = _driver._encode

    def user_sets_tf32(*args, **kwargs):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        return encode(*args, **kwargs)

    monkeypatch.setattr(_driver, "_encode", user_sets_tf32)
    fista_encode(X, D, alpha=0.1)
    assert matmul_precision() == ["tf32", mkldnn_before]


def test_concurrent_coding_keeps_ieee_float32_until_the_last_call_ends(
    rng, monkeypatch, matmul_precision
):
    # One process-wide switch: a call that ends first must not hand TF32
    # back to a call still running in another thread.
    D = torch.from_numpy(random_dictionary(rng, 8, 5)).float()
    X = torch.from_numpy(rng.standard_normal((6, 5))).float()
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    inside = {"A": threading.Event(), "B": threading.Event()}
    release = {"A": threading.Event(), "B": threading.Event()}
    states = {}
    encode = _driver._encode

    def gated(*args, **kwargs):
        name = threading.current_thread().name
        inside[name].set()
        release[name].wait(10)
        states[name] = matmul_precision()
        return encode(*args, **kwargs)

    monkeypatch.setattr(_driver, "_encode", gated)
    threads = {
        name: threading.Thread(
            target=fista_encode, args=(X, D), kwargs={"alpha": 0.1}, name=name
        )
        for name in "AB"
    }
    threads["A"].start()
    assert inside["A"].wait(10)
    threads["B"].start()
    assert inside["B"].wait(10)
    release["A"].set()
    threads["A"].join(10)  # A leaves first; B is still coding
    release["B"].set()
    threads["B"].join(10)
    assert states == {"A": ["ieee", "ieee"], "B": ["ieee", "ieee"]}
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # restored at last


def test_learning_and_oracle_estimates_compute_in_ieee_float32(
    rng, monkeypatch, matmul_precision
):
    # Learning from drawn atoms computes in float32 even for float64 data:
    # under a caller's bfloat16 products (torch's "medium" precision, on a CPU
    # with AMX) it found other atoms (similarity 0.961 against 0.977), with
    # nothing in a record to say why.
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    seen = {}

    def recorder(module, name):
        original = getattr(module, name)

        def recording(*args, **kwargs):
            seen[name] = matmul_precision()
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, recording)

    recorder(_fista_coder, "learn_dictionary")
    recorder(_fista_coder, "online_dictionary_update")
    recorder(_oracle, "code_statistics")
    recorder(_oracle, "atoms_from_statistics")
    D = random_dictionary(rng, 8, 5)
    Z = sparse_codes(rng, 40, 8, 2)
    X = (Z @ D).astype(np.float32)
    FISTACoder(n_components=8, dict_max_iter=2).fit(X).partial_fit(X)
    OracleDictionary().fit(X, Z).partial_fit(X, Z)
    assert sorted(seen) == [
        "atoms_from_statistics",
        "code_statistics",
        "learn_dictionary",
        "online_dictionary_update",
    ]
    assert all(state == ["ieee", "ieee"] for state in seen.values())
    assert matmul_precision() == ["tf32", "bf16"]  # restored


def test_float32_codes_of_a_tiny_alpha_are_not_certified_far_from_optimal(rng):
    """alpha=1e-7 on unit-scale sparse data: certified float32 codes are those
    of the float64 optimum, rounded (an allowance for the rounding in the
    gap once certified codes 9.6 times the optimal objective)."""
    D = random_dictionary(rng, 40, 20).astype(np.float32)
    Z = sparse_codes(rng, 20, 40, 5)
    X = (Z @ D).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        codes32 = FISTACoder(D, alpha=1e-7).fit_transform(X).astype(np.float64)
        codes64 = FISTACoder(D.astype(np.float64), alpha=1e-7).fit_transform(
            X.astype(np.float64)
        )
    Xd, Dd = X.astype(np.float64), D.astype(np.float64)
    got, _ = duality_gap(Xd, codes32, Dd, 1e-7, False)
    best, _ = duality_gap(Xd, codes64, Dd, 1e-7, False)
    assert np.all(got <= best * (1 + 1e-4))


@pytest.mark.parametrize("positive", [False, True])
def test_float64_gaps_screened_in_float32_decide_exactly(rng, positive):
    """float64 data: the products with all atoms run in float32, yet the gaps
    decide as the float64 ones do, down to a tolerance far below float32's
    resolution."""
    D = random_dictionary(rng, 400, 60)
    X = sparse_codes(rng, 30, 400, 15) @ D + 1e-3 * rng.standard_normal((30, 60))
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D)
    result = fista_encode(Xt, Dt, alpha=0.05, positive=positive, tol=1e-12)
    assert bool(result.converged.all())
    primal, gap = duality_gap(X, result.codes.numpy(), D, 0.05, positive)
    assert np.all(gap <= 1e-12 * primal)
    # Codes moved off the optimum by relative amounts of 1e-6 to 1e-4 have
    # relative gaps of about their squares, spread far below float32's
    # resolution; a gap is a difference of two objectives of the primal's
    # size, so it is exact only to a hundred roundings of the primal (sums
    # over 60 features).
    atoms, _ = _support_indices(result.codes)
    shift = torch.logspace(-6, -4, 30, dtype=torch.float64).unsqueeze(1)
    values = result.codes.gather(1, atoms)
    noise = torch.from_numpy(rng.standard_normal(tuple(values.shape)))
    values = values * (1 + shift * noise)
    codes = torch.zeros_like(result.codes).scatter_add_(1, atoms, values)
    primal, gap = duality_gap(X, codes.numpy(), D, 0.05, positive)
    _check_certificates(
        lambda tol: _problem._Problem(
            Xt,
            Dt,
            gram=None,
            alpha=0.05,
            positive=positive,
            D64=Dt,
            tol=tol,
            max_norm=1.0 + 1e-5,
        ),
        atoms,
        values,
        primal,
        gap,
        100 * np.finfo(np.float64).eps * primal,
    )


# ----------------------------------------------------------------- FISTACoder


@pytest.fixture
def problem(rng):
    D = random_dictionary(rng, 50, 12)
    X = sparse_codes(rng, 40, 50, 3) @ D
    return X, D


def test_output_follows_input(problem):
    X, D = problem
    coder = FISTACoder(D, positive=True).fit(X)
    assert isinstance(coder.components_, np.ndarray)
    codes = coder.transform(X)
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float64
    codes32 = coder.transform(X.astype(np.float32))
    assert codes32.dtype == np.float32
    Xt = torch.from_numpy(X).float()
    codes_t = coder.transform(Xt)
    assert isinstance(codes_t, torch.Tensor) and codes_t.dtype == torch.float32
    np.testing.assert_allclose(
        lasso_objective(X, codes_t.numpy(), D, 0.1),
        lasso_objective(X, codes, D, 0.1),
        rtol=1e-5,
    )
    back = coder.inverse_transform(codes_t)
    assert isinstance(back, torch.Tensor) and back.shape == Xt.shape


def test_fit_on_tensors_keeps_tensor_attributes(problem):
    X, D = problem
    coder = FISTACoder(torch.from_numpy(D)).fit(torch.from_numpy(X))
    assert isinstance(coder.components_, torch.Tensor)
    assert isinstance(coder.intercept_, torch.Tensor)


def test_integer_tensors_give_float64_results(problem):
    # Integer data is coded as float64 (sklearn's convention) and must not be
    # returned, or stored, truncated to integers.
    X, D = problem
    X_int = torch.from_numpy(np.round(X * 10)).to(torch.int64)
    X_float = X_int.to(torch.float64)
    coder = FISTACoder(D, positive=True).fit(X_int)
    assert coder.components_.dtype == torch.float64
    reference = FISTACoder(D, positive=True).fit(X_float)
    codes = coder.transform(X_int)
    assert codes.dtype == torch.float64
    torch.testing.assert_close(codes, reference.transform(X_float))
    assert codes.abs().sum() > 0
    assert coder.inverse_transform(codes).dtype == torch.float64


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_fits_keep_float32_atoms(problem, half):
    # Half-precision data is computed in float32; rounding the fitted atoms
    # to its precision would change every later result, also on float64 data.
    X, D = problem
    coder = FISTACoder(D, positive=True).fit(torch.from_numpy(X).to(half))
    assert coder.components_.dtype == coder.intercept_.dtype == torch.float32
    torch.testing.assert_close(
        coder.components_, torch.from_numpy(D).float(), rtol=0, atol=0
    )
    assert coder.transform(torch.from_numpy(X).to(half)).dtype == half
    reference = FISTACoder(D, positive=True).fit(X.astype(np.float32))
    np.testing.assert_array_equal(coder.transform(X), reference.transform(X))


def test_reconstruction_and_score(problem):
    X, D = problem
    coder = FISTACoder(D, alpha=1e-4, positive=True).fit(X)
    codes = coder.fit_transform(X)
    np.testing.assert_allclose(coder.inverse_transform(codes), X, atol=5e-3)
    expected = -np.mean((X - codes @ D) ** 2)
    assert coder.score(X) == pytest.approx(expected, rel=1e-6)
    assert coder.get_feature_names_out().tolist() == [
        f"fistacoder{i}" for i in range(50)
    ]


@pytest.mark.parametrize("estimator", [FISTACoder, OracleDictionary])
def test_inverse_transform_adds_the_intercept(rng, estimator):
    # A provider with an offset (PCA's mean_) reconstructs codes @ atoms plus
    # that offset: without it, every reconstruction of uncentred data is off.
    X = rng.standard_normal((40, 5)) + 3.0
    coder = estimator(PCA(n_components=3)).fit(X)
    pca = PCA(n_components=3).fit(X)
    assert np.abs(pca.mean_).min() > 1.0
    np.testing.assert_allclose(coder.intercept_, pca.mean_)
    Z = rng.standard_normal((4, 3))
    np.testing.assert_allclose(
        coder.inverse_transform(Z), Z @ pca.components_ + pca.mean_
    )


@pytest.fixture
def rows_coded(monkeypatch):
    """Rows of each fista_encode call, with batches of 5 rows, steps of 3."""
    calls = []
    encode = _driver.fista_encode

    def spy(X_t, *args, **kwargs):
        calls.append(X_t.shape[0])
        return encode(X_t, *args, **kwargs)

    patch_everywhere(monkeypatch, _driver, "fista_encode", spy)
    patch_everywhere(monkeypatch, _driver, "_auto_batch_size", lambda *shape: 5)
    monkeypatch.setattr(_fista_coder, "_SCORE_STEP_BATCHES", 3)
    return calls


@pytest.mark.parametrize("warm_start", [None, "codes", "estimator", "inexact"])
def test_score_codes_a_batch_at_a_time(problem, rows_coded, warm_start):
    # The codes, often many times the size of X, are never held whole: each
    # batch is coded and reduced to its squared error, warm starts sliced to
    # it, and one ConvergenceWarning counts the samples of every batch (an
    # init estimator's own warnings come from each batch it codes).
    X, D = problem
    exact = FISTACoder(D, positive=True, tol=1e-10).fit(X)
    init = {
        None: None,
        "codes": exact.transform(X),
        "estimator": FrozenEstimator(exact),
        "inexact": FISTACoder(D, positive=True, max_iter=2),
    }[warm_start]
    coder = FISTACoder(D, positive=True, init=init, max_iter=3).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        expected = -np.mean((X - coder.inverse_transform(coder.transform(X))) ** 2)

    rows_coded.clear()  # only score's calls
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = coder.score(X)
    # A warm-starting FISTACoder codes each batch too, just before it.
    per_batch = 2 if warm_start in ("estimator", "inexact") else 1
    assert rows_coded == [rows for rows in (15, 15, 10) for _ in range(per_batch)]
    assert score == pytest.approx(expected, rel=1e-12)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    if warm_start in ("codes", "estimator"):
        # Started from the solution, every sample is certified at once.
        assert messages == []
    else:
        assert sum("40 of 40 samples" in message for message in messages) == 1
    if warm_start == "inexact":
        assert sum("of 15 samples" in message for message in messages) == 2


def test_score_steps_follow_a_given_batch_size_and_check_init_widths(
    problem, rows_coded
):
    # Steps of a few given batches: a small batch_size bounds score's memory
    # as it bounds transform's (steps of at least four automatic batches
    # took 4 GiB where transform took 0.8 GiB).
    X, D = problem
    FISTACoder(D, positive=True, batch_size=4).fit(X).score(X)
    assert rows_coded == [12, 12, 12, 4]
    # An init estimator giving codes of the wrong width is named, by fit,
    # and by transform and score should its codes change width after it.
    with pytest.raises(ValueError, match=r"gives codes of shape \(1, 2\)"):
        FISTACoder(D, init=PCA(n_components=2)).fit(X)
    coder = FISTACoder(D, init=FISTACoder(D)).fit(X)
    coder.init_.transform = lambda X: np.zeros((len(X), 2))
    for method in (coder.transform, coder.score):
        with pytest.raises(ValueError, match=r"init\.transform\(X\) must have shape"):
            method(X)


def test_score_of_a_single_row_codes_it_in_one_step(problem, rows_coded):
    # The steps' size is capped at the number of rows: one row is one step.
    X, D = problem
    coder = FISTACoder(D, positive=True).fit(X)
    row = X[:1]
    expected = -np.mean((row - coder.inverse_transform(coder.transform(row))) ** 2)
    rows_coded.clear()
    assert coder.score(row) == pytest.approx(expected, rel=1e-12)
    assert rows_coded == [1]


def test_score_with_a_batch_size_near_its_types_limit(problem):
    # Four times a NumPy int64 batch_size wrapped around: no rows were
    # scored (a score of 0) or range() refused a step of 0.
    X, D = problem
    expected = FISTACoder(D, positive=True).fit(X).score(X)
    for batch_size in (np.int64(2**61), np.int64(2**62), 2**70):
        coder = FISTACoder(D, positive=True, batch_size=batch_size).fit(X)
        assert coder.score(X) == pytest.approx(expected, rel=1e-12)


def test_score_with_an_init_estimator_takes_any_array_like(problem, monkeypatch):
    # An object that is only convertible to an array is coded as its array,
    # also in steps of a few rows.
    X, D = problem
    patch_everywhere(monkeypatch, _driver, "_auto_batch_size", lambda *shape: 5)

    class ArrayLike:
        def __array__(self, dtype=None, copy=None):
            return X

    coder = FISTACoder(D, positive=True, init=FISTACoder(D, positive=True))
    expected = clone(coder).fit(X).score(X)
    assert coder.fit(ArrayLike()).score(ArrayLike()) == pytest.approx(expected)


def test_estimator_providers(problem):
    X, _ = problem
    pca = PCA(n_components=5).fit(X)
    coder = FISTACoder(FrozenEstimator(pca), alpha=1e-6).fit(X)
    np.testing.assert_allclose(coder.components_, pca.components_)
    np.testing.assert_allclose(coder.intercept_, pca.mean_)
    # Coding X - intercept_ on the PCA basis recovers the PCA scores.
    np.testing.assert_allclose(coder.transform(X), pca.transform(X), atol=1e-4)

    unfitted = DictionaryLearning(n_components=6, max_iter=5, random_state=0)
    coder = FISTACoder(unfitted).fit(X)
    assert coder.dictionary_ is not unfitted
    assert coder.components_.shape == (6, X.shape[1])
    assert not hasattr(unfitted, "components_")


def test_objects_exposing_components_are_providers(problem):
    # DESIGN.md: a provider is anything exposing components_ (and optionally
    # intercept_), e.g. weights trained elsewhere; used as is, like a frozen
    # estimator, also by the oracle, the SAE's decoder and the metrics.
    X, D = problem
    offset = np.linspace(-1.0, 1.0, X.shape[1])
    weights = SimpleNamespace(components_=D, intercept_=offset)
    coder = FISTACoder(weights).fit(X + offset)
    assert coder.dictionary_ is weights
    np.testing.assert_array_equal(coder.intercept_, offset)
    reference = FISTACoder(D).fit(X)
    np.testing.assert_allclose(coder.transform(X + offset), reference.transform(X))
    np.testing.assert_allclose(clone(coder).fit(X + offset).components_, D)
    oracle = OracleDictionary(weights).fit(X + offset)
    np.testing.assert_array_equal(oracle.intercept_, offset)
    sae = SparseAutoencoder(decoder=weights, freeze_decoder=True, max_epochs=1)
    np.testing.assert_allclose(sae.fit(X + offset).components_, D, rtol=1e-6)
    assert dictionary_similarity(D, weights) == pytest.approx(1.0)
    with pytest.raises(InvalidParameterError, match="an object exposing 'components_'"):
        FISTACoder(SimpleNamespace(atoms=D)).fit(X)
    # As init: the starting dictionary of learning, never codes.
    started = FISTACoder(init=weights, dict_max_iter=0).fit(X + offset)
    np.testing.assert_allclose(
        started.components_, D / np.linalg.norm(D, axis=1, keepdims=True)
    )
    with pytest.raises(ValueError, match="only exposes components_"):
        FISTACoder(D, init=weights).fit(X)
    # Weights with a transform warm-start codes as wide as their atoms (50
    # here), not as their features (12).
    exact = FISTACoder(weights, positive=True, tol=1e-10).fit(X + offset)
    coding = SimpleNamespace(components_=D, transform=exact.transform)
    warm = FISTACoder(weights, positive=True, init=coding).fit(X + offset)
    np.testing.assert_allclose(
        warm.transform(X + offset), exact.transform(X + offset), atol=1e-6
    )


def test_init_estimator_and_array(problem):
    X, D = problem
    exact = FISTACoder(D, positive=True, tol=1e-10).fit(X)
    codes = exact.transform(X)
    warm = FISTACoder(D, positive=True, init=codes).fit(X)
    np.testing.assert_allclose(warm.transform(X), codes, atol=1e-6)
    warm = FISTACoder(D, positive=True, init=FrozenEstimator(exact)).fit(X)
    assert warm.init_ is warm.init
    np.testing.assert_allclose(warm.transform(X), codes, atol=1e-6)
    with pytest.raises(ValueError, match=r"init must have shape.*in a cross-valid"):
        FISTACoder(D, init=codes[:3]).fit(X).transform(X)
    # Codes of the wrong width, or no codes at all, are refused by fit: a
    # search or cross-validation failed only in score, with NaN scores.
    with pytest.raises(ValueError, match="init, the codes' warm start, has 3 col"):
        FISTACoder(D, init=codes[:, :3]).fit(X)
    with pytest.raises(TypeError, match="init must be an array; got a dict"):
        FISTACoder(D, init={"not": "codes"}).fit(X)


class _CodesOfRankThree(TransformerMixin, BaseEstimator):
    """An init estimator whose codes, of the right width, are not a matrix."""

    def __init__(self, n_atoms=1):
        self.n_atoms = n_atoms

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def transform(self, X):
        return np.zeros((len(X), 1, self.n_atoms))


def test_init_estimators_of_the_wrong_width_or_unfitted_fail_at_fit(problem):
    # Accepted by fit, they failed in every transform and score: NaN scores
    # in every fold of a search or a cross-validation.
    X, D = problem
    n_atoms = D.shape[0]
    for init in (PCA(3), SparseAutoencoder(5, max_epochs=1)):
        with pytest.raises(
            ValueError, match=r"gives codes of shape \(1, \d\) per row .* atoms"
        ):
            FISTACoder(D, init=init).fit(X)
        # Failed fits, which scikit-learn reports, not NaN scores.
        with pytest.raises(ValueError, match="All the 2 fits failed"):
            cross_val_score(FISTACoder(D, init=init), X, cv=2)
    # Codes of another rank are refused at fit as well.
    with pytest.raises(ValueError, match=rf"gives codes of shape \(1, 1, {n_atoms}\)"):
        FISTACoder(D, init=_CodesOfRankThree(n_atoms)).fit(X)
    message = "init, a FrozenEstimator of SparseAutoencoder, is not fit"
    with pytest.raises(NotFittedError, match=message):
        FISTACoder(D, init=FrozenEstimator(SparseAutoencoder(n_atoms))).fit(X)
    fitted = SparseAutoencoder(n_atoms, max_epochs=1, random_state=0).fit(X)
    for X_in in (X, torch.as_tensor(X), X.tolist()):
        coder = FISTACoder(D, init=FrozenEstimator(fitted)).fit(X_in)
        assert coder.transform(X_in).shape == (len(X), n_atoms)


def test_clone_pickle_pipeline(problem):
    X, D = problem
    coder = FISTACoder(D, positive=True)
    np.testing.assert_array_equal(clone(coder).get_params()["dictionary"], D)
    fitted = make_pipeline(StandardScaler(with_std=False), coder).fit(X)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.transform(X), fitted.transform(X))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_grid_search_over_alpha(problem, as_tensor):
    X, D = problem
    X = torch.from_numpy(X) if as_tensor else X
    search = GridSearchCV(FISTACoder(D, positive=True), {"alpha": [1e-3, 0.5]}, cv=3)
    search.fit(X)
    # Reconstruction favours the smaller penalty.
    assert search.best_params_ == {"alpha": 1e-3}


@pytest.mark.parametrize(
    "params, match",
    [
        ({"alpha": -1.0}, "alpha"),
        # No code can be certified at alpha=0: every sample ran to max_iter.
        (
            {"alpha": 0.0},
            "'alpha' parameter of FISTACoder must be a float in the range",
        ),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        # Zero codes always meet tol=1: their gap is at most their objective.
        ({"tol": 1.0}, "'tol' parameter of FISTACoder must be a float in the range"),
        ({"device": "banana"}, "'device' parameter of FISTACoder must be"),
    ],
)
def test_invalid_hyperparameters(problem, params, match):
    X, D = problem
    with pytest.raises(ValueError, match=match):
        FISTACoder(D, **params).fit(X)


def test_bad_dictionaries(problem):
    X, D = problem
    with pytest.raises(ValueError, match="12 features"):
        FISTACoder(D[:, :5]).fit(X)
    bad = D.copy()
    bad[[3, 7]] = 0.0
    with pytest.raises(ValueError, match=r"zero-norm atoms at rows \[3, 7\]"):
        FISTACoder(bad).fit(X)
    with pytest.raises(ValueError, match="zero atoms"):
        FISTACoder(np.zeros((0, 12))).fit(X)
    bad = D.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="dictionary contains NaN"):
        FISTACoder(bad).fit(X)
    # A width that contradicts the dictionary is reported, as for the SAE's
    # decoder; the dictionary's own width is accepted.
    with pytest.raises(
        ValueError,
        match=f"n_components=3 does not match the {len(D)} atoms of the dictionary",
    ):
        FISTACoder(D, n_components=3).fit(X)
    assert FISTACoder(D, n_components=len(D)).fit(X).components_.shape == D.shape


def test_bad_data(problem):
    X, D = problem
    coder = FISTACoder(D).fit(X)
    with pytest.raises(ValueError, match="12 features"):
        coder.transform(X[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        coder.transform(np.full_like(X, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        coder.transform(torch.full((2, 12), float("inf")))
    with pytest.raises(ValueError, match="0 sample"):
        coder.transform(X[:0])
    with pytest.raises(ValueError, match="50 components"):
        coder.inverse_transform(np.ones((2, 3)))
    with pytest.raises(NotFittedError):
        FISTACoder(D).transform(X)


def test_convergence_warning(problem):
    X, D = problem
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        FISTACoder(D, max_iter=1, tol=1e-12).fit(X).transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        FISTACoder(D).fit(X).transform(X)


def test_one_unconverged_sample_warns(problem):
    # A single sample left above tol is still reported: zero rows converge
    # at once, the last row cannot in one iteration at this tol.
    X, D = problem
    X = np.vstack([np.zeros((5, X.shape[1])), 10 * X[:1]])
    coder = FISTACoder(D, alpha=1e-3, max_iter=1, tol=1e-12)
    with pytest.warns(ConvergenceWarning, match="for 1 of 6 samples"):
        coder.fit_transform(X)
    with pytest.warns(ConvergenceWarning, match="for 1 of 6 samples"):
        coder.transform(X)


def test_n_iter_is_the_largest_count_over_samples(problem):
    # fit_transform reports the iterations of the slowest sample: zero rows
    # need none, so the fastest sample's count would always read 0 here.
    X, D = problem
    X = np.vstack([np.zeros((3, X.shape[1])), X[:5]])
    coder = FISTACoder(D, alpha=0.05)
    coder.fit_transform(X)
    per_sample = fista_encode(torch.from_numpy(X), torch.from_numpy(D), alpha=0.05)
    assert per_sample.n_iter.min() == 0
    assert coder.n_iter_ == int(per_sample.n_iter.max()) > 0


def test_fit_with_a_given_dictionary_codes_nothing(problem):
    # As SparseCoder and OracleDictionary: X is coded by transform, or once by
    # fit_transform, which reports the iterations.
    X, D = problem
    coder = FISTACoder(D, max_iter=1, tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert coder.fit(X).n_iter_ == 0
    with pytest.warns(ConvergenceWarning):
        codes = coder.fit_transform(X)
    assert coder.n_iter_ == 1
    with pytest.warns(ConvergenceWarning):
        np.testing.assert_array_equal(coder.transform(X), codes)


def test_convergence_warning_names_the_callers_line(problem):
    # Through scikit-learn's fit and set_output wrappers, the oracle's inner
    # coder and a Pipeline, the warning points at the line that called skdict.
    X, D = problem
    coder = FISTACoder(D, max_iter=1, tol=1e-12)
    oracle = OracleDictionary(D, max_iter=1, tol=1e-12)
    calls = [
        lambda: coder.fit(X).transform(X),
        lambda: coder.fit_transform(X),
        lambda: oracle.fit(X).transform(X),
        lambda: make_pipeline(StandardScaler(), clone(coder)).fit_transform(X),
    ]
    for call in calls:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        found = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        assert found
        assert {w.filename for w in found} == {__file__}
    # Through joblib under model selection, and from code with no file.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_validate(coder, X, cv=2)
        exec(compile("coder.transform(X)", "<cell-1>", "exec"))
    filenames = [w.filename for w in caught if w.category is ConvergenceWarning]
    assert set(filenames) == {__file__, "<cell-1>"}


@cuda
def test_cuda_tensors_and_numpy_on_cuda(problem):
    X, D = problem
    Xc = torch.from_numpy(X).cuda()
    coder = FISTACoder(D, positive=True).fit(Xc)
    codes = coder.transform(Xc)
    assert codes.device.type == "cuda"
    cpu = FISTACoder(D, positive=True, device="cpu").fit(X).transform(X)
    np.testing.assert_allclose(codes.cpu().numpy(), cpu, atol=1e-6)
    on_gpu = FISTACoder(D, positive=True, device="cuda").fit(X)
    assert isinstance(on_gpu.transform(X), np.ndarray)
    restored = pickle.loads(pickle.dumps(coder))
    assert restored.components_.device.type == "cpu"
    # A deep copy stays where the model is, as torch modules' do.
    assert copy.deepcopy(coder).components_.device.type == "cuda"


def test_polish_support_reduced_to_nothing_gives_zero():
    # Row 0: one atom whose Newton solution flips sign, so the partial step
    # moves it to zero and the next pass finds an empty support; row 1 keeps
    # its signs. G = I, so phi(u) = |u|^2 / 2 - (b - alpha sign(u)).u.
    gram = torch.eye(3, dtype=torch.float64)

    def scaled_gram(rows, idx):
        return gram[idx.unsqueeze(2), idx.unsqueeze(1)]

    z = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.4, 0.3]], dtype=torch.float64)
    b = torch.tensor([[0.05, 0.0, 0.0], [0.0, 1.1, 0.6]], dtype=torch.float64)
    polished, usable = _polish(z, b, 0.1, scaled_gram, partial=True)
    assert usable.all()
    torch.testing.assert_close(polished[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(
        polished[1], torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    )


def test_progress_bar_moves_through_one_automatic_batch(capsys):
    # 8,192 samples fit one automatic batch; with verbose they are coded in
    # two, the bar shows both, and the codes are the same.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 8, 5))
    X = torch.from_numpy(sparse_codes(rng, 8192, 8, 2)) @ D
    quiet = fista_encode(X, D, alpha=0.05)
    assert "FISTA" not in capsys.readouterr().err
    shown = fista_encode(X, D, alpha=0.05, verbose=1)
    assert "8192/8192" in capsys.readouterr().err
    torch.testing.assert_close(shown.codes, quiet.codes, rtol=0, atol=1e-12)
    # A call of one batch shows a bar too (below 8,192 rows none showed).
    shown = fista_encode(X[:600], D, alpha=0.05, verbose=1)
    assert "600/600" in capsys.readouterr().err
    torch.testing.assert_close(shown.codes, quiet.codes[:600], rtol=0, atol=1e-12)
    # Rows of scales far apart, coded group by group, show one bar over all.
    X[:300:2] *= 2.0**100
    fista_encode(X[:300], D, alpha=0.05, verbose=1)
    err = capsys.readouterr().err
    assert "300/300" in err and "150/150" not in err


def test_float32_rows_in_float64_from_the_start_share_the_bar(rng, capsys):
    # Rows routed to float64 by their rounding bound and the others showed a
    # bar each (31/31, then 29/29 for 60 rows).
    D = torch.from_numpy(random_dictionary(rng, 20, 10)).float()
    X = torch.from_numpy(rng.standard_normal((60, 10))).float()
    X[::2] *= 4.0  # rows above the bound at this alpha, and rows below it
    tol = _driver._effective_tol(1e-6, torch.float32)
    routed = _driver._float32_floor_rows(X, D, None, alpha=0.03, tol=tol, step=60)
    assert 0 < int(routed.sum()) < 60
    quiet = fista_encode(X, D, alpha=0.03, positive=True)
    shown = fista_encode(X, D, alpha=0.03, positive=True, verbose=1)
    # One bar, counted by its start: tqdm's closing refresh may print 60/60 a
    # second time.
    err = capsys.readouterr().err
    assert err.count("| 0/60 ") == 1 and set(re.findall(r"\d+/(\d+) ", err)) == {"60"}
    torch.testing.assert_close(shown.codes, quiet.codes, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_score_past_float64_squares():
    # Residuals above 1e154 squared to inf: the score was -inf where
    # reconstruction_error gives the finite mean.
    D = np.eye(3)
    X = np.zeros((100, 3))
    X[0, 0] = 1e155  # coded 5e154 at this alpha: a residual of 5e154
    for coder in (FISTACoder(D, alpha=5e154), OracleDictionary(D, alpha=5e154)):
        coder.fit(X)
        expected = -reconstruction_error(X, coder.inverse_transform(coder.transform(X)))
        assert np.isfinite(expected)
        assert coder.score(X) == pytest.approx(expected, rel=1e-12)


def test_score_shows_a_bar_in_one_step_too(capsys):
    # score steps over a few batches at a time, with a bar over steps: a
    # single step (fewer rows than four batches) showed no bar at all.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 8, 5)
    X = sparse_codes(rng, 40, 8, 2) @ D
    coder = FISTACoder(D, batch_size=10, verbose=1).fit(X)
    capsys.readouterr()
    coder.score(X)  # one step of 40 rows, four batches of 10
    assert "40/40" in capsys.readouterr().err
    coder.set_params(verbose=0).score(X)
    assert capsys.readouterr().err == ""


def test_no_progress_bar_at_verbose_zero(capsys):
    # verbose=0 (the default) is silent even over several batches: a bar per
    # call would flood the logs of a grid search.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 8, 5))
    X = torch.from_numpy(rng.standard_normal((40, 5)))
    fista_encode(X, D, alpha=0.1, batch_size=10, verbose=0)
    assert capsys.readouterr().err == ""
    fista_encode(X, D, alpha=0.1, batch_size=10, verbose=1)
    assert "40/40" in capsys.readouterr().err


def test_partial_fit_shows_its_coding_bar_from_verbose_2(capsys):
    # A chunk of a stream can take minutes to code; a bar per chunk at
    # verbose=1 would flood a stream's log, as SparseAutoencoder's would.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 8, 5)
    X = sparse_codes(rng, 40, 8, 2) @ D
    for verbose, shown in [(0, False), (1, False), (2, True)]:
        coder = FISTACoder(n_components=8, batch_size=10, verbose=verbose)
        coder.partial_fit(X)
        coder.partial_fit(X)
        err = capsys.readouterr().err
        assert ("40/40" in err) == shown, verbose
        if shown:
            # One bar per call, counted by their starts (a closing refresh
            # may print 40/40 twice).
            assert err.count("| 0/40 ") == 2


@pytest.mark.parametrize("threads", [1, 2])
def test_progress_bar_closes_when_coding_fails(threads, monkeypatch):
    # An interrupted or failing transform must not leave its bar open: a
    # notebook keeps the traceback, and with it the bar, which later bars
    # then draw under.
    from tqdm.auto import tqdm

    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 8, 5))
    X = torch.from_numpy(sparse_codes(rng, 2048, 8, 2)) @ D
    patch_everywhere(monkeypatch, _threads, "_MIN_SHARE_ROWS", 64)
    calls = []
    encode_batch = _working_set._encode_batch

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode_batch(*args, **kwargs)

    monkeypatch.setattr(_driver, "_encode_batch", fails_second)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with pytest.raises(KeyboardInterrupt) as kept:  # holds the traceback
            fista_encode(X, D, alpha=0.05, batch_size=256, verbose=1)
    finally:
        torch.set_num_threads(saved)
    assert kept.traceback
    assert not [bar for bar in list(tqdm._instances) if bar.desc == "FISTA"]


def test_supports_beyond_the_features_are_reduced():
    # One feature, three near-duplicate atoms: the optimum uses the longest
    # atom alone, reached through the support reductions of the Newton step.
    D = torch.tensor([[1.0], [1.001], [0.999]], dtype=torch.float64)
    X = torch.tensor([[2.0]], dtype=torch.float64)
    result = fista_encode(X, D, alpha=0.01)
    assert bool(result.converged.all()) and int(result.n_iter.max()) < 100
    optimum = (2 * 1.001 - 0.01) / 1.001**2  # the longest atom alone
    expected = torch.tensor([[0.0, optimum, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(result.codes, expected)


def test_a_tolerance_below_measurability_still_returns_near_optimal_codes(rng):
    # Working-set gaps lose about eps * ||x||^2 to cancellation; asked for
    # less, rows stopped in their first working set far from the optimum.
    D = random_dictionary(rng, 200, 20)
    Z = np.abs(rng.standard_normal((100, 200))) * (rng.random((100, 200)) < 0.015)
    X = torch.from_numpy(Z @ D + 0.01 * rng.standard_normal((100, 20)))
    D = torch.from_numpy(D)
    alpha = 0.002 * float((X @ D.T).abs().max())
    loose = fista_encode(X, D, alpha=alpha, positive=True, tol=1e-12).codes
    for tol in (1e-13, 0.0):
        codes = fista_encode(X, D, alpha=alpha, positive=True, tol=tol).codes
        excess = lasso_objective(X, codes, D, alpha) - lasso_objective(
            X, loose, D, alpha
        )
        assert float(excess.max()) < 1e-10


def test_tol_zero_is_floored_at_a_reachable_gap():
    # tol=0 asks for an exact certificate, which rounding never gives: the
    # tolerance is floored at a few float64 epsilons, so every sample still
    # converges (a floor too close to eps left most of them at max_iter).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 20, 10))
    X = torch.from_numpy(rng.standard_normal((50, 10)))
    result = fista_encode(X, D, alpha=0.1, tol=0.0, max_iter=1000)
    assert bool(result.converged.all())
    assert int(result.n_iter.max()) < 1000


def test_dictionaries_at_extreme_scales():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((5, 4))
    X = rng.uniform(size=(6, 5)) @ D
    # Norms near 1e77: the Lipschitz constant is found without overflow.
    big = FISTACoder(D * 1e77, alpha=1e76).fit(X).transform(X)
    unit = FISTACoder(D, alpha=0.1).fit(X).transform(X)
    np.testing.assert_allclose(big * 1e77, unit, rtol=1e-6, atol=1e-9)
    # Norms whose square float32 cannot hold are refused, not coded to NaN.
    with pytest.raises(ValueError, match="rescale the dictionary"):
        FISTACoder((D * 1e-20).astype(np.float32)).fit(X.astype(np.float32))


@pytest.mark.parametrize("scale", [1e40, 1e-60, 1e155, 1e-160, 1e300, 1e-300])
@pytest.mark.parametrize("warm", [False, True])
def test_data_whose_squares_leave_float64_are_certified(scale, warm):
    # Certificates square the rows' norms: at 1e155 they overflowed and every
    # sample ran to max_iter, reported unconverged with optimal codes. At 1e40
    # and 1e-60 the float32 correlations with every atom overflowed or
    # underflowed: codes off by 0.19-0.92 of their largest (working sets).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 100, 30))
    X = torch.from_numpy(sparse_codes(rng, 5, 100, 10)) @ D
    unit = fista_encode(X, D, alpha=0.1)
    init = unit.codes * scale if warm else None
    scaled = fista_encode(X * scale, D, alpha=0.1 * scale, init=init)
    assert bool(scaled.converged.all())
    torch.testing.assert_close(scaled.codes / scale, unit.codes, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_of_very_different_scales_are_coded_each_at_its_own(dtype):
    # One power of two for the whole call, from its largest entry, shrank
    # rows of order 1 beside a row of 1e121 to 1e-121: their codes came back
    # wrong by half their size.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 20, 8)).to(dtype)
    X = torch.from_numpy(rng.standard_normal((6, 8))).to(dtype)
    alone = fista_encode(X, D, alpha=0.1, positive=True)
    big = 1e121 if dtype == torch.float64 else 1e35
    for outlier in (big, 1 / big):
        mixed = fista_encode(
            torch.cat([X, X[:1] * outlier]), D, alpha=0.1, positive=True
        )
        torch.testing.assert_close(mixed.codes[:6], alone.codes)
        assert bool(mixed.converged[:6].all())
    # Rows within one window of scales are still coded in one call, rows of
    # zeros join any window, and a group rescaled finds one window again.
    assert _driver._scale_groups(X * 1e20, None) is None
    assert _driver._scale_groups(torch.cat([X, X * 2.0**80]), None) is None
    tiny = torch.cat([X * 1e-20, torch.zeros(1, 8, dtype=dtype)])
    assert _driver._scale_groups(tiny, None) is None
    spread = torch.cat([X[:1] * 2.0**60, X[1:2] * 2.0**-70])
    assert _driver._scale_groups(spread, None) is not None
    assert _driver._scale_groups(spread * 2.0**-60, None) is not None
    groups = _driver._scale_groups(torch.cat([spread, tiny[-1:]]), None)
    assert [g.tolist() for g in groups] == [[0, 2], [1]]


def test_subnormal_and_float32_extreme_data_are_coded():
    # A largest entry of 5e-324 asked for a power of two beyond float64's
    # range (OverflowError); float32 entries near 1.8e38 gave NaN codes where
    # the float64 answer fits float32.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 6, 4))
    X = torch.from_numpy(rng.standard_normal((5, 4)))
    for scale in (5e-324 / float(X.abs().max()), 2.0**-1060):
        # Subnormal data keep few digits: coded without an error, finite.
        tiny = fista_encode(X * scale, D, alpha=0.1 * scale, positive=True)
        assert torch.isfinite(tiny.codes).all()
    # Powers of two scale float32 data exactly: the codes are those of the
    # unit-scale float32 data, times the scale.
    X32, D32 = X.float(), D.float()
    unit32 = fista_encode(X32, D32, alpha=0.1, positive=True).codes
    huge = 2.0**125  # entries up to 1e38
    got = fista_encode(X32 * huge, D32, alpha=0.1 * huge, positive=True)
    assert torch.isfinite(got.codes).all() and bool(got.converged.all())
    torch.testing.assert_close(got.codes / huge, unit32, rtol=0, atol=0)


def test_codes_beyond_the_dtype_range_warn():
    # Coherent atoms give codes larger than the data: at entries of 1e38 the
    # float32 codes left float32's range and came back inf with nothing but
    # a ConvergenceWarning (and score was NaN). The float64 codes of the
    # same rows fit float64.
    D = torch.tensor(
        [[1.0, 0.0, 0.0], [0.999, 0.0447, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    D = D / torch.linalg.vector_norm(D, dim=1, keepdim=True)
    X = torch.tensor([[0.0, 1.0, 0.1], [1.0, 0.0, 0.0]], dtype=torch.float64) * 1e38
    with pytest.warns(RuntimeWarning, match=r"codes of 1 rows \(rows \[0\]\).*float64"):
        got = fista_encode(X.float(), D.float(), alpha=1e30, max_iter=5000)
    # Row 0 overflows in some of its codes only; row 1 not at all.
    assert not torch.isfinite(got.codes[0]).all() and torch.isfinite(got.codes[0, 2])
    assert torch.isfinite(got.codes[1]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        wide = fista_encode(X, D, alpha=1e30, max_iter=5000)
    assert torch.isfinite(wide.codes).all() and wide.codes.abs().max() > 3.5e38
    # Beside rows of ordinary size the rows are coded in groups of one scale:
    # the warning named the row's index within its group (row 0), once per
    # group.
    mixed = torch.cat([torch.eye(3, dtype=torch.float64)[:2], X[:1]]).float()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fista_encode(mixed, D.float(), alpha=1e-3, max_iter=5000)
    overflow = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(overflow) == 1
    assert "codes of 1 rows (rows [2])" in str(overflow[0].message)


def test_rescaling_keeps_data_offset_and_warm_starts_finite():
    # float32 data of 1e-40 asked for 2**132 (inf in float32: NaN codes); an
    # offset far larger than the centred rows overflowed once scaled (inf -
    # inf); a warm start of 1e3 for data of 1e-37 overflowed (NaN codes).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 6, 4)).float()
    X = torch.from_numpy(sparse_codes(rng, 20, 6, 2)).float() @ D
    reference = fista_encode(X, D, alpha=0.1, positive=True).codes
    tiny = fista_encode(X * 1e-40, D, alpha=0.1 * 1e-40, positive=True)
    assert bool(tiny.converged.all())
    torch.testing.assert_close(tiny.codes / 1e-40, reference, rtol=1e-3, atol=1e-3)
    b = torch.tensor([1e30, 0.0, 0.0, 0.0])
    Xb = torch.cat([X[:, :1] * 0 + 1e30, X[:, 1:] * 1e-20], dim=1)
    centred = fista_encode(Xb - b, D, alpha=1e-21, positive=True)
    offset = fista_encode(Xb, D, alpha=1e-21, positive=True, offset=b)
    assert torch.isfinite(offset.codes).all()
    torch.testing.assert_close(offset.codes, centred.codes, rtol=0, atol=0)
    init = torch.full((20, 6), 1e3)
    warm = fista_encode(X * 1e-37, D, alpha=1e-38, positive=True, init=init)
    assert torch.isfinite(warm.codes).all() and bool(warm.converged.all())


@pytest.mark.parametrize("copy", ["same", "negated"])
@pytest.mark.parametrize("positive", [False, True])
def test_duplicate_atoms_converge(copy, positive):
    # Half the atoms repeat (or negate) the other half: every split of a
    # coefficient between an atom and its copy is optimal, a flat direction
    # the support reductions must take although rounding makes it look
    # uphill.
    rng = np.random.default_rng(5)
    D = rng.standard_normal((200, 20))
    D[100:] = D[:100] if copy == "same" else -D[:100]
    Z = np.abs(rng.standard_normal((10, 200))) * (rng.random((10, 200)) < 0.025)
    X = torch.from_numpy(Z @ D + 0.05 * rng.standard_normal((10, 20)))
    D = torch.from_numpy(D)
    alpha = 0.01 * float((X @ D.T).abs().max())
    result = fista_encode(X, D, alpha=alpha, positive=positive)
    assert bool(result.converged.all())
    assert int(result.n_iter.max()) < 500


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coding_leaves_the_callers_data_alone(rng, dtype):
    # With a zero intercept the solver gets the caller's tensor itself.
    D = torch.from_numpy(random_dictionary(rng, 40, 8)).to(dtype)
    X = torch.from_numpy(rng.standard_normal((300, 8))).to(dtype)
    before = X.clone()
    coder = FISTACoder(D, alpha=0.05).fit(X)
    coder.transform(X)
    coder.fit_transform(X)
    coder.score(X)
    assert torch.equal(X, before)


def test_rows_of_very_different_scales_keep_their_warm_starts_and_offset():
    # The rows grouped by scale are coded with their own rows of init and
    # with the offset: each group as if coded alone.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 20, 8))
    X = torch.from_numpy(rng.standard_normal((6, 8)))
    big = X[:2] * 1e121
    b = torch.from_numpy(rng.standard_normal(8))
    kwargs = dict(alpha=0.1, positive=True)
    small_init = fista_encode(X, D, **kwargs).codes
    big_init = fista_encode(big, D, alpha=0.1 * 1e121, positive=True).codes
    init = torch.cat([small_init, big_init])
    mixed = fista_encode(torch.cat([X, big]), D, init=init, **kwargs)
    # Row by row as coded alone: the same warm start gives the same path.
    small = fista_encode(X, D, init=small_init, **kwargs)
    assert torch.equal(mixed.n_iter[:6], small.n_iter)
    torch.testing.assert_close(mixed.codes[:6], small.codes, rtol=0, atol=0)
    # An offset reaches every group.
    centred = fista_encode(torch.cat([X, big]), D, **kwargs)
    offset = fista_encode(torch.cat([X, big]) + b, D, offset=b, **kwargs)
    torch.testing.assert_close(offset.codes[:6], centred.codes[:6])
    assert bool(offset.converged[:6].all())


def test_scale_groups_read_the_centred_rows_and_both_signs():
    # Rows are grouped by the largest |entry| of X - offset: a row whose
    # largest entry is negative, or rows whose scales differ only once the
    # offset is subtracted, are coded apart from the others (positive codes:
    # those of the small rows came back wrong when scaled with the outlier).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 20, 8))
    X = torch.from_numpy(rng.standard_normal((6, 8)))
    alone = fista_encode(X, D, alpha=0.1, positive=True)
    outlier = X[:1].clone()
    outlier[0, 0] = -1e121  # the largest entry is negative, the rest of order 1
    mixed = fista_encode(torch.cat([X, outlier]), D, alpha=0.1, positive=True)
    torch.testing.assert_close(mixed.codes[:6], alone.codes)
    # An offset of 1e130 in the first feature, which every row holds:
    # uncentred, all rows have the same largest entry.
    b = torch.zeros(8, dtype=torch.float64)
    b[0] = 1e130
    Xc = X.clone()
    Xc[:, 0] = 0.0
    outlier = Xc[:1] * 1e121
    centred = torch.cat([Xc, outlier])
    expected = fista_encode(Xc, D, alpha=0.1, positive=True).codes
    got = fista_encode(centred + b, D, alpha=0.1, positive=True, offset=b)
    torch.testing.assert_close(got.codes[:6], expected)


@pytest.mark.parametrize("scale", [1e40, 1e-60])
def test_negative_data_far_from_one_are_rescaled(scale):
    # The certifiable scale reads the most negative entry too: data whose
    # entries are all negative were coded unscaled.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 30, 10))
    X = -(torch.from_numpy(sparse_codes(rng, 5, 30, 4)) @ D).abs()
    unit = fista_encode(X, D, alpha=0.1)
    scaled = fista_encode(X * scale, D, alpha=0.1 * scale)
    assert bool(scaled.converged.all())
    torch.testing.assert_close(scaled.codes / scale, unit.codes, rtol=1e-9, atol=1e-12)


def test_warm_start_rows_with_one_overflowing_entry_start_from_zero():
    # A warm-start row with a single entry that overflows once scaled (the
    # others finite) starts from zero as a whole, not with an infinite entry.
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 6, 4)).float()
    X = torch.from_numpy(sparse_codes(rng, 20, 6, 2)).float() @ D
    init = torch.zeros(20, 6)
    init[:, 0] = 1e3
    warm = fista_encode(X * 1e-37, D, alpha=1e-38, positive=True, init=init)
    assert torch.isfinite(warm.codes).all() and bool(warm.converged.all())


def test_no_rows_give_no_codes():
    D = torch.eye(4, dtype=torch.float64)
    result = fista_encode(torch.zeros(0, 4, dtype=torch.float64), D, alpha=0.1)
    assert result.codes.shape == (0, 4)
    assert result.n_iter.shape == result.converged.shape == (0,)


def test_fista_refuses_apples_mps_backend_by_name():
    # The solver certifies codes in float64, which MPS lacks: torch failed
    # inside the first conversion. Checked on the device type alone here.
    with pytest.raises(ValueError, match="float64, which Apple's MPS backend"):
        _driver.refuse_mps(torch.device("mps"))
    _driver.refuse_mps(torch.device("cpu"))


@mps
@pytest.mark.parametrize("learn", [False, True])
def test_fista_on_mps_tensors_raises_by_name(learn):
    X = torch.rand(20, 4, device="mps")
    coder = FISTACoder(n_components=3) if learn else FISTACoder(torch.eye(4))
    with pytest.raises(ValueError, match="Apple's MPS backend"):
        coder.fit_transform(X)
    codes = coder.set_params(device="cpu").fit_transform(X)
    assert codes.device.type == "mps"


def test_certificates_of_large_dictionaries_gather_atoms_in_blocks(monkeypatch):
    # Dictionaries too large for a float64 copy rebuild each code's
    # reconstruction from its gathered atoms: for a whole batch at once that
    # took 4 GB for 4,096 rows of 4,096 features. In blocks of rows, the
    # codes are the same bit for bit.
    rng = np.random.default_rng(0)
    D = rng.standard_normal((40, 16)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = (rng.uniform(size=(300, 40)) < 0.1) * rng.uniform(size=(300, 40))
    X = (Z @ D).astype(np.float32)
    coder = FISTACoder(D, alpha=0.05, positive=True).fit(X)
    monkeypatch.setattr(_driver, "_FLOAT64_COPY_ELEMENTS", 0)  # no float64 copy
    gathered_at_once = coder.transform(X)
    # A few rows a block.
    patch_everywhere(monkeypatch, _newton, "_SYSTEM_ELEMENTS", 16 * 8 * 3)
    in_blocks = coder.transform(X)
    np.testing.assert_array_equal(in_blocks, gathered_at_once)
    reference = sparse_encode(
        X.astype(np.float64),
        D.astype(np.float64),
        algorithm="lasso_cd",
        alpha=0.05,
        positive=True,
    )
    assert np.abs(in_blocks - reference).max() < 1e-3


def test_init_width_check_runs_no_user_code_under_a_lock_and_takes_lists():
    # The check coded a row inside skdict's warning-filter lock: an init
    # whose transform codes in threads that take the lock (a FeatureUnion of
    # oracles under joblib's threading backend) hung for good, and an init
    # returning a list failed on .shape.
    import joblib
    from sklearn.pipeline import FeatureUnion
    from sklearn.preprocessing import FunctionTransformer

    rng = np.random.default_rng(0)
    X, D = rng.standard_normal((40, 5)), rng.standard_normal((4, 5))
    parts = [("a", OracleDictionary(D[:2])), ("b", OracleDictionary(D[2:]))]
    union = FeatureUnion(parts, n_jobs=2).fit(X)
    finished = []

    def fit():
        with joblib.parallel_backend("threading"):
            FISTACoder(D, init=FrozenEstimator(union), alpha=0.01).fit(X)
        finished.append(True)

    worker = threading.Thread(target=fit, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert finished, "fit hung"
    as_list = FunctionTransformer(lambda Z: np.maximum(np.asarray(Z) @ D.T, 0).tolist())
    assert FISTACoder(D, init=as_list).fit(X).transform(X).shape == (40, 4)
    with pytest.raises(ValueError, match=r"gives codes of shape \(1,\) per row"):
        FISTACoder(D, init=FunctionTransformer(lambda Z: np.ones(len(Z)))).fit(X)


def test_init_width_check_codes_a_row_for_other_estimators():
    # LinearDiscriminantAnalysis declares n_classes - 1 columns and gives
    # fewer on rank-deficient data: a declared width let it pass fit, and
    # every fold of a search scored NaN.
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2)) @ rng.standard_normal((2, 6))
    y = np.arange(60) % 5
    D = rng.standard_normal((4, 6))
    with pytest.raises(ValueError, match=r"gives codes of shape \(1, 2\)"):
        FISTACoder(D, init=LinearDiscriminantAnalysis()).fit(X, y)


@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize(
    "seed, n_features, angle, n_active, tol",
    [(100, 8, 1e-8, 7, 1e-8), (0, 8, 1e-8, 7, 1e-8), (0, 16, 1e-10, 15, 1e-6)],
)
def test_near_duplicate_atoms_reach_the_optimum(
    seed, n_features, angle, n_active, tol, positive
):
    # 100 atoms, each with a twin at an angle of 1e-8 or 1e-10. Working-set
    # solves holding both twins stalled on their singular faces (the null
    # moves went uphill half the time, above), up to 175x above the optimum
    # whatever max_iter; and at tol=1e-8 the float32 scores that choose the
    # working sets could not find the twin violating the optimality
    # conditions by 2e-8 (seed 0), until max_iter. Every row is now
    # certified, at the optimum.
    X, D, alpha = twinned_problem(seed, n_features, angle, n_active, positive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = sparse_encode(
            X, D, algorithm="lasso_cd", alpha=alpha, max_iter=100_000, positive=positive
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        coder = FISTACoder(D, alpha=alpha, tol=tol, positive=positive).fit(X)
        codes = coder.transform(X)
    ours = lasso_objective(X, codes, D, alpha)
    best = lasso_objective(X, reference, D, alpha)
    assert np.all(ours <= best * (1 + 1e-6))


def test_positive_codes_from_a_signed_warm_start_are_non_negative(rng):
    # A signed warm start is infeasible for positive codes: it is clipped
    # before it counts as the code never to be made worse (its objective can
    # be below every feasible code's).
    D = random_dictionary(rng, 8, 5)
    X = rng.standard_normal((20, 5))
    signed = FISTACoder(D, alpha=0.05).fit_transform(X)
    assert signed.min() < 0
    codes = FISTACoder(D, alpha=0.05, positive=True, init=signed).fit(X).transform(X)
    assert codes.min() >= 0
    reference = FISTACoder(D, alpha=0.05, positive=True).fit_transform(X)
    np.testing.assert_allclose(
        lasso_objective(X, codes, D, 0.05),
        lasso_objective(X, reference, D, 0.05),
        rtol=1e-5,
    )


def test_score_is_minus_the_reconstruction_error_around_the_intercept(rng):
    # Atoms from a provider with an intercept: score reconstructs around it,
    # as inverse_transform does.
    class Atoms:
        def __init__(self, components, intercept):
            self.components_, self.intercept_ = components, intercept

    D = random_dictionary(rng, 6, 4)
    X = rng.standard_normal((10, 4)) + 5.0
    coder = FISTACoder(Atoms(D, np.full(4, 5.0)), alpha=0.1).fit(X)
    expected = -np.mean((X - coder.inverse_transform(coder.transform(X))) ** 2)
    assert coder.score(X) == pytest.approx(expected, rel=1e-10)
    assert expected > -1.0  # the intercept is 5: without it, about -25


def test_float32_rows_finished_in_float64_are_certified_with_their_rounding(rng):
    # float32 rows not certified in float32 are finished in float64 and
    # rounded back; the certificate must cover the rounding. At alpha=1e-11
    # the rounding alone leaves rows farther than tol from the optimum: none
    # may be reported converged. At 1e-10 every row is within tol.
    D = random_dictionary(rng, 30, 10).astype(np.float32)
    Z = rng.uniform(size=(50, 30)) * (rng.uniform(size=(50, 30)) < 0.2)
    X = (Z @ D.astype(np.float64)).astype(np.float32)
    Xd, Dd = X.astype(np.float64), D.astype(np.float64)
    tol = 100 * np.finfo(np.float32).eps  # the float32 floor of tol=1e-6
    certified = []
    for alpha in (1e-11, 1e-10):
        result = fista_encode(torch.from_numpy(X), torch.from_numpy(D), alpha=alpha)
        reference = fista_encode(
            torch.from_numpy(Xd), torch.from_numpy(Dd), alpha=alpha, tol=1e-9
        )
        # A lower bound on each row's optimum from the float64 dual point.
        primal64, gap64 = duality_gap(Xd, reference.codes.numpy(), Dd, alpha, False)
        primal, _ = duality_gap(Xd, result.codes.double().numpy(), Dd, alpha, False)
        suboptimality = (primal - (primal64 - gap64)) / primal
        converged = result.converged.numpy()
        assert np.all(suboptimality[converged] <= tol)
        certified.append(int(converged.sum()))
    assert certified[1] == 50


@pytest.mark.parametrize("whole", [False, True])
def test_polish_writes_and_marks_only_the_rows_it_solved(whole):
    # The rows _polish writes and marks usable, one index per mask: those
    # whose Newton step was exact or moved, on either path; a row whose step
    # fails with nothing to move keeps its codes and is not usable.
    from skdict._fista._newton import _polish

    gram = torch.eye(3, dtype=torch.float64)

    def scaled_gram(rows, idx):
        if idx is None:
            return gram.expand(rows.numel(), 3, 3)
        return gram[idx.unsqueeze(2), idx.unsqueeze(1)]

    # Row 0: its Newton solution flips the sign of its one atom; row 1 keeps
    # its signs (G = I: the solution is b - alpha sign(z) on the support).
    z = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.4, 0.3]], dtype=torch.float64)
    b = torch.tensor([[0.05, 0.0, 0.0], [0.0, 1.1, 0.6]], dtype=torch.float64)
    expected = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    polished, usable = _polish(z, b, 0.1, scaled_gram, partial=True, whole=whole)
    assert usable.all()
    torch.testing.assert_close(polished[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(polished[1], expected)
    # Without partial steps row 0 fails: left as it was, and not usable.
    polished, usable = _polish(z, b, 0.1, scaled_gram, whole=whole)
    assert usable.tolist() == [False, True]
    torch.testing.assert_close(polished[0], z[0])
    torch.testing.assert_close(polished[1], expected)


def test_n_iter_counts_the_active_set_steps(monkeypatch):
    # A sample's n_iter counts its active-set steps with its FISTA
    # iterations (n_iter <= max_iter alone passed without them).
    steps, original = [], _newton._active_set

    def counted(*args, **kwargs):
        codes, ran, taken = original(*args, **kwargs)
        steps.append(taken.tolist())
        return codes, ran, taken

    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 200, 40))
    X = torch.from_numpy(rng.standard_normal((4, 40)))
    warm = fista_encode(X, D, alpha=0.1).codes
    monkeypatch.setattr(_working_set, "_active_set", counted)
    result = fista_encode(X, D, alpha=0.01, init=warm)
    # The first call takes every sample (here 30, 16, 19 and 4 steps; the
    # last sample then finishes after one FISTA iteration). Each sample's
    # n_iter is at least its own steps, so the smallest n_iter is at least
    # the smallest count of steps (without them it was 1).
    first = steps[0]
    assert len(first) == 4 and min(first) > 1
    assert int(result.n_iter.min()) >= min(first)
