"""The array boundary: output follows input, devices and dtypes are kept."""

import copy
import io
import math
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import NMF, PCA, DictionaryLearning
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skdict import FISTACoder, OracleDictionary, SparseAutoencoder, _tensor
from skdict._dictionary import GivenRecord
from skdict._tensor import (
    as_tensor,
    in_namespace_of,
    portable_state,
    resolve_device,
    sparse_as_tensor,
    sum_of_squares,
    to_numpy,
    to_output,
    to_tensor,
    validate_input,
)
from skdict.datasets import make_compositional
from skdict.metrics import mcc_score

from .conftest import array_api_dispatch, cuda, forked_during, requires_fork


def test_numpy_round_trip_keeps_dtype():
    for dtype in (np.float32, np.float64):
        X = np.arange(6, dtype=dtype).reshape(3, 2)
        T, origin = validate_input(BaseEstimator(), X, reset=True, device="cpu")
        assert T.dtype == {np.float32: torch.float32, np.float64: torch.float64}[dtype]
        out = to_output(T, origin)
        assert isinstance(out, np.ndarray) and out.dtype == dtype
        np.testing.assert_array_equal(out, X)


@pytest.mark.parametrize(
    "X", [[[1, 2], [3, 4]], np.array([[1, 2], [3, 4]], dtype=np.float16)]
)
def test_integers_lists_and_numpy_half_are_promoted_to_float64(X):
    # As scikit-learn's check_array does (the GPU guide says so); torch half
    # tensors instead come back in their own dtype (below).
    T, origin = validate_input(BaseEstimator(), X, reset=True)
    assert T.dtype == torch.float64
    assert to_output(T, origin).dtype == np.float64


def test_tensor_round_trip_keeps_device_and_dtype():
    X = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    T, origin = validate_input(BaseEstimator(), X, reset=True)
    out = to_output(T * 2, origin)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32 and out.device == X.device


def test_half_precision_is_computed_in_float32_and_returned_in_half():
    X = torch.ones(2, 3, dtype=torch.bfloat16)
    T, origin = validate_input(BaseEstimator(), X, reset=True)
    assert T.dtype == torch.float32
    assert to_output(T, origin).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.float8_e4m3fn])
def test_results_beyond_a_narrow_output_dtype_warn(dtype):
    # Codes beyond float16's 65,504 (float8_e4m3fn's 448) came back as inf
    # (NaN), silently: the input was finite and the float32 answer is not inf.
    D = np.array([[0.01, 0.0], [0.0, 1.0]])
    limit = torch.finfo(dtype).max
    X = torch.tensor([[limit / 50, 0.0], [0.0, 1.0]]).to(dtype)
    coder = FISTACoder(D, alpha=1e-3).fit(X)
    with pytest.warns(RuntimeWarning, match=f"exceed {dtype}'s largest value"):
        codes = coder.transform(X)
    assert codes.dtype == dtype
    assert float(coder.transform(X.float())[0, 0]) > limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coder.transform(X[1:])  # within range


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_is_computed_in_float32_and_returned_in_float8(dtype):
    # torch has no isfinite (and little else) for float8: it is widened first.
    rng = np.random.default_rng(0)
    D = rng.standard_normal((6, 4))
    X = torch.tensor(rng.uniform(size=(10, 6)) @ D).to(dtype)
    coder = FISTACoder(D).fit(X)
    codes = coder.transform(X)
    assert codes.dtype == dtype and coder.inverse_transform(codes).dtype == dtype
    widened = coder.transform(X.float())
    torch.testing.assert_close(codes.float(), widened.to(dtype).float())
    with pytest.raises(ValueError, match="NaN or infinity"):
        validate_input(BaseEstimator(), X.float().fill_(np.nan).to(dtype), reset=True)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_and_bool_tensors_come_back_as_float64(dtype):
    # Results are real numbers: casting them back to the input's dtype would
    # truncate them silently.
    X = torch.ones(2, 3, dtype=dtype)
    T, origin = validate_input(BaseEstimator(), X, reset=True)
    assert T.dtype == torch.float64
    out = to_output(T / 4, origin)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.full((2, 3), 0.25, dtype=torch.float64))
    codes, codes_origin = to_tensor(X, device="cpu", name="codes")
    assert to_output(codes / 4, codes_origin).dtype == torch.float64


def test_a_single_column_with_a_negative_stride_is_taken():
    # X[:, ::-1] of one column: NumPy flags it contiguous and keeps the
    # negative stride, which torch.from_numpy refused ("At least one stride
    # in the given numpy array is negative") at every entry point.
    from skdict.metrics import dictionary_similarity, reconstruction_error

    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 1))[:, ::-1]
    D = np.ones((1, 1))[::-1, ::-1]
    assert X.strides[1] < 0 and X.flags.c_contiguous
    coder = FISTACoder(D, alpha=0.1).fit(X)
    np.testing.assert_array_equal(coder.transform(X), coder.transform(X.copy()))
    assert mcc_score(X, X) == pytest.approx(1.0)
    assert reconstruction_error(X, X) == 0.0
    assert dictionary_similarity(D, D) == pytest.approx(1.0)
    sae = SparseAutoencoder(2, max_epochs=2, random_state=0)
    np.testing.assert_array_equal(
        sae.fit(X).components_, clone(sae).fit(X.copy()).components_
    )


def test_reset_false_checks_n_features_for_tensors():
    est = BaseEstimator()
    validate_input(est, torch.zeros(2, 3), reset=True)
    assert est.n_features_in_ == 3
    with pytest.raises(ValueError, match="3 features"):
        validate_input(est, torch.zeros(2, 4), reset=False)


@pytest.mark.parametrize(
    "shape, advice",
    [((4,), r"X.reshape\(-1, 1\)"), ((2, 3, 4), r"X.reshape\(-1, X.shape\[-1\]\)")],
)
def test_transform_time_tensors_of_the_wrong_rank_say_so(shape, advice):
    # sklearn's feature count read a 1-D tensor as one with no features; a
    # (batch, sequence, d_model) tensor is told how to code every position.
    est = BaseEstimator()
    validate_input(est, torch.zeros(2, 4), reset=True)
    with pytest.raises(ValueError, match="Expected a 2D tensor for X") as error:
        validate_input(est, torch.zeros(shape), reset=False)
    assert re.search(advice, str(error.value))


