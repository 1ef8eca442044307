"""
==========================================
Probing versus coding, out of distribution
==========================================

A linear probe reads a concept straight from the activations. Under
superposition, every other active concept leaks into that read-out; a probe
trained on the usual combinations of concepts learns to cancel the leaks it
has seen, and is caught out by new combinations. Sparse coding first explains
each activation as a few concepts, then reads the concept from the code.

This example trains the same probes on raw activations and on sparse codes
computed with the true dictionary, and evaluates them in distribution (ID) and
on unseen combinations (OOD).
"""

# %%
# One benchmark
# -------------
# 100 concepts in 30 dimensions, 5 active per sample. The label is whether
# latent 0 exceeds 0.5.
import numpy as np

from skdict import FISTACoder
from skdict.datasets import make_compositional
from skdict.metrics import probe_accuracy

data = make_compositional(n_latents=100, n_active=5, n_samples=2000, random_state=0)
coder = FISTACoder(dictionary=data.dictionary, alpha=0.1, positive=True)
coder.fit(data.X_train)  # with its atoms given, fit only checks them
codes_id = coder.transform(data.X_val)
codes_ood = coder.transform(data.X_ood)

# %%
# :func:`~skdict.metrics.probe_accuracy` fits an unpenalised logistic
# regression on ID data and scores it on OOD data, as the paper does; its ID
# accuracy is that of the fit on its own data. It applies to any
# representation: the raw activations or the codes.
on_activations = probe_accuracy(data.X_val, data.y_val, data.X_ood, data.y_ood)
on_codes = probe_accuracy(codes_id, data.y_val, codes_ood, data.y_ood)
print("probe on activations:", on_activations)
print("probe on codes:      ", on_codes)

# %%
# A supervised linear probe for every concept
# -------------------------------------------
# The paper's linear baseline regresses all the true latents on the
# activations with ridge regression, its penalty chosen by leave-one-out
# cross-validation and no intercept: plain
# :class:`~sklearn.linear_model.RidgeCV` with the paper's penalties (those of
# :class:`~skdict.experiments.PaperSettings`). It sees the true codes of the
# training half, which no sparse coder does. Compare its estimate of latent 0
# with the coder's, in and out of distribution.
import matplotlib.pyplot as plt
from sklearn.linear_model import RidgeCV

from skdict.experiments import PaperSettings

probe = RidgeCV(alphas=PaperSettings().probe_alphas, fit_intercept=False)
probe.fit(data.X_train, data.Z_train)

# Only samples in which latent 0 is present are shown: every OOD sample, about
# half of the ID ones.
present = data.Z_val[:, 0] > 0
estimates = {
    "linear probe (RidgeCV)": (probe.predict(data.X_val), probe.predict(data.X_ood)),
    "FISTA codes, true dictionary": (codes_id, codes_ood),
}
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
for ax, (name, (est_id, est_ood)) in zip(axes, estimates.items(), strict=True):
    # ID above OOD: twice as many OOD points hid the ID cloud.
    ax.scatter(
        data.Z_val[present, 0], est_id[present, 0], s=3, alpha=0.5, label="ID", zorder=3
    )
    ax.scatter(data.Z_ood[:, 0], est_ood[:, 0], s=3, alpha=0.5, label="OOD")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set_xlabel("true latent 0")
    ax.set_title(name)
    r_id = np.corrcoef(data.Z_val[present, 0], est_id[present, 0])[0, 1]
    r_ood = np.corrcoef(data.Z_ood[:, 0], est_ood[:, 0])[0, 1]
    print(f"{name:>30}: correlation with latent 0, ID {r_id:.3f}, OOD {r_ood:.3f}")
axes[0].set_ylabel("estimate of latent 0")
axes[0].legend(markerscale=4)
fig.tight_layout()

# %%
# The probe's estimate is noisy even in distribution — the other active
# concepts leak into it — and noisier out of distribution, where latent 0 meets
# partners whose leaks the probe never learned to cancel. The sparse code
# stays close to the diagonal in both, shrunk by about ``alpha``.
#
# More concepts in superposition
# ------------------------------
# Repeat the comparison as the number of concepts grows, with the dimension at
# the compressed-sensing bound for each, over three draws of the data: the
# lines are the means, the bands the lowest and highest draw.
n_latents_grid = [20, 50, 100, 200]
seeds = [0, 1, 2]
accuracy = {
    name: np.zeros((len(n_latents_grid), len(seeds), 2))
    for name in ("activations", "codes")
}  # (n_latents, seed, ID / OOD)
for i, n_latents in enumerate(n_latents_grid):
    for j, seed in enumerate(seeds):
        data = make_compositional(
            n_latents=n_latents, n_active=5, n_samples=2000, random_state=seed
        )
        coder = FISTACoder(dictionary=data.dictionary, alpha=0.1, positive=True)
        coder.fit(data.X_train)
        inputs = {
            "activations": (data.X_val, data.X_ood),
            "codes": (coder.transform(data.X_val), coder.transform(data.X_ood)),
        }
        for name, (X_id, X_ood) in inputs.items():
            scores = probe_accuracy(X_id, data.y_val, X_ood, data.y_ood)
            accuracy[name][i, j] = scores["acc_id"], scores["acc_ood"]

fig, ax = plt.subplots(figsize=(8, 4.4))
for k, (name, values) in enumerate(accuracy.items()):
    for split, style in ((0, "--"), (1, "-")):
        ax.plot(
            n_latents_grid,
            values[:, :, split].mean(axis=1),
            style,
            color=f"C{k}",
            marker="o",
            label=f"probe on {name}, {('ID', 'OOD')[split]}",
        )
    ax.fill_between(
        n_latents_grid,
        values[:, :, 1].min(axis=1),
        values[:, :, 1].max(axis=1),
        color=f"C{k}",
        alpha=0.2,
        label=f"probe on {name}, OOD: lowest to highest draw",
    )
    print(f"{name:>11}, OOD accuracy per draw:", np.round(values[:, :, 1], 3).tolist())
ax.set_xscale("log")
ax.set_xticks(n_latents_grid, [str(n) for n in n_latents_grid])
ax.minorticks_off()
ax.set_xlabel("number of latents")
ax.set_ylabel("probe accuracy")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small")
fig.tight_layout()
plt.show()

# %%
# In distribution both probes do well. Out of distribution the probe on raw
# activations loses much of its accuracy, while from 50 concepts on the probe
# on sparse codes keeps most of it, in every draw: once each activation is
# explained as a few concepts, the new combinations no longer interfere. The
# gap is the paper's title: stop probing, start coding — given a good
# dictionary.
#
# With 20 concepts the codes' OOD accuracy depends on the draw. The OOD pool
# is ten concepts that the probe's data show only without latent 0, each in
# one sample in eight, so there any of them means label 0; on clean codes the
# unpenalised probe learns that shortcut (large negative weights on those
# concepts), and it fails on the OOD samples, where they appear with latent 0.
# With more concepts each is rarer (one sample in 19 at 50 concepts, in 40 at
# 100) and the shortcut buys the probe little. A probe on codes inherits
# the training distribution's regularities too; only unseen combinations
# reveal which it relies on.
#
# How to tell whether a learned dictionary is good enough is the subject of
# :ref:`sphx_glr_auto_examples_plot_diagnose_sae.py`.
