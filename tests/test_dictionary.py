"""Dictionary learning and OracleDictionary: closed forms, recovery, API."""

import itertools
import pickle
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA, sparse_encode
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from skdict import (
    FISTACoder,
    OracleDictionary,
    SparseAutoencoder,
    _fista_coder,
    _oracle,
    _tensor,
)
from skdict._dictionary import is_same_given, record_given
from skdict._fista import _core, _driver
from skdict._fista._core import _operand
from skdict._fista._driver import fista_encode
from skdict._fista_coder import _warn_if_no_code
from skdict._learning import _alternation
from skdict._learning._alternation import (
    _coherence_bound,
    _lstsq_step,
    learn_dictionary,
)
from skdict._learning._atoms import (
    _RETURNS_TO_KEEP,
    _coherent_atoms,
    _DuplicateMemory,
    _worst_residuals,
    initial_dictionary,
)
from skdict._learning._online import (
    _forgetting_factor,
    batch_statistics,
    online_dictionary_update,
)
from skdict._learning._updates import (
    _rescaled,
    _sample_side_atoms,
    _well_posed_cholesky,
    block_coordinate_update,
    lstsq_dictionary,
)
from skdict._oracle import estimate_dictionary
from skdict.datasets import make_compositional
from skdict.metrics import dictionary_similarity, mcc_score

from .conftest import (
    cuda,
    lasso_objective,
    near_duplicate_stream,
    patch_everywhere,
    random_dictionary,
    saved_and_loaded,
    sparse_codes,
)


@pytest.fixture(scope="module")
def easy():
    """n_latents=50, k=3: plenty of samples per atom."""
    return make_compositional(n_latents=50, n_active=3, n_samples=4000, random_state=0)


# --------------------------------------------------------------------------
# Oracle


@pytest.mark.parametrize("sparse_codes", [False, True])
def test_oracle_least_squares_recovers_dictionary(sparse_codes):
    data = make_compositional(
        n_latents=40,
        n_active=5,
        n_samples=600,
        sparse_codes=sparse_codes,
        random_state=0,
    )
    oracle = OracleDictionary().fit(data.X_train, data.Z_train)
    np.testing.assert_allclose(oracle.components_, data.dictionary, atol=1e-8)
    np.testing.assert_array_equal(oracle.intercept_, 0.0)


def test_oracle_accepts_sparse_tensor_codes():
    data = make_compositional(n_latents=20, n_active=3, n_samples=400, random_state=0)
    codes = torch.from_numpy(data.Z_train).to_sparse()
    oracle = OracleDictionary().fit(data.X_train, codes)
    np.testing.assert_allclose(oracle.components_, data.dictionary, atol=1e-8)


def test_oracle_takes_a_pandas_frame_of_sparse_codes():
    # Refused before as "Sparse data was passed for y, but dense data is
    # required", although SciPy's sparse codes are taken.
    pd = pytest.importorskip("pandas")
    data = make_compositional(
        n_latents=20, n_active=3, n_samples=400, sparse_codes=True, random_state=0
    )
    names = [f"concept{j}" for j in range(20)]
    frame = pd.DataFrame.sparse.from_spmatrix(data.Z_train, columns=names)
    oracle = OracleDictionary().fit(data.X_train, frame)
    np.testing.assert_allclose(oracle.components_, data.dictionary, atol=1e-8)
    np.testing.assert_array_equal(oracle.concept_names_, names)
    half = data.X_train.shape[0] // 2
    streamed = OracleDictionary().partial_fit(data.X_train[:half], frame.iloc[:half])
    streamed.partial_fit(data.X_train[half:], frame.iloc[half:])
    np.testing.assert_allclose(streamed.components_, data.dictionary, atol=1e-8)


def test_oracle_leaves_sparse_codes_with_duplicates_untouched(rng):
    # A valid CSR matrix whose entries are each stored twice, in unsorted
    # order: SciPy sums and sorts such arrays in place on max().
    Z = rng.uniform(size=(6, 3))
    W = random_dictionary(rng, 3, 5)
    indptr = np.arange(0, 37, 6, dtype=np.int32)
    indices = np.tile(np.array([2, 2, 1, 1, 0, 0], dtype=np.int32), 6)
    values = np.repeat(Z[:, ::-1] / 2, 2, axis=1).ravel()
    codes = sp.csr_matrix((values, indices, indptr), shape=Z.shape)
    saved = [a.copy() for a in (codes.data, codes.indices, codes.indptr)]
    oracle = OracleDictionary().fit(Z @ W, codes)
    np.testing.assert_allclose(oracle.components_, W, atol=1e-10)
    for array, before in zip(
        (codes.data, codes.indices, codes.indptr), saved, strict=True
    ):
        np.testing.assert_array_equal(array, before)


def test_oracle_refuses_complex_sparse_codes(rng):
    Z = rng.uniform(size=(10, 3))
    X = Z @ random_dictionary(rng, 3, 5)
    with pytest.raises(ValueError, match=r"y must hold real codes.*complex128"):
        OracleDictionary().fit(X, sp.csr_array(Z + 1j * Z))


def test_oracle_warns_when_codes_do_not_determine_the_atoms(rng):
    Z = rng.uniform(size=(50, 3))
    Z[:, 2] = 2.0 * Z[:, 0]  # latents 0 and 2 always active together
    X = Z @ random_dictionary(rng, 3, 5)
    with pytest.warns(UserWarning, match="linearly dependent") as caught:
        oracle = OracleDictionary().fit(X, Z)
    assert caught[0].filename == __file__  # the caller's line
    # The minimum-norm split still reconstructs the data.
    np.testing.assert_allclose(Z @ oracle.components_, X, atol=1e-8)


