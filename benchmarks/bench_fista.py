"""Speed, accuracy and memory of FISTACoder.

Cases:

* ``oracle``: the paper's oracle task -- 1,000 unit-norm Gaussian atoms in 93
  dimensions, 5,000 samples (the ID train and validation halves of
  ``make_compositional(1000, 10, n_samples=5000)``) with 10 active Uniform(0, 1)
  codes, ``alpha=0.1`` (``--alpha``), non-negative codes.
  ``FISTACoder.transform`` in float64 and float32, with each of the
  ``--threads`` torch thread counts, against
  ``SparseCoder(transform_algorithm="lasso_cd", positive_code=True,
  n_jobs=2)``, in the same process on the same data. Each figure is the
  median of ``--repeats`` runs; the total objective over samples must match
  sklearn's within 1e-4 (relative). The matmul-throughput fraction is the rate
  of matrix-product flops (counted by ``torch.utils.flop_counter``) over the
  rate of one large matmul on the same device and dtype. ``--plain`` adds a
  plain batched FISTA (Gram form, no restart, one stopping test for the whole
  batch), to show what the algorithm adds over batching alone.
* ``scaling``: time and peak resident memory of ``FISTACoder.transform``
  (float32, 2,000 samples, 10 active atoms, ``n_features=512``) versus
  ``n_components`` in {1k, 4k, 16k, 65k}, each configuration in a fresh
  subprocess on data generated beforehand; then 16k and 65k components with a
  smaller ``batch_size``, to show that memory is bounded by it.
* ``dense``: codes whose supports fill the feature space (a small ``alpha``
  on Gaussian data, where supports reach ``n_features`` and the working sets
  hold more atoms than features, so that the Newton systems are singular):
  256 unit-norm Gaussian atoms in 64 dimensions at ``alpha=0.02`` and 1,000
  in 200 at ``alpha=0.05``, standard-normal samples, float64, one thread,
  against ``sparse_encode`` with ``lasso_lars`` (exact here) and ``lasso_cd``;
  the total objective must match lasso_lars's within 1e-8 (relative).
* ``warm`` (``--warm-starts``, not run by default): codes warm-started from
  the dense codes of a ReLU sparse autoencoder (``SparseAutoencoder(1000,
  max_epochs=20)`` on the oracle task's training half, about 250 of 1,000
  latents active per sample, more than twice the 93 features), as the
  paper's "FISTA refined from SAE codes" does, on the SAE's atoms and on the
  true ones, against cold starts from zero codes; float64, one thread, the
  2,500 OOD samples. The warm-started objective must not exceed the cold
  one's by more than the solver's tolerance.
* ``small`` (``--small-alpha``, not run by default): float32 against float64
  at penalties small beside the data, where rounding keeps float32 gaps above
  float32's tolerance floor: 4,096 noiseless samples of 20 active
  Uniform(0, 1) codes on 4,096 unit-norm Gaussian atoms in 512 dimensions,
  ``alpha`` in {0.1, 0.03, 0.01}, ``FISTACoder.transform`` on one thread, with
  the rows coded in float64 from the start (the rounding bound of
  ``fista_encode``) and those finished in float64 after float32 iterations.
  The float32 objective must match float64's within 1e-5 (relative).
* ``near`` (``--near-duplicates``, not run by default): dictionaries of 100
  unit-norm Gaussian atoms, each with a twin at an angle of 1e-8 (8
  features, ``tol=1e-8``) or 1e-10 (16 features, the default ``tol``), 200
  rows of 7 or 15 active codes (signed, or non-negative with
  ``positive=True``), ``alpha`` a thousandth of the mean row norm, seeds
  0-3, float64, one thread, ``max_iter=1000``: the rows left uncertified,
  and the rows whose objective exceeds that of ``sparse_encode`` with
  ``lasso_cd`` (100,000 iterations) by more than 1e-6 (relative).
* ``few`` (``--few-atoms``, not run by default): many wide rows on few
  atoms with supports of a few dozen -- 2,000 rows of 30 active Uniform(0, 1)
  codes on 64 / 128 / 256 / 512 unit-norm Gaussian atoms in 512 dimensions,
  plus noise of 1 % of the data's scale, ``alpha`` 0.01 and 0.1 times the
  mean row norm, float64 and float32, one thread: ``FISTACoder.transform`` against
  ``sparse_encode`` with ``lasso_cd``, timed alternately (medians of
  ``--repeats``), with the relative difference of the total objectives.

Usage::

    python benchmarks/bench_fista.py [--quick] [--repeats 3] [--threads 1,2]
                                     [--device cpu|cuda] [--skip-scaling]
                                     [--plain] [--alpha 0.1]
                                     [--skip-dense] [--dense-only]
                                     [--warm-starts] [--small-alpha]
                                     [--near-duplicates] [--few-atoms]

``--dense-only`` skips the oracle task and the scaling study, ``--skip-dense``
the dense study: both together run only the studies named by the other
flags (e.g. ``--dense-only --skip-dense --few-atoms``).

``--quick`` codes 1,000 samples of the oracle task once per configuration
(unless ``--repeats`` is given) and skips the scaling study (well under a
minute on 2 cores). ``--device cuda`` also times FISTACoder on the GPU
(sklearn stays on the CPU); without a CUDA device the GPU part is skipped
with a message. On a CPU shared with other
work, torch's OpenMP threads spin while they wait for each other; set
``OMP_WAIT_POLICY=PASSIVE`` (printed in the output) to make them sleep.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def _peak_rss_mib() -> float:
    """This process's peak resident memory since start or the last reset.

    VmHWM from /proc on Linux; ``ru_maxrss`` elsewhere, which a child process
    inherits from its parent's peak at fork (so it may overstate).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    # Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _row_objectives(X, Z, D, alpha):
    """Lasso objective of each sample, in float64."""
    X, Z, D = (np.asarray(a, dtype=np.float64) for a in (X, Z, D))
    residual = X - Z @ D
    return 0.5 * (residual**2).sum(axis=1) + alpha * np.abs(Z).sum(axis=1)


