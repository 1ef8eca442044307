"""The paper's studies: method registry, records, resumable runs and the CLI."""

import dataclasses
import errno
import inspect
import io
import json
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections import UserDict
from pathlib import Path

import numpy as np
import pytest
import scipy
import scipy.sparse as sp
import sklearn
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import RidgeCV
from sklearn.utils import Bunch

import skdict
from skdict.__main__ import main
from skdict._files import exclusive_access
from skdict.datasets import make_compositional
from skdict.experiments import (
    ENVIRONMENT_KEYS,
    METHODS,
    RECORD_KEYS,
    PaperSettings,
    _compare,
    _runner,
    compare_methods,
    format_table,
    load_records,
    run_study,
    summarize,
)
from skdict.experiments._methods import SAE_METHODS, MethodContext, methods_needing_k
from skdict.experiments._report import describe_setting
from skdict.experiments._studies import STUDIES, Cell, study_cells
from skdict.metrics import (
    best_feature_auc,
    dictionary_similarity,
    mcc_score,
    probe_accuracy,
    reconstruction_error,
    support_scores,
)

TINY = PaperSettings(sae_epochs=2, dict_max_iter=3)
RECORD = {"key": "k", "method": "fista_oracle", "label": "FISTA (oracle dictionary)"}
TINY_DATA = {"n_active": 2, "n_samples": 200}


@pytest.fixture(scope="module")
def data():
    return make_compositional(n_latents=12, n_active=2, n_samples=200, random_state=0)


def test_every_method_is_a_public_estimator(data):
    public = (
        skdict.FISTACoder,
        skdict.SparseAutoencoder,
        skdict.OracleDictionary,
        RidgeCV,
    )
    context = MethodContext(data, TINY, 0, "cpu")
    for name, method in METHODS.items():
        estimator = method.build(context)
        assert type(estimator) in public, name
        for value in estimator.get_params().values():
            if hasattr(value, "fit"):
                assert type(value).__module__.split(".")[0] in ("skdict", "sklearn")


def test_method_configurations_follow_the_design(data):
    # DESIGN.md's table of methods, row by row: which estimator, coding with
    # which dictionary, warm-started from what.
    context = MethodContext(data, TINY, 0, "cpu")
    build = {name: method.build(context) for name, method in METHODS.items()}
    oracle = build["fista_oracle"]
    assert isinstance(oracle, skdict.OracleDictionary) and oracle.positive
    np.testing.assert_array_equal(oracle.dictionary, data.dictionary)
    learner = build["dl_fista"]
    assert learner.dictionary is None and learner.init is None
    assert learner.n_components == data.dictionary.shape[0]
    for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp"):
        sae = build[f"sae_{activation}"]
        assert sae.activation == activation and sae.decoder is None
    base = context.fitted_sae(TINY.base_sae)
    on_sae = build["sae_dict_fista"]
    assert isinstance(on_sae.dictionary, FrozenEstimator) and on_sae.init is None
    assert on_sae.dictionary.estimator is base
    refined = build["sae_refined_fista"]
    assert refined.dictionary.estimator is base and refined.init.estimator is base
    warm = build["dl_fista_sae_init"]
    assert warm.dictionary is None and warm.init.estimator is base
    encoder = build["oracle_sae_encoder"]
    assert isinstance(encoder.decoder, skdict.OracleDictionary)
    np.testing.assert_array_equal(encoder.decoder.dictionary, data.dictionary)
    assert encoder.freeze_decoder
    # The paper's probe: leave-one-out over its penalties, no intercept.
    probe = build["linear_probe"]
    assert isinstance(probe, RidgeCV) and not probe.fit_intercept
    assert tuple(probe.alphas) == PaperSettings().probe_alphas
    assert PaperSettings().probe_alphas == (1e-6, 1e-4, 1e-2, 1.0, 10.0)
    for name in METHODS:
        coder = build[name]
        if isinstance(coder, skdict.FISTACoder) or name == "fista_oracle":
            assert coder.positive and coder.alpha == TINY.alpha, name


def test_the_paper_preset_follows_the_paper(data):
    # DESIGN.md's recipe: a slip in any of these changes every number that
    # `skdict reproduce --preset paper` prints, and no other test would fail.
    paper = PaperSettings()
    assert (paper.alpha, paper.sparsity_coef) == (0.1, 1e-4)
    assert (paper.sae_lr, paper.sae_batch_size, paper.sae_epochs) == (5e-4, 64, 500)
    context = MethodContext(data, paper, 0, "cpu")
    for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp"):
        sae = context.sae(activation)
        assert sae.n_components == data.dictionary.shape[0]  # width = n_latents
        assert (sae.lr, sae.batch_size, sae.max_epochs) == (5e-4, 64, 500)
        assert sae.sparsity_coef == 1e-4
        if activation in ("topk", "batchtopk", "mp"):
            assert sae.k == data.n_active  # k = the true k
    # JumpReLU: thresholds start at 1e-3, bandwidth 1e-3 (the estimator's
    # defaults, which the method relies on).
    jumprelu = context.sae("jumprelu")
    assert (jumprelu.threshold_init, jumprelu.bandwidth) == (1e-3, 1e-3)
    # The sweeps, 3 seeds each.
    sweeps = {
        "vary_latents": ("n_latents", [50, 100, 500, 1000, 5000, 10000]),
        "vary_sparsity": ("n_active", [2, 5, 10, 20, 50, 100]),
        "vary_samples": (
            "n_samples",
            [100, 500, 1000, 5000, 10000, 50000, 100000],
        ),
    }
    fixed = {
        "vary_latents": {"n_active": 10, "n_samples": 5000},
        "vary_sparsity": {"n_latents": 1000, "n_samples": 5000},
        "vary_samples": {"n_latents": 100, "n_active": 10},
    }
    for study, (variable, values) in sweeps.items():
        cells = study_cells(study, preset="paper")
        assert sorted({cell.seed for cell in cells}) == [0, 1, 2]
        assert sorted({cell.data_params[variable] for cell in cells}) == values
        for cell in cells:
            params = dict(cell.data_params)
            del params[variable]
            assert params == fixed[study], study


def test_sparse_autoencoder_defaults_are_the_contracts():
    # DESIGN.md's public API fixes lr and batch_size; the paper's JumpReLU
    # starts thresholds and bandwidth at 1e-3.
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(
            skdict.SparseAutoencoder
        ).parameters.items()
    }
    assert defaults["lr"] == 5e-4 and defaults["batch_size"] == 64
    assert defaults["activation"] == "relu" and defaults["device"] == "auto"
    assert defaults["threshold_init"] == 1e-3 and defaults["bandwidth"] == 1e-3
    coder = inspect.signature(skdict.FISTACoder).parameters
    assert coder["alpha"].default == 0.1 and coder["positive"].default is False
    assert coder["max_iter"].default == 1000 and coder["tol"].default == 1e-6
    assert inspect.signature(skdict.OracleDictionary).parameters["positive"].default


def test_saes_start_their_decoder_bias_at_zero_as_in_the_paper(data):
    paper = MethodContext(data, PaperSettings(), 0, "cpu")
    for activation in ("relu", "topk", "batchtopk", "jumprelu", "mp"):
        assert paper.sae(activation).bias_init == "zero"
    from_mean = MethodContext(data, PaperSettings(sae_bias_init="mean"), 0, "cpu")
    assert from_mean.sae("topk").bias_init == "mean"


def test_compare_methods_records(data):
    records = compare_methods(data, random_state=0, settings=TINY)
    # The paper's main comparison: the controlled study's warm start runs
    # when named only.
    assert [r["method"] for r in records] == [
        "fista_oracle",
        "dl_fista",
        "sae_relu",
        "sae_topk",
        "sae_batchtopk",
        "sae_jumprelu",
        "sae_mp",
        "sae_dict_fista",
        "sae_refined_fista",
        "oracle_sae_encoder",
        "linear_probe",
    ]
    assert set(METHODS) - {r["method"] for r in records} == {"dl_fista_sae_init"}
    for record in records:
        assert set(RECORD_KEYS) <= set(record)
        assert record["fit_time"] >= 0 and record["transform_time"] >= 0
        json.dumps(record)
    # Where they were computed: other thread counts round differently.
    environment = {key: records[0][key] for key in ENVIRONMENT_KEYS}
    assert environment == {
        "device": "cpu",
        "processor": _compare._cpu_name(),
        "threads": torch.get_num_threads(),
        "float32_precision": "ieee",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "sklearn_version": sklearn.__version__,
        "skdict_version": skdict.__version__,
        "skdict_source": _compare._source_digest(),
        "deterministic": False,
    }
    assert environment["processor"] and len(environment["skdict_source"]) == 12
    by_name = {r["method"]: r for r in records}
    assert by_name["fista_oracle"]["mcc_ood"] > 0.9
    # Every score recomputed independently: ID metrics on X_val, OOD ones on
    # X_ood (a swapped split passes any threshold the oracle clears).
    oracle = skdict.OracleDictionary(data.dictionary, alpha=TINY.alpha, positive=True)
    oracle.fit(data.X_val)
    codes_id, codes_ood = oracle.transform(data.X_val), oracle.transform(data.X_ood)
    mse_id = reconstruction_error(data.X_val, oracle.inverse_transform(codes_id))
    mse_ood = reconstruction_error(data.X_ood, oracle.inverse_transform(codes_ood))
    auc = best_feature_auc(codes_id, data.y_val, codes_ood, data.y_ood)
    auc = {key: auc[key] for key in ("auc_id", "auc_ood")}
    expected = {
        "mcc_id": mcc_score(data.Z_val, codes_id),
        "mcc_ood": mcc_score(data.Z_ood, codes_ood, top_variance=True),
        **auc,
        **probe_accuracy(codes_id, data.y_val, codes_ood, data.y_ood),
        "support_f1_ood": support_scores(data.Z_ood, codes_ood)["f1"],
        "l0_ood": support_scores(data.Z_ood, codes_ood)["l0_pred"],
        "mse_id": mse_id,
        "mse_ood": mse_ood,
        "mse_gap": mse_ood - mse_id,
    }
    for key, value in expected.items():
        assert by_name["fista_oracle"][key] == pytest.approx(value, rel=1e-9), key
    assert by_name["fista_oracle"]["dictionary_similarity"] == pytest.approx(1.0)
    assert by_name["linear_probe"]["dictionary_similarity"] is None
    assert by_name["linear_probe"]["mse_id"] is None


