"""Activation extraction throughput and cached reload time of load_phrase_activations.

Measures, on the default vocabulary (10 colours x 10 objects x 4 templates = 400
phrases, all-MiniLM-L6-v2, last layer, object token):

* the first call in an empty cache (model loading included);
* extraction throughput with the model already in memory (``refresh=True``),
  against sentence-transformers' ``encode`` of the same phrases with the same
  batch size in the same process (the same forward pass plus its own pooling);
* the cached reload, in this process and in a fresh Python process.

Run ``python benchmarks/bench_phrases.py [--threads N] [--repeats R]
[--batch-size 64]``; needs the ``real`` extra (``pip install ".[real]"``).
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from skdict.datasets import load_phrase_activations

FRESH_PROCESS = """
import time
start = time.perf_counter()
from skdict.datasets import load_phrase_activations
imported = time.perf_counter()
data = load_phrase_activations(cache_dir={cache!r}, random_state=0)
done = time.perf_counter()
assert data.from_cache
print(imported - start, done - imported)
"""


def timed(fn, repeats):
    """Median wall-clock seconds of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="bench-phrases-")
    try:
        measure(args, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def measure(args, cache: str) -> None:
    """Time the loader with its cache in ``cache`` and print the table."""

    def load(**kwargs):
        return load_phrase_activations(
            cache_dir=cache, random_state=0, batch_size=args.batch_size, **kwargs
        )

    start = time.perf_counter()
    data = load()
    cold = time.perf_counter() - start
    n = len(data.phrases)
    extract, _ = timed(lambda: load(refresh=True), args.repeats)
    hit, again = timed(load, args.repeats)
    assert again.from_cache

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(data.model, device="cpu")
    phrases = list(data.phrases)
    baseline, _ = timed(
        lambda: st.encode(phrases, batch_size=args.batch_size), args.repeats
    )

    env = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS.format(cache=cache)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    import_time, fresh_hit = map(float, fresh.stdout.split())

    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), {n} phrases, "
        f"batch_size={args.batch_size}, median of {args.repeats}"
    )
    print("| measurement | seconds | phrases/s |")
    print("| --- | ---: | ---: |")
    rows = [
        ("first call, empty cache (model load included)", cold),
        ("extraction, model in memory (refresh=True)", extract),
        ("sentence-transformers encode, same phrases", baseline),
        ("cached reload, same process", hit),
        ("cached reload, fresh process (after import)", fresh_hit),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {n / seconds:,.0f} |")
    print(f"| `import skdict.datasets`, fresh process | {import_time:.4f} | |")
    print(
        f"extraction / sentence-transformers encode: {extract / baseline:.2f}x; "
        f"cached reload / encode: {hit / baseline:.3f}x; cached reload "
        f"{extract / hit:.0f}x faster than extraction "
        f"({extract / fresh_hit:.0f}x in a fresh process)"
    )


if __name__ == "__main__":
    main()
