"""The process group and the few collectives the sharded solvers use, with loud failures.

A group is either given (any ``torch.distributed`` ProcessGroup) or taken from the default
group, which is initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) when it is not yet: backend NCCL when CUDA is available,
else Gloo, with a timeout on every collective (``KOPS_DIST_TIMEOUT`` seconds, default 300).

Every collective goes through :func:`all_reduce`, :func:`broadcast` or
:func:`all_gather_rows`: a failure (a peer process died, or did not reach the collective
within the timeout) is raised as :class:`DistributedError` naming the rank and the
operation, so a dead rank makes the others fail instead of waiting forever.

:class:`Shard` is the contiguous row partition of p rows over the ranks (the first
``p mod P`` ranks hold one row more).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["DistributedError", "Shard", "resolve_group", "init_from_env", "launched_by_torchrun", "rank_of",
           "world_size_of",
           "all_reduce", "broadcast", "all_gather_rows", "all_gather_padded", "all_gather_objects", "DEFAULT_TIMEOUT_S"]

#: seconds a collective may wait for the other ranks (``KOPS_DIST_TIMEOUT`` overrides)
DEFAULT_TIMEOUT_S = 300.0
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A collective failed: a peer rank died, raised, or timed out."""


def timeout_from_env() -> datetime.timedelta:
    """The collective timeout: ``KOPS_DIST_TIMEOUT`` seconds, default ``DEFAULT_TIMEOUT_S``."""
    raw = os.environ.get("KOPS_DIST_TIMEOUT", "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"KOPS_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not seconds > 0:
        raise ValueError(f"KOPS_DIST_TIMEOUT must be > 0 seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (its rendezvous variables are set)."""
    return all(k in os.environ for k in _ENV)


def init_from_env(backend: str | None = None):
    """Initialise the default group from torchrun's environment (once) and return it.

    Parameters
    ----------
    backend : {"gloo", "nccl"}, optional
        Default: NCCL when CUDA is available, else Gloo.

    Raises
    ------
    ValueError
        When the default group is not initialised and torchrun's variables are missing.
    """
    if dist.is_initialized():
        return dist.group.WORLD
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError("process_group=None needs an initialised default group or torchrun's environment "
                         f"(missing {', '.join(missing)}): launch with `torchrun --nproc-per-node N ...`, call "
                         "torch.distributed.init_process_group first, or pass a ProcessGroup")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timeout_from_env())
    return dist.group.WORLD


def resolve_group(process_group):
    """The group to use: a given ProcessGroup, or the default one (:func:`init_from_env`)."""
    if process_group is None or process_group is True or process_group == "env":
        return init_from_env()
    if isinstance(process_group, dist.ProcessGroup):
        return process_group
    raise ValueError("process_group must be a torch.distributed ProcessGroup, None or 'env' (the default "
                     f"group, initialised from torchrun's environment), got {process_group!r}")


def rank_of(group) -> int:
    return dist.get_rank(group)


def world_size_of(group) -> int:
    return dist.get_world_size(group)


def _fail(op: str, group, err: Exception):
    return DistributedError(
        f"kops.distributed: {op} failed on rank {rank_of(group)} of {world_size_of(group)}: another rank "
        "died, raised an error, or did not reach the same collective within the group's timeout "
        f"({type(err).__name__}: {err})")


def all_reduce(t: torch.Tensor, group) -> torch.Tensor:
    """Sum ``t`` over the ranks, in place; returns ``t``."""
    try:
        dist.all_reduce(t, group=group)
    except Exception as err:  # the backends raise RuntimeError subclasses of their own
        raise _fail(f"all_reduce of a {tuple(t.shape)} tensor", group, err) from err
    return t


def broadcast(t: torch.Tensor, group, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank, in place (``src`` is a rank within ``group``)."""
    try:
        dist.broadcast(t, src=dist.get_global_rank(group, src), group=group)
    except Exception as err:
        raise _fail(f"broadcast of a {tuple(t.shape)} tensor", group, err) from err
    return t


class Shard:
    """Rows ``[lo, hi)`` of ``p`` owned by this rank (contiguous, sizes differing by at most 1).

    Parameters
    ----------
    p : int
        Rows in all (``p >= world_size``, so every rank owns at least one).
    rank, world_size : int
    name : str
        The argument named in the error when ``p < world_size``.
    sizes : list of int, optional
        The ranks' row counts when the partition is given (rows partitioned by the caller,
        e.g. training data passed in parts); they must sum to p.
    """

    def __init__(self, p: int, rank: int, world_size: int, name: str = "rows", sizes=None):
        if p < world_size:
            raise ValueError(f"{name} = {p} is smaller than the number of processes ({world_size}): every rank "
                             "needs at least one row; use fewer processes or more rows")
        self.p, self.rank, self.world_size = p, rank, world_size
        if sizes is not None:
            if len(sizes) != world_size or sum(sizes) != p or min(sizes) < 0:
                raise ValueError(f"{name}: the row counts {list(sizes)} are not a partition of {p} rows over "
                                 f"{world_size} ranks")
            self.sizes = [int(k) for k in sizes]
        else:
            self.sizes = [p // world_size + (r < p % world_size) for r in range(world_size)]
        self.starts = [sum(self.sizes[:r]) for r in range(world_size)]
        self.lo = self.starts[rank]
        self.hi = self.lo + self.sizes[rank]

    @property
    def rows(self) -> int:
        return self.hi - self.lo

    @property
    def slice(self) -> slice:
        return slice(self.lo, self.hi)

    def local(self, idx: torch.Tensor):
        """``(mask, local)``: which of the global row indices ``idx`` are owned here, and their
        positions in the shard."""
        mask = (idx >= self.lo) & (idx < self.hi)
        return mask, idx[mask] - self.lo


def batch_part(m: int, rank: int, world_size: int) -> slice:
    """This rank's contiguous part of a batch of m rows (empty when m < world_size for some ranks)."""
    lo = rank * (m // world_size) + min(rank, m % world_size)
    return slice(lo, lo + m // world_size + (rank < m % world_size))


def all_gather_rows(local: torch.Tensor, shard: Shard, group) -> torch.Tensor:
    """The (p, ...) tensor whose rows ``shard.lo:shard.hi`` are each rank's ``local``.

    Each shard is padded to the largest before the gather (:func:`all_gather_padded`).
    Volume: ``P * max(shard.sizes) * prod(shape[1:])`` elements received per rank.
    """
    return all_gather_padded(local, shard.sizes, group)


def all_gather_padded(local: torch.Tensor, sizes, group) -> torch.Tensor:
    """The rows of every rank's ``local`` in rank order, ``sizes[r]`` rows from rank r.

    Every rank knows ``sizes`` (they are not communicated); each part is padded to
    ``max(sizes)`` rows, so ``P * max(sizes) * prod(shape[1:])`` elements are received per
    rank. Returns a (sum(sizes), ...) tensor.
    """
    size = max(sizes)
    if local.shape[0] != sizes[rank_of(group)]:
        raise ValueError(f"all_gather_padded: this rank's part has {local.shape[0]} rows, sizes say "
                         f"{sizes[rank_of(group)]}")
    padded = local.new_zeros((size,) + tuple(local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    try:
        dist.all_gather(parts, padded, group=group)
    except Exception as err:
        raise _fail(f"all_gather of {tuple(local.shape)} shards", group, err) from err
    return torch.cat([part[:rows] for part, rows in zip(parts, sizes)])


def all_gather_objects(obj, group) -> list:
    """Every rank's picklable ``obj`` (small: labels, error messages), in rank order."""
    out = [None] * world_size_of(group)
    try:
        dist.all_gather_object(out, obj, group=group)
    except Exception as err:
        raise _fail("all_gather_object", group, err) from err
    return out
