import warnings
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import config_context
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skdict import FISTACoder
from skdict.datasets import make_compositional
from skdict.model_selection import CompositionalSplit

# Six samples of three concepts: every pair co-occurs twice.
_PAIRS = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]])


def unseen_pairs(active, train, test):
    """Pairs active together in some test sample, never together in training,
    whose concepts both occur in training."""
    in_train = active[train].any(axis=0)
    together_in_train = active[train].T.astype(int) @ active[train].astype(int)
    pairs = set()
    for row in active[test]:
        for a, b in combinations(np.flatnonzero(row), 2):
            if together_in_train[a, b] == 0 and in_train[a] and in_train[b]:
                pairs.add((a, b))
    return pairs


def check_fold(active, train, test, max_test, concepts=None):
    n = active.shape[0]
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert 0 < test.size <= max_test
    pairs = unseen_pairs(active, train, test)
    if concepts is not None:
        pairs = {p for p in pairs if p[0] in concepts or p[1] in concepts}
    # every test sample holds a pair never seen together in training, both of
    # whose concepts are seen in training
    for row in active[test]:
        assert any(row[a] and row[b] for a, b in pairs)
    # every concept of a test sample is known from training
    assert not (active[test].any(axis=0) & ~active[train].any(axis=0)).any()


def holdable_pairs(active, max_test, concepts=None):
    """Brute force: pairs that could be held out on their own."""
    out = []
    for a, b in combinations(range(active.shape[1]), 2):
        if concepts is not None and a not in concepts and b not in concepts:
            continue
        both = active[:, a] & active[:, b]
        left = active[~both].sum(axis=0)
        if 0 < both.sum() <= max_test and (left[active[both].any(axis=0)] > 0).all():
            out.append((a, b))
    return out


# Small random problems may hold a single set of pairs (tested below).
@pytest.mark.filterwarnings("ignore:CompositionalSplit. all n_splits")
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(4, 40),
    n_concepts=st.integers(2, 7),
    density=st.floats(0.2, 0.8),
    test_size=st.one_of(st.floats(0.05, 0.9), st.integers(1, 20)),
    use_concepts=st.booleans(),
)
def test_folds_hold_out_unseen_pairs(
    seed, n, n_concepts, density, test_size, use_concepts
):
    rng = np.random.default_rng(seed)
    active = rng.uniform(size=(n, n_concepts)) < density
    y = active * rng.uniform(0.5, 1.0, size=active.shape)
    concepts = [0] if use_concepts else None
    cv = CompositionalSplit(
        n_splits=3, test_size=test_size, concepts=concepts, random_state=seed
    )
    max_test = test_size if isinstance(test_size, int) else int(test_size * n)
    try:
        folds = list(cv.split(np.zeros((n, 1)), y))
    except ValueError as error:
        assert "No valid fold" in str(error)
        assert not holdable_pairs(active, max_test, concepts)
        return
    assert len(folds) == cv.get_n_splits() == 3
    assert holdable_pairs(active, max_test, concepts)  # the oracle agrees
    for train, test in folds:
        check_fold(active, train, test, max_test, concepts)
    # the same folds on every call and for every input type
    again = list(cv.split(np.zeros((n, 1)), sp.csr_matrix(y)))
    on_torch = list(cv.split(np.zeros((n, 1)), torch.from_numpy(y)))
    sparse_torch = list(cv.split(np.zeros((n, 1)), torch.from_numpy(y).to_sparse()))
    for other in (again, on_torch, sparse_torch):
        for (train, test), (train2, test2) in zip(folds, other, strict=True):
            np.testing.assert_array_equal(train, train2)
            np.testing.assert_array_equal(test, test2)


