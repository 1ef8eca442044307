"""Run a study cell by cell, saving every result as it arrives.

Results go to ``<out>/<study>-<preset>.json`` (a list of records) after every
method of every cell, written atomically, so an interrupted run loses at most
the method in flight and a second run resumes where the first stopped. Runs
sharing the folder merge their records into the file rather than overwrite
each other's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._files import exclusive_access, write_atomically
from .._params import validate_hyperparameters
from .._tensor import resolve_device
from .._typing import Bool, Int
from .._warnings import warn
from ..datasets import make_compositional
from ..datasets._compositional import check_compositional_params
from ._compare import (
    ENVIRONMENT_KEYS,
    RECORD_KEYS,
    _method_records,
    computed_with,
    resolve_methods,
    run_order,
)
from ._methods import METHODS, PaperSettings
from ._studies import (
    STUDIES,
    Cell,
    check_seeds,
    is_sequence,
    preset_settings,
    study_cells,
)

__all__ = ["load_records", "plan_study", "run_study"]


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read the records a study saved.

    Parameters
    ----------
    path : path
        A ``<study>-<preset>.json`` file written by :func:`run_study`, or a
        ``real-<preset>.json`` file written by :func:`run_real`.

    Returns
    -------
    list of dict
        The records. Those of
        :func:`run_study` go to :func:`format_table` and :func:`summarize`,
        those of :func:`run_real` to :func:`format_real_table` and
        :func:`plot_real`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (a mistyped path, or another ``out``
        folder than the run's).
    ValueError
        If the file is not valid JSON or does not hold a list of records.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skdict.experiments import load_records, run_study
    >>> out = tempfile.TemporaryDirectory()
    >>> records = run_study(
    ...     "vary_latents",
    ...     values=[20],
    ...     methods=["fista_oracle"],
    ...     data_params={"n_samples": 100},
    ...     out=out.name,
    ...     progress=False,
    ... )
    >>> load_records(Path(out.name) / "vary_latents-quick.json") == records
    True
    >>> load_records(Path(out.name) / "vary_sparsity-quick.json")
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...vary_sparsity-quick.json does not exist...
    >>> out.cleanup()
    """
    path = Path(path)
    if not path.exists():
        # Not an empty list: a mistyped path then gave empty tables and a
        # figure refused with "records is empty", naming no path.
        raise FileNotFoundError(
            f"{path} does not exist. run_study and run_real save their records "
            "as <study>-<preset>.json in their out folder (skdict_results by "
            "default)."
        )
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); move it away to start afresh."
        ) from exc
    # The first record that is not one, so that a hand edit can be mended
    # (the file may hold hours of results) rather than the file thrown away.
    bad = (
        "it is not a list"
        if not isinstance(records, list)
        else next(
            (
                f"records[{i}] is not one ({_describe(record)})"
                for i, record in enumerate(records)
                if not _is_record(record)
            ),
            None,
        )
    )
    if bad is not None:
        raise ValueError(
            f"{path} does not hold a list of skdict records (dicts with a 'key', "
            "as run_study writes, or with study 'real', as run_real writes, "
            f"each with a 'method' and a 'label'): {bad}. Mend it, or move it away "
            "to start afresh."
        )
    return records


def _describe(record: Any) -> str:
    """Name what a record that is not one lacks, for load_records' error."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}"
    wrong = [
        key
        for key, ok in (
            (
                "key",
                isinstance(record.get("key"), str) or record.get("study") == "real",
            ),
            ("method", isinstance(record.get("method"), str)),
            ("label", isinstance(record.get("label"), str)),
        )
        if not ok
    ]
    return "no string " + ", ".join(map(repr, wrong))


def _is_record(record: Any) -> bool:
    """Whether ``record`` is one of run_study's (keyed) or run_real's records.

    Each names its method and the label the tables and figures show it by: a
    record without them (edited by hand) was resumed, then failed in the
    tables with a KeyError.
    """
    return (
        isinstance(record, dict)
        and (isinstance(record.get("key"), str) or record.get("study") == "real")
        and isinstance(record.get("method"), str)
        and isinstance(record.get("label"), str)
    )


def load_study_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """:func:`load_records` for a synthetic study's file (records keyed to resume).

    A file not written yet holds no records: a run starts afresh.
    """
    if not Path(path).exists():
        return []
    records = load_records(path)
    if not all(isinstance(record.get("key"), str) for record in records):
        raise ValueError(
            f"{path} holds the real-activation study's records, not a synthetic "
            "study's; move it away to start afresh."
        )
    return records


def save_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` to ``path`` as JSON, replacing the file in one step."""
    write_atomically(path, lambda handle: json.dump(records, handle, indent=1))