def test_source_digest_leaves_out_the_presentation_modules(tmp_path, monkeypatch):
    # skdict_source names the code behind a record: an edit to the CLI or the
    # tables changes no record, and may not make old records look stale; an
    # edit to a solver must.
    package = tmp_path / "skdict"
    shutil.copytree(
        Path(skdict.__file__).parent,
        package,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setattr(_compare, "__file__", str(package / "experiments/_compare.py"))
    digest = _compare._source_digest.__wrapped__  # without the cache
    before = digest()
    for name in ("__main__.py", "experiments/_report.py"):
        (package / name).write_text((package / name).read_text() + "\n# edit\n")
    assert digest() == before
    solver = package / "_fista" / "_working_set.py"
    solver.write_text(solver.read_text() + "\n# edit\n")
    assert digest() != before


def test_support_f1_matches_code_dimensions_to_latents_by_their_atoms(data):
    # As in the paper's support recovery: a matching by correlation, fitted on
    # the OOD codes it then scores, flatters a wrong dictionary (here 0.66
    # against 0.37 by atoms).
    [record] = compare_methods(data, ["sae_topk"], random_state=0, settings=TINY)
    sae = METHODS["sae_topk"].build(MethodContext(data, TINY, 0, "cpu"))
    codes_ood = sae.fit(data.X_train).transform(data.X_ood)
    by_atoms = dictionary_similarity(data.dictionary, sae, detailed=True).matching
    expected = support_scores(data.Z_ood, codes_ood, matching=by_atoms)
    by_correlation = support_scores(data.Z_ood, codes_ood)
    assert record["support_f1_ood"] == pytest.approx(expected["f1"], rel=1e-12)
    assert record["l0_ood"] == pytest.approx(expected["l0_pred"], rel=1e-12)
    assert abs(expected["f1"] - by_correlation["f1"]) > 0.1
    # The record's similarity is the mean matched cosine (0.55 here), not the
    # fraction of atoms beyond 0.9 (0 here): the oracle's 1.0 cannot tell.
    detailed = dictionary_similarity(data.dictionary, sae, detailed=True)
    assert detailed.mean_cosine != detailed.fraction_close
    assert record["dictionary_similarity"] == pytest.approx(
        detailed.mean_cosine, rel=1e-12
    )


def test_compare_methods_on_sparse_codes_matches_dense(data):
    # make_compositional(sparse_codes=True) stores the same codes as CSR
    # matrices; every method, TopK's k and the probe's targets included, must
    # score them as it scores the dense ones.
    sparse = make_compositional(
        n_latents=12, n_active=2, n_samples=200, sparse_codes=True, random_state=0
    )
    timing = ("fit_time", "transform_time")
    dense_records = compare_methods(data, random_state=0, settings=TINY)
    sparse_records = compare_methods(sparse, random_state=0, settings=TINY)
    for dense, from_sparse in zip(dense_records, sparse_records, strict=True):
        for key in set(dense) - set(timing):
            expected = dense[key]
            if isinstance(expected, float):
                expected = pytest.approx(expected, rel=1e-9)
            assert from_sparse[key] == expected, (dense["method"], key)


def test_single_class_labels_leave_auc_and_accuracy_undefined(data):
    keys = ("auc_id", "auc_ood", "acc_id", "acc_ood")
    one_class = Bunch(**data)
    one_class.y_ood = np.zeros_like(data.y_ood)
    with pytest.warns(UndefinedMetricWarning, match="y_ood holds a single class") as w:
        (record,) = compare_methods(one_class, ["fista_oracle"], settings=TINY)
    assert w[0].filename == __file__  # the caller's line
    # Only the OOD AUC needs both classes in y_ood.
    assert record["auc_ood"] is None
    assert all(record[key] is not None for key in ("auc_id", "acc_id", "acc_ood"))
    assert 0.0 <= record["acc_ood"] <= 1.0
    one_class.y_val = np.zeros_like(data.y_val)
    with pytest.warns(UndefinedMetricWarning, match="y_val and y_ood hold"):
        (record,) = compare_methods(one_class, ["fista_oracle"], settings=TINY)
    assert [record[key] for key in keys] == [None] * 4
    assert record["mcc_ood"] > 0.9


@pytest.mark.filterwarnings("ignore:y_ood holds a single class")
def test_single_sample_splits_leave_matching_metrics_undefined():
    # n_samples=3 (accepted by make_compositional) leaves one OOD sample: no
    # latent varies there, so MCC-OOD is undefined; the support scores of
    # that sample are not.
    tiny = make_compositional(n_latents=20, n_active=3, n_samples=3, random_state=0)
    with pytest.warns(UndefinedMetricWarning, match="mcc_ood of 'fista_oracle'"):
        (record,) = compare_methods(tiny, ["fista_oracle"], settings=TINY)
    assert record["mcc_ood"] is None
    assert 0.0 <= record["support_f1_ood"] <= 1.0 and record["l0_ood"] > 0
    assert record["mcc_id"] == pytest.approx(1.0)  # two validation samples
    assert record["mse_ood"] >= 0.0
    # Without atoms, the matching would be fitted on that one sample alone:
    # the probe's support F1 came out as 0.29.
    with pytest.warns(UndefinedMetricWarning, match="mcc_ood, support_f1_ood of"):
        (probe,) = compare_methods(tiny, ["linear_probe"], settings=TINY)
    assert probe["support_f1_ood"] is None and probe["l0_ood"] > 0


@pytest.mark.filterwarnings("ignore:y_val holds a single class")
def test_constant_true_codes_leave_matching_metrics_undefined(data):
    # Data built by hand whose validation rows are all alike: no latent
    # varies, and the metric's error named Z_true, which the caller never
    # passed, after every method had been fitted.
    alike = Bunch(**data)
    alike.X_val = np.repeat(data.X_val[:1], len(data.X_val), axis=0)
    alike.Z_val = np.repeat(data.Z_val[:1], len(data.Z_val), axis=0)
    alike.y_val = np.repeat(data.y_val[:1], len(data.y_val))
    with pytest.warns(UndefinedMetricWarning, match="No latent of Z_val varies"):
        (record,) = compare_methods(alike, ["fista_oracle"], settings=TINY)
    assert record["mcc_id"] is None and record["mcc_ood"] > 0.9


def test_format_table_of_compare_methods_records(data):
    # compare_methods' records have no swept value: one column.
    records = compare_methods(data, ["fista_oracle", "linear_probe"], settings=TINY)
    lines = format_table(records, "mcc_ood").splitlines()
    # One seed measures no spread: the mean alone, not "± 0.00".
    assert lines[0].split() == ["mcc_ood", "mean"]
    assert lines[1].startswith("FISTA (oracle dictionary)")
    assert lines[1].split()[-1] == f"{records[0]['mcc_ood']:.2f}"
    assert "±" not in format_table(records, "mse_ood")
    twice = records + [{**r, "seed": 1, "mcc_ood": 0.5} for r in records]
    assert format_table(twice).splitlines()[0].split() == ["mcc_ood", "mean", "±", "sd"]
    assert " ± " in format_table(twice).splitlines()[1]
    # The probe has no reconstruction: a row of "-", not a missing row.
    lines = format_table(records, "mse_gap").splitlines()
    assert [line.split()[-1] for line in lines[1:]][1] == "-"
    assert lines[2].startswith("Linear probe")


def test_summaries_refuse_a_key_no_record_holds():
    # A misspelt metric once printed "acc_odd: no values" as if the methods
    # had none; every record's None is still "no values".
    records = [
        {"label": "A", "value": 10, "acc_ood": 0.9, "mse_gap": None},
        {"label": "B", "value": 10, "acc_ood": 0.7, "mse_gap": None},
    ]
    for summary in (summarize, format_table):
        with pytest.raises(ValueError, match=r"metric='acc_odd'.*'acc_ood'"):
            summary(records, "acc_odd")
    assert format_table(records, "mse_gap") == "mse_gap: no values"
    assert summarize(records, "mse_gap") == {}
    assert summarize([], "anything") == {}
    # Generators and arrays of records are read once, whole.
    three = [*records, {"label": "A", "value": 10, "acc_ood": 0.7}]
    expected = {"A": {10: (pytest.approx(0.8), pytest.approx(0.1), 2)}}
    assert summarize((r for r in three if r["label"] == "A"), "acc_ood") == expected
    assert summarize(np.array(three), "acc_ood")["A"] == expected["A"]
    with pytest.raises(TypeError, match="wrap a single record in a list"):
        summarize(three[0], "acc_ood")
    assert summarize({0: three[0], 1: three[2]}.values(), "acc_ood") == expected
    for not_records in ([three], [1, 2], ["acc_ood"]):
        with pytest.raises(TypeError, match="sequence of record dicts; it holds"):
            summarize(not_records, "acc_ood")


def test_records_say_the_precision_of_float32_products():
    # bfloat16 products on a CPU (TF32 on a GPU) change float32 SAE training
    # by 1e-3, and records did not say which was on.
    backend = torch.backends.mkldnn.matmul
    saved = backend.fp32_precision
    try:
        backend.fp32_precision = "bf16"
        assert _compare.computed_with("cpu", None)["float32_precision"] == "bf16"
    finally:
        backend.fp32_precision = saved
    assert _compare.computed_with("cpu", None)["float32_precision"] == "ieee"


def test_devices_other_than_the_cpu_start_before_the_first_method(data, monkeypatch):
    # A GPU's lazy start (context, cuBLAS, cuSOLVER, cuSPARSE) counted in the
    # first method's fit time. Checked without a GPU: the warm-up runs on
    # the CPU, and compare_methods calls it for a device reported as CUDA.
    _compare.warm_up(torch.device("cpu"))
    started = []
    monkeypatch.setattr(_compare, "warm_up", started.append)
    compare_methods(data, ["linear_probe"], settings=TINY)
    assert started == []
    environment = {**_compare.computed_with("cpu", data.X_train), "device": "cuda:0"}
    monkeypatch.setattr(_compare, "computed_with", lambda *args: environment)
    (record,) = compare_methods(data, ["linear_probe"], settings=TINY)
    assert started == [torch.device("cuda:0")] and record["device"] == "cuda:0"


def test_summaries_warn_when_settings_are_pooled_as_seeds(tmp_path):
    # A results file keeps the records of every run: a run at alpha=0.5 beside
    # one at 0.1 was averaged with it as a second seed ("0.85 +- 0.13").
    kwargs = {
        "values": [12],
        "data_params": {"n_samples": 200, "n_active": 2},
        "methods": ["fista_oracle"],
        "out": tmp_path,
        "progress": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = run_study("vary_latents", **kwargs)
        format_table(first)
    second = run_study("vary_latents", settings=PaperSettings(alpha=0.5), **kwargs)
    saved = load_records(tmp_path / "vary_latents-quick.json")
    assert len(saved) == 2
    with pytest.warns(UserWarning, match="Records of 2 different settings are pooled"):
        format_table(saved)
    # Every pooled cell is counted, not only the first.
    hand = [
        {**r, "key": f"alpha={alpha}|value={r['value']}|seed=0"}
        for alpha in (0.1, 0.5)
        for r in _study_records(["fista_oracle"])
    ]
    with pytest.warns(UserWarning, match=r"at value 20 and in 1 other cell \("):
        format_table(hand)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert format_table(second) != format_table(first)


def test_compare_methods_errors(data):
    with pytest.raises(ValueError, match="Unknown method"):
        compare_methods(data, ["nope"])
    with pytest.raises(ValueError, match="make_compositional"):
        compare_methods({"X_train": np.ones((2, 2))}, ["fista_oracle"])


def test_run_study_writes_json_and_resumes(tmp_path, monkeypatch):
    kwargs = dict(
        preset="quick",
        values=(12, 16),
        data_params=TINY_DATA,
        settings=TINY,
        methods=("fista_oracle", "sae_topk"),
        out=tmp_path,
        progress=False,
    )
    records = run_study("vary_latents", **kwargs)
    saved = json.loads((tmp_path / "vary_latents-quick.json").read_text())
    assert len(saved) == len(records) == 4
    assert {r["value"] for r in saved} == {12, 16}
    table = format_table(saved).splitlines()
    assert table[0].split() == ["mcc_ood", "n_latents=12", "n_latents=16"]
    assert {line.split("  ")[0] for line in table[1:]} == {
        METHODS["fista_oracle"].label,
        METHODS["sae_topk"].label,
    }

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(_runner, "_method_records", fail)
    assert len(run_study("vary_latents", **kwargs)) == 4

    # Drop one finished record: only that (cell, method) runs again.
    (tmp_path / "vary_latents-quick.json").write_text(json.dumps(saved[:-1]))
    calls = []

    def count(data, chosen, *args, **kwargs):
        calls.append([method.name for method in chosen])
        return _compare._method_records(data, chosen, *args, **kwargs)

    monkeypatch.setattr(_runner, "_method_records", count)
    assert len(run_study("vary_latents", **kwargs)) == 4
    assert calls == [[saved[-1]["method"]]]


def test_run_study_recomputes_records_saved_with_other_settings(tmp_path):
    kwargs = dict(
        values=(12,),
        data_params=TINY_DATA,
        settings=TINY,
        methods=("fista_oracle", "sae_topk"),
        out=tmp_path,
        progress=False,
    )
    first = run_study("vary_latents", **kwargs)
    assert all(r["settings"]["sae_epochs"] == TINY.sae_epochs for r in first)
    # As an earlier version would have saved them: same keys, a preset whose
    # settings differed (here: no record of them, and a changed one).
    path = tmp_path / "vary_latents-quick.json"
    saved = json.loads(path.read_text())
    del saved[0]["settings"]
    saved[1]["settings"]["sae_bias_init"] = "mean"
    saved[1]["mcc_ood"] = -1.0
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="2 record") as caught:
        again = run_study("vary_latents", **kwargs)
    assert caught[0].filename == __file__
    assert len(again) == 2
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in first)
    assert all(r["settings"] == first[0]["settings"] for r in again)
    assert min(r["mcc_ood"] for r in again) > -1.0
    # Once replaced, nothing is stale.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(run_study("vary_latents", **kwargs)) == 2


def _oracle_cells(out, values=(12,)):
    """run_study's arguments for tiny cells of the oracle, saved in ``out``."""
    return dict(
        values=values,
        data_params=TINY_DATA,
        methods=("fista_oracle",),
        settings=TINY,
        out=out,
        progress=False,
    )


def test_resumed_records_lacking_a_score_are_computed_again(tmp_path):
    # Saved before l0_ood and mse_gap existed, a record was reused and the
    # table said "mse_gap: no values" for the oracle.
    kwargs = _oracle_cells(tmp_path, values=(12, 16))
    first = run_study("vary_latents", **kwargs)
    path = tmp_path / "vary_latents-quick.json"
    saved = json.loads(path.read_text())
    del saved[1]["mse_gap"], saved[1]["l0_ood"]
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=r"1 record\(s\) .* lack .*\(l0_ood, mse_gap;"):
        again = run_study("vary_latents", **kwargs)
    assert [r["mse_gap"] for r in again] == [r["mse_gap"] for r in first]
    assert "no values" not in format_table(again, "mse_gap")
    with warnings.catch_warnings():  # once replaced, nothing is missing
        warnings.simplefilter("error")
        run_study("vary_latents", **kwargs)


def test_resumed_records_of_another_environment_are_announced(tmp_path):
    # Records computed by another skdict or torch version, device or thread
    # count were reused and printed beside this run's without a word.
    kwargs = _oracle_cells(tmp_path, values=(12, 16))
    first = run_study("vary_latents", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_study("vary_latents", **kwargs)  # the same environment: silent
    path = tmp_path / "vary_latents-quick.json"
    saved = json.loads(path.read_text())
    saved[0].update(skdict_version="0.0.1", threads=99)
    saved[1].update(device="cpu:0")  # the same type of device: not a difference
    del saved[1]["torch_version"]  # saved before the key existed
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="this run's environment") as caught:
        again = run_study("vary_latents", **kwargs)
    message = str(caught[0].message)
    assert re.search(r"threads: (\d+, 99|99, \d+) \(this run: \d+\)", message)
    assert "skdict_version: 0.0.1, " in message
    assert "torch_version: " in message and "unrecorded" in message
    assert "device" not in message
    # Kept, not computed again.
    assert [r["mcc_ood"] for r in again] == [r["mcc_ood"] for r in first]


def test_resumed_records_of_edited_code_or_another_cpu_are_announced(
    tmp_path, monkeypatch
):
    # A development install keeps its version through every edit, and the
    # processor was not recorded: records of other code, or of an AMD run
    # resumed on an Intel machine, were reused without a word.
    kwargs = _oracle_cells(tmp_path)
    run_study("vary_latents", **kwargs)
    monkeypatch.setattr(_compare, "_source_digest", lambda: "0123456789ab")
    monkeypatch.setattr(_compare, "_cpu_name", lambda: "Another CPU")
    with pytest.warns(UserWarning, match="where skdict's source changed") as caught:
        run_study("vary_latents", **kwargs)
    message = str(caught[0].message)
    assert "skdict_source: " in message and "(this run: 0123456789ab)" in message
    assert "(this run: Another CPU)" in message
    assert "skdict_version" not in message


def test_resumed_records_all_from_another_environment_are_announced(tmp_path):
    # Only records differing from each other were announced: a run on a CPU
    # node reusing every record of a GPU node's run (or of another thread
    # count, or skdict version) printed them as its own without a word.
    kwargs = _oracle_cells(tmp_path)
    run_study("vary_latents", **kwargs)
    path = tmp_path / "vary_latents-quick.json"
    saved = json.loads(path.read_text())
    here = torch.device("cuda" if torch.cuda.is_available() else "cpu").type
    elsewhere = "cpu" if here == "cuda" else "cuda:0"
    for record in saved:
        record.update(device=elsewhere, threads=64, skdict_version="0.0.1")
    path.write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="this run's environment") as caught:
        run_study("vary_latents", **kwargs)
    message = str(caught[0].message)
    assert f"device: {elsewhere[:4]} (this run: {here})" in message
    assert re.search(r"threads: 64 \(this run: \d+\)", message)
    assert "skdict_version: 0.0.1 (this run: " in message


def test_a_method_failing_mid_cell_keeps_those_before_it(tmp_path, monkeypatch):
    # Records were saved once per cell: a method failing (or a Ctrl-C) threw
    # away the methods finished before it in that cell, with a traceback that
    # named no cell.
    from skdict.experiments import METHODS, Method

    def fail(context):
        raise RuntimeError("the probe broke")

    monkeypatch.setitem(
        METHODS, "linear_probe", Method("linear_probe", "Linear probe", "train", fail)
    )
    kwargs = dict(
        values=(12,),
        data_params=TINY_DATA,
        methods=("fista_oracle", "linear_probe"),
        settings=TINY,
        out=tmp_path,
        progress=False,
    )
    with pytest.raises(RuntimeError, match="the probe broke") as error:
        run_study("vary_latents", **kwargs)
    note = "".join(getattr(error.value, "__notes__", []))
    assert "stopped at linear_probe (running it or saving its record)" in note
    assert "in study 'vary_latents' at n_latents=12, seed 0" in note
    saved = json.loads((tmp_path / "vary_latents-quick.json").read_text())
    assert [record["method"] for record in saved] == ["fista_oracle"]


def test_a_resumed_sae_and_fista_method_trains_its_sae_in_the_sae_method(
    tmp_path, monkeypatch
):
    # Saved method by method, a cell interrupted after sae_topk resumed with
    # sae_dict_fista alone, which then trained the SAE in its own fit_time:
    # hours, in the paper preset, mixed into the table of uninterrupted runs.
    kwargs = dict(
        values=(12,),
        data_params=TINY_DATA,
        methods=("sae_topk", "sae_dict_fista", "fista_oracle"),
        settings=TINY,
        out=tmp_path,
        progress=False,
    )
    run_study("vary_latents", **kwargs)
    path = tmp_path / "vary_latents-quick.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps([r for r in saved if r["method"] != "sae_dict_fista"]))
    calls = []

    def count(data, chosen, *args, **kwargs):
        calls.append([method.name for method in chosen])
        return _compare._method_records(data, chosen, *args, **kwargs)

    monkeypatch.setattr(_runner, "_method_records", count)
    run_study("vary_latents", **kwargs)
    assert calls == [["sae_topk", "sae_dict_fista"]]


