"""scikit-learn's estimator checks over every public estimator."""

import copy
import pickle
from numbers import Integral, Real
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
import torch
from numpy.lib import NumpyVersion
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils import get_tags
from sklearn.utils._param_validation import Interval, InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdict import FISTACoder, OracleDictionary, SparseAutoencoder
from skdict._params import (
    check_holdable,
    is_array_like,
    validate_hyperparameters,
    validate_params,
)

from .conftest import HAS_ARRAY_API_DISPATCH


def public_estimators():
    # A provider that adapts to whatever n_features each check uses.
    return [
        FISTACoder(PCA(n_components=1), alpha=0.01),
        # Warm-started from the codes of an estimator fitted in fit.
        FISTACoder(PCA(n_components=1), alpha=0.01, init=PCA(n_components=1)),
        # Dictionary learning: as many atoms as features, a few rounds.
        FISTACoder(dict_max_iter=3, random_state=0),
        OracleDictionary(PCA(n_components=1)),
        # Estimated from the checks' targets, taken as one latent's codes.
        OracleDictionary(),
        # One small SAE per activation family; k=1 because some checks set
        # n_components=1.
        *(
            SparseAutoencoder(
                4,
                activation=activation,
                k=1 if activation in ("topk", "batchtopk", "mp") else None,
                max_epochs=3,
                batch_size=16,
            )
            for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp")
        ),
        # The default width: one latent per feature.
        SparseAutoencoder(max_epochs=3, batch_size=16),
    ]


def expected_failed_checks(estimator):
    if isinstance(estimator, OracleDictionary):
        # The oracle's atoms are given or solved in closed form: fit iterates
        # nothing (and records no n_iter_), while max_iter bounds transform's
        # FISTA.
        return {
            "check_transformer_n_iter": "max_iter bounds transform; fit iterates "
            "nothing and has no n_iter_"
        }
    if isinstance(estimator, FISTACoder) and estimator.dictionary is not None:
        # With its atoms given, fit codes nothing (n_iter_ = 0) and max_iter
        # bounds transform's FISTA; scikit-learn's SparseCoder, alike, names
        # its bound transform_max_iter, which the check does not look for.
        return {"check_transformer_n_iter": "max_iter bounds transform; fit: 0"}
    return {}


def _is_array_api_check(check) -> bool:
    return getattr(check, "func", check).__name__.startswith("check_array_api")


def _reads_another_device(check) -> bool:
    """Whether an array-API check runs on array_api_strict's second device."""
    return getattr(check, "keywords", {}).get("device_name") == "device1"


def _wants_cuda(check) -> bool:
    """Whether an array-API check runs on a CUDA device."""
    keywords = getattr(check, "keywords", {})
    return keywords.get("device_name") == "cuda" or any(
        getattr(value, "device", None) == "cuda" for value in keywords.values()
    )


# Some checks hand OracleDictionary() class labels as y; its advice to one-hot
# encode them is for users, and is tested in test_dictionary.py.
@pytest.mark.filterwarnings("ignore:y is 1-D and holds:UserWarning")
@parametrize_with_checks(
    public_estimators(), expected_failed_checks=expected_failed_checks
)
def test_sklearn_compatible(estimator, check):
    # scikit-learn skips its CUDA checks only where torch was built without
    # CUDA; a CUDA build on a machine without a usable GPU must skip them too.
    if _wants_cuda(check) and not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    if _is_array_api_check(check) and not HAS_ARRAY_API_DISPATCH:
        pytest.skip("scikit-learn's array-API dispatch needs SciPy 1.14 or newer")
    if _reads_another_device(check) and NumpyVersion(np.__version__) < "2.1.0":
        pytest.skip(
            "scikit-learn's check reads arrays on array_api_strict's second "
            "device through numpy.from_dlpack(device=), from NumPy 2.1 on"
        )
    check(estimator)


def _fitted_oracle():
    return OracleDictionary().fit(np.eye(3), np.eye(3))


@pytest.mark.parametrize(
    ("estimator", "required"),
    [
        (FISTACoder(OracleDictionary()), True),
        (FISTACoder(np.eye(3), init=OracleDictionary()), True),
        (OracleDictionary(OracleDictionary()), True),
        (SparseAutoencoder(decoder=OracleDictionary(), max_epochs=1), True),
        (
            FISTACoder(FrozenEstimator(OracleDictionary(np.eye(3)).fit(np.eye(3)))),
            False,
        ),
        (FISTACoder(PCA(n_components=1)), False),
        # A frozen oracle is not fitted again: its y was given when it was.
        (FISTACoder(FrozenEstimator(_fitted_oracle())), False),
        (OracleDictionary(), True),
        (OracleDictionary(np.eye(3)), False),
        (SparseAutoencoder(3), False),
    ],
    ids=repr,
)
def test_target_required_when_fit_or_a_provider_fitted_in_it_needs_y(
    estimator, required
):
    # Unfitted providers are fitted on (X, y): one that needs y (an oracle
    # without atoms) makes the estimator need it too.
    assert get_tags(estimator).target_tags.required is required
    X = np.random.default_rng(0).standard_normal((20, 3))
    if required:
        with pytest.raises(ValueError, match="requires y"):
            clone(estimator).fit(X)
        Z = np.random.default_rng(1).uniform(size=(20, 3))
        clone(estimator).fit(X, Z)
    else:
        clone(estimator).fit(X)


@pytest.mark.parametrize(
    "estimator, multi_output",
    [
        (OracleDictionary(), True),
        (OracleDictionary(np.eye(3)), True),
        # y goes to the oracle's fit: the same codes, one column per latent.
        (FISTACoder(OracleDictionary()), True),
        (FISTACoder(np.eye(3), init=OracleDictionary()), True),
        (SparseAutoencoder(3, decoder=OracleDictionary()), True),
        (FISTACoder(FrozenEstimator(_fitted_oracle())), False),  # y unused
        (FISTACoder(PCA(n_components=1)), False),
        (SparseAutoencoder(3), False),
    ],
    ids=repr,
)
def test_targets_are_tagged_multi_output_where_an_oracle_takes_them(
    estimator, multi_output
):
    # One column of codes per latent, which scikit-learn's tools read from
    # the tag (a 1-D y, one latent's codes, is accepted too).
    assert get_tags(estimator).target_tags.multi_output is multi_output


