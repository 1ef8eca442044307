"""Documented behaviours checked against closed forms and references.

Dictionary learning's stop rule and continuation, the online update's
statistics (Mairal et al., 2010, Sec. 3.4), the SAE training loop's records
and steps, and the concept activity and sparse/dense agreement of the
splitter and the metrics: each a promise of a docstring that a plausible
slip in the code would break without another test noticing.
"""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils import check_random_state

from skdict import FISTACoder, SparseAutoencoder
from skdict._fista._driver import fista_encode
from skdict._learning._alternation import learn_dictionary
from skdict._learning._atoms import initial_dictionary
from skdict._learning._online import batch_statistics, online_dictionary_update
from skdict._learning._updates import _normalize_atoms, block_coordinate_update
from skdict._sae import _training
from skdict.datasets import make_compositional
from skdict.metrics import dictionary_similarity, mcc_score, support_scores
from skdict.model_selection import CompositionalSplit

from .conftest import near_duplicate_stream, random_dictionary, sparse_codes

# -------------------------------------------------------------- _learning


def test_continuation_rounds_never_stop_learning():
    # tol=0.999 is met by every round here (changes of 26-68 %),
    # so learning stops at the first round at the target alpha: round 3, after
    # the documented continuation 10**(1 - (t+1)/4) alpha.
    data = make_compositional(20, 3, n_samples=400, random_state=0)
    coder = FISTACoder(
        n_components=20,
        positive=True,
        alpha=0.05,
        tol=0.999,
        dict_max_iter=50,
        random_state=0,
    ).fit(data.X_train)
    alphas = [h["alpha"] for h in coder.history_]
    np.testing.assert_allclose(alphas, 0.05 * 10 ** (1 - np.arange(1, 5) / 4))


def test_stop_counts_a_newly_unused_atom():
    # Refining the true atoms plus one atom that no non-negative code uses:
    # the first round re-draws it (a newly unused atom), which must count in
    # the stopping rule -- learning may not stop on an untrained atom.
    data = make_compositional(20, 3, n_samples=400, random_state=0)
    X = data.X_train
    anti = -X.mean(0) / np.linalg.norm(X.mean(0))
    tol = 0.05
    coder = FISTACoder(
        init=np.vstack([data.dictionary, anti]),
        positive=True,
        alpha=0.05,
        tol=tol,
        dict_max_iter=100,
        random_state=0,
    ).fit(X)
    h = coder.history_
    assert len(h) < 100
    # Stopped by the rule: the change is within tol, or the only atoms left
    # out are unused in this round and the one before.
    assert h[-1]["dictionary_change"] <= tol or (
        len(h) >= 2 and h[-1]["n_unused"] > 0 and h[-2]["n_unused"] > 0
    )


def test_forgetting_factor_is_mairals():
    # A zero batch codes to zero, so the statistics are only down-weighted:
    # at step t=1 (t < eta - 1), theta = 2 eta and beta = (eta + 1)/(2 eta + 1).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 6, 5))
    eta = 8
    X = torch.from_numpy(sparse_codes(rng, eta, 6, 2)) @ D
    D1, s1, _ = online_dictionary_update(X, D, None, explore=False)
    _, s2, _ = online_dictionary_update(torch.zeros_like(X), D1, s1, explore=False)
    beta = (eta + 1) / (2 * eta + 1)
    torch.testing.assert_close(s2["A"], beta * s1["A"])
    torch.testing.assert_close(s2["B"], beta * s1["B"])


def test_fit_statistics_weigh_as_ceil_batches():
    # Batches of 8 identical rows: every row has the same code, so a fit's
    # per-sample averages over 38 such rows equal one batch's, and they must
    # enter as ceil(38 / 8) = 5 streamed batches do (the documented rule).
    rng = np.random.default_rng(0)
    D = torch.from_numpy(random_dictionary(rng, 6, 5))
    x = torch.from_numpy(sparse_codes(rng, 1, 6, 2)) @ D
    X = x.repeat(8, 1)
    streamed = None
    for _ in range(5):
        _, streamed, _ = online_dictionary_update(X, D, streamed, explore=False)
    codes = fista_encode(x, D, alpha=0.1).codes
    fitted = batch_statistics(codes.repeat(38, 1), x.repeat(38, 1))
    _, after_stream, _ = online_dictionary_update(X, D, streamed, explore=False)
    _, after_fit, _ = online_dictionary_update(X, D, fitted, explore=False)
    assert after_fit["n_steps"] == after_stream["n_steps"] == 6
    torch.testing.assert_close(after_fit["A"], after_stream["A"])