@pytest.mark.parametrize(
    "X, match",
    [
        (torch.zeros(3), "2D"),
        (torch.zeros(0, 3), "0 sample"),
        (torch.zeros(3, 0), "0 feature"),
        (torch.tensor([[1.0, float("nan")]]), "NaN"),
        (torch.tensor([[1.0, float("inf")]]), "infinity"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.zeros((0, 2)), "0 sample"),
    ],
)
def test_bad_input_is_named(X, match):
    with pytest.raises(ValueError, match=match):
        validate_input(BaseEstimator(), X, reset=True)


@pytest.mark.parametrize(
    "X, error",
    [
        ([[1.0, 2.0], [3.0]], ValueError),  # ragged rows
        ({1.0, 2.0}, TypeError),  # a set (a dict is named: test_common.py)
        (np.ones((2, 2)) + 1j, ValueError),
    ],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda: FISTACoder(np.eye(2)),
        lambda: OracleDictionary(np.eye(2)),
        lambda: SparseAutoencoder(2, max_epochs=1),
    ],
)
def test_input_numpy_cannot_read_is_named(make, X, error):
    # NumPy's own messages ("setting an array element with a sequence",
    # "float() argument must be ...") did not say which input, where the
    # metrics say "Invalid X".
    with pytest.raises(error, match=r"^Invalid X: "):
        make().fit(X)


class _Undecodable:
    """An array-like whose loading fails with a five-argument ValueError."""

    shape, ndim, dtype = (3, 2), 2, np.dtype(float)

    def __len__(self):
        return 3

    def __array__(self, dtype=None, copy=None):
        b"\xff".decode("utf-8")


def test_errors_of_subclasses_are_raised_as_they_are():
    # Rebuilt with a message, a UnicodeDecodeError became "TypeError:
    # function takes exactly 5 arguments (1 given)".
    with pytest.raises(UnicodeDecodeError):
        FISTACoder(np.eye(2)).fit(_Undecodable())
    with pytest.raises(UnicodeDecodeError):
        mcc_score(_Undecodable(), np.ones((3, 2)))


def test_ragged_codes_are_named():
    with pytest.raises(ValueError, match=r"^Invalid y: "):
        OracleDictionary().fit(np.ones((2, 2)), [[1.0, 2.0], [3.0]])


def test_tensor_and_numpy_input_name_the_estimator_alike():
    # check_array names the estimator; the tensor path's own checks did not.
    for X in (torch.zeros(0, 3), np.zeros((0, 3))):
        with pytest.raises(ValueError, match="required by FISTACoder"):
            validate_input(FISTACoder(), X, reset=True)
    with pytest.raises(ValueError, match="not supported by FISTACoder; got X, a"):
        validate_input(
            FISTACoder(), torch.zeros(2, 3, dtype=torch.complex64), reset=True
        )
    coder = FISTACoder(np.eye(3)).fit(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"in codes by FISTACoder\.inverse_trans"):
        coder.inverse_transform(np.zeros((0, 3)))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_tensors_are_rejected_by_name(layout):
    A = torch.eye(3, dtype=torch.float64)
    A = A.to_sparse() if layout == "coo" else A.to_sparse_csr()
    with pytest.raises(TypeError, match="Invalid X: a sparse tensor"):
        validate_input(BaseEstimator(), A, reset=True)
    with pytest.raises(TypeError, match="Invalid codes: a sparse tensor"):
        to_tensor(A, name="codes")


def test_complex_tensor_rejected():
    with pytest.raises(ValueError, match="Complex"):
        validate_input(
            BaseEstimator(), torch.zeros(2, 2, dtype=torch.complex64), reset=True
        )


@pytest.mark.filterwarnings("error")  # NumPy's ComplexWarning was all there was
@pytest.mark.parametrize(
    "sparse",
    [sp.csr_array, lambda A: torch.from_numpy(A).to_sparse()],
    ids=["scipy", "torch"],
)
def test_sparse_codes_refuse_complex_values(sparse):
    # The SciPy path cast them to float64, dropping the imaginary parts:
    # mcc_score of Z against Z + 1j Z was 1.0.
    from skdict.metrics import mcc_score

    Z = np.random.default_rng(0).uniform(size=(20, 3))
    with pytest.raises(ValueError, match="codes holds complex values"):
        mcc_score(Z, sparse(Z + 1j * Z))


def test_as_tensor_names_the_parameter():
    with pytest.raises(ValueError, match="dictionary contains NaN"):
        as_tensor(np.array([[np.nan]]), device=torch.device("cpu"), name="dictionary")
    with pytest.raises(ValueError, match="dictionary must be a 2-D"):
        as_tensor(np.ones(3), device=torch.device("cpu"), name="dictionary")


@pytest.mark.parametrize(
    "value, match",
    [(None, "codes must be an array; got None"), (3.0, r"2-D array; got shape \(\)")],
)
def test_scalars_and_none_are_named_as_such(value, match):
    with pytest.raises(ValueError, match=match):
        to_tensor(value, name="codes")


def test_an_estimator_given_for_an_array_is_named_as_such():
    fitted = OracleDictionary(np.eye(3)).fit(np.ones((4, 3)))
    with pytest.raises(TypeError, match="codes must be an array; got the estimator"):
        mcc_score(np.ones((4, 3)), fitted)
    with pytest.raises(TypeError, match=r"X must be an array; .*its transform\(X\)"):
        fitted.transform(fitted)
    # Data whose columns are named like an estimator's methods are data.
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.eye(3), columns=["fit", "get_params", "x"])
    assert FISTACoder(np.eye(3)).fit(X).transform(X).shape == (3, 3)


def test_values_beyond_the_target_precision_are_named():
    big = np.full((2, 2), 1e39)
    with pytest.raises(ValueError, match=r"beyond the range of torch\.float32"):
        as_tensor(big, device=torch.device("cpu"), dtype=torch.float32, name="init")
    X = np.ones((3, 2), dtype=np.float32)
    for scale, norm in [(1e39, "inf"), (1e-50, "0")]:
        with pytest.raises(ValueError, match=f"whose norm is {norm} in float32"):
            FISTACoder(np.eye(2) * scale).fit(X)


def test_array_api_arrays_without_dispatch_are_array_like():
    # As in scikit-learn: without array-API dispatch they come back as NumPy,
    # through transform and inverse_transform alike.
    xp = pytest.importorskip("array_api_strict")
    coder = FISTACoder(np.eye(3)).fit(np.ones((4, 3)))
    codes = coder.transform(xp.asarray(np.ones((2, 3), dtype=np.float32)))
    X_back = coder.inverse_transform(xp.asarray(np.ones((2, 3), dtype=np.float32)))
    assert type(codes) is type(X_back) is np.ndarray
    assert codes.dtype == X_back.dtype


