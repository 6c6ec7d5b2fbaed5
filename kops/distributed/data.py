"""Training data partitioned by rows over the ranks (``data_sharding="rows"``).

Each rank passes a different contiguous part of the training set, in rank order: rank 0
the first ``n_0`` rows, rank 1 the next ``n_1``, ... (any sizes, at least 2 rows each:
scikit-learn's minimum for array input).
:class:`ShardedRows` holds this rank's part and stands in for the (n, d) tensor of all the
rows where the solvers read the training data: ``shape`` is the global (n, d), and indexing
by global row indices (a long tensor or a slice) is a collective that returns those rows
on every rank, in the order asked, so the set-up and the per-batch code of the replicated
fit run unchanged on the same random draws (the permutations of n, the Nystrom sample, the
centers), and the fit equals the single-process fit on the concatenated data up to rounding.

Assembling rows ``idx`` (m of them, the same on every rank): every rank knows the row
offsets, so it knows how many of ``idx`` each rank owns without communication; each rank
sends its owned rows in ``idx``'s order, padded to the largest count (one all-gather), and
the parts are put back into ``idx``'s order. :func:`take_rows` assembles X_B and Y_B in one
all-gather: per batch of m points ``P * max_r m_r * (d + c)`` floats received per rank,
about ``m (d + c)`` (``m_r`` the rows of the batch rank r owns, about m / P for a random
batch).
"""
from __future__ import annotations

import math

import torch

from .group import Shard, all_gather_padded, all_gather_objects, rank_of, world_size_of

__all__ = ["ShardedRows", "take_rows", "local_part", "DATA_SHARDING"]

#: the values of the sharded estimators' ``data_sharding`` parameter
DATA_SHARDING = ("replicated", "rows")


class ShardedRows:
    """This rank's rows of a (n, k) tensor whose rows are partitioned over the ranks in rank order.

    Parameters
    ----------
    local : Tensor (n_r, k)
        This rank's rows (rows ``starts[r] : starts[r] + n_r`` of the whole).
    group : ProcessGroup
    name : str
        The argument named in errors ("X", "y").
    sizes : list of int, optional
        The ranks' row counts when known (the targets share the features' partition);
        otherwise they are all-gathered with the column count and dtype, which must agree
        on every rank (ValueError naming ``name`` on every rank otherwise).

    Attributes
    ----------
    shard : Shard
        The partition (``shard.sizes``, ``shard.starts``, this rank's ``lo:hi``).
    shape : tuple
        ``(n, k)``, the whole tensor's.
    """

    def __init__(self, local: torch.Tensor, group, name: str, sizes=None):
        if sizes is None:
            mine = (int(local.shape[0]), tuple(local.shape[1:]), str(local.dtype))
            every = all_gather_objects(mine, group)
            differ = [r for r, theirs in enumerate(every) if theirs[1:] != every[0][1:]]
            if differ:
                described = ", ".join(f"rank {r}: {k[1][0] if k[1] else 1} columns, {k[2].replace('torch.', '')}"
                                      for r, k in enumerate(every))
                raise ValueError(f"{name}: with data_sharding='rows' every rank's part must have the same number of "
                                 f"columns and dtype ({described})")
            sizes = [k[0] for k in every]
        self.local, self.group, self.name = local, group, name
        n = sum(sizes)
        self.shard = Shard(n, rank_of(group), world_size_of(group), f"{name} rows", sizes=sizes)
        self.shape = (n,) + tuple(local.shape[1:])
        self._ends = torch.tensor(self.shard.starts[1:], dtype=torch.long)

    # the tensor attributes the solvers read from the training data
    @property
    def dtype(self):
        return self.local.dtype

    @property
    def device(self):
        return self.local.device

    def element_size(self) -> int:
        return self.local.element_size()

    def dim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _indices(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            return torch.arange(self.shape[0])[idx]
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 1:
            raise TypeError(f"{self.name}: rows of sharded data are taken by a 1-D long tensor of global row "
                            f"indices or a slice, got {type(idx).__name__}")
        return idx.cpu()

    def plan(self, idx):
        """``(counts, mine, order)`` for the global rows ``idx``: how many each rank owns,
        this rank's local positions of its own (in ``idx``'s order), and the permutation
        that puts the gathered parts back into ``idx``'s order."""
        idx = self._indices(idx)
        owner = torch.bucketize(idx, self._ends, right=True)
        counts = torch.bincount(owner, minlength=self.shard.world_size).tolist()
        mine = idx[owner == self.shard.rank] - self.shard.lo
        order = torch.argsort(owner, stable=True)
        return counts, mine.to(self.device), order.to(self.device)

    def __getitem__(self, idx) -> torch.Tensor:
        """The global rows ``idx`` (m, k) on every rank: a collective (module docstring)."""
        return take_rows(idx, self)[0]


def _assemble(parts, counts, order, group):
    gathered = all_gather_padded(parts, counts, group)
    out = torch.empty_like(gathered)
    out[order] = gathered
    return out


def take_rows(idx, *tensors):
    """The global rows ``idx`` of each of ``tensors`` (ShardedRows of one partition, or plain
    tensors holding every row), as plain tensors.

    Sharded ones are assembled in ONE all-gather of their rows side by side (m x (d + c)
    for X and Y, padded to the largest rank's count); plain ones are indexed.
    """
    sharded = [t for t in tensors if isinstance(t, ShardedRows)]
    if not sharded:
        return tuple(t[idx] for t in tensors)
    first = sharded[0]
    if any(t.shard.sizes != first.shard.sizes for t in sharded):
        raise ValueError("take_rows: the sharded tensors have different row partitions")
    counts, mine, order = first.plan(idx)
    widths = [math.prod(t.shape[1:]) for t in sharded]
    parts = torch.cat([t.local[mine].reshape(mine.shape[0], w).to(first.dtype) for t, w in zip(sharded, widths)], 1)
    joint = _assemble(parts, counts, order, first.group)
    pieces = iter(torch.split(joint, widths, 1))
    out = []
    for t in tensors:
        if isinstance(t, ShardedRows):
            out.append(next(pieces).to(t.dtype).reshape((joint.shape[0],) + t.shape[1:]).contiguous())
        else:
            out.append(t[idx])
    return tuple(out)


def local_part(x, shard: Shard):
    """Rows ``shard.lo:shard.hi`` of x: this rank's part when x is ShardedRows on that
    partition (no communication), else a slice of the full tensor."""
    if isinstance(x, ShardedRows):
        if x.shard.sizes != shard.sizes:
            raise ValueError(f"{x.name}: its row partition {x.shard.sizes} is not the model's {shard.sizes}")
        return x.local
    return x[shard.slice]