def _with_dictionary(estimator, dictionary):
    if isinstance(estimator, SparseAutoencoder):
        return estimator.set_params(decoder=dictionary)
    return estimator.set_params(dictionary=dictionary)


@pytest.mark.parametrize(
    "estimator",
    [
        FISTACoder(alpha=0.01),
        OracleDictionary(),
        SparseAutoencoder(6, max_epochs=2, batch_size=8, random_state=0),
    ],
    ids=lambda est: type(est).__name__,
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_failed_fit_leaves_the_estimator_unfitted(estimator, method):
    # A refit that fails after validating X (here: a dictionary of the wrong
    # width) must not leave the new n_features_in_ beside the old atoms, or
    # the next transform passes validation and fails inside torch.
    if not hasattr(estimator, method):
        pytest.skip(f"{type(estimator).__name__} has no {method}")
    rng = np.random.default_rng(0)
    D = rng.standard_normal((6, 4))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X4 = rng.random((20, 6)) @ D
    model = _with_dictionary(clone(estimator), D).fit(X4)
    model.transform(X4)
    _with_dictionary(model, rng.standard_normal((6, 5)))
    X3 = X4[:, :3]
    with pytest.raises(ValueError, match="5"):
        if method == "fit":
            model.fit(X3)
        else:  # a first partial_fit, on a clone
            model = clone(model)
            model.partial_fit(X3)
    assert not [name for name in vars(model) if name.endswith("_")]
    with pytest.raises(NotFittedError):
        model.transform(X3)
    # And it can be fitted again from scratch.
    _with_dictionary(model, D[:, :3]).fit(X3)
    assert model.transform(X3).shape == (20, 6)


@pytest.mark.parametrize(
    ("estimator", "invalid"),
    [
        (FISTACoder(alpha=0.01), {"alpha": -1.0}),
        (OracleDictionary(), {"tol": 2.0}),
        (
            SparseAutoencoder(6, max_epochs=2, batch_size=8, random_state=0),
            {"activation": "bogus"},
        ),
    ],
    ids=lambda param: type(param).__name__ if hasattr(param, "fit") else "",
)
def test_refit_with_an_invalid_parameter_keeps_the_previous_fit(estimator, invalid):
    # As the fit docstrings say (and as in scikit-learn): the parameter is
    # refused before the fit starts, and the earlier fit stays whole.
    rng = np.random.default_rng(0)
    Z = rng.random((20, 6))
    X = Z @ rng.standard_normal((6, 4))
    model = clone(estimator).fit(X, Z)
    fitted = {key: value for key, value in vars(model).items() if key.endswith("_")}
    model.set_params(**invalid)
    with pytest.raises(InvalidParameterError, match=next(iter(invalid))):
        model.fit(X, Z)
    assert fitted and all(vars(model)[key] is value for key, value in fitted.items())


@pytest.mark.parametrize(
    ("estimator", "where", "name"),
    [
        (
            FISTACoder(n_components=6, dict_max_iter=3),
            "skdict._fista_coder",
            "learn_dictionary",
        ),
        (OracleDictionary(), "skdict._oracle", "code_statistics"),
        (
            SparseAutoencoder(6, max_epochs=2, batch_size=8, random_state=0),
            "skdict._sae._estimator.SparseAutoencoder",
            "_train",
        ),
    ],
    ids=lambda param: type(param).__name__ if hasattr(param, "fit") else "",
)
def test_interrupted_fit_leaves_the_previous_fit(estimator, where, name, monkeypatch):
    # Ctrl-C during a refit on data of another width, after validation has
    # recorded the new n_features_in_: the previous fit stays, whole.
    rng = np.random.default_rng(0)
    Z = rng.random((20, 6))
    X4 = Z @ rng.standard_normal((6, 4))
    model = clone(estimator).fit(X4, Z)
    before = dict(vars(model))
    codes = model.transform(X4)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"{where}.{name}", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X4[:, :3], Z)
    monkeypatch.undo()
    assert vars(model).keys() == before.keys()
    assert all(vars(model)[key] is value for key, value in before.items())
    np.testing.assert_array_equal(model.transform(X4), codes)


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (FISTACoder(), "n_components"),
        (FISTACoder(n_components=2), "max_iter"),
        (FISTACoder(n_components=2), "batch_size"),
        (FISTACoder(n_components=2), "dict_max_iter"),
        (OracleDictionary(np.eye(3)), "max_iter"),
        (SparseAutoencoder(2), "max_epochs"),
        (SparseAutoencoder(2, activation="topk", k=1), "aux_k"),
        (SparseAutoencoder(2), "n_iter_no_change"),
    ],
)
def test_integer_hyperparameters_refuse_bools_and_narrow_numpy_integers(
    estimator, name
):
    # True passes sklearn's Interval(Integral) and fails inside torch; narrow
    # NumPy integers wrap around in the products of sizes.
    X = np.random.default_rng(0).standard_normal((20, 3))
    for value, match in [(True, "got True, a bool"), (np.int32(2), "at least 64")]:
        with pytest.raises(ValueError, match=f"'{name}' parameter of .*{match}"):
            clone(estimator).set_params(**{name: value}).fit(X)
    clone(estimator).set_params(**{name: np.int64(2)}).fit(X)


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (FISTACoder(), "n_components"),
        (FISTACoder(n_components=2), "max_iter"),
        (FISTACoder(n_components=2), "dict_max_iter"),
        (OracleDictionary(np.eye(3)), "max_iter"),
        (SparseAutoencoder(), "n_components"),
        (SparseAutoencoder(2, activation="topk"), "k"),
        (SparseAutoencoder(2), "max_epochs"),
        (SparseAutoencoder(2, activation="topk", k=1), "aux_k"),
        (SparseAutoencoder(2), "dead_after"),
        (SparseAutoencoder(2), "n_iter_no_change"),
    ],
)
def test_counts_beyond_64_bits_are_refused_by_name(estimator, name):
    # torch and tqdm hold counts in 64 bits: n_components=2**63 failed in
    # torch.randn ("Overflow when unpacking long long"), dict_max_iter=2**63
    # in tqdm ("int too large to convert to C ssize_t"), max_iter=2**64 and
    # dead_after=2**64 in a comparison with a tensor.
    X = np.random.default_rng(0).standard_normal((20, 3))
    for big in (2**63, 2**64):
        with pytest.raises(
            ValueError, match=rf"'{name}' parameter .* range \[[01], {2**63 - 1}\]"
        ):
            clone(estimator).set_params(**{name: big}).fit(X)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize(
    ("estimator", "unit"), [(FISTACoder, "atoms"), (SparseAutoencoder, "latents")]
)
def test_more_atoms_than_an_array_holds_are_refused_by_name(estimator, unit, method):
    # 2**62 atoms of 3 features: torch's "Storage size calculation
    # overflowed", naming no parameter.
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(
        ValueError,
        match=f"n_components={2**62} {unit} of n_features=3 features make .* "
        "more than an array can hold",
    ):
        getattr(estimator(n_components=2**62), method)(X)