def _objective(X, Z, D, alpha):
    """Total lasso objective over samples, in float64."""
    return _row_objectives(X, Z, D, alpha).sum()


def _oracle_data(n_samples: int, seed: int = 0):
    from skdict.datasets import make_compositional

    data = make_compositional(1000, 10, n_samples=n_samples, random_state=seed)
    return np.vstack([data.X_train, data.X_val]), data.dictionary


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, repeats: int, device: torch.device):
    """Median wall time of ``fn()`` over ``repeats`` runs and its last output."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def _alternated(calls: dict, repeats: int, warm_ups: dict | None = None) -> tuple:
    """Median wall time and last output of each of ``calls``, run alternately.

    Each repeat runs every call once, in reversed order every other repeat,
    so that a drift of the machine's speed (other jobs) lands on all of them
    rather than on whichever ran as a block; ``warm_ups`` (small inputs) are
    run once first, untimed, for lazy initialisation.
    """
    for warm_up in (warm_ups or {}).values():
        warm_up()
    times = {name: [] for name in calls}
    outputs = {}
    order = list(calls)
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            outputs[name] = calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def _plain_fista(X, D, alpha, tol=1e-6, max_iter=5000, check_every=10):
    """Batched FISTA, Gram form, no restart, one stopping test for the batch.

    Stops when every sample's duality gap is at most ``tol`` times its
    objective. Returns codes, the iterations run and whether the test passed.
    """
    G, c = D @ D.T, X @ D.T
    L = float(torch.linalg.matrix_norm(D.double(), ord=2)) ** 2
    x_sq = (X.double() ** 2).sum(dim=1)
    z = torch.zeros_like(c)
    y, t = z.clone(), 1.0
    for it in range(1, max_iter + 1):
        z_new = torch.clamp_min(y - (y @ G - c) / L - alpha / L, 0.0)
        t_new = 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        y = z_new + (t - 1) / t_new * (z_new - z)
        z, t = z_new, t_new
        if it % check_every:
            continue
        # r = x - zD: r.d_j = c_j - (zG)_j and r.r = x.x - z.c - z.(r D^T).
        corr, zd, cd = (c - z @ G).double(), z.double(), c.double()
        r_sq = (x_sq - (zd * (cd + corr)).sum(1)).clamp_min(0)
        primal = 0.5 * r_sq + alpha * zd.sum(1)
        s = (alpha / corr.amax(1).clamp_min(1e-300)).clamp(max=1)
        dual = s * (x_sq - (zd * cd).sum(1)) - 0.5 * s**2 * r_sq
        if bool(((primal - dual) <= tol * primal).all()):
            return z, it, True
    return z, it, False


def _matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Flops per second of one large square matmul: the device's matmul rate."""
    n = 4096 if device.type == "cuda" else 1024
    A = torch.randn(n, n, device=device, dtype=dtype)
    A @ A
    seconds, _, _ = _timed(lambda: A @ A, 3, device)
    return 2 * n**3 / seconds


