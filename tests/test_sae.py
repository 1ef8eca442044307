"""SparseAutoencoder: gradients against independent references, training, API."""

import copy
import math
import pickle
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA, DictionaryLearning
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils import check_random_state

from skdict import FISTACoder, OracleDictionary, SparseAutoencoder, _tensor
from skdict._sae import _modules, _training
from skdict._sae._modules import build_sae, matching_pursuit
from skdict.datasets import make_compositional
from skdict.metrics import dictionary_similarity, mcc_score

from .conftest import (
    array_api_dispatch,
    cuda,
    random_dictionary,
    saved_and_loaded,
    sparse_codes,
)

ACTIVATIONS = ("relu", "topk", "batchtopk", "jumprelu", "mp")


def k_for(activation, k):
    """``k`` for the activations that take it, None for the others."""
    return k if activation in ("topk", "batchtopk", "mp") else None


SMALL = {"max_epochs": 3, "batch_size": 32, "random_state": 0}


def toy_problem(rng, n_samples=256, n_components=12, n_features=8, n_active=2):
    D = random_dictionary(rng, n_components, n_features)
    Z = sparse_codes(rng, n_samples, n_components, n_active)
    return Z @ D, D


def module_for(activation, n_features=5, n_components=16, k=2, seed=0, **kw):
    module = build_sae(
        activation, n_features, n_components, k=k, dtype=torch.float64, **kw
    )
    module.reset_parameters(
        torch.Generator().manual_seed(seed),
        bias=0.1 * torch.randn(n_features, dtype=torch.float64),
    )
    if hasattr(module, "b_enc"):
        with torch.no_grad():
            module.b_enc.normal_(0.0, 0.1)
    return module


def batch_loss(module, x, coef):
    out = module.loss_and_grad(x, sparsity_coef=coef)
    penalty = 0.0 if out.penalty is None else float(out.penalty)
    return float(out.squared_error) / x.numel() + coef * penalty / x.shape[0]