@pytest.mark.parametrize(
    ("estimator", "n_components", "unit"),
    [(FISTACoder, 2**40, "atoms"), (SparseAutoencoder, 2**59, "latents")],
)
def test_widths_whose_weights_overflow_are_refused_by_name(
    estimator, n_components, unit
):
    # Learning 2**40 atoms holds their Gram matrix, 2**80 values, although
    # the atoms alone (3 * 2**40) would fit; 2**59 latents of 3 features make
    # weights beyond an array that n_components alone does not. Unchecked,
    # torch failed in its allocator or its storage-size arithmetic.
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(
        ValueError,
        match=f"n_components={n_components} {unit} of n_features=3 features "
        "make .* more than an array can hold",
    ):
        estimator(n_components=n_components).fit(X)


def test_what_an_array_holds_is_counted_in_bytes():
    # NumPy and torch bound an array's bytes by the largest 64-bit integer:
    # 2**60 float64 values are beyond, as float32 values they are not.
    largest = 2**63 - 1
    check_holdable(largest // 8, np.float64, "x")
    check_holdable(2**60, torch.float32, "x")
    with pytest.raises(ValueError, match=r"^x make 1.15e\+18 float64 values, more"):
        check_holdable(largest // 8 + 1, np.float64, "x make")
    with pytest.raises(ValueError, match="float64 values, more than an array"):
        check_holdable(2**60, torch.float64, "x")


def test_batch_sizes_beyond_64_bits_take_every_row():
    # Unlike a count, a batch size bounds itself: the rows there are.
    X = np.random.default_rng(0).standard_normal((20, 3))
    expected = FISTACoder(np.eye(3)).fit_transform(X)
    np.testing.assert_array_equal(
        FISTACoder(np.eye(3), batch_size=2**64).fit_transform(X), expected
    )
    SparseAutoencoder(2, batch_size=2**64, max_epochs=1).fit(X)


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (FISTACoder(), "dictionary"),
        (FISTACoder(n_components=3), "init"),
        (OracleDictionary(), "dictionary"),
        (SparseAutoencoder(max_epochs=1), "decoder"),
    ],
)
def test_sparse_atoms_are_refused_by_name(estimator, name):
    # The generic message said a SciPy sparse matrix was not array-like.
    X = np.random.default_rng(0).standard_normal((20, 3))
    estimator.set_params(**{name: sp.csr_array(np.eye(3))})
    with pytest.raises(ValueError, match=rf"'{name}' .* dense atoms.*{name}\.toarray"):
        estimator.fit(X)


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (FISTACoder(SparseAutoencoder), "dictionary"),
        (FISTACoder(np.eye(3), init=SparseAutoencoder), "init"),
        (OracleDictionary(SparseAutoencoder), "dictionary"),
        (SparseAutoencoder(decoder=SparseAutoencoder, max_epochs=1), "decoder"),
    ],
)
def test_a_class_for_an_instance_is_refused_by_name(estimator, name):
    # SparseAutoencoder itself (the parentheses forgotten) has components_ as
    # a property, passed for a holder of atoms, and failed in a float
    # conversion of the property ("init": an IndexError).
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match=f"'{name}' parameter .* Got <class"):
        estimator.fit(X)


def test_a_class_for_an_array_is_named():
    from skdict.metrics import dictionary_similarity

    with pytest.raises(TypeError, match=r"^dictionary must be an array; got the class"):
        dictionary_similarity(np.eye(3), SparseAutoencoder)
    with pytest.raises(
        TypeError, match=r"^X must be an array; got the class PCA itself"
    ):
        FISTACoder(np.eye(3)).fit(PCA)