def test_probed_concept_folds_on_the_benchmark():
    data = make_compositional(
        n_latents=20, n_active=3, n_samples=300, sparse_codes=True, random_state=0
    )
    active = data.Z_train.toarray() > 0
    cv = CompositionalSplit(n_splits=4, test_size=0.25, concepts=[0], random_state=0)
    tests = []
    for train, test in cv.split(data.X_train, data.Z_train):
        check_fold(active, train, test, max_test=37, concepts=[0])
        assert active[test, 0].all()  # every test sample holds the probed concept
        assert active[train, 0].any()
        tests.append(tuple(test))
    assert len(set(tests)) > 1  # folds differ


def test_concepts_found_only_with_a_held_out_pair_stay_in_training():
    # Concept 2 occurs only together with the pair (0, 1): holding out (0, 1)
    # would test concept 2 without a single training sample of it.
    y = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="every sample of some other concept"):
        next(CompositionalSplit(test_size=2, random_state=0).split(np.zeros(6), y))
    # With a training sample of concept 2 the pair can be held out.
    y = np.vstack([y, [0, 0, 1]])
    train, test = next(
        CompositionalSplit(test_size=2, random_state=0).split(np.zeros(7), y)
    )
    np.testing.assert_array_equal(test, [0, 1])
    check_fold(y > 0, train, test, max_test=2)


def test_concepts_probe_pairs_where_the_concept_is_the_higher_index():
    # concepts=[2] probes the pairs (0, 2) and (1, 2): concept 2 is their
    # second index, and they qualify all the same. Samples 0 and 3 hold them.
    y = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0]])
    cv = CompositionalSplit(n_splits=3, test_size=2, concepts=[2], random_state=0)
    with pytest.warns(UserWarning, match="all n_splits=3 folds hold the same test"):
        folds = list(cv.split(np.zeros((6, 1)), y))
    assert len(folds) == 3
    for train, test in folds:
        check_fold(y > 0, train, test, max_test=2, concepts=[2])
        assert set(test) <= {0, 3}
        assert y[test, 2].all()


