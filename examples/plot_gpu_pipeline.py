"""
==================================
A scikit-learn pipeline on the GPU
==================================

skdict estimators take torch tensors and return tensors on the same device and
with the same dtype. With scikit-learn's array-API dispatch switched on, the
scikit-learn steps that support the array API do the same, so a whole
:class:`~sklearn.pipeline.Pipeline` — sparse coding, scaling, a classifier —
runs on the GPU without a copy to the host.

This example uses CUDA when it is available. Without a GPU it runs the same
pipeline on CPU tensors, which exercises exactly the same code paths.
"""

# %%
# Set-up
# ------
# Array-API dispatch needs SciPy 1.14 or newer, in its array-API mode, which
# must be switched on before SciPy is first imported (scikit-learn brings its
# own copy of ``array-api-compat``). The line below does it when this script
# runs on its own; in a notebook or a larger program, export
# ``SCIPY_ARRAY_API=1`` in the shell before Python starts.
import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import torch

if torch.cuda.is_available():
    device = torch.device("cuda")
    print(f"Running on {torch.cuda.get_device_name(device)}.")
else:
    device = torch.device("cpu")
    print("CUDA is not available: running the pipeline on CPU tensors instead.")

# %%
# Data as tensors
# ---------------
# Activations usually come out of a network as float32 tensors already on the
# GPU. Here they are synthetic.
from skdict.datasets import make_compositional

data = make_compositional(n_latents=100, n_active=5, n_samples=4000, random_state=0)


def tensor(array, dtype=torch.float32):
    return torch.as_tensor(array, dtype=dtype, device=device)


X_train, y_train = tensor(data.X_train), tensor(data.y_train, torch.int64)
X_ood, y_ood = tensor(data.X_ood), tensor(data.y_ood, torch.int64)
dictionary = tensor(data.dictionary)

# %%
# The pipeline
# ------------
# Sparse codes from FISTA with the true dictionary, standardised, then a
# logistic-regression probe. ``sklearn.config_context`` switches dispatch on for
# this block only; ``sklearn.set_config(array_api_dispatch=True)`` does it for
# the whole session.
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdict import FISTACoder

pipe = make_pipeline(
    FISTACoder(dictionary=dictionary, alpha=0.1, positive=True),
    StandardScaler(),
    LogisticRegression(),
)
with sklearn.config_context(array_api_dispatch=True):
    pipe.fit(X_train, y_train)
    predictions = pipe.predict(X_ood)
    accuracy = pipe.score(X_ood, y_ood)

print(
    f"predictions: {type(predictions).__name__} on {predictions.device}, "
    f"dtype {predictions.dtype}"
)
print(f"OOD accuracy: {accuracy:.3f}")

# %%
# Every step kept the data where it was: the codes, the scaler's statistics
# and the classifier's coefficients are tensors on the same device.
with sklearn.config_context(array_api_dispatch=True):
    codes = pipe[0].transform(X_ood)
print("codes:", type(codes).__name__, codes.device, codes.dtype, tuple(codes.shape))
print("scaler mean:", type(pipe[1].mean_).__name__, pipe[1].mean_.device)
print("coefficients:", type(pipe[2].coef_).__name__, pipe[2].coef_.device)

# %%
# The same with a linear probe
# ----------------------------
# :class:`~sklearn.linear_model.RidgeCV` supports the array API too; the
# paper's supervised linear probe (its penalties, no intercept, as in
# :ref:`sphx_glr_auto_examples_plot_probing_vs_coding.py`) predicts all the
# true latents from the activations, and its predictions stay on the device.
import matplotlib.pyplot as plt
from sklearn.linear_model import RidgeCV

from skdict.experiments import PaperSettings

with sklearn.config_context(array_api_dispatch=True):
    ridge = RidgeCV(alphas=PaperSettings().probe_alphas, fit_intercept=False)
    ridge.fit(tensor(data.X_train), tensor(data.Z_train))
    latent_0 = ridge.predict(X_ood)[:, 0]
    fista_0 = codes[:, 0]
print("ridge predictions on", latent_0.device)

fig, ax = plt.subplots(figsize=(5, 3.4))
truth = data.Z_ood[:, 0]
# Translucent, the probe on top: drawn opaque, the FISTA points hid a quarter
# of the probe's cloud, where it runs along the diagonal.
ax.scatter(truth, fista_0.cpu().numpy(), s=4, alpha=0.5, label="FISTA codes")
ax.scatter(
    truth,
    latent_0.cpu().numpy(),
    s=4,
    alpha=0.5,
    marker="x",
    linewidths=0.8,
    zorder=3,
    label="linear probe (RidgeCV)",
)
ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="y = x")
ax.set_xlabel("true latent 0 (OOD samples)")
ax.set_ylabel("estimate of latent 0")
ax.legend(markerscale=4)
fig.tight_layout()
plt.show()

# %%
# Moving results to the host is explicit (``.cpu().numpy()``), as for any
# tensor. Fitted skdict estimators pickle with their tensors on the CPU, so a
# skdict model fitted on a GPU loads on a machine without one; the
# scikit-learn steps of this pipeline keep theirs on the device, and need one
# to be unpickled.
