"""Dictionary learning on small problems, against scikit-learn.

Settings outside the benchmark of ``bench_dictionary.py``: few samples per
atom, one or two active concepts, few features. For each cell
``make_compositional(n_latents, n_active, n_samples=..., noise=...)`` and seed,
the dictionary similarity of ``FISTACoder(n_components=n_latents,
positive=True)`` with its defaults, of a second fit from its atoms
(``--refine``: ``FISTACoder(init=atoms, positive=True)``, rounds that never
increase the objective) and of ``MiniBatchDictionaryLearning`` at the same
penalty (``bench_dictionary.sklearn_learner``: ``alpha=0.1``,
``max_iter=50``, ``batch_size=256``, coordinate descent, non-negative codes),
on one thread. Prints the means over seeds.

``--close-pairs`` instead fits ``make_compositional(50, 3, n_samples=4000)``
(17 features, where the closest two true atoms reach |cosine| 0.66-0.79,
around the exploring rounds' coherence bound of 0.7) with ``dict_max_iter=200,
tol=1e-2`` and prints, per seed, how close that pair is, how well each of its
atoms is found (the best |cosine| of a learned atom) and the rounds taken.

Usage::

    python benchmarks/bench_small_problems.py [--seeds 0 1 2] [--refine]
    python benchmarks/bench_small_problems.py --close-pairs --seeds 0 1 2 ...
"""

from __future__ import annotations

import argparse
import warnings

CELLS = [
    # (n_latents, n_active, n_samples, noise)
    (10, 1, 1000, 0.0),
    (10, 1, 4000, 0.0),
    (20, 2, 200, 0.0),
    (20, 2, 1000, 0.0),
    (50, 3, 200, 0.0),
    (50, 3, 200, 0.05),
    (10, 2, 1000, 0.05),
    (20, 10, 200, 0.05),
    (20, 1, 4000, 0.0),
    (50, 1, 1000, 0.0),
    (100, 2, 200, 0.0),
    (100, 5, 200, 0.0),
    (20, 3, 1000, 0.0),
    (50, 5, 4000, 0.0),
    (100, 10, 4000, 0.0),
    (50, 3, 4000, 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--refine", action="store_true")
    parser.add_argument("--close-pairs", action="store_true")
    args = parser.parse_args()
    if args.close_pairs:
        close_pairs(args.seeds)
        return

    import numpy as np
    import torch
    from bench_dictionary import sklearn_learner  # this folder, run as a script

    from skdict import FISTACoder
    from skdict.datasets import make_compositional
    from skdict.metrics import dictionary_similarity

    torch.set_num_threads(1)
    header = "| cell | skdict |" + (" refined |" if args.refine else "") + " sklearn |"
    print(header)
    print("| --- |" + " ---: |" * (header.count("|") - 2))
    means = []
    for n_latents, n_active, n_samples, noise in CELLS:
        scores = []
        for seed in args.seeds:
            with warnings.catch_warnings():
                # make_compositional's (n_active=1), sklearn's and FISTA's.
                warnings.simplefilter("ignore")
                data = make_compositional(
                    n_latents,
                    n_active,
                    n_samples=n_samples,
                    noise=noise,
                    random_state=seed,
                )
                X = data.X_train
                coder = FISTACoder(
                    n_components=n_latents, positive=True, random_state=seed
                ).fit(X)
                row = [dictionary_similarity(data.dictionary, coder)]
                if args.refine:
                    refined = FISTACoder(init=coder.components_, positive=True).fit(X)
                    row.append(dictionary_similarity(data.dictionary, refined))
                sklearn = sklearn_learner(n_latents, seed).fit(X)
            row.append(dictionary_similarity(data.dictionary, sklearn))
            scores.append(row)
        mean = np.mean(scores, axis=0)
        means.append(mean)
        cell = f"({n_latents}, {n_active}, {n_samples}, {noise})"
        print(f"| {cell} | " + " | ".join(f"{value:.3f}" for value in mean) + " |")
    overall = np.mean(means, axis=0)
    print("| mean | " + " | ".join(f"{value:.3f}" for value in overall) + " |")


def close_pairs(seeds: list[int]) -> None:
    import numpy as np
    import torch

    from skdict import FISTACoder
    from skdict.datasets import make_compositional
    from skdict.metrics import dictionary_similarity

    torch.set_num_threads(1)
    print("| seed | closest true pair | found | rounds | similarity |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    both = 0
    for seed in seeds:
        data = make_compositional(50, 3, n_samples=4000, random_state=seed)
        D = data.dictionary
        cosine = np.abs(D @ D.T) - np.eye(len(D))
        pair = list(np.unravel_index(cosine.argmax(), cosine.shape))
        coder = FISTACoder(
            n_components=50,
            positive=True,
            dict_max_iter=200,
            tol=1e-2,
            random_state=seed,
        ).fit(data.X_train)
        found = np.abs(coder.components_ @ D[pair].T).max(axis=0)
        both += bool(np.all(found >= 0.95))
        print(
            f"| {seed} | {cosine.max():.2f} | {found[0]:.3f} / {found[1]:.3f} | "
            f"{len(coder.history_)} | "
            f"{dictionary_similarity(D, coder):.3f} |"
        )
    print(f"both atoms within 0.95 at {both} of {len(seeds)} seeds")


if __name__ == "__main__":
    main()
