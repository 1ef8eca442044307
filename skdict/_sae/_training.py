"""The training loop of :class:`~skdict.SparseAutoencoder`.

The loop is written out here rather than delegated to skorch. At the paper's
size (batch 64, width 100, 47 features, about 20,000 steps) a step is
dispatch-bound, and on one CPU thread a default ``skorch.NeuralNet`` fit of the
same TopK SAE ran 1.6x to 1.9x slower than a bare torch loop (1.06 against
0.65 ms/step on the 2-core VM at its quietest; the DataLoader and per-batch
bookkeeping; ``benchmarks/bench_sae.py``, section ``skorch``), whereas the goal
is at most 1.25x that loop and under 10 s per SAE. So the loop keeps the data
as one tensor on the compute device, draws one permutation per epoch and
gathers each batch's rows (no DataLoader), takes hand-written
gradients (:mod:`._modules`), steps a fused AdamW, and synchronises with the
host once per epoch: losses and firing counts are accumulated on the device,
so a CUDA run never waits on a ``.item()``. It provides what skorch would have:
a per-epoch history, a validation split with early stopping that restores the
best weights, and a tqdm progress bar.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .._tensor import _all_finite, one_thread_for_small_work, rows_per_block
from ._modules import SAE, StepOutput, active_counts

__all__ = ["AdamWStep", "TrainResult", "evaluate", "make_optimizer", "train"]

# Training steps whose sums are kept before being added up (bounds the memory
# of per-step firing counts to _REDUCE_EVERY * n_components values).
_REDUCE_EVERY = 256


def make_optimizer(
    module: SAE, *, lr: float, weight_decay: float, train_decoder: bool
) -> torch.optim.AdamW | None:
    """AdamW over the trainable parameters, None when nothing is trainable.

    The fused implementation (one kernel over all parameters) is used on CPU
    and CUDA: it is a third of the optimiser's cost at the paper's size.
    """
    params = [
        p
        for name, p in module.named_parameters()
        if train_decoder or name not in ("W_dec", "b_dec")
    ]
    if not params:
        return None
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, fused=fused or None
    )


class AdamWStep:
    """One AdamW step, calling the fused kernel directly after the first.

    ``torch.optim.AdamW.step`` wraps its fused kernel in Python that regroups
    the tensors by device and dtype and runs hooks on every call: measured on
    one CPU thread at the paper's size, 70 us per step around a 13 us kernel,
    a fifth of a whole training step. The first step goes through
    ``optimizer.step()``, which creates the state exactly as torch does; later
    steps increment the step counters and call the same kernel on the same
    state, so the optimiser (its ``state_dict``, its hyperparameters) stays the
    source of truth and the result is bit-identical (``tests/test_sae.py``).
    Optimisers the shortcut does not cover (not fused, amsgrad, several
    devices or dtypes, or a torch without the kernel) always use ``step()``.
    """

    def __init__(self, optimizer: torch.optim.AdamW):
        self.optimizer = optimizer
        group = optimizer.param_groups[0]
        self.params = group["params"]
        self.direct = (
            len(optimizer.param_groups) == 1
            and bool(group["fused"])
            and not group["amsgrad"]
            and not group["maximize"]
            and hasattr(torch, "_fused_adamw_")
            and len({(p.device, p.dtype) for p in self.params}) == 1
        )
        self._state = None

    def __call__(self) -> None:
        """Take one step with the gradients in the parameters' ``.grad``."""
        if not self.direct:
            self.optimizer.step()
            return
        if self._state is None:
            states = [self.optimizer.state[p] for p in self.params]
            if not all(states):
                self.optimizer.step()
                return
            self._state = tuple(
                [state[key] for state in states]
                for key in ("exp_avg", "exp_avg_sq", "step")
            )
        group = self.optimizer.param_groups[0]
        exp_avgs, exp_avg_sqs, steps = self._state
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(
            self.params,
            [p.grad for p in self.params],
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=group["lr"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


class RowSubset:
    """Rows ``index`` of ``X``, gathered when read rather than copied up front.

    The training and validation parts of ``validation_fraction`` were copies
    of their rows: with the data they came from, two copies of ``X`` for the
    whole fit (one epoch on a 195 MiB input peaked 344 MiB above it, now 171
    MiB, ``benchmarks/RESULTS.md``; 15 GiB of GPU memory more at 10^6 x 4,096
    in float32). Training gathers each batch by index anyway. Offers what
    :func:`train` and :func:`evaluate` read of a tensor, with the same values
    in the same order as ``X[index]``; :meth:`mean` sums a block of rows at a
    time, which rounds differently from a mean over a copy once the rows
    exceed one block.
    """

    def __init__(self, X: torch.Tensor, index: torch.Tensor) -> None:
        self.X, self.index = X, index.to(X.device)
        self.shape = (len(index), X.shape[1])
        self.device, self.dtype = X.device, X.dtype

    def index_select(self, dim: int, rows: torch.Tensor) -> torch.Tensor:
        return self.X.index_select(dim, self.index[rows])

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.X.index_select(0, self.index[rows])

    def new_zeros(self, *size: int) -> torch.Tensor:
        return self.X.new_zeros(*size)

    def mean(self, dim: int) -> torch.Tensor:
        """Column means, summed a block of rows at a time."""
        total = self.X.new_zeros(self.shape[1])
        step = rows_per_block(self.shape[1])
        for start in range(0, self.shape[0], step):
            total += self[start : start + step].sum(dim=dim)
        return total / self.shape[0]


def _threads(module: SAE, batch_size: int, device: torch.device):
    macs = batch_size * module.n_components * module.n_features
    return one_thread_for_small_work(macs, device)


def chunk_size(module: SAE) -> int:
    """Rows coded at once by :func:`evaluate` and the estimator's transform."""
    # Rows as wide as the codes or wider: chunks sized by latents alone
    # held all 300,000 rows of 512 features on 16 latents (+528 MiB).
    return rows_per_block(max(module.n_components, module.n_features))


def chunks(module: SAE, X: torch.Tensor) -> Iterator[torch.Tensor]:
    """Consecutive chunks of :func:`chunk_size` rows of ``X``, atoms held fixed."""
    step = chunk_size(module)
    with module.atoms_held():
        for start in range(0, X.shape[0], step):
            yield X[start : start + step]


@torch.no_grad()
def evaluate(module: SAE, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference-time sums over ``X``: squared error and penalty, firing counts.

    Returns
    -------
    sums : torch.Tensor of shape (2,)
        Squared reconstruction error summed over entries; penalty summed over
        samples.
    active : torch.Tensor of shape (n_components,)
        Number of samples each latent is non-zero on.
    """
    sums = X.new_zeros(2)
    active = X.new_zeros(module.n_components)
    for x in chunks(module, X):
        out = module(x)
        diff = (out.x_hat - x).view(-1)
        sums += torch.stack([torch.dot(diff, diff), module.penalty(out.codes)])
        active += active_counts(out.codes)
    return sums, active


def _epoch(
    module: SAE,
    X: torch.Tensor,
    optimizer: torch.optim.AdamW | None,
    generator: torch.Generator,
    *,
    batch_size: int,
    sparsity_coef: float,
    train_decoder: bool,
    dead: torch.Tensor | None,
    aux_k: int,
    aux_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    # One permutation per epoch, drawn on the CPU so that every device sees the
    # same order. Each batch's rows are gathered as it comes: a permuted copy
    # of the whole training set, made once an epoch for the sake of free
    # contiguous slices, held 1.65x the data at the peak and was no faster
    # (the gathers move the same bytes).
    order = torch.randperm(X.shape[0], generator=generator, device="cpu").to(X.device)
    # Per-step sums stay on the device and are reduced every _REDUCE_EVERY
    # steps: no per-step accumulation kernels, no host synchronisation.
    outputs, sums, active = [], X.new_zeros(3), X.new_zeros(module.n_components)
    step = None if optimizer is None else AdamWStep(optimizer)
    for start in range(0, X.shape[0], batch_size):
        out = module.loss_and_grad(
            X.index_select(0, order[start : start + batch_size]),
            sparsity_coef=sparsity_coef,
            train_decoder=train_decoder,
            dead=dead,
            aux_k=aux_k,
            aux_coef=aux_coef,
        )
        if train_decoder:
            module.project_decoder_grad_()
        if step is not None:
            step()
        if train_decoder:
            module.normalize_decoder_()
        outputs.append(out)
        if len(outputs) == _REDUCE_EVERY:
            _reduce(outputs, sums, active)
    _reduce(outputs, sums, active)
    return sums, active


def _reduce(outputs: list[StepOutput], sums: torch.Tensor, active: torch.Tensor):
    """Add the steps' sums into ``sums`` and ``active`` and empty ``outputs``."""
    if not outputs:
        return
    zero = sums.new_zeros(())
    for i, field in enumerate(("squared_error", "penalty", "aux_squared_error")):
        values = [getattr(out, field) for out in outputs]
        if values[0] is not None:
            sums[i] += torch.stack([zero if v is None else v for v in values]).sum()
    active += torch.stack([out.active for out in outputs]).sum(dim=0)
    outputs.clear()


class TrainResult(NamedTuple):
    """Output of :func:`train`.

    Attributes
    ----------
    history : list of dict
        One record per epoch run.
    samples_since_fired : torch.Tensor of shape (n_components,)
        Per latent, the training samples seen since the last epoch in which
        it fired (zero for the latents that fired in the last one).
    stopped_early : bool
        Whether the validation loss stopped improving before ``epochs`` ran
        out (False without validation data), or training stopped after one
        epoch because nothing is trainable.
    """

    history: list[dict]
    samples_since_fired: torch.Tensor
    stopped_early: bool = False


# The record entries the progress bar shows.


def _refuse_broken_parameters(module: torch.nn.Module, when: str) -> None:
    """Raise ``FloatingPointError`` naming the parameters holding NaN or inf."""
    broken = [
        name
        for name, tensor in itertools.chain(
            module.named_parameters(), module.named_buffers()
        )
        if tensor.is_floating_point() and not _all_finite(tensor)
    ]
    if broken:
        raise FloatingPointError(
            f"Training diverged: {', '.join(broken)} "
            f"{'holds' if len(broken) == 1 else 'hold'} NaN or infinite values "
            f"{when}. Lower lr or sparsity_coef, or scale X."
        )


_SHOWN = ("loss", "l0", "val_loss")


def _record(epoch, sums, active, dead, n_samples, n_features, sparsity_coef, aux_coef):
    loss = (sums[0] / n_features + sparsity_coef * sums[1]) / n_samples
    if sums.shape[0] > 2:
        loss = loss + aux_coef * sums[2] / (n_features * n_samples)
    values = torch.stack(
        [
            loss,
            sums[0] / (n_samples * n_features),
            active.sum() / n_samples,
            dead.to(sums.dtype).mean(),
        ]
    ).tolist()
    return dict(zip(("loss", "mse", "l0", "dead_fraction"), values, strict=True)) | {
        "epoch": epoch
    }


def train(
    module: SAE,
    X: torch.Tensor,
    *,
    optimizer: torch.optim.AdamW | None,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    sparsity_coef: float,
    train_decoder: bool,
    aux_k: int | None = None,
    aux_coef: float = 0.0,
    dead_after: int = 0,
    samples_since_fired: torch.Tensor | None = None,
    X_val: torch.Tensor | None = None,
    n_iter_no_change: int = 10,
    tol: float = 1e-4,
    first_epoch: int = 1,
    verbose: int = 0,
) -> TrainResult:
    """Train ``module`` in place for up to ``epochs`` passes over ``X``.

    Parameters
    ----------
    module : SAE
        Initialised module.
    X : torch.Tensor of shape (n_samples, n_features)
        Training data on the module's device and dtype.
    optimizer : torch.optim.AdamW or None
        From :func:`make_optimizer`.
    generator : torch.Generator
        CPU generator for the per-epoch shuffles.
    epochs, batch_size, sparsity_coef :
        ``max_epochs``, ``batch_size`` and ``sparsity_coef`` of
        :class:`~skdict.SparseAutoencoder`.
    train_decoder : bool
        Update the decoder (``not freeze_decoder``).
    aux_k, aux_coef :
        Auxiliary-k loss.
    dead_after : int, default=0
        A latent is dead once the epochs since the last one in which it
        fired hold at least ``dead_after`` samples, and at least one epoch.
    samples_since_fired : torch.Tensor, default=None
        The count of :class:`TrainResult` from an earlier call; None starts
        every latent as live.
    X_val : torch.Tensor, default=None
        Validation data; when given, training stops once the validation loss
        has not improved by a relative ``tol`` for ``n_iter_no_change`` epochs
        and the best weights are restored.
    first_epoch : int, default=1
        Number given to the first epoch's record.
    verbose : int, default=0
        Show a progress bar when positive.

    Returns
    -------
    TrainResult

    Raises
    ------
    FloatingPointError
        When the training loss, or a parameter after training, becomes NaN or
        infinite.
    """
    n_samples, n_features = X.shape
    # Nothing to train (matching pursuit on a frozen decoder): every epoch
    # would repeat the first (500 of them took 13 s at the paper's size).
    nothing_to_train = optimizer is None and epochs > 1
    if nothing_to_train:
        epochs = 1
    # Gao et al. (2024) call a latent dead after it has not fired for a number
    # of samples; counted here in whole epochs, so never fewer than one (a
    # count is positive once a latent missed an epoch), and an epoch of fit
    # and a partial_fit call on the same samples agree.
    dead_window = max(dead_after, 1)
    since = torch.zeros(module.n_components, dtype=torch.int64, device=X.device)
    if samples_since_fired is not None:
        since.copy_(samples_since_fired)
    best, best_state, stale, stopped_early = float("inf"), None, 0, False
    history = []
    bar = tqdm(
        total=epochs, desc=type(module).__name__, unit="epoch", disable=verbose <= 0
    )
    with bar, _threads(module, batch_size, X.device):
        for epoch in range(first_epoch, first_epoch + epochs):
            dead = since >= dead_window
            dead = dead if aux_k and bool(dead.any()) else None
            # Inference mode (no autograd bookkeeping at all, not even version
            # counters) trims each kernel launch: 10% per TopK step and 20% per
            # matching-pursuit step at the paper's size. Only the loop's own
            # tensors (gradients, optimiser moments, sums) are inference
            # tensors; the parameters are updated in place and stay ordinary.
            with torch.inference_mode():
                sums, active = _epoch(
                    module,
                    X,
                    optimizer,
                    generator,
                    batch_size=batch_size,
                    sparsity_coef=sparsity_coef,
                    train_decoder=train_decoder,
                    dead=dead,
                    aux_k=aux_k or 0,
                    aux_coef=aux_coef,
                )
            since = torch.where(active > 0, 0, since + n_samples)
            record = _record(
                epoch,
                sums,
                active,
                since >= dead_window,
                n_samples,
                n_features,
                sparsity_coef,
                aux_coef,
            )
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(
                    f"Training diverged: the loss is {record['loss']} at epoch "
                    f"{epoch}. Lower lr or sparsity_coef, or scale X."
                )
            if X_val is not None:
                val_sums, val_active = evaluate(module, X_val)
                val = _record(
                    epoch,
                    val_sums,
                    val_active,
                    val_active == 0,
                    X_val.shape[0],
                    n_features,
                    sparsity_coef,
                    0.0,
                )
                if not math.isfinite(val["loss"]):
                    # Early stopping would otherwise stall on it silently
                    # and keep the last weights: no epoch is ever "best".
                    _refuse_broken_parameters(module, "after this epoch")
                    raise FloatingPointError(
                        f"The validation loss is {val['loss']} at epoch {epoch}: "
                        "the errors on the rows held out by validation_fraction "
                        "overflow X's dtype (a row too large to square, or "
                        "weights diverging). Scale X, or lower lr or "
                        "sparsity_coef."
                    )
                record.update(val_loss=val["loss"], val_mse=val["mse"])
            history.append(record)
            bar.set_postfix(
                {key: f"{record[key]:.4g}" for key in _SHOWN if key in record}
            )
            bar.update()
            if X_val is None:
                continue
            # As scikit-learn's MLP, patience counts epochs without an
            # improvement of tol and the best weights are kept regardless;
            # unlike it, tol is relative (the loss's scale is the data's) and
            # n_iter_no_change stale epochs stop, not one more.
            stale = 0 if record["val_loss"] < best * (1.0 - tol) else stale + 1
            if record["val_loss"] < best:
                best = record["val_loss"]
                best_state = copy.deepcopy(module.state_dict())
            if stale >= n_iter_no_change:
                stopped_early = True
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    # The losses are taken before each step's update: the last step, or a
    # parameter the loss does not see (a JumpReLU threshold at infinity), can
    # still leave NaN behind.
    _refuse_broken_parameters(module, "after the last step")
    # The gradients are inference tensors and of no use once trained.
    for p in module.parameters():
        p.grad = None
    return TrainResult(history, since, stopped_early or nothing_to_train)
