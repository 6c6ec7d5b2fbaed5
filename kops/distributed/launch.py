"""Run a function on several local processes joined in one process group (CPU, Gloo).

:func:`launch` is what ``torchrun --nproc-per-node N`` does for a script, for a Python
function: fresh processes (``spawn``), a group initialised through a file in a temporary
directory (no port to pick), a timeout on every collective and on the whole run. A rank
that raises or dies makes :func:`launch` raise with each failing rank's traceback; the
others fail at their next collective (:class:`~kops.distributed.group.DistributedError`)
instead of waiting, and any still running at the deadline are killed.
"""
from __future__ import annotations

import datetime
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["launch", "LaunchError"]


class LaunchError(RuntimeError):
    """A launched rank raised, died, or ran past the deadline.

    Attributes
    ----------
    errors : dict
        rank -> the rank's traceback text (or how it ended).
    """

    def __init__(self, message, errors):
        super().__init__(message)
        self.errors = errors


def _child(rank, world_size, fn, args, folder, backend, collective_timeout, threads):
    torch.set_num_threads(threads)
    try:
        if backend == "nccl":  # one GPU per rank
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(backend, init_method="file://" + os.path.join(folder, "store"), rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=collective_timeout))
        result = fn(*args)
        with open(os.path.join(folder, f"{rank}.result"), "wb") as f:
            pickle.dump(result, f)
        dist.barrier()  # every rank is past its last collective before any leaves
    except BaseException:
        with open(os.path.join(folder, f"{rank}.error"), "w") as f:
            f.write(traceback.format_exc())
        os._exit(1)  # no clean-up: the group may be broken, and destroying it could wait on dead peers
    # Leave without tearing the group down: Gloo's threads occasionally abort the interpreter's
    # exit ("terminate called without an active exception", exit code -6) after the result is
    # written, which would fail a finished run. The parent removes the rendezvous folder.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(fn, world_size: int, args=(), *, timeout: float = 120.0, collective_timeout: float = 30.0,
           backend: str = "gloo", threads: int = 1):
    """``[fn(*args) on rank r for r in range(world_size)]``, each rank a fresh process.

    Parameters
    ----------
    fn : callable
        A module-level function (the children import it); it runs with the default group
        initialised (``torch.distributed.group.WORLD``); its result must pickle.
    world_size : int
    args : tuple
        Pickled to every rank.
    timeout : float
        Seconds for the whole run; ranks still running then are killed.
    collective_timeout : float
        Seconds each collective may wait (the group's timeout).
    backend : str
        "gloo" (CPU) or "nccl".
    threads : int
        torch threads per process.

    Returns
    -------
    list
        The ranks' results, in rank order.

    Raises
    ------
    LaunchError
        When a rank raised or died (with each failing rank's traceback), or at the deadline.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    folder = tempfile.mkdtemp(prefix="kops-launch-")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(r, world_size, fn, tuple(args), folder, backend, collective_timeout,
                                              threads)) for r in range(world_size)]
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        # After a failure the others get the collective timeout to fail on their own.
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            if any(p.exitcode not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + collective_timeout + 10.0)
            time.sleep(0.05)
        errors = {}
        for rank, proc in enumerate(procs):
            if proc.is_alive():
                proc.kill()
                proc.join()
                errors[rank] = f"still running after the deadline; killed"
                continue
            proc.join()
            path = os.path.join(folder, f"{rank}.error")
            if os.path.exists(path):
                with open(path) as f:
                    errors[rank] = f.read()
            elif proc.exitcode != 0:
                errors[rank] = f"exited with code {proc.exitcode} without a Python error"
        if errors:
            detail = "\n".join(f"--- rank {r}:\n{text.strip()}" for r, text in sorted(errors.items()))
            raise LaunchError(f"{len(errors)} of {world_size} ranks failed:\n{detail}", errors)
        results = []
        for rank in range(world_size):
            with open(os.path.join(folder, f"{rank}.result"), "rb") as f:
                results.append(pickle.load(f))
        return results
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