def test_resampled_atom_forgets_its_statistics():
    X, atoms = near_duplicate_stream()
    _, stats, record = online_dictionary_update(
        X, atoms, None, alpha=0.01, positive=True
    )
    assert record["n_resampled"] == 1
    zero_rows = [
        j for j in range(3) if not stats["A"][j].any() and not stats["B"][j].any()
    ]
    assert len(zero_rows) == 1 and zero_rows[0] in (0, 1)
    assert not stats["A"][:, zero_rows[0]].any()


def test_intercept_of_wrong_length_is_refused():
    class Provider:
        components_ = np.eye(3)
        intercept_ = np.ones(1)

    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="intercept_ has 1 entries"):
        FISTACoder(dictionary=Provider()).fit(X)


def test_zero_target_keeps_the_atom():
    # v_0 = B_0 - A_0 D + A_00 d_0 = 0: every unit atom is equally good and
    # the current one is kept (a zero atom would break every later step).
    D = torch.eye(2, dtype=torch.float64)
    A = torch.eye(2, dtype=torch.float64)
    B = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = block_coordinate_update(D, A, B)
    torch.testing.assert_close(out, D)


def test_unfitted_frozen_provider_raises_not_fitted():
    X = np.random.default_rng(0).random((5, 3))
    with pytest.raises(NotFittedError):
        FISTACoder(dictionary=FrozenEstimator(PCA(2))).fit(X)


def test_momentum_step_closed_form():
    # One exploring round with at most 3 atoms per feature returns the
    # momentum step A + 0.95 (A - D0), A the normalised least-squares atoms of
    # the round's codes (returned rescaled to A) and D0 the drawn atoms.
    data = make_compositional(20, 3, n_samples=400, random_state=0)
    X = torch.from_numpy(data.X_train)
    res = learn_dictionary(
        X,
        20,
        alpha=0.05,
        positive=True,
        dict_max_iter=1,
        generator=torch.Generator().manual_seed(0),
    )
    D0 = initial_dictionary(X.float(), 20, torch.Generator().manual_seed(0)).double()
    Z = res.codes
    used = (Z != 0).any(0)
    A = torch.linalg.lstsq(Z[:, used], X).solution
    A = A / A.norm(dim=1, keepdim=True)
    expected = _normalize_atoms(A + 0.95 * (A - D0[used]))[0]
    torch.testing.assert_close(res.components[used], expected, atol=1e-4, rtol=0)


# ------------------------------------------------------------ SAE


def _positive_problem(n=128, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, d))


def test_aux_k_starts_once_dead_after_samples_are_reached(monkeypatch):
    X = _positive_problem()
    masks = []
    epoch = _training._epoch

    def spy(*args, dead, **kwargs):
        masks.append(None if dead is None else dead.clone())
        return epoch(*args, dead=dead, **kwargs)

    monkeypatch.setattr(_training, "_epoch", spy)
    D = random_dictionary(np.random.default_rng(1), 4, 6)
    D[0] = -np.abs(D[0])  # positive data: latent 0 never fires
    SparseAutoencoder(
        activation="topk",
        k=1,
        decoder=D,
        aux_k=1,
        dead_after=len(X),
        bias_init="zero",
        max_epochs=2,
        random_state=0,
    ).fit(X)
    # After one epoch (len(X) samples) without firing, latent 0 is dead.
    assert masks[1] is not None and bool(masks[1][0])


def test_dead_fraction_of_relu_counts_silent_latents():
    X = _positive_problem()
    D = random_dictionary(np.random.default_rng(1), 4, 6)
    D[:2] = -np.abs(D[:2])  # on positive data latents 0 and 1 never fire
    sae = SparseAutoencoder(
        decoder=D,
        bias_init="zero",
        lr=1e-9,
        max_epochs=2,
        batch_size=32,
        random_state=0,
    ).fit(X)
    never = float((sae.transform(X) == 0).all(axis=0).mean())
    assert never >= 0.5
    assert sae.history_[-1]["dead_fraction"] == pytest.approx(never)


