"""The ``fsray`` command: one console script, one subcommand per job.

Conventions shared by every subcommand: ``--help`` with examples; exit 0 on success, 1 on a failed
run, 2 on bad input; errors are one line on stderr (``--debug`` shows the traceback).
Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported lazily so ``fsray report`` never imports torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Each module defines EPILOG (examples), add_arguments, run.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("fsray.commands.train", "run paired no_fs/prompt_fs seeds of one FS configuration"),
    "tune": ("fsray.commands.tune", "search FS hyperparameters with Ray Tune + Optuna"),
    "report": ("analysis.cli", "stability report of paired results (fsray runs or researchers' files)"),
    "pretrain": ("fsray.commands.pretrain", "pretrain the tiny base checkpoint of the embedded default"),
    "doctor": ("fsray.commands.doctor", "check this machine's WKV kernels and show the backend auto uses"),
}

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _is_bad_input(exc: BaseException) -> bool:
    from fsray.errors import UsageError

    if isinstance(exc, UsageError):
        return True
    try:
        from analysis.errors import AnalysisInputError
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, AnalysisInputError):
        return True
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ValidationError)


def _one_line(exc: BaseException) -> str:
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore
    if isinstance(exc, ValidationError):
        errs = exc.errors()
        parts = []
        for e in errs[:3]:
            loc = ".".join(str(p) for p in e.get("loc", ())) or "value"
            parts.append(f"{loc}: {e.get('msg')}")
        return "invalid configuration: " + "; ".join(parts)
    from fsray.errors import first_line

    return first_line(exc, with_type=False)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that subcommand's module is imported (so ``fsray report``
    never imports torch or Ray, and one broken subcommand cannot break the others)."""
    parser = argparse.ArgumentParser(
        prog="fsray",
        description="Future-Seed tuning and stability analysis for RWKV-7.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  fsray tune search_spaces/demo_cpu.yaml        # the embedded default search\n"
            "  fsray report runs/demo_cpu                    # stability report of a run\n"
            "  fsray report examples/ --format html --out report.html   # the researchers' file shapes\n"
            "  fsray train --task kv_retrieval --order query_after --seeds 0,1,2\n"
            "  fsray pretrain --out base.pth                 # rebuild the shipped base checkpoint\n"
            "\nrun 'fsray COMMAND --help' for each command's options and examples."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        if only is None or name != only:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name,
            help=help_,
            description=(mod.__doc__ or help_).strip().splitlines()[0],
            epilog=getattr(mod, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fsray.errors import Interrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        command = next((a for a in argv if not a.startswith("-")), None)
        parser = build_parser(command if command in SUBCOMMANDS else None)
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return EXIT_BAD_INPUT
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("fsray: interrupted", file=sys.stderr)
        return 130
    except Interrupted as exc:   # a search stopped by SIGINT/SIGTERM (fsray.search.signals)
        print(f"fsray: interrupted by {exc}: the search stopped before its end (nothing was confirmed "
              f"or summarised); every finished seed is recorded: --resume continues it", file=sys.stderr)
        # at once: threads still in a seed run are not waited for (nothing they could finish now
        # would be recorded as more than a record --resume reuses); Ray's processes end with us
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.code)
    except SystemExit as exc:  # argparse errors already printed one line; keep its code (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except BaseException as exc:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
        if debug:
            raise
        code = EXIT_BAD_INPUT if _is_bad_input(exc) else EXIT_FAILED
        kind = "error" if code == EXIT_BAD_INPUT else "failed"
        print(f"fsray: {kind}: {_one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