# --------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "activation, sparse",
    [(a, False) for a in ACTIVATIONS] + [("topk", True), ("batchtopk", True)],
)
def test_gradients_match_finite_differences(activation, sparse, monkeypatch):
    if sparse:
        monkeypatch.setattr(_modules, "_SPARSE_MIN_COMPONENTS", 1)
    torch.manual_seed(0)
    module = module_for(activation)
    assert module.sparse_codes == sparse
    x = torch.randn(7, 5, dtype=torch.float64)
    coef = 0.05
    batch_loss(module, x, coef)
    params = {
        name: p for name, p in module.named_parameters() if name != "log_threshold"
    }
    analytic = {name: p.grad.clone() for name, p in params.items()}
    # torch's fused AdamW misreads non-contiguous gradients (torch 2.13, CPU).
    assert all(p.grad.is_contiguous() for p in module.parameters())
    eps = 1e-6
    for name, p in params.items():
        numeric = analytic[name].clone()  # entries not probed compare trivially
        for i in torch.randperm(p.numel())[:30].tolist():
            with torch.no_grad():
                p.view(-1)[i] += eps
            up = batch_loss(module, x, coef)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * eps
            down = batch_loss(module, x, coef)
            with torch.no_grad():
                p.view(-1)[i] += eps
            numeric.view(-1)[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(analytic[name], numeric, rtol=1e-5, atol=1e-8)


def leaves(module):
    return {
        name: p.detach().clone().requires_grad_(True)
        for name, p in module.named_parameters()
    }


def test_jumprelu_gradients_match_straight_through_autograd():
    """The threshold gradients are Rajamanoharan et al.'s pseudo-derivatives."""
    torch.manual_seed(1)
    bandwidth = 0.5  # wide, so that many pre-activations fall in the kernel
    module = module_for("jumprelu", bandwidth=bandwidth, threshold_init=0.2)
    x = torch.randn(9, 5, dtype=torch.float64)
    coef = 0.3
    module.loss_and_grad(x, sparsity_coef=coef)

    p = leaves(module)
    theta = p["log_threshold"].exp()
    pre = (x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"]
    kernel = ((pre - theta).abs() <= bandwidth / 2).double()
    assert 0 < kernel.mean() < 1
    above = (pre > theta).double()
    moved = theta - theta.detach()
    # Values H and pre * H; straight-through derivatives in theta only.
    step = above - kernel / bandwidth * moved
    jump = pre * above - theta.detach() * kernel / bandwidth * moved
    x_hat = jump @ p["W_dec"] + p["b_dec"]
    loss = ((x_hat - x) ** 2).mean() + coef * step.sum(dim=1).mean()
    loss.backward()
    for name, param in module.named_parameters():
        torch.testing.assert_close(param.grad, p[name].grad, msg=name)


def unrolled_pursuit(x, atoms, k):
    """Matching pursuit as the paper writes it: residual, masked argmax, scatter."""
    residual = x
    codes = torch.zeros(x.shape[0], atoms.shape[0], dtype=x.dtype)
    picked = torch.zeros_like(codes, dtype=torch.bool)
    for _ in range(k):
        corr = residual @ atoms.T
        score = corr.detach().abs().masked_fill(picked, -1.0)
        index = score.argmax(dim=1, keepdim=True)
        picked = picked.scatter(1, index, True)
        value = corr.gather(1, index)
        codes = codes + torch.zeros_like(codes).scatter(1, index, value)
        residual = residual - value * atoms[index.squeeze(1)]
    return codes


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize(
    "n_samples, n_components, k",
    # The last case picks every atom.
    [(8, 10, 4), (1, 10, 4), (9, 4, 4)],
)
def test_matching_pursuit_gradient_matches_unrolled_autograd(
    gram, n_samples, n_components, k, monkeypatch
):
    """The backward pass equals autograd through the unrolled pursuit loop."""
    if not gram:
        monkeypatch.setattr(_modules, "_MAX_PURSUIT_GRAM_ELEMENTS", 0)
    torch.manual_seed(2)
    module = module_for("mp", n_features=6, n_components=n_components, k=k)
    x = torch.randn(n_samples, 6, dtype=torch.float64)
    out = module.loss_and_grad(x)

    p = leaves(module)
    codes = unrolled_pursuit(x - p["b_dec"], p["W_dec"], k)
    x_hat = codes @ p["W_dec"] + p["b_dec"]
    loss = ((x_hat - x) ** 2).sum()
    loss.backward()
    for name, param in module.named_parameters():
        torch.testing.assert_close(param.grad, p[name].grad / x.numel(), msg=name)
    torch.testing.assert_close(out.squared_error, loss.detach())
    counts = torch.bincount(module.encode(x).columns, minlength=n_components)
    assert torch.equal(out.active, counts)
    assert counts.max() <= n_samples  # no atom twice in a sample
    if k == n_components:  # then every sample picks every atom
        assert bool((counts == n_samples).all())


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("activation", ["topk", "batchtopk"])
def test_auxk_gradient_matches_autograd(activation, sparse, monkeypatch):
    """Gao et al.'s auxiliary loss: dead latents fit the (fixed) residual."""
    if sparse:
        monkeypatch.setattr(_modules, "_SPARSE_MIN_COMPONENTS", 1)
    torch.manual_seed(3)
    n, n_components, k, aux_k, aux_coef = 6, 16, 2, 3, 0.7
    module = module_for(activation, n_components=n_components, k=k)
    x = torch.randn(n, 5, dtype=torch.float64)
    dead = torch.zeros(n_components, dtype=torch.bool)
    dead[[1, 4, 5, 9, 12]] = True
    out = module.loss_and_grad(x, dead=dead, aux_k=aux_k, aux_coef=aux_coef)

    p = leaves(module)
    pre = (x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"]
    if activation == "topk":
        values, index = pre.topk(k, dim=1)
        codes = torch.zeros_like(pre).scatter(1, index, values.relu())
    else:
        values, index = pre.relu().view(-1).topk(k * n)
        codes = torch.zeros(pre.numel(), dtype=pre.dtype).scatter(0, index, values)
        codes = codes.view_as(pre)
    x_hat = codes @ p["W_dec"] + p["b_dec"]
    residual = (x - x_hat).detach()
    aux_values, aux_index = pre.masked_fill(~dead, -math.inf).topk(aux_k, dim=1)
    aux_codes = torch.zeros_like(pre).scatter(1, aux_index, aux_values.relu())
    assert set(aux_index.unique().tolist()) <= {1, 4, 5, 9, 12}
    aux = ((aux_codes @ p["W_dec"] - residual) ** 2).mean()
    (((x_hat - x) ** 2).mean() + aux_coef * aux).backward()
    for name, param in module.named_parameters():
        torch.testing.assert_close(param.grad, p[name].grad, msg=name)
    torch.testing.assert_close(out.aux_squared_error / x.numel(), aux.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_adamw_step_is_bit_identical(dtype):
    def run(direct):
        torch.manual_seed(0)
        module = module_for("jumprelu").to(dtype)
        optimizer = _training.make_optimizer(
            module, lr=1e-2, weight_decay=0.01, train_decoder=True
        )
        step = _training.AdamWStep(optimizer)
        assert step.direct
        step.direct = direct
        x = torch.randn(16, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
        for _ in range(5):
            module.loss_and_grad(x, sparsity_coef=0.1)
            step()
        return module, optimizer

    (direct, opt_direct), (plain, opt_plain) = run(True), run(False)
    for p, q in zip(direct.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(direct.parameters(), plain.parameters(), strict=True):
        for key, value in opt_direct.state[p].items():
            assert torch.equal(value, opt_plain.state[q][key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matching_pursuit_selects_as_float_argmax(dtype):
    """Both forms select as the unrolled loop, ties and zero rows included."""
    rng = np.random.default_rng(0)
    D = torch.as_tensor(random_dictionary(rng, 20, 6), dtype=dtype)
    D[7] = D[3]  # a duplicated atom ties with the original: the first wins
    D[11] = -D[5]  # and so does an opposite one
    x = torch.as_tensor(rng.standard_normal((6, 6)), dtype=dtype)
    x[1] = 0.0  # all correlations zero: atoms 0, 1, 2, 3 in turn, codes 0
    x[2] = D[3]  # exact ties from the first step
    x[3] = -2.0 * D[5]
    expected = unrolled_pursuit(x, D, 4)
    for gram in (D @ D.T, None):
        values, indices = matching_pursuit(x, D, 4, gram)
        codes = torch.zeros_like(expected).scatter_add_(1, indices, values)
        torch.testing.assert_close(codes, expected)
        assert indices[1].tolist() == [0, 1, 2, 3]
        assert indices[2, 0] == 3 and indices[3, 0] == 5
        assert values[1].eq(0).all()
        # The residual is orthogonal to the last selected atom.
        residual = x - torch.einsum("bk,bkf->bf", values, D[indices])
        last = (residual * D[indices[:, -1]]).sum(1)
        torch.testing.assert_close(last, torch.zeros_like(last))


def numpy_masked_pursuit(x, atoms, k):
    """Independent reference: k steps, each over the atoms not yet picked."""
    values = np.zeros((x.shape[0], k))
    indices = np.zeros((x.shape[0], k), dtype=np.int64)
    for b, row in enumerate(x):
        residual = row.copy()
        free = np.ones(atoms.shape[0], dtype=bool)
        for t in range(k):
            corr = atoms @ residual
            i = int(np.argmax(np.where(free, np.abs(corr), -1.0)))
            values[b, t], indices[b, t] = corr[i], i
            free[i] = False
            residual -= corr[i] * atoms[i]
    return values, indices


def test_matching_pursuit_picks_k_distinct_atoms():
    # Coherent atoms (12 in 6 dimensions): plain matching pursuit picks an
    # atom again on a fifth of these rows; the paper's pursuit never does.
    rng = np.random.default_rng(0)
    D = random_dictionary(rng, 12, 6)
    x = rng.standard_normal((500, 6))
    expected_values, expected_indices = numpy_masked_pursuit(x, D, 4)
    D_t, x_t = torch.as_tensor(D), torch.as_tensor(x)
    for gram in (D_t @ D_t.T, None):
        values, indices = matching_pursuit(x_t, D_t, 4, gram)
        np.testing.assert_array_equal(indices.numpy(), expected_indices)
        np.testing.assert_allclose(values.numpy(), expected_values, atol=1e-12)
    assert all(len(set(row)) == 4 for row in expected_indices.tolist())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_matching_pursuit_half_precision_first_selection(dtype):
    x = torch.randn(50, 6).to(dtype)
    D = torch.as_tensor(random_dictionary(np.random.default_rng(1), 30, 6), dtype=dtype)
    values, indices = matching_pursuit(x, D, 1)
    corr = x @ D.T
    assert torch.equal(indices[:, 0], corr.abs().argmax(dim=1))
    assert torch.equal(values[:, 0], corr.gather(1, indices).view(-1))


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_training_each_activation(activation, rng):
    X, _ = toy_problem(rng)
    k = 3
    sae = SparseAutoencoder(
        16,
        activation=activation,
        k=k_for(activation, k),
        max_epochs=15,
        lr=3e-3,
        random_state=0,
    )
    sae.fit(X)
    codes = sae.transform(X)
    assert codes.shape == (X.shape[0], 16)
    assert sae.components_.shape == (16, X.shape[1])
    assert sae.intercept_.shape == (X.shape[1],)
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, 1e-6)
    nonzero = (codes != 0).sum(axis=1)
    if activation == "topk":
        assert (nonzero == k).all()
    elif activation == "mp":
        assert (nonzero <= k).all() and nonzero.mean() > k - 0.5
    elif activation == "batchtopk":
        # Exactly k per sample on average in training; the learned threshold
        # gives about as many at inference.
        assert [h["l0"] for h in sae.history_] == [pytest.approx(k)] * 15
        assert 0.5 * k < nonzero.mean() < 2 * k
    losses = [h["loss"] for h in sae.history_]
    assert losses[-1] < 0.8 * losses[0]
    assert len(sae.history_) == sae.n_iter_ == 15
    assert set(sae.history_[0]) == {"epoch", "loss", "mse", "l0", "dead_fraction"}
    # Reconstruction is the decoder applied to the codes.
    np.testing.assert_allclose(
        sae.inverse_transform(codes), codes @ sae.components_ + sae.intercept_
    )
    assert sae.score(X) == pytest.approx(
        -np.mean((X - sae.inverse_transform(codes)) ** 2)
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_atoms_stay_unit_norm_during_training(activation, rng):
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(
        8, activation=activation, k=k_for(activation, 2), lr=1e-2, random_state=0
    )
    for _ in range(4):
        sae.partial_fit(X)
        norms = np.linalg.norm(sae.components_, axis=1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    assert sae.n_iter_ == 4


def test_topk_recovers_an_easy_dictionary():
    # No superposition: 8 latents in 16 dimensions, 2 active per sample.
    data = make_compositional(
        n_latents=8, n_active=2, n_features=16, n_samples=6000, random_state=0
    )
    sae = SparseAutoencoder(
        8,
        activation="topk",
        k=2,
        lr=1e-2,
        max_epochs=25,
        batch_size=64,
        random_state=0,
    ).fit(data.X_train)
    assert dictionary_similarity(data.dictionary, sae) >= 0.95


def _reference_codes(sae, X):
    """Inference codes written out in NumPy from the fitted weights."""
    m = sae.module_
    W_dec = m.W_dec.detach().double().numpy()
    b_dec = m.b_dec.detach().double().numpy()
    x = X - b_dec
    if sae.activation == "mp":  # k distinct atoms, each its residual correlation
        codes, residual = np.zeros((len(X), W_dec.shape[0])), x.copy()
        for _ in range(sae.k):
            corr = residual @ W_dec.T
            corr[codes != 0] = 0.0
            pick = np.abs(corr).argmax(axis=1)
            value = corr[np.arange(len(X)), pick]
            codes[np.arange(len(X)), pick] = value
            residual -= value[:, None] * W_dec[pick]
        return codes
    pre = x @ m.W_enc.detach().double().numpy().T + m.b_enc.detach().double().numpy()
    if sae.activation == "relu":
        return np.maximum(pre, 0.0)
    if sae.activation == "topk":
        kth = np.sort(pre, axis=1)[:, -sae.k][:, None]
        return np.where(pre >= kth, np.maximum(pre, 0.0), 0.0)
    threshold = m.threshold.detach().double().numpy()  # jumprelu, batchtopk
    return np.where(pre > threshold, pre, 0.0)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_transform_is_the_encoder_formula(rng, activation):
    # Training computes its own pre-activations; inference must agree with the
    # formulas, e.g. subtract the decoder bias before encoding.
    X, _ = toy_problem(rng, n_samples=200)
    X = X + 0.5  # a non-zero decoder bias to subtract
    k = 3 if activation in ("topk", "batchtopk", "mp") else None
    sae = SparseAutoencoder(
        12, activation=activation, k=k, bias_init="mean", lr=1e-2, **SMALL
    ).fit(X)
    assert np.abs(sae.module_.b_dec.detach().numpy()).max() > 0.1
    expected = _reference_codes(sae, X)
    assert (expected != 0).any()
    np.testing.assert_allclose(sae.transform(X), expected, atol=1e-10)


def test_relu_with_frozen_oracle_decoder_codes_the_truth(rng):
    """The paper's "oracle dictionary + SAE encoder" condition, array provider."""
    D = random_dictionary(rng, 6, 10)
    Z = sparse_codes(rng, 1024, 6, 2)
    X = Z @ D
    sae = SparseAutoencoder(
        decoder=D, freeze_decoder=True, lr=1e-2, max_epochs=40, random_state=0
    ).fit(X)
    assert sae.components_.dtype == D.dtype
    assert np.array_equal(sae.components_, D)
    assert np.array_equal(sae.intercept_, np.zeros(10))
    assert sae.module_.W_dec.grad is None
    assert sae.history_[-1]["mse"] < 0.05 * sae.history_[0]["mse"]
    assert mcc_score(Z, sae.transform(X)) > 0.95


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_oracle_dictionary_with_trained_encoder(activation):
    """The paper's condition: SparseAutoencoder(decoder=OracleDictionary(D), ...)."""
    data = make_compositional(n_latents=12, n_active=2, n_samples=600, random_state=0)
    sae = SparseAutoencoder(
        activation=activation,
        k=k_for(activation, 2),
        decoder=OracleDictionary(data.dictionary),
        freeze_decoder=True,
        lr=1e-2,
        max_epochs=10,
        random_state=0,
    ).fit(data.X_train)
    assert isinstance(sae.decoder_, OracleDictionary)
    assert np.array_equal(sae.components_, data.dictionary)
    assert np.array_equal(sae.intercept_, np.zeros(data.dictionary.shape[1]))
    assert sae.history_[-1]["loss"] < sae.history_[0]["loss"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_freeze_decoder_from_frozen_estimator(activation, rng):
    X, D = toy_problem(rng)
    coder = FISTACoder(dictionary=D, alpha=0.1, positive=True).fit(X)
    sae = SparseAutoencoder(
        activation=activation,
        k=k_for(activation, 2),
        decoder=FrozenEstimator(coder),
        freeze_decoder=True,
        **SMALL,
    ).fit(X)
    assert sae.decoder_ is not None
    assert np.array_equal(sae.components_, coder.components_)
    assert np.array_equal(sae.intercept_, coder.intercept_)
    # An optimiser over the module's parameters leaves the decoder alone too.
    frozen = {name: p.requires_grad for name, p in sae.module_.named_parameters()}
    assert frozen.pop("W_dec") is frozen.pop("b_dec") is False
    assert all(frozen.values())


def test_decoder_initialises_atoms_and_encoder(rng):
    X, D = toy_problem(rng)
    scaled = 3.0 * D
    sae = SparseAutoencoder(decoder=scaled, max_epochs=1, lr=1e-12, random_state=0)
    sae.fit(X)
    assert sae.module_.W_dec.shape == D.shape
    # Unit-norm atoms, the encoder their transpose, the bias the data mean.
    np.testing.assert_allclose(sae.components_, D, atol=1e-9)
    np.testing.assert_allclose(sae.module_.W_enc.detach().numpy(), D, atol=1e-9)
    np.testing.assert_allclose(sae.intercept_, X.mean(axis=0), atol=1e-9)
    zero = clone(sae).set_params(bias_init="zero").fit(X)
    np.testing.assert_allclose(zero.intercept_, 0.0, atol=1e-9)


def test_decoder_estimator_bias_is_its_offset_or_bias_init(rng):
    X, _ = toy_problem(rng)
    X = X + 5.0
    params = {"max_epochs": 1, "lr": 1e-12, "random_state": 0}
    pca = SparseAutoencoder(decoder=PCA(n_components=4), **params).fit(X)
    np.testing.assert_allclose(pca.intercept_, pca.decoder_.mean_, atol=1e-9)
    # An estimator without an offset gives no bias: bias_init decides.
    learner = DictionaryLearning(n_components=4, max_iter=5, random_state=0)
    mean = SparseAutoencoder(decoder=learner, **params).fit(X)
    np.testing.assert_allclose(mean.intercept_, X.mean(axis=0), atol=1e-9)
    zero = SparseAutoencoder(decoder=learner, bias_init="zero", **params).fit(X)
    np.testing.assert_allclose(zero.intercept_, 0.0, atol=1e-9)


def test_fit_equals_partial_fit_epochs(rng):
    X, _ = toy_problem(rng)
    params = {"activation": "topk", "k": 2, "batch_size": 50, "random_state": 3}
    params |= {"aux_k": 3, "dead_after": 100}
    full = SparseAutoencoder(12, max_epochs=3, **params).fit(X)
    streamed = SparseAutoencoder(12, **params)
    for _ in range(3):
        streamed.partial_fit(X)
    np.testing.assert_array_equal(full.components_, streamed.components_)
    np.testing.assert_array_equal(full.transform(X), streamed.transform(X))
    assert [h["epoch"] for h in streamed.history_] == [1, 2, 3]
    # The optimiser's moments carry over between calls.
    state = streamed._optimizer_state["state"]
    assert all(int(s["step"]) == 3 * math.ceil(len(X) / 50) for s in state.values())


def test_partial_fit_applies_a_changed_lr_and_weight_decay(rng):
    X, _ = toy_problem(rng, n_samples=64)
    params = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "random_state": 0}
    first = SparseAutoencoder(8, **params).partial_fit(X)

    def encoder_step(lr):
        # One AdamW step from the same state: without weight decay the
        # encoder's update is the learning rate times the same direction.
        resumed = pickle.loads(pickle.dumps(first)).set_params(lr=lr)
        resumed.partial_fit(X)
        return resumed, resumed.module_.W_enc - first.module_.W_enc

    _, kept = encoder_step(1e-3)
    scheduled, faster = encoder_step(4e-3)
    torch.testing.assert_close(faster, 4 * kept)
    assert scheduled._optimizer_state["param_groups"][0]["lr"] == 4e-3
    decayed = pickle.loads(pickle.dumps(first)).set_params(weight_decay=0.5)
    decayed.partial_fit(X)
    assert decayed._optimizer_state["param_groups"][0]["weight_decay"] == 0.5
    assert not torch.equal(decayed.module_.W_enc, first.module_.W_enc + kept)


@pytest.mark.parametrize(
    "model, change",
    [
        ({}, {"n_components": 3}),
        ({}, {"activation": "topk", "k": 2}),
        ({"activation": "topk", "k": 2}, {"k": 3}),
        ({"activation": "jumprelu"}, {"bandwidth": 0.5}),
        ({}, {"freeze_decoder": True}),
    ],
)
def test_partial_fit_refuses_a_changed_model(model, change, rng):
    X, D = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(decoder=D, random_state=0, **model).partial_fit(X)
    name = next(iter(change))
    changed = pickle.loads(pickle.dumps(sae)).set_params(**change)
    with pytest.raises(ValueError, match=f"fitted with {name}=.*needs a new model"):
        changed.partial_fit(X)
    np.testing.assert_array_equal(changed.components_, sae.components_)
    assert changed.n_iter_ == sae.n_iter_


def test_partial_fit_refuses_a_new_frozen_decoder(rng):
    X, D = toy_problem(rng, n_samples=64)
    frozen = SparseAutoencoder(decoder=D, freeze_decoder=True, random_state=0)
    frozen.partial_fit(X)
    with pytest.raises(ValueError, match=r"frozen decoder .* new model"):
        frozen.set_params(decoder=D[::-1].copy()).partial_fit(X)
    assert frozen.n_iter_ == 1
    # An equal copy is the same decoder; a provider changed in place is not.
    assert frozen.set_params(decoder=D.copy()).partial_fit(X).n_iter_ == 2
    oracle = SparseAutoencoder(
        decoder=OracleDictionary(D), freeze_decoder=True, random_state=0
    ).partial_fit(X)
    with pytest.raises(ValueError, match=r"frozen decoder .* new model"):
        oracle.set_params(decoder__dictionary=D[::-1].copy()).partial_fit(X)
    # Saved and loaded, a frozen decoder is still the model's own (joblib
    # loads the array parameter and the record of it as two equal arrays).
    for decoder in (D, torch.from_numpy(D), OracleDictionary(D)):
        sae = SparseAutoencoder(
            decoder=decoder, freeze_decoder=True, random_state=0
        ).partial_fit(X)
        for copied in saved_and_loaded(sae):
            assert copied.partial_fit(X).n_iter_ == 2
    # A trained decoder was only the starting point: a new one is ignored.
    trained = SparseAutoencoder(decoder=D, random_state=0).partial_fit(X)
    trained.set_params(decoder=D.copy()).partial_fit(X)
    assert trained.n_iter_ == 2


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sparsity_coef": -5.0}, "'sparsity_coef' parameter"),
        ({"batch_size": True}, "'batch_size' .* a bool"),
        ({"batch_size": 0}, "'batch_size' parameter"),
    ],
)
def test_partial_fit_checks_changed_parameters(change, match, rng):
    # scikit-learn checks partial_fit's parameters on the first call only.
    X, _ = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(8, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match=match):
        sae.set_params(**change).partial_fit(X)
    assert sae.n_iter_ == 1


def test_partial_fit_accepts_changes_the_model_ignores(rng):
    X, D = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(decoder=D, random_state=0).partial_fit(X)
    # ReLU ignores k and bandwidth; n_components names the fitted width.
    sae.set_params(k=3, bandwidth=0.5, n_components=D.shape[0]).partial_fit(X)
    assert sae.n_iter_ == 2


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "mp"])
def test_aux_k_for_an_activation_without_it_warns(activation, rng):
    X, _ = toy_problem(rng, n_samples=64)
    k = 2 if activation == "mp" else None
    sae = SparseAutoencoder(8, activation=activation, k=k, aux_k=3, max_epochs=1)
    with pytest.warns(UserWarning, match="aux_k=3 is used only") as caught:
        sae.fit(X)
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SparseAutoencoder(8, activation="topk", k=2, aux_k=3, max_epochs=1).fit(X)


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_k_for_an_activation_without_it_warns(activation, rng):
    # SparseAutoencoder(50, k=5) with the activation left at "relu" trained a
    # dense ReLU SAE; the k was silently dropped.
    X, _ = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(8, activation=activation, k=2, max_epochs=1)
    with pytest.warns(UserWarning, match="k=2 is used only .* activation='topk'"):
        sae.fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for activation in ("topk", "batchtopk", "mp"):
            SparseAutoencoder(8, activation=activation, k=2, max_epochs=1).fit(X)


def test_partial_fit_checks_aux_k_against_the_width(rng):
    X, _ = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(8, activation="topk", k=2, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="aux_k=50 must be at most n_components=8"):
        sae.set_params(aux_k=50).partial_fit(X)
    assert sae.n_iter_ == 1


def test_aux_k_may_reach_but_not_pass_n_components(rng):
    # The auxiliary loss reconstructs from the aux_k most active dead latents:
    # all n_components of them at most; one more is refused up front.
    X, _ = toy_problem(rng, n_samples=20)
    params = {"activation": "topk", "k": 2, **SMALL}
    SparseAutoencoder(8, aux_k=8, **params).fit(X)
    with pytest.raises(ValueError, match="aux_k=9 must be at most n_components=8"):
        SparseAutoencoder(8, aux_k=9, **params).fit(X)


def test_partial_fit_keeps_the_fitted_dtype(rng):
    X, _ = toy_problem(rng, n_samples=64)
    sae = SparseAutoencoder(8, random_state=0).partial_fit(X)
    sae.partial_fit(X.astype(np.float32))
    assert sae.components_.dtype == sae.intercept_.dtype == np.float64
    np.testing.assert_array_equal(sae.components_, sae.module_.W_dec.detach().numpy())


def test_streamed_batches_count_dead_latents_over_dead_after(rng):
    X = rng.standard_normal((2048, 16))
    params = {"activation": "topk", "k": 4, "aux_k": 64, "random_state": 0}
    streamed = SparseAutoencoder(512, **params)
    for start in range(0, len(X), 32):
        streamed.partial_fit(X[start : start + 32])
    one_epoch = SparseAutoencoder(512, max_epochs=1, batch_size=32, **params).fit(X)
    # Without a window, a latent missing one 32-sample batch would be dead
    # (most of them); over 10 * 512 / 4 samples as few are as over the epoch.
    dead = streamed.history_[-1]["dead_fraction"]
    assert dead < 3 * one_epoch.history_[-1]["dead_fraction"] + 0.05
    assert dead < 0.2
    # An explicit window of one batch brings the per-batch count back.
    short = clone(streamed).set_params(dead_after=1)
    for start in range(0, len(X), 32):
        short.partial_fit(X[start : start + 32])
    assert short.history_[-1]["dead_fraction"] > 0.5


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_aux_k_is_ignored_where_documented(activation, rng):
    X, _ = toy_problem(rng, n_samples=32)
    with pytest.warns(UserWarning, match="aux_k=20 is used only"):
        with_aux = SparseAutoencoder(4, activation=activation, aux_k=20, **SMALL)
        with_aux.fit(X)
    plain = SparseAutoencoder(4, activation=activation, **SMALL).fit(X)
    np.testing.assert_array_equal(with_aux.components_, plain.components_)


def test_row_subset_reads_as_the_rows_it_names():
    # The training and validation parts of validation_fraction: the values
    # of X[index] in its order, for what training and evaluation read.
    from skdict._sae._training import RowSubset

    X = torch.randn(50, 3, dtype=torch.float64)
    index = torch.randperm(50)[:30]
    rows = RowSubset(X, index)
    assert rows.shape == (30, 3) and rows.dtype == X.dtype
    torch.testing.assert_close(rows[4:20], X[index[4:20]], rtol=0, atol=0)
    picked = torch.tensor([3, 0, 29])
    torch.testing.assert_close(
        rows.index_select(0, picked), X[index[picked]], rtol=0, atol=0
    )
    torch.testing.assert_close(rows.mean(dim=0), X[index].mean(dim=0))


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/status"
)
def test_validation_fraction_does_not_copy_the_data():
    # Training and validation rows were copies of X for the whole fit: the
    # peak above a 98 MiB input was 1.8x the input, now about 0.9x. Measured
    # in a fresh process, whose peak the others' tests do not touch.
    script = """
import numpy as np, torch
torch.set_num_threads(1)
from skdict import SparseAutoencoder
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
X = np.random.default_rng(0).standard_normal((100_000, 256), dtype=np.float32)
SparseAutoencoder(8, max_epochs=1, random_state=0).fit(X[:500])
start = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
SparseAutoencoder(
    256, activation="topk", k=8, max_epochs=1, batch_size=4096,
    validation_fraction=0.1, n_iter_no_change=1, random_state=0,
).fit(X)
print((status("VmHWM") - start) / X.nbytes)
"""
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        check=True,
        capture_output=True,
        text=True,
    )
    assert float(result.stdout) < 1.3


@pytest.mark.filterwarnings("ignore:SparseAutoencoder stopped at max_epochs")
def test_decoder_estimator_never_sees_the_validation_rows(rng):
    D = random_dictionary(rng, 12, 8)
    Z = sparse_codes(rng, 40, 12, 3)
    X = Z @ D
    params = {"validation_fraction": 0.25, **SMALL}
    sae = SparseAutoencoder(decoder=PCA(n_components=3), **params).fit(X)
    assert sae.decoder_.n_samples_ == 30
    # Codes as targets stay aligned with their rows: the oracle's least
    # squares on the training rows recovers the dictionary exactly.
    oracle = SparseAutoencoder(
        decoder=OracleDictionary(), freeze_decoder=True, **params
    )
    np.testing.assert_allclose(oracle.fit(X, Z).components_, D, atol=1e-8)
    assert oracle.decoder_.n_features_in_ == X.shape[1]
    # Targets in other layouts are cut to the same rows; mismatched ones are
    # refused, not silently truncated.
    # (Torch's compressed layouts have no row selection: CSR raised inside
    # torch.)
    tensor = torch.as_tensor(Z)
    sparse = [tensor.to_sparse(), tensor.to_sparse_csr(), tensor.to_sparse_csc()]
    for layout in (sp.coo_matrix(Z), *sparse):
        fitted = clone(oracle).fit(X, layout)
        np.testing.assert_allclose(fitted.components_, D, atol=1e-8)
    with pytest.raises(ValueError, match="y, passed to the decoder estimator"):
        clone(oracle).fit(X, np.vstack([Z, Z[:7]]))
    # Without a decoder estimator, y is not looked at.
    SparseAutoencoder(4, **params).fit(X, sp.coo_matrix(Z))


def test_batchtopk_threshold_lives_on_the_module_device():
    module = build_sae("batchtopk", 4, 8, k=2, device=torch.device("meta"))
    assert module.threshold.device.type == "meta"


def test_batchtopk_threshold_is_a_running_then_moving_average():
    # The inference threshold averages each batch's smallest kept value with
    # weight max(1 / b, 0.01) at batch b: a plain mean for the first 100
    # batches, then an exponential average that keeps following drift.
    module = build_sae("batchtopk", 4, 8, k=2, dtype=torch.float64)
    module.reset_parameters(torch.Generator().manual_seed(0))
    expected = 0.0
    for b in range(1, 301):
        smallest = float(b % 7 + 1)
        values = torch.tensor([0.0, smallest, smallest + 1.0], dtype=torch.float64)
        module._update_threshold(values)
        expected += max(1.0 / b, 0.01) * (smallest - expected)
    # The weight is the reciprocal of the batch count in the model's dtype
    # (it was float32 in a float64 model: off by 1e-8 relative).
    assert float(module.threshold) == pytest.approx(expected, rel=1e-13)
    assert abs(expected - 4.0) > 0.02  # a plain mean of 300 batches gives 4.01


def test_batchtopk_threshold_ignores_zeros():
    # The smallest *positive* kept value: zeros kept in a batch with fewer
    # than k positive values would pull the threshold to 0, and the SAE would
    # then fire every positive latent at inference.
    module = build_sae("batchtopk", 4, 8, k=2, dtype=torch.float64)
    module.reset_parameters(torch.Generator().manual_seed(0))
    module._update_threshold(torch.tensor([0.0, 0.0, 2.0, 3.0], dtype=torch.float64))
    assert float(module.threshold) == 2.0
    module._update_threshold(torch.zeros(4, dtype=torch.float64))
    assert float(module.threshold) == 2.0
    # Nor is such a batch counted: the next minimum is averaged with 2.0
    # alone, and one coming first does not average the initial 0 in.
    module._update_threshold(torch.tensor([0.0, 0.0, 4.0, 5.0], dtype=torch.float64))
    assert float(module.threshold) == 3.0
    module.reset_parameters(torch.Generator().manual_seed(0))
    module._update_threshold(torch.zeros(4, dtype=torch.float64))
    module._update_threshold(torch.tensor([0.0, 0.0, 2.0, 3.0], dtype=torch.float64))
    assert float(module.threshold) == 2.0


def test_batchtopk_threshold_of_a_fit_skips_batches_with_nothing_kept():
    # One row per batch, k=1, identity atoms: the row without a positive
    # pre-activation, drawn first at 3 seeds of 4, halved the threshold (0.35
    # for the other row's 0.70), and inference then fired on 0.65.
    X = np.array([[-1.0, -1.0, -1.0], [0.5, 0.6, 0.7]])
    for seed in range(4):
        sae = SparseAutoencoder(
            activation="batchtopk",
            k=1,
            decoder=np.eye(3),
            bias_init="zero",
            batch_size=1,
            max_epochs=1,
            lr=1e-12,
            random_state=seed,
        ).fit(X)
        assert float(sae.module_.threshold) == pytest.approx(0.7)
        assert not sae.transform(np.array([[0.5, 0.6, 0.65]])).any()


@pytest.mark.parametrize("n_components", [8, 256])  # dense and sparse codes
def test_batchtopk_training_keeps_no_negative_pre_activation(n_components):
    # The k * n largest *rectified* pre-activations: where fewer are
    # positive, the rest are 0, not the least negative ones.
    module = build_sae("batchtopk", 4, n_components, k=2, dtype=torch.float64)
    module.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        module.b_enc.fill_(-10.0)  # every pre-activation negative
    x = torch.randn(
        6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    out = module.loss_and_grad(x)
    assert out.active.sum() == 0
    assert float(out.squared_error) == pytest.approx(float((x**2).sum()), rel=1e-12)


@pytest.mark.filterwarnings("ignore:SparseAutoencoder stopped at max_epochs")
def test_jumprelu_validation_loss_counts_the_l0_penalty(rng):
    # JumpReLU's penalty is ||z||_0: the validation loss, which early stopping
    # reads, adds sparsity_coef times the mean number of firing latents, not
    # their L1 norm. Identical rows make every validation row the one coded
    # below; lr=1e-12 keeps the starting codes.
    row = rng.standard_normal((1, 5))
    sae = SparseAutoencoder(
        8,
        activation="jumprelu",
        sparsity_coef=0.5,
        max_epochs=1,
        lr=1e-12,
        bias_init="zero",
        validation_fraction=0.25,
        random_state=0,
    ).fit(np.repeat(row, 8, axis=0))
    codes = sae.transform(row)
    assert 0 < np.count_nonzero(codes) != np.abs(codes).sum()
    last = sae.history_[-1]
    assert last["val_loss"] - last["val_mse"] == pytest.approx(
        0.5 * np.count_nonzero(codes), rel=1e-9
    )


def test_unfrozen_decoder_from_a_provider_starts_at_its_offset(rng):
    # A provider with an offset (PCA's mean_) gives b_dec its start even when
    # the decoder trains on: the provider contract, frozen or not.
    X = rng.normal(size=(64, 4)) + 100.0
    pca = PCA(3).fit(X)
    sae = SparseAutoencoder(
        decoder=FrozenEstimator(pca),
        activation="topk",
        k=1,
        max_epochs=1,
        lr=1e-12,
        bias_init="zero",
        random_state=0,
    ).fit(X)
    np.testing.assert_allclose(sae.intercept_, pca.mean_, atol=1e-6)


def test_batchtopk_early_stopping_restores_the_threshold_weighting(rng):
    # The running threshold weighs batch b by max(1 / b, momentum); restoring
    # the best epoch's weights must restore its count of batches too, or a
    # later partial_fit weighs its batches as if the discarded epochs counted.
    X, _ = toy_problem(rng, n_samples=200)
    sae = SparseAutoencoder(
        8,
        activation="batchtopk",
        k=2,
        lr=5e-2,
        max_epochs=30,
        batch_size=32,
        validation_fraction=0.2,
        n_iter_no_change=2,
        random_state=0,
    ).fit(X)
    val_losses = [h["val_loss"] for h in sae.history_]
    best_epoch = int(np.argmin(val_losses))
    assert best_epoch < len(val_losses) - 1  # the last epochs were discarded
    batches_per_epoch = -(-160 // 32)
    assert int(sae.module_.threshold_updates) == batches_per_epoch * (best_epoch + 1)


def test_matching_pursuit_on_a_frozen_decoder_runs_one_epoch(rng):
    # Nothing is trainable: every epoch repeated the first (500 of them,
    # 13 s at the paper's size), and with validation data the fit warned
    # that early stopping never came.
    X, D = toy_problem(rng)
    params = {"activation": "mp", "k": 2, "decoder": D, "freeze_decoder": True}
    one = SparseAutoencoder(**params, max_epochs=1, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        many = SparseAutoencoder(
            **params, max_epochs=50, validation_fraction=0.2, random_state=0
        ).fit(X)
    assert many.n_iter_ == len(many.history_) == 1
    np.testing.assert_array_equal(many.transform(X), one.transform(X))
    # A streamed step is one epoch anyway.
    assert SparseAutoencoder(**params).partial_fit(X).n_iter_ == 1


def test_reproducible_with_random_state(rng):
    X, _ = toy_problem(rng)
    a = SparseAutoencoder(10, activation="jumprelu", **SMALL).fit(X)
    b = SparseAutoencoder(10, activation="jumprelu", **SMALL).fit(X)
    for (name, p), q in zip(
        a.module_.named_parameters(), b.module_.parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    c = SparseAutoencoder(10, activation="jumprelu", **{**SMALL, "random_state": 1})
    assert not np.array_equal(a.components_, c.fit(X).components_)


def test_auxk_revives_dead_latents(rng):
    # 64 directions, one per sample, around an offset, and a top-1 SAE of 64
    # latents: without the auxiliary loss about 40 % of them die and the
    # directions they would have taken stay unexplained. (With fewer true
    # directions than live latents there is nothing to revive them for.)
    D = random_dictionary(rng, 64, 32)
    X = sparse_codes(rng, 2048, 64, 1) @ D + rng.standard_normal(32)
    params = {
        "activation": "topk",
        "k": 1,
        "max_epochs": 30,
        "lr": 3e-3,
        "dead_after": 2048,
        "random_state": 0,
    }
    plain = SparseAutoencoder(64, **params).fit(X)
    aux = SparseAutoencoder(64, aux_k=16, aux_coef=1.0, **params).fit(X)
    assert plain.history_[-1]["dead_fraction"] > 0.3
    assert aux.history_[-1]["dead_fraction"] < plain.history_[-1]["dead_fraction"] - 0.1
    assert aux.score(X) > 0.7 * plain.score(X)  # scores are minus the MSE


def test_dead_latents_do_not_depend_on_the_next_batch_size(rng, monkeypatch):
    X, _ = toy_problem(rng, n_samples=512)
    sae = SparseAutoencoder(12, activation="topk", k=1, aux_k=4, dead_after=160)
    sae.set_params(random_state=0).partial_fit(X[:200])
    with torch.no_grad():
        sae.module_.b_enc[0] = -1e6  # latent 0 no longer fires
    sae.partial_fit(X[200:400])  # 200 samples without it: dead from now on
    masks = []

    def spy(*args, dead, **kwargs):
        masks.append(dead)
        return epoch(*args, dead=dead, **kwargs)

    epoch = _training._epoch
    monkeypatch.setattr(_training, "_epoch", spy)
    for size in (10, 256):
        pickle.loads(pickle.dumps(sae)).partial_fit(X[:size])
    assert all(mask is not None and bool(mask[0]) for mask in masks)


def test_early_stopping_restores_best_weights(rng):
    X, _ = toy_problem(rng, n_samples=400)
    sae = SparseAutoencoder(
        12,
        activation="topk",
        k=2,
        lr=3e-2,
        max_epochs=300,
        validation_fraction=0.25,
        n_iter_no_change=3,
        tol=0.0,
        random_state=0,
    ).fit(X)
    assert sae.n_iter_ < 300
    val = [h["val_loss"] for h in sae.history_]
    assert len(val) == sae.n_iter_
    # The kept weights are those of the best epoch, not the last: recompute
    # the validation loss on the split fit() drew first from its generator.
    assert int(np.argmin(val)) == sae.n_iter_ - 4
    seed = check_random_state(0).randint(2**31 - 1)
    order = torch.randperm(400, generator=torch.Generator().manual_seed(seed))
    X_val = torch.as_tensor(X)[order[:100]]
    kept = float(((sae.module_(X_val).x_hat - X_val) ** 2).mean())
    assert kept == pytest.approx(min(val), rel=1e-12)
    # partial_fit continues from the best epoch's weights with the last
    # epoch's optimiser moments (as its docstring says), and records no
    # validation scores.
    steps = {float(v["step"]) for v in sae._optimizer_state["state"].values()}
    assert steps == {sae.n_iter_ * 5.0}  # 300 training rows in batches of 64
    sae.partial_fit(X)
    assert len(sae.history_) == sae.n_iter_ == len(val) + 1
    assert "val_loss" not in sae.history_[-1]


def test_sparse_training_path_matches_dense(rng, monkeypatch):
    X, _ = toy_problem(rng)
    params = {"activation": "batchtopk", "k": 2, "aux_k": 4, **SMALL}
    dense = SparseAutoencoder(16, **params).fit(X)
    monkeypatch.setattr(_modules, "_SPARSE_MIN_COMPONENTS", 1)
    sparse = SparseAutoencoder(16, **params).fit(X)
    assert sparse.module_.sparse_codes and not dense.module_.sparse_codes
    np.testing.assert_allclose(sparse.components_, dense.components_, atol=1e-10)
    np.testing.assert_allclose(sparse.transform(X), dense.transform(X), atol=1e-10)


def test_sparse_training_leaves_the_warning_filters_alone(rng, monkeypatch):
    # torch's one-off "CSR is beta" warning is hidden once, not by a
    # catch_warnings on every backward step: with fits in threads, those
    # could leave their "ignore UserWarning" filter behind for the process.
    X, _ = toy_problem(rng)
    monkeypatch.setattr(_modules, "_SPARSE_MIN_COMPONENTS", 1)
    entered = []
    original = warnings.catch_warnings

    class Counting(original):
        def __enter__(self):
            entered.append(sys._getframe(1).f_code.co_filename)
            return super().__enter__()

    monkeypatch.setattr(warnings, "catch_warnings", Counting)
    filters = list(warnings.filters)
    with original(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            sae = SparseAutoencoder(16, activation="topk", k=2, **SMALL).fit(X)
    assert sae.module_.sparse_codes
    assert not [w for w in caught if "sparse" in str(w.message).lower()]
    hiding = [name for name in entered if name in (_modules.__file__, _tensor.__file__)]
    assert len(hiding) <= 1  # 18 backward steps
    assert warnings.filters == filters


def test_verbose_shows_progress(rng, capsys):
    X, _ = toy_problem(rng, n_samples=64)
    SparseAutoencoder(4, verbose=1, max_epochs=2, random_state=0).fit(X)
    assert "epoch" in capsys.readouterr().err
    # Stopped early, the bar counts every epoch run and shows the validation loss.
    params = {"validation_fraction": 0.25, "n_iter_no_change": 1, "tol": 0.9}
    sae = SparseAutoencoder(4, verbose=1, random_state=0, **params).fit(X)
    err = capsys.readouterr().err
    assert sae.n_iter_ < 500
    assert f"{sae.n_iter_}/500" in err.split("\r")[-1] and "val_loss" in err
    # A stream draws no bar per batch at verbose=1, one per call at 2.
    streamed = SparseAutoencoder(4, verbose=1, random_state=0)
    streamed.partial_fit(X).partial_fit(X)
    assert "epoch" not in capsys.readouterr().err
    streamed.set_params(verbose=2).partial_fit(X)
    assert "1/1" in capsys.readouterr().err


@pytest.mark.parametrize("activation", ["jumprelu", "batchtopk"])
def test_thresholded_codes_have_no_negative_zeros(activation, rng):
    X, _ = toy_problem(rng)
    k = k_for(activation, 2)
    codes = SparseAutoencoder(12, activation=activation, k=k, **SMALL).fit_transform(X)
    zeros = codes[codes == 0]
    assert zeros.size and not np.signbit(zeros).any()


# ------------------------------------------------------------------ arrays


def test_tensor_in_tensor_out(rng):
    X, _ = toy_problem(rng)
    X_t = torch.as_tensor(X, dtype=torch.float32)
    sae = SparseAutoencoder(8, activation="topk", k=2, **SMALL).fit(X_t)
    assert isinstance(sae.components_, torch.Tensor)
    assert sae.components_.dtype == torch.float32
    codes = sae.transform(X_t)
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.float32
    assert sae.inverse_transform(codes).dtype == torch.float32
    # float64 NumPy in gives float64 NumPy out from the float32 model.
    assert sae.transform(X).dtype == np.float64


def test_coding_in_another_dtype_follows_the_current_weights(rng):
    # The float64 copy of a float32 model is kept between calls, and must
    # not outlive training or an in-place change of the weights.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, **SMALL).fit(X.astype(np.float32))

    def float64_reference():
        W_enc, b_enc, b_dec = (
            getattr(sae.module_, name).detach().double().numpy()
            for name in ("W_enc", "b_enc", "b_dec")
        )
        return np.maximum((X - b_dec) @ W_enc.T + b_enc, 0.0)

    first = sae.transform(X)
    assert sae.transform(X) is not first
    np.testing.assert_allclose(first, float64_reference(), atol=1e-12)
    moved = sae._moved_module[2]
    sae.transform(X[:3])
    assert sae._moved_module[2] is moved  # reused
    sae.partial_fit(X.astype(np.float32))
    np.testing.assert_allclose(sae.transform(X), float64_reference(), atol=1e-12)
    with torch.no_grad():
        sae.module_.W_enc.mul_(-1.0)
    np.testing.assert_allclose(sae.transform(X), float64_reference(), atol=1e-12)
    sae.module_.W_enc.data = -sae.module_.W_enc.data  # no version change
    np.testing.assert_allclose(sae.transform(X), float64_reference(), atol=1e-12)
    for seed in (1, 2):  # a refit's module may take the id of a freed one
        sae.set_params(random_state=seed).fit(X.astype(np.float32))
        np.testing.assert_allclose(sae.transform(X), float64_reference(), atol=1e-12)
    assert "_moved_module" not in pickle.loads(pickle.dumps(sae)).__dict__
    assert "_moved_module" in sae.__dict__  # pickling leaves the cache alone


def test_coding_in_another_dtype_with_inference_tensor_parameters(rng):
    # Parameters made from inference tensors have no version counters to key
    # the cached copy by: it is made afresh, and follows every change.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, **SMALL).fit(X)
    with torch.inference_mode():
        weights = sae.module_.W_enc.detach().clone()
    sae.module_.W_enc = torch.nn.Parameter(weights, requires_grad=False)
    first = sae.transform(X.astype(np.float32))
    np.testing.assert_allclose(first, sae.transform(X), rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        sae.module_.W_enc.mul_(-1.0)
    np.testing.assert_allclose(
        sae.transform(X.astype(np.float32)), sae.transform(X), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(sae.transform(X.astype(np.float32)), first)


def test_coding_in_another_dtype_follows_the_buffers(rng):
    # BatchTopK codes with a threshold kept as a buffer, not a parameter.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, activation="batchtopk", k=2, **SMALL)
    sae.fit(X.astype(np.float32))
    sae.transform(X)
    with torch.no_grad():
        sae.module_.threshold.fill_(0.5)
    float32_codes = sae.transform(X.astype(np.float32))
    np.testing.assert_allclose(sae.transform(X), float32_codes, atol=1e-5)


def test_transform_in_chunks(rng, monkeypatch):
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(16, activation="mp", k=3, **SMALL).fit(X)
    whole = sae.transform(X)
    monkeypatch.setattr(_tensor, "BLOCK_ELEMENTS", 16 * 7)
    np.testing.assert_allclose(sae.transform(X), whole, atol=1e-12)
    # Chunks are sized by the wider of codes and rows: 300,000 rows of 512
    # features on 16 latents went through in one chunk (+528 MiB).
    narrow = SparseAutoencoder(4, **SMALL).fit(X)
    assert narrow.n_components < X.shape[1]
    assert _training.chunk_size(narrow.module_) == 16 * 7 // X.shape[1]
    assert _training.chunk_size(sae.module_) == 7


def test_clone_pickle_pipeline(rng):
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, activation="batchtopk", k=2, **SMALL)
    assert clone(sae).get_params() == sae.get_params()
    sae.fit(X)
    restored = pickle.loads(pickle.dumps(sae))
    np.testing.assert_array_equal(restored.transform(X), sae.transform(X))
    assert float(restored.module_.threshold) == float(sae.module_.threshold) > 0
    restored.partial_fit(X)
    assert restored.n_iter_ == sae.n_iter_ + 1
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    pipe = make_pipeline(clone(sae), LogisticRegression()).fit(X, y)
    assert pipe.score(X, y) > 0.5


def test_fitted_model_pickles_to_the_same_bytes_every_time(rng, tmp_path):
    # Its module was deep-copied at every pickle, and torch wrote the copy's
    # new storage addresses into the bytes: joblib.hash changed each time, so
    # Pipeline(memory=) coded again for every candidate of a search.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, activation="topk", k=2, **SMALL).fit(X)
    assert pickle.dumps(sae) == pickle.dumps(sae)
    assert joblib.hash(FrozenEstimator(sae)) == joblib.hash(FrozenEstimator(sae))
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    pipe = Pipeline(
        [("code", FrozenEstimator(sae)), ("probe", LogisticRegression())],
        memory=str(tmp_path),
    )
    GridSearchCV(pipe, {"probe__C": [0.1, 1.0, 10.0]}, cv=2).fit(X, y)
    cached = [path for path in tmp_path.rglob("output.pkl")]
    assert len(cached) == 3  # one coding per fold and one for the refit


@pytest.mark.parametrize("as_tensor", [False, True])
def test_decoder_attributes_follow_the_module(as_tensor, rng):
    # components_ and intercept_ were copies taken once: after a checkpoint
    # was loaded into module_, transform used its atoms while components_
    # (and so dictionary_similarity, or a FrozenEstimator provider) kept the
    # old ones.
    X, _ = toy_problem(rng)
    X = torch.as_tensor(X) if as_tensor else X
    trained = SparseAutoencoder(8, activation="topk", k=2, **SMALL).fit(X)
    sae = SparseAutoencoder(8, activation="topk", k=2, **SMALL)
    sae.set_params(random_state=1).fit(X)
    handed_out = sae.components_
    values = copy.deepcopy(handed_out)
    sae.module_.load_state_dict(trained.module_.state_dict())
    for attribute in ("components_", "intercept_"):
        expected = getattr(trained, attribute)
        assert type(getattr(sae, attribute)) is type(expected)
        np.testing.assert_array_equal(getattr(sae, attribute), expected)
    codes = sae.transform(X)
    reconstructed = codes @ sae.components_ + sae.intercept_
    np.testing.assert_allclose(sae.inverse_transform(codes), reconstructed, atol=1e-12)
    assert sae.components_ is sae.components_  # kept while the module is unchanged
    with torch.no_grad():
        sae.module_.b_dec.add_(1.0)
    np.testing.assert_array_equal(sae.intercept_, trained.intercept_ + 1.0)
    np.testing.assert_array_equal(handed_out, values)  # arrays handed out stay
    for restored in saved_and_loaded(sae):
        np.testing.assert_array_equal(restored.intercept_, sae.intercept_)
        restored.partial_fit(X)
        assert not np.array_equal(restored.components_, sae.components_)
    np.testing.assert_array_equal(sae.components_, trained.components_)


def test_decoder_attributes_cannot_drift_from_the_module(rng):
    # An edit of components_ in place (a sign flip, as on PCA's) reached
    # every later reader of the attribute, FISTACoder(FrozenEstimator(sae))
    # included, while transform and inverse_transform kept the module's
    # atoms: codes @ components_ + intercept_ no longer reconstructed.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, **SMALL).fit(X)
    with pytest.raises(ValueError, match="read-only"):
        sae.components_[0] *= -1
    with pytest.raises(ValueError, match="read-only"):
        sae.intercept_[0] = 1.0
    for attribute, name in (("components_", "W_dec"), ("intercept_", "b_dec")):
        with pytest.raises(AttributeError, match=rf"module_\.{name}.*no_grad"):
            setattr(sae, attribute, np.zeros(3))
    X_t = torch.as_tensor(X)
    sae = SparseAutoencoder(8, **SMALL).fit(X_t)
    module_atoms = sae.module_.W_dec.detach().clone()
    sae.components_[0] *= -1
    torch.testing.assert_close(sae.components_, module_atoms, rtol=0, atol=0)
    coder = FISTACoder(FrozenEstimator(sae)).fit(X_t)
    torch.testing.assert_close(coder.components_, module_atoms, rtol=0, atol=0)
    codes = sae.transform(X_t)
    torch.testing.assert_close(
        codes @ sae.components_ + sae.intercept_, sae.inverse_transform(codes)
    )


def test_decoder_attributes_are_plain_copies_in_their_array_type(rng):
    # Made from the module when read: not inside inference mode as inference
    # tensors (autograd and in-place operations refused them afterwards), and
    # an unfitted estimator names the attribute asked for.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, **SMALL)
    with pytest.raises(AttributeError, match="no attribute 'components_'"):
        _ = sae.components_
    [restored] = saved_and_loaded(sae.fit(torch.as_tensor(X)))[:1]
    with torch.inference_mode():
        restored.inverse_transform(restored.transform(torch.as_tensor(X)))
    assert not restored.components_.is_inference()
    restored.components_.mul_(1.0)


@pytest.mark.parametrize("layout", ["attributes", "copies"])
def test_pickles_of_earlier_layouts_give_their_atoms(layout, rng):
    # Earlier versions pickled components_ and intercept_ as attributes, or
    # as copies beside the module; loaded, both read as missing.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, **SMALL).fit(torch.as_tensor(X, dtype=torch.float32))
    state = sae.__getstate__()
    del state["_fitted_type"]
    atoms, bias = sae.components_, sae.intercept_
    if layout == "attributes":
        state.update(components_=atoms, intercept_=bias)
    else:
        state["_decoder_copies"] = {
            "W_dec": (None, None, atoms),
            "b_dec": (None, None, bias),
        }
    restored = SparseAutoencoder.__new__(SparseAutoencoder)
    restored.__setstate__(state)
    assert restored.components_.dtype == torch.float32
    torch.testing.assert_close(restored.components_, atoms, rtol=0, atol=0)
    torch.testing.assert_close(restored.intercept_, bias, rtol=0, atol=0)


def test_inference_tensor_parameters_are_followed(rng):
    # Inference tensors have no version counter: a checkpoint loaded into
    # them inside inference mode kept the storage, and the old copies.
    X, _ = toy_problem(rng)
    first = SparseAutoencoder(8, **SMALL).fit(X)
    second = SparseAutoencoder(8, **SMALL).set_params(random_state=1).fit(X)
    with torch.inference_mode():
        [restored] = saved_and_loaded(first)[:1]
        restored.module_.load_state_dict(
            {k: v.clone() for k, v in restored.module_.state_dict().items()}
        )
    assert restored.module_.W_dec.is_inference()
    np.testing.assert_array_equal(restored.components_, first.components_)
    with torch.inference_mode():
        restored.module_.load_state_dict(second.module_.state_dict())
    np.testing.assert_array_equal(restored.components_, second.components_)
    np.testing.assert_array_equal(restored.intercept_, second.intercept_)


@array_api_dispatch
def test_decoder_attributes_keep_the_array_namespace_after_pickling(rng):
    # The array type was worked out again from the last copy, which only
    # array-API dispatch recognises: read outside it, the atoms came back
    # as NumPy, and transform under dispatch then refused the namespace.
    xp = pytest.importorskip("array_api_strict")
    from sklearn import config_context

    X, _ = toy_problem(rng)
    with config_context(array_api_dispatch=True):
        sae = SparseAutoencoder(8, **SMALL).fit(xp.asarray(X))
    for restored in saved_and_loaded(sae):
        assert type(restored.components_) is type(sae.components_)
        with config_context(array_api_dispatch=True):
            restored.transform(xp.asarray(X))


def test_grid_search_over_k_and_sparsity_coef(rng):
    X, _ = toy_problem(rng)
    grid = GridSearchCV(
        SparseAutoencoder(8, activation="topk", **SMALL), {"k": [1, 3]}, cv=2
    ).fit(X)
    assert grid.best_params_ == {"k": 3}  # more active latents reconstruct better
    grid = GridSearchCV(
        SparseAutoencoder(8, activation="relu", lr=1e-2, **SMALL),
        {"sparsity_coef": [1e-4, 10.0]},
        cv=2,
    ).fit(X)
    assert grid.best_params_ == {"sparsity_coef": 1e-4}


@cuda
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_fit_loads_on_cpu(activation, rng):
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(8, activation=activation, k=2, device="cuda", **SMALL)
    sae.fit(X)
    assert sae.module_.W_dec.device.type == "cuda"
    state = pickle.dumps(sae)
    restored = pickle.loads(state)
    assert restored.module_.W_dec.device.type == "cpu"
    restored.set_params(device="cpu")
    np.testing.assert_allclose(restored.transform(X), sae.transform(X), atol=1e-5)
    X_gpu = torch.as_tensor(X, device="cuda")
    assert sae.transform(X_gpu).device.type == "cuda"
    # A deep copy (keeping the best model so far) stays on the GPU.
    kept = copy.deepcopy(sae)
    assert kept.module_.W_dec.device.type == "cuda"
    torch.testing.assert_close(kept.transform(X_gpu), sae.transform(X_gpu))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "params, match",
    [
        ({"activation": "topk", "k": 9}, "k=9 must be at most n_components=8"),
        ({"activation": "topk"}, "needs k"),
        ({"activation": "mp", "k": None}, "needs k"),
        ({"activation": "sigmoid"}, "'activation' parameter"),
        ({"k": 0, "activation": "topk"}, "'k' parameter"),
        ({"lr": 0.0}, "'lr' parameter"),
        ({"activation": "topk", "k": 2, "aux_k": 20}, "aux_k=20 must be at most"),
        ({"activation": "topk", "k": True}, "'k' parameter of .* got True, a bool"),
        ({"n_components": True}, "'n_components' parameter of .* a bool"),
        (
            {"activation": "batchtopk", "k": np.uint8(2)},
            "'k' parameter of .* at least 64 bits",
        ),
        ({"batch_size": np.int16(8)}, "'batch_size' parameter of .* at least 64"),
        ({"validation_fraction": 0.999}, "validation_fraction=0.999 leaves no"),
        ({"freeze_decoder": True}, "freeze_decoder=True needs a decoder"),
        ({"bias_init": "median"}, "'bias_init' parameter"),
    ],
)
def test_bad_hyperparameters(params, match, rng):
    X, _ = toy_problem(rng, n_samples=20)
    with pytest.raises(ValueError, match=match):
        SparseAutoencoder(**{"n_components": 8, **SMALL, **params}).fit(X)


def test_one_sample_with_validation_fraction_says_so():
    # In the words scikit-learn's check_fit2d_1sample looks for.
    from sklearn.utils.estimator_checks import check_fit2d_1sample

    sae = SparseAutoencoder(3, validation_fraction=0.2, max_epochs=1)
    check_fit2d_1sample("SparseAutoencoder", sae)


def test_default_width_is_the_number_of_features(rng):
    # As FISTACoder and scikit-learn's decompositions; SparseAutoencoder()
    # could not be fitted, and failed 22 of scikit-learn's estimator checks.
    X, _ = toy_problem(rng, n_samples=20)
    sae = SparseAutoencoder(**SMALL).fit(X)
    assert sae.components_.shape == (X.shape[1], X.shape[1])


def test_bad_decoder(rng):
    X, D = toy_problem(rng, n_samples=20)
    with pytest.raises(ValueError, match="decoder has atoms of dimension 7"):
        SparseAutoencoder(decoder=D[:, :7], **SMALL).fit(X)
    with pytest.raises(ValueError, match="n_components=5 does not match"):
        SparseAutoencoder(5, decoder=D, **SMALL).fit(X)
    with pytest.raises(ValueError, match="decoder has zero-norm atoms"):
        SparseAutoencoder(decoder=0 * D, **SMALL).fit(X)
    # Atoms whose norm underflows in float32 would divide by zero.
    with pytest.raises(
        ValueError, match="squares outside the normal range of float32; rescale"
    ):
        SparseAutoencoder(decoder=1e-25 * D, **SMALL).fit(X.astype(np.float32))
    with pytest.raises(ValueError, match="unit-norm decoder atoms"):
        SparseAutoencoder(
            activation="mp", k=2, decoder=2 * D, freeze_decoder=True, **SMALL
        ).fit(X)
    with pytest.raises(TypeError, match="must expose 'components_'"):
        SparseAutoencoder(decoder=LogisticRegression(), **SMALL).fit(X, X[:, 0] > 0)


def test_bad_input(rng):
    X, _ = toy_problem(rng, n_samples=20)
    X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SparseAutoencoder(4, **SMALL).fit(X)
    sae = SparseAutoencoder(4, **SMALL).fit(np.nan_to_num(X))
    with pytest.raises(ValueError, match="4 components"):
        sae.inverse_transform(np.ones((2, 5)))
    with pytest.raises(ValueError, match="features"):
        sae.transform(np.ones((2, 3)))


def test_divergence_raises_and_keeps_no_nan_weights(rng):
    X, _ = toy_problem(rng, n_samples=64)
    huge = (X * 1e30).astype(np.float32)
    with pytest.raises(FloatingPointError, match="Training diverged"):
        SparseAutoencoder(4, **SMALL).fit(huge)
    sae = SparseAutoencoder(4, **SMALL).partial_fit(X.astype(np.float32))
    before = sae.components_.copy()
    with pytest.raises(FloatingPointError, match="Training diverged"):
        sae.partial_fit(huge)
    np.testing.assert_array_equal(sae.components_, before)
    assert all(torch.isfinite(p).all() for p in sae.module_.parameters())
    assert sae.n_iter_ == 1
    sae.partial_fit(X.astype(np.float32))
    assert sae.n_iter_ == 2


def test_nan_left_by_the_last_step_raises(rng):
    # The losses are taken before each step: a threshold that float32 holds
    # only as infinity turns NaN through a parameter the loss does not see.
    X = toy_problem(rng, n_samples=64)[0].astype(np.float32)
    params = {"activation": "jumprelu", "threshold_init": 1e39, **SMALL}
    sae = SparseAutoencoder(4, **params)
    with pytest.raises(FloatingPointError, match="log_threshold holds NaN"):
        sae.fit(X)
    assert not hasattr(sae, "module_")
    sae = SparseAutoencoder(4, activation="jumprelu", **SMALL).partial_fit(X)
    before = sae.module_.log_threshold.detach().clone()
    with torch.inference_mode():
        sae.module_.log_threshold.fill_(np.inf)
    with pytest.raises(FloatingPointError, match="log_threshold holds NaN"):
        sae.partial_fit(X)
    assert not torch.isfinite(sae.module_.log_threshold).all()  # as it was
    assert sae.n_iter_ == 1
    sae.module_.log_threshold.data = before
    sae.partial_fit(X)
    assert sae.n_iter_ == 2


def test_early_stopping_that_never_fires_warns(rng):
    # As scikit-learn's MLP: max_epochs reached with the stopping rule unmet.
    X, _ = toy_problem(rng, n_samples=200)
    params = {"validation_fraction": 0.2, "random_state": 0}
    with pytest.warns(ConvergenceWarning, match="max_epochs=3 before early stopping"):
        SparseAutoencoder(8, max_epochs=3, **params).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Stopped by the rule, or no rule at all (the paper's fixed epochs).
        stopped = SparseAutoencoder(
            8, max_epochs=50, n_iter_no_change=1, tol=0.1, **params
        )
        assert stopped.fit(X).n_iter_ < 50
        SparseAutoencoder(8, max_epochs=3, random_state=0).fit(X)
    with pytest.raises(ValueError, match="tol"):
        SparseAutoencoder(8, tol=1.0, **params).fit(X)


def test_interrupted_partial_fit_leaves_the_model_as_it_was(rng, monkeypatch):
    # Ctrl-C (or running out of memory) in the middle of an epoch: the weights
    # are updated in place and the optimiser shares the saved state's tensors.
    X, _ = toy_problem(rng, n_samples=200)
    sae = SparseAutoencoder(16, activation="topk", k=2, batch_size=16, lr=1e-2)
    sae.set_params(random_state=0).partial_fit(X)
    untouched = copy.deepcopy(sae)
    calls = {"n": 0}
    original = _modules.SAE.loss_and_grad

    def interrupted(module, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(module, *args, **kwargs)

    monkeypatch.setattr(_modules.SAE, "loss_and_grad", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sae.partial_fit(X)
    monkeypatch.setattr(_modules.SAE, "loss_and_grad", original)
    for p, q in zip(
        sae.module_.parameters(), untouched.module_.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    state, kept = sae._optimizer_state["state"], untouched._optimizer_state["state"]
    for key in state:
        for name in state[key]:
            torch.testing.assert_close(
                state[key][name], kept[key][name], rtol=0, atol=0
            )
    # Continuing gives exactly what an uninterrupted call gives.
    np.testing.assert_array_equal(
        sae.partial_fit(X).components_, untouched.partial_fit(X).components_
    )


def test_selection_counts_match_bincount():
    # Sync-free on CUDA, the same counts as bincount, in the codes' dtype;
    # selections with a zero coefficient do not fire.
    generator = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 9, (40, 3), generator=generator)
    values = torch.rand(40, 3, generator=generator) + 0.5
    values[::3, 2] = 0.0
    counts = _modules._selection_counts(indices, 12, values)
    assert counts.dtype == torch.float32 and counts.shape == (12,)
    expected = torch.bincount(
        indices.view(-1), weights=(values != 0).view(-1).float(), minlength=12
    )
    torch.testing.assert_close(counts, expected, rtol=0, atol=0)


def test_matching_pursuit_counts_no_firing_once_the_residual_is_zero(rng):
    # One-hot rows on the identity atoms: the pursuit's second step selects
    # an atom with a zero coefficient, which counted as firing, so l0 read 2
    # and dead_fraction 0 where latent 0 never fires.
    X = np.zeros((50, 6))
    X[np.arange(50), rng.integers(1, 6, 50)] = rng.uniform(1, 3, 50)
    sae = SparseAutoencoder(
        activation="mp", k=2, decoder=np.eye(6), freeze_decoder=True, random_state=0
    ).fit(X)
    codes = sae.transform(X)
    record = sae.history_[-1]
    assert record["l0"] == np.count_nonzero(codes, axis=1).mean() == 1.0
    assert record["dead_fraction"] == pytest.approx(
        1 - np.any(codes != 0, axis=0).mean()
    )
    assert record["dead_fraction"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_and_float64_fits_start_from_the_same_weights(rng, activation):
    # torch draws other numbers for float32 than for float64 from one
    # generator: a seed chosen on float64 NumPy data must give the same model
    # on float32 data (e.g. a tensor moved to the GPU), up to rounding.
    X, _ = toy_problem(rng)
    params = dict(activation=activation, lr=1e-3, max_epochs=3, random_state=0)
    if activation in ("topk", "batchtopk", "mp"):
        params["k"] = 2
    fits = [
        SparseAutoencoder(8, **params).fit(X.astype(dtype))
        for dtype in (float, np.float32)
    ]
    np.testing.assert_allclose(fits[0].components_, fits[1].components_, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "topk", "batchtopk", "jumprelu", "mp"])
def test_the_module_codes_rows_and_names_other_shapes(rng, activation):
    # (batch, seq, d_model) activations broadcast through some activations
    # and failed in torch's gather for TopK and matching pursuit.
    X, _ = toy_problem(rng)
    k = None if activation in ("relu", "jumprelu") else 2
    sae = SparseAutoencoder(12, activation=activation, k=k, max_epochs=1)
    module = sae.set_params(random_state=0).fit(X).module_
    x = torch.from_numpy(X).to(module.W_dec.dtype)
    codes = module.encode(x)
    dense = codes.to_dense() if hasattr(codes, "to_dense") else codes
    np.testing.assert_allclose(dense.numpy(), sae.transform(X), rtol=1e-6, atol=1e-8)
    for call in (module.encode, module.forward):
        with pytest.raises(ValueError, match=r"x.reshape\(-1, 8\)"):
            call(x.reshape(16, 16, 8))


def test_partial_fit_appends_to_the_history_in_place(rng):
    # A copy of the list per call made a stream's calls slower with its
    # length (1.4 ms a call at the start, 11 ms after a million calls).
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(12, random_state=0).partial_fit(X)
    history = sae.history_
    sae.partial_fit(X).partial_fit(X)
    assert sae.history_ is history and len(history) == sae.n_iter_ == 3
    del sae.history_[:2]  # a long stream may trim it
    sae.partial_fit(X)
    assert sae.n_iter_ == 4 and len(sae.history_) == 2


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "batchtopk"])
def test_weights_trained_elsewhere_load_as_the_guide_says(activation):
    # The recipe of the user guide's "An SAE trained elsewhere": SAELens'
    # layout, an SAE that encodes x itself (Gemma Scope's convention), and
    # what each activation keeps besides the four weights.
    d, n = 6, 6  # square: a W_enc left untransposed would load silently
    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(d, n, generator=g), torch.randn(n, d, generator=g)
    b_enc, b_dec = torch.randn(n, generator=g), torch.randn(d, generator=g)
    threshold = torch.rand(n, generator=g) + 0.1
    X = torch.randn(50, d, generator=g)
    pre = X @ W_enc + b_enc  # the external SAE's own encoder
    kw = {"k": 2} if activation == "batchtopk" else {}
    sae = SparseAutoencoder(n, activation=activation, max_epochs=1, **kw).fit(X[:8])
    state = {
        "W_enc": W_enc.T,
        "b_enc": b_enc + b_dec @ W_enc,
        "W_dec": W_dec,
        "b_dec": b_dec,
    }
    if activation == "relu":
        expected = pre.relu()
    elif activation == "jumprelu":
        state["log_threshold"] = threshold.log()
        expected = pre * (pre > threshold)
    else:
        state["threshold"] = torch.tensor(0.5)
        state["threshold_updates"] = torch.tensor(1)
        expected = pre * (pre > 0.5)
    sae.module_.load_state_dict(state)
    torch.testing.assert_close(sae.transform(X), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae.components_, W_dec)
    torch.testing.assert_close(sae.intercept_, b_dec)
    codes = sae.transform(X)
    torch.testing.assert_close(sae.inverse_transform(codes), codes @ W_dec + b_dec)


@pytest.mark.parametrize(
    "change",
    [
        {"activation": "topk"},
        {"activation": "topk", "k": 13},
        {"activation": "batchtopk", "k": 2, "aux_k": 13},
        {"freeze_decoder": True},
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_settings_wrong_whatever_the_data_leave_the_fit_as_it_was(rng, change, method):
    # As an invalid hyper-parameter does: a refit with activation='topk' and
    # no k, or a k above n_components, discarded the fitted model.
    X, _ = toy_problem(rng)
    sae = SparseAutoencoder(12, **SMALL).fit(X)
    weights = sae.components_.copy()
    fresh = clone(sae).set_params(**change)
    for estimator in (sae.set_params(**change), fresh):
        with pytest.raises(ValueError, match=r"needs|must be at most"):
            getattr(estimator, method)(X)
    assert hasattr(sae, "module_") and np.array_equal(sae.components_, weights)
    assert not hasattr(fresh, "module_")


def test_initial_decoder_is_the_unit_norm_transpose_of_the_encoder():
    # DESIGN.md: the decoder starts as the encoder's transpose with unit-norm
    # atoms.
    sae = build_sae("relu", 5, 8, dtype=torch.float64)
    sae.reset_parameters(torch.Generator().manual_seed(0))
    norms = torch.linalg.vector_norm(sae.W_dec, dim=1)
    torch.testing.assert_close(norms, torch.ones(8, dtype=torch.float64))
    direction = sae.W_enc / torch.linalg.vector_norm(sae.W_enc, dim=1, keepdim=True)
    torch.testing.assert_close(sae.W_dec, direction)


def test_history_loss_weighs_the_auxiliary_term_by_aux_coef(rng):
    # history_['loss'] is the training objective: mse + aux_coef * aux-mse.
    # With aux_coef=0 and dead latents present it must equal mse.
    X = rng.standard_normal((96, 8))
    sae = SparseAutoencoder(
        32,
        activation="topk",
        k=1,
        aux_k=4,
        aux_coef=0.0,
        dead_after=1,
        max_epochs=4,
        batch_size=32,
        random_state=0,
    ).fit(X)
    assert any(r["dead_fraction"] > 0 for r in sae.history_)
    for r in sae.history_:
        assert r["loss"] == pytest.approx(r["mse"], rel=1e-9)


def test_a_fitted_module_takes_the_users_own_backward_pass(rng):
    # Training leaves no inference-tensor gradients behind: a user's own
    # autograd pass over module_ (fine-tuning) must work after fit.
    sae = SparseAutoencoder(8, max_epochs=2, random_state=0).fit(
        rng.standard_normal((64, 6))
    )
    assert all(p.grad is None for p in sae.module_.parameters())
    sae.module_.W_enc.sum().backward()
    assert sae.module_.W_enc.grad is not None


def test_a_validation_fraction_of_one_sample_is_named_in_the_singular(rng):
    sae = SparseAutoencoder(2, validation_fraction=0.5, max_epochs=1)
    with pytest.raises(ValueError, match=r"out of 1 sample;"):
        sae.fit(rng.standard_normal((1, 3)))


def test_val_mse_is_the_reconstruction_error_not_the_objective(rng):
    # With an L1 penalty the validation objective exceeds the validation MSE.
    X = rng.standard_normal((80, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SparseAutoencoder(
            8,
            sparsity_coef=0.1,
            validation_fraction=0.25,
            max_epochs=3,
            random_state=0,
        ).fit(X)
    for r in sae.history_:
        assert r["val_mse"] < r["val_loss"]


def test_a_users_dead_after_is_honoured(rng):
    # dead_after far above the samples seen: no latent may count as dead.
    sae = SparseAutoencoder(
        64,
        activation="topk",
        k=1,
        dead_after=10**6,
        max_epochs=3,
        random_state=0,
    ).fit(rng.standard_normal((32, 6)))
    assert all(r["dead_fraction"] == 0.0 for r in sae.history_)


def test_a_latent_is_dead_at_exactly_dead_after_samples(rng):
    # "At least dead_after samples" since it last fired: with dead_after the
    # number of samples, a latent silent for one epoch is dead. It counts in
    # that epoch's dead_fraction, and the next epoch adds the auxiliary loss
    # (sparsity_coef=0, so the loss exceeds the MSE only through it).
    sae = SparseAutoencoder(
        32,
        activation="topk",
        k=1,
        aux_k=4,
        dead_after=40,
        sparsity_coef=0.0,
        max_epochs=2,
        batch_size=8,
        random_state=0,
    ).fit(rng.standard_normal((40, 6)))
    first, second = sae.history_
    assert first["dead_fraction"] > 0
    assert first["loss"] == pytest.approx(first["mse"], rel=1e-9)
    assert second["loss"] > second["mse"] * (1 + 1e-6)


def test_an_epoch_record_sums_every_step_of_a_long_epoch(rng):
    # More steps in one epoch than are reduced at once (256). With a
    # negligible lr the model does not move, so the epoch's record equals the
    # fitted model's own figures on X.
    X = rng.standard_normal((300, 6))
    sae = SparseAutoencoder(
        8, lr=1e-12, batch_size=1, max_epochs=1, random_state=0
    ).fit(X)
    record = sae.history_[0]
    np.testing.assert_allclose(record["mse"], -sae.score(X), rtol=1e-6)
    l0 = (sae.transform(X) != 0).sum(axis=1).mean()
    np.testing.assert_allclose(record["l0"], l0, rtol=1e-6)


def test_divergence_raises_at_its_epoch_with_early_stopping_too(rng):
    # Not after every epoch has run, with another message.
    X = (rng.standard_normal((64, 6)) * 1e30).astype(np.float32)
    sae = SparseAutoencoder(
        4, validation_fraction=0.25, max_epochs=5, n_iter_no_change=2, random_state=0
    )
    with pytest.raises(FloatingPointError, match=r"the loss is .* at epoch 1"):
        sae.fit(X)


@pytest.mark.filterwarnings("ignore:SparseAutoencoder stopped at max_epochs")
def test_a_validation_row_too_large_to_square_raises(rng, monkeypatch):
    # Its squared error overflowed float32 to inf in every epoch: training
    # "stopped early" after n_iter_no_change epochs without a word, with the
    # last weights, no epoch ever being best.
    X = rng.standard_normal((40, 4)).astype(np.float32)
    held_out = []
    split = SparseAutoencoder._split

    def recording(self, X_t, generator):
        train, val, train_rows = split(self, X_t, generator)
        held_out.append(np.setdiff1d(np.arange(X_t.shape[0]), train_rows))
        return train, val, train_rows

    monkeypatch.setattr(SparseAutoencoder, "_split", recording)
    params = dict(validation_fraction=0.2, max_epochs=3, random_state=0)
    SparseAutoencoder(4, **params).fit(X)  # the same split for the same seed
    X[held_out[0][0]] = 1e20  # finite in float32; its square is not
    with pytest.raises(FloatingPointError, match=r"validation loss is inf at epoch 1"):
        SparseAutoencoder(4, **params).fit(X)
    # Weights broken by the epoch's last step are named, not the rows.
    X[held_out[0][0]] = 0.0
    with pytest.raises(FloatingPointError, match=r"W_enc, .* after this epoch"):
        SparseAutoencoder(4, lr=1e38, batch_size=64, **params).fit(X)


@pytest.mark.filterwarnings("ignore:SparseAutoencoder stopped at max_epochs")
def test_early_stopping_keeps_the_best_epoch_however_small_its_gain(rng):
    # Identical rows make every validation row the one scored below; a tiny
    # lr makes every epoch's gain far below 0.1 %.
    row = rng.standard_normal((1, 6))
    sae = SparseAutoencoder(
        8,
        lr=1e-5,
        max_epochs=4,
        validation_fraction=0.25,
        tol=0.0,
        n_iter_no_change=10,
        bias_init="zero",
        random_state=0,
    ).fit(np.repeat(row, 80, axis=0))
    val = [h["val_loss"] for h in sae.history_]
    best = int(np.argmin(val))
    assert best > 0 and val[best] > (1 - 1e-3) * val[0]
    kept = np.mean((sae.inverse_transform(sae.transform(row)) - row) ** 2)
    assert kept == pytest.approx(sae.history_[best]["val_mse"], rel=1e-10)


def test_partial_fit_takes_a_new_unfrozen_decoder(rng):
    # Only a frozen decoder is the model's own; an unfrozen one only
    # initialised the first call.
    X = rng.standard_normal((40, 6))
    sae = SparseAutoencoder(decoder=rng.standard_normal((5, 6)), random_state=0)
    sae.partial_fit(X)
    sae.set_params(decoder=rng.standard_normal((5, 6)))
    assert sae.partial_fit(X).n_iter_ == 2


def test_a_refit_starts_a_new_history(rng):
    X = rng.standard_normal((40, 6))
    sae = SparseAutoencoder(4, max_epochs=3, random_state=0).fit(X)
    sae.partial_fit(X)
    sae.fit(X)
    assert sae.n_iter_ == 3 and [h["epoch"] for h in sae.history_] == [1, 2, 3]


def test_jumprelu_reset_parameters_restores_the_threshold(rng):
    sae = SparseAutoencoder(
        8,
        activation="jumprelu",
        threshold_init=0.05,
        sparsity_coef=0.5,
        lr=1e-2,
        max_epochs=5,
        random_state=0,
    ).fit(rng.standard_normal((96, 6)))
    module = sae.module_
    assert not torch.allclose(
        module.threshold, torch.tensor(0.05, dtype=module.threshold.dtype)
    )
    with torch.no_grad():
        module.reset_parameters(torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        module.threshold, torch.full_like(module.threshold, 0.05)
    )


def test_validation_fraction_one_is_refused_before_the_fit(rng):
    X = rng.standard_normal((20, 4))
    sae = SparseAutoencoder(4, max_epochs=1, random_state=0).fit(X)
    sae.set_params(validation_fraction=1.0)
    with pytest.raises(ValueError, match="validation_fraction"):
        sae.fit(X)
    assert hasattr(sae, "module_")  # refused before the fit: still fitted


def test_a_k_too_large_names_the_decoder_atoms_as_the_width(rng):
    atoms = np.eye(3, 4)
    sae = SparseAutoencoder(activation="topk", k=5, decoder=atoms, max_epochs=1)
    with pytest.raises(ValueError, match="one per decoder atom"):
        sae.fit(rng.standard_normal((10, 4)))


@pytest.mark.parametrize("size", [np.uint64, np.int64, np.int32])
def test_sae_modules_keep_their_sizes_as_python_integers(size):
    # Before NumPy 2, np.uint64(16) + 64 is the float 80.0, which torch
    # refused as a size: every size a module keeps is a Python integer.
    from skdict._sae._modules import MatchingPursuitSAE, TopKSAE

    for cls in (TopKSAE, MatchingPursuitSAE):
        module = cls(size(5), size(16), k=size(2), dtype=torch.float64)
        assert type(module.n_features) is int
        assert type(module.n_components) is int
        assert type(module.k) is int


def test_matching_pursuit_computes_its_gram_matrix_once_per_transform(monkeypatch):
    # The atoms are fixed while a transform or score codes its chunks of
    # rows: one Gram matrix serves them all (one a chunk took half the time
    # of a transform at 4,096 latents).
    from skdict._sae import _training
    from skdict._sae._modules import MatchingPursuitSAE

    X = np.random.default_rng(0).standard_normal((50, 6))
    sae = SparseAutoencoder(12, activation="mp", k=2, max_epochs=2, random_state=0)
    sae.fit(X)
    whole = sae.transform(X)
    calls = []
    gram = MatchingPursuitSAE._gram

    def counted(module):
        calls.append(1)
        return gram(module)

    monkeypatch.setattr(MatchingPursuitSAE, "_gram", counted)
    monkeypatch.setattr(_training, "rows_per_block", lambda width: 7)  # 8 chunks
    # (Chunks of other sizes round a few products differently.)
    np.testing.assert_allclose(sae.transform(X), whole, rtol=1e-12, atol=1e-14)
    assert len(calls) == 1
    sae.score(X)
    assert len(calls) == 2
    assert sae.module_._held_gram is None  # released after the call


def test_decoder_adds_its_bias_in_place_only_in_its_own_dtype():
    # In place, the sum holds one reconstruction instead of two; under
    # autocast the bfloat16 product is promoted by the float32 bias, as it
    # was out of place, not rounded to bfloat16.
    X = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    module = SparseAutoencoder(16, max_epochs=1, random_state=0).fit(X).module_
    x = torch.from_numpy(X)
    codes = module.encode(x)
    expected = codes @ module.W_dec + module.b_dec
    torch.testing.assert_close(module.decode(codes), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.decode(codes).dtype == torch.float32