def test_val_loss_is_the_training_objective():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    coef = 0.05
    sae = SparseAutoencoder(
        8,
        sparsity_coef=coef,
        lr=1e-2,
        max_epochs=40,
        batch_size=32,
        validation_fraction=0.25,
        n_iter_no_change=3,
        tol=0.0,
        random_state=0,
    )
    with _nowarn():
        sae.fit(X)
    seed = check_random_state(0).randint(2**31 - 1)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(seed))
    X_val = torch.as_tensor(X)[order[:50]]
    out = sae.module_(X_val)
    objective = float(
        ((out.x_hat - X_val) ** 2).mean() + coef * out.codes.abs().sum(1).mean()
    )
    assert min(h["val_loss"] for h in sae.history_) == pytest.approx(
        objective, rel=1e-10
    )


class _nowarn:
    def __enter__(self):
        import warnings

        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *a):
        self._c.__exit__(*a)


def test_training_loss_includes_the_auxiliary_term():
    X = _positive_problem()
    D = random_dictionary(np.random.default_rng(1), 4, 6)
    D[0] = -np.abs(D[0])  # latent 0 never fires: dead after the first epoch
    params = dict(
        activation="topk",
        k=1,
        decoder=D,
        bias_init="zero",
        max_epochs=3,
        dead_after=len(X),
        random_state=0,
    )
    plain = SparseAutoencoder(**params).fit(X)
    assert all(h["loss"] == pytest.approx(h["mse"], rel=1e-12) for h in plain.history_)
    aux = SparseAutoencoder(aux_k=1, aux_coef=1.0, **params).fit(X)
    assert aux.history_[0]["loss"] == pytest.approx(aux.history_[0]["mse"], rel=1e-12)
    assert all(h["loss"] > h["mse"] for h in aux.history_[1:])


def test_decoder_step_is_adamw_on_the_projected_gradient():
    # One full batch, one step: AdamW's first step is lr * g / (|g| + eps)
    # (moments bias-corrected), after decoupled weight decay; then the atoms
    # are renormalised. g is the MSE gradient projected onto the sphere.
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((32, 6)))
    D0 = torch.from_numpy(random_dictionary(rng, 5, 6))
    lr, wd = 1e-2, 0.01
    sae = SparseAutoencoder(
        activation="topk",
        k=2,
        decoder=D0.numpy(),
        bias_init="zero",
        lr=lr,
        weight_decay=wd,
        batch_size=32,
        max_epochs=1,
        random_state=0,
    ).fit(X.numpy())
    W = D0.clone().requires_grad_(True)
    pre = X @ D0.T
    top = pre.topk(2, dim=1)
    z = torch.zeros_like(pre).scatter(1, top.indices, top.values.relu())
    loss = ((z @ W - X) ** 2).mean()
    (g,) = torch.autograd.grad(loss, W)
    g = g - (g * D0).sum(1, keepdim=True) * D0
    step = D0 * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
    expected = step / step.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(sae.components_, expected.numpy(), atol=1e-6)


def test_mean_bias_uses_training_rows_only():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    X[:, 0] += np.arange(40)  # rows differ in their mean
    with _nowarn():
        sae = SparseAutoencoder(
            4, lr=1e-12, max_epochs=1, validation_fraction=0.25, random_state=0
        ).fit(X)
    seed = check_random_state(0).randint(2**31 - 1)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(sae.intercept_, X[order[10:]].mean(0), atol=1e-8)


def test_aux_k_ignored_by_relu_even_with_dead_latents():
    X = _positive_problem()
    D = random_dictionary(np.random.default_rng(1), 4, 6)
    D[0] = -np.abs(D[0])  # latent 0 never fires: dead after the first epoch
    params = dict(decoder=D, bias_init="zero", max_epochs=3, random_state=0)
    plain = SparseAutoencoder(**params).fit(X)
    with _nowarn():
        with_aux = SparseAutoencoder(aux_k=1, aux_coef=1.0, **params).fit(X)
    assert plain.history_[-1]["dead_fraction"] > 0
    np.testing.assert_array_equal(with_aux.components_, plain.components_)
    assert with_aux.history_ == plain.history_