@pytest.mark.skipif(
    np.lib.NumpyVersion(np.__version__) < "2.1.0",
    reason="NumPy reads arrays from other devices through from_dlpack(device=) "
    "from 2.1 on",
)
def test_array_api_arrays_on_another_device_are_read_as_parameters():
    xp = pytest.importorskip("array_api_strict")
    D = xp.asarray(np.eye(3), device=xp.Device("device1"))
    np.testing.assert_array_equal(
        FISTACoder(D).fit(np.ones((4, 3))).components_, np.eye(3)
    )


def test_to_tensor_origin_follows_codes():
    codes = torch.ones(2, 2, dtype=torch.float64)
    _T, origin = to_tensor(codes)
    assert origin.kind == "torch" and origin.out_dtype == torch.float64
    _, origin = to_tensor(np.ones((2, 2), dtype=np.float32))
    assert origin.kind == "numpy" and origin.dtype == torch.float32


def test_resolve_device_errors_are_clear():
    with pytest.raises(ValueError, match="'device' parameter"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resolve_device_rejects_a_missing_cuda_index():
    with pytest.raises(ValueError, match="numbered from 0"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.skipif(
    torch.backends.mps.is_available(), reason="this machine has an MPS device"
)
def test_resolve_device_rejects_an_absent_backend_by_name():
    # torch parses "mps" on every build; without the backend the first tensor
    # would fail deep inside a fit.
    with pytest.raises(ValueError, match="device='mps' was requested"):
        resolve_device("mps")
    # Some backends fail by importing a module the build lacks.
    if not hasattr(torch, "hpu"):
        with pytest.raises(ValueError, match="device='hpu' was requested"):
            resolve_device("hpu")


def test_meta_device_is_rejected_up_front():
    # The meta device has shapes but no values: every estimator would fail at
    # its first read of a value, deep inside torch.
    X = np.random.default_rng(0).uniform(size=(20, 5))
    for device in ("meta", torch.device("meta")):
        with pytest.raises(ValueError, match="no values"):
            resolve_device(device)
    with pytest.raises(ValueError, match="meta device"):
        resolve_device("auto", torch.empty(3, 5, device="meta"))
    from skdict import FISTACoder, SparseAutoencoder

    with pytest.raises(ValueError, match="no values"):
        FISTACoder(np.eye(5), device="meta").fit(X)
    with pytest.raises(ValueError, match="no values"):
        SparseAutoencoder(n_components=4, device="meta", max_epochs=1).fit(X)
    with pytest.raises(ValueError, match="meta device"):
        FISTACoder(np.eye(5)).fit(torch.empty(20, 5, device="meta"))


@pytest.mark.parametrize("estimator", ["FISTACoder", "OracleDictionary", "SAE"])
def test_inverse_transform_refuses_codes_without_rows(estimator):
    # As transform refuses an X without rows, and scikit-learn's PCA both.
    from skdict import FISTACoder, OracleDictionary, SparseAutoencoder

    X = np.random.default_rng(0).uniform(size=(20, 3))
    fitted = {
        "FISTACoder": lambda: FISTACoder(np.eye(3)).fit(X),
        "OracleDictionary": lambda: OracleDictionary(np.eye(3)).fit(X),
        "SAE": lambda: SparseAutoencoder(3, max_epochs=1).fit(X),
    }[estimator]()
    with pytest.raises(ValueError, match=r"0 sample\(s\) \(shape=\(0, 3\)\)"):
        fitted.inverse_transform(np.zeros((0, 3)))
    assert fitted.inverse_transform(np.zeros((1, 3))).shape == (1, 3)


def test_meta_arrays_beside_x_are_named():
    # A dictionary, decoder, init, y or codes on the meta device (weights of
    # a model built under torch.device("meta")) met torch's "Cannot copy out
    # of meta tensor", or a complaint about a ``device`` never set.
    from skdict import FISTACoder, OracleDictionary, SparseAutoencoder

    X = np.random.default_rng(0).uniform(size=(20, 5))
    meta = torch.empty(5, 5, device="meta")
    calls = {
        "dictionary": lambda: FISTACoder(meta).fit(X),
        "decoder": lambda: SparseAutoencoder(decoder=meta, max_epochs=1).fit(X),
        "init": lambda: FISTACoder(n_components=5, init=meta).fit(X),
        "y": lambda: OracleDictionary().fit(X, torch.empty(20, 5, device="meta")),
        "codes": lambda: FISTACoder(np.eye(5)).fit(X).inverse_transform(meta),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"^{name} is a tensor on the meta"):
            call()


@pytest.mark.filterwarnings("ignore::UserWarning")  # prototype or deprecated kinds
@pytest.mark.parametrize(
    "kind, make, advice",
    [
        ("nested", lambda X: torch.nested.nested_tensor([X, X]), "torch.cat"),
        (
            "quantized",
            lambda X: torch.quantize_per_tensor(X.float(), 0.1, 0, torch.qint8),
            r"X\.dequantize\(\)",
        ),
        ("masked", lambda X: torch.masked.masked_tensor(X, X > 0), "fill the masked"),
    ],
)
def test_tensors_without_plain_values_are_refused_by_name(kind, make, advice):
    # They pass the sparse and meta checks (a strided layout) and failed
    # inside torch: "Internal error ... Please file an issue" for nested
    # tensors, a RecursionError in mcc_score for masked ones.
    from skdict import FISTACoder
    from skdict.metrics import mcc_score

    X = torch.rand(6, 3, dtype=torch.float64)
    exotic = make(X)
    with pytest.raises(TypeError, match=f"Invalid X: a {kind} tensor.*{advice}"):
        FISTACoder(np.eye(3)).fit(exotic)
    with pytest.raises(TypeError, match=f"Invalid Z_true: a {kind} tensor"):
        mcc_score(exotic, X)


def test_arrays_of_more_dimensions_get_advice_for_both_layouts():
    # Following "reshape(-1, X.shape[-1])" on (batch, channels, height, width)
    # maps made the width the features, silently.
    from skdict import FISTACoder

    with pytest.raises(ValueError, match=r"reshape\(-1, X\.shape\[-1\]\).*movedim"):
        FISTACoder(np.eye(3)).fit(torch.rand(2, 3, 4, 5))


def test_portable_state_moves_tensors_to_cpu():
    state = {"a": torch.ones(2), "m": torch.nn.Linear(2, 2), "n": 3}
    moved = portable_state(state)
    assert moved["a"].device.type == "cpu" and moved["n"] == 3
    pickle.loads(pickle.dumps(moved))


def test_a_module_on_the_cpu_pickles_to_the_same_bytes_every_time():
    # Copying it would give other bytes at each pickling, and joblib.hash,
    # which Pipeline(memory=) caches by, would change.
    net = torch.nn.Linear(4, 3)
    state = portable_state({"module": net})
    assert state["module"] is net
    assert pickle.dumps(portable_state({"module": net})) == pickle.dumps(state)


def test_a_memory_mapped_load_of_tensor_attributes_does_not_warn(rng, tmp_path):
    # torch.from_numpy warns on the read-only arrays that mmap_mode="r" gives.
    X = torch.from_numpy(rng.standard_normal((5, 4)))
    coder = FISTACoder(dictionary=torch.eye(3, 4), alpha=0.1).fit(X)
    joblib.dump(coder, tmp_path / "coder.joblib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = joblib.load(tmp_path / "coder.joblib", mmap_mode="r")
    torch.testing.assert_close(loaded.transform(X), coder.transform(X))


def test_sum_of_squares_of_an_infinite_entry_is_infinite():
    # A difference that overflows float64 is infinitely large, not undefined.
    block = torch.tensor([math.inf, 1.0], dtype=torch.float64)
    assert sum_of_squares(block, 4.0) == math.inf


def test_portable_state_converts_named_tuples_and_keeps_sharing():
    # The record of a given dictionary is a NamedTuple: its tensors move to
    # the CPU with the rest and stay shared with the parameter they record.
    atoms = torch.ones(2, 2)
    state = {"dictionary": atoms, "_record": GivenRecord(atoms, {"atoms": atoms})}
    moved = portable_state(state)
    record = moved["_record"]
    assert isinstance(record, GivenRecord)
    assert record.dictionary is moved["dictionary"] is not atoms
    assert record.params["atoms"] is moved["dictionary"]


@pytest.mark.parametrize(
    "make",
    [
        FISTACoder,
        OracleDictionary,
        lambda D: SparseAutoencoder(
            6, decoder=D, freeze_decoder=True, activation="topk", k=2, max_epochs=2
        ),
    ],
    ids=["fista", "oracle", "sae"],
)
def test_tensor_parameters_pickle_by_value(make, tmp_path):
    # torch writes a tensor's storage address into its pickle: every clone of
    # an estimator given a tensor hashed differently, and Pipeline(memory=)
    # coded again for every candidate of a search (6-7 codings for 3).
    rng = np.random.default_rng(0)
    D = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(6, 5))), dim=1)
    X = rng.normal(size=(40, 5))
    y = (X[:, 0] > 0).astype(int)
    estimator = make(D)
    assert joblib.hash(clone(estimator)) == joblib.hash(clone(estimator))
    pipe = Pipeline(
        [("code", estimator), ("probe", LogisticRegression())], memory=str(tmp_path)
    )
    GridSearchCV(pipe, {"probe__C": [0.1, 1.0, 10.0]}, cv=2).fit(X, y)
    assert len(list(tmp_path.rglob("output.pkl"))) == 3  # 2 folds and the refit
    fitted = clone(estimator).fit(torch.tensor(X))
    for copied in (pickle.loads(pickle.dumps(fitted)), copy.deepcopy(fitted)):
        assert type(copied.components_) is torch.Tensor
        np.testing.assert_array_equal(copied.transform(X), fitted.transform(X))


