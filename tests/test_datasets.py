import math
import tracemalloc
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from skdict.datasets import default_n_features, make_compositional
from skdict.datasets._compositional import (
    _index_dtype,
    _sample_codes,
    _sample_subsets,
    check_compositional_params,
)

SPLITS = ("train", "val", "ood")


def dense(Z):
    return Z.toarray() if sp.issparse(Z) else Z


@pytest.fixture(params=[False, True], ids=["dense", "sparse"])
def data(request):
    return make_compositional(
        n_latents=30,
        n_active=4,
        n_samples=401,
        sparse_codes=request.param,
        random_state=0,
    )


def test_split_sizes_and_shapes(data):
    n_features = default_n_features(30, 4)
    sizes = {"train": 200, "val": 201, "ood": 200}
    for name, n in sizes.items():
        assert data[f"X_{name}"].shape == (n, n_features)
        assert data[f"Z_{name}"].shape == (n, 30)
        assert data[f"y_{name}"].shape == (n,)
    assert data.dictionary.shape == (30, n_features)
    assert data.n_active == 4
    # A Python int whatever was passed: records holding it are saved as JSON.
    small = make_compositional(12, np.int64(2), n_samples=20, random_state=0)
    assert type(small.n_active) is int


def test_codes_follow_the_recipe(data):
    id_pool, ood_pool = set(data.id_latents), set(data.ood_latents)
    assert id_pool == set(range(1, 15)) and ood_pool == set(range(15, 30))
    for name in SPLITS:
        Z = dense(data[f"Z_{name}"])
        active = Z != 0
        # exactly k non-zeros per sample, all in (0, 1]
        np.testing.assert_array_equal(active.sum(axis=1), 4)
        assert np.all(Z[active] > 0) and np.all(Z[active] <= 1)
        np.testing.assert_array_equal(data[f"y_{name}"], Z[:, 0] > 0.5)
        for row in active:
            others = set(np.flatnonzero(row)) - {0}
            if name == "ood":
                assert row[0] and others <= ood_pool
            elif row[0]:
                # latent 0 is only ever seen with ID-pool latents
                assert others <= id_pool


def test_id_samples_mix_both_settings(data):
    Z = dense(data.Z_train)
    with_probe = Z[:, 0] > 0
    # setting B draws from all latents but 0: OOD-pool latents occur in training
    assert (Z[~with_probe][:, data.ood_latents] > 0).any(axis=1).mean() > 0.5


def test_id_samples_hold_the_probed_concept_with_probability_one_half():
    # Setting A (latent 0 with k - 1 ID-pool latents) with probability 1/2:
    # 20,000 draws, within 4 standard deviations (+-0.014).
    Z = make_compositional(30, 4, n_samples=40_000, random_state=0).Z_train
    rate = float((Z[:, 0] > 0).mean())
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / Z.shape[0])


def test_code_values_and_atoms_follow_the_recipe():
    # Active codes are Uniform(0, 1); atoms are Gaussian vectors scaled to
    # unit norm, i.e. uniform on the sphere, whose coordinates u have
    # (u + 1) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2).
    data = make_compositional(5000, 5, n_features=20, n_samples=4000, random_state=0)
    values = data.Z_train[data.Z_train != 0]
    assert stats.kstest(values, "uniform").pvalue > 1e-3
    half = (data.dictionary.shape[1] - 1) / 2
    first = (data.dictionary[:, 0] + 1) / 2  # one coordinate per atom
    assert stats.kstest(first, stats.beta(half, half).cdf).pvalue > 1e-3


def test_observations_are_codes_times_unit_atoms(data):
    np.testing.assert_allclose(np.linalg.norm(data.dictionary, axis=1), 1.0)
    for name in SPLITS:
        np.testing.assert_allclose(
            data[f"X_{name}"], dense(data[f"Z_{name}"]) @ data.dictionary, atol=1e-12
        )


def test_sparse_and_dense_codes_are_the_same_data():
    kwargs = dict(n_latents=40, n_active=5, n_samples=60, random_state=3)
    a = make_compositional(**kwargs)
    b = make_compositional(sparse_codes=True, **kwargs)
    for name in SPLITS:
        Z = b[f"Z_{name}"]
        assert isinstance(Z, sp.csr_matrix)
        np.testing.assert_array_equal(Z.toarray(), a[f"Z_{name}"])
        np.testing.assert_array_equal(b[f"X_{name}"], a[f"X_{name}"])