@pytest.mark.parametrize(
    "estimator", [FISTACoder(n_components=2), SparseAutoencoder(2, max_epochs=1)]
)
def test_activations_in_a_dict_or_an_archive_are_named(estimator, tmp_path):
    # torch.save({"activations": ...}) loaded whole failed with "float()
    # argument must be ... not 'dict'", and a .pt file (a zip archive) opened
    # with np.load with "could not convert string to float: 'acts/data.pkl'".
    X = np.random.default_rng(0).standard_normal((20, 3))
    saved = {"activations": torch.from_numpy(X), "labels": torch.zeros(20)}
    with pytest.raises(TypeError, match=r"got a dict .* X\['activations'\]"):
        estimator.fit(saved)
    torch.save(saved["activations"], tmp_path / "acts.pt")
    with pytest.raises(TypeError, match=r"NpzFile .* load a .pt file with torch.load"):
        estimator.fit(np.load(tmp_path / "acts.pt"))


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda atoms: FISTACoder(atoms), "dictionary"),
        (lambda atoms: OracleDictionary(atoms), "dictionary"),
        (
            lambda atoms: SparseAutoencoder(
                4, decoder=atoms, freeze_decoder=True, max_epochs=1, random_state=0
            ),
            "decoder",
        ),
    ],
)
def test_none_and_text_for_an_array_are_named(make, name):
    # None was reported as "got scalar array instead: array=nan", and numbers
    # written as text were parsed, where scikit-learn's dtype="numeric"
    # refuses them.
    from skdict.metrics import mcc_score

    rng = np.random.default_rng(0)
    X, atoms = rng.uniform(size=(20, 3)), rng.uniform(size=(4, 3))
    with pytest.raises(ValueError, match=r"^X must be an array; got None"):
        make(atoms).fit(None)
    fitted = make(atoms).fit(X)
    with pytest.raises(ValueError, match=r"^X must be an array; got None"):
        fitted.transform(None)
    for text in (X.astype(str), X.astype(bytes), X.astype(str).tolist()):
        with pytest.raises(ValueError, match=r"^X holds text or bytes .* not numbers"):
            fitted.transform(text)
    with pytest.raises(ValueError, match=r"^codes holds text or bytes \(dtype <U"):
        fitted.inverse_transform(fitted.transform(X).astype(str))
    with pytest.raises(ValueError, match=r"^Z_true holds text or bytes"):
        mcc_score(X.astype(str), X)
    with pytest.raises(ValueError, match=f"^{name} holds text or bytes"):
        make(atoms.astype(str)).fit(X)
    # Dates were read as counts of days.
    dates = np.arange(60).astype("datetime64[D]").reshape(20, 3)
    with pytest.raises(ValueError, match=r"^X holds dates or times \(dtype datetime64"):
        fitted.transform(dates)
    pd = pytest.importorskip("pandas")
    # Beside numbers, a date column failed in NumPy's type promotion.
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(c=dates[:, 0])
    with pytest.raises(ValueError, match=r"^X holds dates or times \(columns \['c'\]"):
        make(atoms).fit(frame)

    # Durations are refused as dates are (NumPy's type promotion failed).
    frame = frame.assign(c=pd.to_timedelta(np.arange(20), unit="s"))
    with pytest.raises(ValueError, match=r"^X holds dates or times \(columns \['c'\]"):
        make(atoms).fit(frame)

    # A frame whose column dtypes lack a kind is not taken for dates
    # ("" in "mM" is true).
    class Kindless:
        dtypes = pd.Series([object()] * 3, index=["a", "b", "c"])

        def __array__(self, dtype=None, copy=None):
            return X if dtype is None else X.astype(dtype)

    np.testing.assert_array_equal(fitted.transform(Kindless()), fitted.transform(X))
    # An empty tensor is named as an empty NumPy array is.
    for empty in (np.zeros((0, 3)), torch.zeros(0, 3, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"^Invalid X: Found array with 0 sample"):
            fitted.transform(empty)
    with pytest.raises(ValueError, match=r"^Invalid X: Found array with 0 feature"):
        fitted.transform(torch.zeros(3, 0, dtype=torch.float64))
    # A list is converted once (its dtype read from the array scikit-learn
    # then checks), and coded as the array is.
    np.testing.assert_array_equal(fitted.transform(X.tolist()), fitted.transform(X))
    # A structured array is no text: refused as before, not as text.
    structured = np.zeros(3, dtype=[("a", "f8"), ("b", "f8")])
    with pytest.raises((TypeError, ValueError)) as caught:
        fitted.transform(structured)
    assert "text" not in str(caught.value)


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        (FISTACoder(np.eye(3)), "alpha"),
        (FISTACoder(n_components=2, dict_max_iter=2), "alpha"),
        (OracleDictionary(np.eye(3)), "alpha"),
        (SparseAutoencoder(2, max_epochs=1), "sparsity_coef"),
        (SparseAutoencoder(2, max_epochs=1), "lr"),
        (SparseAutoencoder(2, max_epochs=1), "weight_decay"),
    ],
)
def test_real_hyperparameters_refuse_bools_and_take_narrow_numpy_floats(
    estimator, name
):
    # True passes sklearn's Interval(Real) and ran as 1.0. NumPy floats of
    # any width are accepted, as scikit-learn accepts them (a float32 grid in
    # a search), and act as the Python float of the same value.
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match=f"'{name}' parameter of .*got True, a bool"):
        clone(estimator).set_params(**{name: True}).fit(X)
    # Beyond 64 bits a Python int failed inside torch ("int too big to
    # convert"), naming no parameter.
    for big in (2**63, 2**64):
        with pytest.raises(ValueError, match=f"'{name}' .* an int beyond 64 bits"):
            clone(estimator).set_params(**{name: big}).fit(X)
    for value in (np.float16(0.5), np.float32(0.5), np.float64(0.5)):
        clone(estimator).set_params(**{name: value}).fit(X)
    # A narrow NumPy integer is refused as for integer parameters, but the
    # message asked for "an int" where a float is expected.
    with pytest.raises(
        ValueError, match=r"must be a float, an int or .*float\(\.\.\.\)"
    ):
        clone(estimator).set_params(**{name: np.int8(1)}).fit(X)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SparseAutoencoder(8, max_epochs=2, random_state=0),
        lambda: SparseAutoencoder(
            8, max_epochs=2, validation_fraction=0.2, random_state=0
        ),
        lambda: SparseAutoencoder(
            8, activation="mp", k=2, max_epochs=2, random_state=0
        ),
        lambda: FISTACoder(n_components=8, dict_max_iter=4, random_state=0),
        lambda: OracleDictionary(),
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.filterwarnings("ignore:SparseAutoencoder stopped at max_epochs")
def test_fits_ignore_torchs_default_device(make, method):
    # Random draws from the estimators' CPU generator were made on torch's
    # default device: under torch.set_default_device("cuda") (here the meta
    # device, which has no values) every SAE fit and every dictionary learnt
    # failed deep inside torch, CPU data and device="cpu" notwithstanding.
    estimator = make()
    if not hasattr(estimator, method):
        pytest.skip(f"{type(estimator).__name__} has no {method}")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 6))
    y = sp.csr_array(rng.random((60, 3)) * (rng.random((60, 3)) < 0.5))
    expected = getattr(clone(estimator), method)(X, y).components_
    with torch.device("meta"):
        fitted = getattr(clone(estimator), method)(X, y).components_
    assert np.array_equal(fitted, expected)