@pytest.mark.parametrize("kind", ["coder", "learner", "oracle", "sae"])
def test_a_deep_copy_keeps_tensors_and_modules_where_they_are(kind, monkeypatch):
    # Through __getstate__ (for pickles), copy.deepcopy called .cpu() on every
    # tensor and module: a model fitted on a GPU came back on the CPU.
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(40, 5)))
    atoms = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(6, 5))), dim=1)
    estimator = {
        "coder": lambda: FISTACoder(atoms),
        "learner": lambda: FISTACoder(n_components=6, dict_max_iter=3, random_state=0),
        "oracle": lambda: OracleDictionary(atoms),
        "sae": lambda: SparseAutoencoder(6, max_epochs=2, random_state=0),
    }[kind]().fit(X)
    expected = estimator.transform(X)
    moved = []

    def spy(method):
        original = getattr(method[0], method[1])

        def recording(self, *args, **kwargs):
            # The SAE's record of its output type is an empty tensor.
            if not (isinstance(self, torch.Tensor) and self.numel() == 0):
                moved.append(method[1])
            return original(self, *args, **kwargs)

        monkeypatch.setattr(*method, recording)

    for method in [
        (torch.Tensor, "cpu"),
        (torch.Tensor, "to"),
        (torch.nn.Module, "cpu"),
        (torch.nn.Module, "to"),
    ]:
        spy(method)
    estimator.owner = [estimator]  # a reference back to itself
    copied = copy.deepcopy(estimator)
    assert moved == []
    monkeypatch.undo()
    assert copied.owner[0] is copied
    assert type(copied.components_) is torch.Tensor
    torch.testing.assert_close(copied.transform(X), expected, rtol=0, atol=0)
    # A copy, not a view: changing the copy leaves the original alone.
    if kind == "sae":
        assert copied.module_ is not estimator.module_
        with torch.no_grad():
            copied.module_.W_dec.zero_()
    else:
        assert copied.components_.data_ptr() != estimator.components_.data_ptr()
        copied.components_.zero_()
    torch.testing.assert_close(estimator.transform(X), expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64, torch.bool])
def test_portable_tensors_keep_values_dtype_shape_and_sharing(dtype):
    atoms = torch.arange(12.0).reshape(3, 4).to(dtype)[:, ::2]  # not contiguous
    empty = torch.ones(0, 3, dtype=dtype)
    state = portable_state({"dictionary": atoms, "_record": [atoms], "none": empty})
    buffer = io.BytesIO()
    joblib.dump(state, buffer)
    buffer.seek(0)
    for loaded in (pickle.loads(pickle.dumps(state)), joblib.load(buffer)):
        assert type(loaded["dictionary"]) is torch.Tensor
        assert loaded["dictionary"].dtype == loaded["none"].dtype == dtype
        assert torch.equal(loaded["dictionary"], atoms)
        assert loaded["none"].shape == (0, 3)
        assert loaded["_record"][0] is loaded["dictionary"]
    other = atoms.clone()  # equal values in another storage: the same bytes
    again = portable_state({"dictionary": other, "_record": [other], "none": empty})
    assert pickle.dumps(state) == pickle.dumps(again)


