"""Host reads a GPU run would wait for: FISTA coding and dictionary learning.

On a GPU every read of a tensor's value by Python (``item``, ``bool``,
``float``, ``tolist``) and every operator whose output size depends on the
data (``nonzero``, boolean indexing, ``masked_select``) waits for the device
to finish its queue. This script counts both on the CPU, where they can be
counted, for ``FISTACoder(dictionary=D, alpha=0.05).transform`` and for a
dictionary-learning ``fit`` of ``--rounds`` rounds, both on
``make_compositional(n_latents, 4, n_samples=4000, random_state=0)``'s
training half in float32 (the counts do not depend on the device; the code
paths are the same), and for ``lipschitz_constant`` of a ``--n-latents`` x 93
Gaussian dictionary read in groups (as it runs) against read at every power
iteration (``_POWER_READS_EVERY = 1``), in one process. A checksum of each
result shows that the counts change and the numbers do not.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_syncs.py [--n-latents 256]
        [--rounds 5]
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch.overrides import TorchFunctionMode


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values by Python (each a host sync on a GPU)."""

    names = {"item", "tolist", "__float__", "__int__", "__bool__"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", None) in self.names
        return func(*args, **(kwargs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-latents", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from torch.utils._python_dispatch import TorchDispatchMode

    from skdict import FISTACoder
    from skdict._fista import _core
    from skdict.datasets import make_compositional

    aten = torch.ops.aten

    class DataDependent(TorchDispatchMode):
        """Counts operators whose output size depends on the data."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (aten.nonzero.default, aten.masked_select.default):
                self.count += 1
            elif func in (aten.index.Tensor, aten.index_put_.default):
                indices = args[1]
                self.count += any(
                    i is not None and i.dtype == torch.bool for i in indices
                )
            return func(*args, **(kwargs or {}))

    def counted(run):
        reads, data_dependent = HostReads(), DataDependent()
        with reads, data_dependent:
            result = run()
        return reads.count, data_dependent.count, result

    warnings.simplefilter("ignore")
    data = make_compositional(args.n_latents, 4, n_samples=4000, random_state=0)
    X = torch.as_tensor(data.X_train, dtype=torch.float32)
    D = torch.as_tensor(data.dictionary, dtype=torch.float32)
    runs = {
        "transform": lambda: FISTACoder(D, alpha=0.05).fit(X).transform(X),
        f"fit, {args.rounds} rounds": lambda: (
            FISTACoder(
                n_components=args.n_latents,
                alpha=0.05,
                dict_max_iter=args.rounds,
                random_state=0,
            )
            .fit(X)
            .components_
        ),
    }
    print(f"{tuple(X.shape)} float32, {args.n_latents} atoms")
    print(f"{'':>16} {'reads':>8} {'data-dependent':>15} {'checksum':>16}")
    for name, run in runs.items():
        reads, data_dependent, result = counted(run)
        checksum = float(result.double().sum())
        print(f"{name:>16} {reads:8d} {data_dependent:15d} {checksum:16.10g}")

    atoms = torch.randn(args.n_latents, 93, generator=torch.Generator().manual_seed(0))
    grouped = counted(lambda: _core.lipschitz_constant(atoms))
    every, _core._POWER_READS_EVERY = _core._POWER_READS_EVERY, 1
    try:
        one_by_one = counted(lambda: _core.lipschitz_constant(atoms))
    finally:
        _core._POWER_READS_EVERY = every
    print(
        f"lipschitz_constant, {args.n_latents} x 93: {grouped[0]} reads in groups "
        f"of {every}, {one_by_one[0]} one by one (ratio "
        f"{grouped[0] / one_by_one[0]:.3f}); same estimate: "
        f"{grouped[2] == one_by_one[2]}"
    )


if __name__ == "__main__":
    main()