def test_run_study_with_other_settings_does_not_reuse_results(tmp_path):
    kwargs = dict(
        values=(12,),
        data_params=TINY_DATA,
        methods=("fista_oracle",),
        out=tmp_path,
        progress=False,
    )
    [default] = run_study("vary_latents", settings=TINY, **kwargs)
    strong = TINY.replace(alpha=5.0)
    [rerun] = run_study("vary_latents", settings=strong, **kwargs)
    saved = json.loads((tmp_path / "vary_latents-quick.json").read_text())
    assert [r["key"] for r in saved] == [default["key"], rerun["key"]]
    assert rerun["key"] != default["key"]
    assert rerun["alpha"] == 5.0 and "alpha" not in default
    assert default["mcc_ood"] > 0.9
    # alpha=5 zeroes every code of the oracle: a result of its own.
    assert rerun["mcc_ood"] < 0.5
    assert rerun["l0_ood"] < default["l0_ood"]
    with pytest.raises(
        TypeError, match=r"'settings' parameter of run_study .*PaperSettings"
    ):
        run_study("vary_latents", settings={"alpha": 5.0}, **kwargs)


def test_cli_end_to_end(tmp_path, capsys):
    code = main(
        [
            "reproduce",
            "--study",
            "alpha",
            "--values",
            "0.05",
            "0.2",
            "--methods",
            "fista_oracle",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "alpha=0.05" in out
    assert (tmp_path / "alpha-quick.png").stat().st_size > 1000
    records = json.loads((tmp_path / "alpha-quick.json").read_text())
    assert {r["alpha"] for r in records} == {0.05, 0.2}


def test_cli_runs_deterministic_algorithms_when_asked(tmp_path, monkeypatch):
    # The guide's recipe for CUDA runs that repeat bit for bit could not be
    # followed from the command, and no record said whether it had been.
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = []
    run = _runner._method_records

    def recording(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        seen.append(os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        return run(*args, **kwargs)

    monkeypatch.setattr(_runner, "_method_records", recording)
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--deterministic"]) == 0
    assert seen == [True, ":4096:8"]
    # As before afterwards, for a caller of main() in its own process.
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    [record] = json.loads((tmp_path / "alpha-quick.json").read_text())
    assert record["deterministic"] is True


def test_cli_output_piped_to_a_reader_that_left_still_runs(tmp_path, monkeypatch):
    # skdict reproduce ... | head -4: the first table raised BrokenPipeError,
    # and neither the figure nor the later studies were made.
    read_end, write_end = os.pipe()
    os.close(read_end)
    broken = os.fdopen(write_end, "w")
    monkeypatch.setattr(sys, "stdout", broken)
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--out", str(tmp_path), "--no-progress"]
    try:
        assert main(argv) == 0
    finally:
        broken.close()
    assert (tmp_path / "alpha-quick.png").stat().st_size > 1000


def test_cli_without_a_stdout_still_runs(tmp_path, monkeypatch):
    # A closed stdout (cmd >&-, pythonw) is None: flushing it raised
    # AttributeError once the first study's records were saved.
    monkeypatch.setattr(sys, "stdout", None)
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert (tmp_path / "alpha-quick.png").stat().st_size > 1000


def test_cli_interrupted_says_how_to_resume(tmp_path, monkeypatch, capsys):
    # Ctrl-C printed a KeyboardInterrupt traceback.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(skdict.experiments, "run_study", interrupted)
    argv = ["reproduce", "--study", "alpha", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and str(tmp_path) in err and "resumes" in err


def test_cli_terminated_says_how_to_resume(tmp_path, monkeypatch, capsys):
    # SIGTERM, which a cluster's scheduler sends at a time limit, ended the
    # run at once: no word in the job's log of what was saved.
    import os
    import signal

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs between bytecodes

    monkeypatch.setattr(skdict.experiments, "run_study", terminated)
    before = signal.getsignal(signal.SIGTERM)
    argv = ["reproduce", "--study", "alpha", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert "terminated (SIGTERM)" in err and "resumes" in err
    assert signal.getsignal(signal.SIGTERM) is before


def test_alpha_cells_share_their_sae(tmp_path, monkeypatch):
    # The SAE does not depend on alpha, but each alpha cell trained it again
    # for sae_dict_fista (27 trainings where 3 do, in the paper preset).
    from skdict import SparseAutoencoder

    kwargs = dict(
        values=(0.05, 0.2),
        seeds=(0, 1),
        methods=("sae_dict_fista",),
        data_params={"n_latents": 12, **TINY_DATA},
        settings=TINY,
        progress=False,
    )
    alone = [
        run_study("alpha", **{**kwargs, "values": (value,)}, out=tmp_path / str(value))
        for value in kwargs["values"]
    ]
    fits = []
    fit = SparseAutoencoder.fit

    def counted(self, *args, **fit_kwargs):
        fits.append(self.random_state)
        return fit(self, *args, **fit_kwargs)

    monkeypatch.setattr(SparseAutoencoder, "fit", counted)
    shared = run_study("alpha", **kwargs, out=tmp_path / "both")
    assert sorted(fits) == [0, 1]  # one SAE per seed, not per cell
    assert [r["alpha"] for r in shared] == [0.05, 0.05, 0.2, 0.2]
    # The same SAE as each cell trains alone: the same codes.
    for run in alone:
        for record in run:
            [twin] = [r for r in shared if r["key"] == record["key"]]
            assert twin["mcc_ood"] == record["mcc_ood"]
            assert twin["dictionary_similarity"] == record["dictionary_similarity"]


@pytest.mark.parametrize("methods", [["linear_probe"], ["fista_oracle", "sae_topk"]])
def test_alpha_study_refuses_methods_that_ignore_alpha(methods, tmp_path, capsys):
    # They were run at every alpha and tabled as if swept.
    with pytest.raises(ValueError, match="sweeps FISTA's penalty, which"):
        study_cells("alpha", methods=methods)
    argv = ["reproduce", "--study", "alpha", "--methods", *methods]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "Choose among fista_oracle, dl_fista" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_all_studies_give_the_alpha_study_its_fista_methods(
    tmp_path, monkeypatch, capsys
):
    # --study all --methods linear_probe was refused whole, as the alpha
    # study alone refuses methods that do not code with FISTA.
    from skdict.__main__ import _sweep

    seen = []
    monkeypatch.setattr(
        skdict.__main__,
        "_run_studies",
        lambda args, studies, out: seen.append(
            (studies, {study: _sweep(args, study)["methods"] for study in studies})
        ),
    )
    argv = ["reproduce", "--study", "all", "--out", str(tmp_path), "--no-progress"]
    assert main([*argv, "--methods", "linear_probe", "fista_oracle"]) == 0
    studies, methods = seen[-1]
    assert "alpha" in studies
    assert methods["alpha"] == ("fista_oracle",)
    assert methods["vary_latents"] == ("linear_probe", "fista_oracle")
    assert main([*argv, "--methods", "linear_probe"]) == 0
    studies, _ = seen[-1]
    assert "alpha" not in studies and "vary_latents" in studies
    assert "the alpha study is left out" in capsys.readouterr().err
    # Named by the user, the alpha study refuses them, and --values meant for
    # two studies that sweep different variables are still refused.
    argv = ["reproduce", "--study", "alpha", "vary_latents", "--out", str(tmp_path)]
    assert main([*argv, "--methods", "sae_relu"]) == 2
    assert "sweeps FISTA's penalty" in capsys.readouterr().err
    assert main([*argv, "--methods", "sae_relu", "--values", "20"]) == 2
    assert "--values would be taken as alpha and as n_latents" in (
        capsys.readouterr().err
    )


def test_cli_expands_a_home_folder_and_refuses_an_empty_one(
    tmp_path, monkeypatch, capsys
):
    # "--out=~/x" made a folder named "~" in the current one; an empty --out
    # (an unset variable) wrote into the current folder.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--no-progress"]
    assert main([*argv, "--out=~/results"]) == 0
    assert (tmp_path / "home" / "results" / "alpha-quick.json").is_file()
    assert not (tmp_path / "~").exists()
    for empty in ("", " "):
        with pytest.raises(SystemExit) as stop:
            main([*argv, f"--out={empty}"])
        assert stop.value.code == 2
        assert "the output folder must not be empty" in capsys.readouterr().err


def test_cli_documented_defaults():
    # doc/user_guide/reproduce.rst: vary_latents at the quick preset, --out
    # skdict_results, --device auto.
    from skdict.__main__ import _parser

    args = _parser().parse_args(["reproduce"])
    assert args.study == ["vary_latents"] and args.preset == "quick"
    assert args.out == "skdict_results" and args.device == "auto"
    assert args.seeds is None and args.methods is None and args.values is None
    assert not args.deterministic and not args.no_progress


def test_cli_list_options_given_twice_gather(tmp_path, monkeypatch, capsys):
    # argparse kept the last occurrence only: "--seeds 0 --seeds 1" ran seed
    # 1 alone, and its table looked complete.
    from skdict.__main__ import _parser

    parse = _parser().parse_args
    args = parse(["reproduce", "--seeds", "0", "--seeds", "1", "2"])
    assert args.seeds == [0, 1, 2]
    args = parse(["reproduce", "--study", "vary_latents", "--study", "alpha"])
    assert args.study == ["vary_latents", "alpha"]
    args = parse(["reproduce", "--methods", "fista_oracle", "--methods", "sae_topk"])
    assert args.methods == ["fista_oracle", "sae_topk"]
    assert parse(["reproduce", "--values", "20", "--values", "50"]).values == [20, 50]
    # Given once, an option replaces its default rather than adding to it.
    assert parse(["reproduce", "--study", "alpha"]).study == ["alpha"]
    assert parse(["reproduce"]).study == ["vary_latents"]
    # The alpha study left out of "--study all" is not named in the error of
    # --values that the other studies would read differently.
    argv = ["reproduce", "--study", "all", "--methods", "linear_probe"]
    assert main([*argv, "--values", "20", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--values would be taken as" in err and "alpha" not in err.split("error:")[1]


def test_cli_version_only_before_the_command(capsys):
    # "reproduce --version" is the full parser's error, not the fast path.
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--version"])
    assert stop.value.code == 2
    assert "skdict" not in capsys.readouterr().out


def test_cli_heading_names_study_setting_and_preset(tmp_path, monkeypatch, capsys):
    record = {
        "key": "k0",
        "label": "FISTA",
        "method": "fista_oracle",
        "value": 50,
        "variable": "n_latents",
        "n_active": 10,
        "n_samples": 5000,
        "n_latents": 50,
        "mcc_ood": 0.5,
        "auc_ood": 0.5,
        "acc_ood": None,
        "mse_gap": 0.1,
    }
    monkeypatch.setattr(skdict.experiments, "run_study", lambda *a, **k: [record])
    monkeypatch.setattr(skdict.experiments, "plot_study", lambda r, path, title: path)
    assert main(["reproduce", "--out", str(tmp_path), "--no-progress"]) == 0
    heading = "== Number of latents (n_active=10, n_samples=5000) [quick preset] =="
    assert heading in capsys.readouterr().out


def test_cli_shows_progress_bars_at_a_terminal_only(monkeypatch):
    # In a batch job's log the bars were lines of carriage returns and cursor
    # moves, and TQDM_DISABLE=1 did not hide them.
    from skdict.__main__ import _parser, _show_progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    args = _parser().parse_args(["reproduce"])
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not _show_progress(args)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert _show_progress(args)
    for value in ("1", "true", "TRUE", "yes"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert not _show_progress(args)
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert _show_progress(args)
    monkeypatch.delenv("TQDM_DISABLE")
    assert not _show_progress(_parser().parse_args(["reproduce", "--no-progress"]))
    monkeypatch.setattr(sys, "stderr", None)
    assert not _show_progress(args)


def test_cli_warnings_read_as_the_command_s_own(tmp_path, capsys):
    # Warnings printed Python's "file:line: UserWarning:" and the console
    # script's line of source, "sys.exit(main())".
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    path = tmp_path / "alpha-quick.json"
    saved = json.loads(path.read_text())
    saved[0].update(threads=99)
    path.write_text(json.dumps(saved))
    before = warnings.formatwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # As Python shows warnings (pytest records them instead).
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        assert main(argv) == 0
    assert warnings.formatwarning is before
    err = capsys.readouterr().err
    assert "skdict reproduce: UserWarning: The records of this run" in err
    assert "main()" not in err and "_runner.py" not in err


def test_cli_full_disk_is_an_error_that_says_what_is_kept(
    tmp_path, monkeypatch, capsys
):
    # A full disk (or a folder in the way of the figure) ended in a traceback.
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(skdict.experiments, "plot_study", full)
    argv = ["reproduce", "--study", "alpha", "--values", "0.05", "--methods"]
    argv += ["fista_oracle", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: [Errno 28] No space left on device" in err
    assert f"saved in {tmp_path}; the same command resumes them" in err


def test_cli_runs_a_repeated_study_once(tmp_path, monkeypatch):
    # "--study vary_latents vary_latents" printed and plotted it twice.
    seen = []
    monkeypatch.setattr(
        skdict.__main__, "_run_studies", lambda args, studies, out: seen.append(studies)
    )
    argv = ["reproduce", "--study", "vary_latents", "vary_latents"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    assert seen == [["vary_latents"]]


def test_cli_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"skdict {skdict.__version__}"


def test_cli_out_of_memory_is_an_error_not_a_traceback(tmp_path, capsys):
    # A dictionary of 1e12 atoms passes make_compositional's size check (it
    # fits an array's index range) and failed in NumPy's allocation with a
    # traceback through the generator.
    argv = ["reproduce", "--values", "1e12", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "Unable to allocate" in err
    assert "--values" in err and str(tmp_path) in err


def test_cli_out_of_memory_in_torch_is_an_error_too(tmp_path, monkeypatch, capsys):
    # torch's CPU allocator raises a plain RuntimeError, not MemoryError.
    def allocate(*args, **kwargs):
        torch.empty(2**45, dtype=torch.float64)  # 256 TiB
        pytest.skip("this machine hands out 256 TiB")

    monkeypatch.setattr(skdict.experiments, "run_study", allocate)
    argv = ["reproduce", "--study", "alpha", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    assert "out of memory" in capsys.readouterr().err

    def fails(*args, **kwargs):
        raise RuntimeError("not about memory")

    monkeypatch.setattr(skdict.experiments, "run_study", fails)
    with pytest.raises(RuntimeError, match="not about memory"):
        main(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["reproduce", "--study", "nope"],
        ["reproduce", "--methods", "nope"],
        ["reproduce", "--preset", "huge"],
        ["frobnicate"],
    ],
)
def test_cli_rejects_unknown_names(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["reproduce", "--out", str(blocker / "sub")]) == 2
    assert "Cannot write results" in capsys.readouterr().err
    # The output folder itself a file, or a link to nothing: said so, not
    # mkdir's "File exists".
    broken = tmp_path / "link"
    broken.symlink_to(tmp_path / "nowhere")
    for out in (blocker, broken):
        assert main(["reproduce", "--out", str(out)]) == 2
        assert f"Cannot write results to {out}: it is not a folder." in (
            capsys.readouterr().err
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--values", "5"], "n_active=10 must be smaller than n_latents=5"),
        (["--values", "1e20"], "more than an array can hold"),
        (["--values", "2.5"], "'n_latents' parameter of make_compositional"),
        (["--study", "alpha", "--values", "-1"], "'alpha' parameter of PaperSettings"),
        # One list of values cannot be both penalties and sizes.
        (
            ["--study", "alpha", "vary_latents", "--values", "5"],
            "--values would be taken as alpha and as n_latents",
        ),
        (["--study", "all", "--values", "20"], "--values would be taken as"),
        (["--study", "real", "--values", "20"], "the real study sweeps nothing"),
    ],
)
def test_cli_rejects_bad_sweeps_before_running(argv, message, tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["reproduce", *argv, "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("skdict reproduce: error:") and message in err
    assert not out.exists()  # a rejected run creates no output folder
    # Named by the option typed, not only by the library's parameter.
    assert "argument --values" in err or "--values would" in err or "real" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--study", "vary_samples", "--values", "1e19"], "argument --values "),
        (["--device", "gpu"], "argument --device: "),
    ],
)
def test_cli_names_the_option_a_library_check_refuses(argv, message, tmp_path, capsys):
    # A sample count past what an array holds ended in a NumPy traceback once
    # the run had started; other values were named as make_compositional's.
    out = tmp_path / "results"
    assert main(["reproduce", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skdict reproduce: error: {message}")
    assert "Traceback" not in err and not out.exists()


def test_cli_without_matplotlib_stops_before_running(tmp_path, monkeypatch, capsys):
    # The figures come after the models: a missing extra must not end a run.
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    out = tmp_path / "results"
    assert main(["reproduce", "--values", "20", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skdict reproduce: error:") and '".[plots]"' in err
    assert not out.exists()


@pytest.mark.parametrize(
    "content",
    [
        '{"half',
        '{"key": "a dict, not a list"}',
        '[{"no key": 1}]',
        "[1, 2]",
        '[{"study": "real", "method": "sae_topk"}]',  # run_real's records
    ],
)
def test_cli_rejects_a_damaged_results_file_before_running(content, tmp_path, capsys):
    # The damaged file belongs to the second study: the first must not run.
    (tmp_path / "vary_latents-quick.json").write_text(content)
    argv = ["reproduce", "--study", "controlled", "vary_latents", "--values", "30"]
    code = main([*argv, "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "vary_latents-quick.json" in err and "move it away" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vary_latents-quick.json"]


def test_run_study_runs_each_seed_value_and_method_once(tmp_path, monkeypatch):
    calls = []

    def count(data, chosen, *args, **kwargs):
        calls.append([method.name for method in chosen])
        return _compare._method_records(data, chosen, *args, **kwargs)

    monkeypatch.setattr(_runner, "_method_records", count)
    records = run_study(
        "vary_latents",
        values=(12, np.int64(12), 12),
        seeds=(0, np.int64(0)),
        methods=("fista_oracle", "fista_oracle"),
        data_params=TINY_DATA,
        settings=TINY,
        out=tmp_path,
        progress=False,
    )
    assert calls == [["fista_oracle"]]
    [record] = records
    assert type(record["value"]) is int and type(record["seed"]) is int
    # 1, 1.0 and NumPy's 1.0 are one penalty: one cell, one resume key.
    cells = _runner.plan_study("alpha", values=(1, 1.0, np.float64(1.0)))[0]
    assert [c.setting_changes for c in cells] == [{"alpha": 1.0}]
    assert "alpha=1.0" in cells[0].key("fista_oracle")
    preset_key = _runner.plan_study("alpha")[0][-1].key("fista_oracle")
    assert cells[0].key("fista_oracle") == preset_key


def test_run_study_returns_only_the_requested_cells(tmp_path):
    kwargs = dict(
        values=(12,), data_params=TINY_DATA, settings=TINY, out=tmp_path, progress=False
    )
    [oracle] = run_study("vary_latents", methods=("fista_oracle",), **kwargs)
    [probe] = run_study("vary_latents", methods=("linear_probe",), **kwargs)
    assert (oracle["method"], probe["method"]) == ("fista_oracle", "linear_probe")
    saved = json.loads((tmp_path / "vary_latents-quick.json").read_text())
    assert [r["method"] for r in saved] == ["fista_oracle", "linear_probe"]
    # Tables built from a run show its rows only.
    assert METHODS["fista_oracle"].label not in format_table([probe])
    both = run_study("vary_latents", methods=("linear_probe", "fista_oracle"), **kwargs)
    assert [r["method"] for r in both] == ["linear_probe", "fista_oracle"]


def test_runs_sharing_a_folder_keep_each_others_records(tmp_path, monkeypatch):
    # Another run (another seed, on another GPU) saves into the same file
    # between this run's cells: both runs' records stay.
    path = tmp_path / "vary_latents-quick.json"
    foreign = {**RECORD, "key": "another run's cell"}
    calls = []

    def another_run_saves_meanwhile(data, chosen, *args, **kwargs):
        if not calls:
            path.write_text(json.dumps([*json.loads(path.read_text()), foreign]))
        calls.append(chosen)
        return _compare._method_records(data, chosen, *args, **kwargs)

    kwargs = dict(
        values=(12, 16),
        data_params=TINY_DATA,
        settings=TINY,
        methods=("fista_oracle",),
        out=tmp_path,
        progress=False,
    )
    run_study("vary_latents", seeds=(0,), **kwargs)
    monkeypatch.setattr(_runner, "_method_records", another_run_saves_meanwhile)
    records = run_study("vary_latents", seeds=(1,), **kwargs)
    saved = json.loads(path.read_text())
    assert foreign in saved and len(saved) == 5
    assert all(record in saved for record in records)
    assert sum(record.get("seed") == 0 for record in saved) == 2


def test_a_run_never_puts_back_records_another_run_recomputed(tmp_path, monkeypatch):
    # Both seeds' records were saved with outdated settings; while the run
    # for seed 0 computes its cell, a run for seed 1 recomputes seed 1's.
    # Seed 0's run must not write back the outdated seed-1 records it read.
    kwargs = dict(
        values=(12,),
        data_params=TINY_DATA,
        settings=TINY,
        methods=("fista_oracle",),
        out=tmp_path,
        progress=False,
    )
    run_study("vary_latents", seeds=(0, 1), **kwargs)
    path = tmp_path / "vary_latents-quick.json"
    outdated = [dict(r, settings={"outdated": True}) for r in load_records(path)]
    path.write_text(json.dumps(outdated))
    started = []

    def other_run_meanwhile(data, chosen, settings, random_state, *args, **more):
        if not started:
            started.append(random_state)
            run_study("vary_latents", seeds=(1,), **kwargs)
        return _compare._method_records(
            data, chosen, settings, random_state, *args, **more
        )

    monkeypatch.setattr(_runner, "_method_records", other_run_meanwhile)
    with pytest.warns(UserWarning, match="other training settings"):
        run_study("vary_latents", seeds=(0,), **kwargs)
    assert started == [0]
    assert all(r["settings"] != {"outdated": True} for r in load_records(path))


def test_results_are_saved_where_the_file_system_refuses_locks(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")

    def refuse(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.warns(RuntimeWarning, match="Could not lock"):
        _runner._save(tmp_path / "records.json", [RECORD])
    assert load_records(tmp_path / "records.json") == [RECORD]


def test_load_records_of_a_missing_file_names_it(tmp_path):
    # An empty list gave empty tables, and plot_study's "records is empty"
    # named no path (the guide's example read another folder than it wrote).
    with pytest.raises(FileNotFoundError, match=r"vary_latents-quick\.json does not"):
        load_records(tmp_path / "vary_latents-quick.json")


def test_methods_bar_is_kept_only_when_outermost(data, monkeypatch):
    from tqdm.auto import tqdm

    kept = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs):
            kept.append(kwargs["leave"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(_compare, "tqdm", Recording)
    compare_methods(data, ["fista_oracle"], settings=TINY, verbose=1)
    with tqdm(total=1) as outer:
        compare_methods(data, ["fista_oracle"], settings=TINY, verbose=1)
        outer.update()
    assert kept == [True, False]


def test_saved_results_get_the_umask_permissions(tmp_path, monkeypatch):
    previous = os.umask(0o027)
    try:
        # Read without setting it: an interrupt between two os.umask calls
        # would leave the process's umask at 0.
        monkeypatch.setattr(os, "umask", None)
        _runner._save(tmp_path / "records.json", [RECORD])
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert (tmp_path / "records.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(os.name == "nt", reason="no flock on Windows")
def test_exclusive_access_excludes_other_holders(tmp_path):
    order = []

    def second_holder():
        with exclusive_access(tmp_path):
            order.append("second")

    with exclusive_access(tmp_path):
        thread = threading.Thread(target=second_holder)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


def test_methods_bar_names_the_running_method(data, capsys):
    compare_methods(data, ["fista_oracle", "linear_probe"], settings=TINY, verbose=1)
    shown = capsys.readouterr().err
    assert "fista_oracle" in shown and "linear_probe" in shown


def test_save_leaves_no_temporary_file_when_writing_fails(tmp_path):
    path = tmp_path / "records.json"
    with pytest.raises(TypeError, match="not JSON serializable"):
        _runner._save(path, [{"key": "k", "value": object()}])
    assert list(tmp_path.iterdir()) == []


def test_sae_training_counts_in_the_fit_time_of_the_method_that_trains_it(
    data, monkeypatch
):
    train = MethodContext.fitted_sae

    def slow_training(self, activation):
        time.sleep(0.3)
        return train(self, activation)

    monkeypatch.setattr(MethodContext, "fitted_sae", slow_training)
    [record] = compare_methods(data, ["sae_dict_fista"], settings=TINY, random_state=0)
    assert record["fit_time"] >= 0.3


@pytest.mark.parametrize("seed", ["-1", "1.5", "x", str(2**32)])
def test_cli_rejects_bad_seeds(seed, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--seeds", seed])
    assert exc.value.code == 2
    assert "a seed must be an integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"alpha": -1.0}, "'alpha' parameter of PaperSettings"),
        ({"sae_epochs": 2.5}, "'sae_epochs'"),
        ({"sae_epochs": True}, "'sae_epochs' .* a bool"),
        ({"sae_lr": 0.0}, "'sae_lr'"),
        ({"sae_batch_size": 0}, "'sae_batch_size'"),
        ({"sae_bias_init": "median"}, "'sae_bias_init'"),
        ({"sparsity_coef": -1e-4}, "'sparsity_coef'"),
        ({"dict_max_iter": -1}, "'dict_max_iter'"),
        ({"base_sae": "relu6"}, "'base_sae'"),
        ({"oracle_encoder_activation": "tanh"}, "'oracle_encoder_activation'"),
        ({"probe_alphas": ()}, "'probe_alphas'"),
        ({"probe_alphas": (1.0, 0.0)}, "'probe_alphas'"),
        ({"probe_alphas": ("a",)}, "'probe_alphas'"),
    ],
)
def test_paper_settings_reject_bad_values(change, match):
    with pytest.raises(ValueError, match=match):
        PaperSettings(**change)
    with pytest.raises(ValueError, match=match):
        PaperSettings().replace(**change)


def test_paper_settings_store_plain_python_values(tmp_path):
    # NumPy scalars and arrays pass the checks; stored as they came, they
    # broke the JSON of saved results, and a list equal to the default tuple
    # counted as a changed setting in every resume key.
    settings = PaperSettings(
        alpha=np.float32(0.25),
        sae_epochs=np.int64(2),
        dict_max_iter=np.uint64(3),
        probe_alphas=(np.float32(0.5), 1, np.float64(2.0)),
    )
    assert settings == PaperSettings(
        alpha=0.25, sae_epochs=2, dict_max_iter=3, probe_alphas=(0.5, 1.0, 2.0)
    )
    assert all(type(alpha) is float for alpha in settings.probe_alphas)
    json.dumps(dataclasses.asdict(settings))
    assert type(settings.sae_epochs) is int and type(settings.alpha) is float
    assert type(settings.probe_alphas) is tuple
    hash(settings)
    default = PaperSettings()
    assert default.replace(probe_alphas=list(default.probe_alphas)) == default
    records = run_study(
        "vary_latents",
        seeds=[0],
        methods="linear_probe",
        values=(12,),
        data_params=TINY_DATA,
        settings=settings,
        out=tmp_path,
        progress=False,
    )
    assert [record["method"] for record in records] == ["linear_probe"]


def test_plan_study_checks_every_cell():
    cells, base = _runner.plan_study(
        "vary_latents", values=(12, 16), data_params=TINY_DATA, settings=TINY
    )
    assert [c.data_params["n_latents"] for c in cells] == [12, 16]
    assert [c.settings(base) for c in cells] == [TINY, TINY]
    with pytest.raises(ValueError, match="n_latents=2"):
        _runner.plan_study("vary_latents", values=(12, 2), data_params=TINY_DATA)
    for seed in (-1, True, None, 2**32):
        with pytest.raises(ValueError, match="'seeds' parameter of study_cells"):
            _runner.plan_study("vary_latents", seeds=(seed,), data_params=TINY_DATA)
    # The swept variable comes from values=, the data's seed from seeds=:
    # given elsewhere, they were silently replaced.
    with pytest.raises(ValueError, match=r"may not hold 'n_latents'.*values="):
        _runner.plan_study("vary_latents", data_params={**TINY_DATA, "n_latents": 30})
    with pytest.raises(ValueError, match=r"may not hold 'random_state'.*seeds="):
        _runner.plan_study("vary_latents", data_params={**TINY_DATA, "random_state": 3})
    with pytest.raises(ValueError, match="alpha is the variable study 'alpha' sweeps"):
        _runner.plan_study("alpha", settings=PaperSettings(alpha=0.5))


@pytest.mark.parametrize(
    "variable, log",
    [("n_latents", True), ("n_active", True), ("n_samples", True), ("noise", False)],
)
def test_plot_study_log_axis_for_sizes_and_penalties(
    tmp_path, monkeypatch, variable, log
):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from skdict.experiments import plot_study

    scales = []
    original = Axes.set_xscale
    monkeypatch.setattr(
        Axes,
        "set_xscale",
        lambda ax, v, **kw: (scales.append(v), original(ax, v, **kw)),
    )
    records = [
        {"label": "A", "value": v, "variable": variable, "mcc_ood": 0.5, "seed": 0}
        for v in (2, 10, 100)
    ]
    plot_study(records, tmp_path / "study.png")
    assert scales == (["log"] * 4 if log else [])


def test_plot_study_of_one_value_on_a_log_axis(tmp_path, saved_figures):
    # Shared log axes around a single point shrank to rounding width (20 +-
    # 1e-14), drawing spines across the whole figure.
    from skdict.experiments import plot_study

    figures = saved_figures
    metrics = {"mcc_ood": 0.9, "auc_ood": 0.9, "acc_ood": 0.5, "mse_gap": 1e-4}
    records = [{"label": "A", "value": 20, "variable": "n_latents", **metrics}]
    plot_study(records, tmp_path / "study.png")
    for ax in figures[0].axes:
        low, high = ax.get_xlim()
        assert low < 15 and high > 26


def test_plot_study_draws_error_bars_only_over_several_seeds(tmp_path, saved_figures):
    # One seed drew zero-length bars with caps at every point.
    from skdict.experiments import plot_study

    metrics = {"mcc_ood": 0.9, "auc_ood": 0.9, "acc_ood": 0.5, "mse_gap": 1e-4}
    one = [
        {"label": "A", "value": v, "variable": "n_latents", **metrics} for v in (20, 40)
    ]
    two = [*one, {**one[0], "mcc_ood": 0.7}]
    plot_study(one, tmp_path / "one.png")
    plot_study(two, tmp_path / "two.png")
    spreads = [
        [container.has_yerr for container in fig.axes[0].containers]
        for fig in saved_figures
    ]
    assert spreads == [[False], [True]]


def test_plot_study_gives_each_method_one_colour_and_a_legend_entry(
    tmp_path, saved_figures
):
    # Colours were taken panel by panel: the probe, first and without a
    # reconstruction gap, shifted the oracle into the probe's colour there,
    # and the legend (read from the first panel) named it as the probe.
    from matplotlib.colors import to_rgba

    from skdict.experiments import plot_study

    records = []
    for value in (20, 30):
        for label, gap in (("Linear probe", None), ("Oracle", 1e-4)):
            records.append(
                {
                    "label": label,
                    "value": value,
                    "variable": "n_latents",
                    "mcc_ood": 0.5,
                    "auc_ood": 0.5,
                    "acc_ood": 0.5,
                    "mse_gap": gap,
                }
            )
    plot_study(records, tmp_path / "study.png")
    (figure,) = saved_figures
    legend = figure.legends[0]
    named = {
        text.get_text(): to_rgba(handle.get_color())
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    assert list(named) == ["Linear probe", "Oracle", "chance (0.5)"]
    drawn = [
        (bars.get_label(), to_rgba(bars.lines[0].get_color()))
        for ax in figure.axes
        for bars in ax.containers
    ]
    assert len(drawn) == 7  # the probe has no reconstruction gap
    assert all(colour == named[label] for label, colour in drawn)
    assert [bars.get_label() for bars in figure.axes[3].containers] == ["Oracle"]


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".svg"])
def test_plot_study_replaces_its_figure_in_one_step(tmp_path, monkeypatch, suffix):
    # Runs sharing a folder plot the same file: a figure interrupted halfway
    # leaves the last one whole, and no temporary file behind.
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from skdict.experiments import plot_study

    metrics = {"mcc_ood": 0.9, "auc_ood": 0.9, "acc_ood": 0.5, "mse_gap": 1e-4}
    records = [{"label": "A", "value": 20, "variable": "n_latents", **metrics}]
    path = tmp_path / f"study{suffix}"
    plot_study(records, path)
    first = path.read_bytes()
    assert first[:8] in (b"\x89PNG\r\n\x1a\n", b"%PDF-1.4", b"<?xml ve")

    def broken(fig, handle, **kwargs):
        handle.write(b"half a figure")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_study(records, path)
    assert path.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_plot_study_leaves_the_callers_matplotlib_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from skdict.experiments import plot_study

    records = [
        {"label": "A", "value": v, "variable": "n_latents", "mcc_ood": 0.5, "seed": 0}
        for v in (10, 20)
    ]
    backend = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        plot_study(records, tmp_path / "study.png")
        # A notebook's or GUI's backend stays; no figure is left open.
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == []
    finally:
        matplotlib.use(backend)
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"


def _study_records(methods, values=(20, 40), seeds=(0,), variable="n_latents"):
    return [
        {
            "method": name,
            "label": METHODS[name].label if name in METHODS else name,
            "value": value,
            "variable": variable,
            "seed": seed,
            "mcc_ood": 0.5 + 0.1 * seed,
            "auc_ood": 0.5,
            "acc_ood": 0.5,
            "mse_gap": 1e-4,
        }
        for value in values
        for name in methods
        for seed in seeds
    ]


def test_non_finite_scores_are_left_out_of_tables_and_figures_and_named(
    tmp_path, saved_figures
):
    # A diverged fit's NaN made its cell "nan ± nan" and its point vanished;
    # a method of NaN scores only stayed in the legend with nothing drawn,
    # while the panel's "no values" note named the other methods.
    from skdict.experiments import plot_study

    records = _study_records(["fista_oracle", "dl_fista"], seeds=(0, 1, 2))
    for record in records:
        if record["method"] == "dl_fista":
            record["mcc_ood"] = float("nan")
        elif record["seed"] == 1:
            record["mcc_ood"] = float("inf")
    named = (
        r"'FISTA \(oracle dictionary\)' at 20 \(1 of 3\), .*'DL-FISTA' at 20 \(3 of 3\)"
        r".* remove them from it to rerun them"
    )
    with pytest.warns(UserWarning, match=named):
        summary = summarize(records)
    [(label, cells)] = summary.items()
    assert label == "FISTA (oracle dictionary)" and list(cells) == [20, 40]
    assert all(cell == pytest.approx((0.6, 0.1, 2)) for cell in cells.values())
    with pytest.warns(UserWarning, match="left out of the means"):
        rows = format_table(records).splitlines()
    assert rows[1].count("0.60 ± 0.10") == 2 and rows[2].split()[-2:] == ["-", "-"]
    with pytest.warns(UserWarning, match="left out of the means"):
        plot_study(records, tmp_path / "nan.png")
    mcc_panel = saved_figures[-1].axes[0]
    assert mcc_panel.get_title(loc="right") == "no values: DL-FISTA"


def test_tables_name_their_cells_of_fewer_seeds():
    # A seed without a score left its cell averaging fewer seeds than its
    # neighbours, with nothing in the table to say so.
    records = _study_records(["fista_oracle", "dl_fista"], seeds=(0, 1, 2))
    records = [
        r
        for r in records
        if (r["method"], r["value"], r["seed"]) != ("dl_fista", 40, 2)
    ]
    note = format_table(records).splitlines()[-1]
    assert note == "fewer seeds than 3: DL-FISTA at n_latents=40 (2)"
    assert "fewer" not in format_table(_study_records(["dl_fista"], seeds=(0, 1)))
    from skdict.experiments import format_real_table

    real = [
        {"label": label, "seed": seed, "color_acc_ood": 0.5, "mse_gap": 0.1}
        for label, seeds in [("A", (0, 1)), ("B", (0,))]
        for seed in seeds
    ]
    note = format_real_table(real).splitlines()[-1]
    assert note == "fewer seeds than 2: B colour OOD (1), B MSE gap (1)"


def test_reports_refuse_the_real_studys_records_and_records_without_labels(tmp_path):
    from skdict.experiments import plot_study

    real = [{"study": "real", "label": "A", "seed": 0, "color_acc_ood": 0.5}]
    for report in (
        summarize,
        format_table,
        lambda r: plot_study(r, tmp_path / "r.png"),
    ):
        for given in (real, [{k: v for k, v in real[0].items() if k != "study"}]):
            with pytest.raises(ValueError, match=r"format_real_table .* plot_real"):
                report(given)
        # A table aligned an integer label with "has no len()".
        with pytest.raises(ValueError, match=r"records\[1\] has no 'label' .* label=3"):
            report(
                [{"label": "A", "value": 1, "mcc_ood": 0.5}, {"label": 3, "value": 1}]
            )


def _drawn_styles(figure):
    return {
        bars.get_label(): (
            bars.lines[0].get_color(),
            bars.lines[0].get_marker(),
            bars.lines[0].get_linestyle(),
        )
        for bars in figure.axes[0].containers
    }


def test_plot_study_styles_each_method_alike_in_every_figure(tmp_path, saved_figures):
    # Colours followed each figure's method order: SAE (TopK) was red in one
    # figure and orange in the next, and a style with fewer colours than
    # methods drew two methods alike.
    import matplotlib.style

    from skdict.experiments import METHOD_STYLES, plot_study

    assert set(METHOD_STYLES) == set(METHODS)
    assert len(set(METHOD_STYLES.values())) == len(METHOD_STYLES)
    plot_study(_study_records(METHODS), tmp_path / "all.png")
    with matplotlib.style.context("grayscale"):
        plot_study(_study_records(["sae_topk", "dl_fista"]), tmp_path / "two.png")
    every, two = map(_drawn_styles, saved_figures)
    assert len(set(every.values())) == len(METHODS)
    for name in ("sae_topk", "dl_fista"):
        label = METHODS[name].label
        colour, marker, line = METHOD_STYLES[name]
        assert every[label] == two[label] == (colour, marker, line)
    # Methods without a style of their own still differ from the others,
    # past the palette's eight colours too.
    plot_study(_study_records(["mine", "fista_oracle", "yours"]), tmp_path / "new.png")
    assert len(set(_drawn_styles(saved_figures[-1]).values())) == 3
    many = [f"mine{i}" for i in range(20)]
    plot_study(_study_records(many), tmp_path / "many.png")
    assert len(set(_drawn_styles(saved_figures[-1]).values())) == 20
    # A record built by hand, without "method", is styled by its label.
    hand = [
        {k: v for k, v in r.items() if k != "method"}
        for r in _study_records(["dl_fista"])
    ]
    plot_study(hand, tmp_path / "hand.png")
    assert _drawn_styles(saved_figures[-1]) == {"DL-FISTA": METHOD_STYLES["dl_fista"]}


def test_plot_study_says_what_its_error_bars_are(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    plot_study(_study_records(["fista_oracle"], seeds=(0, 1, 2)), tmp_path / "a.png")
    plot_study(_study_records(["fista_oracle"], seeds=(0, 1)), tmp_path / "a.png")
    plot_study(_study_records(["fista_oracle"]), tmp_path / "b.png")
    # Records without a value of any figure metric claim no seeds either.
    empty = [{**r, "mcc_ood": None} for r in _study_records(["fista_oracle"])]
    for record in empty:
        del record["auc_ood"], record["acc_ood"], record["mse_gap"]
    plot_study(empty, tmp_path / "b.png")
    titles = [fig.legends[0].get_title().get_text() for fig in saved_figures]
    assert titles == [
        "error bars: 1 sd over 3 seeds",
        "error bars: 1 sd over 2 seeds",
        "one seed: no error bars",
        "one seed: no error bars",
    ]
    # Bars of methods at one value are moved apart on the log axis, not
    # drawn on top of each other.
    records = _study_records(["fista_oracle", "dl_fista"], seeds=(0, 1))
    plot_study(records, tmp_path / "c.png")
    xs = [bars.lines[0].get_xdata()[0] for bars in saved_figures[-1].axes[0].containers]
    assert xs[0] < 20 < xs[1] and xs[1] / xs[0] == pytest.approx(1.03)


def test_plot_study_labels_thousands_compactly(tmp_path, saved_figures):
    # On the paper's sample grid, 5000 and 10000 ran together as "500010000".
    from skdict.experiments import plot_study

    values = (500, 1500, 5000, 10000, 100000, 1250000, 10**9)
    plot_study(_study_records(["fista_oracle"], values=values), tmp_path / "n.png")
    ticks = [t.get_text() for t in saved_figures[0].axes[2].get_xticklabels()]
    assert ticks == ["500", "1500", "5k", "10k", "100k", "1.25M", "1G"]


def test_plot_study_labels_its_axes_and_shares_one_x_axis(tmp_path, saved_figures):
    # The swept variable under the bottom row, each panel's FIGURE_METRICS
    # label, one x axis for the four panels (tick labels under the bottom row
    # only), no minor ticks (matplotlib labels them on a range under a
    # decade: "3x10^1"), and every swept value inside the limits.
    from skdict.experiments import FIGURE_METRICS, plot_study

    records = _study_records(["fista_oracle"], variable="n_active")
    plot_study(records, tmp_path / "a.png")
    axes = saved_figures[0].axes
    label = "active latents per sample"
    assert [ax.get_xlabel() for ax in axes] == ["", "", label, label]
    # Labels with a parenthesis on two lines (upright, they ran into the next
    # panel's at a paper's width).
    ylabels = [ax.get_ylabel() for ax in axes]
    assert [y.replace("\n", " ") for y in ylabels] == list(FIGURE_METRICS.values())
    assert all(y.count("\n") == 1 for y in ylabels)
    assert all(axes[0].get_shared_x_axes().joined(axes[0], ax) for ax in axes)
    assert not any(label.get_visible() for label in axes[0].get_xticklabels())
    assert all(len(ax.xaxis.get_minorticklocs()) == 0 for ax in axes)
    assert all(ax.get_xlim()[0] < 20 and ax.get_xlim()[1] > 40 for ax in axes)


def test_plot_study_moves_methods_apart_on_a_log_axis_only(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    # Equal scores of one seed hid each other (the probe under JumpReLU): the
    # methods are moved apart with or without bars, all within 7 % of the
    # value, however many they are.
    for n_methods in (2, 12):
        methods = [f"m{i}" for i in range(n_methods)]
        plot_study(_study_records(methods), tmp_path / f"{n_methods}.png")
        xs = [
            bars.lines[0].get_xdata() for bars in saved_figures[-1].axes[0].containers
        ]
        assert len({x[0] for x in xs}) == n_methods
        for x in xs:
            assert x / np.array([20, 40]) == pytest.approx([1, 1], abs=0.071)
    # A linear axis keeps its values: the shift is a factor.
    methods = ["fista_oracle", "dl_fista"]
    noise = _study_records(methods, values=(0.1, 0.5), seeds=(0, 1), variable="noise")
    plot_study(noise, tmp_path / "b.png")
    for bars in saved_figures[-1].axes[0].containers:
        assert list(bars.lines[0].get_xdata()) == [0.1, 0.5]
    # Many methods at one value: the axis holds them all (at value / 1.5 to
    # value * 1.5 the outer two of 30 fell outside without a word).
    many = _study_records([f"m{i}" for i in range(30)], values=(20,), seeds=(0, 1))
    plot_study(many, tmp_path / "c.png")
    for ax in saved_figures[-1].axes:
        low, high = ax.get_xlim()
        xs = [bars.lines[0].get_xdata()[0] for bars in ax.containers]
        assert len(xs) == 30 and low < min(xs) and max(xs) < high


def test_plot_study_refuses_records_of_one_setting(tmp_path):
    # Records of compare_methods have no swept value: the figure had four
    # empty panels.
    from skdict.experiments import plot_study

    records = _study_records(["fista_oracle"])
    for record in records:
        del record["value"]
    with pytest.raises(ValueError, match="format_table shows them"):
        plot_study(records, tmp_path / "fig.png")
    with pytest.raises(ValueError, match="format_table shows them"):
        plot_study([{**r, "value": None} for r in records], tmp_path / "fig.png")
    # A logarithmic axis drops zeros silently, and a string crashed in it.
    for bad in (0, -20, "20", float("inf")):
        records = [{**r, "value": bad} for r in _study_records(["fista_oracle"])]
        with pytest.raises(ValueError, match="logarithmic axis, which needs positive"):
            plot_study(records, tmp_path / "fig.png")
    assert not (tmp_path / "fig.png").exists()


def test_plot_study_takes_the_figure_size_and_resolution(tmp_path):
    from matplotlib.image import imread

    from skdict.experiments import plot_study

    records = _study_records(["fista_oracle"])
    path = plot_study(records, tmp_path / "small.png", figsize=(4, 3), dpi=50)
    assert imread(path).shape[:2] == (150, 200)
    for bad in [{"figsize": (4, 0)}, {"figsize": 4}, {"dpi": 0}, {"dpi": "high"}]:
        name = next(iter(bad))
        with pytest.raises(ValueError, match=f"{name} must be"):
            plot_study(records, tmp_path / "bad.png", **bad)


@pytest.mark.parametrize(
    "seed, error",
    [(-1, ValueError), (2**32, ValueError), (0.5, TypeError), (True, ValueError)],
)
def test_compare_methods_checks_the_seed_before_running(data, seed, error, monkeypatch):
    # An invalid seed is refused before any method runs, not by the first
    # estimator that takes it after the others have run.
    monkeypatch.setattr(_compare, "MethodContext", lambda *a: pytest.fail("ran"))
    with pytest.raises(error, match="random_state"):
        compare_methods(data, ["fista_oracle", "sae_dict_fista"], random_state=seed)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"settings": {"alpha": 0.5}}, "'settings' parameter of compare_methods"),
        ({"settings": {}}, "'settings' parameter of compare_methods"),
        ({"verbose": "1"}, "'verbose' parameter of compare_methods"),
        # Checked by the first method's estimator, after the probe had run.
        ({"device": "bogus"}, "'device' parameter must be"),
        ({"device": None}, "'device' parameter must be"),
    ],
)
def test_compare_methods_checks_its_arguments_before_running(
    data, kwargs, match, monkeypatch
):
    # An empty dict of settings passed for the paper's settings; a dict
    # failed inside a method builder.
    monkeypatch.setattr(_compare, "MethodContext", lambda *a: pytest.fail("ran"))
    with pytest.raises(ValueError, match=match):
        compare_methods(data, ["linear_probe", "fista_oracle"], **kwargs)


def test_empty_lists_and_bad_devices_are_refused_before_running(
    data, tmp_path, monkeypatch
):
    # None means all (or the preset's); an empty list ran nothing and
    # returned [] (run_real then saved an empty file over its results).
    monkeypatch.setattr(_compare, "MethodContext", lambda *a: pytest.fail("ran"))
    with pytest.raises(ValueError, match="methods is empty"):
        compare_methods(data, [])
    with pytest.raises(ValueError, match=r"methods must be a method name .* got 3"):
        compare_methods(data, 3)  # "'int' object is not iterable"
    monkeypatch.setattr(
        _runner, "_method_records", lambda *a, **k: pytest.fail("a cell ran")
    )
    for kwargs, match in [
        ({"methods": []}, "methods is empty"),
        ({"values": ()}, "values is empty; .* of n_latents"),
        ({"seeds": ()}, "seeds is empty"),
        ({"device": "bogus"}, "'device' parameter must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_study("vary_latents", out=tmp_path, progress=False, **kwargs)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("replaced", "match"),
    [
        (dict(Z_ood=lambda d: d.Z_ood[:, :5]), r"data\.Z_ood has shape"),
        (dict(X_val=lambda d: d.X_val[:5]), r"data\.Z_val has shape"),
        (dict(y_train=lambda d: d.y_train[:5]), r"data\.y_train has 5 labels"),
        (dict(X_ood=lambda d: d.X_ood[:, :3]), r"data\.X_ood has shape"),
        # Off the CPU (here on torch's meta device, as it would be on a GPU),
        # the linear probe failed in scikit-learn after every other method.
        (
            dict(X_ood=lambda d: torch.as_tensor(d.X_ood, device="meta")),
            r"data\.X_ood is a tensor on meta; pass the NumPy arrays",
        ),
        # The first estimator's check said "Input X contains NaN".
        (
            dict(X_ood=lambda d: np.where(d.X_ood == d.X_ood[0, 0], np.nan, d.X_ood)),
            r"data\.X_ood contains NaN or infinity",
        ),
        (
            dict(Z_val=lambda d: np.where(d.Z_val == d.Z_val.max(), np.inf, d.Z_val)),
            r"data\.Z_val contains NaN or infinity",
        ),
    ],
)
def test_compare_methods_names_the_field_of_inconsistent_data(data, replaced, match):
    # A hand-built Bunch failed inside a metric under a parameter the caller
    # never passed, or was scored against a subset of its latents.
    bunch = Bunch(**data)
    bunch.update({name: make(data) for name, make in replaced.items()})
    with pytest.raises(ValueError, match=match):
        compare_methods(bunch, ["linear_probe"])
    with pytest.raises(ValueError, match="got NoneType"):
        compare_methods(None, ["linear_probe"])


@pytest.mark.parametrize(
    "field, convert",
    [
        ("Z_val", lambda Z: torch.from_numpy(Z).to_sparse()),
        ("Z_val", lambda Z: torch.from_numpy(Z).to_sparse_csr()),
        ("X_val", lambda X: torch.from_numpy(X).requires_grad_()),
        ("X_val", lambda X: torch.from_numpy(X).to(torch.bfloat16)),
    ],
)
def test_compare_methods_checks_cpu_tensors_of_every_kind(data, field, convert):
    # The finiteness check of the fields failed on them inside torch.
    bunch = Bunch(**data)
    bunch[field] = convert(data[field])
    [record] = compare_methods(bunch, ["fista_oracle"], random_state=0)
    assert record["mcc_ood"] > 0.5
    bunch[field] = convert(
        np.where(data[field] == data[field].max(), np.nan, data[field])
    )
    with pytest.raises(ValueError, match=rf"data\.{field} contains NaN"):
        compare_methods(bunch, ["fista_oracle"])


def test_compare_methods_takes_hand_built_data_of_other_types(data):
    # No method uses y_train, and lists are arrays too.
    bunch = Bunch(**data)
    del bunch["y_train"]
    for name in ("X_train", "X_val", "X_ood", "Z_val", "Z_ood", "dictionary"):
        bunch[name] = data[name].tolist()
    bunch["X_ood"] = tuple(map(tuple, bunch["X_ood"]))
    # DL-FISTA reads the number of latents from Z_val's shape.
    methods = ["fista_oracle", "dl_fista"]
    records = compare_methods(bunch, methods, random_state=0, settings=TINY)
    expected = compare_methods(data, methods, random_state=0, settings=TINY)
    for got, want in zip(records, expected, strict=True):
        assert got["mcc_ood"] == pytest.approx(want["mcc_ood"])


def test_reports_check_records_and_figure_paths(tmp_path):
    from skdict.experiments import plot_study

    records = [
        {"label": "A", "method": "a", "value": 10, "variable": "n", "mcc_ood": 0.9}
    ]
    with pytest.raises(TypeError, match="wrap a single record in a list"):
        format_table(records[0])
    with pytest.raises(TypeError, match="it holds str"):
        format_table(["mcc_ood"])
    # Any sequence of mappings is records.
    table = format_table(records)
    assert format_table(np.array(records)) == table
    assert format_table((UserDict(records[0]),)) == table
    assert plot_study(np.array(records), tmp_path / "array.png").exists()
    pd = pytest.importorskip("pandas")
    with pytest.raises(TypeError, match=r"df\.to_dict\('records'\)"):
        format_table(pd.DataFrame(records))
    with pytest.raises(ValueError, match="records is empty"):
        plot_study([], tmp_path / "empty.png")
    # Matplotlib would write fig.png, and the path returned would not exist.
    with pytest.raises(ValueError, match="has no suffix"):
        plot_study(records, tmp_path / "fig")
    assert plot_study(records, tmp_path / "fig.png").exists()
    # None raised Python's "'NoneType' object is not iterable".
    with pytest.raises(TypeError, match=r"records must be a sequence .* got NoneType"):
        summarize(None)
    # A synthetic study's records given to the real study's reports failed
    # with KeyError: None (or were taken for two results files), and a
    # record without a label with KeyError: 'label'.
    from skdict.experiments import format_real_table, plot_real

    swept = [{**records[0], "seed": 0}, {**records[0], "seed": 0, "value": 20}]
    for report in (format_real_table, lambda r: plot_real(r, tmp_path / "r.png")):
        for given in (records, swept):
            with pytest.raises(
                ValueError, match=r"synthetic study's records .* sweep n"
            ):
                report(given)
        with pytest.raises(ValueError, match=r"records\[0\] has no 'label'"):
            report([{"mcc_ood": 0.5}])
    # No records make a table of no rows (and no figure).
    assert format_real_table([]).splitlines()[0].startswith("method")


# --------------------------------------------- pinned by mutation testing


def test_compare_methods_is_quiet_at_verbose_0(data, capsys):
    compare_methods(data, ["fista_oracle"], settings=TINY)
    assert capsys.readouterr().err == ""


def test_methods_fit_on_their_documented_half(data):
    # As in the paper: DL-FISTA learns its dictionary on the X_val it codes;
    # SAEs train on X_train. A continuous score tells the halves apart
    # (support F1 and L0 are counts, often equal after either fit).
    records = compare_methods(
        data, ["dl_fista", "sae_topk"], random_state=0, settings=TINY
    )
    context = MethodContext(data, TINY, 0, "cpu")
    for record, X_fit in zip(records, (data.X_val, data.X_train), strict=True):
        estimator = METHODS[record["method"]].build(context).fit(X_fit)
        codes = estimator.transform(data.X_ood)
        expected = reconstruction_error(data.X_ood, estimator.inverse_transform(codes))
        assert record["mse_ood"] == pytest.approx(expected, rel=1e-9), record["method"]


def test_mcc_ood_keeps_the_top_variance_code_dimensions(data):
    # Only 7 of the 12 latents vary on the OOD samples: the paper's MCC-OOD
    # lets only the 7 code dimensions of highest OOD variance compete. (For
    # the oracle, whose other dimensions are silent there, it changes nothing.)
    [record] = compare_methods(data, ["linear_probe"], settings=TINY)
    probe = METHODS["linear_probe"].build(MethodContext(data, TINY, 0, "cpu"))
    codes = probe.fit(data.X_train, data.Z_train).predict(data.X_ood)
    top = mcc_score(data.Z_ood, codes, top_variance=True)
    assert record["mcc_ood"] == pytest.approx(top, rel=1e-9)
    assert top != pytest.approx(mcc_score(data.Z_ood, codes), abs=1e-3)


@pytest.fixture
def trained(monkeypatch):
    """The activations of the SAEs the methods build, in order."""
    activations = []
    sae = MethodContext.sae

    def recording(self, activation):
        activations.append(activation)
        return sae(self, activation)

    monkeypatch.setattr(MethodContext, "sae", recording)
    return activations


def test_sae_fista_methods_reuse_the_sae_an_earlier_method_trained(data, trained):
    first = compare_methods(
        data, ["sae_topk", "sae_dict_fista"], settings=TINY, random_state=0
    )
    assert trained == ["topk"]
    # Asked the other way round, the SAE's method still runs first: the SAE
    # was trained twice. The records come in the order asked, the same.
    later = compare_methods(
        data,
        ["fista_oracle", "sae_dict_fista", "sae_topk"],
        settings=TINY,
        random_state=0,
    )
    assert trained == ["topk", "topk"]
    assert [r["method"] for r in later] == [
        "fista_oracle",
        "sae_dict_fista",
        "sae_topk",
    ]
    for record in first:
        [twin] = [r for r in later if r["method"] == record["method"]]
        assert twin["mcc_ood"] == record["mcc_ood"]


def test_a_study_runs_the_sae_method_before_those_built_on_it(tmp_path, trained):
    methods = ("sae_dict_fista", "fista_oracle", "sae_topk")
    records = run_study(
        "vary_latents",
        values=(12,),
        seeds=(0,),
        methods=methods,
        data_params=TINY_DATA,
        settings=TINY,
        out=tmp_path,
        progress=False,
    )
    assert trained == ["topk"]
    assert [r["method"] for r in records] == list(methods)


def test_resume_key_does_not_depend_on_the_order_of_parameters():
    one = Cell("s", "quick", {"n_active": 2, "n_samples": 200}, 0, ("m",))
    other = Cell("s", "quick", {"n_samples": 200, "n_active": 2}, 0, ("m",))
    assert one.key("m") == other.key("m")


def test_preset_settings_and_fixed_data_follow_the_docs():
    # quick: shorter SAE and dictionary training; paper: the paper's settings.
    assert _runner.plan_study("vary_latents")[1] == PaperSettings(
        sae_epochs=200, dict_max_iter=30
    )
    assert _runner.plan_study("vary_latents", preset="paper")[1] == PaperSettings()
    # quick keeps the paper's data (k = 10, 5,000 samples) where not swept.
    for study in STUDIES.values():
        quick, paper = study.fixed["quick"], study.fixed["paper"]
        for name in ("n_active", "n_samples"):
            if name in paper:
                assert quick[name] == paper[name] == {"n_active": 10}.get(name, 5000)
    # The penalty sweep: the oracle and the base SAE's dictionary.
    assert STUDIES["alpha"].methods == ("fista_oracle", "sae_dict_fista")


def test_study_cells_name_unknown_studies_and_presets():
    with pytest.raises(ValueError, match="Unknown study 'nope'") as error:
        study_cells("nope")
    assert "run_real" not in str(error.value)
    # The CLI takes --study real, which is run_real's, not a run_study's.
    with pytest.raises(ValueError, match="the real-activation study is run_real"):
        study_cells("real")
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        study_cells("vary_latents", preset="huge")


def test_cells_hold_plain_data_parameters():
    # Sizes swept or fixed are Python ints (saved in JSON and resume keys),
    # and data_params replace the preset's fixed parameters.
    cells, _ = _runner.plan_study("vary_samples", values=(np.int64(500), 2000))
    assert [type(c.data_params["n_samples"]) for c in cells] == [int, int]
    data_params = {"n_active": np.int64(2), "n_samples": 200}
    [cell], _ = _runner.plan_study(
        "vary_latents", values=(12,), data_params=data_params
    )
    assert cell.data_params == {"n_active": 2, "n_samples": 200, "n_latents": 12}
    assert type(cell.data_params["n_active"]) is int
    cells, _ = _runner.plan_study("vary_samples")  # the preset's grid too
    assert all(type(c.data_params["n_samples"]) is int for c in cells)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_mcc_id_lets_every_code_dimension_compete():
    # Five validation samples: 5 of the 12 latents vary there. Only MCC-OOD
    # is restricted to the code dimensions of highest variance.
    small = make_compositional(n_latents=12, n_active=2, n_samples=10, random_state=0)
    [record] = compare_methods(small, ["linear_probe"], settings=TINY)
    probe = METHODS["linear_probe"].build(MethodContext(small, TINY, 0, "cpu"))
    codes = probe.fit(small.X_train, small.Z_train).predict(small.X_val)
    every = mcc_score(small.Z_val, codes)
    assert record["mcc_id"] == pytest.approx(every, rel=1e-9)
    assert every != pytest.approx(mcc_score(small.Z_val, codes, top_variance=True))


def test_compare_methods_defaults_to_the_papers_settings(data, monkeypatch):
    contexts = []
    original = _compare.MethodContext

    def recording(*args):
        contexts.append(original(*args))
        return contexts[-1]

    monkeypatch.setattr(_compare, "MethodContext", recording)
    compare_methods(data, ["fista_oracle"], random_state=3)
    [context] = contexts
    assert context.settings == PaperSettings() and context.seed == 3


def test_cli_handles_ctrl_c_while_the_libraries_load(tmp_path):
    # Importing skdict loaded torch and scikit-learn (about 2.6 s) before the
    # command's handler of Ctrl-C existed: an interrupt then printed a
    # traceback. The package now loads them on first use, inside main().
    import signal
    import subprocess

    code = "import sys, skdict; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert loaded.stdout.decode().strip() == "False"
    # The child says when it is about to enter main(): a fixed wait let a slow
    # interpreter start (under coverage) take the signal before Python's own
    # handler existed. It takes Ctrl-C as a terminal's user would, whatever
    # the suite inherited (a background job ignores SIGINT). An interrupt
    # inside an extension module's initialisation once went astray (an
    # ImportError, an abort, or a whole study run and 0 returned): the
    # command now holds it until the libraries have loaded.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "import skdict.__main__ as cli; print('ready', flush=True); "
        "sys.exit(cli.main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "reproduce", "--out", str(tmp_path)]
    command = subprocess.Popen(
        [*argv, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert command.stdout.readline().strip() == b"ready"
    time.sleep(0.2)  # inside main(), loading the libraries or running
    command.send_signal(signal.SIGINT)
    _, err = command.communicate(timeout=120)
    assert command.returncode == 130
    assert b"Traceback" not in err and b"interrupted" in err


def test_cli_version_loads_no_library():
    # skdict --version loaded torch, SciPy and scikit-learn (2.8 s) to print
    # one line.
    import subprocess

    code = (
        "import sys; from skdict.__main__ import main; code = main(['--version']); "
        "print(code, 'torch' in sys.modules)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert shown.stdout.decode().split("\n")[:2] == [
        f"skdict {skdict.__version__}",
        "0 False",
    ]


def test_interrupts_are_held_until_the_libraries_have_loaded():
    import os
    import signal

    from skdict.__main__ import _interrupts_held

    # Python's own handler, whatever the test process inherited.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loaded = []
        with pytest.raises(KeyboardInterrupt):
            with _interrupts_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)  # the handler runs between bytecodes
                loaded.append(True)
        assert loaded == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # A Ctrl-C that Python does not handle stays as it was.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("name", "default", "status", "said"),
    [
        ("SIGINT", "default_int_handler", 130, "interrupted"),
        # SIGTERM ended the process by default, with no line in the job's
        # log; a moment later the same signal got a message.
        ("SIGTERM", "SIG_DFL", 143, "terminated (SIGTERM)"),
    ],
)
def test_cli_holds_signals_until_the_libraries_have_loaded(
    monkeypatch, capsys, name, default, status, said
):
    # The CLI itself uses the hold: a signal while its parser imports the
    # libraries lets the imports finish (a half-imported module stays broken
    # in sys.modules), then stops the run with one line.
    import argparse
    import os
    import signal

    signum, handler = getattr(signal, name), getattr(signal, default)
    loaded = []

    def loading():
        os.kill(os.getpid(), signum)
        time.sleep(0.2)  # the handler runs between bytecodes
        loaded.append(True)
        return argparse.ArgumentParser()

    previous = signal.signal(signum, handler)
    try:
        monkeypatch.setattr(skdict.__main__, "_parser", loading)
        assert main(["reproduce"]) == status
        assert loaded == [True]
        assert signal.getsignal(signum) == handler
        err = capsys.readouterr().err
        assert err.strip() == f"skdict: {said} before any study ran."
    finally:
        signal.signal(signum, previous)


def test_sigterm_beside_ctrl_c_wins_and_a_callers_handler_stays(monkeypatch):
    import argparse
    import os
    import signal

    def both():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        return argparse.ArgumentParser()

    previous = (
        signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.signal(signal.SIGTERM, signal.SIG_DFL),
    )
    try:
        # Terminated, as a scheduler's signal wins.
        monkeypatch.setattr(skdict.__main__, "_parser", both)
        assert main(["reproduce"]) == 143
        # A handler of the caller's stays in charge.
        caught = []
        signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
        with skdict.__main__._interrupts_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        assert caught == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def test_cli_terminated_while_checking_its_options_prints_one_line(
    tmp_path, monkeypatch, capsys
):
    import os
    import signal

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs between bytecodes

    monkeypatch.setattr(skdict.experiments._report, "check_plots_extra", terminated)
    before = signal.getsignal(signal.SIGTERM)
    argv = ["reproduce", "--study", "alpha", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert err.strip() == "skdict: terminated (SIGTERM) before any study ran."
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_interrupted_while_starting_prints_one_line(monkeypatch, capsys):
    # Ctrl-C while the libraries loaded (the first seconds) printed a
    # traceback of 35 to 56 lines.
    def loading():
        raise KeyboardInterrupt

    monkeypatch.setattr(skdict.__main__, "_parser", loading)
    assert main(["reproduce"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "skdict: interrupted before any study ran."


@pytest.mark.parametrize("blocked", ["alpha-quick.png", "real-quick.json"])
def test_cli_refuses_a_folder_in_place_of_an_output_before_running(
    tmp_path, monkeypatch, capsys, blocked
):
    # A folder where the figure goes was found only after the whole study
    # had run, in an error naming a temporary file.
    (tmp_path / blocked).mkdir()
    ran = []
    monkeypatch.setattr(skdict.__main__, "_run_studies", lambda *a: ran.append(a))
    monkeypatch.setattr(skdict.__main__, "_check_real", lambda methods: None)
    study = blocked.split("-")[0]
    argv = ["reproduce", "--study", study, "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    assert not ran
    err = capsys.readouterr().err
    assert f"{tmp_path / blocked} is a folder" in err and ".tmp" not in err


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    # "A crash or an interrupt leaves either the old file or the new one."
    from skdict._files import write_atomically

    path = tmp_path / "records.json"
    path.write_text("[]")

    def interrupted(handle):
        handle.write("[1, ")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, interrupted)
    assert [p.name for p in tmp_path.iterdir()] == ["records.json"]
    assert path.read_text() == "[]"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{}", "it is not a list"),
        ("5", "it is not a list"),
        ("null", "it is not a list"),
        # Which record, and what it lacks: the file may hold hours of results.
        (
            '[{"key": "a", "method": "m", "label": "M"}, 3]',
            r"records\[1\] is not one \(a int\)",
        ),
        (
            '[{"key": "a", "method": "m"}]',
            r"records\[0\] is not one \(no string 'label'\)",
        ),
    ],
)
def test_load_records_refuses_json_that_is_not_a_list_of_records(tmp_path, text, named):
    path = tmp_path / "vary_latents-quick.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"does not hold a list .*: {named}"):
        load_records(path)


def test_write_atomically_names_the_folder_in_the_way(tmp_path):
    from skdict._files import write_atomically

    (tmp_path / "figure.png").mkdir()
    with pytest.raises(IsADirectoryError) as refused:
        write_atomically(tmp_path / "figure.png", lambda handle: handle.write("x"))
    assert str(tmp_path / "figure.png") in str(refused.value)
    assert ".tmp" not in str(refused.value)
    assert [path.name for path in tmp_path.iterdir()] == ["figure.png"]


def test_write_atomically_names_its_target_not_the_temporary_file(
    tmp_path, monkeypatch
):
    # plot_study into a missing folder said "No such file or directory:
    # 'figs/latents.png.13869.7149a869a5d2cc03.tmp'".
    import os

    from skdict._files import write_atomically

    target = tmp_path / "figs" / "latents.png"
    with pytest.raises(FileNotFoundError) as refused:
        write_atomically(target, lambda handle: handle.write("x"))
    assert refused.value.filename == str(target)

    # A file that cannot be replaced (an immutable one) names itself too, and
    # leaves no temporary file.
    def not_permitted(src, dst):
        raise PermissionError(1, "Operation not permitted", str(src), str(dst))

    monkeypatch.setattr(os, "replace", not_permitted)
    with pytest.raises(PermissionError) as refused:
        write_atomically(tmp_path / "a.json", lambda handle: handle.write("x"))
    assert refused.value.filename == str(tmp_path / "a.json")
    assert not list(tmp_path.glob("*.tmp"))

    # Errors that name no file pass as they are.
    def full(handle):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as refused:
        write_atomically(tmp_path / "b.json", full)
    assert refused.value.filename is None


def test_cli_says_what_an_interrupted_real_study_left(tmp_path):
    # The message printed "real-<preset>.json holds the seeds it finished",
    # also when no seed had finished and the file held an earlier run's.
    from skdict.__main__ import _what_is_kept

    path = tmp_path / "real-quick.json"
    started = time.time()
    assert "no seed finished;" in _what_is_kept(["real"], tmp_path, "quick", started)
    path.write_text("[]")
    os.utime(path, (started - 60, started - 60))
    kept = _what_is_kept(["real"], tmp_path, "quick", started)
    assert f"no seed finished, and {path} still holds an earlier run's" in kept
    os.utime(path, (started + 1, started + 1))
    kept = _what_is_kept(["real"], tmp_path, "quick", started)
    assert f"{path} holds the seeds this run finished" in kept
    # A synthetic study beside it resumes; the real one does not.
    path.unlink()
    kept = _what_is_kept(["vary_latents", "real"], tmp_path, "quick", started)
    assert "the same command resumes them" in kept
    assert "The real study does not resume: no seed finished" in kept
    assert "resumes them" not in _what_is_kept(["real"], tmp_path, "quick", started)


def test_load_records_refuses_records_without_method_or_label(tmp_path):
    # A record without its label (edited by hand) was resumed, then the
    # tables failed with KeyError: 'label'.
    path = tmp_path / "vary_latents-quick.json"
    for record in ({"key": "k", "method": "m"}, {"study": "real", "label": "L"}):
        path.write_text(json.dumps([record]))
        with pytest.raises(ValueError, match="each with a 'method' and a 'label'"):
            load_records(path)


def test_run_study_errors_name_the_argument(tmp_path):
    # seeds=0 and values=20 failed with "'int' object is not iterable", an
    # unknown data parameter inside the data generator, and a bad seed named
    # study_cells.
    kwargs = dict(out=tmp_path, progress=False)
    with pytest.raises(TypeError, match=r"seeds must be a sequence \(e.g. \[0\]\)"):
        run_study("vary_latents", seeds=0, **kwargs)
    with pytest.raises(TypeError, match=r"values must be a sequence \(e.g. \[20\]\)"):
        run_study("vary_latents", values=20, **kwargs)
    with pytest.raises(ValueError, match="data_params holds 'bogus', which make_comp"):
        run_study("vary_latents", data_params={"bogus": 1}, **kwargs)
    with pytest.raises(ValueError, match="'seeds' parameter of run_study"):
        run_study("vary_latents", seeds=[-1], **kwargs)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_run_study_reads_seeds_from_a_generator_once(tmp_path, monkeypatch):
    # The seeds' check read a generator, and the cells found it empty.
    planned = []

    def plan(study, **kwargs):
        planned.append(kwargs["seeds"])
        raise KeyboardInterrupt  # stop before any cell runs

    monkeypatch.setattr(_runner, "plan_study", plan)
    with pytest.raises(KeyboardInterrupt):
        run_study("vary_latents", seeds=(s for s in [3, 1]), out=tmp_path)
    assert planned == [(3, 1)]


def test_each_seed_of_a_study_runs_on_its_own_data(tmp_path):
    # Seed s is compare_methods on make_compositional(random_state=s): a
    # spread over seeds is a spread over data sets.
    records = run_study(
        "vary_latents",
        seeds=[0, 1],
        values=[20],
        methods=["linear_probe"],
        data_params={"n_samples": 200},
        out=tmp_path,
        progress=False,
    )
    assert sorted(record["seed"] for record in records) == [0, 1]
    for record in records:
        data = make_compositional(
            n_latents=20, n_active=10, n_samples=200, random_state=record["seed"]
        )
        [alone] = compare_methods(data, ["linear_probe"], random_state=record["seed"])
        assert record["mcc_ood"] == pytest.approx(alone["mcc_ood"])


def test_real_records_in_a_synthetic_studys_file_are_refused_by_name(tmp_path):
    (tmp_path / "vary_latents-quick.json").write_text(
        json.dumps([{"study": "real", "method": "fista_oracle", "label": "FISTA"}])
    )
    with pytest.raises(ValueError, match="real-activation study's records"):
        run_study(
            "vary_latents",
            values=[20],
            methods=["fista_oracle"],
            data_params={"n_samples": 100},
            out=tmp_path,
            progress=False,
        )


def test_a_folder_that_refuses_new_files_is_refused_before_any_run(
    tmp_path, monkeypatch
):
    # As a read-only folder does for a user other than root (root ignores
    # its mode, hence the patch): refused before the first method runs.
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_runner.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(OSError, match=r"Cannot write results to .*Permission denied"):
        _runner.check_output_dir(tmp_path)


def test_paper_settings_default_to_the_documented_values():
    paper = PaperSettings()
    assert paper.dict_max_iter == 100
    assert paper.oracle_encoder_activation == "relu"


def test_settings_reach_the_estimators_they_configure():
    data = make_compositional(n_latents=20, n_active=3, n_samples=100, random_state=0)
    settings = PaperSettings(
        sae_lr=1e-3, sae_batch_size=16, sparsity_coef=3e-4, dict_max_iter=7
    )
    context = MethodContext(data, settings, 0, "cpu")
    for name in (*SAE_METHODS, "oracle_sae_encoder"):
        sae = METHODS[name].build(context)
        assert (sae.lr, sae.batch_size, sae.sparsity_coef) == (1e-3, 16, 3e-4), name
    assert METHODS["dl_fista"].build(context).dict_max_iter == 7


def test_the_sae_behind_sae_dict_fista_trains_on_the_training_half():
    # sae_dict_fista alone trains the SAE that sae_topk shares when it runs
    # first: on the training half, never on the half it then codes.
    data = make_compositional(n_latents=20, n_active=3, n_samples=200, random_state=0)
    settings = PaperSettings(sae_epochs=3)
    [alone] = compare_methods(
        data, ["sae_dict_fista"], random_state=0, settings=settings
    )
    _, shared = compare_methods(
        data, ["sae_topk", "sae_dict_fista"], random_state=0, settings=settings
    )
    assert alone["mcc_ood"] == pytest.approx(shared["mcc_ood"])


def test_studies_run_the_documented_methods():
    for study in ("vary_latents", "vary_sparsity", "vary_samples"):
        assert set(SAE_METHODS) <= set(STUDIES[study].methods), study
    # dictionaries.rst: the SAE warm start of the controlled study.
    assert "dl_fista_sae_init" in STUDIES["controlled"].methods


def test_summaries_are_means_over_seeds_in_ascending_order_of_the_value():
    records = [{"label": "A", "value": 1, "mcc_ood": v} for v in (0.0, 0.0, 0.9)]
    records += [{"label": "A", "value": 0.5, "mcc_ood": 0.5}]
    summary = summarize(records)["A"]
    assert list(summary) == [0.5, 1]
    mean, _, n = summary[1]
    assert (mean, n) == (pytest.approx(0.3), 3)


def test_tables_show_reconstruction_errors_in_scientific_notation():
    records = [{"label": "A", "value": 10, "variable": "n", "mse_gap": 1.234e-3}]
    assert "1.2e-03" in format_table(records, "mse_gap")


def test_table_columns_ascend_whatever_method_comes_first():
    # A method without a value at 50 listed first (its runs failed there).
    records = [
        {"label": label, "value": v, "variable": "n", "mcc_ood": 0.5}
        for label, v in (("A", 200), ("B", 50), ("B", 200))
    ]
    header = format_table(records).splitlines()[0].split()
    assert header[1:] == ["n=50", "n=200"]


def test_plot_study_marks_chance_and_spreads_the_reconstruction_gap(
    tmp_path, saved_figures
):
    from skdict.experiments import plot_study

    records = _study_records(["fista_oracle", "sae_topk", "linear_probe"])
    for record in records:
        score = {"fista_oracle": 0.9, "sae_topk": 0.55}.get(record["method"], 0.7)
        record["mcc_ood"] = record["auc_ood"] = record["acc_ood"] = score
        record["mse_gap"] = {"fista_oracle": -2e-5, "sae_topk": 1e-2}.get(
            record["method"]
        )
    plot_study(records, tmp_path / "a.png")
    mcc, auc, acc, gap = saved_figures[0].axes

    def chance_lines(ax):
        return [line for line in ax.get_lines() if list(line.get_ydata()) == [0.5] * 2]

    assert chance_lines(auc) and chance_lines(acc) and not chance_lines(mcc)
    # Named in the legend: a label beside the line covered points at chance.
    legend = [text.get_text() for text in saved_figures[0].legends[0].get_texts()]
    assert legend[-1] == "chance (0.5)" and not auc.texts
    # Far above chance, no line squeezes the scores' spread (0.95-0.99 filled
    # a tenth of the panel).
    for record in records:
        record["auc_ood"] = record["acc_ood"] = 0.95 + 0.04 * (record["value"] == 40)
    plot_study(records, tmp_path / "high.png")
    auc = saved_figures[-1].axes[1]
    assert not chance_lines(auc) and auc.get_ylim()[0] > 0.9
    legend = [text.get_text() for text in saved_figures[-1].legends[0].get_texts()]
    assert "chance (0.5)" not in legend
    # Gaps 500 times apart and of both signs: a symmetric log axis.
    assert gap.get_yscale() == "symlog" and mcc.get_yscale() == "linear"
    # The probe reconstructs nothing, and the panel says so.
    assert "Linear probe (ridge)" in gap.get_title(loc="right")
    assert not mcc.get_title(loc="right")
    # Gaps of one size stay linear.
    plot_study(_study_records(["fista_oracle", "sae_topk"]), tmp_path / "b.png")
    assert saved_figures[-1].axes[3].get_yscale() == "linear"


@pytest.mark.parametrize("figsize", [(7, 5.5), (3.5, 6), (11, 8)])
def test_plot_study_keeps_its_legend_inside_the_figure(
    tmp_path, saved_figures, figsize
):
    # A fixed tenth of the height and four columns: at a paper's sizes the
    # legend ran past both edges and covered the bottom panels' labels.
    from skdict.experiments import METHOD_STYLES, plot_study

    records = _study_records(list(METHOD_STYLES), seeds=(0, 1))
    plot_study(records, tmp_path / "a.png", figsize=figsize)
    figure = saved_figures[0]
    frame = figure.bbox
    legend = figure.legends[0].get_window_extent()
    assert frame.x0 - 1 <= legend.x0 and legend.x1 <= frame.x1 + 1
    assert frame.y0 - 1 <= legend.y0
    for ax in figure.axes:
        label = ax.xaxis.label.get_window_extent()
        assert label.y0 > legend.y1 or not ax.get_xlabel()


def test_study_styles_tell_the_sae_variants_apart_without_colour():
    # TopK's green and BatchTopK's purple are one grey to deuteranopes and
    # in greyscale, and ReLU's orange and JumpReLU's sky blue in greyscale:
    # each pair differs in its line as well.
    from skdict.experiments import METHOD_STYLES

    for first, second in [("sae_topk", "sae_batchtopk"), ("sae_relu", "sae_jumprelu")]:
        assert METHOD_STYLES[first][2] != METHOD_STYLES[second][2]
    markers = [marker for _, marker, _ in METHOD_STYLES.values()]
    assert len(set(markers)) == len(markers)


@pytest.mark.parametrize("suffix", [".pdf", ".svg", ".ps", ".eps"])
def test_vector_figures_keep_their_text_editable(tmp_path, suffix):
    # matplotlib's default Type 3 fonts are refused by journals' submission
    # checks, and its SVG text is drawn as paths.
    from skdict.experiments import plot_study

    path = plot_study(_study_records(["fista_oracle"]), tmp_path / f"a{suffix}")
    content = path.read_bytes()
    if suffix == ".pdf":
        assert b"/FontFile2" in content and b"/Type3" not in content  # TrueType
    elif suffix == ".svg":
        assert b"<text" in content
    else:
        # (matplotlib 3.7 also writes a Type 3 fallback for interpreters
        # without Type 42 support.)
        assert b"/FontType 42" in content


def test_plot_study_title_defaults_to_the_swept_variable(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    records = [
        {"label": "A", "value": v, "variable": "n_active", "mcc_ood": 0.5}
        for v in (2, 5)
    ]
    plot_study(records, tmp_path / "f.png")
    plot_study(records, tmp_path / "g.png", title="mine")
    # The figures' texts (Figure.get_suptitle needs matplotlib 3.8).
    texts = [[text.get_text() for text in figure.texts] for figure in saved_figures]
    assert "n_active" in texts[0]
    assert "mine" in texts[1]
    assert "n_active" not in texts[1]


def test_seeds_of_one_setting_are_not_warned_as_mixed():
    # The pooled-settings warning is for records of different settings; the
    # seeds of one setting are what summarize averages.
    cells = study_cells("vary_latents", values=[50], seeds=[0, 1, 2])
    records = [
        {
            "key": cell.key("fista_oracle"),
            "label": "FISTA",
            "value": 50,
            "variable": "n_latents",
            "mcc_ood": 0.5 + 0.1 * cell.seed,
        }
        for cell in cells
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = summarize(records)
        format_table(records)
    assert summary["FISTA"][50][2] == 3


def test_a_method_names_its_split_and_builder():
    from skdict.experiments import Method

    # fit_on="Train" fitted on the validation split, the one scored in
    # distribution, without a word.
    with pytest.raises(ValueError, match="'fit_on' parameter of Method must be"):
        Method("spy", "Spy", "Train", lambda ctx: None)
    with pytest.raises(ValueError, match="'build' parameter of Method must be"):
        Method("spy", "Spy", "train", None)
    assert Method("spy", "Spy", "val", lambda ctx: None).fit_on == "val"


def test_records_a_table_would_mislabel_or_double_count_are_refused(
    tmp_path, data, saved_figures
):
    from skdict.experiments import plot_study

    latents = _study_records(["fista_oracle"])
    sparsity = _study_records(["fista_oracle"], variable="n_active")
    # Labelled with the first record's variable: "n_latents=20" for
    # n_active=20.
    with pytest.raises(ValueError, match="'n_latents', 'n_active'"):
        format_table(latents + sparsity)
    with pytest.raises(ValueError, match="sweep different variables"):
        plot_study(latents + sparsity, tmp_path / "a.png")
    # "'<' not supported between instances of 'NoneType' and 'int'".
    compared = compare_methods(data, ["fista_oracle"], random_state=0)
    with pytest.raises(ValueError, match=r"mix run_study's .*\(compare_methods'\)"):
        summarize(latents + compared)
    # One record twice, from two results files: two seeds of one.
    keyed = [{**record, "key": f"k{i}"} for i, record in enumerate(latents)]
    with pytest.raises(ValueError, match="2 records of key 'k0'"):
        format_table(keyed + keyed[:1])
    assert "n_latents=20" in format_table(keyed)
    # A key that is not a number: float("cpu") failed.
    with pytest.raises(ValueError, match=r"metric='device' is not a number .*'cpu'"):
        format_table(compared, "device")
    # A bool is a Real, but True is no score: it averaged as 1.0.
    flagged = [{**record, "flag": True} for record in compared]
    with pytest.raises(ValueError, match=r"metric='flag' is not a number .*True"):
        format_table(flagged, "flag")
    assert not saved_figures


def test_format_table_aligns_its_columns():
    # Doctests compare with NORMALIZE_WHITESPACE, blind to alignment.
    records = [
        {"label": "A", "value": 10, "mcc_ood": 0.9, "variable": "n"},
        {"label": "A", "value": 10, "mcc_ood": 0.7, "variable": "n"},
        {"label": "longer", "value": 100, "mcc_ood": 0.5, "variable": "n"},
    ]
    assert format_table(records).splitlines() == [
        "mcc_ood         n=10  n=100",
        "A        0.80 ± 0.10      -",
        "longer             -   0.50",
        "fewer seeds than 2: longer at n=100 (1)",
    ]
    assert describe_setting([]) == ""


@pytest.mark.parametrize("sparse", [False, True])
def test_hand_built_data_give_k_from_one_row(sparse):
    # Without n_active, every row of the codes holds k latents: k is the
    # count of one row, not of several.
    Z = np.zeros((4, 6))
    Z[np.arange(4)[:, None], [[0, 1], [2, 3], [4, 5], [0, 5]]] = 1.0
    data = Bunch(dictionary=np.eye(6), Z_train=sp.csr_matrix(Z) if sparse else Z)
    context = MethodContext(data=data, settings=PaperSettings(), seed=0, device="cpu")
    assert context.n_active == 2 and context.sae("topk").k == 2


def test_methods_needing_k_names_a_topk_oracle_encoder():
    # compare_real refuses k=None for it up front only if this names it.
    method = [METHODS["oracle_sae_encoder"]]
    assert methods_needing_k(method, PaperSettings()) == []
    on_topk = PaperSettings(oracle_encoder_activation="topk")
    assert methods_needing_k(method, on_topk) == ["oracle_sae_encoder"]


def test_the_alpha_sweep_is_drawn_on_a_log_axis(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    records = [
        {"label": "A", "value": v, "variable": "alpha", "mcc_ood": 0.5, "seed": 0}
        for v in (0.01, 0.1, 1.0)
    ]
    plot_study(records, tmp_path / "alpha.png")
    assert {ax.get_xscale() for ax in saved_figures[0].axes} == {"log"}


def test_two_labels_of_one_method_get_different_styles(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    records = [
        {
            "label": label,
            "method": "sae_topk",
            "value": v,
            "variable": "n_latents",
            "mcc_ood": 0.5,
            "seed": 0,
        }
        for label in ("TopK k=5", "TopK k=10")
        for v in (10, 20)
    ]
    plot_study(records, tmp_path / "s.png")
    legend = saved_figures[0].legends[0]
    handles = [
        handle
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True)
        if text.get_text() != "chance (0.5)"
    ]
    styles = {(h.get_color(), h.get_marker(), h.get_linestyle()) for h in handles}
    assert len(handles) == len(styles) == 2


def test_the_legend_gives_the_range_of_seed_counts(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    records = [
        {
            "label": label,
            "value": 10,
            "variable": "n_latents",
            "mcc_ood": 0.1 * seed,
            "seed": seed,
        }
        for label, seeds in (("A", 3), ("B", 2))
        for seed in range(seeds)
    ]
    plot_study(records, tmp_path / "s.png")
    assert "2-3 seeds" in saved_figures[0].legends[0].get_title().get_text()


def test_error_bars_are_one_standard_deviation_over_seeds(tmp_path, saved_figures):
    from skdict.experiments import plot_study

    records = [
        {"label": "A", "value": 10, "variable": "n_latents", "mcc_ood": m, "seed": s}
        for s, m in enumerate((0.4, 0.6))
    ]
    plot_study(records, tmp_path / "s.png")
    mcc_panel = saved_figures[0].axes[0]
    [bars] = mcc_panel.containers[0].lines[2]
    [(_, low), (_, high)] = bars.get_segments()[0]
    assert (low, high) == (pytest.approx(0.4), pytest.approx(0.6))


def _reproduce(tmp_path, *extra):
    argv = [
        "reproduce",
        "--study",
        "alpha",
        "--values",
        "0.05",
        "--methods",
        "fista_oracle",
        "--out",
        str(tmp_path),
        "--no-progress",
        *extra,
    ]
    assert main(argv) == 0


def test_the_cli_prints_a_table_per_headline_metric(tmp_path, capsys):
    _reproduce(tmp_path)
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if "alpha=0.05" in line] == [
        "mcc_ood",
        "auc_ood",
        "acc_ood",
        "mse_gap",
    ]


def test_the_cli_runs_the_seeds_given(tmp_path):
    _reproduce(tmp_path, "--seeds", "1", "2")
    records = json.loads((tmp_path / "alpha-quick.json").read_text())
    assert sorted(record["seed"] for record in records) == [1, 2]


def test_the_cli_runs_the_preset_given(tmp_path, monkeypatch):
    seen = {}

    def run_study(study, **kwargs):
        seen.update(kwargs)
        return [
            {
                "label": "A",
                "value": 0.05,
                "variable": "alpha",
                "mcc_ood": 0.5,
                "auc_ood": 0.5,
                "acc_ood": 0.5,
                "mse_gap": 0.0,
            }
        ]

    monkeypatch.setattr(skdict.experiments, "run_study", run_study)
    _reproduce(tmp_path, "--preset", "paper")
    assert seen["preset"] == "paper"


@pytest.mark.parametrize(("preset", "n_latents"), [("paper", 1000), ("quick", 100)])
def test_the_alpha_study_runs_on_the_documented_data(preset, n_latents):
    # reproduce.rst: the alpha study sweeps the penalties at n_latents=1000;
    # quick keeps the paper's data but 100 latents where a study fixes 1,000.
    cells = study_cells("alpha", preset=preset)
    data = {
        (
            c.data_params["n_latents"],
            c.data_params["n_active"],
            c.data_params["n_samples"],
        )
        for c in cells
    }
    assert data == {(n_latents, 10, 5000)}


def _gap_records(gaps, values=(20, 40)):
    # One seed of fista_oracle and sae_topk (and more), gaps per method.
    from skdict.experiments._methods import METHODS

    return [
        {
            "method": name,
            "label": METHODS[name].label,
            "value": value,
            "variable": "n_latents",
            "seed": 0,
            "mcc_ood": 0.8,
            "auc_ood": 0.8,
            "acc_ood": 0.8,
            "mse_gap": gap,
        }
        for value in values
        for name, gap in gaps.items()
    ]


def test_plot_study_draws_the_gap_on_symlog_only_when_sizes_differ(
    tmp_path, saved_figures
):
    # Linear within a hundredth of the largest gap, with a zero line; gaps of
    # zero are no size, and gaps fifty times apart stay on a linear axis.
    from skdict.experiments import plot_study

    plot_study(
        _gap_records({"fista_oracle": -2e-5, "sae_topk": 1e-2}), tmp_path / "a.png"
    )
    gap = saved_figures[-1].axes[3]
    assert gap.get_yscale() == "symlog"
    assert gap.yaxis.get_transform().linthresh == pytest.approx(1e-2 / 100)
    # Margins on the new scale: the largest gap's marker is not cut in half.
    assert gap.get_ylim()[1] > 1.1e-2
    assert any(list(line.get_ydata()) == [0, 0] for line in gap.get_lines())
    # A zero gap (identical reconstructions) beside gaps of one size.
    plot_study(
        _gap_records({"fista_oracle": 0.0, "sae_topk": 1e-3}), tmp_path / "b.png"
    )
    assert saved_figures[-1].axes[3].get_yscale() == "linear"
    # Fifty times apart: still linear.
    plot_study(
        _gap_records({"fista_oracle": 2e-5, "sae_topk": 1e-3}), tmp_path / "c.png"
    )
    assert saved_figures[-1].axes[3].get_yscale() == "linear"


def test_plot_study_spreads_many_methods_over_seven_percent(tmp_path, saved_figures):
    # Twelve methods use the whole 7 % either side of a value, not a corner.
    from skdict.experiments import plot_study

    records = _gap_records({"fista_oracle": 1e-4, "sae_topk": 1e-4})
    records += [
        {**records[0], "method": f"m{i}", "label": f"m{i}", "value": value}
        for i in range(10)
        for value in (20, 40)
    ]
    plot_study(records, tmp_path / "a.png")
    xs = [line.get_xdata()[0] for line in saved_figures[-1].axes[0].get_lines()]
    xs = [x for x in xs if 15 < x < 30]
    assert len(xs) == 12
    assert max(xs) / 20 == pytest.approx(1.07) and min(xs) / 20 == pytest.approx(
        1 / 1.07
    )