# torch warns of quantized and (prototype) nested tensors, and in pickling them.
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_special_and_expanded_tensors_pickle_as_they_are():
    # Quantized tensors lost their scale (dequantize() failed after a round
    # trip), nested ones did not pickle at all, and an expanded tensor (stride
    # 0) pickled all the values it repeats.
    quantized = torch.quantize_per_tensor(
        torch.tensor([0.5, -1.0]), 0.1, 0, torch.qint8
    )
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])
    expanded = torch.arange(256.0).expand(512, 256)
    state = {"q": quantized, "n": nested, "e": expanded}
    loaded = pickle.loads(pickle.dumps(portable_state(state)))
    assert torch.equal(loaded["q"].dequantize(), quantized.dequantize())
    assert loaded["n"].is_nested and torch.equal(loaded["n"][1], torch.ones(3))
    assert torch.equal(loaded["e"], expanded) and loaded["e"].stride() == (0, 1)
    assert len(pickle.dumps(portable_state({"e": expanded}))) < 4 * 256 * 8


def test_a_shallow_copy_shares_the_attributes(rng):
    # copy.copy went through __getstate__, made for pickles: it moved tensors
    # to the CPU and handed out their private pickling type, which torch.load
    # then refused.
    X = torch.tensor(rng.normal(size=(10, 3)))
    for estimator in (
        OracleDictionary(torch.eye(3)),
        FISTACoder(n_components=2, random_state=0, dict_max_iter=2),
        SparseAutoencoder(2, activation="topk", k=1, max_epochs=1, random_state=0),
    ):
        fitted = estimator.fit(X)
        copied = copy.copy(fitted)
        assert copied is not fitted and copied.components_ is fitted.components_
        assert type(copied.components_.cpu().contiguous()) is torch.Tensor
        assert torch.equal(copied.transform(X), fitted.transform(X))


@cuda
def test_cuda_given_dictionary_pickles_to_cpu_and_continues():
    D = torch.nn.functional.normalize(torch.randn(6, 4, device="cuda"), dim=1)
    X = torch.randn(20, 4, device="cuda")
    coder = FISTACoder(D).partial_fit(X)
    state = coder.__getstate__()
    flat = [state["dictionary"], *state["_dictionary_param"]]
    assert all(t.device.type == "cpu" for t in flat if torch.is_tensor(t))
    loaded = pickle.loads(pickle.dumps(coder))
    assert loaded.dictionary is loaded._dictionary_param.dictionary
    assert loaded.partial_fit(X.cpu()).components_.shape == (6, 4)


@cuda
def test_cuda_exploring_stream_pickles_to_cpu_and_continues():
    # The stream's statistics carry the atoms it resampled as duplicates.
    X = torch.rand(60, 5, device="cuda")
    coder = FISTACoder(n_components=8, positive=True, random_state=0).partial_fit(X)
    records = coder._online_statistics["duplicates"]
    assert records.kept.device.type == "cuda"
    state = coder.__getstate__()
    carried = state["_online_statistics"]["duplicates"]
    assert all(tensor.device.type == "cpu" for tensor in carried)
    loaded = pickle.loads(pickle.dumps(coder))
    assert loaded.partial_fit(X.cpu()).components_.shape == (8, 5)


@array_api_dispatch
def test_array_api_strict_round_trip():
    xp = pytest.importorskip("array_api_strict")
    from sklearn import config_context

    X = xp.asarray(np.ones((3, 2)))
    with config_context(array_api_dispatch=True):
        T, origin = validate_input(BaseEstimator(), X, reset=True, device="cpu")
        out = to_output(T, origin)
    assert origin.kind == "array_api"
    assert type(out) is type(X)


@array_api_dispatch
def test_numpy_under_array_api_dispatch_stays_numpy():
    from sklearn import config_context

    X = np.ones((3, 2))
    with config_context(array_api_dispatch=True):
        T, origin = validate_input(BaseEstimator(), X, reset=True, device="cpu")
    assert origin.kind == "numpy" and origin.xp is None
    assert type(to_output(T, origin)) is np.ndarray


@cuda
def test_cuda_tensor_round_trip():
    X = torch.ones(3, 2, device="cuda")
    T, origin = validate_input(BaseEstimator(), X, reset=True)
    assert T.device.type == "cuda"
    assert to_output(T, origin).device == X.device
    T, origin = validate_input(
        BaseEstimator(), np.ones((3, 2)), reset=True, device="cuda"
    )
    assert T.device.type == "cuda" and isinstance(to_output(T, origin), np.ndarray)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_oracle_scores_as_the_coder_does_in_reduced_precision(dtype):
    # Both score in float32: a reconstruction rounded to float16 first gave
    # the oracle a different score for the same model.
    rng = np.random.default_rng(0)
    D = rng.standard_normal((5, 4))
    X = rng.uniform(size=(50, 4))
    X_low = torch.tensor(rng.uniform(size=(20, 5)) @ D * 100).to(dtype)
    oracle = OracleDictionary(D, positive=False).fit(X)
    coder = FISTACoder(D).fit(X)
    assert oracle.score(X_low) == coder.score(X_low)


@array_api_dispatch
def test_a_frozen_provider_fitted_on_numpy_gives_codes_for_tensors_under_dispatch():
    # The paper's refined-SAE setup with a pre-fitted SAE: its atoms and its
    # warm-start codes both serve a torch pipeline under array-API dispatch.
    from sklearn import config_context
    from sklearn.frozen import FrozenEstimator

    from skdict import SparseAutoencoder

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(64, 6))
    sae = SparseAutoencoder(8, max_epochs=2, random_state=0).fit(X)
    X_t = torch.tensor(X[:16], dtype=torch.float32)
    coder = FISTACoder(FrozenEstimator(sae), init=FrozenEstimator(sae))
    expected = clone(coder).fit(X_t).transform(X_t)
    with config_context(array_api_dispatch=True):
        codes = coder.fit(X_t).transform(X_t)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.float32
    torch.testing.assert_close(codes, expected)


