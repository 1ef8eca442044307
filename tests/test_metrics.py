import functools
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import permutations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.utils._pytree as pytree
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, RidgeCV
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted
from torch.utils._python_dispatch import TorchDispatchMode

from skdict import FISTACoder, OracleDictionary, _tensor
from skdict.datasets import make_compositional
from skdict.metrics import (
    _matching,
    _probing,
    _reconstruction,
    best_feature_auc,
    compositional_gap,
    dictionary_similarity,
    make_code_scorer,
    make_dictionary_similarity_scorer,
    mcc_score,
    mcc_scorer,
    neg_reconstruction_error_scorer,
    probe_accuracy,
    reconstruction_error,
    support_f1_scorer,
    support_scores,
)
from skdict.metrics._inputs import as_matrices
from skdict.metrics._probing import _per_feature_auc
from skdict.model_selection import CompositionalSplit

from .conftest import cuda, mps, random_dictionary, sparse_codes

seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------- brute force
def abs_corr(A, B):
    """|Pearson| between columns of A and B; constant columns correlate 0."""
    out = np.zeros((A.shape[1], B.shape[1]))
    for i in range(A.shape[1]):
        for j in range(B.shape[1]):
            a, b = A[:, i], B[:, j]
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                out[i, j] = abs(np.corrcoef(a, b)[0, 1])
    return out


def best_matching_mean(similarity):
    """Max over all one-to-one matchings of the row-averaged similarity."""
    p, q = similarity.shape
    best = 0.0
    if q >= p:
        for cols in permutations(range(q), p):
            best = max(best, similarity[range(p), cols].sum())
    else:
        for rows in permutations(range(p), q):
            best = max(best, similarity[rows, range(q)].sum())
    return best / p


def brute_force_mcc(Z, codes):
    varying = np.ptp(Z, axis=0) > 0
    return best_matching_mean(abs_corr(Z[:, varying], codes))


def tiny_codes(rng, n, p, q):
    """Sparse-ish non-negative codes with some constant columns."""
    Z = rng.uniform(size=(n, p)) * (rng.uniform(size=(n, p)) < 0.6)
    codes = rng.standard_normal((n, q))
    if p > 1:
        Z[:, rng.integers(p)] = 0.0
    if q > 1:
        codes[:, rng.integers(q)] = 3.0
    return Z, codes


# ------------------------------------------------------------------------ MCC
@settings(max_examples=40, deadline=None)
@given(seed=seeds, p=st.integers(1, 4), q=st.integers(1, 5))
def test_mcc_equals_brute_force_over_all_matchings(seed, p, q):
    rng = np.random.default_rng(seed)
    Z, codes = tiny_codes(rng, 12, p, q)
    if np.ptp(Z, axis=0).max() == 0:
        Z[0, 0] = 1.0
    expected = brute_force_mcc(Z, codes)
    for true in (Z, sp.csr_matrix(Z)):
        for pred in (codes, sp.csr_matrix(codes)):
            assert mcc_score(true, pred) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, p=st.integers(1, 8), extra=st.integers(0, 3))