def _counted_flops(fn) -> int:
    """Matrix-product flops of ``fn``, counted on one thread.

    The counter is a thread-local dispatch mode, so it would miss the worker
    threads that solve shares of a batch with several torch threads; one
    thread does the same products without them.
    """
    from torch.utils.flop_counter import FlopCounterMode

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops()


def _thread_counts(args, device: torch.device) -> list[int]:
    if device.type != "cpu":
        return [torch.get_num_threads()]
    return [int(t) for t in args.threads.split(",")]


def oracle(args) -> None:
    from sklearn.decomposition import SparseCoder

    from skdict import FISTACoder
    from skdict._fista._driver import _effective_tol

    alpha = args.alpha
    n_samples = 1000 if args.quick else 5000
    repeats = args.oracle_repeats
    X, D = _oracle_data(n_samples)
    print(
        f"oracle task: {X.shape[0]} samples, {D.shape[0]} atoms in {D.shape[1]} "
        f"dims, alpha={alpha}, positive codes; median of {repeats} run(s); "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    sk = SparseCoder(
        D,
        transform_algorithm="lasso_cd",
        transform_alpha=alpha,
        positive_code=True,
        n_jobs=2,
    )
    sk.transform(X[:8])  # warm-up: starts joblib's worker processes
    t_sk, runs, Z_sk = _timed(lambda: sk.transform(X), repeats, torch.device("cpu"))
    f_sk = _objective(X, Z_sk, D, alpha)
    print(
        f"  sklearn SparseCoder lasso_cd n_jobs=2    : {t_sk:7.3f} s  "
        f"(runs {', '.join(f'{t:.3f}' for t in runs)})  objective {f_sk:.8f}"
    )

    devices = [torch.device("cpu")]
    if args.device == "cuda":
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            print("  no CUDA device available: GPU timings skipped")
    default_threads = torch.get_num_threads()
    for device in devices:
        for threads in _thread_counts(args, device):
            torch.set_num_threads(threads)
            for dtype in (torch.float64, torch.float32):
                Xt = torch.from_numpy(X).to(device=device, dtype=dtype)
                Dt = torch.from_numpy(D).to(device=device, dtype=dtype)
                coder = FISTACoder(Dt, alpha=alpha, positive=True).fit(Xt[:8])
                coder.transform(Xt[:8])  # warm-up (lazy initialisation)
                # Each run paired with one of sklearn's, alternately: a drift
                # of the machine's speed (other jobs) then lands on both.
                runs, paired, speedups = [], [], []
                for _ in range(repeats):
                    t, _, Z = _timed(lambda: coder.transform(Xt), 1, device)  # noqa: B023
                    t_pair = _timed(lambda: sk.transform(X), 1, _CPU)[0]
                    runs.append(t)
                    paired.append(t_pair)
                    speedups.append(t_pair / t)
                t = statistics.median(runs)
                f = _objective(X, Z.cpu().numpy(), D, alpha)
                rel = (f - f_sk) / f_sk
                flops = _counted_flops(lambda: coder.transform(Xt))  # noqa: B023
                fraction = flops / t / _matmul_rate(device, dtype)
                name = str(dtype).removeprefix("torch.")
                where = f"{device.type} {name}" + (
                    f" {threads} thr" if device.type == "cpu" else ""
                )
                print(
                    f"  FISTACoder {where:<21}   : {t:7.3f} s  "
                    f"(runs {', '.join(f'{x:.3f}' for x in runs)})  objective "
                    f"{f:.8f}  rel. diff {rel:+.1e} "
                    f"[{'OK' if abs(rel) <= 1e-4 else 'FAIL'}]  "
                    f"speed-up vs sklearn {statistics.median(speedups):5.2f}x "
                    "(median of alternated pairs, in which sklearn took "
                    f"{', '.join(f'{x:.3f}' for x in paired)} s)  "
                    f"matmul-throughput fraction {fraction:.1%}"
                )
    if args.plain:
        # As FISTACoder: the same tolerance (float32 cannot measure a gap
        # below 100 eps, so FISTACoder floors it there; at 1e-6 most rows
        # stall at rounding level and the loop runs to max_iter), repeats and
        # (last) thread count.
        threads = _thread_counts(args, torch.device("cpu"))[-1]
        torch.set_num_threads(threads)
        Xt, Dt = torch.from_numpy(X).float(), torch.from_numpy(D).float()
        tol = _effective_tol(1e-6, Xt.dtype)
        t, runs, (Z, n_iter, converged) = _timed(
            lambda: _plain_fista(Xt, Dt, alpha, tol=tol), repeats, Xt.device
        )
        f = _objective(X, Z.numpy(), D, alpha)
        stop = "" if converged else ", NOT converged"
        print(
            f"  plain batched FISTA cpu float32 {threads} thr : "
            f"{t:7.3f} s  (runs {', '.join(f'{x:.3f}' for x in runs)}; "
            f"{n_iter} iterations for the batch, tol {tol:.1e}{stop})  "
            f"objective {f:.8f}  "
            f"rel. diff {(f - f_sk) / f_sk:+.1e}  speed-up vs sklearn {t_sk / t:5.2f}x "
            "(against sklearn's block time above, not pairs)"
        )
    torch.set_num_threads(default_threads)


def _scaling_data(n_components, n_samples, n_features, path) -> None:
    from skdict.datasets import make_compositional

    data = make_compositional(
        n_components,
        10,
        n_features=n_features,
        n_samples=n_samples,
        sparse_codes=True,
        random_state=0,
    )
    X = np.vstack([data.X_train, data.X_val]).astype(np.float32)
    np.savez(path, X=X, D=data.dictionary.astype(np.float32))


def _scaling_case(path, batch_size, threads) -> dict:
    """Code the saved data once; peak RSS is this process's own."""
    from skdict import FISTACoder
    from skdict._fista._driver import _auto_batch_size

    torch.set_num_threads(threads)
    with np.load(path) as arrays:
        X, D = torch.from_numpy(arrays["X"]), torch.from_numpy(arrays["D"])
    # The rows per batch the library chooses itself, with this thread count.
    auto = _auto_batch_size(*D.shape)
    coder = FISTACoder(D, alpha=0.1, positive=True, batch_size=batch_size)
    coder.fit(X[:8])
    _reset_peak_rss()
    before = _rss_mib()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = coder.transform(X)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": _peak_rss_mib(),
        "mean_l0": float((codes != 0).sum(dim=1).double().mean()),
        "warnings": len(caught),
        "auto_batch_size": auto,
    }