@pytest.mark.parametrize("chunk_elements", [None, 20])
def test_oracle_estimate_matches_numpy_lstsq(rng, monkeypatch, chunk_elements):
    # Noisy data: the estimate is the least-squares solution, not the truth.
    if chunk_elements:  # statistics accumulated a few rows at a time
        monkeypatch.setattr(_tensor, "BLOCK_ELEMENTS", chunk_elements)
    Z = rng.uniform(size=(80, 6))
    X = Z @ rng.standard_normal((6, 9)) + 0.1 * rng.standard_normal((80, 9))
    expected = np.linalg.lstsq(Z, X, rcond=None)[0]
    got = estimate_dictionary(torch.from_numpy(X), Z).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    # Sparse codes give the same statistics by sparse products, never dense.
    densify = sp.csr_array.toarray

    def refuse_rows_of_codes(A, *args, **kwargs):
        assert A.shape[0] == A.shape[1], "rows of the codes were densified"
        return densify(A, *args, **kwargs)

    monkeypatch.setattr(sp.csr_array, "toarray", refuse_rows_of_codes)
    got_sparse = estimate_dictionary(torch.from_numpy(X), sp.csr_matrix(Z))
    np.testing.assert_allclose(got_sparse.numpy(), expected, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    n_latents=st.integers(1, 8),
    n_features=st.integers(1, 10),
    extra_samples=st.integers(0, 30),
    density=st.floats(0.2, 1.0),
    noise=st.sampled_from([0.0, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_oracle_estimate_is_numpy_lstsq(
    n_latents, n_features, extra_samples, density, noise, seed
):
    # Any full-rank codes, dense or sparse, noiseless or not: the estimate is
    # the least-squares solution that numpy computes from Z itself.
    rng = np.random.default_rng(seed)
    n_samples = n_latents + extra_samples
    Z = rng.uniform(0.1, 1.0, (n_samples, n_latents))
    Z *= rng.uniform(size=Z.shape) < density
    assume(np.linalg.matrix_rank(Z) == n_latents and np.linalg.cond(Z) < 1e3)
    D = rng.standard_normal((n_latents, n_features))
    X = Z @ D + noise * rng.standard_normal((n_samples, n_features))
    expected = np.linalg.lstsq(Z, X, rcond=None)[0]
    scale = np.abs(expected).max() + 1.0
    for codes in (Z, sp.csr_array(Z)):
        oracle = OracleDictionary().fit(X, codes)
        np.testing.assert_allclose(oracle.components_, expected, atol=1e-8 * scale)
        if noise == 0.0:
            np.testing.assert_allclose(oracle.components_, D, atol=1e-8 * scale)


@pytest.mark.filterwarnings("error")  # the codes are not dependent
def test_oracle_float32_estimate_is_not_limited_by_float32_normal_equations(rng):
    # One latent in other units: cond(Z) about 1e4, so Z^T Z's condition
    # number (1e8) is beyond float32, though lstsq on Z itself is not.
    D = random_dictionary(rng, 20, 12)
    Z = sparse_codes(rng, 500, 20, 3)
    Z[:, 0] *= 1e3
    X, Z = (Z @ D).astype(np.float32), Z.astype(np.float32)
    expected = np.linalg.lstsq(Z.astype(np.float64), X.astype(np.float64), rcond=None)
    for codes in (Z, sp.csr_array(Z)):
        oracle = OracleDictionary().fit(X, codes)
        assert oracle.components_.dtype == np.float32
        np.testing.assert_allclose(oracle.components_, expected[0], atol=1e-5)
        np.testing.assert_allclose(oracle.components_, D, atol=1e-4)


@pytest.mark.filterwarnings("error")  # the codes are not dependent
@pytest.mark.parametrize("scale", [1e-155, 1e-80, 1e120, 1e154])
@pytest.mark.parametrize("sparse", [False, True])
def test_oracle_estimate_at_extreme_scales(scale, sparse, rng):
    # The normal equations of codes this small or large under- or overflow
    # float64 unless scaled (NaN atoms, a false dependence warning, or a
    # failed eigendecomposition); numpy's lstsq on Z itself has no trouble.
    D = rng.standard_normal((3, 4))
    Z = rng.uniform(0.5, 1.0, (10, 3)) * scale
    X = Z @ D
    oracle = OracleDictionary().fit(X, sp.csr_array(Z) if sparse else Z)
    np.testing.assert_allclose(oracle.components_, D, atol=1e-12)


def test_oracle_atoms_beyond_the_dtypes_range_are_refused(rng):
    # Codes of 1e-150 for float32 data of order 1 ask for atoms of 1e150:
    # components_ held inf, and transform failed naming components_.
    X = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.uniform(0.5, 1.0, (6, 2)) * 1e-150
    with pytest.raises(ValueError, match=r"leave torch\.float32's range.*Rescale y"):
        OracleDictionary().fit(X, y)
    # In float64 they fit.
    D = OracleDictionary().fit(X.astype(np.float64), y).components_
    assert np.isfinite(D).all() and np.abs(D).max() > 1e140


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_oracle_atoms_whose_norms_square_outside_the_range_are_refused_at_fit(
    scale, rng
):
    # Codes of 1e200 for data of order 1 give atoms of norm 1e-200, finite
    # but unusable (their squares underflow): fit succeeded and the first
    # transform refused "dictionary" with advice to rescale it.
    X = rng.standard_normal((10, 4))
    y = rng.uniform(0.5, 1.0, (10, 3)) * scale
    with pytest.raises(
        ValueError,
        match=r"The dictionary estimated from X and y has atoms at rows \[0, 1, 2\] "
        r"whose norm .* squares outside .*; the atoms scale as X over y",
    ):
        OracleDictionary().fit(X, y)


def test_oracle_score_is_the_coders_and_serves_model_selection(rng):
    D = random_dictionary(rng, 8, 6)
    X = sparse_codes(rng, 40, 8, 2) @ D
    oracle = OracleDictionary(D, alpha=0.01).fit(X)
    coder = FISTACoder(D, alpha=0.01, positive=oracle.positive).fit(X)
    assert oracle.score(X) == pytest.approx(coder.score(X), rel=1e-9)
    assert oracle.score(X) < 0
    scores = cross_val_score(OracleDictionary(D, alpha=0.01), X, cv=2)
    assert scores.shape == (2,) and np.all(scores <= 0)


def test_oracle_reads_its_input_once(rng):
    # A dask array (or a float16 memmap) was converted twice by transform,
    # once by the oracle's check and once by its coder; three times by score.
    class Counted:
        def __init__(self, array):
            self.array, self.reads = array, 0
            self.shape, self.ndim, self.dtype = array.shape, array.ndim, array.dtype

        def __len__(self):
            return len(self.array)

        def __array__(self, dtype=None, copy=None):
            self.reads += 1
            return self.array if dtype is None else self.array.astype(dtype)

    D = random_dictionary(rng, 8, 6)
    X = (sparse_codes(rng, 40, 8, 2) @ D).astype(np.float16)
    oracle = OracleDictionary(D).fit(X)
    for method in ("transform", "score"):
        counted = Counted(X)
        result = getattr(oracle, method)(counted)
        assert counted.reads == 1, method
        np.testing.assert_array_equal(result, getattr(oracle, method)(X))
    codes = oracle.transform(X)
    assert codes.dtype == np.float64
    expected = FISTACoder(D, positive=True).fit(X).transform(X)
    np.testing.assert_array_equal(codes, expected)


def test_oracle_codes_are_named_after_the_concepts():
    # Concept labels as a DataFrame named the atoms' columns, but the codes
    # came out as oracledictionary0, 1, ...
    pd = pytest.importorskip("pandas")
    data = make_compositional(n_latents=5, n_active=2, n_samples=200, random_state=0)
    Z = pd.DataFrame(data.Z_train, columns=["red", "blue", "car", "cup", "dog"])
    oracle = OracleDictionary().fit(data.X_train, Z)
    np.testing.assert_array_equal(oracle.concept_names_, Z.columns)
    codes = oracle.set_output(transform="pandas").transform(data.X_val)
    assert list(codes.columns) == list(Z.columns)
    # Unnamed or non-string columns, and given atoms, keep the default names.
    for fitted in (
        OracleDictionary().fit(data.X_train, data.Z_train),
        OracleDictionary().fit(data.X_train, pd.DataFrame(data.Z_train)),
        OracleDictionary(data.dictionary).fit(data.X_train, Z),
    ):
        assert fitted.concept_names_ is None
        assert list(fitted.get_feature_names_out()) == [
            f"oracledictionary{i}" for i in range(5)
        ]
    with pytest.raises(ValueError, match="input_features"):
        oracle.get_feature_names_out(["x"])
    # A Series named by a string, one concept's codes, names it too.
    one = OracleDictionary().fit(data.X_train, Z["car"])
    assert list(one.get_feature_names_out()) == ["car"]
    # Codes on the oracle's atoms are the concepts too: a coder, or an SAE
    # keeping them as its frozen decoder, names its codes after them.
    frozen = FrozenEstimator(oracle)
    for coder in (
        FISTACoder(frozen).fit(data.X_train),
        FISTACoder(OracleDictionary()).fit(data.X_train, Z),
        SparseAutoencoder(decoder=frozen, freeze_decoder=True, max_epochs=1).fit(
            data.X_train
        ),
    ):
        assert list(coder.get_feature_names_out()) == list(Z.columns)
        # One wrapping further out keeps them (they became fistacoder0, ...).
        outer = FISTACoder(FrozenEstimator(coder)).fit(data.X_train)
        assert list(outer.get_feature_names_out()) == list(Z.columns)
    # So does an oracle given the oracle's atoms (oracledictionary0, ...).
    for provider in (frozen, OracleDictionary()):
        again = OracleDictionary(provider).fit(data.X_train, Z)
        np.testing.assert_array_equal(again.concept_names_, Z.columns)
        assert list(again.get_feature_names_out()) == list(Z.columns)
    trained = SparseAutoencoder(decoder=frozen, max_epochs=1).fit(data.X_train)
    assert trained.get_feature_names_out()[0] == "sparseautoencoder0"
    plain = FISTACoder(data.dictionary).fit(data.X_train)
    assert plain.get_feature_names_out()[0] == "fistacoder0"
    # The names are those of the atoms the coder was fitted with: a frozen
    # oracle refitted later on other concepts renamed its codes.
    coder = FISTACoder(frozen).fit(data.X_train)
    sae = SparseAutoencoder(decoder=frozen, freeze_decoder=True, max_epochs=1)
    sae.fit(data.X_train)
    oracle.fit(data.X_train, Z.iloc[:, ::-1])
    assert list(coder.get_feature_names_out()) == list(Z.columns)
    assert list(sae.get_feature_names_out()) == list(Z.columns)
    oracle.fit(data.X_train, Z.iloc[:, :3])
    assert coder.set_output(transform="pandas").transform(data.X_val).shape[1] == 5


@pytest.mark.parametrize("layout", ["dense", "sparse", "float32"])
def test_oracle_streams_the_least_squares_estimate(layout):
    # Data larger than memory: batches gather Z^T Z and Z^T X, and the atoms
    # are those of one fit on all the rows, to rounding.
    data = make_compositional(n_latents=30, n_active=3, n_samples=2000, random_state=0)
    X, Z = data.X_train, data.Z_train
    if layout == "float32":
        X = X.astype(np.float32)
    batches = [slice(start, start + 150) for start in range(0, len(X), 150)]
    whole = OracleDictionary().fit(X, Z)
    if layout == "sparse":
        Z = sp.csr_matrix(Z)
    stream = OracleDictionary()
    for rows in batches:
        stream.partial_fit(X[rows], Z[rows])
    tol = 1e-5 if layout == "float32" else 1e-12
    np.testing.assert_allclose(stream.components_, whole.components_, atol=tol)
    assert stream.components_.dtype == X.dtype
    # Resumed from a pickle, and after fit, the stream goes on alike.
    half = OracleDictionary()
    for rows in batches[:4]:
        half.partial_fit(X[rows], Z[rows])
    resumed = pickle.loads(pickle.dumps(half))
    for rows in batches[4:]:
        resumed.partial_fit(X[rows], Z[rows])
    np.testing.assert_array_equal(resumed.components_, stream.components_)
    continued = OracleDictionary().fit(X[:600], Z[:600])
    for rows in batches[4:]:
        continued.partial_fit(X[rows], Z[rows])
    np.testing.assert_allclose(continued.components_, whole.components_, atol=tol)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_oracle_refuses_concept_names_mixing_strings_and_numbers(method):
    # As scikit-learn refuses such column names in X; they were dropped
    # silently, the codes named oracledictionary0, ...
    pd = pytest.importorskip("pandas")
    data = make_compositional(n_latents=4, n_active=2, n_samples=100, random_state=0)
    y = pd.DataFrame(data.Z_train[:, :3], columns=["red", 1, "car"])
    # scikit-learn's own message said to convert X.columns, not y's.
    match = r"column names of y mix types \(\['int', 'str'\]\).*y\.columns ="
    with pytest.raises(TypeError, match=match) as caught:
        getattr(OracleDictionary(), method)(data.X_train, y)
    assert "X.columns" not in str(caught.value)
    oracle = getattr(OracleDictionary(), method)(
        data.X_train, y.set_axis([0, 1, 2], axis=1)
    )
    assert list(oracle.get_feature_names_out()) == [
        f"oracledictionary{i}" for i in range(3)
    ]


def test_oracle_stream_checks_the_concept_names_of_each_batch():
    # A later batch with its concepts in another order was summed into the
    # wrong latents' atoms (an error of 0.32 against 2e-15 for fit).
    pd = pytest.importorskip("pandas")
    data = make_compositional(n_latents=5, n_active=2, n_samples=400, random_state=0)
    X, Z = data.X_train, data.Z_train
    names = ["red", "blue", "car", "cup", "dog"]
    oracle = OracleDictionary().partial_fit(
        X[:100], pd.DataFrame(Z[:100], columns=names)
    )
    before = oracle.components_.copy()
    reordered = pd.DataFrame(Z[100:, ::-1], columns=names[::-1])
    with pytest.raises(ValueError, match="concept names of y differ"):
        oracle.partial_fit(X[100:], reordered)
    np.testing.assert_array_equal(oracle.components_, before)
    with pytest.warns(UserWarning, match="y has no column names"):
        oracle.partial_fit(X[100:], Z[100:])
    unnamed = OracleDictionary().partial_fit(X[:100], Z[:100])
    with pytest.warns(UserWarning, match="the oracle's first batch did not"):
        unnamed.partial_fit(X[100:], pd.DataFrame(Z[100:], columns=names))
    # An oracle pickled before streams existed kept no statistics.
    old = OracleDictionary().fit(X, Z)
    del old._statistics, old._estimated
    with pytest.raises(ValueError, match="fitted by an earlier skdict version"):
        old.partial_fit(X[:10], Z[:10])
    np.testing.assert_allclose(
        oracle.components_, OracleDictionary().fit(X, Z).components_, atol=1e-12
    )
    # A float32 batch keeps the stream's float64 atoms (it rounded them, and
    # every later transform, to float32), as FISTACoder's streams do; the
    # atoms are those of the float32 rows' values in float64.
    X32 = X[:50].astype(np.float32)
    oracle.partial_fit(X32, pd.DataFrame(Z[:50], columns=names))
    assert oracle.intercept_.dtype == oracle.components_.dtype == np.float64
    expected = OracleDictionary().fit(
        np.vstack([X, X32.astype(np.float64)]), np.vstack([Z, Z[:50]])
    )
    np.testing.assert_allclose(oracle.components_, expected.components_, atol=1e-12)
    # The array type follows the latest batch, in the stream's precision.
    oracle.partial_fit(torch.from_numpy(X32), pd.DataFrame(Z[:50], columns=names))
    assert oracle.components_.dtype == oracle.intercept_.dtype == torch.float64


def test_oracle_stream_of_batches_in_other_units():
    # Batches of very different magnitudes share the statistics at the
    # larger scale: the atoms are those of the rows together.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 6, 5)
    Z = sparse_codes(rng, 200, 6, 2)
    X = Z @ D
    stream = OracleDictionary().partial_fit(X[:100] * 1e-120, Z[:100] * 1e-120)
    stream.partial_fit(X[100:] * 1e120, Z[100:] * 1e120)
    np.testing.assert_allclose(stream.components_, D, atol=1e-10)


def test_oracle_stream_waits_for_latents_it_has_not_seen():
    # A first batch without a rare concept: its atom is not determined yet,
    # which the stream says, and coding refuses until a batch holds it.
    data = make_compositional(n_latents=8, n_active=2, n_samples=600, random_state=0)
    X, Z = data.X_train, data.Z_train
    without = Z[:, 5] == 0
    oracle = OracleDictionary()
    with pytest.warns(UserWarning, match=r"Latents \[5\] have been zero in every"):
        oracle.partial_fit(X[without], Z[without])
    np.testing.assert_array_equal(oracle.components_[5], 0.0)
    for method in (oracle.transform, oracle.score):
        with pytest.raises(ValueError, match=r"latents \[5\] are not determined"):
            method(X)
    with pytest.raises(ValueError, match=r"latents \[5\] are not determined"):
        oracle.inverse_transform(Z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        oracle.partial_fit(X[~without], Z[~without])
    whole = OracleDictionary().fit(X, Z)
    np.testing.assert_allclose(oracle.components_, whole.components_, atol=1e-12)
    assert oracle.transform(X).shape == (len(X), 8)
    # fit itself still refuses latents that never occur.
    with pytest.raises(ValueError, match=r"Latents \[5\] are zero in every sample"):
        OracleDictionary().fit(X[without], Z[without])


def test_oracle_fit_keeps_statistics_only_of_bounded_size(monkeypatch):
    # Z^T Z of 10,000 latents would keep 800 MB on a fitted oracle (and in
    # its pickles): beyond a bound, fit keeps none, and a stream after it
    # says how to start one.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 6, 5)
    Z = sparse_codes(rng, 200, 6, 2)
    X = Z @ D
    monkeypatch.setattr(_oracle, "_KEPT_STATISTICS", 6 * (6 + 5) - 1)
    oracle = OracleDictionary().fit(X[:100], Z[:100])
    assert oracle._statistics is None
    with pytest.raises(ValueError, match="fit kept no statistics"):
        oracle.partial_fit(X[100:], Z[100:])
    stream = OracleDictionary().partial_fit(X[:100], Z[:100])
    stream.partial_fit(X[100:], Z[100:])
    np.testing.assert_allclose(stream.components_, D, atol=1e-10)


def test_oracle_stream_errors_leave_it_as_it_was():
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 6, 5)
    Z = sparse_codes(rng, 200, 6, 2)
    X = Z @ D
    oracle = OracleDictionary().partial_fit(X[:100], Z[:100])
    before = oracle.components_.copy()
    with pytest.raises(ValueError, match="y has 4 latents, but the oracle estimates 6"):
        oracle.partial_fit(X[100:], Z[100:, :4])
    with pytest.raises(ValueError, match="requires y"):
        oracle.partial_fit(X[100:])
    with pytest.raises(ValueError, match="X has 4 features"):
        oracle.partial_fit(X[100:, :4], Z[100:])
    np.testing.assert_array_equal(oracle.components_, before)
    oracle.partial_fit(X[100:], Z[100:])
    np.testing.assert_allclose(oracle.components_, D, atol=1e-10)
    # A given dictionary: the first call fits, later ones check X; switching
    # or changing the dictionary needs a new fit.
    given = OracleDictionary(D).partial_fit(X[:10])
    assert given.partial_fit(X[10:20]) is given
    with pytest.raises(ValueError, match="X has 4 features"):
        given.partial_fit(X[:10, :4])
    with pytest.raises(ValueError, match="continues the dictionary given"):
        given.set_params(dictionary=D * 2).partial_fit(X[:10])
    with pytest.raises(ValueError, match="cannot switch between a given"):
        given.set_params(dictionary=None).partial_fit(X[:10], Z[:10])
    with pytest.raises(ValueError, match="cannot switch between a given"):
        oracle.set_params(dictionary=D).partial_fit(X[:10])


def test_oracle_torch_input_gives_tensors():
    data = make_compositional(n_latents=20, n_active=3, n_samples=300, random_state=1)
    X = torch.from_numpy(data.X_train).float()
    oracle = OracleDictionary().fit(X, torch.from_numpy(data.Z_train).float())
    assert isinstance(oracle.components_, torch.Tensor)
    assert oracle.components_.dtype == torch.float32
    codes = oracle.transform(X)
    assert isinstance(codes, torch.Tensor) and codes.shape == (150, 20)


def test_oracle_rejects_dictionary_of_wrong_width(rng):
    X = rng.standard_normal((10, 6))
    with pytest.raises(ValueError, match="dimension 5, but X has 6 features"):
        OracleDictionary(random_dictionary(rng, 4, 5)).fit(X)


def test_oracle_of_one_hot_class_labels_is_the_class_means(rng):
    # As its docstring says: one-hot labels make each class's atom the mean of
    # its samples; a 1-D y is one latent's codes.
    X = rng.standard_normal((40, 5))
    labels = rng.integers(0, 3, 40)
    one_hot = OneHotEncoder().fit_transform(labels.reshape(-1, 1))
    oracle = OracleDictionary().fit(X, one_hot)
    means = [X[labels == c].mean(axis=0) for c in range(3)]
    np.testing.assert_allclose(oracle.components_, means, atol=1e-12)
    codes = rng.uniform(size=40)
    np.testing.assert_allclose(
        OracleDictionary().fit(X, codes).components_,
        OracleDictionary().fit(X, codes[:, None]).components_,
    )


def test_oracle_errors(rng):
    X = rng.standard_normal((10, 6))
    with pytest.raises(ValueError, match="requires y"):
        OracleDictionary().fit(X)
    with pytest.raises(ValueError, match="codes of the 10 samples"):
        OracleDictionary().fit(X, rng.uniform(size=(9, 3)))
    Z = rng.uniform(size=(10, 3))
    Z[:, 1] = 0.0
    for codes in (Z, sp.csr_array(Z)):
        with pytest.raises(ValueError, match=r"Latents \[1\] are zero"):
            OracleDictionary().fit(X, codes)
    Z[3, 0] = np.nan
    # A 1-D y (one latent) met the class-label check first, which said
    # "Input contains NaN." without naming y.
    for codes in (Z, sp.csr_array(Z), torch.from_numpy(Z).to_sparse(), Z[:, 0]):
        with pytest.raises(ValueError, match="y contains NaN"):
            OracleDictionary().fit(X, codes)
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        OracleDictionary().fit(X, np.where(np.isnan(Z[:, 0]), np.inf, 2.0))
    oracle = OracleDictionary(random_dictionary(rng, 4, 6)).fit(X)
    with pytest.raises(ValueError, match="has 4 components"):
        oracle.inverse_transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="'alpha' parameter of OracleDictionary"):
        OracleDictionary(random_dictionary(rng, 4, 6), alpha=0.0).fit(X)


@pytest.mark.parametrize(
    "layout",
    [torch.from_numpy, sp.csr_array, lambda Z: torch.from_numpy(Z).to_sparse()],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_oracle_refuses_codes_of_no_latent_in_every_layout(layout, method, rng):
    # NumPy codes of no column were refused; tensors and sparse matrices gave
    # an oracle of zero atoms, which transform then blamed on `dictionary`.
    X = rng.standard_normal((10, 6))
    with pytest.raises(ValueError, match=r"at least one latent.*\(10, 0\)"):
        getattr(OracleDictionary(), method)(X, layout(np.zeros((10, 0))))


def test_oracle_names_labels_of_the_wrong_length_by_their_shape(rng):
    X = rng.standard_normal((10, 6))
    for y in (np.ones(20), torch.ones(20)):
        with pytest.raises(ValueError, match=r"got shape \(20,\)"):
            OracleDictionary().fit(X, y)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda D: FISTACoder(D), "dictionary"),
        (lambda D: OracleDictionary(D), "dictionary"),
        (lambda D: SparseAutoencoder(decoder=D, max_epochs=1), "decoder"),
        (lambda D: FISTACoder(n_components=3, init=D, dict_max_iter=1), "init"),
    ],
)
def test_atoms_in_a_frame_are_checked_against_xs_columns(make, name, rng):
    # Read by position: with X's columns in another order the codes came out
    # wrong without a word (MCC 0.97 -> 0.57).
    pd = pytest.importorskip("pandas")
    columns = ["a", "b", "c", "d"]
    D = pd.DataFrame(random_dictionary(rng, 3, 4), columns=columns)
    X = pd.DataFrame(rng.standard_normal((30, 4)), columns=columns)
    make(D).fit(X)  # the same columns in the same order
    with pytest.raises(ValueError, match=rf"{name}'s atoms are X's in another order"):
        make(D).fit(X[columns[::-1]])
    with pytest.warns(UserWarning, match=f"atoms of {name} have column names"):
        make(D).fit(X.to_numpy())
    # Other names (a pipeline's "num__a") say nothing of the order: a warning.
    with pytest.warns(UserWarning, match=f"{name}'s atoms are not named as X's"):
        make(D).fit(X.add_prefix("num__"))
    # Names mixing strings and numbers are no names; another width is the
    # atoms' dimension check's.
    make(D.set_axis(["a", "b", 2, 3], axis=1)).fit(X)
    with pytest.raises(ValueError, match="dimension 4, but X has 5"):
        make(D).fit(X.assign(e=1.0))


def test_oracle_with_given_dictionary_only_validates(rng):
    D = random_dictionary(rng, 7, 5)
    X = rng.standard_normal((12, 5))
    oracle = OracleDictionary(D).fit(X)
    np.testing.assert_array_equal(oracle.components_, D)
    assert oracle.dictionary_ is None and oracle.n_features_in_ == 5
    assert not hasattr(oracle, "n_iter_")


def test_oracle_codes_are_fista_codes(rng):
    # The same solver and settings as FISTACoder, so the same codes.
    D = random_dictionary(rng, 30, 12)
    X = sparse_codes(rng, 40, 30, 3) @ D
    oracle = OracleDictionary(D, alpha=0.05, tol=1e-8).fit(X)
    coder = FISTACoder(D, alpha=0.05, positive=True, tol=1e-8).fit(X)
    np.testing.assert_allclose(oracle.transform(X), coder.transform(X), atol=1e-10)
    codes = oracle.transform(X)
    np.testing.assert_allclose(oracle.inverse_transform(codes), codes @ D)
    assert (codes >= 0).all()
    # Optimal codes: no better than the lasso objective of sklearn's references
    # is tested in test_fista; here, FISTA beats the ground-truth codes.
    assert (
        lasso_objective(X, codes, D, 0.05).sum()
        <= lasso_objective(
            X, np.linalg.lstsq(D.T, X.T, rcond=None)[0].T.clip(0), D, 0.05
        ).sum()
    )


def test_oracle_mcc_ood_on_compositional_benchmark():
    data = make_compositional(n_latents=100, n_active=10, random_state=0)
    for oracle in (
        OracleDictionary(data.dictionary).fit(data.X_train),
        OracleDictionary().fit(data.X_train, data.Z_train),
    ):
        codes = oracle.transform(data.X_ood)
        assert mcc_score(data.Z_ood, codes, top_variance=True) >= 0.97