def test_reproducible_under_random_state():
    kwargs = dict(n_latents=20, n_active=3, n_samples=40)
    a = make_compositional(random_state=7, **kwargs)
    again = make_compositional(random_state=7, **kwargs)
    state = make_compositional(random_state=np.random.RandomState(7), **kwargs)
    other = make_compositional(random_state=8, **kwargs)
    for key in ("X_train", "Z_val", "y_ood", "dictionary"):
        np.testing.assert_array_equal(again[key], a[key])
        np.testing.assert_array_equal(state[key], a[key])
    assert not np.array_equal(a.X_train, other.X_train)


def test_noise_perturbs_only_observations():
    kwargs = dict(n_latents=30, n_active=4, n_samples=2000, random_state=1)
    clean = make_compositional(**kwargs)
    noisy = make_compositional(noise=0.1, **kwargs)
    for name in SPLITS:
        np.testing.assert_array_equal(noisy[f"Z_{name}"], clean[f"Z_{name}"])
        np.testing.assert_array_equal(noisy[f"y_{name}"], clean[f"y_{name}"])
        residual = noisy[f"X_{name}"] - clean[f"X_{name}"]
        assert abs(residual.std() - 0.1) < 0.005
        assert abs(residual.mean()) < 0.005


@pytest.mark.parametrize(
    "n_latents, k, expected",
    [(100, 10, 47), (50, 10, 33), (10_000, 10, 139), (12, 10, 11), (3, 2, 3)],
)
def test_default_n_features_is_the_compressed_sensing_bound(n_latents, k, expected):
    assert type(default_n_features(np.int64(n_latents), np.int64(k))) is int
    # ceil(2 k ln(n / k)): 20 ln 10 = 46.05, 20 ln 5 = 32.19, 20 ln 1000 = 138.2;
    # for n close to k the floor k + 1 applies
    assert default_n_features(n_latents, k) == expected


@pytest.mark.parametrize(
    "n_latents, k, match",
    [
        (10, 0, "'n_active' parameter of default_n_features"),
        (0, 1, "'n_latents' parameter of default_n_features"),
        (10.0, 2, "'n_latents' parameter"),
        (3, 5, "n_active=5 must be smaller than n_latents=3"),
        (3, 3, "n_active=3 must be smaller"),
    ],
)
def test_default_n_features_refuses_what_make_compositional_refuses(
    n_latents, k, match
):
    with pytest.raises(ValueError, match=match):
        default_n_features(n_latents, k)


def test_unseen_ood_pool_latents_follow_the_documented_rate():
    # An OOD-pool latent is missed by every training sample with probability
    # about exp(-n_train k / (2 (n - 1))), as the docstring states.
    n_latents, k, n_samples = 200, 2, 400
    missed = []
    for seed in range(10):
        data = make_compositional(n_latents, k, n_samples=n_samples, random_state=seed)
        seen = (data.Z_train[:, data.ood_latents] != 0).any(axis=0)
        missed.append(1.0 - seen.mean())
    expected = np.exp(-(n_samples // 2) * k / (2 * (n_latents - 1)))
    assert np.mean(missed) == pytest.approx(expected, abs=0.03)


def test_default_n_features_is_used():
    data = make_compositional(100, 10, n_samples=4, random_state=0)
    assert data.X_train.shape[1] == 47


def test_custom_pools_and_features():
    data = make_compositional(
        n_latents=10,
        n_active=3,
        n_features=7,
        n_ood_latents=3,
        n_samples=50,
        random_state=0,
    )
    np.testing.assert_array_equal(data.id_latents, np.arange(1, 7))
    np.testing.assert_array_equal(data.ood_latents, [7, 8, 9])
    assert data.X_ood.shape == (25, 7)
    assert np.all(data.Z_ood[:, 1:7] == 0)


def test_default_ood_pool_is_half_the_latents_rounded_down():
    # n_ood_latents defaults to n_latents // 2: with 21 latents, latent 0 is
    # the probe, 1..10 the ID pool and 11..20 the OOD pool (10 each).
    data = make_compositional(n_latents=21, n_active=3, n_samples=20, random_state=0)
    np.testing.assert_array_equal(data.id_latents, np.arange(1, 11))
    np.testing.assert_array_equal(data.ood_latents, np.arange(11, 21))


def test_single_active_latent():
    # n_active=1: latent 0 alone (with probability 1/2 in ID, always in OOD)
    # is no unseen combination: said so.
    with pytest.warns(UserWarning, match="n_active=1: every OOD sample holds latent 0"):
        data = make_compositional(n_latents=5, n_active=1, n_samples=40, random_state=0)
    np.testing.assert_array_equal((data.Z_train != 0).sum(axis=1), 1)
    assert np.all(data.Z_ood[:, 1:] == 0) and np.all(data.Z_ood[:, 0] > 0)
    assert data.X_train.shape[1] == 4  # max(k + 1, ceil(2 ln 5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_latents=10, n_active=10), "must be smaller than n_latents"),
        (dict(n_latents=10, n_active=6), "ID pool"),
        (dict(n_latents=10, n_active=4, n_ood_latents=2), "OOD pool"),
        # latent 0 is the probe: at most n_latents - 1 latents are left for OOD
        (
            dict(n_latents=10, n_active=2, n_ood_latents=10),
            r"n_ood_latents=10 must be at most n_latents - 1 = 9 \(latent 0",
        ),
        (dict(n_latents=10, n_active=4, n_features=3), "n_features=3"),
        (dict(n_samples=-5), "'n_samples' parameter"),
        (dict(n_samples=1), "'n_samples' parameter"),
        (dict(noise=-1.0), "'noise' parameter"),
        (dict(n_active=0), "'n_active' parameter"),
        (dict(n_latents=2.5), "'n_latents' parameter"),
        (dict(n_active=True), "'n_active' parameter .* a bool"),
        (dict(n_samples=np.int16(100)), "'n_samples' parameter .* at least 64 bits"),
        (dict(n_latents=10**20), "8.75e\\+22 float64 values, more than an array"),
        (dict(n_samples=10**19), "n_samples=1e\\+19 rows of 100 values make 1e\\+21"),
        # NumPy's bound is on bytes: 9e17 rows of 10 sparse codes passed a
        # bound on entries, then failed in NumPy ("array is too big").
        (
            dict(n_samples=9 * 10**17, n_features=10, sparse_codes=True),
            "rows of 10 values make 9e\\+18 float64 values, more",
        ),
    ],
)
def test_invalid_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_compositional(**kwargs)
    # The check a sweep runs up front gives the same error without generating.
    with pytest.raises(ValueError, match=match):
        check_compositional_params(**kwargs)


