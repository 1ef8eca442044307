"""SparseAutoencoder speed: the paper's recipe against a bare torch loop, and scale.

Sections (all by default; pick some with ``--sections``):

recipe
    The paper's SAE recipe at n_latents=100 (width 100, 47 features, 2,500
    training samples, batch 64, 500 epochs = 20,000 AdamW steps, lr 5e-4) for
    each activation: the whole ``SparseAutoencoder.fit`` against a minimal bare
    torch loop of the same steps (autograd, default AdamW, the paper's forward
    for each activation), both on one CPU thread, interleaved and repeated;
    prints medians and the ratio of per-step times.
skorch
    A default ``skorch.NeuralNet`` fit of the TopK SAE (DataLoader, autograd)
    against the bare loop: the measurement behind the hand-rolled loop.
compile
    ``torch.compile`` of the bare TopK loss, compile time included.
threads
    The recipe's TopK fit on 1 thread (the estimator's choice at this size)
    against 2 threads.
crossover
    Dense against sparse top-k codes in training, per step, across widths.
mp
    The matching-pursuit SAE's training step at the recipe's size: the
    pursuit alone and the whole step (loss, gradients, projection, AdamW,
    renormalisation), in microseconds and torch operator calls.
mp_transform
    ``transform`` of 8,192 x 64 rows by a matching-pursuit SAE of width 4,096:
    one Gram matrix of the atoms for the whole call (as it runs) against one
    for each chunk of rows, alternated.
scale
    Training samples/s at width 16,384 on 512-dimensional inputs, batch 4,096
    (k=32), on the CPU and, when available, on CUDA.
precision
    One epoch of a ReLU SAE of width 768 on 20,000 x 768 rows (the whole
    ``fit``, one thread) in float32 against float64.

Run: ``python benchmarks/bench_sae.py [--sections recipe skorch ...]
[--repeats 3] [--activations mp ...] [--bare-epochs 50] [--recipe-epochs 500]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skdict import SparseAutoencoder, _tensor
from skdict._sae import _modules, _training
from skdict.datasets import make_compositional

ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu", "mp")
K = 10  # the true k at n_latents=100
WIDTH = 100
BATCH = 64
LR = 5e-4
COEF = 1e-4
BANDWIDTH = 1e-3


# ------------------------------------------------------ bare baseline loop


class _JumpReLU(torch.autograd.Function):
    """pre * H(pre - theta) with Rajamanoharan et al.'s threshold gradient."""

    @staticmethod
    def forward(ctx, pre, theta):
        ctx.save_for_backward(pre, theta)
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        kernel = ((pre - theta).abs() <= BANDWIDTH / 2).to(pre.dtype)
        return grad * (pre > theta), (-(theta / BANDWIDTH) * kernel * grad).sum(0)


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, theta):
        ctx.save_for_backward(pre, theta)
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        kernel = ((pre - theta).abs() <= BANDWIDTH / 2).to(pre.dtype)
        return None, (-(1.0 / BANDWIDTH) * kernel * grad).sum(0)


class BareSAE(nn.Module):
    """The paper's SAE forward for one activation, autograd throughout."""

    def __init__(self, activation, n_features, width, k):
        super().__init__()
        self.activation, self.k = activation, k
        self.W_enc = nn.Parameter(torch.empty(width, n_features))
        nn.init.kaiming_uniform_(self.W_enc, a=math.sqrt(5))
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.W_dec = nn.Parameter(self.W_enc.detach().clone())
        self.b_dec = nn.Parameter(torch.zeros(n_features))
        self.log_threshold = nn.Parameter(torch.full((width,), math.log(1e-3)))
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)

    def forward(self, x):
        """Return the reconstruction and the penalty."""
        xc = x - self.b_dec
        zero = x.new_zeros(())
        if self.activation == "mp":
            residual, codes = xc, torch.zeros(x.shape[0], self.W_dec.shape[0])
            picked = torch.zeros_like(codes, dtype=torch.bool)
            for _ in range(self.k):
                corr = residual @ self.W_dec.T
                # The paper's pursuit masks the atoms already picked.
                score = corr.abs().masked_fill(picked, -1.0)
                index = score.argmax(dim=1, keepdim=True)
                picked = picked.scatter(1, index, True)
                value = corr.gather(1, index)
                codes = codes + torch.zeros_like(codes).scatter(1, index, value)
                residual = residual - value * self.W_dec[index.squeeze(1)]
            return codes @ self.W_dec + self.b_dec, zero
        pre = xc @ self.W_enc.T + self.b_enc
        if self.activation == "relu":
            codes = F.relu(pre)
            penalty = codes.abs().sum(dim=1).mean()
        elif self.activation == "topk":
            values, index = pre.topk(self.k, dim=1)
            codes = torch.zeros_like(pre).scatter(1, index, F.relu(values))
            penalty = zero
        elif self.activation == "batchtopk":
            values, index = F.relu(pre).flatten().topk(self.k * x.shape[0])
            codes = torch.zeros(pre.numel()).scatter(0, index, values).view_as(pre)
            penalty = zero
        else:
            theta = self.log_threshold.exp()
            codes = _JumpReLU.apply(pre, theta)
            penalty = _Step.apply(pre, theta).sum(dim=1).mean()
        return codes @ self.W_dec + self.b_dec, penalty