def test_identical_folds_are_warned_about():
    # Two concepts have one pair: every fold was the same, and a search's
    # spread over folds read as zero, silently.
    rng = np.random.default_rng(0)
    y = rng.uniform(size=(300, 2)) < 0.4
    cv = CompositionalSplit(3, test_size=0.5, random_state=0)
    with pytest.warns(UserWarning, match="all n_splits=3 folds hold the same test"):
        folds = list(cv.split(y, y))
    assert all(np.array_equal(folds[0][1], test) for _, test in folds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(CompositionalSplit(1, test_size=0.5, random_state=0).split(y, y))
        many = rng.uniform(size=(300, 6)) < 0.4
        list(cv.split(many, many))


def test_random_state_controls_the_folds():
    rng = np.random.default_rng(0)
    y = rng.uniform(size=(60, 6)) < 0.4
    folds = lambda seed: [  # noqa: E731
        tuple(test)
        for _, test in CompositionalSplit(random_state=seed).split(np.zeros(60), y)
    ]
    assert folds(3) == folds(3)
    assert folds(3) != folds(4)


def test_concept_activity_from_groups_tunes_a_classifier_pipeline():
    # A pipeline ending in a classifier takes class labels as y; the concept
    # activity then comes as groups, as scikit-learn's group splitters take
    # their side information.
    data = make_compositional(n_latents=20, n_active=3, n_samples=600, random_state=0)
    X, y, Z = data.X_train, data.y_train, data.Z_train
    cv = CompositionalSplit(3, concepts=[0], random_state=0)
    from_groups = [(tr.tolist(), te.tolist()) for tr, te in cv.split(X, y, groups=Z)]
    from_y = [(tr.tolist(), te.tolist()) for tr, te in cv.split(X, Z)]
    assert from_groups == from_y
    pipe = make_pipeline(
        FISTACoder(data.dictionary, positive=True), LogisticRegression()
    )
    grid = GridSearchCV(pipe, {"fistacoder__alpha": [0.05, 0.1]}, cv=cv)
    assert grid.fit(X, y, groups=Z).best_score_ > 0.5
    with pytest.raises(ValueError, match="pass the concept activity as groups"):
        clone(grid).fit(X, y)
    # With metadata routing on, groups reach split as they reach GroupKFold's.
    with config_context(enable_metadata_routing=True):
        routed = clone(grid).fit(X, y, groups=Z)
    assert routed.best_score_ == pytest.approx(grid.best_score_)
    with pytest.raises(ValueError, match="groups must be a 2-D matrix"):
        next(cv.split(X, Z, groups=y))


def test_a_label_of_a_held_out_concept_is_warned_about():
    # A binary annotation of concept 0's presence is True in every test
    # sample of folds that hold out pairs with concept 0: always answering
    # True scored 1 in every fold, silently.
    data = make_compositional(n_latents=20, n_active=3, n_samples=600, random_state=0)
    X, Z = data.X_train, data.Z_train
    presence = Z[:, 0] > 0
    cv = CompositionalSplit(3, concepts=[0], random_state=0)
    with pytest.warns(UserWarning, match=r"fold \d holds a single class of y \(True\)"):
        folds = list(cv.split(X, presence, groups=Z))
    assert all(presence[test].all() for _, test in folds)
    # Pairs of the other concepts test the label in unseen contexts: both
    # classes in every test fold, and no warning; nor for the benchmark's
    # label, nor for codes as y, which are no class labels.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other = CompositionalSplit(3, random_state=0)
        for _, test in other.split(X, presence, groups=Z[:, 1:]):
            assert len(np.unique(presence[test])) == 2
        list(cv.split(X, data.y_train, groups=Z))
        list(cv.split(X, Z))
        list(cv.split(X, torch.as_tensor(data.y_train), groups=Z))
        # y is only looked at beside groups: labels it cannot read split too.
        for odd in (np.full(len(X), np.nan), np.array(["a", None] * 150, object)):
            assert len(list(other.split(X, odd, groups=Z[:, 1:]))) == 3


@pytest.mark.parametrize(
    "y, kwargs, error, match",
    [
        (None, {}, ValueError, "reads the concept activity from groups, or"),
        (np.ones(6), {}, ValueError, "must be a 2-D matrix"),
        # scikit-learn's length check came first: "inconsistent numbers of
        # samples: [6, 1]", naming neither input.
        (np.ones((1, 6, 2)), {}, ValueError, "must be a 2-D matrix"),
        (np.eye(5), {}, ValueError, "y has 5 rows, but X has 6 samples"),
        (np.ones((6, 0)), {}, ValueError, "Invalid y: Found array with 0 feature"),
        # concepts 0 and 1 always co-occur: holding out the pair empties both
        (np.array([[1, 1]] * 6), {}, ValueError, "No valid fold: no pair"),
        (np.eye(6), {}, ValueError, "No valid fold: no pair"),
        # concept 0 (the lower index of the pair) occurs only with concept 1:
        # no pair qualifies, whatever test_size, and the error says so
        (
            np.array([[1, 1]] * 3 + [[0, 1]] * 3),
            {"test_size": 3},
            ValueError,
            "No valid fold: no pair",
        ),
        (
            np.array([[1, 1]] * 4 + [[1, 0], [0, 1]]),
            {"test_size": 2},
            ValueError,
            "raise test_size",
        ),
        (np.eye(6), {"concepts": [7]}, ValueError, "column indices of y"),
        # No concept to hold out: no fold, rather than NumPy's reduction error.
        (
            _PAIRS,
            {"concepts": np.array([], dtype=int)},
            ValueError,
            "No valid fold",
        ),
        (np.eye(6), {"n_splits": 0}, ValueError, "'n_splits' parameter"),
        (np.eye(6), {"n_splits": True}, ValueError, "'n_splits' .* a bool"),
        (np.eye(6), {"test_size": 1.5}, ValueError, "'test_size' parameter"),
        # Named by check_array itself: no "Invalid y: " before it.
        (np.where(np.eye(6), np.nan, 1.0), {}, ValueError, "^Input y contains NaN"),
        # A list holding None failed in np.abs with a TypeError.
        ([[1, 0], [0, None]] + [[1, 1]] * 4, {}, ValueError, "y contains NaN"),
        (sp.csr_matrix(np.where(np.eye(6), np.inf, 0)), {}, ValueError, "infinity"),
        (np.full((6, 2), "a"), {}, ValueError, "dtype='numeric'"),
        ([[1, 0]] * 5 + [[1]], {}, ValueError, "^Invalid y: .*inhomogeneous"),
    ],
)
def test_invalid_input_raises(y, kwargs, error, match):
    with pytest.raises(error, match=match):
        list(CompositionalSplit(**kwargs).split(np.zeros((6, 1)), y))
    if "parameter" in match:  # get_n_splits agrees with split
        with pytest.raises(error, match=match):
            CompositionalSplit(**kwargs).get_n_splits()


@pytest.mark.parametrize("dtype", ["Int64", "Float64"])
def test_nullable_pandas_activity_with_missing_values_is_named(dtype):
    pd = pytest.importorskip("pandas")
    y = pd.DataFrame([[1, 0], [0, pd.NA]] + [[1, 1]] * 4, dtype=dtype)
    with pytest.raises(ValueError, match="y contains NaN"):
        list(CompositionalSplit().split(np.zeros((6, 1)), y))


def test_get_n_splits_is_an_int():
    # As annotated: a NumPy integer given came back as it was.
    n_splits = CompositionalSplit(np.int64(3)).get_n_splits()
    assert type(n_splits) is int and n_splits == 3


def test_threshold_defines_activity():
    y = np.array([[1.0, 0.01]] * 3 + [[1.0, 0.0], [0.0, 1.0]])
    # by default the small entries are active: concepts 0 and 1 co-occur in
    # the first three samples and each occurs alone once
    cv = CompositionalSplit(n_splits=1, test_size=3, random_state=0)
    train, test = next(cv.split(np.zeros((5, 1)), y))
    np.testing.assert_array_equal(test, [0, 1, 2])
    np.testing.assert_array_equal(train, [3, 4])
    # above the threshold they are not, and no pair co-occurs
    cv.threshold = 0.1
    with pytest.raises(ValueError, match="No valid fold"):
        next(cv.split(np.zeros((5, 1)), y))
    assert "threshold=0.1" in repr(cv)


def _folds(cv, y):
    """The (train, test) index lists of ``cv`` on the targets ``y``."""
    X = np.zeros((y.shape[0], 1))
    return [(train.tolist(), test.tolist()) for train, test in cv.split(X, y)]


@pytest.mark.parametrize(
    "convert",
    [np.asarray, sp.csr_matrix, sp.csc_matrix, torch.as_tensor],
    ids=["dense", "csr", "csc", "tensor"],
)
def test_negative_activity_counts_as_active_in_every_format(convert):
    # Concept j is active where |y[i, j]| > threshold: negated codes (a
    # sign-flipped coder's) give the same folds, dense or sparse.
    cv = CompositionalSplit(n_splits=3, test_size=2, random_state=1)
    expected = _folds(cv, _PAIRS)
    assert _folds(cv, convert(-_PAIRS.astype(float))) == expected
    signs = np.where(np.arange(_PAIRS.size).reshape(_PAIRS.shape) % 2, -1.0, 1.0)
    assert _folds(cv, convert(signs * _PAIRS)) == expected


@pytest.mark.parametrize("convert", [sp.csr_matrix, sp.csc_matrix], ids=["csr", "csc"])
def test_threshold_defines_activity_of_sparse_matrices(convert):
    # As test_threshold_defines_activity, with the small entries stored.
    y = np.array([[1.0, 0.01]] * 3 + [[1.0, 0.0], [0.0, 1.0]])
    cv = CompositionalSplit(n_splits=1, test_size=3, random_state=0)
    _train, test = next(cv.split(np.zeros((5, 1)), convert(y)))
    np.testing.assert_array_equal(test, [0, 1, 2])
    cv.threshold = 0.1
    with pytest.raises(ValueError, match="No valid fold"):
        next(cv.split(np.zeros((5, 1)), convert(y)))


@pytest.mark.parametrize("convert", [sp.csr_matrix, sp.csc_matrix], ids=["csr", "csc"])
def test_stored_entries_below_the_threshold_are_inactive(convert):
    # Every entry stored, the inactive ones as 0.01: with threshold=0.1 the
    # folds are those of the 0/1 activity itself.
    cv = CompositionalSplit(n_splits=3, test_size=2, random_state=1)
    y = np.where(_PAIRS > 0, 1.0, 0.01)
    assert convert(y).nnz == y.size
    expected = _folds(cv, _PAIRS)
    cv.threshold = 0.1
    assert _folds(cv, y) == expected
    assert _folds(cv, convert(y)) == expected


@pytest.mark.parametrize("concepts", [[-1], [0, -3], [0.5], [1.0], ["0"]])
def test_concepts_must_be_column_indices(concepts):
    # Negative or non-integer indices are refused with the parameter's own
    # message, not read as "no pair involves them" (or as concept 1 for 1.0).
    cv = CompositionalSplit(concepts=concepts, test_size=2)
    with pytest.raises(ValueError, match="concepts must be column indices of y"):
        list(cv.split(np.zeros((6, 1)), _PAIRS))
    # The activity given as groups is named as such.
    with pytest.raises(ValueError, match="concepts must be column indices of groups"):
        list(cv.split(np.zeros((6, 1)), np.zeros(6), groups=_PAIRS))


def test_explicitly_stored_zeros_of_sparse_activity_are_inactive():
    # |y| > threshold decides activity in every format: a zero stored
    # explicitly in a sparse matrix is as inactive as a dense zero.
    Y = _PAIRS.astype(float)
    rows, cols = np.nonzero(Y)
    S = sp.csr_matrix(
        (np.r_[Y[rows, cols], 0.0], (np.r_[rows, 0], np.r_[cols, 2])), shape=Y.shape
    )
    assert S.nnz == Y.astype(bool).sum() + 1
    cv = CompositionalSplit(n_splits=2, test_size=2, random_state=1)
    X = np.zeros((6, 1))
    dense = [test.tolist() for _, test in cv.split(X, Y)]
    assert [test.tolist() for _, test in cv.split(X, S)] == dense


def test_a_numpy_integer_test_size_is_a_count():
    Z = make_compositional(12, 2, n_samples=200, random_state=0).Z_train
    cv = CompositionalSplit(n_splits=3, test_size=np.int64(5), random_state=0)
    assert [test.size for _, test in cv.split(Z, Z)] == [5, 5, 5]


def test_multiclass_labels_of_a_single_class_in_a_test_fold_warn():
    labels = np.array([0, 2, 1, 0, 2, 1])
    cv = CompositionalSplit(n_splits=2, test_size=2, random_state=1)
    with pytest.warns(UserWarning, match="single class of y") as caught:
        folds = [test for _, test in cv.split(np.zeros((6, 1)), labels, groups=_PAIRS)]
    assert len(caught) == 2
    assert [np.unique(labels[test]).size for test in folds] == [1, 1]


def test_a_test_size_that_is_a_count_or_a_fraction_is_checked_as_a_count():
    # test_size takes an int (a count, any size) or a float fraction: an int
    # is checked as an int first, so a bool is refused as one and a count
    # beyond 64 bits is a count, not a float out of range.
    Y = _PAIRS.astype(float)
    X = np.zeros((6, 1))
    with pytest.raises(ValueError, match="must be an int; got True, a bool"):
        next(CompositionalSplit(n_splits=1, test_size=True).split(X, Y))
    for count in (2**63, 2**64):
        assert (
            len(list(CompositionalSplit(n_splits=1, test_size=count).split(X, Y))) == 1
        )
