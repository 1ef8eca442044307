import copy
import io
import os
import pickle
import sys

import joblib
import numpy as np
import pytest
import torch


def pytest_configure(config):
    # pytest-xdist workers share the cores: with torch's default of one
    # thread per core each, OpenMP threads outnumber the cores, and solves
    # made of many small batched products slow down tenfold (a 7 s test took
    # 72 s beside the other worker). torch's own default respects the CPU
    # affinity and OMP_NUM_THREADS, which os.cpu_count() does not.
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, torch.get_num_threads() // int(workers)))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
mps = pytest.mark.skipif(
    not torch.backends.mps.is_available(), reason="needs Apple's MPS backend"
)


def _array_api_dispatch_available() -> bool:
    # scikit-learn refuses to switch dispatch on with SciPy older than 1.14,
    # which skdict's own minimum (1.10) allows, or without SciPy's array-API
    # mode (SCIPY_ARRAY_API=1).
    from sklearn import config_context

    try:
        with config_context(array_api_dispatch=True):
            return True
    except (ImportError, RuntimeError):  # RuntimeError: SCIPY_ARRAY_API unset
        return False


HAS_ARRAY_API_DISPATCH = _array_api_dispatch_available()
array_api_dispatch = pytest.mark.skipif(
    not HAS_ARRAY_API_DISPATCH,
    reason="scikit-learn's array-API dispatch needs SciPy 1.14 or newer",
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def two_threads():
    """Two torch threads for the test, the previous count restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(saved)


def patch_everywhere(monkeypatch, module, name, value):
    """Set ``module.name`` to ``value`` in every skdict module that holds it.

    A solver's constants and functions are imported by each module that uses
    them; patching the defining module alone would leave those bindings.
    """
    original = getattr(module, name)
    holders = [
        held
        for key, held in list(sys.modules.items())
        if key.split(".")[0] == "skdict" and getattr(held, name, None) is original
    ]
    assert module in holders
    for held in holders:
        monkeypatch.setattr(held, name, value)


def random_dictionary(rng, n_components, n_features):
    """Unit-norm Gaussian atoms as rows."""
    D = rng.standard_normal((n_components, n_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def sparse_codes(rng, n_samples, n_components, n_active):
    """Exactly ``n_active`` Uniform(0, 1) entries per row."""
    Z = np.zeros((n_samples, n_components))
    for i in range(n_samples):
        Z[i, rng.choice(n_components, n_active, replace=False)] = rng.uniform(
            0, 1, n_active
        )
    return Z


def near_duplicate_stream():
    """A batch of 40 uniform samples and three atoms, 0 and 1 at |cosine| 0.99.

    An exploring stream resamples atom 1 (the less used) at every step.
    """
    X = torch.from_numpy(np.random.default_rng(0).uniform(size=(40, 4)))
    atoms = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [1.0, 0.9, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        dtype=torch.float64,
    )
    return X, torch.nn.functional.normalize(atoms, dim=1)


def forked_during(block, target):
    """Run ``target(queue)`` in a child forked while another thread is in ``block()``.

    Returns what the child put on the queue, or None if it hung (killed
    after 20 s). Locks held by the other thread at the fork stay held in the
    child, and its blocks never close there.
    """
    import multiprocessing
    import threading

    opened, done = threading.Event(), threading.Event()

    def hold():
        with block():
            opened.set()
            done.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert opened.wait(10), "the block did not open"
        context = multiprocessing.get_context("fork")
        result = context.Queue()
        child = context.Process(target=target, args=(result,))
        child.start()
        child.join(20)
        if child.is_alive():
            child.kill()
            return None
        return result.get(timeout=10)
    finally:
        done.set()
        worker.join(10)


requires_fork = pytest.mark.skipif(
    sys.platform != "linux", reason="fork with threads (Linux only)"
)


def lasso_objective(X, Z, D, alpha):
    """Per-sample 0.5 ||x - z D||^2 + alpha ||z||_1 in float64."""
    X, Z, D = (np.asarray(a, dtype=np.float64) for a in (X, Z, D))
    return 0.5 * ((X - Z @ D) ** 2).sum(axis=1) + alpha * np.abs(Z).sum(axis=1)


def saved_and_loaded(estimator):
    """Copies of ``estimator`` by pickle, joblib (one file per array) and deepcopy."""
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    buffer.seek(0)
    return [
        pickle.loads(pickle.dumps(estimator)),
        joblib.load(buffer),
        copy.deepcopy(estimator),
    ]


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures saved during the test, in order."""
    figure = pytest.importorskip("matplotlib.figure").Figure
    figures, savefig = [], figure.savefig

    def recording(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(figure, "savefig", recording)
    return figures