def test_sparse_code_paths_ignore_torchs_default_device():
    # Sparse tensors built from CPU parts landed on the default device too:
    # dictionary learning on sparse codes (the paper's regime), wide TopK SAEs
    # and the metrics of sparse codes still failed under a default device.
    from skdict.datasets import make_compositional
    from skdict.metrics import mcc_score, support_scores

    data = make_compositional(n_latents=12, n_active=2, n_samples=200, random_state=0)
    X, Z = data.X_train, sp.csr_array(data.Z_val)

    def run():
        learner = FISTACoder(n_components=12, dict_max_iter=3, random_state=0)
        sae = SparseAutoencoder(256, activation="topk", k=2, max_epochs=1)
        return (
            learner.set_params(positive=True).fit(X).components_,
            sae.set_params(random_state=0).fit(X).components_,
            mcc_score(Z, Z),
            support_scores(Z, Z)["f1"],
        )

    expected = run()
    with torch.device("meta"):
        found = run()
    for a, b in zip(found, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_float16_alpha_codes_as_its_python_float():
    # np.float16(alpha) * step stayed float16, whose range ends at 65504:
    # with atoms of norm 1e-3 every code came back zero.
    rng = np.random.default_rng(0)
    D = rng.standard_normal((8, 5))
    D *= 1e-3 / np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((6, 5)) * 1e3
    expected = FISTACoder(D, alpha=float(np.float16(0.1))).fit_transform(X)
    assert np.count_nonzero(expected)
    for alpha in (np.float16(0.1), np.float32(np.float16(0.1))):
        np.testing.assert_array_equal(
            FISTACoder(D, alpha=alpha).fit_transform(X), expected
        )


@pytest.mark.parametrize("estimator", [FISTACoder, OracleDictionary])
def test_atoms_whose_norm_underflows_are_named(estimator):
    # Non-zero in float32, but their squared entries underflow to zero.
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    outside = "squares outside the normal range of"
    with pytest.raises(
        ValueError, match=rf"rows \[1\] whose norm \(1\.73e-25\) {outside} float32"
    ):
        estimator(np.vstack([np.eye(3)[:1], np.full((1, 3), 1e-25)])).fit(X)
    with pytest.raises(
        ValueError, match=rf"rows \[0\] whose norm \(1\.73e\+25\) {outside} float32"
    ):
        estimator(np.full((1, 3), 1e25)).fit(X)
    # float64 holds the norm 1e-200, not its square (torch's norm gives 0).
    with pytest.raises(ValueError, match=rf"norm \(1e-200\) {outside} float64"):
        estimator(np.eye(3) * 1e-200).fit(X.astype(np.float64))


# Estimators given a tensor parameter, and that parameter's name.
GRAPH_TENSOR_PARAMETERS = [
    pytest.param(lambda atoms: FISTACoder(atoms, alpha=0.05), "dictionary", id="coder"),
    pytest.param(
        lambda atoms: FISTACoder(
            n_components=4, init=atoms, dict_max_iter=2, random_state=0
        ),
        "init",
        id="learner",
    ),
    pytest.param(
        lambda atoms: OracleDictionary(atoms, alpha=0.05), "dictionary", id="oracle"
    ),
    pytest.param(
        lambda atoms: SparseAutoencoder(
            4, decoder=atoms, freeze_decoder=True, max_epochs=2, random_state=0
        ),
        "decoder",
        id="sae",
    ),
]


@pytest.mark.parametrize(("make", "name"), GRAPH_TENSOR_PARAMETERS)
def test_tensor_parameters_inside_an_autograd_graph_clone_detached(make, name):
    # sae.decoder.weight.T of a module being trained: torch refuses to
    # deep-copy such a tensor, which clone does to every parameter.
    pd = pytest.importorskip("pandas")
    weight = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    atoms = weight.T
    estimator = make(atoms).set_output(transform="pandas")
    cloned = clone(estimator)
    copied = cloned.get_params()[name]
    assert not copied.requires_grad
    torch.testing.assert_close(copied, atoms.detach(), rtol=0, atol=0)
    assert copied.data_ptr() != atoms.data_ptr()  # a copy, as clone makes
    assert estimator.get_params()[name] is atoms  # the original keeps its own
    # A leaf (the Parameter itself) is deep-copied as clone copies anything.
    leaf = clone(make(weight.detach().T.clone().requires_grad_())).get_params()[name]
    assert leaf.requires_grad and leaf.is_leaf
    X = np.random.default_rng(0).uniform(size=(30, 3))
    assert isinstance(cloned.fit(X).transform(X), pd.DataFrame)  # settings kept
    np.testing.assert_array_equal(
        cloned.transform(X), clone(estimator).fit(X).transform(X)
    )


@pytest.mark.parametrize(("make", "name"), GRAPH_TENSOR_PARAMETERS)
def test_views_of_a_larger_tensor_copy_alone(make, name):
    # torch deep-copies a view with its whole storage: every clone of
    # FISTACoder(dictionary=W_dec[:k]) (one per candidate and fold of a
    # search), and every deep copy, held all of W_dec. NumPy views and
    # pickles are copied alone.
    whole = torch.randn(300, 3, dtype=torch.float64)
    atoms = whole[:4]
    own_bytes = atoms.numel() * atoms.element_size()
    estimator = make(atoms)
    X = np.random.default_rng(0).uniform(size=(30, 3))
    held_by = {
        "clone": clone(estimator).get_params()[name],
        "holder clone": clone(make(SimpleNamespace(components_=atoms)))
        .get_params()[name]
        .components_,
        "deep copy": copy.deepcopy(estimator).get_params()[name],
        "fitted deep copy": copy.deepcopy(clone(estimator).fit(X)).get_params()[name],
    }
    for how, held in held_by.items():
        assert held.untyped_storage().nbytes() == own_bytes, how
        torch.testing.assert_close(held, atoms, rtol=0, atol=0)
    assert estimator.get_params()[name] is atoms  # the original keeps its own
    # A leaf view that requires grad stays one, and a Parameter stays one.
    leaf = whole.detach()[:4].requires_grad_()
    copied = clone(make(leaf)).get_params()[name]
    assert copied.requires_grad and copied.is_leaf
    assert copied.untyped_storage().nbytes() == own_bytes
    parameter = torch.nn.Parameter(whole.detach()[:4])
    copied = clone(make(parameter)).get_params()[name]
    assert type(copied) is torch.nn.Parameter and copied.requires_grad
    assert copied.untyped_storage().nbytes() == own_bytes
    # A whole Parameter is deep-copied as before, a Parameter still; the
    # rows of a decoder's weight being trained (W_dec[:k]) come detached.
    whole_parameter = torch.nn.Parameter(whole.detach()[:4].clone())
    copied = clone(make(whole_parameter)).get_params()[name]
    assert type(copied) is torch.nn.Parameter
    weight = torch.nn.Parameter(whole.detach().clone())
    copied = clone(make(weight[:4])).get_params()[name]
    assert not copied.requires_grad
    assert copied.untyped_storage().nbytes() == own_bytes


@pytest.mark.parametrize(("make", "name"), GRAPH_TENSOR_PARAMETERS)
def test_weights_holders_with_graph_tensors_clone_detached(make, name, monkeypatch):
    # The guide's SimpleNamespace(components_=W_dec, intercept_=b_dec) with
    # a torch decoder's weight.T (in the graph): fit worked, clone and every
    # model-selection tool failed inside torch's deepcopy.
    from sklearn.model_selection import cross_val_score

    decoder = torch.nn.Linear(4, 3, dtype=torch.float64)  # 4 atoms of 3 features
    weights = SimpleNamespace(components_=decoder.weight.T, intercept_=decoder.bias)
    estimator = make(weights)
    copied = clone(estimator).get_params()[name]
    assert copied is not weights and not copied.components_.requires_grad
    torch.testing.assert_close(
        copied.components_, decoder.weight.T.detach(), rtol=0, atol=0
    )
    assert copied.intercept_.is_leaf  # a leaf is copied as clone copies it
    assert weights.components_.requires_grad  # the original keeps its own
    X = np.random.default_rng(0).uniform(size=(30, 3))
    assert np.isfinite(cross_val_score(estimator, X, cv=2)).all()
    # Fitted, it deep-copies (torch refused the graph tensors) with its
    # tensors where they are, and pickles with its weights' tensors moved to
    # the CPU (CUDA ones stayed there).
    estimator.fit(X)
    moved = []
    monkeypatch.setattr(
        torch.Tensor, "cpu", lambda t: moved.append(t.shape) or t.detach().clone()
    )
    for copy_of, moves in (
        (copy.deepcopy, False),
        (lambda e: pickle.loads(pickle.dumps(e)), True),
    ):
        moved.clear()
        copied = copy_of(estimator)
        assert ((4, 3) in moved) is moves and ((3,) in moved) is moves
        held = copied.get_params()[name]
        assert held is not weights and not held.components_.requires_grad
        np.testing.assert_array_equal(copied.transform(X), estimator.transform(X))


class Immutable:
    """Weights whose copy.copy is themselves (picklable: at module level)."""

    def __init__(self, atoms):
        self.components_ = atoms

    def __copy__(self):
        return self


class FrozenBunch(dict):
    """Weights read as attributes, whose copy.copy is themselves."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __copy__(self):
        return self


def test_weights_holders_keep_their_type_sharing_and_owners_tensors():
    # A Bunch of weights came back from a pickle as a plain dict (a parallel
    # search failed on it); a holder whose copy.copy returns itself had the
    # user's own tensors replaced; a tensor held twice was pickled twice.
    from sklearn.model_selection import cross_val_score
    from sklearn.utils import Bunch

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    D = torch.randn(
        5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    bunch = FISTACoder(dictionary=Bunch(components_=D.numpy()))
    assert np.isfinite(cross_val_score(bunch, X, cv=2, n_jobs=2)).all()
    restored = pickle.loads(pickle.dumps(bunch.fit(X)))
    assert type(restored.dictionary) is Bunch and type(restored.dictionary_) is Bunch
    weight = torch.nn.Parameter(D.clone())
    holder = Immutable(weight * 1.0)
    coder = FISTACoder(dictionary=holder).fit(X)
    for copy_of in (copy.deepcopy, lambda e: pickle.loads(pickle.dumps(e))):
        copied = copy_of(coder)
        assert holder.components_.requires_grad  # the user's, untouched
        assert type(copied.dictionary) is Immutable
        np.testing.assert_array_equal(copied.transform(X), coder.transform(X))
    shared = FISTACoder(dictionary=SimpleNamespace(components_=D, backup=[D]))
    held = pickle.loads(pickle.dumps(shared)).dictionary
    assert held.components_ is held.backup[0]
    # A list holding itself, a dict subclass whose copy is itself, and a
    # Bunch of graph tensors (the guide's normalised W_dec) in a search.
    looped = SimpleNamespace(components_=D, log=[])
    looped.log.append(looped.log)
    held = copy.deepcopy(FISTACoder(dictionary=looped)).dictionary
    assert held.log[0] is held.log
    frozen = FISTACoder(dictionary=FrozenBunch(components_=D.numpy())).fit(X)
    assert type(pickle.loads(pickle.dumps(frozen)).dictionary) is FrozenBunch
    in_graph = Bunch(components_=torch.nn.functional.normalize(weight, dim=1))
    assert np.isfinite(cross_val_score(FISTACoder(in_graph), X, cv=2)).all()


def test_objects_that_are_neither_arrays_nor_providers_are_refused_by_name():
    # Accepted by the parameter checks (an object with fit, or transform),
    # then taken for an array: "float() argument must be ... not 'MyDict'".
    class FitsOnly:
        def fit(self, X, y=None):
            self.components_ = np.eye(3)
            return self

    codes = SimpleNamespace(transform=lambda X: np.zeros((len(X), 3)))
    X = np.random.default_rng(0).uniform(size=(10, 3))
    for make, name in (
        (lambda: FISTACoder(FitsOnly()), "dictionary"),
        (lambda: SparseAutoencoder(decoder=FitsOnly()), "decoder"),
        (lambda: OracleDictionary(FitsOnly()), "dictionary"),
        (lambda: FISTACoder(np.eye(3), init=codes), "init"),
    ):
        with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter .* an "):
            make().fit(X)


def test_providers_fitted_on_x_pass_on_their_input_tags():
    # FISTACoder(NMF(3)) said it took any X, then refused negative X.
    from sklearn.decomposition import NMF

    assert get_tags(FISTACoder(NMF(3))).input_tags.positive_only
    assert get_tags(SparseAutoencoder(decoder=NMF(3))).input_tags.positive_only
    assert get_tags(FISTACoder(n_components=3, init=NMF(3))).input_tags.positive_only
    assert not get_tags(FISTACoder(PCA(3))).input_tags.positive_only
    # A frozen provider is not fitted on X: its atoms take any X.
    X = np.random.default_rng(0).uniform(size=(20, 4))
    frozen = FrozenEstimator(NMF(3, max_iter=500).fit(X))
    assert not get_tags(FISTACoder(frozen)).input_tags.positive_only
    FISTACoder(frozen).fit(X - 0.5)


@pytest.mark.parametrize(
    "estimator", public_estimators(), ids=lambda est: type(est).__name__
)
def test_dataframes_in_and_out(estimator):
    # Column names are recorded, checked on transform and named on output;
    # set_output("pandas") returns a DataFrame with the input's index.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        rng.uniform(size=(40, 3)), columns=["a", "b", "c"], index=range(100, 140)
    )
    y = rng.uniform(size=(40, 2))
    fitted = clone(estimator).set_output(transform="pandas").fit(X, y)
    np.testing.assert_array_equal(fitted.feature_names_in_, ["a", "b", "c"])
    codes = fitted.transform(X)
    assert isinstance(codes, pd.DataFrame)
    assert list(codes.index) == list(X.index)
    assert list(codes.columns) == list(fitted.get_feature_names_out())
    assert codes.columns[0] == f"{type(estimator).__name__.lower()}0"
    with pytest.raises(ValueError, match="feature names"):
        fitted.transform(X[["c", "b", "a"]])


@pytest.mark.parametrize(
    "estimator", public_estimators(), ids=lambda est: type(est).__name__
)
def test_global_pandas_output(estimator):
    # set_config(transform_output="pandas") wraps every public transform,
    # those skdict calls inside its own too: the oracle's inner coder handed
    # it a DataFrame, and transform, fit_transform and pipelines crashed.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X, y = rng.uniform(size=(40, 3)), rng.uniform(size=(40, 2))
    with sklearn.config_context(transform_output="pandas"):
        fitted = clone(estimator).fit(X, y)
        codes = fitted.transform(X)
        fit_codes = clone(estimator).fit_transform(X, y)
        reconstructed = fitted.inverse_transform(codes.to_numpy())
    assert isinstance(codes, pd.DataFrame) and isinstance(fit_codes, pd.DataFrame)
    assert fit_codes.shape == codes.shape
    np.testing.assert_array_equal(codes.to_numpy(), fitted.transform(X))
    assert isinstance(reconstructed, np.ndarray)


@pytest.mark.parametrize(
    "estimator", public_estimators(), ids=lambda est: type(est).__name__
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pandas_output_of_half_precision_tensors(estimator, dtype):
    # pandas read the returned bfloat16 tensor through NumPy, which has no
    # such type: "Got unsupported ScalarType BFloat16", after the whole solve.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(size=(40, 3)).astype(np.float32))
    y = rng.uniform(size=(40, 2))
    fitted = clone(estimator).fit(X, y)
    expected = fitted.transform(X.to(dtype)).float().numpy()
    codes = fitted.set_output(transform="pandas").transform(X.to(dtype))
    fit_codes = (
        clone(estimator).set_output(transform="pandas").fit_transform(X.to(dtype), y)
    )
    for frame in (codes, fit_codes):
        assert isinstance(frame, pd.DataFrame)
        assert (frame.dtypes == np.float32).all()
    np.testing.assert_array_equal(codes.to_numpy(), expected)


PREFITTED_PROVIDER_USES = {
    "FISTACoder(dictionary=)": lambda provider: FISTACoder(provider),
    "FISTACoder(init=)": lambda provider: FISTACoder(
        np.eye(3), init=provider, max_iter=5
    ),
    "OracleDictionary(dictionary=)": lambda provider: OracleDictionary(provider),
    "SparseAutoencoder(decoder=)": lambda provider: SparseAutoencoder(
        3, decoder=provider, freeze_decoder=True, max_epochs=1
    ),
}


@pytest.mark.parametrize(
    "use", PREFITTED_PROVIDER_USES.values(), ids=list(PREFITTED_PROVIDER_USES)
)
@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "plain object"])
def test_prefitted_providers_check_column_names(use, frozen):
    # A provider fitted on a DataFrame holds its atoms in that frame's column
    # order: X with the columns reordered must be refused, as the provider's
    # own transform refuses it (the coder would otherwise record the wrong
    # order as its own and code every later X on misread atoms), and X
    # without names warns, as scikit-learn's estimators do.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.uniform(size=(40, 3)), columns=["a", "b", "c"])
    oracle = OracleDictionary(np.eye(3) + 0.1).fit(X)
    if frozen:
        provider = FrozenEstimator(oracle)
    else:  # weights from elsewhere: components_ and the names they came with
        provider = type("Weights", (), {})()
        provider.components_ = oracle.components_
        provider.feature_names_in_ = oracle.feature_names_in_
        provider.transform = oracle.transform  # codes too, for init
    with pytest.raises(ValueError, match="X's columns differ from those") as error:
        use(provider).fit(X[["c", "b", "a"]])
    assert "Feature names must be in the same order" in str(error.value)
    with pytest.warns(UserWarning, match="was fitted with feature names"):
        use(provider).fit(X.to_numpy())
    fitted = use(provider).fit(X)
    np.testing.assert_array_equal(fitted.feature_names_in_, ["a", "b", "c"])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "use", PREFITTED_PROVIDER_USES.values(), ids=list(PREFITTED_PROVIDER_USES)
)
def test_weights_without_column_names_take_data_frames_silently(use):
    # SimpleNamespace(components_=W), the guide's weights from elsewhere, say
    # nothing of their columns: no warning that they were "fitted without
    # feature names".
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(
        np.random.default_rng(0).uniform(size=(40, 3)), columns=list("abc")
    )
    oracle = OracleDictionary(np.eye(3) + 0.1).fit(X.to_numpy())
    weights = SimpleNamespace(
        components_=oracle.components_, transform=oracle.transform
    )
    fitted = use(weights).fit(X)
    np.testing.assert_array_equal(fitted.feature_names_in_, ["a", "b", "c"])


@pytest.mark.parametrize(
    "estimator", public_estimators(), ids=lambda est: type(est).__name__
)
def test_transformers_declare_and_keep_float32(estimator):
    # float32 codes of float32 data are part of the API (half the memory of
    # a wide dictionary's codes); the tag tells scikit-learn's
    # check_transformer_preserves_dtypes to verify it, and must say so.
    assert set(get_tags(estimator).transformer_tags.preserves_dtype) == {
        "float64",
        "float32",
    }
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 3)).astype(np.float32)
    y = rng.uniform(size=(40, 2))
    fitted = clone(estimator).fit(X, y)
    assert fitted.transform(X).dtype == np.float32
    assert fitted.transform(X.astype(np.float64)).dtype == np.float64


@pytest.mark.parametrize(
    "estimator", public_estimators(), ids=lambda est: type(est).__name__
)
def test_estimators_declare_array_api_support(estimator):
    # DESIGN.md: the estimators run on any array-API input; scikit-learn's
    # array-API checks, and dispatch from a pipeline, read this tag.
    assert get_tags(estimator).array_api_support


def test_wide_enough_numpy_numbers_are_accepted():
    # The bound is inclusive: NumPy integers of 64 bits hold the products the
    # estimators form; 32 bits do not.
    ints = {"k": [Interval(Integral, 1, None, closed="left")]}
    reals = {"alpha": [Interval(Real, 0, None, closed="neither")]}
    for value in (np.int64(3), np.uint64(3), 3):
        validate_hyperparameters(ints, {"k": value}, "f")
    for value in (np.float64(0.5), 0.5, np.int64(2)):
        validate_hyperparameters(reals, {"alpha": value}, "f")
    for value in (np.int32(3), np.uint32(3)):
        with pytest.raises(ValueError, match="at least 64 bits"):
            validate_hyperparameters(ints, {"k": value}, "f")
        with pytest.raises(ValueError, match="at least 64 bits"):
            validate_hyperparameters(reals, {"alpha": value}, "f")


def test_a_32_bit_width_is_refused_before_its_square_wraps_around():
    # np.int32(65536) ** 2 is 0: the matching-pursuit SAE took its width as
    # small enough for an atoms x atoms Gram matrix and asked for 17 GB.
    X = np.random.default_rng(0).standard_normal((64, 4))
    with pytest.raises(ValueError, match=r"'n_components' .* at least 64 bits"):
        SparseAutoencoder(np.int32(65536), activation="mp", k=2).fit(X)
    # Unsigned 64-bit sizes are taken as they are.
    width = np.uint64(16)
    model = SparseAutoencoder(width, activation="mp", k=np.uint64(2), max_epochs=1)
    assert model.fit(X).transform(X).shape == (64, 16)
    # As Python integers: before NumPy 2, np.uint64(16) + 64 is the float 80.0,
    # which torch refused as a size (every activation failed).
    module = model.module_
    assert {type(module.n_components), type(module.k)} == {int}


def test_wide_numpy_integers_are_taken_for_real_parameters():
    # Only Python ints are bounded to 64 bits; NumPy integers convert exactly.
    positive = {"alpha": [Interval(Real, 0, None, closed="neither")]}
    validate_hyperparameters(positive, {"alpha": np.uint64(2**63)}, "f")


FRACTION = {"t": [Interval(Real, 0, 1, closed="both")]}


@validate_params(FRACTION, prefer_skip_nested_validation=True)
def _fraction(t):
    return t


def test_skip_parameter_validation_skips_the_strict_checks_of_functions():
    with sklearn.config_context(skip_parameter_validation=True):
        assert _fraction(True) is True
    with pytest.raises(InvalidParameterError, match="got True, a bool"):
        _fraction(True)


@pytest.mark.parametrize("check", ["function", "hyperparameter"])
def test_a_huge_int_is_out_of_range_before_it_is_too_wide(check):
    # scikit-learn's constraints come first: 2**64 for a fraction is out of
    # range, whatever its type.
    with pytest.raises(InvalidParameterError, match=r"in the range \[0.0, 1.0\]"):
        if check == "function":
            _fraction(2**64)
        else:
            validate_hyperparameters(FRACTION, {"t": 2**64}, "f")


def test_a_zero_dimensional_array_is_not_array_like():
    # is_array_like decides SparseAutoencoder's "atoms given as n_components"
    # slip: np.array(4) is a count.
    assert not is_array_like(np.array(4)) and is_array_like(np.zeros(2))


@pytest.mark.parametrize(
    ("estimator", "name"),
    [
        # None asks for automatic batches; 0 is no batch size.
        (FISTACoder(np.eye(3)), "batch_size"),
        (OracleDictionary(np.eye(3)), "batch_size"),
        # 0 would stop training after its first epoch.
        (SparseAutoencoder(2, max_epochs=1), "n_iter_no_change"),
    ],
)
def test_zero_is_refused_where_a_positive_int_is_expected(estimator, name):
    with pytest.raises(InvalidParameterError, match=name):
        clone(estimator).set_params(**{name: 0}).fit(np.eye(3))


def test_target_tags_take_any_provider_fitted_in_fit():
    # One provider fitted here that needs y (an oracle without atoms) makes
    # the coder need y, whatever the other provider needs.
    for coder in (
        FISTACoder(OracleDictionary(), init=PCA(n_components=2)),
        FISTACoder(PCA(n_components=2), init=OracleDictionary()),
    ):
        tags = get_tags(coder).target_tags
        assert tags.required and tags.multi_output


@pytest.mark.parametrize(
    "estimator, match",
    [
        (FISTACoder(8), r"got 8, a number\. To learn .* n_components=8"),
        (FISTACoder(np.int64(8)), r"n_components=8"),
        (OracleDictionary(3), r"got 3, a number\. Without atoms, .*fit\(X, y\)"),
        (SparseAutoencoder(np.eye(4)), r"array of shape \(4, 4\)\. .* decoder="),
        (SparseAutoencoder([[1.0, 0.0]]), r"array of shape \(1, 2\)"),
    ],
)
def test_swapped_first_arguments_say_what_was_meant(estimator, match):
    # FISTACoder(8) and SparseAutoencoder(D) are the first arguments of
    # scikit-learn's decompositions swapped: the generic constraint error
    # said neither, and printed a whole matrix.
    with pytest.raises(InvalidParameterError, match=match) as error:
        estimator.fit(np.random.default_rng(0).uniform(size=(20, 4)))
    assert "[[" not in str(error.value)
    # Bools, which are integers, keep the generic error.
    with pytest.raises(InvalidParameterError, match="must be"):
        FISTACoder(True).fit(np.ones((3, 2)))


def test_an_interrupted_first_fit_leaves_no_fitted_attribute():
    from skdict._fitting import forget_fit_on_failure

    estimator = BaseEstimator()
    with pytest.raises(KeyboardInterrupt), forget_fit_on_failure(estimator):
        estimator.n_features_in_ = 3
        raise KeyboardInterrupt
    assert "n_features_in_" not in vars(estimator)


def test_an_interrupted_update_is_undone():
    from skdict._fitting import restored_on_failure

    estimator = BaseEstimator()
    estimator.components_ = [1.0]
    with pytest.raises(KeyboardInterrupt), restored_on_failure(estimator):
        estimator.components_ = [2.0]
        raise KeyboardInterrupt
    assert estimator.components_ == [1.0]
