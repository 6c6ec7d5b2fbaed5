"""The kernel product with the model sharded by rows over the ranks.

The model ``f = K(., Z) alpha`` has its centers Z (p x d) and weights alpha (p x c) split
by rows: rank r holds ``Z_r, alpha_r`` (p / P rows of each, :class:`~kops.distributed.group.Shard`).
For a batch X_B (m x d) that every rank holds:

* ``K(X_B, Z) alpha = sum_r K(X_B, Z_r) alpha_r``: one local fused product (m x p/P kernel
  work) and one all-reduce of m x c floats (a ring all-reduce sends and receives about
  ``2 (P - 1) / P * m * c`` floats per rank);
* ``K(Z_r, X_B) g``: local to each rank (its rows of ``K(Z, X_B) g``), no communication.

So the kernel work per batch, ``m p d``, is divided by P while the communication, ``m c``,
does not grow with p or d. When the ranks hold disjoint parts of the batch instead, an
all-gather of X_B (m x d floats) comes first: the solvers here read the batch from the
training data every rank holds, or, with ``data_sharding="rows"`` (each rank holds its part
of the training data), assemble X_B and Y_B by one all-gather of m x (d + c) floats
(:mod:`kops.distributed.data`) before the product.
"""
from __future__ import annotations

import torch

from ..ops import kmv
from .group import Shard, all_reduce

__all__ = ["ShardedKernelProduct"]


class ShardedKernelProduct:
    """``K(X, Z) alpha`` and ``K(Z_r, X) g`` for centers sharded by rows (module docstring).

    Parameters
    ----------
    centers : Tensor (p_r, d)
        This rank's rows of Z.
    kernel : kops.Kernel
    shard : Shard
        Which rows of Z they are.
    group : ProcessGroup
    """

    def __init__(self, centers: torch.Tensor, kernel, shard: Shard, group):
        if centers.shape[0] != shard.rows:
            raise ValueError(f"centers has {centers.shape[0]} rows but the shard holds {shard.rows}")
        self.centers, self.kernel, self.shard, self.group = centers, kernel, shard, group

    def __call__(self, X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``K(X, Z) alpha`` (n x c) on every rank from ``weights = alpha_r`` (p_r x c).

        Communication: one all-reduce of n x c floats.
        """
        return all_reduce(kmv(X, self.centers, weights.to(X.dtype), self.kernel), self.group)

    def transpose(self, X: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``K(Z_r, X) g`` (p_r x c): this rank's rows of ``K(Z, X) g``; no communication."""
        return kmv(self.centers, X, g, self.kernel)
