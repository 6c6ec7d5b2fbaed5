"""``kops fit`` under torchrun: the sharded estimators of :mod:`kops.distributed`.

``torchrun --nproc-per-node N -m kops fit DATA ...`` starts N processes; each reads the same
data (and makes the same validation split from ``--seed``), joins the default group (Gloo
for ``--device cpu`` or without a GPU, else NCCL with one GPU per process) and fits
``kops.distributed.sharded_estimator(cls)`` with the command line's parameters. Rank 0 alone
prints (progress, summary, JSON), writes the model file (the gathered model, the same file
a single process writes), the metrics and the plot; the other ranks are silent except for
an error of their own, printed with their rank after ``REPORT_DELAY_S`` seconds: an error
every rank meets (a bad argument, a missing file, divergence) is then reported once, by rank
0, since torchrun stops the other processes when one exits with an error. Checkpoints (``--checkpoint``) are written by
rank 0 at epoch ends (a sharded fit steps through whole epochs) and resume on any number of
processes.

What the sharded path cannot do is refused with one line naming the argument: the exact
solver, and a CUDA device index when several processes share the node.
"""
from __future__ import annotations

import os

from .errors import UsageError

__all__ = ["under_torchrun", "rank", "silent_rank", "join", "report_error", "SHARDED_SOLVERS", "REPORT_DELAY_S"]

SHARDED_SOLVERS = ("eigenpro4", "eigenpro3", "eigenpro2")
#: seconds a rank > 0 waits before printing its error (rank 0 reports an error they share)
REPORT_DELAY_S = 3.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def under_torchrun() -> bool:
    """Whether torchrun started this process (its rendezvous variables are set)."""
    return all(k in os.environ for k in _ENV)


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if under_torchrun() else 0


def silent_rank() -> bool:
    """A process of a torchrun job other than rank 0 (it prints only errors of its own)."""
    return rank() != 0


def report_error(line: str) -> None:
    """Print an error line on stderr; on ranks > 0 after ``REPORT_DELAY_S`` (module docstring)."""
    import sys
    import time

    if silent_rank():
        time.sleep(REPORT_DELAY_S)
    print(line, file=sys.stderr, flush=True)


def join(args) -> None:
    """Check what the sharded fit can honour, join the default group, silence ranks > 0.

    Raises UsageError naming the argument for the solver without a sharded version and for
    a device index shared by several processes.
    """
    if args.solver not in SHARDED_SOLVERS:
        raise UsageError(f"--solver {args.solver} has no sharded version under torchrun; run it in one process "
                         f"(python -m kops fit ...), or pick one of {', '.join(SHARDED_SOLVERS)}", "--solver")
    world = int(os.environ["WORLD_SIZE"])
    device = args.device
    if device is not None and device.startswith("cuda:") and world > 1:
        raise UsageError(f"{device!r}: under torchrun each process uses the GPU of its LOCAL_RANK; pass --device "
                         "cuda", "--device")
    import torch

    from ..distributed import init_from_env

    gpu = device is not None and device.startswith("cuda") or (device is None and torch.cuda.is_available())
    init_from_env("nccl" if gpu else "gloo")
    if rank() != 0:
        args.quiet, args.json, args.plot, args.metrics = True, False, None, None