def scaling(args) -> None:
    n_samples, n_features = 2000, 512
    threads = int(args.threads.split(",")[-1])
    print(
        f"scaling: FISTACoder.transform, float32, {n_samples} samples, 10 active "
        f"atoms, n_features={n_features}, alpha=0.1, positive codes, {threads} "
        "torch thread(s); one fresh process per row (data generated beforehand, "
        "and the peak reset before transform); working memory = peak - RSS "
        "before transform, including the dense float32 codes it returns"
    )
    print(
        "  n_components  batch_size  time (s)  RSS before (MiB)  peak RSS (MiB)  "
        "working (MiB)  of which codes (MiB)  mean L0"
    )
    configs = [(m, None) for m in (1024, 4096, 16384, 65536)]
    configs += [(16384, 256), (65536, 64)]
    with tempfile.TemporaryDirectory() as folder:
        for n_components, batch_size in configs:
            path = os.path.join(folder, f"data_{n_components}.npz")
            if not os.path.exists(path):
                _scaling_data(n_components, n_samples, n_features, path)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    json.dumps([path, batch_size, threads]),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout)
            shown = f"{batch_size}" if batch_size else f"auto={r['auto_batch_size']}"
            print(
                f"  {n_components:>12}  {shown:>10}  {r['seconds']:8.2f}  "
                f"{r['rss_before_mib']:16.0f}  {r['peak_rss_mib']:14.0f}  "
                f"{r['peak_rss_mib'] - r['rss_before_mib']:13.0f}  "
                f"{n_samples * n_components * 4 / 2**20:20.0f}  "
                f"{r['mean_l0']:7.2f}"
                + (f"  ({r['warnings']} warnings)" if r["warnings"] else "")
            )


