"""
=====================================
Sparse coding of your own activations
=====================================

The other examples start from :func:`~skdict.datasets.make_compositional`. With
a model of your own, the activations come out of a forward hook, usually in
batches, and there is no true dictionary to compare with. This example takes
them from a small torch module, learns a dictionary from the stream of
batches with :meth:`~skdict.FISTACoder.partial_fit`, and checks it the ways
that need no ground truth: reconstruction, sparsity, and concept labels where
some exist.
"""

# %%
# A model and a hook
# ------------------
# The stand-in model embeds 60 binary features in 24 dimensions (more
# features than dimensions: superposition), as a transformer's residual stream
# holds more concepts than it has dimensions. Its layer of interest is the
# embedding; a forward hook keeps each batch's output.
import torch

torch.manual_seed(0)
n_concepts, width = 60, 24
model = torch.nn.Sequential(
    torch.nn.Linear(n_concepts, width, bias=False),  # the layer we read
    torch.nn.ReLU(),
    torch.nn.Linear(width, 2),
)
captured = []
hook = model[0].register_forward_hook(
    lambda module, inputs, output: captured.append(output.detach())
)


def batch(n_rows, generator):
    """Inputs with 3 active features each, at random strengths."""
    active = torch.rand(n_rows, n_concepts, generator=generator).argsort(dim=1) < 3
    strength = torch.rand(n_rows, n_concepts, generator=generator) + 0.5
    return active * strength


# %%
# Learning from the stream
# ------------------------
# Each forward pass hands one batch of activations to ``partial_fit``, which
# updates the dictionary from running statistics (Mairal et al., 2010): the
# activations never have to be held in memory at once. The first batch should
# hold at least as many rows as there are atoms to learn. ``alpha`` is in the
# activations' units: these rows have norm about 0.65, while a transformer's are
# often ten to a hundred times longer; divide such activations by their
# root-mean-square norm first, or scale ``alpha`` with it (see
# :ref:`own-activations`).
from skdict import FISTACoder

coder = FISTACoder(n_components=n_concepts, alpha=0.05, positive=True, random_state=0)
generator = torch.Generator().manual_seed(1)
with torch.no_grad():
    for _ in range(80):  # 80 forward passes of 256 inputs
        model(batch(256, generator))
        coder.partial_fit(captured.pop())
hook.remove()
print("steps:", coder.n_iter_, " atoms:", tuple(coder.components_.shape))

# %%
# Checks that need no ground truth
# --------------------------------
# On held-out activations: how much of them the codes reconstruct, and how
# many atoms each code uses. A dictionary can reconstruct well with dense
# codes, or be sparse and lose the data; both numbers are needed. Here about 7
# atoms code each sample, where 3 features made it: some learned atoms mix
# features, and some features are split between atoms.
from skdict.metrics import reconstruction_error

inputs = batch(2000, torch.Generator().manual_seed(2))
with torch.no_grad():
    X = model[0](inputs)
codes = coder.transform(X)
relative = reconstruction_error(X, coder.inverse_transform(codes)) / X.pow(2).mean()
print(f"relative reconstruction error: {float(relative):.3f}")
print(f"atoms per sample (L0): {float((codes > 0).sum(dim=1).float().mean()):.2f}")

# %%
# Concept labels, where some exist
# --------------------------------
# Labels of a concept (here, whether an input feature is on) say whether a
# single atom carries it: the best-feature AUC scores how well one code
# dimension detects the concept. Where the concepts' values are known for
# some samples, :class:`~skdict.OracleDictionary` estimates their directions
# from them by least squares: a reference to compare the learned atoms with,
# and a coder in its own right. (Here the model's weights are the true
# directions, so the last line is a check this example can afford and yours
# usually cannot.)
from skdict import OracleDictionary
from skdict.metrics import best_feature_auc, dictionary_similarity

labels = inputs > 0
for concept in range(3):
    auc = best_feature_auc(codes, labels[:, concept])["auc_id"]
    print(f"concept {concept}: best single atom detects it with AUC {auc:.3f}")
oracle = OracleDictionary().fit(X, inputs)
print(
    f"learned atoms vs estimated directions: {dictionary_similarity(oracle, coder):.3f}"
)
print(
    f"estimated directions vs the weights:   "
    f"{dictionary_similarity(model[0].weight.T, oracle):.3f}"
)