def bare_loop(activation, X, epochs, *, compile_loss=False):
    """Run a minimal torch loop; return (seconds, steps, first-step seconds, epochs).

    ``epochs`` in the result lists each epoch's duration.
    """
    torch.manual_seed(0)
    model = BareSAE(activation, X.shape[1], WIDTH, K)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)

    def loss_fn(x):
        x_hat, penalty = model(x)
        return F.mse_loss(x_hat, x) + COEF * penalty

    if compile_loss:
        loss_fn = torch.compile(loss_fn, dynamic=False)
    steps, first, durations = 0, None, []
    start = time.perf_counter()
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        order = torch.randperm(X.shape[0])
        for i in range(0, X.shape[0], BATCH):
            x = X[order[i : i + BATCH]]
            loss = loss_fn(x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.W_dec /= model.W_dec.norm(dim=1, keepdim=True)
            steps += 1
            if first is None:
                first = time.perf_counter() - start
        durations.append(time.perf_counter() - epoch_start)
    return time.perf_counter() - start, steps, first, durations


def timed_fit(estimator, X, *fit_args):
    """Return (seconds, steps) of ``estimator.fit(X, *fit_args)``."""
    start = time.perf_counter()
    estimator.fit(X, *fit_args)
    steps = estimator.max_epochs * math.ceil(X.shape[0] / BATCH)
    return time.perf_counter() - start, steps


def ours(activation, X, epochs):
    sae = SparseAutoencoder(
        WIDTH,
        activation=activation,
        k=K if activation in ("topk", "batchtopk", "mp") else None,
        max_epochs=epochs,
        device="cpu",
        random_state=0,
    )
    return timed_fit(sae, X)


@contextmanager
def threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def recipe_data():
    data = make_compositional(n_latents=100, n_active=K, n_samples=5000, random_state=0)
    X = data.X_train.astype(np.float32)
    assert X.shape == (2500, 47), X.shape
    return X


# ---------------------------------------------------------------- sections


def section_recipe(args):
    X = recipe_data()
    X_t = torch.as_tensor(X)
    steps = args.recipe_epochs * math.ceil(X.shape[0] / BATCH)
    print(
        f"\n## recipe: {X.shape[0]} samples x {X.shape[1]} features, width {WIDTH}, "
        f"batch {BATCH}, {args.recipe_epochs} epochs = {steps} steps (ours) / "
        f"{args.bare_epochs} epochs (bare), 1 thread, {args.repeats} repeats "
        "(round robin over the activations)"
    )
    chosen = args.activations
    ours_ms = {a: [] for a in chosen}
    bare_ms = {a: [] for a in chosen}
    with threads(1):
        for activation in chosen:
            ours(activation, X[:256], 1)  # warm-up (first-call costs)
        for _ in range(args.repeats):
            for activation in chosen:
                seconds, n = ours(activation, X, args.recipe_epochs)
                ours_ms[activation].append(1e3 * seconds / n)
                seconds, n, *_ = bare_loop(activation, X_t, args.bare_epochs)
                bare_ms[activation].append(1e3 * seconds / n)
    print(
        f"{'activation':>10} {'ours s (min)':>13} {'ours ms/step':>13} "
        f"{'bare ms/step':>13} {'ratio':>6} {'bare s (min)':>13}"
    )
    for activation in chosen:
        o, b = ours_ms[activation], bare_ms[activation]
        ratio = statistics.median(x / y for x, y in zip(o, b, strict=True))
        print(
            f"{activation:>10} {min(o) * steps / 1e3:13.2f} "
            f"{statistics.median(o):13.3f} {statistics.median(b):13.3f} "
            f"{ratio:6.2f} {min(b) * steps / 1e3:13.2f}"
        )
    print(
        "ms/step: medians; ratio: median of the per-repeat ratios; seconds for the "
        "whole recipe: the fastest repeat (least disturbed by other jobs)."
    )


def section_skorch(args):
    try:
        from skorch import NeuralNet
    except ImportError:
        # The other sections need nothing beyond skdict: they still run.
        print(
            '\n## skorch: skipped, skorch is not installed (pip install -e ".[bench]")'
        )
        return

    X = recipe_data()
    X_t = torch.as_tensor(X)

    class Module(BareSAE):
        def forward(self, x):
            return super().forward(x)[0]

    epochs = args.bare_epochs
    skorch_ms, bare_ms = [], []
    with threads(1):
        for _ in range(args.repeats):
            torch.manual_seed(0)
            net = NeuralNet(
                Module,
                module__activation="topk",
                module__n_features=X.shape[1],
                module__width=WIDTH,
                module__k=K,
                criterion=nn.MSELoss,
                optimizer=torch.optim.AdamW,
                lr=LR,
                batch_size=BATCH,
                max_epochs=epochs,
                train_split=None,
                device="cpu",
                verbose=0,
            )
            seconds, steps = timed_fit(net, X, X)
            skorch_ms.append(1e3 * seconds / steps)
            seconds, steps, *_ = bare_loop("topk", X_t, epochs)
            bare_ms.append(1e3 * seconds / steps)
    s, b = statistics.median(skorch_ms), statistics.median(bare_ms)
    print(f"\n## skorch: TopK, {epochs} epochs, 1 thread, median of {args.repeats}")
    print(f"skorch.NeuralNet {s:.3f} ms/step, bare loop {b:.3f} ms/step")
    print(f"ratio {s / b:.2f}")


def section_compile(args):
    import torch._inductor.config

    # Cold compilation, as a user's first fit would see it: no on-disk caches.
    torch._inductor.config.force_disable_caches = True
    X_t = torch.as_tensor(recipe_data())
    with threads(1):
        seconds, steps, *_ = bare_loop("topk", X_t, args.bare_epochs)
        eager = 1e3 * seconds / steps
        *_, first, durations = bare_loop(
            "topk", X_t, args.bare_epochs, compile_loss=True
        )
    # Steady state: the later half of the epochs, after every recompilation.
    per_epoch = math.ceil(X_t.shape[0] / BATCH)
    later = durations[max(1, len(durations) // 2) :]
    steady = 1e3 * statistics.median(later) / per_epoch
    total = first + steady * 20_000 / 1e3
    print(f"\n## torch.compile of the bare TopK loss, {args.bare_epochs} epochs")
    print(
        f"eager {eager:.3f} ms/step; compiled: first step (compilation) "
        f"{first:.1f} s, then {steady:.3f} ms/step in the later epochs "
        f"(compiled / eager {steady / eager:.2f}); 20,000 steps would take "
        f"{total:.1f} s against {eager * 20:.1f} s eager"
    )


def section_threads(args):
    X = recipe_data()
    times = {1: [], 2: []}
    threshold = _tensor._SINGLE_THREAD_MACS
    try:
        with threads(2):
            for _ in range(args.repeats):
                for n in (1, 2):
                    _tensor._SINGLE_THREAD_MACS = threshold if n == 1 else 0
                    seconds, steps = ours("topk", X, args.bare_epochs)
                    times[n].append(1e3 * seconds / steps)
    finally:
        _tensor._SINGLE_THREAD_MACS = threshold
    one, two = (statistics.median(times[t]) for t in (1, 2))
    print(f"\n## threads: TopK, {args.bare_epochs} epochs, median of {args.repeats}")
    print(
        f"1 thread {one:.3f} ms/step, 2 threads {two:.3f} ms/step "
        f"(2 threads / 1 thread {two / one:.2f})"
    )


def section_precision(args):
    # The user guide's advice to pass float16 activations as float32, not as
    # NumPy float16 (computed in float64, as scikit-learn computes it).
    rng = np.random.default_rng(0)
    X64 = rng.standard_normal((20_000, 768))
    data = {"float32": X64.astype(np.float32), "float64": X64}
    times = {name: [] for name in data}
    with threads(1):
        for _ in range(args.repeats):
            for name, X in data.items():
                sae = SparseAutoencoder(768, max_epochs=1, random_state=0)
                start = time.perf_counter()
                sae.fit(X)
                times[name].append(time.perf_counter() - start)
    fast, slow = (min(times[name]) for name in data)
    print(
        "\n## precision: ReLU SAE, width 768, 20,000 x 768 Gaussian rows, batch 64, "
        f"one epoch (whole fit), 1 thread, fastest of {args.repeats}"
    )
    ratio = slow / fast
    print(f"float32 {fast:.2f} s, float64 {slow:.2f} s, float64 / float32 {ratio:.2f}")


def _steps_per_second(activation, X, width, k, batch, device, steps):
    module = _modules.build_sae(
        activation, X.shape[1], width, k=k, dtype=X.dtype, device=device
    )
    module.reset_parameters(torch.Generator().manual_seed(0))
    optimizer = _training.make_optimizer(
        module, lr=LR, weight_decay=0.01, train_decoder=True
    )
    generator = torch.Generator().manual_seed(0)
    n = batch * steps
    epoch = dict(
        batch_size=batch,
        sparsity_coef=COEF,
        train_decoder=True,
        dead=None,
        aux_k=0,
        aux_coef=0.0,
    )
    with _training._threads(module, batch, X.device):
        _training._epoch(module, X[:batch], optimizer, generator, **epoch)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        sums, _ = _training._epoch(module, X[:n], optimizer, generator, **epoch)
        float(sums[0])  # wait for the device
    return n / (time.perf_counter() - start)


def section_crossover(args):
    print("\n## crossover: TopK training, dense vs sparse codes, samples/s, 1 thread")
    header = ("batch", "features", "width", "k", "dense", "sparse")
    print(" ".join(f"{h:>8}" for h in header))
    cpu = torch.device("cpu")
    threshold = _modules._SPARSE_MIN_COMPONENTS
    # One thread for both paths: the comparison is of kernels, not of threading.
    with threads(1):
        try:
            for batch, n_features, k, widths in (
                (64, 47, 10, (100, 256, 512, 1024, 4096)),
                (4096, 512, 32, (256, 512, 1024, 4096)),
            ):
                steps = 200 if batch == 64 else 3
                X = torch.randn(batch * steps, n_features)
                for width in widths:
                    rates = []
                    for sparse in (False, True):
                        _modules._SPARSE_MIN_COMPONENTS = 1 if sparse else 10**9
                        rates.append(
                            _steps_per_second("topk", X, width, k, batch, cpu, steps)
                        )
                    row = (batch, n_features, width, k, *map(round, rates))
                    print(" ".join(f"{v:>8}" for v in row))
        finally:
            _modules._SPARSE_MIN_COMPONENTS = threshold


def _operator_calls(fn):
    """Top-level torch operators that one call of ``fn`` runs, views excluded."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    names = [
        e.name
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    return [name for name in names if name not in _VIEWS]


# Operators that only make views or uninitialised buffers: no kernel runs.
_VIEWS = {
    f"aten::{name}"
    for name in (
        "view as_strided alias unsqueeze squeeze transpose t permute expand select "
        "slice reshape _reshape_alias numpy_T mT empty empty_like empty_strided "
        "new_empty"
    ).split()
}


def section_mp(args):
    X = torch.as_tensor(recipe_data())
    x = X[:BATCH]
    module = _modules.build_sae("mp", X.shape[1], WIDTH, k=K)
    module.reset_parameters(torch.Generator().manual_seed(0))
    optimizer = _training.make_optimizer(
        module, lr=LR, weight_decay=0.01, train_decoder=True
    )
    step = _training.AdamWStep(optimizer)

    def pursuit():
        centred = x - module.b_dec
        _modules.matching_pursuit(centred, module.W_dec, K, module._gram())

    def training_step():
        module.loss_and_grad(x)
        module.project_decoder_grad_()
        step()
        module.normalize_decoder_()

    print(
        f"\n## mp: one training step at the recipe's size (batch {BATCH}, width "
        f"{WIDTH}, k={K}), 1 thread, median of {args.repeats} x 2,000 calls"
    )
    with threads(1), torch.inference_mode():
        training_step()
        calls = {
            "pursuit (forward only)": pursuit,
            "training step": training_step,
        }
        for name, fn in calls.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for _ in range(2000):
                    fn()
                times.append((time.perf_counter() - start) / 2000 * 1e6)
            ops = _operator_calls(fn)
            print(
                f"{name:>24} {statistics.median(times):7.1f} us, "
                f"{len(ops)} operator calls"
            )
        ops = _operator_calls(training_step)
        counts = ", ".join(f"{n[6:]} {ops.count(n)}" for n in sorted(set(ops)))
        print(f"operators per step: {counts}")


def section_mp_transform(args):
    from skdict import SparseAutoencoder

    rng = np.random.default_rng(0)
    X = rng.standard_normal((8192, 64)).astype(np.float32)
    sae = SparseAutoencoder(4096, activation="mp", k=8, max_epochs=1, random_state=0)
    sae.fit(X[:512])
    held = _modules.MatchingPursuitSAE.atoms_held

    def per_chunk():
        # The baseline: a Gram matrix for every chunk of rows.
        _modules.MatchingPursuitSAE.atoms_held = _modules.SAE.atoms_held
        try:
            return sae.transform(X)
        finally:
            _modules.MatchingPursuitSAE.atoms_held = held

    calls = {"one Gram a call": lambda: sae.transform(X), "one a chunk": per_chunk}
    print(
        "\n## mp_transform: transform of 8,192 x 64 rows at width 4,096 (k=8), "
        f"1 thread, alternated, best of {args.repeats}"
    )
    times = {name: [] for name in calls}
    with threads(1):
        codes = {name: fn() for name, fn in calls.items()}  # untimed
        for _ in range(args.repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        print(f"{name:>16} {seconds:6.2f} s")
    same = np.allclose(*codes.values(), rtol=1e-5, atol=1e-6)
    ratio = best["one Gram a call"] / best["one a chunk"]
    print(f"ratio {ratio:.2f} (held / per chunk); same codes: {same}")


def section_scale(args):
    width, n_features, batch, k = 16_384, 512, 4096, 32
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"\n## scale: width {width}, {n_features} features, batch {batch}, k={k}, "
        "training samples/s (float32)"
    )
    for device in devices:
        steps = 3 if device.type == "cpu" else 20
        X = torch.randn(batch * steps, n_features, device=device)
        for activation in ACTIVATIONS:
            if activation == "mp" and device.type == "cpu":
                print(f"{device.type:>5} {activation:>10} not run (32 dense passes)")
                continue
            rate = _steps_per_second(activation, X, width, k, batch, device, steps)
            print(f"{device.type:>5} {activation:>10} {rate:12.0f}")


SECTIONS = {
    "recipe": section_recipe,
    "skorch": section_skorch,
    "compile": section_compile,
    "threads": section_threads,
    "crossover": section_crossover,
    "mp": section_mp,
    "mp_transform": section_mp_transform,
    "scale": section_scale,
    "precision": section_precision,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS)
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--activations",
        nargs="+",
        choices=ACTIVATIONS,
        default=list(ACTIVATIONS),
        help="activations of the recipe section (default: all)",
    )
    parser.add_argument("--bare-epochs", type=int, default=50)
    parser.add_argument("--recipe-epochs", type=int, default=500)
    args = parser.parse_args()
    if "compile" in args.sections and args.bare_epochs < 2:
        # The steady-state rate is read from the epochs after the one that
        # compiles; with one epoch there is none.
        parser.error("--sections compile needs --bare-epochs 2 or more")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    # A process's first torch optimiser imports torch's compiler stack (about
    # 1.2 s), which would land in whichever fit a section times first.
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for name in args.sections:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