def test_oracle_is_a_dictionary_provider(rng):
    D = random_dictionary(rng, 16, 8)
    X = sparse_codes(rng, 30, 16, 2) @ D
    oracle = OracleDictionary(D).fit(X)
    via_provider = FISTACoder(OracleDictionary(D), positive=True).fit(X)
    np.testing.assert_array_equal(via_provider.components_, D)
    np.testing.assert_allclose(via_provider.transform(X), oracle.transform(X))
    frozen = FISTACoder(FrozenEstimator(oracle), positive=True).fit(X)
    np.testing.assert_array_equal(frozen.components_, D)
    sae = SparseAutoencoder(
        decoder=OracleDictionary(D),
        freeze_decoder=True,
        max_epochs=2,
        random_state=0,
    ).fit(X)
    np.testing.assert_allclose(sae.components_, D, atol=1e-12)


def test_oracle_codes_around_its_providers_intercept(rng):
    # A provider's intercept_ is subtracted before coding, as FISTACoder does:
    # ignoring it gave codes off by up to 7 and a score of -1.47.
    D = random_dictionary(rng, 6, 4)
    X = sparse_codes(rng, 20, 6, 2) @ D + 3.0
    atoms = SimpleNamespace(components_=D, intercept_=np.full(4, 3.0))
    oracle = OracleDictionary(atoms, alpha=0.01).fit(X)
    coder = FISTACoder(atoms, alpha=0.01, positive=True).fit(X)
    np.testing.assert_allclose(oracle.transform(X), coder.transform(X), atol=1e-10)
    assert oracle.score(X) > -1e-3


@pytest.mark.parametrize("params", [{"tol": 0.3}, {"max_iter": 2}])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_oracle_codes_with_its_own_solver_parameters(rng, params):
    # transform reads tol and max_iter, as FISTACoder does, not the defaults.
    D = random_dictionary(rng, 6, 4)
    X = sparse_codes(rng, 20, 6, 2) @ D
    oracle = OracleDictionary(D, alpha=0.01, **params).fit(X).transform(X)
    coder = FISTACoder(D, alpha=0.01, positive=True, **params).fit(X).transform(X)
    default = OracleDictionary(D, alpha=0.01).fit(X).transform(X)
    np.testing.assert_array_equal(oracle, coder)
    assert np.abs(oracle - default).max() > 1e-6  # the parameter matters here


def test_feature_names_out_are_a_copy_of_the_concept_names(rng):
    pd = pytest.importorskip("pandas")
    Z = pd.DataFrame(rng.uniform(size=(30, 3)), columns=["a", "b", "c"])
    X = Z.to_numpy() @ rng.standard_normal((3, 5))
    oracle = OracleDictionary().fit(X, Z)
    for estimator in (oracle, FISTACoder(oracle).fit(X, Z)):
        names = estimator.get_feature_names_out()
        names[0] = "changed"
        assert list(estimator.get_feature_names_out()) == ["a", "b", "c"]
    assert list(oracle.concept_names_) == ["a", "b", "c"]


def test_oracle_of_a_provider_fits_it_on_x_and_y_and_keeps_its_intercept(rng):
    # An unfitted provider is fitted on (X, y), as the coders fit theirs; the
    # fitted provider is dictionary_, and its intercept_ (a PCA's mean_) is
    # the oracle's.
    D = random_dictionary(rng, 6, 8)
    Z = sparse_codes(rng, 40, 6, 2)
    X = Z @ D
    inner = OracleDictionary().fit(X, Z)
    oracle = OracleDictionary(OracleDictionary()).fit(X, Z)
    np.testing.assert_allclose(oracle.components_, inner.components_, atol=1e-12)
    assert isinstance(oracle.dictionary_, OracleDictionary)
    np.testing.assert_allclose(oracle.dictionary_.components_, inner.components_)
    offset = X + 3.0
    pca = PCA(n_components=4).fit(offset)
    around_mean = OracleDictionary(FrozenEstimator(pca)).fit(offset)
    np.testing.assert_allclose(around_mean.intercept_, pca.mean_)
    assert around_mean.dictionary_.estimator is pca


def test_oracle_pickles_and_clones(rng):
    data = make_compositional(n_latents=20, n_active=3, n_samples=200, random_state=0)
    oracle = OracleDictionary().fit(data.X_train, data.Z_train)
    again = pickle.loads(pickle.dumps(oracle))
    np.testing.assert_array_equal(
        again.transform(data.X_ood), oracle.transform(data.X_ood)
    )
    assert clone(oracle).get_params() == oracle.get_params()


# --------------------------------------------------------------------------
# Dictionary updates


def test_lstsq_dictionary_matches_numpy_and_keeps_unused_atoms(rng):
    Z = rng.uniform(size=(50, 5)) * (rng.uniform(size=(50, 5)) < 0.6)
    Z[:, 3] = 0.0  # an atom no sample uses
    X = rng.standard_normal((50, 7))
    fallback = rng.standard_normal((5, 7))
    D = lstsq_dictionary(
        torch.from_numpy(Z.T @ Z), torch.from_numpy(Z.T @ X), torch.from_numpy(fallback)
    ).numpy()
    used = [0, 1, 2, 4]
    expected = np.linalg.lstsq(Z[:, used], X, rcond=None)[0]
    np.testing.assert_allclose(D[used], expected, atol=1e-10)
    np.testing.assert_array_equal(D[3], fallback[3])


def test_lstsq_dictionary_singular_gram_uses_pseudo_inverse(rng):
    z = rng.uniform(size=(30, 1))
    Z = np.hstack([z, z, rng.uniform(size=(30, 1))])  # two identical columns
    X = rng.standard_normal((30, 4))
    D = lstsq_dictionary(torch.from_numpy(Z.T @ Z), torch.from_numpy(Z.T @ X)).numpy()
    expected = np.linalg.pinv(Z) @ X  # the minimum-norm least-squares solution
    np.testing.assert_allclose(D, expected, atol=1e-8)


