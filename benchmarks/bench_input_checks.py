"""Time of the NaN and infinity check of every input, against ``torch.isfinite``.

``skdict._tensor._all_finite`` (a finite sum settles the common case; half
precision, whose sums overflow, goes to the extremes) is timed on a
``--rows`` x ``--features`` tensor of ones in float16 and in float32, and on
the float32 one transposed (not contiguous), against
``bool(torch.isfinite(T).all())`` on the same tensor, in one process on one
torch thread. Each check runs once untimed, then ``--repeats`` times
alternately with the reference; the medians and their ratio (ours / the
reference) are printed. Run it with ``PYTHONPATH`` pointing at another
checkout to time that checkout's check.

Usage::

    python benchmarks/bench_input_checks.py [--rows 20000] [--features 4096]
        [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time


def _seconds(check, tensor) -> float:
    start = time.perf_counter()
    check(tensor)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if min(args.rows, args.features, args.repeats) < 1:
        parser.error("--rows, --features and --repeats must be at least 1")

    import torch

    from skdict._tensor import _all_finite

    torch.set_num_threads(1)

    def reference(tensor):
        return bool(torch.isfinite(tensor).all())

    shape = (args.rows, args.features)
    cases = {
        "float16": torch.ones(shape, dtype=torch.float16),
        "float32": torch.ones(shape, dtype=torch.float32),
        "float32, transposed": torch.ones(shape[::-1], dtype=torch.float32).T,
    }
    print(f"{args.rows} x {args.features} ones, one thread, medians of {args.repeats}")
    for name, tensor in cases.items():
        assert _all_finite(tensor) and reference(tensor)  # the untimed calls
        ours, theirs = [], []
        for repeat in range(args.repeats):
            # Reversed every other repeat: a drift of the load hits both.
            if repeat % 2:
                theirs.append(_seconds(reference, tensor))
            ours.append(_seconds(_all_finite, tensor))
            if not repeat % 2:
                theirs.append(_seconds(reference, tensor))
        ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
        print(
            f"{name:20s} skdict {ours_s:.4f} s   torch.isfinite().all() "
            f"{theirs_s:.4f} s   ratio {ours_s / theirs_s:.2f}x"
        )


if __name__ == "__main__":
    main()