def dense(args) -> None:
    print("\ndense supports (float64, one thread)")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for n_components, n_features, n_samples, alpha in [
        (256, 64, 200, 0.02),
        (1000, 200, 50, 0.05),
    ]:
        D = rng.standard_normal((n_components, n_features))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        n_samples = n_samples // 4 if args.quick else n_samples
        X = rng.standard_normal((n_samples, n_features))
        _dense_case(X, D, alpha, args.repeats)


def _dense_case(X, D, alpha: float, repeats: int) -> None:
    from sklearn.decomposition import sparse_encode

    from skdict import FISTACoder

    coder = FISTACoder(dictionary=D, alpha=alpha).fit(X)

    def lars(rows):
        return sparse_encode(rows, D, algorithm="lasso_lars", alpha=alpha)

    def cd(rows):
        return sparse_encode(rows, D, algorithm="lasso_cd", alpha=alpha, max_iter=10000)

    calls = {"ours": coder.transform, "lars": lars, "cd": cd}
    # One thread on both sides: torch's is set by the caller, and this limits
    # the BLAS and OpenMP pools scikit-learn's solvers use.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # lasso_cd stops short of its tolerance on some rows here.
        warnings.simplefilter("ignore")
        times, outputs = _alternated(
            {name: functools.partial(call, X) for name, call in calls.items()},
            repeats,
            warm_ups={
                name: functools.partial(call, X[:8]) for name, call in calls.items()
            },
        )
    ours, lars, cd = times["ours"], times["lars"], times["cd"]
    Z, Z_lars = outputs["ours"], outputs["lars"]
    best = _objective(X, Z_lars, D, alpha)
    mismatch = (_objective(X, Z, D, alpha) - best) / best
    assert mismatch <= 1e-8, mismatch
    n_samples, (n_components, n_features) = X.shape[0], D.shape
    print(
        f"{n_components} atoms, {n_features} features, alpha={alpha}, "
        f"{n_samples} samples ({np.count_nonzero(Z) / n_samples:.0f} active "
        f"per sample): FISTACoder {ours:.2f} s, lasso_lars {lars:.2f} s "
        f"(ours / lars {ours / lars:.2f}x), lasso_cd {cd:.2f} s "
        f"(ours / cd {ours / cd:.2f}x); "
        f"objective vs lasso_lars {mismatch:+.1e}"
    )


def few_atoms(args) -> None:
    from sklearn.decomposition import sparse_encode
    from sklearn.exceptions import ConvergenceWarning

    from skdict import FISTACoder

    print("\nmany rows on few atoms (2,000 rows, 30 active, 512 features)")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for n_components in (64, 128, 256, 512):
        D = rng.standard_normal((n_components, 512))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        Z = np.zeros((2000, n_components))
        for row in Z:
            row[rng.choice(n_components, 30, replace=False)] = rng.uniform(size=30)
        X = Z @ D
        X += 0.01 * X.std() * rng.standard_normal(X.shape)
        scale = float(np.linalg.norm(X, axis=1).mean())
        for fraction, dtype in itertools.product((0.01, 0.1), (np.float64, np.float32)):
            alpha = fraction * scale
            X_d, D_d = X.astype(dtype), D.astype(dtype)
            coder = FISTACoder(dictionary=D_d, alpha=alpha).fit(X_d[:5])
            coder.transform(X_d)  # warm
            ours, theirs = [], []
            with warnings.catch_warnings(record=True) as caught:
                # float32 lasso_cd stops at its max_iter on many rows (one
                # ConvergenceWarning per row): counted and printed, since
                # the two sides then stop on different criteria.
                warnings.simplefilter("always")
                for _ in range(args.repeats):  # alternately
                    start = time.perf_counter()
                    codes = coder.transform(X_d)
                    ours.append(time.perf_counter() - start)
                    del caught[:]
                    start = time.perf_counter()
                    reference = sparse_encode(
                        X_d, D_d, algorithm="lasso_cd", alpha=alpha
                    )
                    theirs.append(time.perf_counter() - start)
            unconverged = sum(
                issubclass(w.category, ConvergenceWarning) for w in caught
            )
            ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
            best = _objective(X, reference, D, alpha)
            print(
                f"{n_components} atoms, alpha={fraction} x mean ||x||, "
                f"{np.dtype(dtype).name}: FISTACoder {ours_s:.3f} s, lasso_cd "
                f"{theirs_s:.3f} s (ours / cd {ours_s / theirs_s:.2f}x; lasso_cd "
                f"at max_iter on {unconverged} of {X.shape[0]} rows); objective "
                f"vs lasso_cd {(_objective(X, codes, D, alpha) - best) / best:+.1e}"
            )