_SCIKIT_LEARN_PROVIDERS = pytest.mark.parametrize(
    "make",
    [
        lambda: FISTACoder(DictionaryLearning(3, max_iter=5, random_state=0)),
        lambda: OracleDictionary(DictionaryLearning(3, max_iter=5, random_state=0)),
        lambda: SparseAutoencoder(
            decoder=DictionaryLearning(3, max_iter=5, random_state=0),
            max_epochs=1,
            random_state=0,
        ),
        lambda: FISTACoder(
            np.random.default_rng(1).uniform(size=(6, 4)),
            positive=True,
            init=NMF(6, max_iter=50, random_state=0),
        ),
        # Pipelines declare no array-API support, whatever their steps.
        lambda: FISTACoder(
            np.random.default_rng(1).uniform(size=(4, 4)),
            init=make_pipeline(StandardScaler(), PCA(4)),
        ),
    ],
    ids=["dictionary", "oracle", "decoder", "init", "pipeline init"],
)


@_SCIKIT_LEARN_PROVIDERS
@array_api_dispatch
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_providers_without_array_api_support_are_fitted_on_numpy(make):
    # Under dispatch, an unfitted provider that does not support the array
    # API (DictionaryLearning, NMF) gets NumPy copies to fit on, and the
    # estimator's results are those of NumPy input, in the input's type.
    from sklearn import config_context

    X = np.abs(np.random.default_rng(0).standard_normal((40, 4)))
    X_t = torch.tensor(X)
    expected = make().fit(X)
    with config_context(array_api_dispatch=True):
        estimator = make().fit(X_t)
        codes = estimator.transform(X_t)
        score = estimator.score(X_t)
    assert isinstance(codes, torch.Tensor)
    np.testing.assert_allclose(codes.numpy(), expected.transform(X), atol=1e-12)
    assert score == pytest.approx(expected.score(X), rel=1e-12)


@_SCIKIT_LEARN_PROVIDERS
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scikit_learn_providers_get_numpy_copies_without_dispatch(make):
    # scikit-learn reads its input through NumPy, which refuses tensors that
    # require grad (and GPU tensors): such providers get host copies, and the
    # results are those of NumPy input.
    X = np.abs(np.random.default_rng(0).standard_normal((40, 4)))
    X_t = torch.tensor(X, requires_grad=True)
    expected = make().fit(X)
    estimator = make().fit(X_t)
    codes = estimator.transform(X_t)
    assert isinstance(codes, torch.Tensor) and not codes.requires_grad
    np.testing.assert_allclose(codes.numpy(), expected.transform(X), atol=1e-12)
    assert estimator.score(X_t) == pytest.approx(expected.score(X), rel=1e-12)


def test_array_api_estimators_get_numpy_copies_without_dispatch():
    # PCA supports the array API, but only under dispatch.
    X = np.random.default_rng(0).standard_normal((30, 4))
    X_t = torch.tensor(X, requires_grad=True)
    coder = FISTACoder(PCA(3), init=PCA(3)).fit(X_t)
    expected = FISTACoder(PCA(3), init=PCA(3)).fit(X)
    torch.testing.assert_close(
        coder.transform(X_t), torch.from_numpy(expected.transform(X))
    )


def test_skdict_providers_and_their_subclasses_take_tensors():
    # Tensors stay tensors (on their device) for skdict's own estimators,
    # subclassed or frozen twice.
    from sklearn.frozen import FrozenEstimator

    class MyCoder(FISTACoder):
        pass

    X = torch.rand(40, 5, dtype=torch.float64)
    fitted = MyCoder(n_components=3, dict_max_iter=2, random_state=0).fit(X)
    for provider in (
        MyCoder(n_components=3, dict_max_iter=2, random_state=0),
        FrozenEstimator(FrozenEstimator(fitted)),
    ):
        coder = FISTACoder(provider).fit(X)
        assert isinstance(coder.dictionary_.components_, torch.Tensor), provider


@cuda
def test_scikit_learn_providers_take_cuda_tensors_without_dispatch():
    X = torch.rand(30, 4, device="cuda")
    coder = FISTACoder(PCA(3), init=PCA(3)).fit(X)
    assert coder.transform(X).device.type == "cuda"


