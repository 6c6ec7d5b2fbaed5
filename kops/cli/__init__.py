"""The kops command line: ``kops fit | predict | evaluate | info | bench | demo | train``.

``python -m kops ...`` and the ``kops`` console script both call :func:`main`. Every user
error (a bad argument, a missing file, data that does not fit the model, a damaged or
foreign checkpoint, a missing optional dependency) ends with one line on stderr naming
the argument, ``kops CMD: error: ...``, and exit status 2; a diverging fit exits with 1.
"""
from __future__ import annotations

import os
import sys

__all__ = ["main"]


def _run(args) -> int:
    from . import commands

    return getattr(commands, args.command)(args)


def main(argv=None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status."""
    from .args import build_parser
    from .errors import UsageError

    from .distributed import rank, report_error, silent_rank

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad argument (one line printed: by rank 0 under torchrun) or --help
        return exc.code if isinstance(exc.code, int) else 2
    prog = f"kops {args.command}"
    if silent_rank():  # under torchrun, ranks > 0 print only errors, with their rank (report_error)
        prog += f" (rank {rank()})"
    try:
        status = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        # e.g. ``kops info --json | head``: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        report_error(f"{prog}: error: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - sorted below: user errors get one line
        from ..solvers.base import DivergenceError

        if isinstance(exc, DivergenceError):
            report_error(f"{prog}: error: {exc}")
            return 1
        if type(exc).__name__ == "DistributedError":  # a collective failed: another rank died or stalled
            report_error(f"{prog}: error: {' '.join(str(exc).split())}")
            return 1
        if isinstance(exc, (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError)):
            report_error(f"{prog}: error: {' '.join(str(exc).split())}")
            return 2
        raise