def warm_starts(args) -> None:
    from skdict import FISTACoder, SparseAutoencoder
    from skdict.datasets import make_compositional

    torch.set_num_threads(1)
    data = make_compositional(1000, 10, n_samples=5000, random_state=0)
    sae = SparseAutoencoder(1000, max_epochs=20, random_state=0).fit(data.X_train)
    X = data.X_ood
    sae_codes = sae.transform(X)
    active = np.count_nonzero(sae_codes, axis=1)
    print(
        f"\nwarm starts from ReLU SAE codes (float64, one thread, {X.shape[0]} "
        f"OOD samples; SAE codes: {active.mean():.0f} active per sample on "
        f"average, {active.max()} at most, in {X.shape[1]} features)"
    )
    for name, atoms in (
        ("SAE's atoms", sae.components_),
        ("true atoms", data.dictionary),
    ):
        coders = {
            start: FISTACoder(atoms, alpha=0.1, positive=True, init=init).fit(X)
            for start, init in (("zero", None), ("SAE codes", sae_codes))
        }
        times, codes = _alternated(
            {start: functools.partial(c.transform, X) for start, c in coders.items()},
            args.repeats,
            # init= holds the SAE codes of X's rows: that coder codes X only.
            warm_ups={"zero": functools.partial(coders["zero"].transform, X[:8])},
        )
        objectives = {start: _objective(X, Z, atoms, 0.1) for start, Z in codes.items()}
        excess = (objectives["SAE codes"] - objectives["zero"]) / objectives["zero"]
        assert excess <= 1e-5, excess
        print(
            f"  on the {name}: from zero {times['zero']:.2f} s, from SAE codes "
            f"{times['SAE codes']:.2f} s ({times['SAE codes'] / times['zero']:.2f}x); "
            f"objective from SAE codes vs from zero {excess:+.1e}"
        )


def small_penalties(args) -> None:
    from skdict import FISTACoder
    from skdict._fista._driver import _effective_tol, _float32_floor_rows

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_samples = 1024 if args.quick else 4096
    D = rng.standard_normal((4096, 512))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((n_samples, 4096))
    for row in Z:
        row[rng.choice(4096, 20, replace=False)] = rng.uniform(size=20)
    X = Z @ D
    print(
        f"\nsmall penalties (one thread, {n_samples} samples, 4,096 atoms in "
        "512 features, 20 active, noiseless)"
    )
    for alpha in (0.1, 0.03, 0.01):
        calls, warm_ups = {}, {}
        for dtype in (np.float64, np.float32):
            Xd, Dd = X.astype(dtype), D.astype(dtype)
            coder = FISTACoder(Dd, alpha=alpha, positive=True).fit(Xd)
            calls[dtype] = functools.partial(coder.transform, Xd)
            warm_ups[dtype] = functools.partial(coder.transform, Xd[:8])
        times, codes = _alternated(calls, args.repeats, warm_ups)
        objectives = {dtype: _objective(X, Z, D, alpha) for dtype, Z in codes.items()}
        mismatch = (objectives[np.float32] - objectives[np.float64]) / objectives[
            np.float64
        ]
        assert abs(mismatch) <= 1e-5, mismatch
        routed = _float32_floor_rows(
            torch.from_numpy(X.astype(np.float32)),
            torch.from_numpy(D.astype(np.float32)),
            None,
            alpha=alpha,
            tol=_effective_tol(coder.tol, torch.float32),
            step=n_samples,
        )
        print(
            f"alpha={alpha}: float64 {times[np.float64]:.2f} s, float32 "
            f"{times[np.float32]:.2f} s ({times[np.float32] / times[np.float64]:.2f}x "
            f"float64's); {int(routed.sum())} rows coded in float64 from the "
            f"start; objective float32 vs float64 {mismatch:+.1e}"
        )