@array_api_dispatch
def test_supervised_providers_without_array_api_support_get_numpy_targets():
    # Under dispatch, a provider fitted on (X, y) without array-API support
    # gets NumPy copies of both.
    from sklearn import config_context

    class NumPyOracle(OracleDictionary):
        def fit(self, X, y=None):
            assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
            return super().fit(X, y)

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.array_api_support = False
            return tags

    rng = np.random.default_rng(0)
    Z = rng.uniform(size=(30, 3))
    X = Z @ rng.standard_normal((3, 5))
    expected = FISTACoder(OracleDictionary()).fit(X, Z).transform(X)
    with config_context(array_api_dispatch=True):
        codes = FISTACoder(NumPyOracle()).fit(torch.tensor(X), torch.tensor(Z))
        codes = codes.transform(torch.tensor(X))
    assert isinstance(codes, torch.Tensor)
    np.testing.assert_allclose(codes.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(
    "tail",
    [
        LogisticRegression(max_iter=200),
        RidgeCV(),
        PCA(n_components=3, svd_solver="full"),
        StandardScaler(),
    ],
    ids=lambda est: type(est).__name__,
)
@array_api_dispatch
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_pipeline_keeps_tensors_with_array_api_estimators(tail, device):
    # DESIGN.md: skdict steps followed by array-API scikit-learn estimators
    # keep the data a tensor on its device, end to end.
    from sklearn import config_context

    data = make_compositional(n_latents=12, n_active=2, n_samples=200, random_state=0)
    X = torch.tensor(data.X_train, dtype=torch.float32, device=device)
    y = torch.tensor(data.y_train, device=device)
    with config_context(array_api_dispatch=True):
        pipe = make_pipeline(FISTACoder(data.dictionary, positive=True), tail)
        pipe.fit(X, y)
        out = pipe.predict(X) if hasattr(tail, "predict") else pipe.transform(X)
    assert isinstance(out, torch.Tensor) and out.device.type == device
    assert out.shape[0] == X.shape[0]


# Each estimator family, built from the true atoms D where it needs them.
AMBIENT_MODE_ESTIMATORS = [
    lambda D: SparseAutoencoder(12, max_epochs=2, random_state=0),
    lambda D: SparseAutoencoder(
        12, activation="topk", k=3, max_epochs=2, random_state=0
    ),
    lambda D: SparseAutoencoder(12, activation="mp", k=3, max_epochs=2, random_state=0),
    lambda D: FISTACoder(n_components=12, dict_max_iter=4, random_state=0),
    lambda D: FISTACoder(D),
    lambda D: OracleDictionary(D),
]


@pytest.mark.parametrize("make", AMBIENT_MODE_ESTIMATORS)
def test_an_ambient_autocast_region_changes_nothing(make):
    # A caller's bfloat16 autocast (for their own model) made SAE training and
    # dictionary learning fail on mixed dtypes and SAE codes lose 3 digits.
    data = make_compositional(12, 3, n_samples=400, random_state=0)
    X = data.X_train.astype(np.float32)
    expected = make(data.dictionary).fit(X)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fitted = make(data.dictionary).fit(X)
        codes = fitted.transform(X)
        pieces = [codes, fitted.inverse_transform(codes), fitted.score(X)]
        if hasattr(fitted, "partial_fit"):
            fitted.partial_fit(X)
    np.testing.assert_array_equal(pieces[0], expected.transform(X))
    np.testing.assert_array_equal(pieces[1], expected.inverse_transform(pieces[0]))
    assert pieces[2] == expected.score(X)


@pytest.mark.parametrize("make", AMBIENT_MODE_ESTIMATORS)
def test_a_fit_in_an_inference_mode_block_serves_every_later_call(make):
    # Collecting activations and fitting in one inference-mode block built
    # the SAE's parameters as inference tensors, which have no version
    # counters: coding another dtype, scoring and training then failed. The
    # atoms of FISTA coders and oracles were inference tensors too, which the
    # caller's own models cannot train (``nn.Parameter``) or differentiate.
    data = make_compositional(12, 3, n_samples=400, random_state=0)
    X = data.X_train
    expected = make(data.dictionary).fit(X)
    with torch.inference_mode():
        fitted = make(data.dictionary).fit(torch.tensor(X))  # an inference tensor
        streamed = (
            make(data.dictionary).partial_fit(torch.tensor(X))
            if hasattr(fitted, "partial_fit")
            else None
        )
    for model in (fitted, streamed):
        if model is None:
            continue
        module = getattr(model, "module_", None)
        if module is not None:  # built outside inference mode
            assert not any(t.is_inference() for t in module.state_dict().values())
        for name, value in vars(model).items():
            if name.endswith("_") and torch.is_tensor(value):
                assert not value.is_inference(), name
        atoms = torch.nn.Parameter(model.components_)
        (torch.ones(1, 12, dtype=atoms.dtype) @ atoms).sum().backward()
        assert atoms.grad is not None
    if streamed is not None:  # a stream begun in the block goes on outside it
        streamed.partial_fit(X)
        assert streamed.transform(X.astype(np.float32)).shape == (X.shape[0], 12)
    half = torch.from_numpy(X).half()
    for Z in (X, X.astype(np.float32), half):
        np.testing.assert_array_equal(
            np.asarray(fitted.transform(Z), dtype=np.float64),
            np.asarray(expected.transform(Z), dtype=np.float64),
        )
    codes = fitted.transform(X.astype(np.float32))
    np.testing.assert_array_equal(
        fitted.inverse_transform(codes), expected.inverse_transform(codes)
    )
    assert fitted.score(X.astype(np.float32)) == expected.score(X.astype(np.float32))
    if hasattr(fitted, "partial_fit"):
        fitted.partial_fit(X)
        expected.partial_fit(X)
        np.testing.assert_array_equal(fitted.components_, expected.components_)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64]
)
def test_finiteness_check(dtype):
    # A NaN or infinity anywhere is found, and finite values whose sum
    # overflows are accepted, without building a full-size temporary.
    big = torch.finfo(dtype).max
    assert _tensor._all_finite(torch.full((5, 9), big, dtype=dtype))
    assert _tensor._all_finite(torch.zeros(0, 3, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for where in ((0, 0), (2, 3), (4, 8)):
            T = torch.full((5, 9), big, dtype=dtype)
            T[where] = bad
            assert not _tensor._all_finite(T)
            assert not _tensor._all_finite(T.T)  # not contiguous
            ones = torch.ones(5, 9, dtype=dtype)
            ones[where] = bad
            assert not _tensor._all_finite(ones)


def test_finiteness_check_copies_no_transposed_input(monkeypatch):
    # torch.aminmax copies a non-contiguous tensor whole (+313 MiB for a
    # transposed 20,000 x 4,096 float32; inverse_transform of transposed
    # codes doubled its memory); amin and amax read it in place.
    seen = []
    original = torch.aminmax
    monkeypatch.setattr(
        torch, "aminmax", lambda T: seen.append(T.is_contiguous()) or original(T)
    )
    for dtype in (torch.float16, torch.float32):  # extremes at once, or after a sum
        T = torch.ones(30, 20, dtype=dtype)
        T[3, 4] = float("nan") if dtype == torch.float32 else 1.0
        assert _tensor._all_finite(T) == (dtype == torch.float16)
        assert _tensor._all_finite(T.T) == (dtype == torch.float16)
    assert seen == [True, True]


def test_finiteness_check_of_float16_reads_the_data_once(monkeypatch):
    # float16 activations whose sum overflows (70,000 ones) are checked in
    # one pass: the check once went a chunk at a time through every
    # real-sized float16 input, 25x slower.
    ones = torch.ones(70, 1000, dtype=torch.float16)
    assert torch.isinf(ones.sum())
    calls = []
    original = torch.isfinite
    monkeypatch.setattr(
        torch, "isfinite", lambda T: calls.append(T.numel()) or original(T)
    )
    assert _tensor._all_finite(ones)
    assert max(calls) == 1


def test_auto_device_is_cuda_for_numpy_input_when_cuda_is_available(monkeypatch):
    # "auto" computes on CUDA when it is available for NumPy input, while a
    # tensor's own device wins (module docstring); checked without a GPU by
    # pretending one is there (torch.device("cuda") needs none).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("auto", np.ones((2, 2))).type == "cuda"
    assert resolve_device("auto", torch.ones(2, 2)).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_read_only_arrays_are_copied_not_shared():
    # torch tensors are always writable: a read-only buffer (a memmap) must
    # not be shared with one, or an in-place update writes through it.
    X = np.arange(6.0).reshape(3, 2)
    X.flags.writeable = False
    T = as_tensor(X, device=torch.device("cpu"))
    T += 1
    np.testing.assert_array_equal(X, np.arange(6.0).reshape(3, 2))
    T, _ = validate_input(BaseEstimator(), X, reset=True, device="cpu")
    T += 1
    np.testing.assert_array_equal(X, np.arange(6.0).reshape(3, 2))


@pytest.mark.parametrize("X", [np.ones((1, 2)), torch.ones(1, 2)])
def test_validate_input_honours_ensure_min_samples_for_every_input_type(X):
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        validate_input(BaseEstimator(), X, reset=True, ensure_min_samples=2)


@array_api_dispatch
def test_in_namespace_of_leaves_x_alone_for_an_estimator_without_atoms():
    from sklearn import config_context

    X = torch.ones(3, 2)
    with config_context(array_api_dispatch=True):
        assert in_namespace_of(X, PCA(n_components=1)) is X


def test_zero_feature_arrays_are_refused_by_name():
    # A non-empty float array skips check_array; an empty one must still get
    # its "0 feature(s)" error, naming the parameter.
    with pytest.raises(ValueError, match=r"Invalid array: Found array with 0 feature"):
        as_tensor(np.zeros((3, 0)), device=torch.device("cpu"))


def test_negative_results_beyond_a_narrow_output_dtype_warn():
    X = torch.ones(2, 1, dtype=torch.float16)
    _T, origin = validate_input(BaseEstimator(), X, reset=True, device="cpu")
    with pytest.warns(RuntimeWarning, match="exceed torch.float16's largest value"):
        out = to_output(torch.tensor([[-1e5], [0.0]]), origin)
    assert out.dtype == torch.float16 and torch.isinf(out[0, 0])


def test_results_that_round_to_the_largest_value_do_not_warn():
    # 65,510 rounds to float16's 65,504: nothing was lost beyond rounding.
    X = torch.ones(1, 1, dtype=torch.float16)
    _, origin = validate_input(BaseEstimator(), X, reset=True, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_output(torch.tensor([[65510.0]]), origin)
    assert float(out) == 65504.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_to_numpy_widens_reduced_precision_tensors_to_float32(dtype):
    out = to_numpy(torch.ones(2, 2, dtype=dtype))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.ones((2, 2), dtype=np.float32))


def test_sparse_integer_matrices_are_promoted_to_float64():
    A = sp.csr_matrix(np.eye(3, dtype=np.int64))
    T = sparse_as_tensor(A, device=torch.device("cpu"))
    assert T.dtype == torch.float64
    assert sparse_as_tensor(A.astype(np.float32), device=torch.device("cpu")).dtype == (
        torch.float32
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_sparse_matrices_with_nan_or_infinity_are_refused_by_name(bad):
    A = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, bad]]))
    with pytest.raises(ValueError, match="codes contains NaN or infinity"):
        sparse_as_tensor(A, device=torch.device("cpu"), name="codes")