def test_singular_grams_are_never_factored(rng):
    """Cholesky can succeed on a singular Gram matrix (rounding), with pivots
    that do not show it; such a factor is refused, whatever the codes, and a
    full-rank one is kept. Codes from the benchmark: 10 samples of 12 latents."""
    data = make_compositional(n_latents=20, n_active=3, n_samples=400, random_state=0)
    Z = data.Z_train[:10]
    Z = Z[:, Z.sum(axis=0) > 0]
    assert np.linalg.matrix_rank(Z) < Z.shape[1]
    with pytest.warns(UserWarning, match="linearly dependent"):
        oracle = OracleDictionary().fit(data.X_train[:10], Z)
    np.testing.assert_allclose(
        oracle.components_, np.linalg.pinv(Z) @ data.X_train[:10], atol=1e-8
    )
    for _ in range(300):
        n = int(rng.integers(3, 40))
        codes = rng.uniform(size=(n, n + int(rng.integers(1, 10))))
        codes *= rng.uniform(size=codes.shape) < rng.uniform(0.1, 0.6)
        codes = codes[:, codes.sum(axis=0) > 0]
        if codes.shape[1] > n:  # more latents than samples: singular
            assert _well_posed_cholesky(torch.from_numpy(codes.T @ codes)) is None
        tall = codes.T[: max(1, n // 2)].T  # fewer latents than samples
        if np.linalg.matrix_rank(tall) == tall.shape[1]:
            assert _well_posed_cholesky(torch.from_numpy(tall.T @ tall)) is not None


@pytest.mark.parametrize("units", [1e-8, 1e8])
def test_oracle_recovers_atoms_of_a_concept_labelled_in_other_units(units, rng):
    # Judged singular on Z^T Z itself, whose diagonal one column in 1e-8 ths
    # stretches: the pseudo-inverse then dropped that concept (an atom of norm
    # 5e-9 for 1e8) and moved the others by 21 %, or every atom for 1e8, and
    # warned that the columns were linearly dependent.
    data = make_compositional(n_latents=20, n_active=3, n_samples=400, random_state=0)
    Z = data.Z_train.copy()
    Z[:, 3] *= units
    expected = data.dictionary.copy()
    expected[3] /= units  # X = Z @ expected exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        oracle = OracleDictionary().fit(data.X_train, Z)
        half = len(Z) // 2
        stream = OracleDictionary().partial_fit(data.X_train[:half], Z[:half])
        stream.partial_fit(data.X_train[half:], Z[half:])
    for fitted in (oracle, stream):
        error = np.linalg.norm(fitted.components_ - expected, axis=1)
        assert np.max(error / np.linalg.norm(expected, axis=1)) < 1e-12
    # A singular matrix stays singular whatever its columns' units.
    z = rng.uniform(size=(30, 1))
    dependent = np.hstack([z, 1e8 * z, rng.uniform(size=(30, 1)) * 1e-8])
    gram = torch.from_numpy(dependent.T @ dependent)
    assert _well_posed_cholesky(gram) is None


def test_block_coordinate_update_solves_each_atom_on_the_sphere(rng):
    D0 = random_dictionary(rng, 6, 5)
    Z = rng.uniform(size=(40, 6)) * (rng.uniform(size=(40, 6)) < 0.5)
    X = Z @ random_dictionary(rng, 6, 5) + 0.05 * rng.standard_normal((40, 5))
    A, B = torch.from_numpy(Z.T @ Z), torch.from_numpy(Z.T @ X)
    D1 = block_coordinate_update(torch.from_numpy(D0), A, B).numpy()
    np.testing.assert_allclose(np.linalg.norm(D1, axis=1), 1.0)
    # The sweep does not increase the reconstruction error of these codes ...
    assert np.linalg.norm(X - Z @ D1) <= np.linalg.norm(X - Z @ D0) + 1e-12
    # ... and the last atom is the exact minimiser over the unit sphere with the
    # others fixed: better than any of many random unit vectors.
    others = X - Z[:, :5] @ D1[:5]
    candidates = rng.standard_normal((2000, 5))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    errors = ((others[None] - Z[None, :, 5:] * candidates[:, None]) ** 2).sum(
        axis=(1, 2)
    )
    best = ((others - np.outer(Z[:, 5], D1[5])) ** 2).sum()
    assert best <= errors.min() + 1e-12


@pytest.mark.parametrize("scale", [1e-10, 1e10, 1e15])
def test_block_coordinate_update_is_scale_free_in_float32(scale, rng):
    # Statistics of data at scale s are s^2 times those at scale 1: the atoms
    # must not change (squaring v overflowed float32 and every atom came back
    # zero, or lost precision below 1e-10).
    D0 = torch.from_numpy(random_dictionary(rng, 6, 5)).float()
    Z = rng.uniform(size=(40, 6)) * (rng.uniform(size=(40, 6)) < 0.5)
    X = Z @ random_dictionary(rng, 6, 5)
    A, B = (torch.from_numpy(M).float() for M in (Z.T @ Z, Z.T @ X))
    expected = block_coordinate_update(D0, A, B)
    scaled = block_coordinate_update(D0, A * scale**2, B * scale**2)
    torch.testing.assert_close(scaled, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Learning


def test_objective_decreases_every_least_squares_round(rng):
    D = random_dictionary(rng, 20, 10)
    X = torch.from_numpy(sparse_codes(rng, 300, 20, 3) @ D)
    init = torch.from_numpy(random_dictionary(rng, 20, 10))
    result = learn_dictionary(
        X, 20, alpha=0.05, positive=True, init=init, dict_max_iter=25, tol=1e-12
    )
    objective = np.array([h["objective"] for h in result.history])
    assert len(objective) == 25
    assert np.all(np.diff(objective) <= 1e-12 * objective[:-1])
    assert objective[-1] < 0.75 * objective[0]
    # The recorded objective is F at the round's codes, recomputed here for the
    # returned (last) codes and atoms -- which cannot be above the last record.
    final = lasso_objective(X, result.codes, result.components, 0.05).mean()
    assert final <= objective[-1] + 1e-12


def test_rounds_explore_without_init_and_refine_with_one(easy):
    # From atoms drawn from the data every round explores (the safeguarded,
    # monotone refinement of test_objective_decreases_every_least_squares_round
    # moves atoms away from the truth); a given init only refines.
    coder = FISTACoder(
        n_components=50, positive=True, dict_max_iter=40, tol=1e-12, random_state=0
    ).fit(easy.X_train)
    history = coder.history_
    assert coder.n_iter_ == len(history) == 40
    assert all(h["exploring"] for h in history)
    # At most three atoms per feature: 8 plain FISTA iterations a round.
    assert all(h["fista_iter"] == 8 and h["coding_tol"] is None for h in history)
    assert history[-1]["alpha"] == coder.alpha
    refined = FISTACoder(
        init=coder.components_, positive=True, dict_max_iter=10, tol=1e-12
    ).fit(easy.X_train)
    settled = [h["objective"] for h in refined.history_]
    assert not any(h["exploring"] for h in refined.history_)
    assert np.all(np.diff(settled) <= 1e-12 * np.abs(settled[:-1]))


def test_learning_stops_on_tol_once_alpha_is_reached(easy):
    # The rounds of the continuation never stop learning; after them, the
    # first round whose relative dictionary change is at most tol does.
    tol = 1e-2
    coder = FISTACoder(
        n_components=50, positive=True, dict_max_iter=200, tol=tol, random_state=0
    ).fit(easy.X_train)
    history = coder.history_
    assert len(history) < 200
    assert history[-1]["alpha"] == coder.alpha
    assert history[-1]["dictionary_change"] <= tol
    assert all(
        h["dictionary_change"] > tol for h in history[:-1] if h["alpha"] == coder.alpha
    )


def test_overcomplete_dictionaries_take_inexact_rounds_between_exploring_ones():
    # More than 3 atoms per feature and at least 110 rounds: the rounds
    # between the first 60 (at 1.5 alpha after the continuation) and the last
    # 30 are the paper's inexact alternation (10 plain FISTA iterations, alpha
    # fixed, no resampling). With fewer than 20 rounds left between them
    # every round explores, the first half at 1.5 alpha.
    data = make_compositional(
        n_latents=40, n_active=2, n_features=10, n_samples=2000, random_state=0
    )
    coder = FISTACoder(
        n_components=40, positive=True, dict_max_iter=170, tol=1e-12, random_state=0
    ).fit(data.X_train)
    history = coder.history_
    assert len(history) == 170
    assert [h["inexact"] for h in history] == [False] * 60 + [True] * 80 + [False] * 30
    assert all(h["exploring"] for h in history)
    assert history[0]["alpha"] > 1.5 * coder.alpha
    assert all(h["alpha"] == 1.5 * coder.alpha for h in history[4:60])
    inexact = history[60:140]
    assert all(h["fista_iter"] == 10 and h["coding_tol"] is None for h in inexact)
    # The other rounds are solved to a duality gap, which they record: at most
    # 0.1 with these 10 features (looser codes lose atoms below 40 features).
    assert all(0 < h["coding_tol"] <= 0.1 for h in history[:60] + history[140:])
    assert all(h["n_resampled"] == 0 for h in inexact)
    assert all(h["alpha"] == coder.alpha for h in inexact + history[140:])
    # A floor, not a figure: the path of a 170-round search depends on the
    # CPU's rounding (seed 0: 0.979 on an Intel Xeon with MKL's AVX-512
    # kernels, 0.967 with its AVX2 ones; 0.875-0.90 before duplicates were
    # kept).
    assert dictionary_similarity(data.dictionary, coder) >= 0.82
    short = FISTACoder(
        n_components=40, positive=True, dict_max_iter=109, tol=1e-12, random_state=0
    ).fit(data.X_train)
    assert not any(h["inexact"] for h in short.history_)
    assert all(h["alpha"] == 1.5 * coder.alpha for h in short.history_[4:54])
    assert all(h["alpha"] == coder.alpha for h in short.history_[54:])
    # More atoms than samples: the inexact rounds' least squares would be
    # singular, so every round explores.
    wide = FISTACoder(
        n_components=40, positive=True, dict_max_iter=110, tol=1e-12, random_state=0
    ).fit(data.X_train[:30])
    assert len(wide.history_) == 110
    assert not any(h["inexact"] for h in wide.history_)


@pytest.mark.parametrize(
    ("n_components", "n_features", "bound"),
    [
        (100, 47, 0.7),  # at most 3 atoms per feature
        (40, 10, 0.7),  # random atoms in 10 dimensions are often closer
        (500, 79, 0.5),
        (1000, 93, 0.5),
        (16384, 768, 0.5),
    ],
)
def test_coherence_bound(n_components, n_features, bound):
    assert _coherence_bound(n_components, n_features) == pytest.approx(bound)
    # Between the clips it is sqrt(2 ln K / d): 200 atoms in 30 features.
    assert _coherence_bound(200, 30) == pytest.approx(np.sqrt(2 * np.log(200) / 30))


def test_coherent_atoms_marks_the_less_used_of_a_close_pair():
    atoms = torch.tensor(
        [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    codes = torch.tensor([[1.0, 0.5, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    # |cosine| 0.6 between atoms 0 and 1; atom 1 is the less used.
    expected = torch.tensor([False, True, False])
    assert torch.equal(_coherent_atoms(atoms, codes, 0.5)[0], expected)
    assert not _coherent_atoms(atoms, codes, 0.7)[0].any()


def _close_pair():
    """Atoms 0 and 1 at |cosine| 0.8, atom 1 the less used; atom 2 apart."""
    atoms = torch.tensor(
        [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    codes = torch.tensor([[1.0, 0.5, 1.0]], dtype=torch.float64)
    return atoms, codes, torch.tensor([False, True, False])


def _kept_pair(checks=_RETURNS_TO_KEEP + 1):
    """``_close_pair`` and a memory after ``checks`` checks of it.

    Atom 1 is resampled ``_RETURNS_TO_KEEP`` times; after that, the pair is
    kept.
    """
    atoms, codes, pair = _close_pair()
    memory = _DuplicateMemory(atoms)
    for _ in range(checks):
        memory.coherent(atoms, codes, 0.7)
    return atoms, codes, pair, memory


def test_an_atom_resampled_away_and_back_twice_is_kept():
    atoms, codes, pair = _close_pair()
    memory = _DuplicateMemory(atoms)
    for _ in range(_RETURNS_TO_KEEP):
        assert torch.equal(memory.coherent(atoms, codes, 0.7), pair)
    # Back again, in its slot or in another: the data calls for it.
    assert not memory.coherent(atoms, codes, 0.7).any()
    assert bool(memory.kept[0, 1]) and bool(memory.kept[1, 0])
    swapped = atoms[[0, 2, 1]]
    assert not memory.coherent(swapped, codes, 0.7).any()


@pytest.mark.parametrize("seed", [0, 2, 9])
def test_learning_keeps_true_atoms_closer_than_the_coherence_bound(seed):
    # Each of these problems has two true atoms at |cosine| 0.75-0.77, above
    # the bound of 0.7: resampling one of them every third round kept it
    # out of the fit (found at 0.76-0.96) and the change above tol for all
    # 200 rounds.
    data = make_compositional(
        n_latents=50, n_active=3, n_samples=4000, random_state=seed
    )
    D = data.dictionary
    cosine = np.abs(D @ D.T) - np.eye(len(D))
    pair = np.unravel_index(cosine.argmax(), cosine.shape)
    assert cosine[pair] > _coherence_bound(50, D.shape[1])
    coder = FISTACoder(
        n_components=50, positive=True, dict_max_iter=200, tol=1e-2, random_state=seed
    ).fit(data.X_train)
    found = np.abs(coder.components_ @ D[list(pair)].T).max(axis=0)
    assert np.all(found >= 0.95)
    assert len(coder.history_) < 200


def test_an_atom_back_with_its_sign_flipped_is_the_same_atom():
    atoms, codes, _, memory = _kept_pair(_RETURNS_TO_KEEP)
    flipped = atoms.clone()
    flipped[1] = -flipped[1]
    assert not memory.coherent(flipped, codes, 0.7).any()


def test_a_kept_pair_ends_when_one_of_its_atoms_is_replaced_or_moves():
    # Atoms 0 and 1 are kept; then slot 1 holds another atom near atom 0
    # (resampled against a third atom, or moved there): a duplicate of atom
    # 0 that is no kept pair.
    atoms, codes, pair, memory = _kept_pair()
    assert bool(memory.kept[0, 1])
    moved = atoms.clone()
    moved[1] = torch.tensor([0.8, 0.0, 0.6], dtype=torch.float64)
    moved[2] = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    assert abs(float(moved[1] @ atoms[1])) < 0.9
    assert torch.equal(memory.coherent(moved, codes, 0.7), pair)
    assert not memory.kept.any()


def test_records_given_to_a_memory_are_copied():
    atoms, codes, pair, memory = _kept_pair()
    records = memory.records()
    given = [tensor.clone() for tensor in records]
    merged = atoms.clone()
    merged[1] = torch.nn.functional.normalize(torch.tensor([1.0, 0.43, 0.0]), dim=0)
    again = _DuplicateMemory(atoms, records)
    assert torch.equal(again.coherent(merged, codes, 0.7), pair)
    for before, after in zip(given, records, strict=True):
        assert torch.equal(before, after)


def test_records_resampled_once_are_bounded():
    # Atom 1 is resampled twice (its record stays), then 14 other atoms
    # near atom 0, each once: at most 4 records per atom are kept, the
    # oldest of those resampled once going first.
    eye = torch.eye(10, dtype=torch.float64)
    atoms = torch.stack([eye[0], 0.8 * eye[0] + 0.6 * eye[1], eye[2]])
    codes = torch.tensor([[1.0, 0.5, 1.0]], dtype=torch.float64)
    memory = _DuplicateMemory(atoms)
    for _ in range(_RETURNS_TO_KEEP):
        memory.coherent(atoms, codes, 0.7)
    for k in range(3, 10):
        for sign in (1.0, -1.0):
            stray = atoms.clone()
            stray[1] = 0.8 * eye[0] + sign * 0.6 * eye[k]
            assert memory.coherent(stray, codes, 0.7)[1]
    assert len(memory.count) == 4 * len(atoms)
    assert not memory.coherent(atoms, codes, 0.7).any()


def test_another_atom_near_the_same_partner_is_resampled():
    atoms, codes, pair, memory = _kept_pair(_RETURNS_TO_KEEP)
    # At |cosine| 0.75 from atom 0, but far from the atom resampled before.
    other = atoms.clone()
    other[1] = torch.tensor([0.75, -np.sqrt(1 - 0.75**2), 0.0], dtype=torch.float64)
    assert torch.equal(memory.coherent(other, codes, 0.7), pair)
    # Within |cosine| 0.85 of it (and 0.8 of atom 0), short of the 0.9 that
    # makes it the same atom.
    near = atoms.clone()
    turn = (0.85 - 0.64) / 0.36
    near[1] = torch.tensor(
        [0.8, 0.6 * turn, 0.6 * np.sqrt(1 - turn**2)], dtype=torch.float64
    )
    assert float(near[1] @ atoms[1]) == pytest.approx(0.85)
    assert torch.equal(memory.coherent(near, codes, 0.7), pair)


def test_kept_atoms_that_merge_are_resampled():
    atoms, codes, pair, memory = _kept_pair()
    assert bool(memory.kept[0, 1])
    # Closer than _SAME_ATOM: duplicates after all, though near the atom kept.
    merged = atoms.clone()
    merged[1] = torch.nn.functional.normalize(torch.tensor([1.0, 0.43, 0.0]), dim=0)
    assert abs(float(merged[1] @ atoms[1])) > 0.9
    assert 0.9 < float(merged[1] @ atoms[0]) < 0.95
    assert torch.equal(memory.coherent(merged, codes, 0.7), pair)


def test_learning_forgets_the_pairs_of_reinitialised_atoms(monkeypatch, rng):
    # Atoms that no sample uses are re-drawn every round: whatever pair they
    # were kept in no longer exists.
    forgotten = []
    forget = _DuplicateMemory.forget

    def spy(self, replaced):
        forgotten.append(int(replaced.sum()))
        forget(self, replaced)

    monkeypatch.setattr(_DuplicateMemory, "forget", spy)
    X = torch.from_numpy(sparse_codes(rng, 30, 3, 1) @ random_dictionary(rng, 3, 8))
    history = learn_dictionary(X, 40, alpha=0.05, positive=True, dict_max_iter=6)
    unused = [h["n_unused"] for h in history.history if h["n_unused"]]
    assert unused and forgotten == unused
    forgotten.clear()
    _, _, record = online_dictionary_update(
        X, history.components, None, alpha=0.05, positive=True
    )
    assert record["n_unused"] and forgotten == [record["n_unused"]]


def test_a_replaced_atom_loses_its_kept_pairs():
    _, _, pair, memory = _kept_pair()
    memory.forget(pair)
    assert not memory.kept.any()


def test_learns_easy_dictionary(easy):
    coder = FISTACoder(
        n_components=50, positive=True, dict_max_iter=40, tol=1e-4, random_state=0
    ).fit(easy.X_train)
    assert dictionary_similarity(easy.dictionary, coder) >= 0.95
    np.testing.assert_allclose(np.linalg.norm(coder.components_, axis=1), 1.0)
    np.testing.assert_array_equal(coder.intercept_, 0.0)
    codes = coder.transform(easy.X_ood)
    assert mcc_score(easy.Z_ood, codes, top_variance=True) >= 0.9
    np.testing.assert_allclose(
        coder.fit_transform(easy.X_train), coder.transform(easy.X_train)
    )


def test_partial_fit_reaches_fit_quality(easy):
    fitted = FISTACoder(
        n_components=50, positive=True, dict_max_iter=40, tol=1e-4, random_state=0
    ).fit(easy.X_train)
    online = FISTACoder(n_components=50, positive=True, tol=1e-4, random_state=0)
    X = easy.X_train
    for _ in range(6):
        for start in range(0, X.shape[0], 100):
            online.partial_fit(X[start : start + 100])
    assert online.n_iter_ == len(online.history_) == 6 * 20
    assert {"objective", "dictionary_change", "n_unused"} <= set(online.history_[0])
    # The tolerance partial_fit's docstring states for batches of 100 (the
    # largest shortfall over seeds 0-5 of this problem: 0.077); 0.02-0.06
    # here, depending on the CPU (benchmarks/RESULTS.md).
    assert dictionary_similarity(easy.dictionary, online) >= (
        dictionary_similarity(easy.dictionary, fitted) - 0.08
    )


@pytest.fixture(scope="module")
def small():
    """n_latents=20, k=3, 200 training samples: a fit takes a fraction of a second."""
    return make_compositional(n_latents=20, n_active=3, n_samples=400, random_state=0)


def test_partial_fit_normalises_init_and_keeps_its_width(small):
    X = small.X_train
    stream = FISTACoder(init=5.0 * small.dictionary, positive=True)
    stream.partial_fit(X[:4])
    np.testing.assert_allclose(np.linalg.norm(stream.components_, axis=1), 1.0)
    stream.set_params(n_components=10)
    with pytest.raises(ValueError, match="continues the 20 learned atoms"):
        stream.partial_fit(X[:4])
    assert stream.components_.shape == (20, X.shape[1])


def test_a_stream_started_on_fewer_rows_than_atoms_warns(small):
    # The atoms the first chunk cannot supply start as random directions,
    # which the stream keeps where samples use them (dictionary similarity
    # 0.69-0.76 instead of 0.90-0.94 from a first chunk of one row).
    X = small.X_train
    with pytest.warns(UserWarning, match="first chunk has 4 rows for 20 atoms: 16"):
        FISTACoder(n_components=20, random_state=0).partial_fit(X[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = FISTACoder(n_components=20, random_state=0).partial_fit(X[:20])
        stream.partial_fit(X[20:24])  # later chunks may be small
        # Given atoms need no rows.
        FISTACoder(init=small.dictionary).partial_fit(X[:4])


def test_oracle_warns_about_class_labels_in_a_pipeline(small):
    # A classifier pipeline hands its labels to every step: labels 0-19 made
    # one atom scaled by the class index, silently.
    pd = pytest.importorskip("pandas")
    X = small.X_train
    labels = np.arange(len(X)) % 20
    for y in (
        labels,
        labels.astype(float),
        torch.from_numpy(labels),
        pd.Series(labels),
    ):
        with pytest.warns(UserWarning, match="20 whole numbers, like class labels"):
            OracleDictionary().fit(X, y)
    pipe = make_pipeline(FISTACoder(OracleDictionary()), LogisticRegression())
    with pytest.warns(UserWarning, match="one-hot encode the labels"):
        pipe.fit(X, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OracleDictionary().fit(X, labels % 2)  # one concept's presence
        OracleDictionary().fit(X, small.Z_train[:, 0])  # one latent's codes
        OracleDictionary().fit(X, small.Z_train)


def test_provider_errors_name_the_parameter_and_the_way_out(small):
    # A fitted oracle passed as it is failed with "requires y", and a frozen
    # unfitted estimator with "This SparseAutoencoder instance is not fitted
    # yet. Call 'fit'", on the estimator the user was fitting.
    X = small.X_train
    oracle = OracleDictionary().fit(X, small.Z_train)
    for coder, name in (
        (FISTACoder(oracle), "dictionary"),
        (FISTACoder(n_components=20, init=oracle), "init"),
        (SparseAutoencoder(20, decoder=oracle), "decoder"),
    ):
        with pytest.raises(ValueError, match="requires y") as raised:
            coder.fit(X)
        note = f"{name}, a fitted OracleDictionary, is cloned and fitted again"
        assert any(note in text for text in raised.value.__notes__)
        assert "FrozenEstimator" in raised.value.__notes__[-1]
    unfitted = FrozenEstimator(SparseAutoencoder(20))
    for coder, name in (
        (FISTACoder(unfitted), "dictionary"),
        (FISTACoder(n_components=20, init=unfitted), "init"),
        (FISTACoder(small.dictionary, init=unfitted), "init"),
    ):
        message = f"{name}, a FrozenEstimator of SparseAutoencoder, is not fitted"
        with pytest.raises(NotFittedError, match=message):
            coder.fit(X)


def test_a_first_chunk_of_repeated_rows_warns_about_its_random_atoms(small):
    # Counted in rows, a chunk of 60 rows, two of them distinct and ten zero,
    # started 18 of 20 atoms as random directions without a warning.
    X = small.X_train
    chunk = np.vstack([np.repeat(X[:2], 25, axis=0), np.zeros((10, X.shape[1]))])
    match = "first chunk has 2 distinct non-zero rows for 20 atoms: 18"
    with pytest.warns(UserWarning, match=match):
        FISTACoder(n_components=20, random_state=0).partial_fit(chunk)


def test_learned_stream_after_a_failed_fit_keeps_no_concept_names(small):
    # A failed fit forgets the public attributes only: the private names of
    # an earlier fit on an oracle's atoms then named a learned stream's codes.
    pd = pytest.importorskip("pandas")
    X = small.X_train
    y = pd.DataFrame(small.Z_train, columns=[f"concept_{i}" for i in range(20)])
    oracle = OracleDictionary().fit(X, y)
    coder = FISTACoder(FrozenEstimator(oracle)).fit(X)
    assert coder.get_feature_names_out()[0] == "concept_0"
    coder.set_params(dictionary=None, n_components=20, random_state=0)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        coder.fit(bad)
    coder.partial_fit(X)
    assert list(coder.get_feature_names_out()) == [f"fistacoder{i}" for i in range(20)]


@pytest.mark.filterwarnings("ignore:No sample uses any learned atom")
def test_fit_counts_resampled_duplicates_apart_from_unused_atoms(small):
    # Atoms just re-initialised as unused (zero codes: the less used of any
    # close pair) were counted again as resampled duplicates: 28 of 20 atoms.
    for X, k in ((small.X_train[:30], 100), (small.X_train * 1e-2, 20)):
        coder = FISTACoder(n_components=k, random_state=0, dict_max_iter=12, tol=0)
        coder.fit(X)
        assert any(record["n_resampled"] for record in coder.history_) == (k == 100)
        for record in coder.history_:
            assert record["n_unused"] + record["n_resampled"] <= k


def test_fit_warns_when_alpha_leaves_every_code_zero(small):
    # The rounds stopped after four, with rows of X as atoms and every code
    # zero, without a word.
    X = small.X_train * 1e-2
    with pytest.warns(UserWarning, match="No sample uses any learned atom") as caught:
        coder = FISTACoder(n_components=20, random_state=0).fit(X)
    largest = np.abs(X @ coder.components_.T).max()
    assert f"(at most {largest:.3g})" in str(caught[0].message)
    assert not coder.transform(X).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FISTACoder(n_components=20, alpha=1e-3, random_state=0).fit(X)


def test_no_code_warning_reads_only_positive_correlations_for_positive_codes():
    # Non-negative codes are all zero when no correlation exceeds +alpha,
    # however far below -alpha the others are.
    X = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    atoms = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    with pytest.warns(UserWarning, match="No sample uses any learned atom"):
        _warn_if_no_code(X, atoms, alpha=0.5, positive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_no_code(X, atoms, alpha=0.5, positive=False)


def test_stream_counts_every_atom_no_sample_used_as_unused(small):
    # Never-used atoms close to another were counted as resampled duplicates:
    # with every code zero (alpha above every correlation), n_unused read 10,
    # 11, 12, 13 of 20 atoms.
    stream = FISTACoder(n_components=20, random_state=0)
    for start in range(0, 200, 50):
        stream.partial_fit(small.X_train[start : start + 50] * 1e-2)
    assert [record["n_unused"] for record in stream.history_] == [20] * 4
    assert all(record["n_resampled"] == 0 for record in stream.history_)


def test_learning_codes_are_not_finished_in_float64(small, monkeypatch):
    """Learning rounds code to loose tolerances: no float64 finish (a fit at
    alpha=0.01 finished thousands of rows in float64 and ran 30 % longer)."""
    dtypes = []
    encode = _driver._encode

    def spy(X, *args, **kwargs):
        dtypes.append(X.dtype)
        return encode(X, *args, **kwargs)

    monkeypatch.setattr(_driver, "_encode", spy)
    X = small.X_train.astype(np.float32)
    coder = FISTACoder(n_components=20, alpha=0.01, dict_max_iter=5, random_state=0)
    coder.fit(X).partial_fit(X[:50])
    assert dtypes and set(dtypes) == {torch.float32}


def test_partial_fit_continues_a_fit(small):
    X = small.X_train
    fitted = FISTACoder(
        n_components=20, positive=True, dict_max_iter=50, random_state=0
    ).fit(X)
    before = dictionary_similarity(small.dictionary, fitted)
    stream = clone(fitted).fit(X).partial_fit(X[:4])
    # Four samples use a handful of atoms; the others keep the fit's
    # statistics and are not re-initialised from those four samples.
    record = stream.history_[-1]
    assert record["n_unused"] == record["n_resampled"] == 0
    assert len(stream.history_) == stream.n_iter_ == 51
    assert dictionary_similarity(small.dictionary, stream) >= before - 0.02
    for start in range(4, 200, 50):
        stream.partial_fit(X[start : start + 50])
    assert dictionary_similarity(small.dictionary, stream) >= before - 0.02


def test_partial_fit_from_init_refines_without_exploring(small):
    # Started at the true atoms, a stream keeps them: an atom no sample of
    # the batch uses stays where it is, and true atoms closer than the
    # exploration's coherence bound (0.74 here) are not taken for duplicates.
    truth = small.dictionary
    cosine = np.abs(truth @ truth.T) - np.eye(len(truth))
    assert cosine.max() > 0.7
    stream = FISTACoder(positive=True, init=truth, random_state=0)
    stream.partial_fit(small.X_train[:4])
    codes = FISTACoder(truth, positive=True).fit_transform(small.X_train[:4])
    used = np.abs(codes).sum(axis=0) > 0
    # (Normalised again as init: equal up to rounding.)
    np.testing.assert_allclose(
        stream.components_[~used], truth[~used], rtol=0, atol=1e-15
    )
    assert stream.history_[0]["n_unused"] == int((~used).sum())
    for start in range(4, 200, 50):
        stream.partial_fit(small.X_train[start : start + 50])
        assert stream.history_[-1]["n_resampled"] == 0
    # The first four samples set the atoms they use alone (Mairal et al.'s
    # statistics start at zero); later batches bring those back.
    assert dictionary_similarity(truth, stream) > 0.9


def test_fit_statistics_enter_a_stream_with_a_streams_weight(rng):
    # A fit's per-sample averages stand for its samples streamed in batches
    # like the next one: m identical batches streamed, or fitted at once, must
    # leave the same running statistics after one more batch.
    D = torch.from_numpy(random_dictionary(rng, 6, 5))
    X = torch.from_numpy(sparse_codes(rng, 8, 6, 2)) @ D
    m = 5
    streamed = None
    for _ in range(m):
        # The same atoms every time, so that every batch has the same codes.
        _, streamed, _ = online_dictionary_update(X, D, streamed, explore=False)
    codes = fista_encode(X, D, alpha=0.1).codes
    fitted = batch_statistics(codes.repeat(m, 1), X.repeat(m, 1))
    _, after_stream, _ = online_dictionary_update(X, D, streamed, explore=False)
    _, after_fit, _ = online_dictionary_update(X, D, fitted, explore=False)
    assert after_stream["n_steps"] == after_fit["n_steps"] == m + 1
    for key in ("A", "B"):
        torch.testing.assert_close(after_fit[key], after_stream[key])


def test_fit_discards_an_earlier_stream(small):
    X = small.X_train
    params = dict(n_components=20, positive=True, dict_max_iter=5, random_state=0)
    streamed = FISTACoder(**params).partial_fit(X[:50]).partial_fit(X[50:100])
    streamed.fit(X)
    fresh = FISTACoder(**params).fit(X)
    np.testing.assert_array_equal(streamed.components_, fresh.components_)
    # The next batch continues the fit, as it does the fresh one's.
    streamed.partial_fit(X[:2])
    fresh.partial_fit(X[:2])
    np.testing.assert_array_equal(streamed.components_, fresh.components_)
    assert streamed.history_ == fresh.history_


def test_fit_with_a_given_dictionary_forgets_learning(small):
    coder = FISTACoder(n_components=20, positive=True, dict_max_iter=3).fit(
        small.X_train
    )
    assert len(coder.history_) == 3
    coder.set_params(dictionary=small.dictionary).fit(small.X_train)
    assert not hasattr(coder, "history_")
    assert not hasattr(coder, "_online_statistics")


def test_online_record_counts_unused_and_duplicate_atoms_apart():
    # Atoms 0 and 1 are near-duplicates (cosine 0.99); atom 2 points away
    # from every sample. A stream from drawn atoms replaces both kinds and
    # counts each once.
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(size=(40, 4)))
    atoms = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [1.0, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]],
        dtype=torch.float64,
    )
    atoms = torch.nn.functional.normalize(atoms, dim=1)
    _, _, record = online_dictionary_update(X, atoms, None, alpha=0.01, positive=True)
    assert (record["n_unused"], record["n_resampled"]) == (1, 1)
    _, _, kept = online_dictionary_update(
        X, atoms, None, alpha=0.01, positive=True, explore=False
    )
    assert (kept["n_unused"], kept["n_resampled"]) == (1, 0)


def test_a_stream_carries_its_resampled_atoms_without_changing_them_in_place():
    # The memory of an exploring stream travels in its statistics (atoms 0
    # and 1 are duplicates, at |cosine| 0.99: resampled every time, counted
    # on); a step works on a copy, so the statistics it was given stay as
    # they were.
    X, atoms = near_duplicate_stream()
    _, first, record = online_dictionary_update(X, atoms, None, alpha=0.01)
    assert record["n_resampled"] == 1
    memory = first["duplicates"]
    state = (memory.replaced, memory.partners, memory.count, memory.kept)
    before = [tensor.clone() for tensor in state]
    assert memory.count.tolist() == [1]
    _, second, record = online_dictionary_update(X, atoms, first, alpha=0.01)
    assert record["n_resampled"] == 1
    assert second["duplicates"].count.tolist() == [2]
    for kept, now in zip(before, state, strict=True):
        assert torch.equal(kept, now)
    # A float64 stream's records serve float32 atoms (counted on: [3]).
    carried = {key: second[key].float() for key in ("A", "B")}
    _, third, _ = online_dictionary_update(
        X.float(),
        atoms.float(),
        {**second, **carried},
        alpha=0.01,
    )
    assert third["duplicates"].count.tolist() == [3]
    assert third["duplicates"].replaced.dtype == torch.float32
    _, refined, _ = online_dictionary_update(X, atoms, None, explore=False)
    assert "duplicates" not in refined


@pytest.mark.parametrize("n_active", [2, 40], ids=["sparse-operand", "dense-operand"])
def test_one_operand_serves_a_rounds_products(rng, n_active):
    # The operand is converted once per round and rescaled with the codes;
    # the products must be those of the codes themselves, bit for bit.
    D = torch.from_numpy(random_dictionary(rng, 100, 20))
    Z = torch.from_numpy(sparse_codes(rng, 60, 100, n_active))
    X = Z @ D + 0.01 * torch.from_numpy(rng.standard_normal((60, 20)))
    operand = _operand(Z)
    assert operand.is_sparse == (n_active == 2)
    norms = torch.from_numpy(rng.uniform(0.5, 2.0, 100))
    scaled, scaled_operand = _rescaled(Z, operand, norms)
    torch.testing.assert_close(scaled, Z * norms, rtol=0, atol=0)
    torch.testing.assert_close(scaled_operand.to_dense(), Z * norms, rtol=0, atol=0)
    for exploring in (True, False):
        objective = None if exploring else torch.full((60,), torch.inf)
        given = _lstsq_step(X, Z, D, 0.1, objective, 0.5, D, operand=operand)
        converted = _lstsq_step(X, Z, D, 0.1, objective, 0.5, D)
        for a, b in zip(given, converted, strict=True):
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unused_atoms_are_reinitialised_from_the_worst_residuals(rng):
    # Data in the span of the first 4 coordinates; one starting atom points
    # away from every sample, so no non-negative code uses it.
    D = np.zeros((4, 6))
    D[:, :4] = random_dictionary(rng, 4, 4)
    X = sparse_codes(rng, 200, 4, 2) @ D
    init = np.vstack([D[:3], -X.mean(axis=0) / np.linalg.norm(X.mean(axis=0))])
    coders = [
        FISTACoder(
            n_components=4, positive=True, init=init, dict_max_iter=r, random_state=0
        ).fit(X)
        for r in (1, 10)
    ]
    assert coders[0].history_[0]["n_unused"] == 1
    # Right after the first round (no least-squares update follows), the
    # unused atom is a normalised residual: inside the data's span, unlike a
    # random atom.
    replaced = coders[0].components_[3]
    np.testing.assert_allclose(replaced[4:], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(replaced), 1.0)
    assert dictionary_similarity(D, coders[1]) > 0.99
    # The residuals of the worst-reconstructed samples come first.
    residual = torch.tensor([[0.0, 1.0], [3.0, 4.0], [0.0, 0.0]])
    atoms = _worst_residuals(residual, 2, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(atoms[0], [0.6, 0.8])
    np.testing.assert_allclose(atoms[1], [0.0, 1.0])


def test_refinement_stops_with_atoms_the_data_does_not_use():
    # 200 atoms for 60 samples: some atoms stay unused after every
    # re-initialisation. They are re-drawn each round, but learning still
    # stops once the atoms in use settle.
    data = make_compositional(20, 3, n_samples=120, random_state=0)
    last_changes = []
    for seed in (1, 2):
        init = np.random.default_rng(seed).standard_normal((200, data.X_train.shape[1]))
        coder = FISTACoder(
            n_components=200, init=init, tol=1e-4, dict_max_iter=300, random_state=seed
        ).fit(data.X_train)
        history = coder.history_
        # n_iter_ counts the rounds run, not the rounds allowed.
        assert coder.n_iter_ == len(history) < 300
        assert history[-1]["n_unused"] > 0
        last_changes.append(history[-1]["dictionary_change"])
    # The whole dictionary still moves: the stop is due to the rule, not tol.
    # (Re-drawn atoms can land where they were, under another CPU's rounding:
    # seed 0 did with torch's kernels without SIMD. Hence two fits.)
    assert max(last_changes) > 1e-2


@pytest.mark.parametrize(
    "estimator, consequence",
    [
        (FISTACoder(n_components=3, dict_max_iter=2), "the learned atoms are random"),
        (SparseAutoencoder(3, max_epochs=1), "every latent stays dead"),
    ],
    ids=["dictionary learning", "SAE"],
)
def test_all_zero_training_data_is_warned_about(estimator, consequence):
    # What a normalisation that overflowed in float16 leaves: it passed every
    # check and gave random atoms or a dead SAE, silently.
    with pytest.warns(UserWarning, match=f"X is all zeros: {consequence}"):
        estimator.fit(np.zeros((50, 4)))
    X = np.zeros((50, 4))
    X[7, 2] = 1e-30
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(X)
    assert not [w for w in caught if "all zeros" in str(w.message)]


def test_a_stream_starting_on_an_all_zero_batch_is_warned_about():
    # partial_fit draws its starting atoms from its first batch, as fit from
    # X, but only fit warned that zeros leave them random.
    coder = FISTACoder(n_components=3, random_state=0)
    with (
        pytest.warns(UserWarning, match="X is all zeros: the stream's starting"),
        pytest.warns(UserWarning, match="0 distinct non-zero rows for 3 atoms"),
    ):
        coder.partial_fit(np.zeros((50, 4)))
    X = np.random.default_rng(0).standard_normal((50, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coder.partial_fit(np.zeros((50, 4)))  # later batches start nothing
        FISTACoder(n_components=3, init=X[:3]).partial_fit(np.zeros((50, 4)))
    assert not [w for w in caught if "all zeros" in str(w.message)]


def test_codes_given_as_init_when_learning_say_what_init_is_there():
    # FISTACoder(n_components=8, init=codes) read the codes as atoms and
    # spoke of atoms of the wrong dimension only.
    X = np.random.default_rng(0).uniform(size=(30, 6))
    codes = np.random.default_rng(1).uniform(size=(30, 8))
    with pytest.raises(ValueError, match="init is the dictionary that learning starts"):
        FISTACoder(n_components=8, init=codes).fit(X)


def test_zero_samples_do_not_become_atoms():
    # Most samples zero (dead units): every drawn zero sample is replaced by
    # a Gaussian atom, so no atom is zero and learning runs.
    X = np.zeros((100, 6))
    X[:10] = np.random.default_rng(0).uniform(size=(10, 6))
    atoms = initial_dictionary(
        torch.from_numpy(X), 30, torch.Generator().manual_seed(0)
    )
    np.testing.assert_allclose(atoms.norm(dim=1), 1.0)
    for seed in range(5):
        coder = FISTACoder(n_components=2, dict_max_iter=3, random_state=seed).fit(X)
        np.testing.assert_allclose(np.linalg.norm(coder.components_, axis=1), 1.0)


def test_repeated_rows_start_one_atom_each():
    # Real activations repeat rows (a sequence's first token, padding): a
    # quarter of the rows one sample started a quarter of the atoms as one
    # direction. Repeats are replaced by further rows, in the order drawn.
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(size=(200, 8)))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    expected = X[order[:40]] / X[order[:40]].norm(dim=1, keepdim=True)
    # Without repeats, the atoms are the first rows drawn, bit for bit.
    torch.testing.assert_close(
        initial_dictionary(X, 40, generator), expected, rtol=0, atol=0
    )
    X[50:150] = X[0]
    atoms = initial_dictionary(X, 40, torch.Generator().manual_seed(0))
    assert len(torch.unique(atoms, dim=0)) == 40
    # Every atom is a row of X (101 distinct rows for 40 atoms).
    from_rows = torch.cdist(atoms, X / X.norm(dim=1, keepdim=True)).amin(dim=1)
    assert (from_rows < 1e-6).all()
    # Most rows one repeated row (padding): eight rounds of replacements do
    # not clear the repeats, and the last round's fresh rows are checked too
    # (the previous round's mask was applied to them, an IndexError).
    for seed in range(20):
        padded = torch.cat([X[:20], X[0].expand(800, 8)])
        atoms = initial_dictionary(padded, 40, torch.Generator().manual_seed(seed))
        assert len(torch.unique(atoms, dim=0)) == 40
    padded = np.vstack(
        [rng.standard_normal((20, 32)), np.tile(5 * rng.standard_normal(32), (800, 1))]
    )
    assert FISTACoder(n_components=40, random_state=0).fit(
        padded
    ).components_.shape == (40, 32)
    # With fewer distinct rows than atoms, Gaussian atoms fill in.
    X[:] = X[0]
    atoms = initial_dictionary(X, 5, torch.Generator().manual_seed(0))
    assert len(torch.unique(atoms, dim=0)) == 5
    np.testing.assert_allclose(atoms.norm(dim=1), 1.0)
    # Tied norms (rows x and -x) keep the order of topk over the atoms
    # asked for: the wider list of candidates orders ties otherwise.
    A = torch.from_numpy(rng.standard_normal((30, 6)))
    tied = torch.cat([A, -A])
    sq = (tied * tied).sum(dim=1)
    expected = tied[torch.topk(sq, 7).indices]
    expected = expected / expected.norm(dim=1, keepdim=True)
    atoms = _worst_residuals(tied, 7, torch.Generator().manual_seed(0))
    torch.testing.assert_close(atoms, expected, rtol=0, atol=0)
    # Repeated residuals give one atom each as well.
    residual = torch.tensor([[3.0, 4.0], [3.0, 4.0], [0.0, 1.0], [0.0, 0.0]])
    atoms = _worst_residuals(residual, 2, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(atoms, [[0.6, 0.8], [0.0, 1.0]])


def test_repeated_rows_do_not_spoil_the_learned_dictionary():
    # 300 atoms in 128 features with 500 copies of one row among 2,000:
    # similarity 0.904 / 0.853 (seeds 0 / 1) when repeats started atoms,
    # 0.987 / 0.995 now (0.999 without the copies). A smaller problem here.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 60, 32)
    X = (np.abs(rng.standard_normal((600, 60))) * (rng.random((600, 60)) < 0.05)) @ D
    X[50:200] = X[200]
    coder = FISTACoder(n_components=60, positive=True, random_state=0).fit(X)
    assert dictionary_similarity(D, coder) > 0.97


@pytest.mark.parametrize("positive", [False, True])
def test_learning_with_alpha_beyond_float32_gives_zero_codes(positive):
    # The search computes in float32; a penalty it cannot hold codes
    # everything to zero, as with a given dictionary, instead of failing in
    # torch.clamp.
    X = np.random.default_rng(0).standard_normal((60, 5))
    with pytest.warns(UserWarning, match="No sample uses any learned atom"):
        coder = FISTACoder(
            n_components=4, alpha=1e39, positive=positive, dict_max_iter=3
        ).fit(X)
    np.testing.assert_array_equal(coder.transform(X), 0.0)
    np.testing.assert_allclose(np.linalg.norm(coder.components_, axis=1), 1.0)
    assert coder.history_[-1]["n_unused"] == 4


def test_init_dictionary_and_provider(easy):
    X = easy.X_train
    truth = OracleDictionary().fit(X, easy.Z_train)
    for init in (
        easy.dictionary,
        FrozenEstimator(truth),
        OracleDictionary(easy.dictionary),
    ):
        coder = FISTACoder(
            positive=True, init=init, dict_max_iter=20, tol=1e-3, random_state=0
        ).fit(X, easy.Z_train)
        assert coder.components_.shape == (50, X.shape[1])
        assert dictionary_similarity(easy.dictionary, coder) > 0.98
        # Started at the optimum's doorstep, learning stops early on tol.
        assert len(coder.history_) < 20
    assert coder.init_ is not None
    with pytest.raises(
        ValueError, match="n_components=10 does not match the 50 atoms of init"
    ):
        FISTACoder(n_components=10, init=easy.dictionary).fit(X)


@pytest.mark.parametrize("scale", [1e-160, 1e-300, 1e160])
def test_learning_is_scale_free_at_the_ends_of_float64(scale, rng):
    # The lasso scales exactly: data of 1e-160 learned NaN atoms, 1e-300
    # wrong ones (similarity 0.47), rows of norm 1e154 an OverflowError. (The
    # data are learned at a power-of-two scale near 1, not at X's: the path
    # may differ by rounding.)
    with pytest.warns(UserWarning, match="n_active=1"):  # its OOD set is unused
        X = make_compositional(3, 1, n_samples=200, random_state=0).X_train
    unit = FISTACoder(n_components=3, positive=True, random_state=0).fit(X)
    scaled = FISTACoder(n_components=3, alpha=0.1 * scale, positive=True)
    scaled.set_params(random_state=0).fit(X * scale)
    assert dictionary_similarity(unit.components_, scaled.components_) > 1 - 1e-6
    first, scaled_first = unit.history_[0], scaled.history_[0]
    assert scaled_first["alpha"] == pytest.approx(first["alpha"] * scale)
    # Objectives beyond float64's range read inf (1e160) or 0 (1e-300).
    expected = first["objective"] * scale * scale
    assert scaled_first["objective"] == pytest.approx(expected)


def test_progress_bar_shows_the_objective_of_the_callers_data(capsys):
    # Data beyond 2**400 are learned at a power-of-two scale near 1: the bar
    # showed that scaled objective (1e-260 times the caller's).
    with pytest.warns(UserWarning, match="n_active=1"):  # its OOD set is unused
        X = make_compositional(3, 1, n_samples=200, random_state=0).X_train * 1e130
    learner = FISTACoder(n_components=3, alpha=1e129, positive=True, dict_max_iter=2)
    learner.set_params(random_state=0, verbose=1).fit(X)
    shown = re.findall(r"objective=([-+.0-9e]+)", capsys.readouterr().err)
    assert float(shown[-1]) == pytest.approx(learner.history_[-1]["objective"], 1e-2)


def test_oracle_refuses_a_tolerance_zero_codes_meet(rng):
    # A duality gap is at most the objective: at tol >= 1 zero codes pass,
    # and tol=1.0 returned all-zero codes without a word.
    X = sparse_codes(rng, 30, 5, 2) @ random_dictionary(rng, 5, 4)
    with pytest.raises(ValueError, match="'tol' parameter of OracleDictionary"):
        OracleDictionary(random_dictionary(rng, 5, 4), tol=1.0).fit(X)


def test_learn_dictionary_takes_float32_or_float64():
    # bfloat16 data beyond float32's squares failed inside torch (no Cholesky
    # kernel), smaller ones were learned in bfloat16; the estimators compute
    # narrower data in float32.
    X = torch.rand(20, 4, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"float32 or float64; got torch\.bfloat16"):
        learn_dictionary(X, 3)


def test_float32_data_whose_summed_squares_overflow_are_rescaled(monkeypatch):
    # Entries within float32's bound (below 2**50) whose squares, summed over
    # millions of rows, leave float32 were refused; larger entries were
    # rescaled and learned. Such data are brought near 1 too.
    data = make_compositional(20, 3, n_samples=400, random_state=0)
    X = data.X_train.astype(np.float32)
    fits = _alternation._fits_float32
    monkeypatch.setattr(  # as if there were millions of rows
        _alternation,
        "_fits_float32",
        lambda X: fits(X) and float(X.abs().max()) < 2.0**20,
    )
    scale = np.float32(2.0**40)
    unit = FISTACoder(n_components=20, positive=True, dict_max_iter=10)
    big = clone(unit).set_params(alpha=0.1 * float(scale))
    unit.set_params(random_state=0).fit(X)
    big.set_params(random_state=0).fit(X * scale)
    assert dictionary_similarity(unit.components_, big.components_) > 1 - 1e-6


def test_oracle_atoms_below_the_dtypes_range_are_refused(rng):
    # Codes of 1e150 on float32 data of order 1 ask for atoms of 1e-150:
    # stored as zero atoms, which coding then blamed on the dictionary.
    X = rng.standard_normal((6, 3)).astype(np.float32)
    y = rng.uniform(0.5, 1.0, (6, 2)) * 1e150
    with pytest.raises(ValueError, match=r"too large for X's.*or pass X in float64"):
        OracleDictionary().fit(X, y)
    with pytest.raises(ValueError, match=r"too small for X's.*Rescale y\.$"):
        OracleDictionary().fit(X.astype(np.float64), y / 1e150 * 1e-310)


@pytest.mark.parametrize("scale", [2.0**560, 2.0**-560])
def test_streams_are_scale_free_at_the_ends_of_float64(scale):
    # A stream of 1e160 data ended with zero atoms (overflowing statistics
    # and row norms), one of 1e-170 with wrong ones. Streams learn at their
    # first batch's power-of-two scale: a power-of-two multiple of data
    # near 1 streams exactly as they do, after a fit too.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 3, 4)
    Z = np.abs(rng.standard_normal((40, 3))) * (rng.random((40, 3)) < 0.5)
    X = Z @ D
    X /= 2.0 ** np.frexp(np.abs(X).max())[1]  # largest entry in [0.5, 1)
    atoms = []
    for s in (1.0, scale):
        stream = FISTACoder(n_components=3, alpha=0.1 * s, positive=True)
        stream.set_params(random_state=0)
        for start in range(0, 40, 10):
            stream.partial_fit(X[start : start + 10] * s)
        continued = clone(stream).set_params(dict_max_iter=5).fit(X * s)
        continued.partial_fit(X[:10] * s)
        atoms.append((stream.components_, continued.components_))
    np.testing.assert_array_equal(atoms[1][0], atoms[0][0])
    np.testing.assert_array_equal(atoms[1][1], atoms[0][1])


def test_float32_streaming_and_refinement_at_large_scale(rng):
    # Mairal's block-coordinate step of partial_fit and of the refining
    # rounds' fallback gave zero atoms for float32 data of scale 1e10 (and
    # an objective that rose); both are scale-equivariant up to rounding.
    X = rng.standard_normal((50, 8)).astype(np.float32)
    init = rng.standard_normal((12, 8)).astype(np.float32)
    streamed, refined = [], []
    for scale in (1.0, 1e10):
        stream = FISTACoder(n_components=12, alpha=0.1 * scale, random_state=0)
        for _ in range(3):
            stream.partial_fit(X * np.float32(scale))
        refine = FISTACoder(alpha=0.1 * scale, init=init, dict_max_iter=5)
        refine.fit(X * np.float32(scale))
        for coder in (stream, refine):
            np.testing.assert_allclose(
                np.linalg.norm(coder.components_, axis=1), 1.0, rtol=1e-5
            )
        streamed.append(stream.components_)
        objective = np.array([r["objective"] for r in refine.history_]) / scale**2
        assert np.all(np.diff(objective) <= 1e-5 * objective[0])
        refined.append(objective)
    np.testing.assert_allclose(streamed[1], streamed[0], atol=1e-4)
    # Refining rounds code to a tolerance: the path differs by rounding.
    np.testing.assert_allclose(refined[1], refined[0], rtol=2e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_exploring_rounds_do_not_diverge(seed):
    # Two atoms per feature: plain FISTA rounds. Codes rescaled by long
    # least-squares atoms, fed back, grew round after round (seed 2: a round
    # objective of 252 where zero codes cost 0.33, 40 duplicate atom pairs,
    # similarity 0.563).
    data = make_compositional(20, 2, n_samples=1000, random_state=seed)
    X = data.X_train
    coder = FISTACoder(n_components=20, positive=True, random_state=seed).fit(X)
    zero_codes = 0.5 * (X**2).sum(axis=1).mean()
    assert max(record["objective"] for record in coder.history_) <= zero_codes
    cosines = np.abs(coder.components_ @ coder.components_.T)
    np.fill_diagonal(cosines, 0.0)
    assert cosines.max() < 0.99
    assert dictionary_similarity(data.dictionary, coder) > 0.85


def test_learning_data_beyond_float32s_range():
    # Data of norm 1e20 or 1e-20 gave NaN atoms or a ZeroDivisionError in
    # float64 and were refused in float32; they are learned at a power-of-two
    # scale near 1, as the lasso scales exactly.
    data = make_compositional(20, 3, n_samples=400, random_state=0)
    scores = []
    for scale, dtype in itertools.product((1.0, 1e20, 1e-20), (np.float64, np.float32)):
        coder = FISTACoder(
            n_components=20,
            positive=True,
            alpha=0.1 * scale,
            dict_max_iter=30,
            random_state=0,
        ).fit((data.X_train * scale).astype(dtype))
        assert np.isfinite(coder.components_).all()
        scores.append(dictionary_similarity(data.dictionary, coder))
    assert scores[1:] == pytest.approx([scores[0]] * 5, abs=0.01)
    assert scores[0] > 0.95
    # All-zero data are no reason to refuse float32 (only to warn).
    zeros = np.zeros((30, 5), dtype=np.float32)
    with pytest.warns(UserWarning, match="X is all zeros"):
        coder = FISTACoder(n_components=3, dict_max_iter=2).fit(zeros)
    assert coder.components_.shape == (3, 5)


def test_dict_max_iter_zero_keeps_the_start(easy):
    coder = FISTACoder(init=easy.dictionary, dict_max_iter=0).fit(easy.X_train)
    np.testing.assert_allclose(coder.components_, easy.dictionary)
    assert coder.history_ == [] and coder.n_iter_ == 0


def test_learning_is_reproducible_and_n_components_defaults(rng):
    X = sparse_codes(rng, 120, 8, 2) @ random_dictionary(rng, 8, 6)
    a = FISTACoder(n_components=8, positive=True, dict_max_iter=5, random_state=3).fit(
        X
    )
    b = FISTACoder(n_components=8, positive=True, dict_max_iter=5, random_state=3).fit(
        X
    )
    np.testing.assert_array_equal(a.components_, b.components_)
    assert FISTACoder(dict_max_iter=2).fit(X).components_.shape == (6, 6)


def test_learning_on_torch_tensors(rng):
    X = torch.from_numpy(sparse_codes(rng, 150, 10, 2) @ random_dictionary(rng, 10, 7))
    coder = FISTACoder(n_components=10, positive=True, dict_max_iter=5).fit(X.float())
    assert isinstance(coder.components_, torch.Tensor)
    assert coder.components_.dtype == torch.float32
    codes = coder.transform(X.float())
    assert isinstance(codes, torch.Tensor) and codes.shape == (150, 10)


def test_exploration_runs_in_float32_and_returns_the_data_dtype(rng):
    # Learning from drawn atoms computes in float32 whatever the data's dtype:
    # float64 data learns the float32 data's atoms, returned in float64 with
    # unit norms to float64 precision. Refining a given init keeps float64.
    X = sparse_codes(rng, 200, 12, 3) @ random_dictionary(rng, 12, 8)
    params = dict(n_components=12, positive=True, dict_max_iter=6, random_state=0)
    wide = FISTACoder(**params).fit(X)
    narrow = FISTACoder(**params).fit(X.astype(np.float32))
    assert wide.components_.dtype == np.float64
    np.testing.assert_allclose(wide.components_, narrow.components_, atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(wide.components_, axis=1), 1.0, rtol=1e-14
    )
    refined = FISTACoder(**params, init=wide.components_).fit(X)
    narrow_refined = FISTACoder(**params, init=wide.components_).fit(
        X.astype(np.float32)
    )
    assert np.abs(refined.components_ - narrow_refined.components_).max() > 0


@pytest.mark.parametrize("dense", [False, True])
def test_sample_side_atoms_match_the_pseudo_inverse(rng, dense):
    # More atoms in use than samples: Z^T Z is singular, and the minimum-norm
    # atoms through Z Z^T must be the pseudo-inverse's. Two samples have zero
    # codes (left out of Z Z^T) and two atoms are unused (kept as given).
    Z = torch.from_numpy(sparse_codes(rng, 30, 60, 3))
    Z[:2] = 0.0
    Z[:, :2] = 0.0
    X = torch.from_numpy(rng.standard_normal((30, 7)))
    fallback = torch.from_numpy(random_dictionary(rng, 60, 7))
    gram, cross = Z.T @ Z, Z.T @ X
    operand = Z if dense else Z.to_sparse()
    atoms = _sample_side_atoms(Z, operand, X, gram, fallback)
    reference = fallback.clone()
    used = gram.diagonal() > 0
    reference[used] = torch.linalg.pinv(gram[used][:, used]) @ cross[used]
    torch.testing.assert_close(atoms, reference, rtol=1e-8, atol=1e-10)
    with pytest.warns(UserWarning, match="singular"):
        slow = lstsq_dictionary(gram, cross, fallback, singular_warning="singular")
    torch.testing.assert_close(atoms, slow, rtol=1e-8, atol=1e-10)
    # Fewer atoms in use than samples: the atoms' own Cholesky is the way.
    tall = torch.from_numpy(sparse_codes(rng, 100, 10, 3))
    X_tall = torch.from_numpy(rng.standard_normal((100, 7)))
    assert _sample_side_atoms(tall, tall, X_tall, tall.T @ tall, fallback[:10]) is None


@pytest.mark.parametrize("n_components, n_features", [(8, 6), (40, 10)])
def test_last_exploring_round_resamples_nothing(rng, n_components, n_features):
    # 6 rounds: the last is a resampling round (every third), whose fresh
    # atoms would be returned untrained.
    X = sparse_codes(rng, 300, n_components, 2) @ random_dictionary(
        rng, n_components, n_features
    )
    result = learn_dictionary(
        torch.from_numpy(X),
        n_components,
        alpha=0.01,
        positive=True,
        dict_max_iter=6,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.history[-1]["exploring"]
    assert result.history[-1]["n_resampled"] == 0
    if n_components / n_features > 3:
        # Working-set exploration returns the normalised least-squares fit to
        # the codes it returns (rescaled to those atoms), not the momentum
        # step prepared for a next round.
        codes = result.codes.numpy()
        assert (np.abs(codes).sum(axis=0) > 0).all()
        fit = np.linalg.lstsq(codes, X, rcond=None)[0]
        np.testing.assert_allclose(result.components.numpy(), fit, atol=1e-4)


def test_partial_fit_with_given_dictionary_only_resolves(rng):
    D = random_dictionary(rng, 5, 4)
    coder = FISTACoder(D)
    coder.partial_fit(rng.standard_normal((6, 4)))
    coder.partial_fit(rng.standard_normal((6, 4)))
    np.testing.assert_array_equal(coder.components_, D)
    with pytest.raises(ValueError, match="features"):
        coder.partial_fit(rng.standard_normal((6, 3)))
    # Checked as in fit, on every call.
    coder.set_params(n_components=3)
    with pytest.raises(ValueError, match="continues the 5 given atoms"):
        coder.partial_fit(rng.standard_normal((6, 4)))
    coder.set_params(n_components=5).partial_fit(rng.standard_normal((6, 4)))
    pca = FISTACoder(PCA(n_components=2)).partial_fit(rng.standard_normal((6, 4)))
    assert pca.components_.shape == (2, 4)


def test_partial_fit_with_given_dictionary_sets_n_iter(rng):
    coder = FISTACoder(random_dictionary(rng, 5, 4))
    assert coder.partial_fit(rng.standard_normal((6, 4))).n_iter_ == 0


@pytest.mark.parametrize("estimator", [FISTACoder, OracleDictionary])
def test_partial_fit_with_given_dictionary_follows_the_batch_array_type(estimator, rng):
    # As documented for components_, and as a learned dictionary does: the
    # array type of the latest batch, in the atoms' own precision (a given
    # oracle kept NumPy atoms through a stream of tensors).
    D = random_dictionary(rng, 5, 4)
    coder = estimator(D).fit(rng.standard_normal((6, 4)))
    coder.partial_fit(torch.from_numpy(rng.standard_normal((6, 4)).astype("float32")))
    assert torch.is_tensor(coder.components_) and torch.is_tensor(coder.intercept_)
    assert coder.components_.dtype == torch.float64
    np.testing.assert_array_equal(coder.components_.numpy(), D)
    coder.partial_fit(rng.standard_normal((6, 4)))
    assert isinstance(coder.components_, np.ndarray)
    np.testing.assert_array_equal(coder.components_, D)


class NaNParamProvider(BaseEstimator):
    """A provider with a NaN parameter (at module level, to be pickled)."""

    def __init__(self, atoms=None, missing=float("nan")):
        self.atoms = atoms
        self.missing = missing

    def fit(self, X, y=None):
        self.components_ = np.asarray(self.atoms)
        return self


def test_partial_fit_refuses_to_switch_between_given_and_learned(rng):
    X = sparse_codes(rng, 60, 5, 2) @ random_dictionary(rng, 5, 4)
    given = FISTACoder(random_dictionary(rng, 5, 4)).fit(X)
    with pytest.raises(ValueError, match="fitted with a given dictionary"):
        given.set_params(dictionary=None).partial_fit(X)
    learned = FISTACoder(n_components=3, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="fitted with a learned dictionary"):
        learned.set_params(dictionary=random_dictionary(rng, 5, 4)).partial_fit(X)
    # A replaced dictionary is a new model too.
    given = FISTACoder(random_dictionary(rng, 5, 4)).partial_fit(X)
    with pytest.raises(ValueError, match="new dictionary needs a new fit"):
        given.set_params(dictionary=random_dictionary(rng, 7, 4)).partial_fit(X)
    assert given.components_.shape == (5, 4)
    # So is one of the same shape, or a provider changed in place.
    with pytest.raises(ValueError, match="new dictionary needs a new fit"):
        given.set_params(dictionary=random_dictionary(rng, 5, 4)).partial_fit(X)
    oracle = FISTACoder(OracleDictionary(random_dictionary(rng, 5, 4))).partial_fit(X)
    oracle.set_params(dictionary__alpha=0.1).partial_fit(X)  # the same value
    with pytest.raises(ValueError, match="new dictionary needs a new fit"):
        new_atoms = random_dictionary(rng, 5, 4)
        oracle.set_params(dictionary__dictionary=new_atoms).partial_fit(X)
    # A provider's NaN parameter is the same NaN once saved and loaded.
    coder = FISTACoder(NaNParamProvider(random_dictionary(rng, 5, 4))).partial_fit(X)
    for copied in saved_and_loaded(coder):
        assert copied.partial_fit(X).components_.shape == (5, 4)
    # Saved and loaded, the coder still continues its own dictionary, an
    # array, a tensor, a list or a provider alike (joblib loads the array
    # parameter and the record of it as two equal arrays).
    D = random_dictionary(rng, 5, 4)
    for dictionary in (D, torch.from_numpy(D), D.tolist(), OracleDictionary(D)):
        coder = FISTACoder(dictionary).partial_fit(X)
        for copied in saved_and_loaded(coder):
            assert copied.partial_fit(X).components_.shape == (5, 4)


@pytest.mark.parametrize("dictionary", [None, "given"])
@pytest.mark.parametrize(
    "change, match",
    [
        ({"alpha": -0.1}, "'alpha' parameter"),
        ({"max_iter": True}, "'max_iter' .* a bool"),
        ({"tol": -1.0}, "'tol' parameter"),
        ({"tol": 1.0}, "'tol' parameter"),
    ],
)
def test_partial_fit_and_transform_check_changed_parameters(
    rng, dictionary, change, match
):
    # scikit-learn checks partial_fit's parameters on the first call only.
    X = sparse_codes(rng, 60, 5, 2) @ random_dictionary(rng, 5, 4)
    D = None if dictionary is None else random_dictionary(rng, 5, 4)
    coder = FISTACoder(D, n_components=5, random_state=0).partial_fit(X)
    coder.set_params(**change)
    with pytest.raises(ValueError, match=match):
        coder.partial_fit(X)
    with pytest.raises(ValueError, match=match):
        coder.transform(X)
    with pytest.raises(ValueError, match=match):
        coder.score(X)
    oracle = OracleDictionary(random_dictionary(rng, 5, 4)).fit(X)
    with pytest.raises(
        ValueError, match=match.replace("parameter", "parameter of Oracle")
    ):
        oracle.set_params(**change).transform(X)


def test_a_stream_refuses_a_batch_beyond_its_precision(rng):
    # The stream learns in float32 after a float32 first batch: a float64
    # batch beyond float32's range is refused, not turned into infinities.
    X = sparse_codes(rng, 60, 5, 2) @ random_dictionary(rng, 5, 4)
    coder = FISTACoder(n_components=5, random_state=0)
    coder.partial_fit(X.astype(np.float32))
    with pytest.raises(
        ValueError, match=r"X has values beyond the range of torch\.float32"
    ):
        coder.partial_fit(X * 1e39)
    assert np.isfinite(coder.components_).all() and coder.n_iter_ == 1


def test_global_skip_parameter_validation_covers_transform(rng):
    from sklearn import config_context

    D = random_dictionary(rng, 5, 4)
    X = sparse_codes(rng, 20, 5, 2) @ D
    coder = FISTACoder(D).fit(X).set_params(max_iter=np.int16(50))
    with pytest.raises(ValueError, match="'max_iter'"):
        coder.transform(X)
    with config_context(skip_parameter_validation=True):
        assert coder.transform(X).shape == (20, 5)


# max_iter=1 shows the warm start, and leaves the codes unconverged.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_init_estimator_set_after_fit_asks_for_a_fit(rng):
    D = random_dictionary(rng, 5, 4)
    X = sparse_codes(rng, 60, 5, 2) @ D
    coder = FISTACoder(D).fit(X)
    coder.set_params(init=OracleDictionary(D))
    with pytest.raises(ValueError, match="init is an estimator that was set after fit"):
        coder.transform(X)
    # Codes set after a fit with an init estimator are the warm start.
    started = FISTACoder(D, init=OracleDictionary(D, alpha=0.3), max_iter=1).fit(X)
    from_estimator = started.transform(X)
    codes = np.zeros((60, 5))
    started.set_params(init=codes)
    from_codes = FISTACoder(D, init=codes, max_iter=1).fit(X).transform(X)
    assert np.abs(from_codes - from_estimator).max() > 1e-3
    np.testing.assert_array_equal(started.transform(X), from_codes)
    # A learned dictionary is never warm-started from init codes, whatever
    # the parameters say after fit.
    learned = FISTACoder(n_components=5, dict_max_iter=3, random_state=0).fit(X)
    expected = learned.transform(X)
    learned.set_params(dictionary=D, init=np.ones((60, 5)))
    np.testing.assert_array_equal(learned.transform(X), expected)


@pytest.mark.parametrize(
    "first, second", [(np.float64, np.float32), (np.float32, np.float64)]
)
def test_partial_fit_keeps_the_fitted_dtype(rng, first, second):
    X = sparse_codes(rng, 100, 6, 2) @ random_dictionary(rng, 6, 5)
    coder = FISTACoder(n_components=6, positive=True, random_state=0)
    coder.partial_fit(X[:50].astype(first)).partial_fit(X[50:].astype(second))
    assert coder.components_.dtype == coder.intercept_.dtype == first
    assert (
        coder._online_statistics["A"].dtype == torch.from_numpy(X.astype(first)).dtype
    )
    # Codes follow the data, whatever the atoms' precision.
    assert coder.transform(X.astype(second)).dtype == second
    np.testing.assert_allclose(
        np.linalg.norm(coder.components_, axis=1), 1.0, rtol=1e-5
    )


def test_partial_fit_after_a_failed_fit_starts_afresh(rng):
    # A failed fit forgets the fitted atoms; the next partial_fit is a first
    # call again and must not resume the running statistics of the stream
    # that came before.
    X = sparse_codes(rng, 200, 10, 2) @ random_dictionary(rng, 10, 7)
    coder = FISTACoder(n_components=10, positive=True, random_state=0)
    coder.partial_fit(X[:100]).partial_fit(X[100:])
    with pytest.raises(ValueError, match="the 4 atoms of init"):
        coder.set_params(init=random_dictionary(rng, 4, 7)).fit(X)
    coder.set_params(init=None).partial_fit(X[:100])
    fresh = clone(coder).partial_fit(X[:100])
    np.testing.assert_array_equal(coder.components_, fresh.components_)


def test_partial_fit_pickles_mid_stream(rng):
    X = sparse_codes(rng, 200, 10, 2) @ random_dictionary(rng, 10, 7)
    coder = FISTACoder(n_components=10, positive=True, random_state=0)
    coder.partial_fit(X[:100])
    resumed = pickle.loads(pickle.dumps(coder)).partial_fit(X[100:])
    coder.partial_fit(X[100:])
    np.testing.assert_array_equal(resumed.components_, coder.components_)


def test_a_stream_draws_from_random_state_once(rng):
    # Later calls continue the stream's own generator: a draw from a shared
    # RandomState (or NumPy's global one, random_state=None) would be thrown
    # away, shifting the caller's own random numbers.
    X = sparse_codes(rng, 200, 10, 2) @ random_dictionary(rng, 10, 7)
    shared = np.random.RandomState(0)
    coder = FISTACoder(n_components=10, positive=True, random_state=shared)
    coder.partial_fit(X[:100])
    state = shared.get_state()
    coder.partial_fit(X[100:]).partial_fit(X[:100])
    after = shared.get_state()
    assert after[2] == state[2]  # the position in the Mersenne Twister's key
    np.testing.assert_array_equal(after[1], state[1])
    seeded = FISTACoder(n_components=10, positive=True, random_state=0)
    seeded.partial_fit(X[:100]).partial_fit(X[100:]).partial_fit(X[:100])
    np.testing.assert_array_equal(seeded.components_, coder.components_)


def test_a_batch_that_overflows_the_stream_raises_and_leaves_it(rng):
    # Statistics of inf froze every atom for the rest of the stream, while
    # later history records looked healthy.
    D = random_dictionary(rng, 16, 8)
    X = (sparse_codes(rng, 300, 16, 2) @ D).astype(np.float32)
    coder = FISTACoder(n_components=16, positive=True, random_state=0)
    coder.partial_fit(X[:100]).partial_fit(X[100:200])
    before = pickle.dumps(coder)
    # The first batch had the data's scale: the batch is the outlier.
    with pytest.raises(FloatingPointError, match=r"overflows the stream.*Rescale"):
        coder.partial_fit(X[200:] * np.float32(1e20))
    assert pickle.dumps(coder) == before
    coder.partial_fit(X[200:])
    assert np.isfinite(coder.history_[-1]["objective"])
    assert coder.history_[-1]["dictionary_change"] > 0
    # A first batch of nearly nothing sets a scale at which ordinary batches
    # overflow: the message says so, where it only advised rescaling.
    tiny = np.zeros_like(X[:100], dtype=np.float64)
    tiny[0] = X[0].astype(np.float64) * 1e-200
    stream = FISTACoder(n_components=16, positive=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the drawn atoms' warning
        stream.partial_fit(tiny)
    with pytest.raises(
        FloatingPointError, match=r"first batch \(largest entry about [\d.]+e-20[01]\)"
    ):
        stream.partial_fit(X[100:200].astype(np.float64))


def test_a_trimmed_history_keeps_the_count(rng):
    # Long streams may trim history_; n_iter_ goes on counting calls.
    X = sparse_codes(rng, 200, 10, 2) @ random_dictionary(rng, 10, 7)
    coder = FISTACoder(n_components=10, dict_max_iter=3, random_state=0).fit(X)
    assert coder.n_iter_ == len(coder.history_) == 3
    del coder.history_[:]
    coder.partial_fit(X[:100]).partial_fit(X[100:])
    assert coder.n_iter_ == 5 and len(coder.history_) == 2
    stream = FISTACoder(n_components=10, random_state=0).partial_fit(X)
    assert stream.n_iter_ == 1


@cuda
def test_learning_on_gpu(easy):
    X = torch.from_numpy(easy.X_train).cuda()
    coder = FISTACoder(
        n_components=50, positive=True, dict_max_iter=40, tol=1e-4, random_state=0
    ).fit(X)
    assert coder.components_.device.type == "cuda"
    assert dictionary_similarity(easy.dictionary, coder.components_.cpu()) >= 0.95
    online = FISTACoder(n_components=50, positive=True, random_state=0)
    for start in range(0, X.shape[0], 500):
        online.partial_fit(X[start : start + 500])
    assert online.components_.device.type == "cuda"


@settings(max_examples=30, deadline=None)
# A drawn X whose correlations with its atoms all stay below alpha codes to
# zero: right, and said in a warning the invariants do not concern.
@pytest.mark.filterwarnings("ignore:No sample uses any learned atom:UserWarning")
@given(
    n_components=st.integers(1, 8),
    n_features=st.integers(1, 6),
    n_samples=st.integers(1, 30),
    positive=st.booleans(),
    float32=st.booleans(),
    from_init=st.booleans(),
    dict_max_iter=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_learned_dictionaries_keep_their_invariants(
    n_components,
    n_features,
    n_samples,
    positive,
    float32,
    from_init,
    dict_max_iter,
    seed,
):
    # Any shapes (more atoms than samples or features included), signs,
    # precisions and starts: finite unit-norm atoms in X's dtype, codes that
    # reconstruct X through them, one history record per round, and the same
    # result for the same seed.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    if float32:
        X = X.astype(np.float32)
    init = random_dictionary(rng, n_components, n_features) if from_init else None
    params = dict(
        n_components=n_components,
        positive=positive,
        init=init,
        dict_max_iter=dict_max_iter,
        tol=1e-12,
        random_state=seed % 1000,
    )
    coder = FISTACoder(**params).fit(X)
    atoms = coder.components_
    assert atoms.shape == (n_components, n_features) and atoms.dtype == X.dtype
    assert np.isfinite(atoms).all()
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1.0, atol=1e-5)
    assert len(coder.history_) == coder.n_iter_ <= dict_max_iter
    assert all(
        np.isfinite(h["objective"]) and h["objective"] >= 0 for h in coder.history_
    )
    codes = coder.transform(X)
    assert codes.shape == (n_samples, n_components) and np.isfinite(codes).all()
    if positive:
        assert (codes >= 0).all()
    np.testing.assert_allclose(coder.inverse_transform(codes), codes @ atoms, atol=1e-6)
    # The codes are the lasso's on the learned atoms: per sample no worse
    # than scikit-learn's coordinate descent (certified to a relative 1e-6,
    # float32's rounding floor for float32 data).
    X64, atoms64 = X.astype(np.float64), atoms.astype(np.float64)
    with warnings.catch_warnings():
        # On nearly parallel drawn atoms coordinate descent may stop short:
        # its codes then cost more, and the bound below only gets looser.
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = sparse_encode(
            X64,
            atoms64,
            algorithm="lasso_cd",
            alpha=coder.alpha,
            positive=positive,
            max_iter=10_000,
        )
    ours = lasso_objective(X64, codes, atoms64, coder.alpha)
    best = lasso_objective(X64, reference, atoms64, coder.alpha)
    assert np.all(ours <= best * (1 + 1e-4) + 1e-7)
    again = FISTACoder(**params).fit(X)
    np.testing.assert_array_equal(again.components_, atoms)


def test_small_learning_problems_run_on_one_thread(rng, monkeypatch, two_threads):
    # A second thread only slows tiny products down (3x with one core busy);
    # the caller's thread count is restored, also after an error.
    seen = []
    originals = {
        name: getattr(_fista_coder, name)
        for name in ("learn_dictionary", "online_dictionary_update")
    }

    def recorder(name):
        def recording(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return originals[name](*args, **kwargs)

        return recording

    for name in originals:
        monkeypatch.setattr(_fista_coder, name, recorder(name))
    X = rng.standard_normal((30, 5))
    FISTACoder(n_components=6, dict_max_iter=2).fit(X).partial_fit(X)
    assert seen == [1, 1] and torch.get_num_threads() == 2
    monkeypatch.setattr(_fista_coder, "learn_dictionary", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        FISTACoder(n_components=6, dict_max_iter=2).fit(X)
    assert torch.get_num_threads() == 2
    # Larger problems keep the caller's threads.
    monkeypatch.setattr(_tensor, "_SINGLE_THREAD_MACS", 0)
    monkeypatch.setattr(_fista_coder, "learn_dictionary", recorder("learn_dictionary"))
    seen.clear()
    FISTACoder(n_components=6, dict_max_iter=2).fit(X)
    assert seen == [2]


def test_a_given_array_holding_nan_is_the_same_after_a_copy():
    # A pickle or joblib round trip copies a given array; one holding NaN
    # (NaN != NaN) must still count as unchanged, or partial_fit and
    # transform refuse the reloaded estimator's own parameter.
    given = np.array([[np.nan, 1.0], [0.0, 1.0]])
    assert is_same_given(given.copy(), record_given(given))
    assert not is_same_given(np.array([[np.nan, 2.0], [0.0, 1.0]]), record_given(given))


@pytest.mark.parametrize("names_at", ["fit", "transform"])
def test_oracle_transform_warns_of_feature_names_once(names_at, rng):
    # The oracle's own check warned, and so did its coder's check of the
    # oracle as a provider: the same warning twice.
    pd = pytest.importorskip("pandas")
    X = rng.standard_normal((20, 4))
    frame = pd.DataFrame(X, columns=list("abcd"))
    oracle = OracleDictionary(np.eye(4)).fit(frame if names_at == "fit" else X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oracle.transform(X if names_at == "fit" else frame)
    assert len(caught) == 1
    assert "OracleDictionary was fitted with" in str(caught[0].message)


def test_oracle_codes_with_signed_codes_when_positive_is_false():
    # The oracle's coder receives its own ``positive``: codes of both signs
    # come back as they were drawn, not clamped to the non-negative ones.
    rng = np.random.default_rng(0)
    D = rng.standard_normal((3, 8))
    Z = np.array([[1.0, -2.0, 0.0], [-1.0, 0.0, 3.0]])
    oracle = OracleDictionary(D, positive=False, alpha=1e-3).fit(Z @ D)
    np.testing.assert_allclose(oracle.transform(Z @ D), Z, atol=1e-2)
    positive = OracleDictionary(D, alpha=1e-3).fit(Z @ D).transform(Z @ D)
    assert positive.min() >= 0


def test_stream_records_its_objective_in_the_callers_units_at_any_scale():
    # A stream of tiny data learns at a power-of-two scale; its history_
    # objective is still the batch's lasso objective of the data given. The
    # lasso scales exactly: (s X, s alpha) has objective s**2 F.
    X = np.random.default_rng(0).standard_normal((40, 5))
    s = 2.0**-450
    plain = FISTACoder(n_components=4, alpha=0.1, random_state=0).partial_fit(X)
    scaled = FISTACoder(n_components=4, alpha=0.1 * s, random_state=0).partial_fit(
        X * s
    )
    ratio = scaled.history_[0]["objective"] / s**2 / plain.history_[0]["objective"]
    assert ratio == pytest.approx(1.0, rel=1e-6)


def test_stream_records_the_relative_change_of_its_dictionary():
    X = np.random.default_rng(0).standard_normal((60, 6))
    coder = FISTACoder(n_components=9, alpha=0.1, random_state=0).partial_fit(X[:30])
    before = coder.components_.copy()
    coder.partial_fit(X[30:])
    expected = np.linalg.norm(coder.components_ - before) / np.linalg.norm(before)
    assert coder.history_[-1]["dictionary_change"] == pytest.approx(expected, rel=1e-5)


def test_a_streams_starting_atoms_follow_random_state():
    X = np.random.default_rng(0).standard_normal((30, 5))
    first = FISTACoder(n_components=4, random_state=0).partial_fit(X)
    again = FISTACoder(n_components=4, random_state=0).partial_fit(X)
    other = FISTACoder(n_components=4, random_state=1).partial_fit(X)
    np.testing.assert_array_equal(first.components_, again.components_)
    assert not np.allclose(first.components_, other.components_)


def _learning_problem(n_samples, n_components, n_features, seed=0, n_active=2):
    """Rows of sparse Uniform(0, 1) codes on unit-norm atoms, and the atoms."""
    rng = np.random.default_rng(seed)
    D = random_dictionary(rng, n_components, n_features)
    X = sparse_codes(rng, n_samples, n_components, n_active) @ D
    return torch.from_numpy(X), torch.from_numpy(D)


def test_exactly_three_atoms_per_feature_take_plain_fista_rounds():
    # "At most 3 atoms per feature": 30 atoms on 10 features are; 31 are not.
    X, _ = _learning_problem(200, 30, 10)
    at_bound = learn_dictionary(
        X, 30, alpha=0.05, positive=True, dict_max_iter=3, tol=1e-12
    )
    assert all(
        h["fista_iter"] == 8 and h["coding_tol"] is None for h in at_bound.history
    )
    above = learn_dictionary(
        X, 31, alpha=0.05, positive=True, dict_max_iter=3, tol=1e-12
    )
    assert all(h["coding_tol"] is not None for h in above.history)


def test_resampling_happens_every_third_round_only():
    # Rounds 3, 6, 9, ... (t = 2, 5, 8 from 0), never the others.
    X, _ = _learning_problem(300, 12, 8, seed=1)
    result = learn_dictionary(
        X, 24, alpha=0.05, positive=True, dict_max_iter=12, tol=1e-12
    )
    resampled = [h["n_resampled"] for h in result.history]
    assert all(n == 0 for t, n in enumerate(resampled) if (t + 1) % 3), resampled
    assert any(n > 0 for t, n in enumerate(resampled) if (t + 1) % 3 == 0), resampled


def test_continuation_of_a_four_round_fit_follows_the_documented_penalties(rng):
    # Round t, from 0, codes at target * 10 ** (1 - (t + 1) / 4): 5.6, 3.2,
    # 1.8 and 1 times the target.
    X = torch.from_numpy(rng.uniform(size=(100, 10)))
    result = learn_dictionary(
        X, 20, alpha=0.05, positive=True, dict_max_iter=4, tol=1e-12
    )
    ratios = [h["alpha"] / 0.05 for h in result.history]
    assert ratios == pytest.approx([10 ** (1 - (t + 1) / 4) for t in range(4)])


@pytest.mark.parametrize("eta", [1, 2, 10, 256])
def test_forgetting_factor_follows_mairal_et_al(eta):
    # Sec. 3.4.3: theta = (t + 1) eta for t < eta - 1, eta^2 + t + 1 - eta
    # after; beta = (theta + 1 - eta) / (theta + 1).
    for t in range(3 * eta + 3):
        theta = (t + 1) * eta if t < eta - 1 else eta**2 + t + 1 - eta
        beta = _forgetting_factor(t, eta)
        assert beta == pytest.approx((theta + 1 - eta) / (theta + 1))
        assert 0 <= beta < 1


def _mairal_stream(chunks, D, alpha, positive):
    """Mairal et al. (2010), Alg. 1 and 2, in NumPy, coded by scikit-learn's Lasso.

    Running statistics with the forgetting factor of Sec. 3.4.3, then one
    block-coordinate sweep (Alg. 2) on unit-norm atoms; atoms no sample has
    used are left as they are.
    """
    from sklearn.linear_model import Lasso

    D = D.copy()
    n_atoms, n_features = D.shape
    A, B = np.zeros((n_atoms, n_atoms)), np.zeros((n_atoms, n_features))
    lasso = Lasso(
        alpha=alpha / n_features,  # Lasso divides the squared error by n_samples
        fit_intercept=False,
        positive=positive,
        tol=1e-14,
        max_iter=10**6,
    )
    for t, chunk in enumerate(chunks):
        eta = len(chunk)
        codes = np.array([lasso.fit(D.T, x).coef_ for x in chunk])
        theta = (t + 1) * eta if t < eta - 1 else eta**2 + t + 1 - eta
        beta = (theta + 1 - eta) / (theta + 1)
        A = beta * A + codes.T @ codes / eta
        B = beta * B + codes.T @ chunk / eta
        for j in np.flatnonzero(np.diag(A) > 0):
            u = B[j] - A[j] @ D + A[j, j] * D[j]
            D[j] = u / np.linalg.norm(u)
    return D, A, B


@pytest.mark.parametrize("positive", [False, True])
def test_a_stream_equals_an_independent_mairal_implementation(rng, positive):
    # Several steps end to end, with batches of changing sizes (one row
    # included), against NumPy and scikit-learn's coordinate descent: the
    # other tests check the forgetting factor and one sweep apart.
    init, D = random_dictionary(rng, 6, 5), random_dictionary(rng, 6, 5)
    Z = rng.uniform(size=(100, 6)) * (rng.uniform(size=(100, 6)) < 0.4)
    X = Z @ D + 0.01 * rng.standard_normal((100, 5))
    chunks = np.split(X, [1, 2, 32, 39, 60])
    expected, A, B = _mairal_stream(chunks, init, 0.05, positive)
    stream = FISTACoder(
        n_components=6, init=init, alpha=0.05, positive=positive, tol=1e-12
    )
    for chunk in chunks:
        stream.partial_fit(chunk)
    np.testing.assert_allclose(stream.components_, expected, atol=1e-9)
    statistics = stream._online_statistics
    np.testing.assert_allclose(statistics["A"].numpy(), A, atol=1e-9)
    np.testing.assert_allclose(statistics["B"].numpy(), B, atol=1e-9)


def test_coding_tol_cap_is_looser_from_40_features():
    # Round codes are solved to a gap between tol and 0.3, or 0.1 with fewer
    # than 40 features: the first round of a refinement codes at the cap.
    for n_features, cap in ((40, 0.3), (39, 0.1)):
        X, D = _learning_problem(100, 10, n_features)
        result = learn_dictionary(X, 10, alpha=0.05, init=D, dict_max_iter=1, tol=1e-12)
        assert result.history[0]["coding_tol"] == cap


def test_exploring_rounds_code_from_zero_and_refining_ones_warm_start(monkeypatch):
    X, D = _learning_problem(200, 30, 8)
    inits = []
    real = _driver.fista_encode

    def encode(*args, **kwargs):
        inits.append(kwargs.get("init"))
        return real(*args, **kwargs)

    patch_everywhere(monkeypatch, _driver, "fista_encode", encode)
    learn_dictionary(X, 30, alpha=0.05, positive=True, dict_max_iter=4, tol=1e-12)
    assert len(inits) == 4 and all(init is None for init in inits)
    inits.clear()
    learn_dictionary(
        X, 30, alpha=0.05, positive=True, init=D, dict_max_iter=3, tol=1e-12
    )
    assert len(inits) == 3 and inits[0] is not None and not inits[0].any()
    assert all(init is not None and init.any() for init in inits[1:])


def test_refinement_keeps_a_previous_code_that_was_better(monkeypatch):
    # A round whose coder returns worse codes (zero codes here) leaves the
    # objective as it was: refining never increases it.
    X, D = _learning_problem(200, 20, 10, n_active=3)
    real = _alternation._code_round
    calls = []

    def code_round(X_, components, codes, alpha, **kwargs):
        calls.append(alpha)
        out, n_iter = real(X_, components, codes, alpha, **kwargs)
        return (out if len(calls) == 1 else torch.zeros_like(out)), n_iter

    monkeypatch.setattr(_alternation, "_code_round", code_round)
    result = learn_dictionary(
        X, 20, alpha=0.05, positive=True, init=D, dict_max_iter=4, tol=1e-12
    )
    objective = np.array([h["objective"] for h in result.history])
    assert objective[0] < 0.25 * float((X * X).sum(dim=1).mean())
    assert np.all(np.diff(objective) <= 1e-12 * objective[:-1]), objective


def test_inexact_rounds_follow_the_papers_loop(monkeypatch):
    # They start from zero codes, keep their codes' scale and take momentum
    # 0.9; the exploring rounds around them rescale and take 0.95.
    X = _learning_problem(200, 40, 10)[0].float()
    steps, inits = [], []
    real_step, real_plain = _alternation._lstsq_step, _core._plain_fista

    def step(*args, **kwargs):
        steps.append((args[5], kwargs["rescale"]))
        return real_step(*args, **kwargs)

    def plain(X_, D_, codes, *args, **kwargs):
        inits.append(bool(codes.any()))
        return real_plain(X_, D_, codes, *args, **kwargs)

    monkeypatch.setattr(_alternation, "_lstsq_step", step)
    monkeypatch.setattr(_alternation, "_plain_fista", plain)
    result = learn_dictionary(
        X, 40, alpha=0.05, positive=True, dict_max_iter=110, tol=1e-12
    )
    inexact = [h["inexact"] for h in result.history]
    assert inexact == [False] * 60 + [True] * 20 + [False] * 30
    assert steps[:60] == [(0.95, True)] * 60 and steps[80:] == [(0.95, True)] * 30
    assert steps[60:80] == [(0.9, False)] * 20
    # Only the inexact rounds code with plain FISTA here (40 atoms on 10
    # features): the first from zero codes, the others warm-started.
    assert len(inits) == 20 and inits[0] is False and all(inits[1:])


def test_reinitialised_atoms_start_without_momentum(monkeypatch):
    # An unused atom re-drawn from a residual carries no momentum: the next
    # round extrapolates it from itself.
    X, _ = _learning_problem(300, 4, 10, n_active=1)  # 40 atoms, most unused
    seen = []
    real = _alternation._lstsq_step

    def step(X_, codes, components, alpha, objective, extrapolation, previous, **kw):
        seen.append((components.clone(), previous.clone()))
        return real(
            X_, codes, components, alpha, objective, extrapolation, previous, **kw
        )

    monkeypatch.setattr(_alternation, "_lstsq_step", step)
    result = learn_dictionary(
        X, 40, alpha=0.05, positive=True, dict_max_iter=6, tol=1e-12
    )
    checked = 0
    for t, h in enumerate(result.history[:-1]):
        if h["n_unused"] and not h["n_resampled"] and (t + 1) % 3:
            components, previous = seen[t + 1]
            fresh = (components == previous).all(dim=1)
            assert int(fresh.sum()) >= h["n_unused"], (t, h)
            checked += 1
    assert checked


def test_a_stream_resamples_at_the_learning_coherence_bound(monkeypatch):
    # sqrt(2 ln K / d) for 200 atoms in 30 features (0.595), not 0.7.
    bounds = []
    real = _DuplicateMemory.coherent

    def coherent(self, components, codes, bound):
        bounds.append(bound)
        return real(self, components, codes, bound)

    monkeypatch.setattr(_DuplicateMemory, "coherent", coherent)
    X, _ = _learning_problem(64, 200, 30)
    atoms = torch.nn.functional.normalize(
        torch.randn(200, 30, generator=torch.Generator().manual_seed(0)).double(),
        dim=1,
    )
    online_dictionary_update(X, atoms, None, alpha=0.05, positive=True)
    assert bounds == [_coherence_bound(200, 30)] and bounds[0] < 0.6