def twinned_problem(seed, n_features, angle, n_active, positive):
    """Rows coded on 100 atoms and their twins at ``angle`` (see ``near``).

    Returns ``X`` (200 rows), the dictionary and ``alpha``; the tests code
    the same problems.
    """
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((100, n_features))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    twins = atoms + angle * rng.standard_normal(atoms.shape)
    twins /= np.linalg.norm(twins, axis=1, keepdims=True)
    D = np.vstack([atoms, twins])
    Z = rng.random((200, 200)) * (rng.random((200, 200)) < n_active / 200)
    if not positive:
        Z *= rng.choice([-1, 1], size=Z.shape)
    X = Z @ D
    return X, D, 1e-3 * float(np.linalg.norm(X, axis=1).mean())


def near_duplicates(args) -> None:
    from sklearn.decomposition import sparse_encode

    from skdict._fista._driver import fista_encode

    torch.set_num_threads(1)
    seeds = range(2 if args.quick else 4)
    print(
        f"\nnear-duplicate atoms (one thread, float64, seeds 0-{seeds[-1]}, "
        "200 rows each, max_iter=1000)"
    )
    for n_features, angle, n_active, tol in ((8, 1e-8, 7, 1e-8), (16, 1e-10, 15, 1e-6)):
        for positive in (False, True):
            above = uncertified = rows = 0
            worst, seconds = 1.0, 0.0
            for seed in seeds:
                X, D, alpha = twinned_problem(
                    seed, n_features, angle, n_active, positive
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reference = sparse_encode(
                        X,
                        D,
                        algorithm="lasso_cd",
                        alpha=alpha,
                        max_iter=100_000,
                        positive=positive,
                    )
                start = time.perf_counter()
                result = fista_encode(
                    torch.from_numpy(X),
                    torch.from_numpy(D),
                    alpha=alpha,
                    positive=positive,
                    tol=tol,
                )
                seconds += time.perf_counter() - start
                ratio = _row_objectives(X, result.codes.numpy(), D, alpha) / (
                    _row_objectives(X, reference, D, alpha)
                )
                above += int((ratio > 1 + 1e-6).sum())
                worst = max(worst, float(ratio.max()))
                uncertified += int((~result.converged).sum())
                rows += X.shape[0]
            print(
                f"twins at {angle:g} in {n_features} features, tol={tol:g}, "
                f"{'non-negative' if positive else 'signed'} codes: "
                f"{uncertified} of {rows} rows uncertified, {above} above "
                f"sklearn's objective (worst {worst:.2f}x), {seconds:.2f} s"
            )


_CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,
        help="penalty of the oracle task (default 0.1, the paper's)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="also time a plain batched FISTA (Gram form, one stopping test)",
    )
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated torch intra-op thread counts to time FISTACoder "
        "with on the CPU (the scaling study uses the last)",
    )
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--dense-only", action="store_true")
    parser.add_argument(
        "--warm-starts",
        action="store_true",
        help="also code from dense SAE codes as warm starts (about a minute)",
    )
    parser.add_argument(
        "--small-alpha",
        action="store_true",
        help="also time float32 against float64 at small penalties (minutes)",
    )
    parser.add_argument(
        "--near-duplicates",
        action="store_true",
        help="also code on atoms with twins at an angle of 1e-8 (a minute)",
    )
    parser.add_argument(
        "--few-atoms",
        action="store_true",
        help="also code many wide rows on 64-512 atoms against lasso_cd (a minute)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # --quick times the oracle task once unless --repeats says otherwise: one
    # run of each is a rough figure (speed-ups of 10.1x and 4.3x for the same
    # command 20 minutes apart).
    args.oracle_repeats = args.repeats or (1 if args.quick else 3)
    args.repeats = args.repeats or 3
    if args.child:
        print(json.dumps(_scaling_case(*json.loads(args.child))))
        return
    if not args.dense_only:
        oracle(args)
    if not args.skip_dense:
        dense(args)
    if args.warm_starts:
        warm_starts(args)
    if args.small_alpha:
        small_penalties(args)
    if args.near_duplicates:
        near_duplicates(args)
    if args.few_atoms:
        few_atoms(args)
    if not (args.quick or args.skip_scaling or args.dense_only):
        scaling(args)


if __name__ == "__main__":
    main()