def test_check_compositional_params_accepts_what_make_compositional_does():
    params = dict(n_latents=20, n_active=3, n_samples=100, random_state=0)
    assert check_compositional_params(**params) is None
    make_compositional(**params)
    with pytest.raises(TypeError, match="n_lat"):
        check_compositional_params(n_lat=20)


def test_sparse_codes_use_memory_in_proportion_to_non_zeros():
    # dense codes of this size would take 2000 * 200_000 * 8 bytes = 3.2 GB
    tracemalloc.start()
    try:
        data = make_compositional(
            n_latents=200_000,
            n_active=5,
            n_features=5,
            n_samples=2000,
            sparse_codes=True,
            random_state=0,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.Z_train.nnz == 1000 * 5
    # the dictionary (8 MB) dominates
    assert peak < 30e6


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(0, 40),
    pool_size=st.integers(1, 60),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_subsets_are_sorted_distinct_and_in_range(n_rows, pool_size, data, seed):
    k = data.draw(st.integers(0, pool_size))
    out = _sample_subsets(np.random.default_rng(seed), n_rows, pool_size, k)
    assert out.shape == (n_rows, k)
    if n_rows and k:
        assert out.min() >= 0 and out.max() < pool_size
        assert np.all(np.diff(out, axis=1) > 0)


@pytest.mark.parametrize("ood", [False, True])
def test_the_last_latent_of_a_pool_at_int32s_edge(ood, monkeypatch):
    # n_latents = 2**31 + 1: every pool fits int32, but latent 2**31 does
    # not; offset in int32, the draw of a pool's last member wrapped to a
    # negative index. The largest subsets are drawn here to reach it.
    from skdict.datasets import _compositional

    def largest(rng, n_rows, pool_size, k):
        top = np.arange(pool_size - k, pool_size, dtype=_index_dtype(pool_size))
        return np.tile(top, (n_rows, 1))

    monkeypatch.setattr(_compositional, "_sample_subsets", largest)
    n_latents = 2**31 + 1
    codes, _ = _sample_codes(
        np.random.default_rng(0), 20, n_latents=n_latents, n_active=2, n_ood=5, ood=ood
    )
    assert codes.indices.min() >= 0
    assert codes.indices.max() == n_latents - 1


def test_index_dtype_holds_every_index_below_its_size():
    # int32 holds indices up to 2**31 - 1, so sizes up to 2**31.
    assert _index_dtype(2**31) is np.int32
    assert _index_dtype(2**31 + 1) is np.int64


@pytest.mark.parametrize("ood", [False, True])
def test_latent_indices_beyond_int32(ood):
    # make_compositional needs a dictionary of tens of GB to get here, so the
    # sampler it calls is driven directly: int32 indices raised in NumPy for
    # the ID rows and wrapped to negative latents for the OOD rows.
    n_latents = 3 * 2**30
    n_ood = n_latents // 2
    codes, _ = _sample_codes(
        np.random.default_rng(0),
        500,
        n_latents=n_latents,
        n_active=3,
        n_ood=n_ood,
        ood=ood,
    )
    assert codes.shape == (500, n_latents)
    assert np.all(codes.getnnz(axis=1) == 3)
    assert codes.indices.min() >= 0 and codes.indices.max() < n_latents
    if ood:
        assert np.all(codes.indices.reshape(500, 3)[:, 1:] >= n_latents - n_ood)
    else:
        # Without latent 0, a row draws from all of 1..n_latents-1: some
        # indices must land beyond int32's range.
        assert codes.indices.max() > np.iinfo(np.int32).max


@pytest.mark.parametrize("pool_size, k", [(6, 2), (5, 4), (7, 7)])
def test_subsets_are_uniform(pool_size, k):
    # (6, 2) goes through Floyd's algorithm, (5, 4) and (7, 7) through random keys
    n_rows = 30_000
    out = _sample_subsets(np.random.default_rng(0), n_rows, pool_size, k)
    subsets = list(combinations(range(pool_size), k))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.bincount(
        [index[tuple(r)] for r in out.tolist()], minlength=len(subsets)
    )
    p = 1 / len(subsets)
    bound = 5 * math.sqrt(n_rows * p * (1 - p)) + 1e-9
    assert np.all(np.abs(counts - n_rows * p) <= bound)


@pytest.mark.parametrize("sparse_codes", [False, True])
def test_id_samples_without_the_probe_draw_from_every_other_latent(sparse_codes):
    # Setting B draws n_active latents from all of 1 .. n_latents - 1: the
    # OOD pool (the last latents included) appears in training, only without
    # latent 0.
    data = make_compositional(
        n_latents=6,
        n_active=2,
        n_samples=2000,
        sparse_codes=sparse_codes,
        random_state=0,
    )
    for split in ("train", "val"):
        Z = data[f"Z_{split}"]
        Z = Z.toarray() if hasattr(Z, "toarray") else Z
        without = Z[Z[:, 0] == 0]
        assert set(np.flatnonzero((without != 0).any(axis=0))) == set(range(1, 6))
        with_probe = Z[Z[:, 0] != 0]
        seen = set(np.flatnonzero((with_probe != 0).any(axis=0)))
        assert seen == {0, *data.id_latents.tolist()}


@pytest.mark.parametrize(
    ("n_active", "train", "ood"),
    [
        # k (k - 1) / 2 <= pool: the sequential (Floyd) sampler.
        (3, [[4, 5, 9], [0, 8, 9], [0, 1, 3]], [[0, 11, 12], [0, 13, 16]]),
        # Beyond it, the sampler of i.i.d. keys (the paper's sweep at k = 50
        # and 100 draws there).
        (
            8,
            [
                [0, 1, 3, 5, 6, 7, 8, 9],
                [1, 2, 4, 7, 8, 12, 17, 18],
                [0, 1, 2, 3, 4, 5, 6, 7],
            ],
            [[0, 10, 11, 13, 15, 16, 18, 19], [0, 10, 11, 12, 14, 15, 16, 18]],
        ),
    ],
)
def test_supports_at_a_fixed_seed_stay_those_published(n_active, train, ood):
    # Both samplers are exact, so only pinned draws notice a change of which
    # one runs, or of how it consumes the generator: every figure computed at
    # a fixed seed would move.
    data = make_compositional(20, n_active, n_samples=8, random_state=0)
    assert [np.flatnonzero(row).tolist() for row in data.Z_train[:3]] == train
    assert [np.flatnonzero(row).tolist() for row in data.Z_ood[:2]] == ood


def test_code_values_and_labels_at_a_fixed_seed_stay_those_published():
    # Drawn from the same stream as the supports: drawing U where 1 - U was
    # drawn keeps every distribution and moves every figure.
    data = make_compositional(20, 3, n_samples=8, random_state=0)
    values = data.Z_train[:2][data.Z_train[:2] > 0]
    np.testing.assert_allclose(
        values, [0.276029, 0.215089, 0.450473, 0.88604, 0.890061, 0.143859], atol=1e-6
    )
    assert data.y_train.tolist() == [0, 1, 1, 0]
    assert data.y_ood.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("sparse_codes", [False, True])
def test_arrays_are_float64_and_labels_int64(sparse_codes):
    data = make_compositional(
        20, 3, n_samples=8, sparse_codes=sparse_codes, random_state=0
    )
    arrays = ("X_train", "X_val", "X_ood", "Z_train", "Z_val", "Z_ood", "dictionary")
    for name in arrays:
        assert data[name].dtype == np.float64, name
    for name in ("y_train", "y_val", "y_ood"):
        assert data[name].dtype == np.int64, name
