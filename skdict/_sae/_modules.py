r"""Sparse autoencoder modules, their activations and their gradients.

Every SAE here shares one affine encoder-decoder pair (in the notation of Gao
et al., 2024, "Scaling and evaluating sparse autoencoders"):

.. math::

    \tilde x = x - b_{dec}, \qquad
    z = \sigma(\tilde x W_{enc}^\top + b_{enc}), \qquad
    \hat x = z W_{dec} + b_{dec},

with the atoms as the rows of ``W_dec`` kept at unit norm, and a loss

.. math::

    L = \operatorname{mean}\big((\hat x - x)^2\big)
        + \lambda\, \operatorname{mean}_b P(z_b)
        + \alpha\, L_{aux},

the mean taken over every entry of the batch (the paper's MSE), ``P`` the
activation's penalty and ``L_aux`` the optional auxiliary-k loss. The
activations ``sigma``:

``relu``
    ``z = max(pre, 0)`` with ``P = ||z||_1``.
``topk``
    the ``k`` largest pre-activations of each sample, rectified (Gao et al., 2024).
``batchtopk``
    the ``k * n_samples`` largest rectified pre-activations of the whole batch,
    so a sample may use more or fewer than ``k`` latents (Bussmann et al., 2024,
    "BatchTopK sparse autoencoders"); at inference, a JumpReLU at a threshold
    ``theta`` estimated during training.
``jumprelu``
    ``z = pre * H(pre - theta)`` with learned per-latent thresholds and
    ``P = ||z||_0``; the step function ``H`` gets the straight-through
    pseudo-derivatives of Rajamanoharan et al. (2024), "Jumping ahead":
    ``d/dtheta [pre * H(pre - theta)] = -(theta / eps) K((pre - theta) / eps)`` and
    ``d/dtheta H(pre - theta) = -(1 / eps) K((pre - theta) / eps)``, ``K`` the
    rectangle kernel and ``eps`` the bandwidth. ``theta = exp(log_threshold)``.
``mp``
    ``k`` steps of matching pursuit over the decoder atoms (no encoder): pick
    the atom most correlated with the residual, take the correlation as its
    code, subtract, repeat.

Gradients are written by hand rather than taken by autograd. At the paper's
size (batch 64, width 100, 47 features) a training step is a few dozen
microsecond-long kernels, and autograd's graph bookkeeping alone costs about
as much as the maths: measured on one CPU thread, a tight autograd step of the
ReLU SAE took 0.41 ms and the hand-written one 0.27 ms (both with fused AdamW),
against 0.6 ms for a plain autograd loop (``benchmarks/bench_sae.py``). The
derivations sit next to each ``loss_and_grad``; ``tests/test_sae.py`` checks
them against finite differences and autograd.

For wide top-k SAEs the codes stay sparse during training (:class:`SparseCodes`):
decoding, the decoder gradient and the encoder gradient then cost
``O(n_samples * k * n_features)`` instead of ``O(n_samples * n_components *
n_features)``, the saving Gao et al. (2024) get from their sparse kernels.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "BatchTopKSAE",
    "ForwardOutput",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "SparseCodes",
    "StepOutput",
    "TopKSAE",
    "active_counts",
    "build_sae",
    "matching_pursuit",
]

# Top-k codes are kept sparse in training from this width on, when k is at most
# 1/8 of it. Measured on one CPU thread (benchmarks/bench_sae.py, crossover),
# sparse against dense training steps: 0.6x at width 100 and 1.0x at 256
# (batch 64, k=10, 47 features), 1.2x at 512 and 2.7x at 4096; with batch 4096,
# k=32 and 512 features, 1.4x at 256 and 5.6x at 4096.
_SPARSE_MIN_COMPONENTS = 256
# Matching pursuit updates its correlations through the Gram matrix of the
# atoms while it has at most this many entries (256 MiB in float32); beyond,
# it recomputes them from the residual at every step. Four times FISTA's
# bound (_MAX_GRAM_ELEMENTS in skdict/_fista/_driver.py): the pursuit reads
# the matrix at each of its k steps of every training batch, where FISTA
# reads it per working set.
_MAX_PURSUIT_GRAM_ELEMENTS = 2**26
# Exponential-average weight of the BatchTopK threshold estimate once it has
# seen 1 / _THRESHOLD_MOMENTUM batches (a plain running mean before that).
_THRESHOLD_MOMENTUM = 0.01


class SparseCodes(NamedTuple):
    """Codes with few non-zeros per row, in compressed-row form.

    Row ``b`` holds ``values[crow[b]:crow[b + 1]]`` at columns
    ``columns[crow[b]:crow[b + 1]]``; ``rows`` repeats each row index once per
    entry. Entries may be zero and columns may repeat within a row (they add).

    Attributes
    ----------
    values, columns, rows : torch.Tensor of shape (nnz,)
    crow : torch.Tensor of shape (n_samples + 1,)
    n_components : int
    """

    values: Tensor
    columns: Tensor
    rows: Tensor
    crow: Tensor
    n_components: int

    @classmethod
    def from_topk(cls, values: Tensor, indices: Tensor, n_components: int):
        """Codes with exactly ``k`` entries per row, from ``(n, k)`` tensors."""
        n, k = values.shape
        device = values.device
        rows = torch.arange(n, device=device).repeat_interleave(k)
        crow = torch.arange(0, n * k + 1, k, device=device)
        return cls(values.reshape(-1), indices.reshape(-1), rows, crow, n_components)

    @classmethod
    def from_flat(cls, values: Tensor, flat_indices: Tensor, shape: tuple[int, int]):
        """Codes from entries at positions ``row * n_components + column``."""
        n, n_components = shape
        flat, order = flat_indices.sort()
        rows = torch.div(flat, n_components, rounding_mode="floor")
        columns = flat - rows * n_components
        crow = torch.searchsorted(rows, torch.arange(n + 1, device=rows.device))
        return cls(values[order], columns, rows, crow, n_components)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return self.crow.shape[0] - 1

    def to_dense(self) -> Tensor:
        """Return the dense ``(n_samples, n_components)`` matrix."""
        out = self.values.new_zeros(self.n_samples, self.n_components)
        return out.index_put_((self.rows, self.columns), self.values, accumulate=True)


Codes = Tensor | SparseCodes


def _decode(codes: Codes, weight: Tensor) -> Tensor:
    """``codes @ weight`` without densifying sparse codes."""
    if isinstance(codes, Tensor):
        return codes @ weight
    return F.embedding_bag(
        codes.columns,
        weight,
        codes.crow,
        mode="sum",
        per_sample_weights=codes.values,
        include_last_offset=True,
    )


def _transpose_matmul(codes: Codes, other: Tensor) -> Tensor:
    """``codes.T @ other``, shape ``(n_components, other.shape[1])``."""
    if isinstance(codes, Tensor):
        return codes.T @ other
    coo = torch.sparse_coo_tensor(
        torch.stack([codes.columns, codes.rows]),
        codes.values,
        (codes.n_components, other.shape[0]),
        check_invariants=False,
        device=codes.values.device,
    )
    return torch.sparse.mm(coo, other)


def _sampled_matmul(codes: Codes, grad: Tensor, weight: Tensor) -> Codes:
    """``grad @ weight.T``, only where ``codes`` has entries when it is sparse."""
    if isinstance(codes, Tensor):
        return F.linear(grad, weight)
    pattern = torch.sparse_csr_tensor(
        codes.crow,
        codes.columns,
        codes.values,
        (codes.n_samples, codes.n_components),
        check_invariants=False,
        device=codes.values.device,
    )
    values = torch.sparse.sampled_addmm(pattern, grad, weight.T, beta=0.0)
    return codes._replace(values=values.values())


def _column_sums(codes: Codes) -> Tensor:
    if isinstance(codes, Tensor):
        return codes.sum(dim=0)
    out = codes.values.new_zeros(codes.n_components)
    return out.index_add_(0, codes.columns, codes.values)


def active_counts(codes: Codes) -> Tensor:
    """Count the samples each latent is non-zero on."""
    if isinstance(codes, Tensor):
        return (codes != 0).sum(dim=0, dtype=codes.dtype)
    out = codes.values.new_zeros(codes.n_components)
    return out.index_add_(0, codes.columns, (codes.values != 0).to(out.dtype))


def _selection_counts(indices: Tensor, n_components: int, values: Tensor) -> Tensor:
    """Count the selections of each atom with a non-zero coefficient.

    In ``values``' dtype and device. A pursuit whose residual reaches zero
    before ``k`` steps selects atoms with a coefficient of exactly zero:
    those do not fire (they counted as firing, so ``dead_fraction`` read 0
    where a latent never fired). ``index_add_`` rather than ``bincount``:
    CUDA's bincount reads the range of its input back to the host, a
    synchronisation on every training step.
    """
    fired = (values != 0).to(values.dtype).reshape(-1)
    return values.new_zeros(n_components).index_add_(0, indices.reshape(-1), fired)


def _times_mask(codes: Codes, grad: Codes) -> Codes:
    """``grad`` where ``codes > 0``, zero elsewhere (the rectifier's derivative)."""
    if isinstance(codes, Tensor):
        return grad.mul_(codes > 0)
    return grad._replace(values=grad.values * (codes.values > 0))


def _add(a: Codes, b: Codes) -> Codes:
    if isinstance(a, Tensor):
        return a.add_(b)
    # Concatenated entries add up in every product used on gradients.
    return SparseCodes(
        torch.cat([a.values, b.values]),
        torch.cat([a.columns, b.columns]),
        torch.cat([a.rows, b.rows]),
        a.crow,
        a.n_components,
    )


def matching_pursuit(
    x: Tensor, atoms: Tensor, k: int, gram: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``k`` steps of matching pursuit (Mallat & Zhang, 1993) over unit-norm atoms.

    Each step picks, per sample, the atom with the largest absolute
    correlation with the residual among those not yet picked, and takes that
    correlation as its code, so every sample gets ``k`` distinct atoms (as in
    the paper's implementation; plain matching pursuit may pick an atom again
    once later steps have restored its correlation). The correlations are
    updated through the Gram matrix (``c -= v G[i]``), one ``(n_samples,
    n_components)`` update per step instead of a product with the atoms.

    Parameters
    ----------
    x : torch.Tensor of shape (n_samples, n_features)
    atoms : torch.Tensor of shape (n_components, n_features)
        Unit-norm atoms.
    k : int
        Number of steps, at most ``n_components``.
    gram : torch.Tensor of shape (n_components, n_components), default=None
        ``atoms @ atoms.T``; None recomputes correlations from the residual.

    Returns
    -------
    values, indices : torch.Tensor of shape (n_samples, k)
        The code of each selected atom, in selection order.

    Examples
    --------
    >>> import torch
    >>> from skdict._sae._modules import matching_pursuit
    >>> atoms = torch.eye(3)
    >>> values, indices = matching_pursuit(torch.tensor([[0.0, 2.0, -3.0]]), atoms, 2)
    >>> values.tolist(), indices.tolist()
    ([[-3.0, 2.0]], [[2, 1]])
    """
    return _pursue(F.linear(x, atoms), k, gram=gram, x=x, atoms=atoms)


# Signed integers of the width of each floating dtype: the bits of a
# non-negative float, read as such an integer, order as the float does.
_SAME_WIDTH_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def _pursue(
    correlations: Tensor,
    k: int,
    *,
    gram: Tensor | None = None,
    x: Tensor | None = None,
    atoms: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run matching pursuit from the correlations ``x @ atoms.T``, in place.

    On return ``correlations`` holds those of the final residual, which the
    backward pass of :class:`MatchingPursuitSAE` reuses. Without ``gram`` the
    residual starts from ``x`` and the correlations are recomputed from it.
    See :func:`matching_pursuit`.
    """
    # Each step is a handful of kernels on an (n_samples, n_components)
    # matrix, sequential by nature; at the paper's size (64 x 100) they are
    # dispatch-bound, so the loop reuses its buffers and spends one kernel per
    # task. The selection takes the argmax of |c| through the bits of |c| read
    # as integers: the same index (ties included: the first maximum; NaN is
    # still the largest), but torch's CPU argmax is a third faster on
    # integers than on floats (5.7 against 7.6 us at 64 x 100, one thread).
    magnitude = torch.empty_like(correlations)
    bits = magnitude
    if magnitude.device.type == "cpu" and magnitude.dtype in _SAME_WIDTH_INT:
        bits = magnitude.view(_SAME_WIDTH_INT[magnitude.dtype])
    if gram is not None:
        rows = torch.empty_like(correlations)
    else:
        residual = x.clone()
    # Selections and codes go straight into step-major buffers (argmax and
    # gather write there), and the atoms picked so far are masked with one
    # scatter of -1, below every |c| read as a float or through its bits (the
    # sign bit makes it negative): one kernel a step for the paper's
    # distinct-atom rule.
    n_samples = correlations.shape[0]
    picked = torch.empty(k, n_samples, dtype=torch.long, device=correlations.device)
    values = correlations.new_empty(k, n_samples, 1)
    for step in range(k):
        torch.abs(correlations, out=magnitude)
        if step:
            magnitude.scatter_(1, picked[:step].T, -1.0)
        index = torch.argmax(bits, dim=1, out=picked[step])
        value = torch.gather(correlations, 1, index.unsqueeze(1), out=values[step])
        if gram is not None:
            torch.index_select(gram, 0, index, out=rows)
            correlations.addcmul_(value, rows, value=-1.0)
        else:
            residual.addcmul_(value, atoms.index_select(0, index), value=-1.0)
            torch.mm(residual, atoms.T, out=correlations)
    return values.view(k, n_samples).T.contiguous(), picked.T.contiguous()


class ForwardOutput(NamedTuple):
    """Output of an SAE's forward pass.

    Attributes
    ----------
    x_hat : torch.Tensor of shape (n_samples, n_features)
        The reconstruction.
    codes : torch.Tensor or SparseCodes
        The latent codes, ``(n_samples, n_components)``.
    """

    x_hat: Tensor
    codes: Codes


class StepOutput(NamedTuple):
    """Sums over one training batch, accumulated into the epoch's means.

    Attributes
    ----------
    squared_error : torch.Tensor
        Squared reconstruction error summed over entries (0-dim).
    penalty : torch.Tensor or None
        The penalty summed over samples, None for structural sparsity.
    aux_squared_error : torch.Tensor or None
        The auxiliary-k squared error summed over entries, None when off.
    active : torch.Tensor of shape (n_components,)
        Number of samples each latent was non-zero on.
    """

    squared_error: Tensor
    penalty: Tensor | None
    aux_squared_error: Tensor | None
    active: Tensor


def _squared_norm(t: Tensor) -> Tensor:
    flat = t.view(-1)
    return torch.dot(flat, flat)


class SAE(nn.Module):
    """Base sparse autoencoder: affine encoder, activation, unit-norm decoder.

    Subclasses define the activation (:meth:`_activate`) and its gradient
    (:meth:`_activation_grad`); :class:`MatchingPursuitSAE`, which has no
    encoder, overrides :meth:`encode` and :meth:`loss_and_grad` instead.

    Parameters
    ----------
    n_features : int
        Input dimension.
    n_components : int
        Number of latents (atoms).
    k : int, default=None
        Active latents per sample, for the top-k family and matching pursuit.
    dtype, device :
        Of the parameters.
    """

    uses_encoder = True
    # Whether the activation produces top-k codes that training may keep sparse.
    topk_codes = False

    @contextlib.contextmanager
    def atoms_held(self) -> Iterator[None]:
        """Hold the atoms fixed for a run of calls, e.g. the chunks of a transform.

        Lets a subclass compute what depends on the atoms alone once (matching
        pursuit's Gram matrix); the atoms must not change inside.
        """
        yield

    def __init__(
        self,
        n_features: int,
        n_components: int,
        *,
        k: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ):
        super().__init__()
        # Python integers: before NumPy 2, np.uint64(16) + 64 is 80.0, which
        # torch refuses as a size.
        self.n_features = operator.index(n_features)
        self.n_components = operator.index(n_components)
        self.k = None if k is None else operator.index(k)
        # Wide top-k SAEs keep their codes sparse in training (fixed at
        # construction so that a module never changes its code path).
        self.sparse_codes = self.topk_codes and (
            n_components >= _SPARSE_MIN_COMPONENTS and 8 * k <= n_components
        )
        kw = {"dtype": dtype, "device": device}
        if self.uses_encoder:
            self.W_enc = nn.Parameter(torch.empty(n_components, n_features, **kw))
            self.b_enc = nn.Parameter(torch.zeros(n_components, **kw))
        self.W_dec = nn.Parameter(torch.empty(n_components, n_features, **kw))
        self.b_dec = nn.Parameter(torch.zeros(n_features, **kw))

    @torch.no_grad()
    def reset_parameters(
        self,
        generator: torch.Generator,
        *,
        decoder: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> None:
        """Initialise as in the paper (and as Gao et al., 2024, do).

        Without ``decoder``: the encoder is Kaiming-uniform (``torch.nn.Linear``'s
        default, drawn in float64 on the CPU from ``generator`` so that every
        device and precision gets the same weights: torch draws other numbers
        for float32 than for float64 from one generator) and the decoder its
        transpose with unit-norm atoms. With ``decoder``: those atoms, used as
        given, and the encoder starts as their transpose. ``bias`` initialises
        ``b_dec`` (zero when None).
        """
        if decoder is None:
            drawn = torch.empty(
                self.n_components, self.n_features, dtype=torch.float64, device="cpu"
            )
            nn.init.kaiming_uniform_(drawn, a=math.sqrt(5), generator=generator)
            weight = drawn.to(self.W_dec.dtype)
            self.W_dec.copy_(weight)
            self.normalize_decoder_()
        else:
            self.W_dec.copy_(decoder)
            weight = decoder
        if self.uses_encoder:
            self.W_enc.copy_(weight)
            self.b_enc.zero_()
        if bias is None:
            self.b_dec.zero_()
        else:
            self.b_dec.copy_(bias)

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every atom to unit norm."""
        # No guard against zero norms: a unit-norm atom cannot reach zero in one
        # step, and a non-finite one ends training through the loss check.
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove the gradient component parallel to each atom.

        On the unit sphere only the tangent part of the gradient moves an atom;
        the radial part would be undone by :meth:`normalize_decoder_` (Bricken
        et al., 2023, "Towards monosemanticity"; the paper's projected gradient).
        """
        grad = self.W_dec.grad
        radial = (grad * self.W_dec).sum(dim=1, keepdim=True)
        grad.addcmul_(radial, self.W_dec, value=-1.0)

    def pre_activations(self, x: Tensor) -> Tensor:
        """``(x - b_dec) @ W_enc.T + b_enc``."""
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    def _check_rows(self, x: Tensor) -> None:
        # TopK's and matching pursuit's selections index rows: other shapes
        # failed deep inside torch's gather, while others broadcast.
        if x.ndim != 2:
            raise ValueError(
                f"{type(self).__name__} codes activations of shape (n_samples, "
                f"n_features); got shape {tuple(x.shape)}. Flatten the leading "
                f"dimensions first: x.reshape(-1, {self.n_features})."
            )

    @torch.no_grad()
    def encode(self, x: Tensor) -> Codes:
        """Inference-time codes of ``x``, of shape (n_samples, n_components).

        Dense, or a ``SparseCodes`` of the ``k`` values per row for TopK
        modules wide enough to gain from it (BatchTopK's threshold keeps no
        fixed number per row: dense).
        """
        self._check_rows(x)
        return self._activate(self.pre_activations(x), training=False)

    def decode(self, codes: Codes) -> Tensor:
        """``codes @ W_dec + b_dec``."""
        product = _decode(codes, self.W_dec)
        # In place, as a sum held two reconstructions; but not under autocast,
        # whose bfloat16 product the float32 bias promotes.
        if product.dtype == self.b_dec.dtype:
            return product.add_(self.b_dec)
        return product + self.b_dec

    @torch.no_grad()
    def forward(self, x: Tensor) -> ForwardOutput:
        """Encode and decode ``x`` with inference-time codes."""
        codes = self.encode(x)
        return ForwardOutput(self.decode(codes), codes)

    @torch.no_grad()
    def penalty(self, codes: Codes) -> Tensor:
        """Return the penalty ``P`` summed over the samples of ``codes``."""
        values = codes.values if isinstance(codes, SparseCodes) else codes
        return values.new_zeros(())

    def _activate(self, pre: Tensor, *, training: bool) -> Codes:
        raise NotImplementedError

    def _activation_grad(
        self, pre: Tensor, codes: Codes, grad: Codes, coef: float
    ) -> tuple[Codes, Tensor]:
        """Gradient w.r.t. ``pre`` and penalty sum, given ``grad`` w.r.t. codes.

        The penalty sum is None for activations without a penalty. ``coef`` is
        the penalty weight divided by the batch size, the derivative of
        ``lambda * mean_b P(z_b)`` w.r.t. each ``P(z_b)``.
        """
        raise NotImplementedError

    @torch.no_grad()
    def loss_and_grad(
        self,
        x: Tensor,
        *,
        sparsity_coef: float = 0.0,
        train_decoder: bool = True,
        dead: Tensor | None = None,
        aux_k: int = 0,
        aux_coef: float = 0.0,
    ) -> StepOutput:
        r"""Loss of one batch; its gradients are written to the ``.grad`` fields.

        With ``e = x_hat - x``, ``g = 2 e / e.numel()`` is the gradient of the
        MSE w.r.t. ``x_hat``, and backpropagation through the affine maps gives

        * ``dW_dec = z.T @ g`` and ``db_dec = sum_b g - (sum_b dpre) @ W_enc``
          (``b_dec`` also enters through ``x - b_dec``);
        * ``dz = g @ W_dec.T`` (only at the non-zeros of sparse codes), ``dpre``
          from the activation (:meth:`_activation_grad`);
        * ``dW_enc = dpre.T @ (x - b_dec)`` and ``db_enc = sum_b dpre``.

        ``dead`` (bool, one per latent) switches on the auxiliary-k loss of Gao
        et al. (2024): the ``aux_k`` largest pre-activations among
        the dead latents, rectified, reconstruct the residual ``x - x_hat``
        (held fixed), with the MSE weighted by ``aux_coef``. It gives dead
        latents a gradient again.
        """
        n = x.shape[0]
        x_centred = x - self.b_dec
        pre = F.linear(x_centred, self.W_enc, self.b_enc)
        codes = self._activate(pre, training=True)
        if isinstance(codes, Tensor):
            diff = torch.addmm(self.b_dec, codes, self.W_dec).sub_(x)
        else:
            diff = _decode(codes, self.W_dec).add_(self.b_dec).sub_(x)
        grad_out = diff * (2.0 / diff.numel())
        grad_codes = _sampled_matmul(codes, grad_out, self.W_dec)
        grad_pre, penalty = self._activation_grad(
            pre, codes, grad_codes, sparsity_coef / n
        )
        grad_dec = _transpose_matmul(codes, grad_out) if train_decoder else None
        aux_sq = None
        if dead is not None:
            aux_pre, aux_sq = self._auxiliary_grad(
                pre, diff, dead, aux_k, aux_coef, grad_dec
            )
            grad_pre = _add(grad_pre, aux_pre)
        self.W_enc.grad = _transpose_matmul(grad_pre, x_centred)
        self.b_enc.grad = _column_sums(grad_pre)
        if train_decoder:
            self.W_dec.grad = grad_dec
            self.b_dec.grad = torch.addmv(
                grad_out.sum(dim=0), self.W_enc.T, self.b_enc.grad, alpha=-1.0
            )
        return StepOutput(_squared_norm(diff), penalty, aux_sq, active_counts(codes))

    def _auxiliary_grad(self, pre, diff, dead, aux_k, aux_coef, grad_dec):
        values, indices = pre.masked_fill(~dead, -math.inf).topk(aux_k, sorted=False)
        # relu maps the -inf of live latents (when fewer than aux_k are dead) to 0.
        codes = self._codes_from_topk(values.relu_(), indices)
        # e_hat - e with e = x - x_hat = -diff, the residual the dead latents fit.
        aux_diff = _decode(codes, self.W_dec).add_(diff)
        grad_out = aux_diff * (2.0 * aux_coef / aux_diff.numel())
        if grad_dec is not None:
            grad_dec.add_(_transpose_matmul(codes, grad_out))
        grad_codes = _sampled_matmul(codes, grad_out, self.W_dec)
        return _times_mask(codes, grad_codes), _squared_norm(aux_diff)

    def _codes_from_topk(self, values: Tensor, indices: Tensor) -> Codes:
        if self.sparse_codes:
            return SparseCodes.from_topk(values, indices, self.n_components)
        return values.new_zeros(values.shape[0], self.n_components).scatter_(
            1, indices, values
        )


class ReLUSAE(SAE):
    """ReLU activation with an L1 penalty, ``P(z) = ||z||_1``."""

    def _activate(self, pre, *, training):
        return pre.relu()

    def _activation_grad(self, pre, codes, grad, coef):
        # d/dpre of relu is 1 where pre > 0; there |z| = z, so dP/dz = 1.
        return grad.add_(coef).mul_(pre > 0), codes.sum()

    @torch.no_grad()
    def penalty(self, codes):
        return codes.sum()


class JumpReLUSAE(SAE):
    """JumpReLU activation with an L0 penalty through straight-through estimators.

    Parameters
    ----------
    bandwidth : float
        Width ``eps`` of the rectangle kernel of the pseudo-derivatives.
    threshold_init : float
        Initial threshold of every latent.
    """

    def __init__(self, n_features, n_components, *, bandwidth, threshold_init, **kw):
        super().__init__(n_features, n_components, **kw)
        self.bandwidth, self.threshold_init = bandwidth, threshold_init
        self.log_threshold = nn.Parameter(
            torch.full_like(self.b_enc, math.log(threshold_init))
        )

    @torch.no_grad()
    def reset_parameters(self, generator, **kw):
        super().reset_parameters(generator, **kw)
        self.log_threshold.fill_(math.log(self.threshold_init))

    @property
    def threshold(self) -> Tensor:
        """Per-latent thresholds ``exp(log_threshold)``."""
        return self.log_threshold.exp()

    def _activate(self, pre, *, training):
        # where, not a product with the mask: -0.0 for negative pre-activations.
        return pre.where(pre > self.threshold, 0.0)

    def _activation_grad(self, pre, codes, grad, coef):
        theta = self.threshold
        active = pre > theta
        # Rectangle kernel K((pre - theta) / eps) = 1 when |pre - theta| <= eps / 2.
        near = (pre - theta).abs_() <= 0.5 * self.bandwidth
        # Rajamanoharan et al. (2024), summed over the batch:
        # dL/dtheta = -(1/eps) sum_b K * (theta * dL/dz + lambda / B); then the
        # chain rule through theta = exp(log_threshold).
        grad_theta = (grad * theta).add_(coef).mul_(near).sum(dim=0)
        self.log_threshold.grad = grad_theta.mul_(theta).div_(-self.bandwidth)
        penalty = active.sum(dtype=pre.dtype)
        return grad.mul_(active), penalty

    @torch.no_grad()
    def penalty(self, codes):
        return (codes != 0).sum(dtype=codes.dtype)


class TopKSAE(SAE):
    """TopK activation: the ``k`` largest pre-activations of each sample, rectified."""

    topk_codes = True

    def _activate(self, pre, *, training):
        values, indices = pre.topk(self.k, dim=1, sorted=False)
        return self._codes_from_topk(values.relu_(), indices)

    def _activation_grad(self, pre, codes, grad, coef):
        return _times_mask(codes, grad), None


class BatchTopKSAE(TopKSAE):
    """BatchTopK activation (Bussmann et al., 2024).

    In training, the ``k * n_samples`` largest rectified pre-activations of the
    batch; the smallest one kept in each batch feeds a running estimate of
    the inference threshold, stored in the ``threshold``
    buffer. At inference, ``z = pre * (pre > threshold)``, one sample at a time.
    """

    def __init__(self, n_features, n_components, **kw):
        super().__init__(n_features, n_components, **kw)
        self.register_buffer(
            "threshold",
            torch.zeros((), dtype=self.W_dec.dtype, device=self.W_dec.device),
        )
        # A buffer, not a Python count, so that restoring the best weights
        # after early stopping restores the estimate's weighting with them.
        self.register_buffer(
            "threshold_updates",
            torch.zeros((), dtype=torch.int64, device=self.W_dec.device),
        )

    @torch.no_grad()
    def reset_parameters(self, generator, **kw):
        super().reset_parameters(generator, **kw)
        self.threshold.zero_()
        self.threshold_updates.zero_()

    def _activate(self, pre, *, training):
        if not training:
            return pre.where(pre > self.threshold, 0.0)
        n = pre.shape[0]
        values, flat = pre.relu().view(-1).topk(self.k * n, sorted=False)
        self._update_threshold(values)
        if self.sparse_codes:
            return SparseCodes.from_flat(values, flat, pre.shape)
        return pre.new_zeros(pre.numel()).scatter_(0, flat, values).view_as(pre)

    def _update_threshold(self, values: Tensor) -> None:
        smallest = values.masked_fill(values <= 0, math.inf).min()
        # A batch with no positive pre-activation leaves the estimate as it
        # is, and is not counted: counted first, it averaged the initial 0 in
        # as a batch's minimum (0.35 for a minimum of 0.70).
        found = smallest.isfinite()
        smallest = torch.where(found, smallest, self.threshold)
        self.threshold_updates.add_(found.to(self.threshold_updates.dtype))
        # max(1 / updates, momentum) on the device: no synchronisation. In the
        # threshold's dtype: the reciprocal of an integer tensor is float32,
        # which rounded a float64 model's running mean (0.39999999702 for
        # the mean 0.4 of three batches). Selected, not multiplied: 1 / 0
        # before the first minimum is inf.
        updates = self.threshold_updates.to(self.threshold.dtype)
        weight = updates.reciprocal().clamp_(min=_THRESHOLD_MOMENTUM)
        self.threshold.lerp_(smallest, torch.where(found, weight, 0.0))


class MatchingPursuitSAE(SAE):
    """Matching-pursuit SAE: ``k`` steps of MP over the decoder atoms, no encoder."""

    uses_encoder = False
    # The atoms' Gram matrix while they are held fixed (see atoms_held).
    _held_gram: Tensor | None = None

    def _gram(self) -> Tensor | None:
        if self.n_components**2 > _MAX_PURSUIT_GRAM_ELEMENTS:
            return None
        return F.linear(self.W_dec, self.W_dec)

    @contextlib.contextmanager
    def atoms_held(self) -> Iterator[None]:
        # One Gram matrix for every chunk of a transform or an evaluation:
        # computed per chunk, a transform of 8,192 rows at 4,096 latents took
        # 2.53 s against 1.74 s (bench_sae.py --sections mp_transform).
        with torch.no_grad():
            self._held_gram = self._gram()
        try:
            yield
        finally:
            self._held_gram = None

    @torch.no_grad()
    def encode(self, x):
        self._check_rows(x)
        gram = self._held_gram if self._held_gram is not None else self._gram()
        values, indices = matching_pursuit(x - self.b_dec, self.W_dec, self.k, gram)
        return SparseCodes.from_topk(values, indices, self.n_components)

    @torch.no_grad()
    def loss_and_grad(self, x, *, train_decoder=True, **_):
        r"""Loss of one batch and its gradients w.r.t. the decoder.

        With the selections ``i_1..i_k`` of a sample held fixed, matching
        pursuit is linear: its codes solve ``L v = c`` with ``A = W_dec[i]``
        (``k x n_features``), ``c = A x_c`` (``x_c = x - b_dec``) and ``L`` unit
        lower-triangular with ``L_ts = <a_t, a_s>`` below the diagonal
        (``v_t = <x_c - sum_{s<t} v_s a_s, a_t>``). Backpropagating
        ``x_hat = v A + b_dec`` with ``g = s (x_hat - x)``, ``s = 2 /
        (n_samples n_features)`` the MSE's scale: ``dv = A g``, ``dc = L^-T
        dv``, ``dL = -dc v^T`` (strictly lower part), hence

        ``dA = v g^T + dc x_c^T - (S + S^T) A`` with ``S = tril(dc v^T, -1)``,

        scattered to the selected rows of ``W_dec``; ``db_dec = sum_b g -
        sum_b A^T dc``. This is the gradient autograd takes through the
        unrolled pursuit (the paper's implementation), in a fixed number of
        batched kernels instead of ``O(k)`` small ones.

        ``dv`` needs no product: ``A g = -s r``, with ``r`` the correlations
        of the selected atoms with the final residual, which the pursuit
        leaves behind. With the Gram matrix (``n_components**2`` up to
        ``2**26``) the rest is one product, see :meth:`_decoder_grads`.
        """
        if self.n_components**2 > _MAX_PURSUIT_GRAM_ELEMENTS:
            return self._loss_and_grad_residual(x, train_decoder)
        n, n_features = x.shape
        n_components = self.n_components
        W = self.W_dec
        # The operands of the product that gives both gradients: rows
        # [-W_dec; x_c] on the right, [M | Q^T 1; Q | 1] on the left.
        rhs = x.new_empty(n_components + n, n_features)
        lhs = x.new_zeros(n_components + n, n_components + 1)
        x_centred = torch.sub(x, self.b_dec, out=rhs[n_components:])
        # The Gram matrix with the row stride of lhs (n_components + 1), so
        # that one flat index i * (n_components + 1) + j addresses the pair of
        # atoms (i, j) in both.
        padded = x.new_empty(n_components, n_components + 1)
        gram = torch.mm(W, W.T, out=padded[:, :n_components])
        correlations = F.linear(x_centred, W)
        values, indices = _pursue(correlations, self.k, gram=gram)
        # Dense codes Z in the place of Q.
        codes = lhs[n_components:, :n_components].scatter_add_(1, indices, values)
        diff = torch.addmm(x_centred, codes, W, beta=-1.0)  # x_hat - x
        if train_decoder:
            torch.neg(W, out=rhs[:n_components])
            self._decoder_grads(
                lhs, rhs, padded, correlations, values, indices, 2.0 / diff.numel()
            )
        # Firing selections per latent (a sample picks an atom at most once).
        active = _selection_counts(indices, n_components, values)
        return StepOutput(_squared_norm(diff), None, None, active)

    def _decoder_grads(self, lhs, rhs, padded, correlations, values, indices, scale):
        r"""Write the decoder's gradients through the Gram matrix.

        The gradient of :meth:`loss_and_grad` never needs ``g``: with ``Z``
        the dense codes, ``Z^T g = s (Z^T Z W_dec - Z^T x_c)``, and ``Z^T Z``
        adds up ``v v^T`` over the selected pairs of atoms like the ``S +
        S^T`` term. So, with ``w = L^-T r`` (``dc = -s w``), per sample
        ``K = v v^T + T + T^T``, ``T = tril(w v^T, -1)``, and ``Q`` the codes
        ``v + w`` scattered to the selected atoms,

        ``dW_dec = s (M W_dec - Q^T x_c)`` with ``M = sum_b P_b^T K_b P_b``,
        ``db_dec = s (1^T Q W_dec - 1^T x_c)``,

        ``P_b`` selecting sample ``b``'s atoms. Both are rows of one product,
        ``-s [M, Q^T 1; Q, 1]^T [-W_dec; x_c]``, instead of the four products
        of the formula above (``g W_dec^T`` for ``dv``, ``Z^T g``, ``DC^T
        x_c`` and the coupling term) and a sum for ``db_dec``: at the paper's
        size, 15 kernels (with the copy of ``-W_dec``) and 0.8 million
        multiply-adds in place of 18 and 1.4 million.

        ``lhs`` holds ``Z`` in the place of ``Q`` on entry; ``rhs`` and
        ``padded`` (the Gram matrix, row stride ``n_components + 1``) are
        complete.
        """
        n_samples, k = indices.shape
        n_components = self.n_components
        r = correlations.gather(1, indices)
        # Flat positions of the selected pairs (i_t, i_s) in padded and lhs.
        pairs = torch.add(
            indices.unsqueeze(1), indices.unsqueeze(2), alpha=n_components + 1
        ).view(-1)
        selected = padded.view(-1).index_select(0, pairs).view(n_samples, k, k)
        # The upper triangle of the symmetric A A^T is L^T; unit diagonal.
        w = torch.linalg.solve_triangular(
            selected, r.unsqueeze(2), upper=True, unitriangular=True
        ).squeeze(2)
        T = torch.tril(w.unsqueeze(2) * values.unsqueeze(1), diagonal=-1)
        K = torch.addcmul(T + T.mT, values.unsqueeze(2), values.unsqueeze(1))
        lhs.view(-1).index_add_(0, pairs, K.view(-1))
        Q = lhs[n_components:, :n_components].scatter_add_(1, indices, w)
        torch.sum(Q, dim=0, out=lhs[:n_components, n_components])
        lhs[n_components:, n_components].fill_(1.0)
        # rhs.T @ lhs is a quarter faster than lhs.T @ rhs at the paper's size
        # (25 against 34 us, one thread); the scaling copies it back into the
        # contiguous layout that the fused AdamW kernel needs (it misreads
        # transposed gradients: torch 2.13 on the CPU).
        grads = torch.mul(
            torch.mm(rhs.T, lhs).T,
            -scale,
            out=lhs.new_empty(n_components + 1, rhs.shape[1]),
        )
        self.W_dec.grad = grads[:n_components]
        self.b_dec.grad = grads[n_components]

    def _loss_and_grad_residual(self, x, train_decoder):
        """:meth:`loss_and_grad` for atoms too many for their Gram matrix."""
        W = self.W_dec
        x_centred = x - self.b_dec
        correlations = F.linear(x_centred, W)
        values, indices = _pursue(correlations, self.k, x=x_centred, atoms=W)
        codes = torch.zeros_like(correlations).scatter_add_(1, indices, values)
        diff = torch.addmm(x_centred, codes, W, beta=-1.0)  # x_hat - x
        if train_decoder:
            scale = 2.0 / diff.numel()
            grad_out = diff * scale
            grad_values = correlations.gather(1, indices).mul_(-scale)  # A g
            atoms = F.embedding(indices, W)  # A, (n, k, n_features)
            selected = torch.bmm(atoms, atoms.transpose(1, 2))
            grad_c = torch.linalg.solve_triangular(
                selected, grad_values.unsqueeze(2), upper=True, unitriangular=True
            ).squeeze(2)
            lower = torch.tril(grad_c.unsqueeze(2) * values.unsqueeze(1), diagonal=-1)
            # sum_b scatter(v g^T + dc x_c^T) = Z^T g + DC^T x_c with dense codes
            # Z and DC, then the (S + S^T) A term row by row into the selected
            # atoms.
            grad_codes = torch.zeros_like(codes).scatter_add_(1, indices, grad_c)
            grad = torch.addmm(codes.T @ grad_out, grad_codes.T, x_centred)
            coupling = torch.bmm(lower + lower.transpose(1, 2), atoms)
            grad.index_add_(
                0, indices.view(-1), coupling.view(-1, self.n_features), alpha=-1.0
            )
            self.W_dec.grad = grad
            self.b_dec.grad = torch.addmv(
                grad_out.sum(dim=0), W.T, grad_codes.sum(dim=0), alpha=-1.0
            )
        active = _selection_counts(indices, self.n_components, values)
        return StepOutput(_squared_norm(diff), None, None, active)


_CLASSES = {
    "relu": ReLUSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "mp": MatchingPursuitSAE,
}
ACTIVATIONS = tuple(_CLASSES)


def build_sae(
    activation: str,
    n_features: int,
    n_components: int,
    *,
    k: int | None = None,
    bandwidth: float = 1e-3,
    threshold_init: float = 1e-3,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> SAE:
    """Return an (uninitialised) SAE with the given activation.

    Call :meth:`SAE.reset_parameters` before use.
    """
    kw = {"k": k, "dtype": dtype, "device": device}
    if activation == "jumprelu":
        kw.update(bandwidth=bandwidth, threshold_init=threshold_init)
    return _CLASSES[activation](n_features, n_components, **kw)