def test_mcc_is_one_for_permuted_rescaled_codes(seed, p, extra):
    rng = np.random.default_rng(seed)
    Z = sparse_codes(rng, 30, p, max(1, p // 2))
    Z[0] += 0.5  # every latent varies
    scale = rng.choice([-1, 1], p) * rng.uniform(0.1, 10, p)
    codes = np.hstack([Z * scale + rng.standard_normal(p), np.zeros((30, extra))])
    codes = codes[:, rng.permutation(p + extra)]
    assert mcc_score(Z, codes) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, p=st.integers(1, 6), q=st.integers(1, 8))
def test_mcc_is_invariant_to_permuting_code_dimensions(seed, p, q):
    rng = np.random.default_rng(seed)
    Z, codes = tiny_codes(rng, 25, p, q)
    Z[0] = 1.0  # latents vary
    permuted = codes[:, rng.permutation(q)]
    assert mcc_score(Z, permuted) == pytest.approx(mcc_score(Z, codes), abs=1e-12)


def test_mcc_unmatched_latents_count_zero(rng):
    Z = rng.uniform(size=(50, 3))
    assert mcc_score(Z, Z[:, :2]) == pytest.approx(2 / 3)
    # constant latents are left out of the average
    Z[:, 1] = 0.0
    assert mcc_score(Z, Z[:, [2, 0]]) == pytest.approx(1.0)


@pytest.mark.parametrize("sparse", [False, True])
def test_mcc_never_exceeds_one(sparse):
    # A correlation is at most 1: rounding took identical uniform columns to
    # 1.0000000000000002 (seed 3), a score no matching could have.
    for seed in range(10):
        Z = np.random.default_rng(seed).uniform(size=(50, 3))
        codes = sp.csr_matrix(Z) if sparse else Z
        assert mcc_score(Z, codes) <= 1.0
        assert mcc_score(Z, codes) == pytest.approx(1.0)


def test_mcc_of_a_fully_stored_constant_sparse_column():
    # Column 0 is 5 in every row and stored in full (no implicit zeros): it is
    # constant, so it is left out of the average as in the dense matrix.
    Z = np.array([[5.0, 1], [5, 2], [5, 3], [5, 7]])
    assert sp.csr_matrix(Z).nnz == Z.size
    assert mcc_score(Z, Z[:, 1:]) == 1.0
    assert mcc_score(sp.csr_matrix(Z), Z[:, 1:]) == 1.0


def test_mcc_top_variance_keeps_the_highest_variance_dimensions(rng):
    Z = rng.uniform(size=(60, 3))
    Z[:, 2] = 0.0  # two varying latents -> two code dimensions compete
    quiet = 1e-3 * Z[:, :2]  # perfect but low-variance copies
    loud = 5 * rng.standard_normal((60, 2))
    codes = np.hstack([quiet, loud])
    assert mcc_score(Z, codes) == pytest.approx(1.0)
    top = mcc_score(Z, codes, top_variance=True)
    assert top == pytest.approx(brute_force_mcc(Z, loud), abs=1e-12)
    assert top < 0.6
    # with no more code dimensions than varying latents nothing is dropped
    assert mcc_score(Z, quiet, top_variance=True) == pytest.approx(1.0)


def test_mcc_accepts_torch_and_mixed_precision(rng):
    Z, codes = tiny_codes(rng, 40, 4, 5)
    Z[0] = 1.0
    expected = mcc_score(Z, codes)
    assert mcc_score(torch.from_numpy(Z), torch.from_numpy(codes)) == pytest.approx(
        expected
    )
    assert mcc_score(Z, codes.astype(np.float32)) == pytest.approx(expected, abs=1e-6)
    sparse_t = torch.from_numpy(Z).to_sparse()
    assert mcc_score(sparse_t, codes) == pytest.approx(expected)


@pytest.mark.parametrize(
    "metric",
    [
        lambda Z, C, D, E: mcc_score(Z, C, top_variance=True),
        lambda Z, C, D, E: dictionary_similarity(D, E, detailed=True).angular_errors,
        lambda Z, C, D, E: support_scores(Z, C),
        lambda Z, C, D, E: best_feature_auc(C, Z[:, 0] > 0),
        lambda Z, C, D, E: reconstruction_error(Z, C),
    ],
)
def test_an_ambient_autocast_region_changes_no_metric(rng, metric):
    # Scoring inside a model's bfloat16 evaluation loop ran the metrics'
    # products in bfloat16: identical dictionaries came out 5 degrees apart.
    Z = torch.from_numpy(sparse_codes(rng, 300, 20, 4)).float()
    C = Z + 0.05 * torch.from_numpy(rng.standard_normal(Z.shape)).float()
    D = torch.from_numpy(random_dictionary(rng, 20, 16)).float()
    E = D + 0.01 * torch.from_numpy(rng.standard_normal(D.shape)).float()
    expected = metric(Z, C, D, E)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = metric(Z, C, D, E)
    if isinstance(expected, dict):
        assert got == expected
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("scale", [1e20, 1e-25])
@pytest.mark.parametrize("sparse", [False, True])
def test_mcc_of_float32_columns_far_from_one(rng, scale, sparse):
    # Squares of 1e20 overflow float32 and those of 1e-25 underflow to zero;
    # the correlations of such columns must not become NaN or zero.
    Z, codes = tiny_codes(rng, 40, 4, 5)
    expected = mcc_score(Z, codes)
    Z32 = (Z * scale).astype(np.float32)
    Z_in = sp.csr_matrix(Z32) if sparse else Z32
    assert mcc_score(Z_in, Z32[:, [2, 0, 3, 1]]) == pytest.approx(1.0, abs=1e-6)
    scaled = (codes * scale).astype(np.float32)
    assert mcc_score(Z_in, scaled) == pytest.approx(expected, abs=1e-5)
    # top_variance ranks by the variance itself: a quiet dimension whose
    # values swing over its whole range must not displace a loud one.
    quiet = np.float32(0.01 * scale) * (-1.0) ** np.arange(40, dtype=np.float32)
    loud_and_quiet = np.c_[quiet, Z32[:, [2, 0, 3, 1]]]
    assert mcc_score(Z_in, loud_and_quiet, top_variance=True) == pytest.approx(
        1.0, abs=1e-6
    )


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_dictionary_similarity_of_float32_atoms_far_from_one(rng, scale):
    D = rng.standard_normal((5, 8))
    learned = (D[[3, 0, 4, 1, 2]] * scale).astype(np.float32)
    result = dictionary_similarity(
        (D * scale).astype(np.float32), learned, detailed=True
    )
    assert result.mean_cosine == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(result.matching, [1, 3, 4, 0, 2])
    np.testing.assert_allclose(result.norm_ratios, 1.0, rtol=1e-6)


def test_float32_mcc_over_many_rows(rng):
    # Float32 column norms over 10^6 rows were off by up to 1 % on the CPU:
    # codes twice the true ones scored 0.9914, noisy ones 0.918 instead of
    # 0.922, and sparse true codes gave another figure than dense ones.
    n = 300_000
    Z = (rng.uniform(size=(n, 2)) * (rng.uniform(size=(n, 2)) < 0.2)).astype(np.float32)
    assert 1 - mcc_score(Z, 2 * Z) < 1e-5
    codes = (Z + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    expected = mcc_score(Z.astype(float), codes.astype(float))
    assert mcc_score(Z, codes) == pytest.approx(expected, abs=1e-6)
    assert mcc_score(sp.csr_matrix(Z), codes) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mean", [1e2, 1e3, 1e4])
def test_float32_columns_near_a_large_mean_correlate_as_their_float64_copies(rng, mean):
    # A centre rounded to float32 is off by up to half an ulp of the mean:
    # at 1e4 +- 1e-2, MCC 0.9891 where the same values in float64 gave 0.9939.
    Z = (mean + 1e-2 * rng.uniform(size=(30, 3))).astype(np.float32)
    codes = (7.0 - 1.7 * Z[:, [2, 0, 1]].astype(np.float64)).astype(np.float32)
    expected = mcc_score(Z.astype(np.float64), codes.astype(np.float64))
    assert mcc_score(Z, codes) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_sparse_columns_near_a_large_mean_correlate_as_dense_ones(rng, shift):
    # Both sides sparse: the uncentred product less n m_a m_b cancelled the
    # digits of an always-active latent (float64, 100 +- 1e-4: MCC 0.99826
    # over 20 latents, one of them at 0.965).
    Z = rng.uniform(size=(5000, 20)) * (rng.uniform(size=(5000, 20)) < 0.1)
    Z[:, 0] = 100.0 + 1e-4 * rng.uniform(size=5000)
    codes = 2.0 * Z[:, ::-1]
    codes[:, -1] += shift  # another mean, the same correlations
    expected = mcc_score(Z, codes)
    assert expected == pytest.approx(1.0, abs=1e-9)
    assert mcc_score(sp.csr_matrix(Z), sp.csr_matrix(codes)) == pytest.approx(
        expected, abs=1e-9
    )


@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
def test_centred_sparse_products_equal_dense_correlations(rng, monkeypatch, density):
    # The centred products of two sparse sides, forced on ordinary columns
    # (they serve only columns that barely vary around a large mean).
    monkeypatch.setattr(_matching, "_MAX_CANCELLATION", 0.0)
    Z = rng.uniform(size=(60, 5)) * (rng.uniform(size=(60, 5)) < density)
    codes = np.hstack([Z[:, ::-1] + 0.3 * rng.uniform(size=(60, 5)), Z[:, :2]])
    codes *= rng.uniform(size=(60, 7)) < density
    expected = mcc_score(Z, codes)
    got = mcc_score(sp.csr_matrix(Z), sp.csr_matrix(codes))
    assert got == pytest.approx(expected, abs=1e-12)


def test_dictionary_similarity_of_few_long_float32_atoms(rng):
    # Products with at most 8 atoms on a side were summed over the features
    # row after row (MKL on AMD processors), and the norms taken in float32:
    # identical atoms of 10^6 features scored 0.99997.
    D = rng.standard_normal((4, 1_000_000)).astype(np.float32)
    result = dictionary_similarity(D, -3 * D[::-1], detailed=True)
    assert result.mean_cosine == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(result.norm_ratios, 3.0, rtol=1e-6)


def test_norm_ratios_beyond_float32s_range(rng):
    # Divided in float32: ratios of 1e40 overflowed to inf, 1e-40 lost digits.
    D = rng.standard_normal((3, 5))
    small, large = (D * 1e-20).astype(np.float32), (D * 1e20).astype(np.float32)
    up = dictionary_similarity(small, large, detailed=True).norm_ratios
    down = dictionary_similarity(large, small, detailed=True).norm_ratios
    np.testing.assert_allclose(up, 1e40, rtol=1e-6)
    np.testing.assert_allclose(down, 1e-40, rtol=1e-6)


def test_reconstruction_error_beyond_float64_squares():
    # 1e155 squared overflows float64; the mean, 1e306, does not.
    X = np.zeros((100, 100))
    X[3, 7] = 1e155
    assert reconstruction_error(X, np.zeros_like(X)) == pytest.approx(1e306)
    assert reconstruction_error(np.full((2, 2), 1e300), np.full((2, 2), -1e300)) == (
        np.inf
    )
    # Differences beyond float64's range themselves: inf, not inf / inf.
    assert reconstruction_error(np.full((2, 2), 1e308), np.full((2, 2), -1e308)) == (
        np.inf
    )


def test_mcc_in_blocks_of_rows_equals_one_product(rng, monkeypatch):
    # Statistics and products are taken a block of rows at a time, each side
    # in its own dtype: blocks of 3 rows give what one block gives.
    Z = sparse_codes(rng, 40, 5, 2)
    codes = np.hstack([Z[:, ::-1] + 0.1 * rng.standard_normal((40, 5)), Z[:, :2]])
    pairs = [
        (Z, codes.astype(np.float32)),
        (sp.csr_matrix(Z), codes),
        (Z, sp.csr_matrix(codes)),
        (sp.csr_matrix(Z), sp.csr_matrix(codes.astype(np.float32))),
    ]
    expected = [mcc_score(true, pred, top_variance=True) for true, pred in pairs]
    monkeypatch.setattr(_tensor, "BLOCK_ELEMENTS", 3 * 12)  # 3 rows of 5 + 7
    got = [mcc_score(true, pred, top_variance=True) for true, pred in pairs]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_metrics_products_ignore_the_matmul_precision(rng):
    # Under torch.set_float32_matmul_precision("medium") (bfloat16 products
    # on CPUs with AMX, TF32 on GPUs) identical float32 atoms were 1 degree
    # apart and MCC(Z, Z) 0.99976.
    data = make_compositional(50, 5, n_samples=2000, random_state=0)
    D, Z = data.dictionary.astype(np.float32), data.Z_val.astype(np.float32)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        result = dictionary_similarity(D, D, detailed=True)
        mcc = mcc_score(Z, Z)
    finally:
        torch.set_float32_matmul_precision(before)
    assert result.mean_cosine == pytest.approx(1.0, abs=1e-6)
    assert result.mean_angular_error < 1e-6
    # Float32 products of 2,000 rows: within 2e-6 in IEEE float32.
    assert mcc == pytest.approx(1.0, abs=1e-5)


def test_angular_errors_are_accurate_near_zero(rng):
    # arccos of a cosine rounded near 1 put identical float32 atoms 2e-4 rad
    # apart and reported a rotation of 1e-5 rad as 1.9e-4.
    D = rng.standard_normal((6, 10))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    assert np.all(
        dictionary_similarity(D.astype(np.float32), -D, detailed=True).angular_errors
        < 1e-6
    )
    # Each atom turned by 1e-5 rad towards a direction orthogonal to it.
    other = rng.standard_normal((6, 10))
    other -= (other * D).sum(axis=1, keepdims=True) * D
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    turned = np.cos(1e-5) * D + np.sin(1e-5) * other
    errors = dictionary_similarity(D, turned, detailed=True).angular_errors
    np.testing.assert_allclose(errors, 1e-5, rtol=1e-6)


def test_zero_atoms_match_nothing(rng):
    # A zero learned atom (a pruned latent) was paired with a true atom at
    # cosine 0 and its norm ratio 0 entered mean_norm_ratio.
    D = rng.standard_normal((4, 6))
    learned = np.vstack([D[[2, 0, 1]], np.zeros(6)])
    result = dictionary_similarity(D, learned, detailed=True)
    np.testing.assert_array_equal(result.matching, [1, 2, 0, -1])
    assert np.isnan(result.norm_ratios[3])
    assert result.mean_norm_ratio == pytest.approx(1.0)
    assert result.angular_errors[3] == pytest.approx(np.pi / 2)
    assert result.mean_cosine == pytest.approx(0.75)
    zero_true = dictionary_similarity(np.vstack([D, np.zeros(6)]), D, detailed=True)
    assert zero_true.matching[4] == -1


def test_reconstruction_error_of_float32_extremes_of_opposite_signs():
    # Subtracted in float32 before widening: 3e38 - (-3e38) overflowed to inf.
    X = np.full((2, 2), 3e38, dtype=np.float32)
    assert reconstruction_error(X, -X) == pytest.approx(4 * 9e76, rel=1e-6)


def test_sparse_codes_with_stored_zeros(rng):
    Z = rng.uniform(size=(20, 3))
    Z[:, 1] = 0.0
    # a few explicit zeros in the constant column 1, the rest implicit
    rows, cols = np.nonzero(Z)
    rows, cols = np.r_[rows, np.arange(5)], np.r_[cols, np.ones(5, int)]
    stored = sp.csr_matrix((Z[rows, cols], (rows, cols)), shape=Z.shape)
    assert stored.nnz == 45
    codes = rng.standard_normal((20, 4))
    assert mcc_score(stored, codes) == pytest.approx(mcc_score(Z, codes))
    assert mcc_score(stored, Z[:, [2, 0]]) == pytest.approx(1.0)


def test_a_pandas_frame_of_sparse_codes_scores_as_scipy_sparse(rng):
    pd = pytest.importorskip("pandas")
    Z = sparse_codes(rng, 60, 5, 2)
    codes = Z[:, ::-1] + 0.1 * rng.standard_normal((60, 5))
    frame = pd.DataFrame.sparse.from_spmatrix(sp.csr_matrix(Z))
    assert mcc_score(frame, codes) == mcc_score(sp.csr_matrix(Z), codes)
    assert mcc_score(codes, frame) == mcc_score(codes, sp.csr_matrix(Z))
    assert support_scores(frame, frame) == support_scores(Z, Z)


def test_sparse_codes_are_never_densified(rng, monkeypatch):
    # The metrics of a wide sparse autoencoder's codes on many samples: a
    # dense copy of the codes would be (n_samples, n_components).
    Z = sparse_codes(rng, 200, 8, 2)
    codes = np.hstack([3 * Z[:, ::-1], sparse_codes(rng, 200, 40, 3)])
    y = (Z[:, 3] > 0).astype(int)
    expected = [
        mcc_score(Z, codes),
        mcc_score(Z, codes, top_variance=True),
        support_scores(Z, codes),
        best_feature_auc(codes, y, codes[::-1], y[::-1]),
    ]
    densify = torch.Tensor.to_dense

    def refuse_codes(tensor, *args, **kwargs):
        assert tuple(tensor.shape) != codes.shape, "the codes were densified"
        return densify(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to_dense", refuse_codes)
    monkeypatch.setattr(_probing, "_RANK_BLOCK", 200 * 7)  # blocks of 7 columns
    sparse = sp.csr_matrix(codes)
    got = best_feature_auc(sparse, y, sparse[::-1], y[::-1])
    assert got == expected[3]
    assert got["feature"] == 4  # codes[:, 4] is 3 * Z[:, 3]
    for true in (Z, sp.csr_matrix(Z)):
        got = [
            mcc_score(true, sp.csr_matrix(codes)),
            mcc_score(true, sp.csr_matrix(codes), top_variance=True),
            support_scores(true, sp.csr_matrix(codes)),
        ]
        assert got[0] == pytest.approx(expected[0], abs=1e-12)
        assert got[1] == pytest.approx(expected[1], abs=1e-12)
        assert got[2] == pytest.approx(expected[2], abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mcc_of_sparse_columns_that_are_mostly_non_zero(rng, dtype):
    # Sparse columns are correlated from uncentred products, centred
    # afterwards: columns far from zero everywhere cancel many digits, and
    # float32 sums of 20,000 values near 10 lose the variance altogether.
    Z = rng.uniform(size=(20_000, 3))
    codes = np.hstack([10 + 0.01 * Z[:, [2, 0]], 1 + 1e-3 * Z])
    codes[:, 2:] += 1e-3 * rng.standard_normal((20_000, 3))
    expected = mcc_score(Z, codes)
    assert expected < 0.99  # the noise matters
    Z, codes = Z.astype(dtype), codes.astype(dtype)
    for true in (Z, sp.csr_matrix(Z)):
        for pred in (codes, sp.csr_matrix(codes)):
            tolerance = 1e-7 if dtype == np.float64 else 1e-5
            assert mcc_score(true, pred) == pytest.approx(expected, abs=tolerance)


@cuda
def test_mcc_on_cuda(rng):
    Z, codes = tiny_codes(rng, 40, 4, 5)
    Z[0] = 1.0
    expected = mcc_score(Z, codes)
    on_gpu = torch.from_numpy(codes).cuda()
    assert mcc_score(sp.csr_matrix(Z), on_gpu) == pytest.approx(expected)


class _Float64Ops(TorchDispatchMode):
    """Names the operators that produce a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64:
                self.ops.add(str(func))
        return out


def test_metrics_of_float32_codes_make_no_float64_tensor_where_mps_lacks_it(
    rng, monkeypatch
):
    # Apple's MPS backend has no float64: the metrics sum in float32 there.
    # Simulated on the CPU: every module's accumulation dtype is MPS's.
    # support_scores made float64 per-sample rates and tie-break scores.
    for module in (_matching, _reconstruction):
        monkeypatch.setattr(
            module, "accumulation_dtype", lambda device, fallback: fallback
        )
    Z = torch.from_numpy(sparse_codes(rng, 60, 6, 2)).float()
    codes = Z * (1 + 0.01 * torch.rand(60, 6))
    D = torch.from_numpy(random_dictionary(rng, 6, 5)).float()
    with _Float64Ops() as mode:
        scores = support_scores(Z, codes)
        mcc = mcc_score(Z, codes)
        similarity = dictionary_similarity(D, D.flip(0))
    assert mode.ops == set()
    assert scores["f1"] == pytest.approx(1.0)
    assert mcc == pytest.approx(1.0, abs=1e-3)
    assert similarity == pytest.approx(1.0, abs=1e-6)


@mps
def test_metrics_on_mps(rng):
    Z = sparse_codes(rng, 60, 6, 2)
    codes = Z * (1 + 0.01 * rng.random((60, 6)))
    on_mps = torch.from_numpy(codes).float().to("mps")
    expected = support_scores(Z, codes)
    assert support_scores(Z, on_mps)["f1"] == pytest.approx(expected["f1"])
    assert mcc_score(Z, on_mps) == pytest.approx(mcc_score(Z, codes), abs=1e-5)


@pytest.mark.parametrize(
    "Z, codes, match",
    [
        (np.ones((5, 2)), np.ones((5, 2)), "no latent with non-zero variance"),
        (np.eye(5), np.eye(4), "as many rows"),
        (np.ones(5), np.ones((5, 2)), "Z_true must be a 2-D array"),
        (np.eye(3), [[np.nan] * 3] * 3, "codes contains NaN"),
    ],
)
def test_mcc_rejects_bad_input(Z, codes, match):
    with pytest.raises(ValueError, match=match):
        mcc_score(Z, codes)


@pytest.mark.parametrize("sparse", [False, True])
def test_metrics_reject_empty_input(sparse):
    empty = np.zeros((0, 3))
    Z = sp.csr_matrix(empty) if sparse else empty
    with pytest.raises(ValueError, match="Z_true has 0 rows"):
        mcc_score(Z, empty)
    with pytest.raises(ValueError, match="Z_true has 0 rows"):
        support_scores(Z, empty)
    with pytest.raises(ValueError, match="X has 0 rows"):
        reconstruction_error(empty, empty)
    with pytest.raises(ValueError, match="true_dictionary has no atoms"):
        dictionary_similarity(empty, np.eye(3))
    with pytest.raises(ValueError, match="dictionary has no atoms"):
        dictionary_similarity(np.eye(3), empty)


@pytest.mark.parametrize("kind", ["torch", "scipy"])
def test_metrics_reject_codes_of_no_columns(kind):
    # NumPy input meets check_array; tensors and sparse matrices scored 0 or
    # crashed (IndexError, ZeroDivisionError).
    empty = np.zeros((20, 0))
    empty = torch.from_numpy(empty) if kind == "torch" else sp.csr_matrix(empty)
    Z, labels = np.eye(20)[:, :3], np.arange(20) % 2
    with pytest.raises(ValueError, match="codes has 0 columns"):
        mcc_score(Z, empty)
    with pytest.raises(ValueError, match="codes has 0 columns"):
        support_scores(Z, empty)
    with pytest.raises(ValueError, match="codes_id has 0 columns"):
        best_feature_auc(empty, labels)
    with pytest.raises(ValueError, match="X has 0 columns"):
        reconstruction_error(empty, empty)
    if kind == "torch":  # sparse dictionaries are refused as such
        atoms = torch.zeros((3, 0))
        with pytest.raises(ValueError, match="true_dictionary has atoms of 0 feat"):
            dictionary_similarity(atoms, atoms)


@pytest.mark.parametrize("threshold", [np.nan, -1.0, "a", None])
def test_thresholds_are_checked(threshold):
    with pytest.raises(ValueError, match="'threshold' parameter of support_scores"):
        support_scores(np.eye(3), np.eye(3), threshold=threshold)
    with pytest.raises(
        ValueError, match="'threshold' parameter of dictionary_similarity"
    ):
        dictionary_similarity(np.eye(3), np.eye(3), threshold=threshold)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_flags_must_be_booleans(flag):
    # A truthy string silently chose a metric variant.
    with pytest.raises(ValueError, match="'top_variance' parameter of mcc_score"):
        mcc_score(np.eye(3), np.eye(3), top_variance=flag)
    with pytest.raises(ValueError, match="'detailed' parameter"):
        dictionary_similarity(np.eye(3), np.eye(3), detailed=flag)


# ------------------------------------------------------ dictionary similarity
@settings(max_examples=25, deadline=None)
@given(seed=seeds, n_atoms=st.integers(1, 8), n_features=st.integers(1, 6))
def test_dictionary_similarity_is_one_for_permuted_flipped_dictionary(
    seed, n_atoms, n_features
):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n_atoms, n_features))
    order = rng.permutation(n_atoms)
    scale = rng.choice([-1, 1], n_atoms) * rng.uniform(0.1, 10, n_atoms)
    learned = scale[:, None] * D[order]
    assert dictionary_similarity(D, learned) == pytest.approx(1.0)
    info = dictionary_similarity(D, learned, detailed=True)
    if n_features > 1:  # in 1-D every pair of atoms is parallel
        np.testing.assert_array_equal(order[info.matching], np.arange(n_atoms))
        np.testing.assert_allclose(info.norm_ratios, np.abs(scale[info.matching]))
    np.testing.assert_allclose(info.angular_errors, 0.0, atol=2e-7)
    assert info.fraction_close == 1.0


@settings(max_examples=30, deadline=None)
@given(seed=seeds, p=st.integers(1, 4), q=st.integers(1, 5))
def test_dictionary_similarity_equals_brute_force(seed, p, q):
    rng = np.random.default_rng(seed)
    true, learned = rng.standard_normal((p, 4)), rng.standard_normal((q, 4))
    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    cos = np.abs(unit(true) @ unit(learned).T)
    info = dictionary_similarity(true, learned, detailed=True, threshold=0.5)
    assert info.mean_cosine == pytest.approx(best_matching_mean(cos), abs=1e-12)
    matched = info.matching >= 0
    assert matched.sum() == min(p, q)
    np.testing.assert_allclose(
        info.cosines[matched], cos[matched, info.matching[matched]]
    )
    np.testing.assert_array_equal(info.cosines[~matched], 0.0)
    assert np.isnan(info.norm_ratios[~matched]).all()
    assert info.fraction_close == pytest.approx((info.cosines > 0.5).mean())


def test_dictionary_similarity_norm_ratio_of_a_zero_true_atom_is_undefined():
    # A zero true atom (a dead atom of a learned reference) has no norm to
    # compare with: NaN, not inf, and the mean skips it.
    true = np.eye(3)
    true[2] = 0.0
    info = dictionary_similarity(true, 2 * np.eye(3), detailed=True)
    np.testing.assert_array_equal(info.norm_ratios[:2], 2.0)
    assert np.isnan(info.norm_ratios[2])
    assert info.mean_norm_ratio == 2.0
    assert np.isnan(
        dictionary_similarity(
            np.zeros((2, 3)), np.eye(3), detailed=True
        ).mean_norm_ratio
    )


def test_dictionary_similarity_fraction_close_is_strictly_above_threshold():
    # fraction_close counts cosines above the threshold, strictly: an
    # unmatched true atom (cosine 0) is not close even at threshold=0.
    info = dictionary_similarity(np.eye(2), np.eye(2)[:1], detailed=True, threshold=0.0)
    np.testing.assert_array_equal(info.cosines, [1.0, 0.0])
    assert info.fraction_close == 0.5


def test_dictionary_similarity_of_estimators(rng):
    D = random_dictionary(rng, 4, 6)
    coder = FISTACoder(dictionary=D).fit(rng.standard_normal((3, 6)))
    assert dictionary_similarity(D, coder) == pytest.approx(1.0)
    assert dictionary_similarity(coder, -D[::-1]) == pytest.approx(1.0)
    zero = np.vstack([D[:3], np.zeros(6)])
    assert dictionary_similarity(D, zero) == pytest.approx(0.75)
    zero32 = torch.from_numpy(zero).float()
    assert dictionary_similarity(D, zero32) == pytest.approx(0.75)
    with pytest.raises(NotFittedError):
        dictionary_similarity(D, PCA())
    with pytest.raises(
        ValueError, match="dimension 6 but dictionary has atoms of dimension 5"
    ):
        dictionary_similarity(D, D[:, :5])


# ------------------------------------------------------------ support scores
def brute_force_support(Z, codes, matching, threshold):
    """Per-sample sets of (true latent) active indices, compared in Python."""
    code_to_latent = {c: l for l, c in enumerate(matching) if c >= 0}
    P, R, F, L0t, L0p = [], [], [], [], []
    for z, c in zip(Z, codes, strict=True):
        true = set(np.flatnonzero(np.abs(z) > threshold))
        pred = set(np.flatnonzero(np.abs(c) > threshold))
        tp = sum(code_to_latent.get(j) in true for j in pred)
        p = tp / len(pred) if pred else float(not true)
        r = tp / len(true) if true else float(not pred)
        P.append(p), R.append(r), F.append(2 * p * r / (p + r) if p + r else 0.0)
        L0t.append(len(true)), L0p.append(len(pred))
    return dict(
        precision=np.mean(P),
        recall=np.mean(R),
        f1=np.mean(F),
        l0_true=np.mean(L0t),
        l0_pred=np.mean(L0p),
    )


@settings(max_examples=40, deadline=None)
@given(seed=seeds, p=st.integers(1, 6), q=st.integers(1, 6))
def test_support_scores_equal_brute_force(seed, p, q):
    rng = np.random.default_rng(seed)
    Z, codes = tiny_codes(rng, 15, p, q)
    codes[np.abs(codes) < 0.7] = 0.0
    codes[0, 0] = 5e-5  # below the threshold
    matching = np.full(p, -1)
    chosen = rng.permutation(q)[: min(p, q)]
    matching[rng.permutation(p)[: chosen.size]] = chosen
    expected = brute_force_support(Z, codes, matching, 1e-4)
    for true in (Z, sp.csr_matrix(Z)):
        for pred in (codes, sp.csr_matrix(codes), torch.from_numpy(codes).to_sparse()):
            got = support_scores(true, pred, matching=matching)
            assert got == pytest.approx(expected, abs=1e-12)


def test_support_scores_threshold_is_strict_in_every_format():
    # An entry equal to the threshold is inactive, whether the codes are
    # dense or sparse: codes[0, 1] == 0.5 is not a false positive.
    Z = np.array([[1.0, 0.0], [0.0, 1.0]])
    codes = np.array([[1.0, 0.5], [0.0, 1.0]])
    expected = brute_force_support(Z, codes, [0, 1], 0.5)
    assert expected["precision"] == 1.0
    for true in (Z, sp.csr_matrix(Z)):
        for pred in (codes, sp.csr_matrix(codes), torch.from_numpy(codes).to_sparse()):
            assert support_scores(true, pred, threshold=0.5, matching=[0, 1]) == (
                pytest.approx(expected, abs=1e-12)
            )
        # The threshold holds for the true codes too.
        got = support_scores(sp.csr_matrix(codes), Z, threshold=0.5, matching=[0, 1])
        assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_first", [3, 5, 6, 7, 9])
def test_complementary_latents_match_their_own_columns(n_first, dtype):
    # The one-hot codes of two classes: each column correlates +1 and -1 with
    # the two latents, and rounding decided the Hungarian tie, matching each
    # latent to the other's column (support F1 0 for identical codes). The
    # tie goes to the overlapping supports, also for negated codes.
    first = np.r_[np.ones(n_first), np.zeros(12 - n_first)]
    Z = np.stack([first, 1 - first], axis=1).astype(dtype)
    for codes in (Z, -Z, torch.from_numpy(Z), sp.csr_matrix(Z)):
        assert support_scores(Z, codes)["f1"] == 1.0
    assert mcc_score(Z, Z) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(8))
def test_complementary_latents_on_many_sparse_rows(seed):
    # The sparse path's float64 correlations round by more than a thousand
    # machine epsilons at 1e5 rows: an epsilon-sized tie break lost there.
    first = np.random.default_rng(seed).random(100_000) < 0.3
    Z = sp.csr_matrix(np.stack([first, ~first], axis=1).astype(float))
    assert support_scores(Z, Z)["f1"] == 1.0


def test_samples_with_no_active_latent(rng):
    # Concept labels where some samples hold no concept: identical codes
    # scored 0.75 (an empty support counted as a miss) instead of 1.
    Z = np.array([[1.0, 0], [0, 2], [0, 0], [3, 1]])
    for codes in (Z, sp.csr_matrix(Z), torch.from_numpy(Z).to_sparse()):
        scores = support_scores(Z, codes, matching=[0, 1])
        assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0
    # A code where there is nothing to find, or none where there is: 0.
    codes = np.array([[1.0, 0], [0, 2], [0, 4], [0, 0]])
    scores = support_scores(Z, codes, matching=[0, 1])
    assert scores == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "l0_true": 1.0, "l0_pred": 0.75}
    )


def test_support_matching_follows_clearly_higher_correlations(rng):
    # The overlap only decides near-ties: a code dimension correlating
    # clearly better wins over one whose support overlaps more.
    z = rng.uniform(size=400) * (rng.random(400) < 0.5)
    partial = np.where(z > 0.5, z, 0.0)  # high correlation, half the support
    everywhere = z + 0.8 * rng.uniform(size=400)  # all of it, lower
    Z, codes = z[:, None], np.stack([partial, everywhere], axis=1)
    assert mcc_score(Z, codes[:, :1]) > mcc_score(Z, codes[:, 1:]) + 0.05
    by_correlation = support_scores(Z, codes, matching=np.array([0]))
    assert support_scores(Z, codes) == by_correlation


def test_metrics_sum_in_blocks_of_rows_alike(rng, monkeypatch):
    # Column sums and support overlaps go through the rows a block at a
    # time; blocks of a few rows give the same values as one block.
    Z = (rng.random((50, 6)) < 0.3) * rng.uniform(size=(50, 6))
    codes = np.hstack([Z, rng.uniform(size=(50, 3))]).astype(np.float32)
    codes[:, :6] += 1e-3 * rng.standard_normal((50, 6)).astype(np.float32)
    expected = mcc_score(Z, codes), support_scores(Z, codes)
    monkeypatch.setattr(_tensor, "BLOCK_ELEMENTS", 20)
    got = mcc_score(Z, codes), support_scores(Z, codes)
    assert got[0] == pytest.approx(expected[0], abs=1e-6)
    assert got[1] == pytest.approx(expected[1], abs=1e-12)
    # The overlap itself, against counting.
    active_true, active_codes = np.abs(Z) > 1e-4, np.abs(codes) > 1e-4
    counted = (active_true[:, :, None] & active_codes[:, None, :]).mean(axis=0)
    for codes_form in (torch.from_numpy(codes), torch.from_numpy(codes).to_sparse()):
        overlap = _matching._support_overlap(torch.from_numpy(Z), codes_form, 1e-4)
        np.testing.assert_allclose(overlap.numpy(), counted, rtol=1e-6)
    # The active entries, found a block of rows at a time, in row-major order.
    rows, cols = _matching._active_entries(torch.from_numpy(codes), 1e-4)
    expected_rows, expected_cols = np.nonzero(active_codes)
    np.testing.assert_array_equal(rows.numpy(), expected_rows)
    np.testing.assert_array_equal(cols.numpy(), expected_cols)


def test_support_matching_is_the_same_in_every_format(rng):
    # Near-ties are decided by support overlap with one absolute weight, so
    # float32 and float64, dense and sparse codes are matched alike.
    first = rng.random(400) < 0.4
    Z = np.stack([first, ~first], axis=1) * rng.uniform(0.5, 1.0, (400, 2))
    codes = Z + 1e-6 * rng.standard_normal(Z.shape) * (Z > 0)
    scores = {
        support_scores(Z_form, codes_form)["f1"]
        for Z_form, codes_form in [
            (Z, codes),
            (Z.astype(np.float32), codes.astype(np.float32)),
            (sp.csr_matrix(Z), sp.csr_matrix(codes)),
            (sp.csr_matrix(Z.astype(np.float32)), codes.astype(np.float32)),
        ]
    }
    assert scores == {1.0}


@pytest.mark.parametrize("mean", [1e2, 1e3, 1e4])
def test_mcc_of_identical_near_constant_float32_columns(mean):
    # float32 sums of always-active columns, in an order set by the matrix's
    # width, centred identical columns differently (0.969 at mean 1e4).
    rng = np.random.default_rng(0)
    Z = (mean + 1e-2 * rng.uniform(size=(30, 3))).astype(np.float32)
    codes = np.hstack([Z, np.full((30, 1), 5.0, np.float32)])
    assert mcc_score(Z, codes) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("threshold", [0.1, 0.3, 1e-4])
def test_support_thresholds_are_exact_for_float32_codes(rng, threshold):
    # The threshold rounded to float32: codes equal to float32(0.1), above
    # 0.1, counted as inactive, their float64 copies as active.
    Z = sparse_codes(rng, 30, 4, 2)
    at = np.float32(threshold)
    codes = np.where(Z != 0, at, np.float32(0)).astype(np.float32)
    codes[::3] = np.nextafter(at, np.float32(0))  # below or at the threshold
    for fmt in (np.asarray, torch.from_numpy, sp.csr_matrix):
        got = support_scores(Z, fmt(codes), threshold=threshold, matching=np.arange(4))
        expected = support_scores(
            Z, codes.astype(np.float64), threshold=threshold, matching=np.arange(4)
        )
        assert got == pytest.approx(expected, abs=0)


def test_support_scores_of_a_latent_active_in_every_sample(rng):
    # Binary concepts, one present throughout the split: constant, so left
    # out of the correlation matching, it counted as missed in every sample
    # beside its own code column (F1 0.51 for the true codes themselves).
    Z = (rng.uniform(size=(8, 4)) < 0.5).astype(float)
    Z[:, 0] = 1.0
    for codes in (Z, 2 * Z[:, [3, 1, 0, 2]], sp.csr_matrix(Z)):
        assert support_scores(Z, codes)["f1"] == 1.0
    # Every latent constant: matched on the overlap alone (MCC is undefined).
    assert support_scores(np.ones((5, 2)), np.ones((5, 2)))["f1"] == 1.0
    # A latent active nowhere is matched to nothing and counts nothing.
    never = np.c_[Z, np.zeros(8)]
    assert support_scores(never, np.c_[Z, Z[:, 1]])["recall"] == 1.0
    assert support_scores(np.zeros((5, 2)), np.zeros((5, 2)))["f1"] == 1.0


def test_support_scores_default_matching_is_the_correlation_matching(rng):
    Z = sparse_codes(rng, 40, 6, 2)
    order = rng.permutation(6)
    codes = 3 * Z[:, order]
    scores = support_scores(Z, codes)
    assert scores == pytest.approx(
        dict(precision=1, recall=1, f1=1, l0_true=2, l0_pred=2)
    )
    # a dictionary matching (true latent -> code column) gives the same answer
    D = random_dictionary(rng, 6, 4)
    info = dictionary_similarity(D, D[order], detailed=True)
    assert support_scores(Z, codes, matching=info.matching)["f1"] == 1.0


@pytest.mark.parametrize(
    "matching, match",
    [
        ([0, 1], "shape \\(3,\\)"),
        ([0, 1, 5], "lie in \\[-1, 2\\]"),
        ([0, 0, 1], "one latent"),
        ([0.0, 1.0, 2.0], "integer array"),
    ],
)
def test_support_scores_rejects_bad_matching(matching, match):
    with pytest.raises(ValueError, match=match):
        support_scores(np.eye(3), np.eye(3), matching=matching)


# ------------------------------------------------------------------- probing
@settings(max_examples=30, deadline=None)
@given(seed=seeds, n=st.integers(4, 30), levels=st.integers(2, 4))
def test_per_feature_auc_equals_roc_auc_score(seed, n, levels):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, levels, size=(n, 5)).astype(float)  # many ties
    y = np.arange(n) % 2
    rng.shuffle(y)
    got = _per_feature_auc(torch.from_numpy(codes), y).numpy()
    expected = [roc_auc_score(y, codes[:, j]) for j in range(5)]
    np.testing.assert_allclose(got, np.maximum(expected, 1 - np.asarray(expected)))


def test_best_feature_auc_selects_on_id_and_reports_on_ood(rng):
    n = 200
    y_id, y_ood = rng.integers(0, 2, n), rng.integers(0, 2, n)
    codes_id = rng.standard_normal((n, 4))
    codes_id[:, 2] = -y_id + 0.1 * rng.standard_normal(n)  # anti-correlated
    codes_ood = rng.standard_normal((n, 4))
    # Out of distribution another dimension detects the concept best: the
    # reported AUC is feature 2's all the same (selecting on OOD data would
    # flatter every method).
    codes_ood[:, 0] = y_ood + 0.1 * rng.standard_normal(n)
    result = best_feature_auc(codes_id, y_id, codes_ood, y_ood)
    assert result["feature"] == 2
    assert result["auc_id"] == 1.0
    expected = roc_auc_score(y_ood, codes_ood[:, 2])
    assert result["auc_ood"] == pytest.approx(max(expected, 1 - expected))
    assert result["auc_ood"] < 0.7
    on_torch = best_feature_auc(torch.from_numpy(codes_id), torch.from_numpy(y_id))
    assert on_torch == {"auc_id": 1.0, "auc_ood": None, "feature": 2}


@settings(max_examples=30, deadline=None)
@given(seed=seeds, n=st.integers(4, 40))
def test_best_feature_auc_breaks_ties_towards_the_first_dimension(seed, n):
    # A dimension and its negative separate the labels equally well.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, n).astype(float)
    y = np.arange(n) % 2
    rng.shuffle(y)
    for codes in (np.c_[x, -x], np.c_[-x, x], np.c_[x, x]):
        assert best_feature_auc(codes, y)["feature"] == 0


@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_reconstruction_error_of_float32_data_far_from_one(rng, scale, monkeypatch):
    # float32 squares of 1e20 overflowed to inf, those of 1e-25 underflowed
    # to 0: they are summed in float64, a block of rows at a time.
    monkeypatch.setattr(_tensor, "BLOCK_ELEMENTS", 12)  # 3 rows a block
    X = rng.standard_normal((10, 4))
    X_hat = X + rng.standard_normal((10, 4))
    X32, X_hat32 = (X * scale).astype(np.float32), (X_hat * scale).astype(np.float32)
    expected = np.mean((X32.astype(float) - X_hat32.astype(float)) ** 2)
    assert reconstruction_error(X32, X_hat32) == pytest.approx(expected, rel=1e-6)


def test_labels_with_nan_are_refused():
    # np.unique counted NaN as one more class: [nan, 0, 0] passed as binary
    # labels and the AUC came back NaN.
    codes = np.eye(3)
    for y in ([np.nan, 0, 0], [np.nan, np.nan, 1]):
        with pytest.raises(ValueError, match="y_id contains missing values"):
            best_feature_auc(codes, y)
    with pytest.raises(ValueError, match="y_ood contains missing values"):
        best_feature_auc(codes, [0, 1, 1], codes, [1, np.nan, 0])
    for y in (
        np.array([None, "a", "b"], dtype=object),
        np.array([np.nan, 0, 1], dtype=object),
    ):
        with pytest.raises(ValueError, match="y_id contains missing values"):
            best_feature_auc(codes, y)


@pytest.mark.parametrize(
    "call",
    [
        lambda C, y: best_feature_auc(C, y),
        lambda C, y: probe_accuracy(C, y),
        lambda C, y: best_feature_auc(C, np.arange(50) % 2, C, y),
    ],
)
def test_labels_without_values_are_named(call):
    # A meta tensor (shapes, no data) failed inside torch's copy to NumPy.
    C = np.random.default_rng(0).uniform(size=(50, 4))
    with pytest.raises(ValueError, match=r"y_(id|ood) is a tensor on the meta device"):
        call(C, torch.empty(50, device="meta"))


@pytest.mark.parametrize(
    ("metric", "names"),
    [
        (mcc_score, ("Z_true", "codes")),
        (support_scores, ("Z_true", "codes")),
        (reconstruction_error, ("X", "X_reconstructed")),
        (dictionary_similarity, ("true_dictionary", "dictionary")),
    ],
)
def test_meta_matrices_are_named_in_any_position(metric, names):
    # A meta tensor after a NumPy array moved that array to the meta device
    # first, and the message named a device= parameter these metrics lack.
    A = np.random.default_rng(0).uniform(size=(10, 3))
    meta = torch.empty(10, 3, device="meta")
    for position, name in enumerate(names):
        arrays = [A, A]
        arrays[position] = meta
        with pytest.raises(
            ValueError, match=rf"^{name} is a tensor on the meta device"
        ):
            metric(*arrays)


def test_probe_accuracy_and_compositional_gap_name_bad_arguments():
    with pytest.raises(ValueError, match="'max_iter' parameter of probe_accuracy"):
        probe_accuracy(np.eye(4), [0, 1, 0, 1], max_iter=True)
    # One class: scikit-learn's solver message did not name y_id.
    with pytest.raises(ValueError, match=r"y_id must hold at least two .* \[0\.0\]"):
        probe_accuracy(np.eye(4), np.zeros(4))
    # Labels that NumPy cannot sort failed inside np.unique.
    mixed = np.array(["a", 1] * 2, dtype=object)
    for metric, name in [(probe_accuracy, "y_id"), (best_feature_auc, "y_id")]:
        with pytest.raises(ValueError, match=f"{name} mixes labels of types"):
            metric(np.eye(4), mixed)
    with pytest.raises(ValueError, match="y_ood mixes labels of types"):
        probe_accuracy(np.eye(4), [0, 1, 0, 1], np.eye(4), mixed)
    # Unused with a probe of one's own.
    probe = LogisticRegression()
    probe_accuracy(np.eye(4), [0, 1, 0, 1], max_iter=None, probe=probe)
    pca = PCA(n_components=1).fit(np.eye(3))
    with pytest.raises(ValueError, match="X_ood must be a 2-D array"):
        compositional_gap(pca, np.eye(3), None)
    # The estimator's own check says "Input X": which of the two?
    for X_id, X_ood, name in [
        (np.full((2, 3), np.nan), np.eye(3), "X_id"),
        (np.eye(3), np.full((2, 3), np.inf), "X_ood"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: Input X contains"):
            compositional_gap(pca, X_id, X_ood)
    with pytest.raises(ValueError, match="X_id must be a 2-D array"):
        compositional_gap(pca, np.ones(3), np.eye(3))
    # An estimator that cannot reconstruct is its own problem, not X_id's.
    regression = LinearRegression().fit(np.eye(3), np.ones(3))
    with pytest.raises(TypeError, match=r"^LinearRegression has no inverse_transform"):
        compositional_gap(regression, np.eye(3), np.eye(3))
    with pytest.raises(TypeError, match=r"^LinearRegression has no inverse_transform"):
        neg_reconstruction_error_scorer(regression, np.eye(3))
    # A dense-only estimator's refusal of sparse input names its array too.
    coder = FISTACoder(np.eye(3)).fit(np.eye(3))
    with pytest.raises(TypeError, match=r"^X_ood: Sparse data was passed"):
        compositional_gap(coder, np.eye(3), sp.csr_matrix(np.eye(3)))
    with pytest.raises(
        ValueError, match="X_ood has 5 features, but PCA was fitted on 3"
    ):
        compositional_gap(pca, np.eye(3), np.ones((2, 5)))
    with pytest.raises(
        ValueError, match="X_id has 2 features, but PCA was fitted on 3"
    ):
        compositional_gap(pca, np.ones((2, 2)), np.eye(3))


def test_probe_accuracy_transfers_the_id_probe(rng):
    n = 200
    codes = rng.uniform(size=(n, 3))
    y = (codes[:, 1] > 0.5).astype(int)
    result = probe_accuracy(codes, y, codes, 1 - y)
    assert result == {"acc_id": 1.0, "acc_ood": 0.0}
    labels = np.where(y == 1, "yes", "no")
    assert probe_accuracy(codes, labels)["acc_id"] == 1.0


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_probe_accuracy_does_not_depend_on_the_codes_scale(sparse):
    # The unpenalised probe's optimum does not depend on the codes' scale, but
    # on separable codes L-BFGS stops on a hyperplane that did (true codes x
    # 100: OOD accuracy 0.488 instead of 0.97), and small codes stopped it at
    # once (0.71 in distribution): two methods' codes at different scales
    # were probed differently.
    data = make_compositional(50, 5, n_samples=1000, random_state=0)
    convert = sp.csr_array if sparse else np.asarray
    results = [
        probe_accuracy(
            convert(data.Z_val * scale),
            data.y_val,
            convert(data.Z_ood * scale),
            data.y_ood,
        )
        for scale in (1e-6, 1e-2, 1.0, 1e2, 1e6)
    ]
    assert all(result == results[2] for result in results)
    assert results[2]["acc_id"] == 1.0 and results[2]["acc_ood"] > 0.95
    # One outlying code does not shrink the others to where the solver stops.
    outlying = data.Z_val.copy()
    outlying[0, 3] = 1e4
    assert probe_accuracy(outlying, data.y_val)["acc_id"] == 1.0


def test_probe_accuracy_is_accuracy_whatever_the_probe_scores(rng):
    # A search's score is its own scoring: probe.score reported a log-loss,
    # or an AUC, as accuracy.
    codes = rng.standard_normal((120, 4))
    y = (codes[:, 0] + 0.8 * rng.standard_normal(120) > 0).astype(int)
    codes_ood = rng.standard_normal((60, 4))
    y_ood = (codes_ood[:, 0] > 0).astype(int)
    for scoring in ("neg_log_loss", "roc_auc"):
        search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, scoring=scoring)
        fitted = clone(search).fit(codes, y)
        expected = {
            "acc_id": accuracy_score(y, fitted.predict(codes)),
            "acc_ood": accuracy_score(y_ood, fitted.predict(codes_ood)),
        }
        assert expected["acc_id"] != pytest.approx(fitted.score(codes, y))
        got = probe_accuracy(codes, y, codes_ood, y_ood, probe=search)
        assert got == pytest.approx(expected, abs=1e-12)
    # A regressor, a class instead of an instance, an object without
    # scikit-learn's tags: the parameter is named, not an AttributeError.

    class Untagged:
        _estimator_type = "classifier"

        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros(len(X))

    for probe in (Ridge(), LogisticRegression, Untagged()):
        with pytest.raises(
            ValueError, match=r"'probe' parameter of probe_accuracy must be a classif"
        ):
            probe_accuracy(codes, y, probe=probe)


def test_probe_accuracy_hands_sparse_codes_to_probes_that_take_them(rng, monkeypatch):
    Z = sparse_codes(rng, 300, 30, 3)
    y = (Z[:, 4] > 0).astype(int)
    Z_ood = sparse_codes(rng, 100, 30, 3)
    y_ood = (Z_ood[:, 4] > 0).astype(int)
    dense = probe_accuracy(Z, y, Z_ood, y_ood)
    lda = LinearDiscriminantAnalysis()  # needs dense input
    dense_lda = probe_accuracy(Z, y, Z_ood, y_ood, probe=lda)
    densify = torch.Tensor.to_dense
    densified = []

    def counting(tensor, *args, **kwargs):
        densified.append(tuple(tensor.shape))
        return densify(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to_dense", counting)
    for layout in (sp.csr_matrix, lambda A: torch.from_numpy(A).to_sparse()):
        got = probe_accuracy(layout(Z), y, layout(Z_ood), y_ood)
        assert got == pytest.approx(dense, abs=1e-12)
        # Probes built on liblinear, libsvm or SGD take int32 indices only.
        for other in (LinearSVC(), LogisticRegression(solver="liblinear")):
            expected = probe_accuracy(Z, y, Z_ood, y_ood, probe=other)
            got = probe_accuracy(layout(Z), y, layout(Z_ood), y_ood, probe=other)
            assert got == pytest.approx(expected, abs=1e-12)
        assert densified == []
        got = probe_accuracy(layout(Z), y, layout(Z_ood), y_ood, probe=lda)
        assert got == pytest.approx(dense_lda, abs=1e-12)
        assert densified == [(300, 30), (100, 30)]
        densified.clear()


def test_probe_accuracy_in_threads_leaves_the_warning_filters(rng):
    # Its "ignore ConvergenceWarning" block, entered from several threads at
    # once (a threaded GridSearchCV), left the filter behind for the process.
    # (scikit-learn's own check_array, called by the probe's predict in each
    # thread, races the same way on its ComplexWarning filter: not skdict's
    # to serialise, so only skdict's filter is checked.)
    codes = rng.standard_normal((200, 10))
    y = (codes[:, 0] + 0.3 * rng.standard_normal(200) > 0).astype(int)
    with warnings.catch_warnings():  # whatever scikit-learn leaves, not kept
        filters = list(warnings.filters)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: probe_accuracy(codes, y), range(40)))
        left = [f for f in warnings.filters if f not in filters]
    assert not [f for f in left if f[2] is ConvergenceWarning]
    assert all(result == results[0] for result in results)


def test_probe_accuracy_keeps_the_probes_convergence_warning_to_itself():
    # On separable codes the unpenalised optimum lies at infinity and L-BFGS
    # stops at max_iter on a separating hyperplane: what the accuracy needs,
    # not news for the caller (a search over probes would print one per fit).
    codes = np.random.default_rng(0).standard_normal((60, 5))
    y = (codes[:, 0] > 0).astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 10 iterations, all spent, separate the codes (5 do not: below).
        assert probe_accuracy(codes, y, codes, y, max_iter=10)["acc_id"] == 1.0
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    with pytest.warns(ConvergenceWarning, match=r"max_iter=5 .* \(ID accuracy 0\.967"):
        probe_accuracy(codes, y, codes, y, max_iter=5)


def _noisy_labels(rng):
    """Codes and labels no hyperplane separates."""
    codes = rng.standard_normal((200, 10))
    y = (codes @ rng.standard_normal(10) + rng.standard_normal(200) > 0).astype(int)
    return codes, y


@pytest.mark.parametrize("max_iter", [1, 2])
def test_probe_accuracy_runs_the_default_probe_for_max_iter(rng, max_iter):
    # scikit-learn's own 100 iterations scored 0.930 where one gives 0.775.
    codes, y = _noisy_labels(rng)
    scaled = codes / np.quantile(np.abs(codes), 0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=np.inf, max_iter=max_iter).fit(scaled, y)
    # Stopped short on codes that are not separable: said, naming max_iter.
    with pytest.warns(ConvergenceWarning, match=f"max_iter={max_iter} on ID codes"):
        accuracy = probe_accuracy(codes, y, max_iter=max_iter)["acc_id"]
    assert accuracy == probe.score(scaled, y)
    # Converged on them: nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert probe_accuracy(codes, y)["acc_id"] < 1


def test_a_callers_probe_warns_as_in_its_own_fit(rng):
    # Silenced, an MLPClassifier stopped after 2 iterations scored 0.49 and a
    # comparison of methods by probe accuracy read it as the codes' fault.
    codes, y = _noisy_labels(rng)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        probe_accuracy(codes, y, probe=MLPClassifier(max_iter=2, random_state=0))


@pytest.mark.parametrize("layout", [np.asarray, sp.csr_matrix])
def test_probe_accuracy_of_all_zero_codes(layout):
    # Codes that all died (a dead SAE) have no scale to take: the probe sees
    # them as they are and predicts one class.
    scores = probe_accuracy(layout(np.zeros((4, 2))), [0, 1, 0, 1])
    assert scores == {"acc_id": 0.5, "acc_ood": None}


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.eye(4), [0, 0, 0, 0]), "exactly two classes"),
        ((np.eye(4), [0, 1, 0]), "3 labels for 4 rows"),
        ((np.eye(4), [0, 1, 0, 1], np.eye(4)), "must be given together"),
        ((np.eye(4), [0, 1, 0, 1], np.eye(3)[:, :2], [0, 1, 1]), "2 dimensions"),
    ],
)
def test_probing_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        best_feature_auc(*args)


@pytest.mark.parametrize(
    "y_id, y_ood, match",
    [
        # The same truth in another encoding scored 0.455 ({-1, 1}) and 0.0
        # ({1, 2}) instead of 1: the probe predicts y_id's classes only.
        ([0, 1, 0, 1], [-1, 1, -1, 1], r"y_ood holds classes \[-1\] that y_id"),
        ([0, 1, 0, 1], [1, 2, 1, 2], r"y_ood holds classes \[2\]"),
        ([0, 1, 0, 1], ["a", "b", "a", "b"], r"y_ood holds classes \['a', 'b'\]"),
        # These failed inside scikit-learn, naming no parameter (or y_true).
        ([0, np.inf, 0, np.inf], None, "y_id contains infinity"),
        ([0, 1, 0, 1], [0, np.inf, 0, 1], "y_ood contains infinity"),
        ([0.1, 0.2, 0.3, 0.4], None, "y_id must hold class labels; got continuous"),
        ([0, 1, 0, 1], [0.5, 1, 0, 1], "y_ood must hold class labels; got continuous"),
    ],
)
def test_probe_accuracy_names_labels_it_cannot_score(y_id, y_ood, match):
    codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    ood = () if y_ood is None else (codes, np.asarray(y_ood))
    with pytest.raises(ValueError, match=match):
        probe_accuracy(codes, np.asarray(y_id), *ood)


@pytest.mark.parametrize("metric", [support_scores, dictionary_similarity])
def test_matching_metrics_refuse_a_bool_threshold(metric):
    # threshold=True ran as 1.0 (fraction_close 1.0 -> 0.0), where the other
    # functions' real parameters refuse a bool.
    with pytest.raises(ValueError, match=r"'threshold' parameter of .*True, a bool"):
        metric(np.eye(3), np.eye(3), threshold=True)


@pytest.mark.parametrize("dtype", ["boolean", "string", "Int64"])
def test_probing_names_pandas_missing_labels(dtype):
    # pd.NA failed inside the missing-value check: "boolean value of NA is
    # ambiguous".
    pd = pytest.importorskip("pandas")
    values = {"boolean": [True, False], "string": ["a", "b"], "Int64": [0, 1]}[dtype]
    y = pd.Series([*values, pd.NA, *values], dtype=dtype)
    codes = np.arange(10.0).reshape(5, 2)
    for metric in (probe_accuracy, best_feature_auc):
        with pytest.raises(ValueError, match="y_id contains missing values"):
            metric(codes, y)


def test_probe_accuracy_checks_the_ood_labels_before_any_fit():
    # A search as the probe ran in full before the OOD labels were refused.
    fitted = []

    class Recording(LogisticRegression):
        def fit(self, X, y):
            fitted.append(len(X))
            return super().fit(X, y)

    codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    with pytest.raises(ValueError, match="y_ood holds classes"):
        probe_accuracy(codes, [0, 1, 0, 1], codes, [1, 2, 1, 2], probe=Recording())
    assert fitted == []


def test_probe_accuracy_scores_ood_labels_of_a_subset_of_classes():
    codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    result = probe_accuracy(codes, [0, 1, 0, 1], codes[:2], [0, 0])
    assert result["acc_ood"] == 0.5


def test_probe_accuracy_refuses_labels_that_are_not_1d(rng):
    # A column of labels (n_samples, 1) is refused, naming the shape: not
    # flattened with a mere DataConversionWarning, nor failing deep inside.
    codes = rng.standard_normal((20, 3))
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match=r"y_id must be 1-D; got shape \(20, 1\)"):
        probe_accuracy(codes, y.reshape(-1, 1))
    with pytest.raises(ValueError, match=r"y_ood must be 1-D"):
        probe_accuracy(codes, y, codes, y.reshape(-1, 1))


# ------------------------------------------------------------ reconstruction
def test_reconstruction_error_and_gap(rng):
    X = rng.standard_normal((10, 4))
    X_hat = X + 0.5
    assert reconstruction_error(X, X_hat) == pytest.approx(0.25)
    assert reconstruction_error(torch.from_numpy(X), X_hat) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="X_reconstructed has shape"):
        reconstruction_error(X, X_hat[:, :3])
    # Sparse matrices are densified a block at a time.
    assert reconstruction_error(sp.csr_matrix(X), X_hat) == pytest.approx(0.25)
    assert reconstruction_error(X, sp.csr_matrix(X_hat)) == pytest.approx(0.25)
    # An unfitted estimator's NotFittedError is not renamed a ValueError.
    with pytest.raises(NotFittedError):
        compositional_gap(PCA(), X, X)
    pca = PCA(n_components=2).fit(X)
    X_ood = 3 * rng.standard_normal((5, 4))
    gap = compositional_gap(pca, X, X_ood)
    mse = [
        np.mean((A - pca.inverse_transform(pca.transform(A))) ** 2) for A in (X, X_ood)
    ]
    assert gap == pytest.approx(
        {"mse_id": mse[0], "mse_ood": mse[1], "gap": mse[1] - mse[0]}
    )
    # Negative when the OOD samples are reconstructed better.
    reversed_gap = compositional_gap(pca, X_ood, X)
    assert reversed_gap["gap"] == pytest.approx(mse[0] - mse[1]) and mse[0] < mse[1]
    with pytest.raises(TypeError, match="no inverse_transform"):
        compositional_gap(object(), X, X_ood)


# ------------------------------------------------------------------- scorers
@pytest.fixture(scope="module")
def benchmark():
    return make_compositional(
        n_latents=12, n_active=2, n_samples=240, sparse_codes=True, random_state=0
    )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: make_code_scorer("mcc_score"), TypeError, "score_func must be"),
        (lambda: make_code_scorer(None), TypeError, "score_func must be"),
        (
            lambda: make_code_scorer(mcc_score, top_varaince=True),
            TypeError,
            r"\['top_varaince'\] do not fit mcc_score",
        ),
        (lambda: make_dictionary_similarity_scorer(None), ValueError, "dictionary"),
        (
            lambda: make_dictionary_similarity_scorer(np.zeros((0, 3))),
            ValueError,
            "dictionary has no atoms",
        ),
        (
            lambda: make_dictionary_similarity_scorer([[np.nan, 1.0]]),
            ValueError,
            "dictionary contains NaN",
        ),
    ],
)
def test_scorer_factories_check_their_arguments(make, error, match):
    # Checked when the scorer is made: a scorer failing at every call leaves
    # GridSearchCV (error_score=nan) with NaN scores and an arbitrary best.
    with pytest.raises(error, match=match):
        make()


def test_code_scorer_takes_the_keywords_of_a_decorated_metric():
    def scaled(metric):
        @functools.wraps(metric)
        def wrapper(*args, scale=1.0, **kwargs):
            return scale * metric(*args, **kwargs)

        return wrapper

    Z = np.random.default_rng(0).uniform(size=(20, 2))
    scorer = make_code_scorer(scaled(mcc_score), scale=2.0)
    pca = PCA(n_components=2).fit(Z)
    assert scorer(pca, Z, Z) == pytest.approx(2 * mcc_score(Z, pca.transform(Z)))
    # A callable without a signature (a builtin) is taken as it is.
    make_code_scorer(max)
    # The metric's own keywords still checked beside the decorator's.
    make_code_scorer(scaled(mcc_score), scale=2.0, top_variance=True)
    with pytest.raises(TypeError, match="top_varaince"):
        make_code_scorer(scaled(mcc_score), scale=2.0, top_varaince=True)


def test_code_scorer_takes_a_metrics_required_keyword():
    # Passed, a required keyword was dropped from the check and reported
    # missing ("missing a required argument: 'top_variance'").
    def top_mcc(Z_true, codes, *, top_variance):
        return mcc_score(Z_true, codes, top_variance=top_variance)

    Z = np.random.default_rng(0).uniform(size=(20, 2))
    pca = PCA(n_components=2).fit(Z)
    scorer = make_code_scorer(top_mcc, top_variance=True)
    expected = mcc_score(Z, pca.transform(Z), top_variance=True)
    assert scorer(pca, Z, Z) == pytest.approx(expected)
    with pytest.raises(TypeError, match="missing a required argument"):
        make_code_scorer(top_mcc)


def test_code_scorer_negates_a_loss():
    # As make_scorer(greater_is_better=False): a loss maximised by a search
    # picked its worst candidate.
    Z = np.random.default_rng(0).uniform(size=(20, 2))
    pca = PCA(n_components=2).fit(Z)

    def squared_error(Z_true, codes):
        return float(np.mean((np.asarray(Z_true) - np.asarray(codes)) ** 2))

    loss = make_code_scorer(squared_error, greater_is_better=False)
    assert loss(pca, Z, Z) == -squared_error(Z, pca.transform(Z)) < 0
    assert repr(loss) == "make_code_scorer(squared_error, greater_is_better=False)"
    with pytest.raises(TypeError, match="greater_is_better must be a bool"):
        make_code_scorer(squared_error, greater_is_better="no")


def test_code_scorers_of_several_scores_and_of_earlier_pickles(benchmark):
    # A metric returning a dict gives several scores (cross_validate names
    # each); negating the score broke it. Scorers pickled before losses
    # could be scored hold no sign, and failed on every call.
    X, Z, D = benchmark.X_val, benchmark.Z_val, benchmark.dictionary
    coder = FISTACoder(dictionary=D, alpha=0.01, positive=True).fit(X)
    scores = make_code_scorer(support_scores)(coder, X, Z)
    assert scores == support_scores(Z, coder.transform(X))
    losses = make_code_scorer(support_scores, greater_is_better=False)
    assert losses(coder, X, Z) == {name: -value for name, value in scores.items()}
    earlier = pickle.loads(pickle.dumps(mcc_scorer))
    del earlier.sign
    assert earlier(coder, X, Z) == mcc_scorer(coder, X, Z)


def test_dictionary_similarity_of_a_fitted_search_is_its_best_estimators(benchmark):
    # Nested cross-validation scores a fitted search: the similarity column
    # was NaN ("GridSearchCV has no components_") where mcc_scorer worked.
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, KFold, cross_validate
    from sklearn.pipeline import make_pipeline

    X, Z, D = benchmark.X_val, benchmark.Z_val, benchmark.dictionary
    coder = FISTACoder(n_components=12, dict_max_iter=3, random_state=0)
    search = GridSearchCV(coder, {"alpha": [0.01, 0.1]}, cv=KFold(2)).fit(X, Z)
    scorer = make_dictionary_similarity_scorer(D)
    expected = dictionary_similarity(D, search.best_estimator_)
    assert scorer(search, X) == dictionary_similarity(D, search) == expected
    assert scorer(FrozenEstimator(search), X) == expected
    labels = sp.csr_array(Z)[:, [0]].toarray().ravel() > 0
    pipe = make_pipeline(FISTACoder(dictionary=D, positive=True), LogisticRegression())
    over_pipe = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2)
    assert scorer(over_pipe.fit(X, labels), X) == pytest.approx(1.0)
    # A search as a pipeline's step.
    step = make_pipeline(search, LogisticRegression()).fit(X, labels)
    assert scorer(step, X) == expected
    scores = cross_validate(
        GridSearchCV(coder, {"alpha": [0.01, 0.1]}, cv=KFold(2)),
        X,
        Z.toarray(),  # cross_validate takes no sparse y
        cv=KFold(2),
        scoring={"similarity": scorer},
        error_score="raise",
        return_estimator=True,
    )
    for score, fitted in zip(
        scores["test_similarity"], scores["estimator"], strict=True
    ):
        assert score == dictionary_similarity(D, fitted.best_estimator_)
    unrefitted = GridSearchCV(coder, {"alpha": [0.01, 0.1]}, cv=2, refit=False)
    with pytest.raises(TypeError, match="GridSearchCV has no components_"):
        scorer(unrefitted.fit(X, Z), X)


def test_dictionary_similarity_scorer_reads_a_pipelines_coder(benchmark):
    # A search over coder -> classifier filled the similarity column with NaN
    # ("Pipeline has no components_"); a coder after a scaler has atoms in
    # the scaler's units, which would be compared as if they were the data's.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Z, D = benchmark.X_val, benchmark.Z_val, benchmark.dictionary
    labels = sp.csr_array(Z)[:, [0]].toarray().ravel() > 0  # latent 0 active
    scorer = make_dictionary_similarity_scorer(D)
    coder = FISTACoder(dictionary=D, positive=True)
    pipe = make_pipeline(coder, LogisticRegression()).fit(X, labels)
    assert scorer(pipe, X) == scorer(pipe[0], X) == pytest.approx(1.0)
    scaled = make_pipeline(StandardScaler(), coder, LogisticRegression())
    with pytest.raises(TypeError, match="FISTACoder codes the output of StandardScal"):
        scorer(scaled.fit(X, labels), X)
    with pytest.raises(TypeError, match="none of its steps exposes components_"):
        scorer(make_pipeline(StandardScaler()).fit(X), X)
    # A provider first is not the coder: PCA's atoms were scored for the
    # coder after it, without a word.
    reduced = make_pipeline(PCA(8), FISTACoder(n_components=12, dict_max_iter=2))
    with pytest.raises(TypeError, match="FISTACoder codes the output of PCA"):
        scorer(make_pipeline(reduced, LogisticRegression()).fit(X, labels), X)
    # Steps after the coder, which reduce its codes, do not matter.
    reducing = make_pipeline(coder, PCA(4), LogisticRegression()).fit(X, labels)
    assert scorer(reducing, X) == pytest.approx(1.0)
    assert scorer(make_pipeline(PCA(8)).fit(X), X) == scorer(PCA(8).fit(X), X)
    # PCA and another library's coder: which one codes cannot be told, and
    # PCA's score stood for the coder's.
    from sklearn.decomposition import MiniBatchDictionaryLearning

    other = make_pipeline(PCA(8), MiniBatchDictionaryLearning(4, max_iter=2))
    with pytest.raises(TypeError, match=r"several of its steps expose .*\(PCA, Mini"):
        scorer(other.fit(X), X)
    # Nested, frozen or with passthrough steps, the coder is still found.
    from sklearn.frozen import FrozenEstimator

    nested = make_pipeline(make_pipeline("passthrough", coder), LogisticRegression())
    assert scorer(FrozenEstimator(nested.fit(X, labels)), X) == pytest.approx(1.0)


def test_scorers_follow_sklearn_conventions(benchmark):
    X, Z, D = benchmark.X_val, benchmark.Z_val, benchmark.dictionary
    coder = FISTACoder(dictionary=D, alpha=0.01, positive=True).fit(X)
    codes = coder.transform(X)
    assert mcc_scorer(coder, X, Z) == mcc_score(Z, codes)
    assert support_f1_scorer(coder, X, Z) == support_scores(Z, codes)["f1"]
    recon = reconstruction_error(X, coder.inverse_transform(codes))
    assert neg_reconstruction_error_scorer(coder, X) == -recon <= 0
    assert make_dictionary_similarity_scorer(D)(coder, X) == pytest.approx(1.0)
    # dictionary_similarity's names in its errors are told apart: "dictionary
    # must be an array" read as the scorer's own, which was fine.
    with pytest.raises(ValueError, match="true_dictionary has atoms of") as refused:
        make_dictionary_similarity_scorer(D[:, :2])(coder, X)
    assert refused.value.__notes__ == [
        "In make_dictionary_similarity_scorer: 'true_dictionary' is the scorer's "
        "known atoms, 'dictionary' the atoms of the scored FISTACoder."
    ]
    top = make_code_scorer(mcc_score, top_variance=True)
    assert top(coder, X, Z) == mcc_score(Z, codes, top_variance=True)
    assert repr(top) == "make_code_scorer(mcc_score, top_variance=True)"
    with pytest.raises(ValueError, match="true codes, passed as y"):
        mcc_scorer(coder, X, None)
    # scikit-learn calls scorer(estimator, X) when it has no target.
    for scorer in (mcc_scorer, support_f1_scorer):
        with pytest.raises(ValueError, match="true codes, passed as y"):
            cross_validate(coder, X, scoring=scorer, cv=2, error_score="raise")
    # Class labels as y (a search over a pipeline ending in a classifier) were
    # refused by the metric, naming its Z_true, which the user never passed.
    labels = np.arange(X.shape[0]) % 2
    for y in (labels, labels.tolist(), torch.from_numpy(labels)):
        with pytest.raises(ValueError, match=r"mcc_scorer .*got y of shape \(\d+,\)"):
            mcc_scorer(coder, X, y)
    # Every scorer names itself, whatever the metric callable or atoms given.
    partial = make_code_scorer(functools.partial(mcc_score, top_variance=True))
    with pytest.raises(ValueError, match=r"functools\.partial.*passed as y"):
        partial(coder, X, None)
    assert partial(coder, X, Z) == top(coder, X, Z)
    assert repr(mcc_scorer) == "mcc_scorer"
    assert repr(support_f1_scorer) == "support_f1_scorer"
    for atoms, shown in [
        (D, f"atoms of shape {D.shape}"),
        (D.tolist(), f"atoms of shape {D.shape}"),
        (OracleDictionary(D), "the atoms of OracleDictionary"),
    ]:
        assert shown in repr(make_dictionary_similarity_scorer(atoms))


def test_code_scorers_take_the_method_that_gives_the_codes():
    # A probe with both methods was scored on transform: PLSRegression's
    # latent scores instead of its predicted codes (MCC 0.43 against 0.81),
    # and scikit-learn's make_scorer refuses response_method="transform".
    from sklearn.cross_decomposition import PLSRegression

    data = make_compositional(20, 3, n_samples=1000, random_state=0)
    pls = PLSRegression(n_components=8).fit(data.X_train, data.Z_train)
    predicted = mcc_score(data.Z_val, pls.predict(data.X_val))
    by_scores = mcc_score(data.Z_val, pls.transform(data.X_val))
    assert predicted > by_scores + 0.1
    assert mcc_scorer(pls, data.X_val, data.Z_val) == by_scores  # the default
    for response_method in ("predict", ("predict", "transform")):
        scorer = make_code_scorer(mcc_score, response_method=response_method)
        assert scorer(pls, data.X_val, data.Z_val) == predicted
        assert pickle.loads(pickle.dumps(scorer))(pls, data.X_val, data.Z_val) == (
            predicted
        )
    assert repr(make_code_scorer(mcc_score, response_method="predict")) == (
        "make_code_scorer(mcc_score, response_method='predict')"
    )
    only_transform = make_code_scorer(mcc_score, response_method="transform")
    with pytest.raises(ValueError, match=r"Ridge has none of the methods \['transf"):
        only_transform(Ridge().fit(data.X_train, data.Z_train), data.X_val, data.Z_val)
    for bad in ("decision_function", (), 3):
        with pytest.raises(ValueError, match="response_method must be 'transform'"):
            make_code_scorer(mcc_score, response_method=bad)


def test_code_scorers_score_a_probe_by_its_predictions(benchmark):
    # The paper's linear probe regresses the codes on X and has no
    # transform: its predicted codes are what the scorers compare.
    Z_train = benchmark.Z_train.toarray()
    probe = RidgeCV().fit(benchmark.X_train, Z_train)
    X, Z = benchmark.X_val, benchmark.Z_val
    predicted = probe.predict(X)
    assert mcc_scorer(probe, X, Z) == mcc_score(Z, predicted)
    assert support_f1_scorer(probe, X, Z) == support_scores(Z, predicted)["f1"]
    scores = cross_validate(
        RidgeCV(),
        benchmark.X_train,
        Z_train,
        cv=CompositionalSplit(n_splits=2, random_state=0),
        scoring={"mcc": mcc_scorer, "f1": support_f1_scorer},
        error_score="raise",
    )
    assert np.all((scores["test_mcc"] > 0) & (scores["test_mcc"] <= 1))
    # A pipeline ending in a classifier predicts labels, not codes.
    labels = benchmark.X_train[:, 0] > np.median(benchmark.X_train[:, 0])
    classifier = make_pipeline(StandardScaler(), LogisticRegression())
    classifier.fit(benchmark.X_train, labels)
    with pytest.raises(ValueError, match=r"Score the coding part: .* pipe\[:-1\]"):
        mcc_scorer(classifier, X, Z)


def test_scorers_pickle(benchmark):
    D = benchmark.dictionary
    pca = PCA(n_components=8).fit(benchmark.X_val)
    for scorer in (
        mcc_scorer,
        support_f1_scorer,
        neg_reconstruction_error_scorer,
        make_dictionary_similarity_scorer(D),
    ):
        clone = pickle.loads(pickle.dumps(scorer))
        args = (pca, benchmark.X_val, benchmark.Z_val)
        assert clone(*args) == scorer(*args)


def test_scorers_in_grid_search_with_compositional_split(benchmark):
    X, Z, D = benchmark.X_train, benchmark.Z_train, benchmark.dictionary
    scoring = {
        "mcc": mcc_scorer,
        "f1": support_f1_scorer,
        "recon": neg_reconstruction_error_scorer,
        "dict": make_dictionary_similarity_scorer(D),
    }
    cv = CompositionalSplit(n_splits=2, test_size=0.3, random_state=0)
    search = GridSearchCV(
        FISTACoder(dictionary=D, positive=True),
        {"alpha": [0.001, 0.3]},
        scoring=scoring,
        refit="mcc",
        cv=cv,
    ).fit(X, Z)
    # the oracle dictionary with little shrinkage recovers the codes best
    assert search.best_params_ == {"alpha": 0.001}
    results = search.cv_results_
    assert results["mean_test_mcc"][0] > results["mean_test_mcc"][1]
    assert results["mean_test_recon"][0] > results["mean_test_recon"][1]
    np.testing.assert_allclose(results["mean_test_dict"], 1.0)
    # each fold's score is the metric on that fold's test samples
    train, test = next(cv.split(X, Z))
    fitted = FISTACoder(dictionary=D, positive=True, alpha=0.3).fit(X[train])
    expected = mcc_score(Z[test], fitted.transform(X[test]))
    assert results["split0_test_mcc"][1] == pytest.approx(expected)


# This small benchmark has a single set of pairs with latent 0 to hold out.
@pytest.mark.filterwarnings("ignore:CompositionalSplit. all n_splits")
def test_scorers_in_cross_validate_with_dense_codes(benchmark):
    Z = benchmark.Z_train.toarray()
    scores = cross_validate(
        FISTACoder(dictionary=benchmark.dictionary, alpha=0.01, positive=True),
        benchmark.X_train,
        Z,
        scoring={"mcc": mcc_scorer, "f1": support_f1_scorer},
        cv=CompositionalSplit(n_splits=2, concepts=[0], random_state=0),
    )
    assert np.all(scores["test_mcc"] > 0.9)
    assert np.all(scores["test_f1"] > 0.5)


@pytest.mark.parametrize(
    "metric",
    [
        lambda A: dictionary_similarity(A, A),
        lambda A: reconstruction_error(A, A),
        lambda A: mcc_score(A, np.ones((3, 2))),
    ],
    ids=["dictionary_similarity", "reconstruction_error", "mcc_score"],
)
def test_metrics_refuse_zero_feature_arrays_by_name(metric):
    with pytest.raises(ValueError, match="Found array with 0 feature"):
        metric(np.zeros((3, 0)))


def test_as_matrices_computes_in_the_widest_input_dtype():
    # float32 codes stay float32 (half the memory of float64); any float64
    # input widens all of them.
    a32, b32 = np.ones((2, 2), np.float32), np.ones((2, 3), np.float32)
    out = as_matrices({"a": a32, "b": b32})
    assert {T.dtype for T in out.values()} == {torch.float32}
    out = as_matrices({"a": a32, "b": b32.astype(np.float64)})
    assert {T.dtype for T in out.values()} == {torch.float64}
    out = as_matrices({"a": sp.csr_matrix(a32), "b": torch.ones(2, 1)})
    assert {T.dtype for T in out.values()} == {torch.float32}


def test_best_feature_auc_refuses_more_than_two_classes():
    codes = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match="exactly two classes; got 3"):
        best_feature_auc(codes, [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="exactly two classes; got 3"):
        best_feature_auc(codes, [0, 1, 0, 1, 0, 1], codes, [0, 1, 2, 0, 1, 2])


def test_mcc_of_sparse_columns_whose_stored_values_are_all_negative():
    # A sparse column holding -1 where stored and implicit zeros elsewhere
    # varies: the implicit zeros take part in its range (a binary latent,
    # negated, as a sign-flipping coder returns it).
    rng = np.random.default_rng(0)
    Z = (rng.uniform(size=(40, 3)) < 0.3).astype(float)
    Z[0] = 1.0  # every column active somewhere, none everywhere
    Z[1] = 0.0
    for codes in (-Z, sp.csr_matrix(-Z), sp.csr_matrix(-2 * Z)):
        assert mcc_score(Z, codes) == pytest.approx(1.0)
        assert mcc_score(sp.csr_matrix(-Z), codes) == pytest.approx(1.0)


def test_mcc_top_variance_ranks_sparse_codes_by_variance_as_dense_ones():
    # Dimension 0 alternates +-1 (variance 1); dimension 1 has one spike of 10
    # among 100 samples (variance 0.99). Only the highest-variance dimension
    # competes for the single varying latent, whatever the codes' format.
    n = 100
    alternating = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    spike = np.zeros(n)
    spike[3] = 10.0
    codes = np.column_stack([alternating, spike])
    assert alternating.var() > spike.var()
    Z = alternating[:, None]
    dense = mcc_score(Z, codes, top_variance=True)
    assert dense == pytest.approx(1.0)
    assert mcc_score(Z, sp.csr_matrix(codes), top_variance=True) == pytest.approx(dense)
    assert mcc_score(Z, sp.csr_matrix(codes.T).T, top_variance=True) == pytest.approx(
        dense
    )


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_support_scores_with_a_zero_threshold_count_non_zeros_only(fmt):
    # Active means |value| > threshold: with threshold=0, the non-zeros.
    Z = np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 0]])
    true = Z if fmt == "dense" else sp.csr_matrix(Z)
    scores = support_scores(true, Z, threshold=0.0, matching=[0, 1, 2])
    assert scores == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "l0_true": pytest.approx(4 / 3),
        "l0_pred": pytest.approx(4 / 3),
    }


@pytest.mark.parametrize("fmt", ["dense", "sparse"])
def test_support_scores_threshold_is_strict(fmt):
    # An entry exactly at the threshold is not active, in either format.
    Z = np.array([[0.5, 0.0], [0.0, 2.0]])
    true = Z if fmt == "dense" else sp.csr_matrix(Z)
    scores = support_scores(true, true, threshold=0.5, matching=[0, 1])
    assert scores["l0_true"] == scores["l0_pred"] == 0.5


def test_support_scores_refuses_a_matching_one_past_the_last_dimension():
    Z = np.eye(3)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 2\]"):
        support_scores(Z, Z, matching=[0, 1, 3])


def test_probe_accuracy_leaves_the_given_probe_unfitted():
    # The probe is cloned before fitting, as scikit-learn's meta-estimators do.
    codes = np.array([[0.1, 5], [0.9, 3], [0.2, 4], [0.8, 6]])
    probe = LogisticRegression()
    probe_accuracy(codes, [0, 1, 0, 1], probe=probe)
    with pytest.raises(NotFittedError):
        check_is_fitted(probe)


@pytest.mark.parametrize("scored", [object(), np.eye(3)])
def test_dictionary_similarity_scorer_names_what_it_scores(scored):
    # "Invalid dictionary: float() argument ..." blamed the metric's own
    # argument, which the scorer's caller never passed.
    from skdict.metrics import make_dictionary_similarity_scorer

    scorer = make_dictionary_similarity_scorer(np.eye(3))
    with pytest.raises(TypeError, match="scores a fitted estimator exposing"):
        scorer(scored, np.ones((4, 3)))


def test_dictionary_similarity_scorer_averages_over_the_known_atoms():
    # The known atoms are the true dictionary: its score is averaged over
    # them, not over the estimator's atoms (two known atoms, both recovered
    # among three learned ones, score 1).
    from skdict import OracleDictionary
    from skdict.metrics import make_dictionary_similarity_scorer

    X = np.ones((4, 3))
    oracle = OracleDictionary(np.eye(3)).fit(X)
    scorer = make_dictionary_similarity_scorer(np.eye(3)[:2])
    assert scorer(oracle, X) == pytest.approx(1.0)
    assert make_dictionary_similarity_scorer(np.eye(3))(
        OracleDictionary(np.eye(3)[:2]).fit(X), X
    ) == pytest.approx(2 / 3)


@pytest.mark.parametrize("sparse", [False, True])
def test_probe_accuracy_scale_counts_negative_codes(sparse):
    # _code_scale takes the 99th percentile of |code|: negative codes count
    # (codes of signed methods), so their probe does not depend on the scale.
    data = make_compositional(50, 5, n_samples=1000, random_state=0)
    convert = sp.csr_array if sparse else np.asarray
    results = [
        probe_accuracy(
            convert(-data.Z_val * scale),
            data.y_val,
            convert(-data.Z_ood * scale),
            data.y_ood,
        )
        for scale in (1e-6, 1.0, 1e6)
    ]
    assert all(result == results[1] for result in results)
    assert results[1]["acc_id"] == 1.0


def test_probe_accuracy_needs_ood_codes_and_labels_together():
    codes = np.eye(4)
    y = [0, 1, 0, 1]
    with pytest.raises(ValueError, match="codes_ood and y_ood must be given together"):
        probe_accuracy(codes, y, codes)
    with pytest.raises(ValueError, match="codes_ood and y_ood must be given together"):
        probe_accuracy(codes, y, None, y)
    # Its own message, not the probe's, for OOD codes of another width.
    with pytest.raises(
        ValueError, match="codes_ood has 3 dimensions but codes_id has 4"
    ):
        probe_accuracy(codes, y, np.eye(4)[:, :3], y)


def test_labels_must_be_one_dimensional_not_scalars():
    with pytest.raises(ValueError, match=r"y_id must be 1-D; got shape \(\)"):
        best_feature_auc(np.eye(3), np.array(1))
    with pytest.raises(ValueError, match=r"y_id must be 1-D; got shape \(\)"):
        probe_accuracy(np.eye(3), np.array(1))


def test_complex_labels_with_nan_are_refused():
    # np.unique folds NaN into one class for complex labels too: [1, nan, nan]
    # passed as two classes.
    y = np.array([1, np.nan, np.nan], dtype=complex)
    with pytest.raises(ValueError, match="y_id contains missing values"):
        best_feature_auc(np.eye(3), y)


def test_default_probe_sees_codes_over_the_99th_percentile_of_their_magnitudes():
    # On separable codes the probe's answer depends on the codes' scale
    # (documented), so the documented scale is pinned: the 99th percentile of
    # the non-zero ID codes' magnitudes, applied to both splits.
    data = make_compositional(50, 5, n_samples=1000, random_state=0)
    Z, Z_ood = data.Z_val.copy(), data.Z_ood.copy()
    Z[:, 7] *= 100
    Z_ood[:, 7] *= 100
    scale = np.quantile(np.abs(Z[Z != 0]), 0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=np.inf, max_iter=1000).fit(Z / scale, data.y_val)
    scores = probe_accuracy(Z, data.y_val, Z_ood, data.y_ood)
    assert scores["acc_ood"] == probe.score(Z_ood / scale, data.y_ood)
    assert scores["acc_id"] == probe.score(Z / scale, data.y_val)


def test_dictionary_scorer_refuses_a_coder_of_another_coders_codes():
    # The last coder of a pipeline codes the previous coder's output, not X:
    # its atoms are not comparable with the true dictionary.
    rng = np.random.default_rng(0)
    D, E = rng.standard_normal((4, 6)), rng.standard_normal((3, 4))
    pipe = make_pipeline(FISTACoder(D), FISTACoder(E)).fit(
        rng.uniform(size=(20, 4)) @ D
    )
    with pytest.raises(TypeError, match="codes the output of FISTACoder"):
        make_dictionary_similarity_scorer(D)(pipe)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_assignment_is_scipys_maximisation_and_leaves_its_input(dtype):
    # The matching hands SciPy a negated float64 matrix (SciPy's own negated
    # copy doubled the metrics' peak): the same pairs, ties included, and the
    # caller's similarities unchanged afterwards.
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    for shape in [(7, 9), (9, 7), (6, 6)]:
        similarity = torch.from_numpy(rng.integers(0, 3, shape) / 2).to(dtype)
        before = similarity.clone()
        rows, cols = _matching._assign(similarity)
        expected = linear_sum_assignment(similarity.numpy(), maximize=True)
        np.testing.assert_array_equal(rows, expected[0])
        np.testing.assert_array_equal(cols, expected[1])
        assert torch.equal(similarity, before)
