"""The boundary between user arrays and torch.

Every skdict estimator turns its inputs into torch tensors here and its outputs
back into the caller's array type here; no other module converts. The rules
(DESIGN, "Arrays, devices, dtypes"):

* output follows input: NumPy (or any array-like) in, NumPy out; a torch tensor
  in, a torch tensor out on the same device and with the same dtype; with
  ``sklearn.set_config(array_api_dispatch=True)``, any other array-API array
  (CuPy, array-api-strict, ...) comes back in its own namespace and device;
* ``device="auto"`` computes on CUDA when it is available for NumPy input, while
  a tensor's own device wins;
* float32 and float64 are computed in their own precision; integer and boolean
  input is promoted to float64 (scikit-learn's convention); float16, bfloat16
  and float8 tensors are computed in float32 and returned in their own dtype
  (NumPy float16 is promoted to float64, as scikit-learn's ``check_array``
  does);
  fitted attributes (``components_``, ``intercept_``) stay in float32, so that
  later results do not depend on the precision of the data fitted on;
* an ambient :class:`torch.autocast` region (opened by the caller for their
  own model) does not change those dtypes: the estimators' public methods run
  with it switched off (:func:`ignores_autocast`).

Validation reuses scikit-learn's :func:`~sklearn.utils.validation.validate_data`
so that ``n_features_in_``, ``feature_names_in_`` and the wording of errors match
every other scikit-learn estimator.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import itertools
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, NamedTuple, NoReturn, ParamSpec, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn import get_config
from sklearn.externals import array_api_compat
from sklearn.utils._array_api import (
    _is_numpy_namespace,
    check_same_namespace,
    get_namespace_and_device,
    move_to,
)
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._params import Satisfies
from ._warnings import ignoring, warn

__all__ = [
    "BLOCK_ELEMENTS",
    "ArrayOrigin",
    "DetachedCloneMixin",
    "accumulation_dtype",
    "as_tensor",
    "float32_product_precision",
    "ieee_float32_products",
    "ignores_autocast",
    "in_namespace_of",
    "is_estimator",
    "is_sparse",
    "is_tensor",
    "one_thread_for_small_work",
    "outside_inference_mode",
    "portable_state",
    "resolve_device",
    "rows_per_block",
    "set_own_thread_count",
    "sparse_as_tensor",
    "sparse_tensor_as_scipy",
    "sum_of_squares",
    "to_fitted",
    "to_numpy",
    "to_output",
    "to_tensor",
    "validate_codes",
    "validate_input",
    "warn_if_all_zero",
]

# The decorators below keep the decorated signature for type checkers.
_P = ParamSpec("_P")
_R = TypeVar("_R")

_NUMPY_FLOATS = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}

#: Entries of a temporary block where work runs a block of rows at a time
#: (16 MiB in float32, 32 MiB in float64): it bounds the memory of wide
#: inputs and still makes products large enough to run fast.
BLOCK_ELEMENTS = 2**22


def rows_per_block(width: int, budget: int | None = None) -> int:
    """Return how many rows of ``width`` entries fit ``budget`` entries (>= 1).

    ``budget`` defaults to :data:`BLOCK_ELEMENTS`, read at each call.

    Examples
    --------
    >>> from skdict._tensor import rows_per_block
    >>> rows_per_block(1000), rows_per_block(0), rows_per_block(10, budget=5)
    (4194, 4194304, 1)
    """
    if budget is None:
        budget = BLOCK_ELEMENTS
    return max(1, budget // max(width, 1))


def sum_of_squares(block: torch.Tensor, divisor: float = 1.0) -> float:
    """Return the sum of ``block``'s squared entries over ``divisor``.

    Squares beyond the dtype's range (float64 entries above about 1e154) are
    summed relative to the largest magnitude, divided, and scaled back in
    Python floats, so that the result is finite wherever it fits a float64
    (a mean over many entries, whose sum does not).

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import sum_of_squares
    >>> sum_of_squares(torch.tensor([3.0, 4.0], dtype=torch.float64))
    25.0
    >>> sum_of_squares(torch.tensor([1e155, 0.0], dtype=torch.float64), 1e4)
    1e+306
    """
    total = float(block.square().sum())
    if math.isfinite(total):
        return total / divisor
    peak = float(block.abs().max())
    if math.isinf(peak):
        return math.inf
    return float((block / peak).square().sum()) / divisor * peak * peak


def accumulation_dtype(device: torch.device, fallback: torch.dtype) -> torch.dtype:
    """Return float64 for sums and normal equations, or ``fallback`` on MPS.

    Apple's MPS backend has no float64.
    """
    return fallback if device.type == "mps" else torch.float64


class ArrayOrigin(NamedTuple):
    """Where an input came from, so that outputs can be sent back there.

    Attributes
    ----------
    kind : {"numpy", "torch", "array_api"}
        The input's family.
    dtype : torch.dtype
        The dtype computations run in.
    out_dtype : torch.dtype
        The dtype outputs are returned in (differs from ``dtype`` only for
        float16, bfloat16 and float8 tensors).
    device : object
        The input's device: a :class:`torch.device` for tensors, the namespace's
        own device object for other array-API arrays, ``"cpu"`` for NumPy.
    xp : module or None
        The array namespace of an array-API input, else None.
    """

    kind: str
    dtype: torch.dtype
    out_dtype: torch.dtype
    device: Any
    xp: Any = None

    @classmethod
    def host(cls, dtype: torch.dtype, foreign: tuple[Any, Any] | None) -> ArrayOrigin:
        """Return the origin of a NumPy array computed in ``dtype``.

        With ``foreign``, the ``(namespace, device)`` of an array-API array
        moved to NumPy, where its outputs go back to.
        """
        if foreign is None:
            return cls("numpy", dtype, dtype, "cpu")
        xp, device = foreign
        return cls("array_api", dtype, dtype, device, xp)

    def __deepcopy__(self, memo: dict) -> ArrayOrigin:
        # Immutable, and its namespace is a module, which cannot be copied.
        return self


_AUTOCAST_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _hide_csr_beta_warning() -> None:
    """Issue torch's once-per-process "CSR support is in beta" warning, hidden.

    Sparse products (sparse TopK training's sampled products, sparse-sparse
    products of codes in the metrics) go through torch's CSR layout, which
    warns once per process; the warning says nothing about the caller's data.
    Issuing it here, at import, avoids a ``catch_warnings`` around every
    product, which would reset the warning registries each time and could
    leave its "ignore" filter behind for the process with calls in threads.
    """
    with ignoring(UserWarning):
        torch.sparse_csr_tensor(
            torch.tensor([0, 0], device="cpu"),
            torch.tensor([], dtype=torch.int64, device="cpu"),
            torch.tensor([], device="cpu"),
            (1, 1),
            check_invariants=False,
            device="cpu",
        )


_hide_csr_beta_warning()


# CPU work whose matrix products have at most this many multiply-adds runs on
# one thread: below it a second thread has nothing to gain and a lot to lose.
# At the paper's SAE size (300k per product) a TopK step took 0.295 ms on one
# thread and 0.301 ms on two on a lightly loaded 2-core VM, but 0.63 against
# 21 ms once another job held a core (benchmarks/bench_sae.py, section
# threads); five dictionary-learning fits of 30 x 5 data took 0.021 s on one
# thread and 2.46 s on two with one core busy.
_SINGLE_THREAD_MACS = 2**21


# The matmul precision is a process-wide setting: concurrent calls share one
# switch, made by the first to enter and undone by the last to leave.
# Reentrant: a signal handler that computes a float32 metric can interrupt
# its own thread while it holds the lock (a plain lock hung it there).
_PRECISION_LOCK = threading.RLock()
_precision_users = 0
_saved_precision = None


_precision_here = threading.local()  # the thread's own blocks


def _precision_after_fork_in_child() -> None:
    # A child forked while another thread held the lock would hang at its
    # first float32 computation; one forked while another thread was inside
    # a block would keep IEEE float32 for good, that thread's block never
    # closing there.
    global _PRECISION_LOCK, _precision_users
    _PRECISION_LOCK = threading.RLock()
    own = getattr(_precision_here, "depth", 0)
    if _precision_users and not own:
        _restore_precision(_saved_precision)
    _precision_users = own


os.register_at_fork(after_in_child=_precision_after_fork_in_child)


def _matmul_backends():
    # torch >= 2.9 sets the precision per backend (the legacy getter raises
    # once it has been set so); older torch has the legacy switch only.
    matmul = getattr(torch.backends.cuda, "matmul", None)
    if hasattr(matmul, "fp32_precision"):
        return [matmul, torch.backends.mkldnn.matmul]
    return None


def _set_ieee_float32():
    backends = _matmul_backends()
    if backends is None:
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        return saved
    saved = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = "ieee"
    return saved


def _restore_precision(saved):
    # Only a setting still at the value set here is restored: one the caller
    # made meanwhile (from another thread) is theirs to keep, unless it is
    # IEEE float32 itself, which cannot be told apart.
    backends = _matmul_backends()
    if backends is None:
        if torch.get_float32_matmul_precision() == "highest":
            torch.set_float32_matmul_precision(saved)
        return
    for backend, value in zip(backends, saved, strict=True):
        if backend.fp32_precision == "ieee":
            backend.fp32_precision = value


def float32_product_precision(device: torch.device) -> str:
    """Return the precision of float32 matrix products on ``device``'s backend.

    ``"ieee"`` (or ``"highest"``, torch's older name) for IEEE float32;
    ``"tf32"`` / ``"bf16"`` (``"high"`` / ``"medium"``) where torch trades
    precision for speed: TF32 on CUDA, bfloat16 through oneDNN on a CPU.
    Results computed in float32 depend on it.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import float32_product_precision
    >>> float32_product_precision(torch.device("cpu"))  # torch's default
    'ieee'
    """
    backends = _matmul_backends()
    if backends is None:
        return torch.get_float32_matmul_precision()
    cuda, cpu = backends
    precision = (cuda if device.type == "cuda" else cpu).fp32_precision
    if precision == "none":  # inherits the global setting
        precision = getattr(torch.backends, "fp32_precision", "none")
    # Neither set: torch computes float32 products in float32.
    return "ieee" if precision == "none" else str(precision)


@contextmanager
def ieee_float32_products() -> Iterator[None]:
    """Compute float32 matrix products in IEEE float32 within the block.

    Whatever the caller's matmul precision (TF32 on a GPU, bfloat16 on a CPU
    with AMX), so that skdict's float32 computations give the same results
    in every process. The setting is the process's: other threads' float32
    products run in IEEE float32 too while any call is inside the block.
    """
    global _precision_users, _saved_precision
    with _PRECISION_LOCK:
        if _precision_users == 0:
            _saved_precision = _set_ieee_float32()
        _precision_users += 1
        _precision_here.depth = getattr(_precision_here, "depth", 0) + 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _precision_here.depth -= 1
            _precision_users -= 1
            if _precision_users == 0:
                _restore_precision(_saved_precision)


def set_own_thread_count(count: int, default: int) -> None:
    """Give the calling thread ``count`` torch threads, later threads ``default``.

    ``torch.set_num_threads`` also sets the count that every thread takes at
    its first torch call. Left at ``count`` for a whole coding call, it reached
    threads the user started meanwhile, for their lifetime (974 of 1,082
    threads started during a 24,000-row transform kept one thread). The
    calling thread fixes its own count first (its first torch call, made
    before the change, reads the default; after it nothing does), then a
    thread of its own puts the default back (the caller's own
    ``torch.set_num_threads`` would fix its MKL count). No lock is taken: a
    lock held here deadlocked children forked meanwhile, and signal handlers
    that coded. A thread making its first torch call in between still takes
    ``count``.

    Examples
    --------
    >>> import threading, torch
    >>> from skdict._tensor import set_own_thread_count
    >>> default = torch.get_num_threads()
    >>> counts = []
    >>> def count():
    ...     counts.append(torch.get_num_threads())
    >>> def work():
    ...     set_own_thread_count(1, default=default)
    ...     later = threading.Thread(target=count)
    ...     later.start()
    ...     later.join()
    ...     count()
    >>> worker = threading.Thread(target=work)
    >>> worker.start()
    >>> worker.join()
    >>> counts == [default, 1]  # the thread started later, then the worker
    True
    """
    torch.get_num_threads()
    torch.set_num_threads(count)
    if count != default:
        reset = threading.Thread(target=torch.set_num_threads, args=(default,))
        reset.start()
        reset.join()


@contextmanager
def one_thread_for_small_work(macs: int, device: torch.device) -> Iterator[None]:
    """Run the block on one CPU thread when its products are this small.

    ``macs`` is the number of multiply-adds of the block's typical matrix
    product. The calling thread's count is restored on exit, and with it,
    as ``torch.set_num_threads`` does, the count of threads started later.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import one_thread_for_small_work
    >>> with one_thread_for_small_work(1_000, torch.device("cpu")):
    ...     torch.get_num_threads()
    1
    """
    previous = torch.get_num_threads()
    single = device.type == "cpu" and macs <= _SINGLE_THREAD_MACS and previous > 1
    try:
        # Inside the try: an interruption while the count changes restores it.
        # The default for new threads stays at one meanwhile, as the caller's
        # own torch.set_num_threads(1) would leave it: putting it back from a
        # thread of its own (as coding's workers do) cost every block a
        # hand-off, 0.1 ms alone and 12 ms beside a busy Python thread.
        if single:
            torch.set_num_threads(1)
        yield
    finally:
        if single:
            torch.set_num_threads(previous)


def outside_inference_mode(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate ``method`` to run outside any ambient :func:`torch.inference_mode`.

    Tensors created in inference mode have no version counters and refuse
    in-place updates outside it; a model built in a caller's inference-mode
    block (collecting activations and fitting in one) then failed in every
    later call that cast or trained it. The input may still be an inference
    tensor: it is only read.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import outside_inference_mode
    >>> @outside_inference_mode
    ... def make():
    ...     return torch.zeros(2)
    >>> with torch.inference_mode():
    ...     make().is_inference()
    False
    """

    @functools.wraps(method)
    def outside(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with torch.inference_mode(False):
            return method(*args, **kwargs)

    return outside


def ignores_autocast(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate ``method`` to run with any ambient :class:`torch.autocast` off.

    The estimators and metrics choose their compute dtype from the data;
    under a caller's ``torch.autocast(..., dtype=torch.bfloat16)``, products
    would run in bfloat16 instead: SAE training and dictionary learning failed
    on mixed dtypes, SAE codes lost three digits, and identical dictionaries
    scored angular errors of 5 degrees. (A plain function rather than
    ``contextlib``'s decorator, so that the frame between the caller and the
    method is skdict's and warnings still name the caller's line.)

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import ignores_autocast
    >>> @ignores_autocast
    ... def square(A):
    ...     return A @ A
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     square(torch.ones(2, 2)).dtype
    torch.float32
    """

    @functools.wraps(method)
    def without_autocast(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with ExitStack() as stack:
            for device_type in _AUTOCAST_DEVICE_TYPES:
                if torch.amp.is_autocast_available(
                    device_type
                ) and torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return method(*args, **kwargs)

    return without_autocast


def is_tensor(X: Any) -> bool:
    """Return True for a :class:`torch.Tensor`."""
    return isinstance(X, torch.Tensor)


def is_sparse(A: Any) -> bool:
    """Return True for SciPy sparse matrices and sparse torch tensors."""
    return sp.issparse(A) or (is_tensor(A) and A.layout != torch.strided)


def scipy_if_pandas_sparse(A: Any) -> Any:
    """Return a pandas DataFrame of sparse columns as SciPy CSR, anything else as is.

    Such a frame holds only its stored entries, as a SciPy matrix does, so
    where codes may be sparse it is taken like one; through ``check_array`` it
    would be refused as "sparse data" where dense is required.

    Examples
    --------
    >>> import pandas as pd
    >>> import scipy.sparse as sp
    >>> from skdict._tensor import scipy_if_pandas_sparse
    >>> frame = pd.DataFrame.sparse.from_spmatrix(sp.eye(3))
    >>> scipy_if_pandas_sparse(frame).format, scipy_if_pandas_sparse([1.0])
    ('csr', [1.0])
    """
    frame_sparse = getattr(A, "sparse", None)
    if frame_sparse is None or getattr(A, "ndim", None) != 2:
        return A
    try:
        coo = frame_sparse.to_coo()  # raises unless every column is sparse
    except (AttributeError, TypeError, ValueError):
        return A
    return sp.csr_array(coo)


def _names_a_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        torch.device(name)
    except RuntimeError:  # "Expected one of cpu, cuda, ... device type"
        return False
    return True


# What a ``device`` may be, in the words of every message that refuses one.
_DEVICES = '"auto" or a device name torch knows ("cpu", "cuda", "cuda:1", "mps")'

#: Parameter constraint of ``device``: whether the device is present is for
#: :func:`resolve_device` to say; a name torch does not know is a bad value.
DEVICE_CONSTRAINT = [
    torch.device,
    Satisfies(lambda val: isinstance(val, str) and _names_a_device(val), _DEVICES),
]


def resolve_device(device: str | torch.device = "auto", X: Any = None) -> torch.device:
    """Return the device computations run on.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` picks the device of ``X`` when it is a tensor, else CUDA when
        available, else the CPU. Anything else is passed to :class:`torch.device`.
    X : array-like or torch.Tensor, default=None
        The input about to be processed.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto", torch.zeros(2, 2)).type
    'cpu'
    """
    if isinstance(device, str) and device == "auto":
        if not is_tensor(X):
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = X.device
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"The 'device' parameter must be a torch.device or {_DEVICES}; "
            f"got {device!r}."
        ) from exc
    if resolved.type == "meta":
        raise ValueError(
            f"device={device!r} is the meta device, which holds shapes but no "
            "values, so nothing can be computed on it; use data on the CPU or "
            "CUDA (device='auto' follows a tensor input)."
        )
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='auto' or device='cpu'."
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} was requested but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s), numbered from 0."
        )
    if resolved.type not in ("cpu", "cuda"):
        # Other backends (mps, xpu, ...) parse on every build but fail at the
        # first tensor when absent: find out now, not deep inside a fit.
        try:
            torch.empty(0, device=resolved)
        # xpu asserts; hpu and privateuseone fail to import their module.
        except (RuntimeError, AssertionError, ImportError) as exc:
            raise ValueError(
                f"device={device!r} was requested but this PyTorch build or "
                "machine does not provide it; use device='auto' or device='cpu'."
            ) from exc
    return resolved


def _is_reduced_precision(dtype: torch.dtype) -> bool:
    # float16, bfloat16 and the float8 formats: too narrow to compute in.
    return dtype.is_floating_point and torch.finfo(dtype).bits < 32


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in (torch.float32, torch.float64):
        return dtype
    if _is_reduced_precision(dtype):
        return torch.float32
    if dtype.is_complex:
        raise ValueError(f"Complex data not supported; got a tensor of dtype {dtype}.")
    return torch.float64


def _output_dtype(dtype: torch.dtype) -> torch.dtype:
    # Codes, atoms and reconstructions are real numbers: a floating tensor gets
    # its own dtype back, an integer or boolean one the float64 it was computed
    # in (casting results back to int64 or bool would truncate them).
    return dtype if dtype.is_floating_point else _compute_dtype(dtype)


def _from_numpy(A: np.ndarray) -> torch.Tensor:
    # torch shares NumPy's memory; read-only buffers (memmaps) must be copied
    # because torch tensors are always writable.
    # (ascontiguousarray would also turn a 0-D array, a scalar, into shape (1,).)
    A = np.ascontiguousarray(A) if A.ndim else A
    # A length-1 axis may keep a negative stride in an array NumPy flags
    # contiguous (``X[:, ::-1]`` of one column), which ascontiguousarray
    # returns as it is and torch refuses.
    copy = not A.flags.writeable or any(stride < 0 for stride in A.strides)
    return torch.from_numpy(A.copy() if copy else A)


def _require_dense(T: torch.Tensor, name: str) -> None:
    # As check_array says of SciPy sparse input; torch itself would fail later,
    # deep inside, on an operator the sparse backend lacks.
    if is_sparse(T):
        raise TypeError(
            f"Invalid {name}: a sparse tensor ({T.layout}) was passed, but dense "
            "data is required; use .to_dense() to convert it."
        )


# What a tensor that is not plain strided data would need (torch's own errors
# for these come from deep inside an operator, or ask to file a torch issue).
_CONVERSIONS = {
    "nested": "stack its components, e.g. torch.cat({name}.unbind())",
    "quantized": "use {name}.dequantize()",
    "masked": "select the rows you need, or fill the masked entries, first",
}


def _require_values(T: torch.Tensor, name: str) -> None:
    """Refuse tensors whose values dense torch kernels cannot read, naming ``name``."""
    _require_dense(T, name)
    if T.device.type == "meta":
        raise ValueError(
            f"{name} is a tensor on the meta device, which has shapes but no "
            "values to compute with; pass a tensor with data."
        )
    masked = getattr(torch.masked, "MaskedTensor", ())
    kind = (
        "nested"
        if T.is_nested
        else "quantized"
        if T.is_quantized
        else "masked"
        if isinstance(T, masked)
        else None
    )
    if kind is not None:
        raise TypeError(
            f"Invalid {name}: a {kind} tensor was passed, but a plain dense "
            f"tensor is required; {_CONVERSIONS[kind].format(name=name)}."
        )


def _check_tensor(
    X: torch.Tensor, name: str, ensure_min_samples: int, caller: str
) -> None:
    # The messages of check_array's, which names the estimator ("... by
    # FISTACoder") where a NumPy X fails the same checks.
    _require_values(X, name)
    if X.dtype.is_complex:
        raise ValueError(
            f"Complex data not supported by {caller}; got {name}, a tensor of "
            f"dtype {X.dtype}."
        )
    if X.ndim != 2:
        if X.ndim > 2:
            # E.g. a transformer's (batch, sequence, d_model) activations, or
            # a convolution's (batch, channels, height, width) maps, whose
            # features are not the last axis.
            advice = (
                f"To code every position as a sample, pass {name}.reshape(-1, "
                f"{name}.shape[-1]) when the features are the last axis (a "
                "transformer's (batch, sequence, d_model) activations) and "
                "reshape the codes back; move them last first when they are "
                f"not ({name}.movedim(1, -1) for (batch, channels, height, "
                "width) maps)."
            )
        else:
            advice = (
                "Reshape your data with X.reshape(-1, 1) if it has a single "
                "feature or X.reshape(1, -1) if it holds a single sample."
            )
        raise ValueError(
            f"Expected a 2D tensor for {name}, got a tensor of shape "
            f"{tuple(X.shape)}. {advice}"
        )
    # Named as a NumPy input's message is ("Invalid X: ...").
    if X.shape[0] < ensure_min_samples:
        raise ValueError(
            f"Invalid {name}: Found array with {X.shape[0]} sample(s) (shape="
            f"{tuple(X.shape)}) while a minimum of {ensure_min_samples} is "
            f"required by {caller}."
        )
    if X.shape[1] < 1:
        raise ValueError(
            f"Invalid {name}: Found array with 0 feature(s) (shape="
            f"{tuple(X.shape)}) while a minimum of 1 is required by {caller}."
        )
    if X.dtype.is_floating_point and not _all_finite(_checkable(X)):
        raise ValueError(f"Input {name} contains NaN or infinity.")


def _all_finite(T: torch.Tensor) -> bool:
    """Return True when ``T`` holds no NaN or infinity.

    ``torch.isfinite(T).all()`` builds a full-size temporary (1.4x a float64
    array on the CPU, which made the chunked least squares and every
    ``inverse_transform`` peak at the size of their whole input). A finite
    sum settles the common case in one pass without one, as scikit-learn's
    check does: NaN and infinity propagate into it. A sum that is not finite
    (an infinity, a NaN, or an overflow of finite values) is settled by the
    extremes, which cannot overflow. Half-precision sums overflow for any
    real-sized input (float16 activations of 2,000 x 1,000 ones sum to
    infinity), so those go to the extremes at once: a check of 20,000 x
    4,096 float16 values took 0.28 s a chunk at a time, and takes 0.03 s.
    """
    if T.numel() == 0:
        return True
    if torch.finfo(T.dtype).bits > 16 and bool(torch.isfinite(T.sum())):
        return True
    # aminmax copies a non-contiguous tensor first (+313 MiB and 0.26 s for
    # a transposed 20,000 x 4,096 float32), amin and amax do not (0.04 s).
    low, high = torch.aminmax(T) if T.is_contiguous() else (T.amin(), T.amax())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def warn_if_all_zero(X: torch.Tensor, consequence: str) -> None:
    """Warn that training data ``X`` is all zeros, saying what follows.

    Zero data passes every check (it is finite and has the right shape), and
    is what a normalisation that overflowed leaves (float16 squares beyond
    65,504 make the scale infinite).
    """
    if not bool(X.any()):
        warn(
            f"X is all zeros: {consequence}. Check how the data was scaled "
            "(e.g. a norm computed in float16 overflows to infinity).",
            UserWarning,
        )


def _checkable(T: torch.Tensor) -> torch.Tensor:
    # torch has no isfinite for float8; float16 holds every float8 value.
    return T.to(torch.float16) if torch.finfo(T.dtype).bits < 16 else T


def validate_input(
    estimator: Any,
    X: Any,
    *,
    reset: bool,
    device: str | torch.device = "auto",
    ensure_min_samples: int = 1,
) -> tuple[torch.Tensor, ArrayOrigin]:
    """Validate ``X`` for ``estimator`` and return it as a tensor on the compute device.

    Parameters
    ----------
    estimator : estimator instance
        Receives ``n_features_in_`` (and ``feature_names_in_``) when ``reset``,
        and is checked against them otherwise.
    X : array-like, torch.Tensor or array-API array of shape (n_samples, n_features)
        The data.
    reset : bool
        True in ``fit``; False in ``transform`` and friends.
    device : str or torch.device, default="auto"
        See :func:`resolve_device`.
    ensure_min_samples : int, default=1
        Minimum number of rows.

    Returns
    -------
    X_tensor : torch.Tensor
        Floating-point tensor on the compute device.
    origin : ArrayOrigin
        Pass to :func:`to_output` to send results back in the caller's type.
    """
    if is_tensor(X):
        # The shape first: sklearn's feature count would misreport a 1-D tensor.
        _check_tensor(X, "X", ensure_min_samples, type(estimator).__name__)
        validate_data(estimator, X, skip_check_array=True, reset=reset)
        dtype = _compute_dtype(X.dtype)
        origin = ArrayOrigin("torch", dtype, _output_dtype(X.dtype), X.device)
        target = resolve_device(device, X)
        return X.detach().to(device=target, dtype=dtype), origin

    X = _as_array_like(X, "X")
    X, xp_origin = _leave_array_api(X)
    try:
        X_np = validate_data(
            estimator,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_min_samples=ensure_min_samples,
        )
    except (TypeError, ValueError) as exc:
        # scikit-learn's messages on X's shape, width and values name it;
        # NumPy's conversion errors (ragged rows, a dict, complex values) do
        # not, and are named as the metrics name theirs.
        raise_named(exc, "Invalid X: ", name="X")
    origin = ArrayOrigin.host(_NUMPY_FLOATS[X_np.dtype], xp_origin)
    target = resolve_device(device, None)
    return _from_numpy(X_np).to(target), origin


def raise_named(exc: Exception, prefix: str, *, name: str | None = None) -> NoReturn:
    """Raise a plain ``TypeError``/``ValueError`` again with ``prefix``.

    For messages of NumPy or scikit-learn that do not say which input they
    are about. Subclasses (``NotFittedError``, a ``UnicodeDecodeError`` that
    takes five arguments) are raised as they are, and so is a message that
    already says ``name`` as a word. Call it in the ``except`` block that
    caught ``exc``.
    """
    named = name is not None and re.search(rf"\b{re.escape(name)}\b", str(exc))
    if type(exc) not in (TypeError, ValueError) or named:
        raise exc
    raise type(exc)(f"{prefix}{exc}") from exc


def is_estimator(obj: Any) -> bool:
    """Return True when ``obj``'s type has ``fit`` and ``get_params``.

    The type's, not the instance's: a DataFrame with columns named ``fit``
    and ``get_params`` has both as attributes.
    """
    kind = type(obj)
    return hasattr(kind, "fit") and hasattr(kind, "get_params")


def _as_array_like(A: Any, name: str) -> Any:
    """Refuse None, an estimator, a class, text and dates, naming ``A`` as ``name``.

    Returns ``A``, a list or tuple converted to an array (once: its dtype is
    read from it, and scikit-learn's check then converts an array, not the
    list again, which had doubled the time of list input).
    """
    if A is None:
        # check_array's message read "got scalar array instead: array=nan".
        raise ValueError(f"{name} must be an array; got None.")
    # check_array's own message, "float() argument must be ... not
    # 'OracleDictionary'", does not say what was meant instead.
    if is_estimator(A):
        raise TypeError(
            f"{name} must be an array; got the estimator {type(A).__name__}. "
            "Pass what it computes, e.g. its transform(X)."
        )
    if isinstance(A, type):
        # The parentheses forgotten: "float() argument must be ... not 'type'".
        raise TypeError(f"{name} must be an array; got the class {A.__name__} itself.")
    # Activations saved as torch.save({"activations": ...}), or a .pt file
    # (a zip archive) opened with np.load: "float() argument must be ... not
    # 'dict'" and "could not convert string to float: 'acts/data.pkl'".
    if isinstance(A, np.lib.npyio.NpzFile):
        raise TypeError(
            f"{name} must be an array; got an NpzFile (a .npz archive, or a "
            f"torch .pt file opened with np.load) of {', '.join(A.files[:5])}. "
            "Take one of its arrays by name, or load a .pt file with torch.load."
        )
    if isinstance(A, Mapping):
        keys = list(A)
        raise TypeError(
            f"{name} must be an array; got a {type(A).__name__} with keys "
            f"{', '.join(map(repr, keys[:5]))}. Pass the array it holds"
            + (f", e.g. {name}[{keys[0]!r}]." if keys else ".")
        )
    if isinstance(A, (list, tuple)):
        try:
            A = np.asarray(A)
        except (TypeError, ValueError):  # ragged: check_array names it
            return A
    # An explicit float dtype makes check_array parse numbers written as text
    # ("1.5"), which its dtype="numeric" refuses, and read dates as counts of
    # days or seconds; so does skdict.
    dtype = getattr(A, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "USmM":
        what = "text or bytes" if dtype.kind in "US" else "dates or times"
        raise ValueError(
            f"{name} holds {what} (dtype {dtype}), not numbers; convert it to "
            "numbers explicitly."
        )
    # A data frame's date columns: alone they were read as counts, beside
    # numbers they failed in NumPy's type promotion, naming no input.
    column_dtypes = getattr(A, "dtypes", None)
    if hasattr(column_dtypes, "items"):  # pandas: a Series of dtypes
        dates = [
            c
            for c, d in column_dtypes.items()
            if getattr(d, "kind", None) in ("m", "M")
        ]
        if dates:
            raise ValueError(
                f"{name} holds dates or times (columns {dates[:5]}), not "
                "numbers; convert them to numbers explicitly."
            )
    return A


def _leave_array_api(A: Any) -> tuple[Any, tuple[Any, Any] | None]:
    """Move a non-NumPy array-API array (CuPy, array-api-strict, ...) to NumPy.

    Returns the array to validate and, under array-API dispatch, its
    namespace and device (where outputs go back to); None otherwise: without
    dispatch such an array is array-like and NumPy comes back, as in
    scikit-learn, in the array's own dtype.
    """
    if isinstance(A, np.ndarray) or not hasattr(A, "__array_namespace__"):
        return A, None
    if not get_config()["array_api_dispatch"]:
        return move_to(A, xp=np, device="cpu"), None
    xp, _, xp_device = get_namespace_and_device(A)
    # NumPy under any name: sklearn's own copy of array-api-compat names it
    # sklearn.externals.array_api_compat.numpy.
    if _is_numpy_namespace(xp):
        return A, None
    return move_to(A, xp=np, device="cpu"), (xp, xp_device)


def in_namespace_of(X: Any, estimator: Any, attribute: str = "components_") -> Any:
    """Return ``X`` in the array namespace and device ``estimator`` was fitted in.

    Under array-API dispatch, a fitted estimator handed in as a provider (a
    frozen SAE whose ``transform`` gives warm-start codes) may have been
    fitted on NumPy while ``X`` is a torch tensor; scikit-learn's namespace
    check would then refuse the call. Its atoms are converted as any array
    is; its ``transform`` gets ``X`` moved to its own namespace instead.
    Without dispatch, or when the namespaces agree, ``X`` is returned as is.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from skdict._tensor import in_namespace_of
    >>> X = np.arange(6.0).reshape(3, 2)
    >>> in_namespace_of(X, PCA(1).fit(X)) is X
    True
    """
    fitted = getattr(estimator, attribute, None)
    if not get_config()["array_api_dispatch"] or fitted is None:
        return X
    xp, _, device = get_namespace_and_device(fitted)
    X_xp, _, X_device = get_namespace_and_device(X)
    if (X_xp, X_device) == (xp, device) or (
        _is_numpy_namespace(xp) and _is_numpy_namespace(X_xp)
    ):
        return X
    return move_to(X, xp=xp, device=device)


def as_tensor(
    A: Any,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    name: str = "array",
    ndim: int | None = 2,
) -> torch.Tensor:
    """Convert an internal array (a dictionary, codes, a fitted attribute) to a tensor.

    Unlike :func:`validate_input`, nothing is recorded on an estimator; the array
    is checked for finiteness and, when ``ndim`` is given, for its number of
    dimensions, with errors naming ``name``.

    Parameters
    ----------
    A : array-like, torch.Tensor or array-API array
        The array.
    device : torch.device
        Target device.
    dtype : torch.dtype, default=None
        Target dtype; None keeps float32/float64 and promotes anything else
        (see the module docstring).
    name : str, default="array"
        Name used in error messages (the parameter the array came from).
    ndim : int or None, default=2
        Required number of dimensions, or None to accept any.

    Returns
    -------
    torch.Tensor
    """
    return to_tensor(A, device=device, dtype=dtype, name=name, ndim=ndim)[0]


def to_tensor(
    A: Any,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    name: str = "array",
    ndim: int | None = 2,
) -> tuple[torch.Tensor, ArrayOrigin]:
    """Like :func:`as_tensor`, also returning the :class:`ArrayOrigin` of ``A``.

    For arrays that are not the estimator's ``X`` but whose type decides the
    output's, such as the codes passed to ``inverse_transform``.
    """
    if is_tensor(A):
        T = A.detach()
        _require_values(T, name)
        if T.dtype.is_complex:
            raise ValueError(f"{name} must be real-valued; got dtype {T.dtype}.")
        compute = _compute_dtype(T.dtype)
        origin = ArrayOrigin("torch", compute, _output_dtype(T.dtype), T.device)
    else:
        A = _as_array_like(A, name)
        A, xp_origin = _leave_array_api(A)
        # A plain non-empty float ndarray (a fitted attribute, each call)
        # passes check_array unchanged; its checks cost about 250 us a call,
        # three times a 1-row inverse_transform of 2,000 atoms.
        plain = type(A) is np.ndarray and A.dtype in _NUMPY_FLOATS and A.size
        try:
            A = (
                A
                if plain
                else check_array(
                    A,
                    dtype=[np.float64, np.float32],
                    ensure_2d=False,
                    allow_nd=True,
                    ensure_all_finite=False,
                    input_name=name,
                    ensure_min_samples=0,
                )
            )
        except (TypeError, ValueError) as exc:
            raise_named(exc, f"Invalid {name}: ")
        T = _from_numpy(A)
        compute = T.dtype
        origin = ArrayOrigin.host(compute, xp_origin)
    if ndim is not None and T.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}-D array; got shape {tuple(T.shape)}."
        )
    T = T.to(device=resolve_device(device, A), dtype=compute)
    if not _all_finite(T):
        raise ValueError(f"{name} contains NaN or infinity.")
    if dtype is None or dtype == compute:
        return T, origin
    # Checked again after the cast: float64 values beyond float32's range
    # would otherwise be reported as NaN or infinity, which they are not.
    converted = T.to(dtype)
    if not _all_finite(converted):
        raise ValueError(
            f"{name} has values beyond the range of {dtype} (up to "
            f"{float(T.abs().amax()):g}); rescale it."
        )
    return converted, origin


def validate_codes(estimator: Any, codes: Any) -> tuple[torch.Tensor, ArrayOrigin]:
    """Check codes passed to a fitted coder's ``inverse_transform``.

    The codes must be finite, 2-D and have one column per component of the
    fitted ``estimator``; they are returned as a tensor on the device the
    estimator's ``device`` parameter resolves to, with their
    :class:`ArrayOrigin` (the output follows the codes, not the training data).

    Parameters
    ----------
    estimator : fitted estimator
        Exposes ``_n_features_out`` (its number of components) and a ``device``
        parameter.
    codes : array-like or torch.Tensor of shape (n_samples, n_components)
        Codes.

    Returns
    -------
    codes_tensor : torch.Tensor
    origin : ArrayOrigin

    Examples
    --------
    >>> import numpy as np
    >>> from skdict import OracleDictionary
    >>> from skdict._tensor import validate_codes
    >>> oracle = OracleDictionary(np.eye(2)).fit(np.ones((3, 2)))
    >>> validate_codes(oracle, np.ones((1, 3)))
    Traceback (most recent call last):
    ...
    ValueError: codes have 3 columns, but this OracleDictionary has 2 components.
    """
    check_is_fitted(estimator)
    # As transform and score: under array-API dispatch, codes in another
    # namespace than the atoms are refused (they were decoded regardless).
    check_same_namespace(
        codes, estimator, attribute="components_", method="inverse_transform"
    )
    if is_tensor(codes):
        # Before the device is resolved from them: meta codes were told about
        # a ``device`` parameter the caller never set.
        _require_values(codes, "codes")
    Z, origin = to_tensor(
        codes, device=resolve_device(estimator.device, codes), name="codes"
    )
    if Z.shape[0] == 0:
        # As transform refuses an X without rows (and scikit-learn's
        # inverse_transform, codes without rows).
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(Z.shape)}) while a "
            f"minimum of 1 is required in codes by "
            f"{type(estimator).__name__}.inverse_transform."
        )
    n_components = estimator._n_features_out
    if Z.shape[1] != n_components:
        raise ValueError(
            f"codes have {Z.shape[1]} columns, but this "
            f"{type(estimator).__name__} has {n_components} components."
        )
    return Z, origin


def to_output(T: torch.Tensor, origin: ArrayOrigin, estimator: Any = None) -> Any:
    """Return ``T`` in the array type, device and dtype that ``origin`` records.

    ``estimator`` is the transformer whose ``transform`` returns ``T``: when
    its ``set_output`` asks for a DataFrame (pandas or polars), ``T`` comes
    back as a NumPy array for scikit-learn to wrap (by :func:`to_numpy`: half
    precision as float32, the values rounded to the input's precision first).
    Handed a bfloat16 tensor, the wrapper failed after the whole solve with
    torch's "Got unsupported ScalarType BFloat16", as it did with any tensor
    on a GPU.

    Examples
    --------
    >>> import numpy as np
    >>> from skdict._tensor import validate_input, to_output
    >>> from sklearn.base import BaseEstimator
    >>> T, origin = validate_input(BaseEstimator(), np.eye(2, dtype=np.float32),
    ...                            reset=True, device="cpu")
    >>> out = to_output(2 * T, origin)
    >>> type(out).__name__, out.dtype
    ('ndarray', dtype('float32'))
    """
    if estimator is not None and _get_output_config("transform", estimator)[
        "dense"
    ] not in ("default", None):
        return to_numpy(to_output(T, origin), name="codes")
    if origin.kind == "torch":
        out = T.detach().to(device=origin.device, dtype=origin.out_dtype)
        if out.dtype != T.dtype and out.is_floating_point():
            _warn_overflow(T, out)
        return out
    out = T.detach().to(dtype=origin.dtype).cpu().numpy()
    if origin.kind == "array_api":
        return move_to(out, xp=origin.xp, device=origin.device)
    return out


def _warn_overflow(computed: torch.Tensor, out: torch.Tensor) -> None:
    # Half-precision and float8 tensors are computed in float32 and returned
    # in their own dtype: codes beyond float16's 65,504 came back as inf,
    # silently. One reduction over the results (no temporary of their size;
    # float8 has no isinf), skipped where the output's range is the
    # computation's (bfloat16's).
    if not computed.numel() or not computed.is_floating_point():
        return
    limit = torch.finfo(out.dtype).max
    if math.frexp(limit)[1] >= math.frexp(torch.finfo(computed.dtype).max)[1]:
        return
    low, high = torch.aminmax(computed.detach())
    largest = max(-float(low), float(high))
    if not math.isfinite(largest) or largest <= limit:
        return
    # What the largest result became: values just above the limit round to
    # it (65,510 to float16's 65,504), float8_e4m3fn saturates or turns NaN.
    back = float(torch.tensor([largest], device="cpu").to(out.dtype).float())
    if math.isfinite(back) and back >= largest / (1 + torch.finfo(out.dtype).eps):
        return
    warn(
        f"Results up to {largest:.3g} exceed {out.dtype}'s largest value, "
        f"{limit:g}, and came back as {back:g}; pass the data in float32 to "
        "keep them.",
        RuntimeWarning,
    )


def to_fitted(T: torch.Tensor, origin: ArrayOrigin) -> Any:
    """Return a fitted attribute in ``origin``'s array type and device.

    Like :func:`to_output`, except that it keeps the compute dtype: the atoms
    fitted on float16, bfloat16 or float8 tensors stay in float32 instead of being
    rounded to the input's precision, which would change every later
    ``transform``, also of float64 data.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import validate_input, to_fitted
    >>> from sklearn.base import BaseEstimator
    >>> T, origin = validate_input(BaseEstimator(), torch.ones(2, 2).half(),
    ...                            reset=True, device="cpu")
    >>> to_fitted(T, origin).dtype
    torch.float32
    """
    return to_output(T, origin._replace(out_dtype=origin.dtype))


def origin_of(A: Any) -> ArrayOrigin:
    """Return the :class:`ArrayOrigin` that :func:`to_fitted` made ``A`` for.

    Whatever the array-API configuration at the time of the call: for an
    estimator that re-creates a fitted attribute later, in the array type,
    device and dtype it was handed out in (after unpickling, say).

    Examples
    --------
    >>> import numpy as np
    >>> from skdict._tensor import origin_of
    >>> origin_of(np.zeros(0, dtype=np.float32)).dtype
    torch.float32
    """
    if is_tensor(A):
        return ArrayOrigin("torch", A.dtype, A.dtype, A.device)
    if isinstance(A, np.ndarray):
        return ArrayOrigin.host(_torch_dtype(A.dtype), None)
    foreign = (array_api_compat.array_namespace(A), array_api_compat.device(A))
    host = move_to(A[:0], xp=np, device="cpu")
    return ArrayOrigin.host(_torch_dtype(host.dtype), foreign)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def to_numpy(A: Any, name: str = "array") -> np.ndarray:
    """Return ``A`` as a NumPy array in host memory, keeping its dtype.

    For the consumers that take NumPy only (SciPy's assignment solver,
    scikit-learn estimators without array-API support, index bookkeeping).
    Tensors on any device and array-API arrays are copied to the CPU; float16,
    bfloat16 and float8 tensors come back as float32, which NumPy can hold.
    Tensors without values to copy (meta, sparse, nested, quantized) are
    refused with an error that names ``name``.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import to_numpy
    >>> to_numpy(torch.tensor([True, False])).dtype
    dtype('bool')
    """
    if is_tensor(A):
        _require_values(A, name)
        T = A.detach()
        if _is_reduced_precision(T.dtype):
            T = T.float()
        return T.cpu().numpy()
    if hasattr(A, "__array_namespace__") and not isinstance(A, np.ndarray):
        return np.asarray(move_to(A, xp=np, device="cpu"))
    return np.asarray(A)


def sparse_tensor_as_scipy(T: torch.Tensor, *, name: str = "array") -> sp.csr_array:
    """Convert a sparse tensor (any layout or device) to a SciPy CSR array.

    Indices are int32 where they fit: liblinear, libsvm, SGD and the tree
    estimators of scikit-learn accept no others (torch's are int64).

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import sparse_tensor_as_scipy
    >>> A = sparse_tensor_as_scipy(torch.eye(3).to_sparse_csr())
    >>> A.format, A.indices.dtype, A.nnz
    ('csr', dtype('int32'), 3)
    """
    coo = sparse_as_tensor(T, device=torch.device("cpu"), name=name)
    rows, cols = coo.indices().numpy()
    if max(*coo.shape, coo._nnz()) < np.iinfo(np.int32).max:
        rows, cols = rows.astype(np.int32), cols.astype(np.int32)
    return sp.csr_array((coo.values().numpy(), (rows, cols)), shape=coo.shape)


def sparse_as_tensor(
    A: Any,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    name: str = "array",
) -> torch.Tensor:
    """Convert a SciPy sparse matrix, or a sparse tensor, to a coalesced COO tensor.

    Only the stored entries travel, so memory stays proportional to the number
    of non-zeros (codes of ``10**6`` samples over ``10**4`` latents fit where
    their dense form would not).

    Parameters
    ----------
    A : scipy.sparse matrix or array, or sparse torch.Tensor, of 2 dimensions
        The array.
    device : torch.device
        Target device.
    dtype : torch.dtype, default=None
        Target dtype; None keeps float32 and float64, computes half-precision
        sparse tensors in float32 (as dense ones, see the module docstring)
        and promotes anything else to float64.
    name : str, default="array"
        Name used in error messages.

    Returns
    -------
    torch.Tensor
        A coalesced tensor with ``layout=torch.sparse_coo``.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> from skdict._tensor import sparse_as_tensor
    >>> T = sparse_as_tensor(sp.eye(3, format="csr"), device=torch.device("cpu"))
    >>> T.layout, T.dtype, T._nnz()
    (torch.sparse_coo, torch.float64, 3)
    """
    if is_tensor(A) and A.layout != torch.strided:
        if A.dtype.is_complex:  # before a conversion on the device
            raise ValueError(f"{name} holds complex values; it must hold real numbers.")
        T = A.detach().to_sparse_coo()
    elif sp.issparse(A):
        coo = sp.coo_matrix(A)
        data = coo.data
        if np.iscomplexobj(data):
            # Refused before the cast, which drops imaginary parts with only
            # NumPy's warning (mcc_score of Z against Z + 1j Z gave 1.0).
            raise ValueError(f"{name} holds complex values; it must hold real numbers.")
        if data.dtype not in _NUMPY_FLOATS:
            data = data.astype(np.float64)
        indices = np.vstack([coo.row, coo.col]).astype(np.int64)
        T = torch.sparse_coo_tensor(
            torch.from_numpy(indices),
            _from_numpy(data),
            size=coo.shape,
            check_invariants=True,
            device="cpu",  # where from_numpy's parts are, whatever the default
        )
    else:
        raise TypeError(f"{name} must be a sparse matrix; got {type(A).__name__}.")
    if T.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array; got shape {tuple(T.shape)}.")
    T = T.to(device=device, dtype=dtype or _compute_dtype(T.dtype)).coalesce()
    if not bool(torch.isfinite(T.values()).all()):
        raise ValueError(f"{name} contains NaN or infinity.")
    return T


def _state_value(value: Any, memo: dict[int, Any], *, move: bool = True) -> Any:
    # ``memo`` maps converted objects to their copies, so that two attributes
    # holding the same tensor (a parameter and the fitted record of it) still
    # hold one object after pickling, as copy.deepcopy's memo keeps them.
    # ``move=False`` only detaches tensors in an autograd graph (which torch
    # refuses to deep-copy), for a deep copy that stays on its devices.
    key = id(value)
    if key in memo:
        return memo[key]
    if is_tensor(value) and not move:
        converted = _copy_stand_in(value)
        converted = value if converted is None else converted
    elif is_tensor(value):
        converted = value.detach().cpu()
        # Sparse, quantized and nested tensors hold more than a dtype, a
        # shape and bytes: torch pickles them.
        special = converted.is_quantized or converted.is_nested
        if converted.layout == torch.strided and not special:
            converted = converted.as_subclass(_PicklesByValue)
    elif isinstance(value, torch.nn.Module) and not move:
        return value  # copy.deepcopy copies it where it is
    elif isinstance(value, torch.nn.Module):
        # A module already on the CPU pickles as it is. A deep copy gave its
        # weights new storages, whose addresses torch writes into the pickle:
        # the bytes, and so joblib.hash, by which Pipeline(memory=) caches a
        # step, changed at every pickle, and the copy held the weights twice.
        weights = itertools.chain(value.parameters(), value.buffers())
        on_cpu = all(weight.device.type == "cpu" for weight in weights)
        converted = value if on_cpu else copy.deepcopy(value).cpu()
    elif isinstance(value, dict):
        # A dict subclass (a Bunch of weights) keeps its type, which a plain
        # dict rebuilt from it lost.
        converted = {} if type(value) is dict else _new_like(value)
        memo[key] = converted
        converted.update(
            (k, _state_value(v, memo, move=move)) for k, v in value.items()
        )
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        converted = type(value)._make(_state_value(v, memo, move=move) for v in value)
    elif type(value) is list:
        # Recorded before its items: a list may hold itself.
        converted = memo[key] = []
        converted.extend(_state_value(v, memo, move=move) for v in value)
    elif isinstance(value, (list, tuple)):
        converted = type(value)(_state_value(v, memo, move=move) for v in value)
    elif _holds_weights(value):
        # A provider that is not an estimator, such as the guide's
        # SimpleNamespace(components_=W_dec): its CUDA tensors were pickled as
        # they were, and tensors in a graph made copy.deepcopy fail. Its
        # other attributes are converted too, so that a tensor it also holds
        # in a list stays one tensor.
        converted = _new_like(value)
        memo[key] = converted
        vars(converted).update(
            (name, _state_value(attribute, memo, move=move))
            for name, attribute in vars(value).items()
        )
    else:
        return value
    memo[key] = converted
    return converted


class _PicklesByValue(torch.Tensor):
    """A tensor whose pickle holds its dtype, shape and bytes, and nothing else.

    torch writes a tensor's storage address into its pickle, so each copy of
    equal values pickled to other bytes: ``joblib.hash``, by which
    ``Pipeline(memory=)`` caches a step, changed for every clone of an
    estimator given a tensor (``dictionary=``, ``decoder=``, ``init=``), and a
    cached search coded again for every candidate. It lives only in the
    state that estimators hand to ``pickle``, which rebuilds plain tensors
    (:class:`DetachedCloneMixin` keeps it out of ``copy.copy`` and
    ``copy.deepcopy``).
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __deepcopy__(self, memo: dict) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone()

    def __reduce_ex__(self, protocol: Any) -> tuple:
        plain = self.as_subclass(torch.Tensor).resolve_conj().resolve_neg()
        # An expanded tensor (stride 0) is saved as the one copy it repeats.
        compact = plain[
            tuple(
                slice(0, 1) if stride == 0 else slice(None) for stride in plain.stride()
            )
        ]
        # Bytes rather than ``numpy()``: bfloat16 and float8 have no NumPy dtype.
        data = compact.contiguous().reshape(-1).view(torch.uint8).numpy()
        shapes = (tuple(compact.shape), tuple(plain.shape))
        return _tensor_from_bytes, (data, plain.dtype, *shapes)


def _tensor_from_bytes(
    data: np.ndarray,
    dtype: torch.dtype,
    compact: tuple[int, ...],
    shape: tuple[int, ...],
) -> torch.Tensor:
    if not data.size:  # joblib loads an empty array with stride 0: no view
        return torch.empty(shape, dtype=dtype)
    if not data.flags.writeable:  # torch.from_numpy warns on read-only arrays
        data = data.copy()
    values = torch.from_numpy(data).view(dtype).reshape(compact)
    return values if compact == shape else values.expand(shape)


def _new_like(value: Any) -> Any:
    """Return a shallow copy of ``value`` to fill, never ``value`` itself.

    ``copy.copy`` returns the object itself for some (a ``__copy__`` that
    returns ``self``); filling that would change the user's own object.
    """
    new = copy.copy(value)
    if new is value:
        new = type(value).__new__(type(value))
        if hasattr(new, "__dict__"):
            vars(new).update(vars(value))
    if isinstance(new, dict):
        new.clear()
    return new


def _holds_weights(value: Any) -> bool:
    """Whether ``value`` is an object holding tensors that is not an estimator."""
    if hasattr(value, "get_params") or isinstance(value, type):
        return False
    held = getattr(value, "__dict__", None)
    return isinstance(held, dict) and any(map(is_tensor, held.values()))


def portable_state(state: dict) -> dict:
    """Return a copy of an estimator's ``__dict__`` with every tensor on the CPU.

    Estimators call this from ``__getstate__`` so that a model fitted on a GPU
    can be unpickled on a machine without one. Attributes that share an
    object share its copy.

    Examples
    --------
    >>> import torch
    >>> from skdict._tensor import portable_state
    >>> atoms = torch.eye(2)
    >>> state = portable_state({"dictionary": atoms, "_dictionary_param": atoms})
    >>> state["dictionary"] is state["_dictionary_param"]
    True
    """
    memo: dict[int, Any] = {}
    move = not _KEEPING_DEVICES.get()
    return {key: _state_value(value, memo, move=move) for key, value in state.items()}


# Set while DetachedCloneMixin.__deepcopy__ asks for the pickling state: a
# deep copy stays where the model is; only pickles go to the CPU.
_KEEPING_DEVICES = contextvars.ContextVar("skdict_keeping_devices", default=False)


def _views_larger_storage(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a view of fewer elements than its storage holds.

    torch deep-copies a view with its whole storage (to keep the view's
    relation to it), so ``clone`` of ``FISTACoder(dictionary=W_dec[:k])``
    copied all of ``W_dec``, in every candidate of a search; NumPy copies a
    view's own elements only, and so do pickles (:class:`_PicklesByValue`).
    """
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested:
        return False
    try:
        held = tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):  # a tensor without storage
        return False
    return held > tensor.numel() * tensor.element_size()


def _copy_stand_in(tensor: torch.Tensor) -> torch.Tensor | None:
    """Return what to deep-copy in place of ``tensor``; None for ``tensor`` itself.

    A tensor in an autograd graph, which torch refuses to deep-copy, is
    detached; a view of a larger storage is copied alone (its leaves keep
    ``requires_grad``).
    """
    if _views_larger_storage(tensor):
        alone = tensor.detach().clone()
        if isinstance(tensor, torch.nn.Parameter):  # nn.Parameter(W[:k])
            return torch.nn.Parameter(alone, requires_grad=tensor.requires_grad)
        return alone.requires_grad_(tensor.requires_grad and tensor.is_leaf)
    return None if tensor.is_leaf else tensor.detach()


def _stand_in_to_copy(value: Any) -> Any:
    """``value`` with its tensors in a stand-in to deep-copy; None if none.

    A tensor, or the attributes of an object holding weights that is not an
    estimator (a shallow copy of it is returned), where a tensor is in an
    autograd graph or views a larger storage (:func:`_copy_stand_in`);
    estimators are cloned, not copied, and are left alone.
    """
    if is_tensor(value):
        return _copy_stand_in(value)
    # A mapping of weights read as attributes (a Bunch), or an object's.
    mapping = isinstance(value, dict) and type(value) is not dict
    if not (mapping or _holds_weights(value)):
        return None
    held = value if mapping else vars(value)
    replaced = {
        name: copied
        for name, attribute in held.items()
        if is_tensor(attribute) and (copied := _copy_stand_in(attribute)) is not None
    }
    if not replaced:
        return None
    stand_in = _new_like(value)
    if mapping:
        stand_in.update(value)
    (stand_in if mapping else vars(stand_in)).update(replaced)
    return stand_in


class DetachedCloneMixin:
    """Mixin: :func:`sklearn.base.clone` detaches tensor parameters from autograd.

    ``clone`` deep-copies every parameter that is not an estimator, and torch
    refuses to deep-copy a tensor computed inside an autograd graph, such as
    ``sae.decoder.weight.T`` of a module being trained, so ``clone`` and
    every model-selection tool failed deep inside torch on such a
    ``dictionary`` or ``init``. The clone gets such a tensor detached, which
    is what ``fit`` uses anyway (inputs are detached on entry); other tensors,
    graph leaves such as a ``Parameter`` included, are deep-copied as
    ``clone`` copies any parameter, except that a view of a larger tensor
    (``dictionary=W_dec[:k]``) is copied alone, as NumPy copies a view,
    where torch copies its whole storage. So do the tensors of an object that holds
    weights without being an estimator (the guide's
    ``SimpleNamespace(components_=decoder.weight.T)``), in a shallow copy of
    it. ``copy.copy`` gives a shallow copy sharing every attribute. Put it
    before :class:`~sklearn.base.BaseEstimator` among the bases.

    Examples
    --------
    >>> import torch
    >>> from sklearn.base import clone
    >>> from skdict import FISTACoder
    >>> weight = torch.nn.Parameter(torch.eye(3))
    >>> coder = FISTACoder(dictionary=weight.T)
    >>> clone(coder).dictionary.requires_grad
    False
    """

    def __copy__(self):
        # A shallow copy shares the attributes, as copy.copy of an object
        # without __getstate__ does: through __getstate__ (for pickles), it
        # moved tensors to the CPU and handed out their pickling type.
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __deepcopy__(self, memo: dict) -> Any:
        # The pickling protocol (__getstate__ leaves out caches and what does
        # not copy, __setstate__ rebuilds them), but with every tensor and
        # module where it is: pickles go to the CPU, and so did a deep copy
        # of a model fitted on a GPU (the usual "keep the best model so far").
        # Tensors in an autograd graph, which torch refuses to deep-copy, are
        # detached, and views of a larger storage copied alone, as pickles
        # do (_copy_stand_in).
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        token = _KEEPING_DEVICES.set(True)
        try:
            state = self.__getstate__()
        finally:
            _KEEPING_DEVICES.reset(token)
        copied.__setstate__(copy.deepcopy(state, memo))
        return copied

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        replaced = {
            name: copied
            for name, value in params.items()
            if (copied := _stand_in_to_copy(value)) is not None
        }
        if not replaced:
            return super().__sklearn_clone__()
        # A shallow stand-in with those tensors replaced, cloned the usual way
        # (which also carries set_output's and metadata routing's settings).
        # Not copy.copy: it would go through __getstate__, which copies the
        # fitted tensors to the CPU.
        stand_in = object.__new__(type(self))
        stand_in.__dict__.update(self.__dict__)
        stand_in.__dict__.update(replaced)
        return super(DetachedCloneMixin, stand_in).__sklearn_clone__()