def _save(path: Path, new_records: list[dict[str, Any]]) -> None:
    """Merge ``new_records`` into the records saved in ``path``.

    Runs of one study split by seed or method between processes (on several
    GPUs of one machine, say) may share an output folder: each merges its new
    records into the file under a lock instead of overwriting the others'.
    A new record replaces a saved one with the same key.
    """
    with exclusive_access(path.parent):
        merged = {record["key"]: record for record in load_study_records(path)}
        merged.update((record["key"], record) for record in new_records)
        save_records(path, list(merged.values()))


def check_output_dir(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and make sure files can be written there."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, delete=True)
        probe.close()
    except OSError as exc:
        # mkdir reports a file in the way as "File exists", as if the folder's
        # existence were the problem.
        in_the_way = (out.exists() or out.is_symlink()) and not out.is_dir()
        reason = "it is not a folder" if in_the_way else exc.strerror or exc
        raise OSError(f"Cannot write results to {out}: {reason}.") from exc
    return out


def plan_study(
    study: str,
    *,
    preset: str = "quick",
    seeds: Sequence[Int] | None = None,
    methods: Sequence[str] | str | None = None,
    values: Sequence[Any] | None = None,
    data_params: dict[str, Any] | None = None,
    settings: PaperSettings | None = None,
) -> tuple[list[Cell], PaperSettings]:
    """Expand a study into cells and check every cell before any of them runs.

    Parameters are those of :func:`run_study`. Returns the cells and the
    preset's settings they change. A bad swept value, seed or data parameter
    raises the error :func:`~skdict.datasets.make_compositional` would, and a
    bad setting that of :class:`PaperSettings`, instead of failing hours
    into a sweep.
    """
    cells = study_cells(
        study, preset, seeds, methods, values=values, data_params=data_params
    )
    base = preset_settings(preset)
    if settings is not None:
        # Settings that differ from the preset's become part of every cell's
        # changes, hence of its resume key and records: a run with other
        # settings must not be answered by the saved results of the preset's.
        overrides = _changed_settings(base, settings)
        swept = STUDIES[study].variable
        if swept in overrides:
            raise ValueError(
                f"{swept} is the variable study {study!r} sweeps; pass its values "
                f"as values=, not as settings ({swept}={overrides[swept]!r})."
            )
        cells = [
            dataclasses.replace(
                cell, setting_changes={**overrides, **cell.setting_changes}
            )
            for cell in cells
        ]
    for cell in cells:
        check_compositional_params(**cell.data_params, random_state=cell.seed)
        cell.settings(base)  # PaperSettings checks its values
    return cells, base


def run_study(
    study: str,
    *,
    preset: str = "quick",
    seeds: Sequence[Int] | None = None,
    methods: Sequence[str] | str | None = None,
    values: Sequence[Any] | None = None,
    data_params: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    out: str | os.PathLike = "skdict_results",
    settings: PaperSettings | None = None,
    progress: Bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) one study and return all of its records.

    Parameters
    ----------
    study : str
        A key of :data:`skdict.experiments.STUDIES`.
    preset : {"quick", "paper"}, default="quick"
        Grids and training settings (see :func:`study_cells`).
    seeds : sequence of int, default=None
        Seeds (preset default when None).
    methods : str or sequence of str, default=None
        Run these methods instead of the study's own (see
        :func:`~skdict.experiments.study_cells`).
    values : sequence, default=None
        Swept values replacing the preset's grid.
    data_params : dict, default=None
        ``make_compositional`` arguments replacing the preset's fixed ones.
    device : str or torch.device, default="auto"
        Where estimators compute.
    out : path, default="skdict_results"
        Folder of ``<study>-<preset>.json``; created if needed.
    settings : PaperSettings, default=None
        Overrides the preset's training settings. Those that differ from the
        preset's are added to every record and to its resume ``key``, so saved
        results are reused only by a run with the same settings.
    progress : bool, default=True
        Show a progress bar over the cells to compute, and one over each
        cell's methods.

    Returns
    -------
    list of dict
        One record per requested (cell, method), saved earlier or computed
        now, in the order of the cells: the record of :func:`compare_methods`
        with the cell's data parameters, the settings it changes (e.g.
        ``alpha`` in the alpha study), ``seed``, ``study``, the swept
        ``variable`` and its ``value``, ``key`` and the full training
        ``settings`` added. A saved record
        whose settings differ from those its cell now runs with is computed
        again (with a warning). Records of other cells stay in the file but
        are not returned, so tables and figures show only this run's grid.
        Cells on the same data (the alpha sweep's) share their SAEs: an SAE
        + FISTA method counts the SAE's training in its ``fit_time`` only in
        the first of them.

    Examples
    --------
    >>> import tempfile
    >>> from skdict.experiments import format_table, run_study
    >>> out = tempfile.TemporaryDirectory()
    >>> records = run_study(
    ...     "vary_latents",
    ...     values=[20, 40],
    ...     methods=["fista_oracle", "linear_probe"],
    ...     data_params={"n_samples": 200},
    ...     out=out.name,
    ...     progress=False,
    ... )
    >>> len(records)  # 2 values x 2 methods x 1 seed
    4
    >>> print(format_table(records))
    mcc_ood                    n_latents=20  n_latents=40
    FISTA (oracle dictionary)          0.87          0.97
    Linear probe (ridge)               0.73          0.64
    >>> out.cleanup()
    """
    validate_hyperparameters(
        {"progress": ["boolean"], "settings": [PaperSettings, None]},
        {"progress": progress, "settings": settings},
        caller_name="run_study",
    )
    resolve_device(device)  # before any cell runs, not in the first one's fit
    if seeds is not None and is_sequence(seeds):
        # Errors that name the function called; a generator is read once.
        seeds = check_seeds(seeds, "run_study")
    cells, base = plan_study(
        study,
        preset=preset,
        seeds=seeds,
        methods=methods,
        values=values,
        data_params=data_params,
        settings=settings,
    )
    out = check_output_dir(out)
    path = out / f"{study}-{preset}.json"
    records = load_study_records(path)
    expected = {
        cell.key(method): saved_form(cell.settings(base))
        for cell in cells
        for method in cell.methods
    }
    # A record saved under the same key with other training settings (by an
    # earlier version whose preset differed) would otherwise be mixed into the
    # tables as if it had run with these.
    stale = {
        i
        for i, record in enumerate(records)
        if record["key"] in expected
        and record.get("settings") != expected[record["key"]]
    }
    if stale:
        warn(
            f"{len(stale)} record(s) saved in {path} were computed with other "
            "training settings than this run's (by an earlier skdict version?); "
            "they are computed again and replaced.",
            UserWarning,
        )
    # Likewise a record lacking a score this version records (saved by an
    # earlier version): reused, its tables said "no values" for a method
    # that has one. (One lacking an environment key is kept, and announced
    # below as unrecorded.)
    scores = set(RECORD_KEYS) - set(ENVIRONMENT_KEYS)
    lacking = {
        i
        for i, record in enumerate(records)
        if i not in stale and record["key"] in expected and not scores <= record.keys()
    }
    if lacking:
        missing = sorted(scores - records[min(lacking)].keys())
        warn(
            f"{len(lacking)} record(s) saved in {path} lack keys this version "
            f"records ({', '.join(missing)}; by an earlier skdict version?); "
            "they are computed again and replaced.",
            UserWarning,
        )
    records = [r for i, r in enumerate(records) if i not in stale | lacking]
    done = {record["key"] for record in records}
    variable = STUDIES[study].variable
    todo = [
        cell for cell in cells if any(cell.key(m) not in done for m in cell.methods)
    ]
    # SAEs trained on the same data, shared between cells: the alpha sweep's
    # cells train the same SAE for sae_dict_fista (27 times where 3 would do
    # in the paper preset, where each takes minutes).
    # Each is let go after the last cell on its data (kept to the end of a
    # study, the paper preset's SAEs of 10,000 latents held about 1.5 GB).
    saes_by_data: dict[str, dict[str, Any]] = {}
    cells_left = Counter(_data_key(cell) for cell in todo)
    for cell in tqdm(todo, disable=not progress, desc=study, unit="cell"):
        chosen = resolve_methods(_pending(cell, cell.settings(base), done))
        chosen = run_order(chosen, cell.settings(base).base_sae)
        pending = [method.name for method in chosen]
        data = make_compositional(**cell.data_params, random_state=cell.seed)
        same_data = _data_key(cell)
        cells_left[same_data] -= 1
        cell_records = _method_records(
            data,
            chosen,
            cell.settings(base),
            cell.seed,
            device,
            int(progress),
            fitted_saes=saes_by_data.setdefault(same_data, {}),
        )
        value = _value(cell, variable)
        finished = 0
        try:
            for record in cell_records:
                method = pending[finished]
                record.update(
                    cell.data_params,
                    **cell.setting_changes,
                    study=study,
                    seed=cell.seed,
                    variable=variable,
                    value=value,
                    key=cell.key(method),
                    settings=expected[cell.key(method)],
                )
                # Saved method by method: a failure or an interruption loses
                # only the method it was in (an SAE's training, in the paper
                # preset, takes hours). Only the new record is merged: what
                # this run read earlier may have been recomputed since.
                _save(path, [record])
                records.append(record)
                finished += 1
        except Exception as exc:
            exc.add_note(
                f"skdict: stopped at {pending[finished]} (running it or saving "
                f"its record) in study {study!r} at {variable}="
                f"{value}, seed {cell.seed}. The methods and cells finished "
                f"before it are saved in {path}; the same call resumes them."
            )
            raise
        if not cells_left[same_data]:
            del saes_by_data[same_data]
    by_key = {record["key"]: record for record in records}
    returned = [by_key[key] for key in expected]
    _warn_mixed_environments(returned, path, computed_with(device, None))
    return returned


def _data_key(cell: Cell) -> str:
    """Return what identifies a cell's data: its generator's parameters and seed."""
    return json.dumps([cell.data_params, cell.seed], sort_keys=True)


def _pending(cell: Cell, settings: PaperSettings, done: set[str]) -> list[str]:
    """Return the methods of ``cell`` to run, in the cell's order.

    Those without a saved record, and the SAE method whose SAE a pending
    method is built on: run again beside it, it trains the SAE in its own
    ``fit_time``, as in a run never interrupted, instead of in the later
    method's.
    """
    pending = {m for m in cell.methods if cell.key(m) not in done}
    base_sae = f"sae_{settings.base_sae}"
    if any(METHODS[m].uses_base_sae for m in pending):
        pending.add(base_sae)
    return [m for m in cell.methods if m in pending]


def _warn_mixed_environments(
    records: list[dict[str, Any]], path: Path, current: dict[str, Any]
) -> None:
    """Warn when the records returned were not all computed in ``current``.

    A resumed run, or one combining runs split by seed, reuses saved records
    whatever their thread count, device (its type), processor, versions and
    source, which move results by rounding (or more, for edited code); the
    tables would mix them in unannounced, or show records computed elsewhere
    as this run's (a run on a CPU node reusing a GPU node's records said
    nothing, nor did a run of edited code of the same development version).
    """

    def seen(record: dict[str, Any], name: str) -> str:
        value = record.get(name)
        if value is None:
            return "unrecorded"
        return str(value).partition(":")[0] if name == "device" else str(value)

    mixed = {
        name: (values, seen(current, name))
        for name in ENVIRONMENT_KEYS
        if len(values := sorted({seen(record, name) for record in records})) > 1
        or values != [seen(current, name)]
    }
    if mixed:
        shown = "; ".join(
            f"{name}: {', '.join(values)} (this run: {now})"
            for name, (values, now) in mixed.items()
        )
        warn(
            f"The records of this run, some or all reused from {path}, were not "
            f"all computed in this run's environment ({shown}), which moves "
            "results by rounding, or by more where skdict's source changed. "
            "To compute them all here, give the run another output folder (out=, "
            "or --out).",
            UserWarning,
        )


def saved_form(settings: PaperSettings) -> dict[str, Any]:
    """Return ``settings`` as a record holds them once saved (lists for tuples).

    So that saved and current settings compare equal.
    """
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def _changed_settings(base: PaperSettings, settings: PaperSettings) -> dict[str, Any]:
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(PaperSettings)
        if getattr(settings, f.name) != getattr(base, f.name)
    }


def _value(cell, variable: str) -> Any:
    return {**cell.data_params, **cell.setting_changes}[variable]