def test_early_stopping_tol_is_relative():
    # A loss of order 1e4 improving by ~0.1 % an epoch: each improvement is far
    # above an absolute 1e-2 but below a relative one, so patience runs out.
    rng = np.random.default_rng(0)
    X = 100.0 * rng.standard_normal((200, 6))
    tol, patience = 1e-2, 3
    with _nowarn():
        sae = SparseAutoencoder(
            8,
            activation="topk",
            k=2,
            lr=1e-3,
            max_epochs=60,
            validation_fraction=0.25,
            n_iter_no_change=patience,
            tol=tol,
            random_state=0,
        ).fit(X)
    val = [h["val_loss"] for h in sae.history_]
    best, stale, expected = math.inf, 0, len(val)
    for i, v in enumerate(val):
        stale = 0 if v < best * (1 - tol) else stale + 1
        best = min(best, v)
        if stale >= patience:
            expected = i + 1
            break
    assert len(val) == expected


# ------------------------------------------------------------ split / metrics


def _signed_activity(seed=0):
    rng = np.random.default_rng(seed)
    Z = sparse_codes(rng, 120, 6, 2)
    return Z * rng.choice([-1.0, 1.0], Z.shape)


@pytest.mark.parametrize("fmt", [np.asarray, sp.csr_matrix])
def test_split_reads_the_absolute_concept_activity(fmt):
    Z = _signed_activity()
    X = np.zeros((len(Z), 1))
    cv = CompositionalSplit(n_splits=3, random_state=0)
    a = [t.tolist() for _, t in cv.split(X, fmt(Z))]
    b = [t.tolist() for _, t in cv.split(X, np.abs(Z))]
    assert a == b


def test_split_ignores_stored_values_below_threshold():
    rng = np.random.default_rng(0)
    Z = sparse_codes(rng, 120, 6, 2)
    noise = sp.random(
        120, 6, density=0.3, random_state=0, data_rvs=lambda n: np.full(n, 1e-3)
    )
    stored = sp.csr_matrix(Z) + noise
    cv = CompositionalSplit(n_splits=3, threshold=0.01, random_state=0)
    X = np.zeros((120, 1))
    a = [t.tolist() for _, t in cv.split(X, stored)]
    b = [t.tolist() for _, t in cv.split(X, stored.toarray())]
    assert a == b


def test_split_refuses_a_concept_index_out_of_range():
    Z = sparse_codes(np.random.default_rng(0), 60, 4, 2)
    with pytest.raises(ValueError, match="concepts must be column indices"):
        list(CompositionalSplit(concepts=[4]).split(np.zeros((60, 1)), Z))


def test_sparse_negative_latents_correlate_as_dense():
    rng = np.random.default_rng(0)
    # -1 indicators with implicit zeros
    Z = -(sparse_codes(rng, 50, 4, 2) > 0).astype(float)
    codes = Z @ rng.standard_normal((4, 4)) + 0.1 * rng.standard_normal((50, 4))
    assert mcc_score(sp.csr_matrix(-Z), codes) == pytest.approx(mcc_score(-Z, codes))
    assert mcc_score(sp.csr_matrix(Z), codes) == pytest.approx(mcc_score(Z, codes))


def test_support_scores_ignore_stored_values_below_threshold():
    rng = np.random.default_rng(0)
    Z = sparse_codes(rng, 50, 4, 2)
    stored = sp.csr_matrix(Z) + sp.random(
        50, 4, density=0.3, random_state=0, data_rvs=lambda n: np.full(n, 1e-6)
    )
    codes = Z + 0.01 * rng.standard_normal(Z.shape)
    m = np.arange(4)
    assert support_scores(stored, codes, matching=m) == pytest.approx(
        support_scores(stored.toarray(), codes, matching=m)
    )


def test_unmatched_atoms_have_right_angle_error():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((4, 6))
    info = dictionary_similarity(D, D[:2], detailed=True)
    np.testing.assert_allclose(info.angular_errors[info.matching < 0], np.pi / 2)


def test_matching_below_minus_one_is_refused():
    Z = np.eye(3)
    with pytest.raises(ValueError, match="matching entries"):
        support_scores(Z, Z, matching=[0, 1, -2])