def test_one_thread_for_small_work_restores_the_thread_count():
    from skdict._tensor import one_thread_for_small_work

    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread_for_small_work(1_000, torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with one_thread_for_small_work(1_000, torch.device("cpu")):
                raise KeyError
        assert torch.get_num_threads() == 2
        with one_thread_for_small_work(2**30, torch.device("cpu")):
            assert torch.get_num_threads() == 2  # large work keeps its threads
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("shape", [(2, 3, 4), (3,)])
def test_sparse_tensors_must_be_two_dimensional(shape):
    T = torch.ones(shape).to_sparse()
    with pytest.raises(ValueError, match=r"codes must be a 2-D array; got shape"):
        sparse_as_tensor(T, device=torch.device("cpu"), name="codes")


def test_sparse_as_tensor_takes_the_dtype_asked_for():
    A = sp.eye(3, format="csr")  # float64
    T = sparse_as_tensor(A, device=torch.device("cpu"), dtype=torch.float32)
    assert T.dtype == torch.float32 and T.is_sparse


@array_api_dispatch
@pytest.mark.parametrize(
    "make",
    [
        lambda D: FISTACoder(D),
        lambda D: OracleDictionary(D),
        lambda D: SparseAutoencoder(4, max_epochs=1, random_state=0),
    ],
    ids=["FISTACoder", "OracleDictionary", "SparseAutoencoder"],
)
def test_inverse_transform_refuses_another_namespace_as_transform_does(make):
    # Fitted on NumPy, a coder refused torch input to transform and score
    # under dispatch, but decoded torch codes.
    from sklearn import config_context

    rng = np.random.default_rng(0)
    D, X = rng.standard_normal((4, 3)), rng.standard_normal((20, 3))
    with config_context(array_api_dispatch=True):
        coder = make(D).fit(X)
        codes = torch.from_numpy(coder.transform(X))
        with pytest.raises(ValueError, match="same namespace"):
            coder.transform(torch.from_numpy(X))
        with pytest.raises(ValueError, match="same namespace"):
            coder.inverse_transform(codes)
        assert isinstance(coder.inverse_transform(codes.numpy()), np.ndarray)


def _report_precision_after_a_block(result):
    with _tensor.ieee_float32_products():
        pass
    result.put(torch.backends.mkldnn.matmul.fp32_precision)


@pytest.mark.skipif(
    not hasattr(torch.backends.mkldnn.matmul, "fp32_precision"),
    reason="per-backend fp32_precision needs torch >= 2.9",
)
@requires_fork
def test_a_child_forked_during_anothers_float32_block_gets_the_callers_precision():
    # The other thread's block never closes in the child: its IEEE switch
    # stayed there for good, whatever the caller had chosen.
    backend = torch.backends.mkldnn.matmul
    saved = backend.fp32_precision
    try:
        backend.fp32_precision = "bf16"
        child = forked_during(
            _tensor.ieee_float32_products, _report_precision_after_a_block
        )
        assert child == "bf16"
        assert backend.fp32_precision == "bf16"  # the parent's, once its block ends
    finally:
        backend.fp32_precision = saved


def test_a_list_is_converted_once(monkeypatch):
    # Its dtype is read (to refuse text) from the array scikit-learn then
    # checks: converting the list twice doubled the time of list input.
    checked = []
    real = _tensor.validate_data

    def spy(estimator, X, **kwargs):
        checked.append(type(X))
        return real(estimator, X, **kwargs)

    monkeypatch.setattr(_tensor, "validate_data", spy)
    rows = np.random.default_rng(0).uniform(size=(5, 3)).tolist()
    coder = FISTACoder(np.eye(3)).fit(rows)
    assert checked == [np.ndarray]
    np.testing.assert_array_equal(
        coder.transform(rows), coder.transform(np.array(rows))
    )
