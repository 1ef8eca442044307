"""Shares of a batch solved side by side by worker threads, and how they stop."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import torch

from .._tensor import (
    set_own_thread_count,
)

# Samples are independent, so on a CPU with several torch threads a batch is
# split into one share per thread, solved side by side by worker threads that
# each run one intra-op thread: the solver's kernels are small (a few hundred
# rows by a few dozen atoms), too small for intra-op parallelism, and spend
# most of their time outside the GIL (oracle task, 5,000 samples, 2 cores:
# 2 intra-op threads were no faster than 1, 2 shares take 0.70x the time of
# one thread in float64 and 0.63x in float32). Shares below this many rows are
# not worth a thread (per-call overheads dominate them).
_MIN_SHARE_ROWS = 512


# Worker threads solving the shares of one call share a stop flag. An
# exception in the calling thread (Ctrl-C's KeyboardInterrupt) sets it, and
# each worker leaves its share at its next check instead of finishing it:
# the pool's exit waits for running workers, and Ctrl-C during a stream's
# partial_fit on 2 threads took 20 s to return.
_worker = threading.local()


class _Stopped(Exception):
    """A worker's share abandoned because its call is ending."""


def _stop_if_requested() -> None:
    """Raise :class:`_Stopped` in a worker thread whose call is ending."""
    stop = getattr(_worker, "stop", None)
    if stop is not None and stop.is_set():
        raise _Stopped


def _solve_in_shares(solve, batches, n_workers, device, progress) -> None:
    """Solve each batch in shares side by side, one worker thread per share."""
    threads = torch.get_num_threads()
    stop = threading.Event()
    failed: list[BaseException] = []

    def start() -> None:
        # One intra-op thread per worker, without changing the count of
        # threads started later (the user's: see set_own_thread_count). The
        # calling thread's count stays as it is: torch.set_num_threads there
        # would also pin its MKL thread count, after which threadpoolctl's
        # limits in that thread no longer reach MKL's products (a 2000 x 2000
        # GEMM under threadpool_limits(1) then ran on two cores).
        try:
            set_own_thread_count(1, default=threads)
        except BaseException as error:
            failed.append(error)  # the pool only logs it
            raise
        _worker.stop = stop

    with ThreadPoolExecutor(n_workers, initializer=start) as pool:
        try:
            _start_every_worker(pool, n_workers, failed)
            for batch in batches:
                size = batch.stop - batch.start
                # The last batch may be too small for every worker.
                shares = _share_count(size, device)
                bounds = [batch.start + size * i // shares for i in range(shares + 1)]
                shares = itertools.starmap(slice, itertools.pairwise(bounds))
                _run_shares(pool, solve, list(shares), stop)
                progress.update(size)
        except BaseException:
            stop.set()  # before the pool's exit waits for its workers
            raise


def _start_every_worker(
    pool: ThreadPoolExecutor, n_workers: int, failed: list[BaseException]
) -> None:
    """Start all of ``pool``'s workers before any of them solves.

    A worker's start lowers torch's default thread count for a moment (see
    set_own_thread_count): started together, before the first share, the
    workers cannot hand one thread to a thread that another worker's solve
    (or a torch callback in it) starts. Each waits for the others, so that
    no worker is idle and the pool starts a new one for every task. A worker
    that fails to start (``failed`` holds its error) releases the others.
    """
    everyone = threading.Barrier(n_workers)

    def meet() -> None:
        try:
            everyone.wait()
        except threading.BrokenBarrierError:
            pass  # released: a worker failed to start, or the call stopped

    try:
        futures = [pool.submit(meet) for _ in range(n_workers)]
        # The pool fails the tasks a failed worker leaves, at once.
        wait(futures, return_when=FIRST_EXCEPTION)
        if failed:
            raise failed[0]
        for future in futures:
            future.result()
    except BaseException:
        everyone.abort()  # an interruption: the started workers stop waiting
        raise


def _run_shares(pool, solve, shares: list[slice], stop: threading.Event) -> None:
    """Solve ``shares`` in ``pool``; the first share to fail stops the others.

    Results collected in order would wait for every share before the failed
    one (3 s for an error raised at once beside a 3-second share).
    """
    futures = [pool.submit(solve, share) for share in shares]
    pending = wait(futures, return_when=FIRST_EXCEPTION).not_done
    if pending:  # a share failed
        stop.set()
        for future in pending:
            future.cancel()
    for future in futures:
        if future.cancelled():
            continue
        error = future.exception()
        if error is not None and not isinstance(error, _Stopped):
            raise error


def _share_count(batch_rows: int, device: torch.device) -> int:
    """Worker threads a batch of ``batch_rows`` rows is split between."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), batch_rows // _MIN_SHARE_ROWS))
