"""The EigenPro steps of :mod:`kops.solvers.iterations` with the model sharded by rows.

Each function computes what its single-process counterpart computes, with the same random
draws, on this rank's rows of the model: the prediction on the batch is the sharded product
(:class:`~kops.distributed.product.ShardedKernelProduct`: a local fused product plus one
all-reduce of m x c), the gradient's values on the centers are local, the preconditioner
and the projection are the sharded ones (:mod:`kops.distributed.preconditioning`). Every
rank holds the batch (it indexes the training data every rank holds, or assembles it from
the ranks' parts with ``data_sharding="rows"``).

Communication per batch of m points, c outputs, q damped directions, s Nystrom points:

* :func:`sharded_eigenpro2_epoch`: one all-reduce of m x c.
* With sharded data (:mod:`kops.distributed.data`), every function also assembles its batch
  X_B, Y_B from the ranks' rows: one all-gather of m x (d + c) floats per batch.
* :func:`sharded_projected_step` (EigenPro 3): one all-reduce of m x c, one of q x c, and the
  projection (an all-gather of p x c when exact; per step one all-reduce of s x c and one
  all-gather of p x c when iterative); with a ridge one more of q x c and one of ``f`` on
  the correction's rows.
* :class:`ShardedFullGradientDescent` (large ridges): per chunk of m points one all-reduce of
  m x 2c (with sharded data also one all-gather of the chunk's rows, m x (d + c)); per epoch the projection, two all-reduces of q x c (the correction) and, with a
  ridge, the product with ``K(Z, Z)`` (an all-gather of p x 2c) and two scalars.
* :class:`ShardedDelayedProjection` (EigenPro 4): one all-reduce of m x c (one per row tile
  when the kernel block is formed, m x c in all) and one of q x c; the projection every T
  batches. The pending buffer is sharded by batch parts: rank r appends its part of each
  batch (about m / P rows), so the pending model's product is divided like the centers'.
"""
from __future__ import annotations

import torch

from ..ops import kernel_matrix, kmv
from ..solvers._sampling import batches
from ..solvers.iterations import DelayedProjection, FullGradientDescent, _at
from .data import ShardedRows, local_part, take_rows
from .group import Shard, all_gather_padded, all_reduce, batch_part

__all__ = ["sharded_eigenpro2_epoch", "sharded_projected_step", "ShardedDelayedProjection",
           "ShardedFullGradientDescent"]


def sharded_eigenpro2_epoch(x, targets, weights, shard: Shard, precond, nystrom_idx, batch_size, eta, generator, *,
                            ridge=0.0, kernel=None, group, progress=None) -> float:
    """One EigenPro 2 epoch (:func:`kops.solvers.iterations.eigenpro2_epoch`) on row shards.

    ``weights`` (n_r x c) are this rank's rows ``shard.lo:shard.hi`` of the weights, updated
    in place; ``x`` (n x d) and ``targets`` (n x c) are all the points on every rank, or
    :class:`~kops.distributed.data.ShardedRows` partitioned as ``shard`` (each rank holds
    its own rows, the centers of its weights; each batch's rows are then all-gathered, one
    all-gather of m x (d + c) in all). Each batch B::

        g = sum_r [K(x_B, x_r) w_r + ridge w_r[B]] - t_B     # local product, all-reduce m x c
        w_r[B] -= eta g;  w_r[S] += eta E D E^T K(x_S, x_B) g  # the rows owned here

    The correction ``E D E^T K(x_S, x_B) g`` (s x m kernel work) is computed by every rank.

    Returns
    -------
    float
        ``sum_B ||g_B||^2`` (the same on every rank).
    """
    kernel = precond.kernel if kernel is None else kernel
    n = x.shape[0]
    x_r = local_part(x, shard)
    perm = torch.randperm(n, generator=generator).to(x.device)
    s_mask, s_local = shard.local(nystrom_idx)
    done, seen = 0, 0.0
    for b in batches(perm, batch_size):
        xb, tb = take_rows(b, x, targets)
        mask, local = shard.local(b)
        g = kmv(xb, x_r, weights, kernel)
        if ridge:
            g.index_add_(0, mask.nonzero(as_tuple=True)[0], weights[local], alpha=ridge)
        all_reduce(g, group)
        g -= tb
        seen += float(g.square().sum())
        corr = precond.correction(xb, g)
        weights.index_add_(0, local, g[mask], alpha=-eta)
        weights.index_add_(0, s_local, corr[s_mask], alpha=eta)
        done += b.shape[0]
        if progress is not None:
            progress.update(done)
    return seen


def sharded_projected_step(product, alpha, corr, projector, xb, yb, eta, *, ridge=0.0, n=1) -> float:
    """One EigenPro 3 step (:func:`kops.solvers.iterations.projected_step`) on row shards.

    Parameters
    ----------
    product : ShardedKernelProduct
        On this rank's centers Z_r.
    alpha : Tensor (p_r, c)
        This rank's weights, updated in place.
    corr : ShardedCorrection
    projector : ShardedProjector
    xb, yb : Tensor (m, d), (m, c)
        The whole batch (on every rank).

    Returns ``||g||^2`` (the same on every rank).
    """
    g = product(xb, alpha)
    g -= yb
    u = product.transpose(xb, g)
    h = u.sub_(corr.correct(_at(u, corr.rows))[1]).mul_(eta)
    if ridge:
        c = eta * xb.shape[0] * ridge / n
        h.sub_(corr.correct(projector.rows_f(alpha))[1], alpha=c)
        alpha.mul_(1.0 - c)
    alpha.sub_(projector.solve(h))
    return float(g.square().sum())


class ShardedDelayedProjection(DelayedProjection):
    """EigenPro 4's state (:class:`kops.solvers.iterations.DelayedProjection`) on row shards.

    Rank r holds its centers Z_r with weights ``alpha_r`` and cached predictions ``h_r``
    (p_r x c), the pending corrections on its Nystrom rows, and a pending buffer of its parts
    of the visited batches (at most ``T ceil(m / P)`` rows). One step on a batch B::

        g   = sum_r K(X_B, [Z_r; Z_tmp,r]) [alpha_r + a_c,r; a_tmp,r] - Y_B   # all-reduce m x c
        u_r = K(Z_r, X_B) g                                                   # local
        coef, values = corr.correct(u_r[rows])                                # all-reduce q x c
        h_r -= eta (u_r - values);  a_c,r += eta coef;  append this rank's part of X_B with -eta g
        ridge as in the single-process state

    and :meth:`project` (every T batches, and at the end of each epoch):
    ``alpha_r += (K(Z, Z)^{-1} h)_r``; clear the pending part. The step and the projection
    are the single-process ones; this class supplies the sharded gradient, the part of each
    batch the buffer keeps and the sharded f on the correction's rows.

    Parameters
    ----------
    Z : Tensor (p_r, d)
        This rank's centers.
    c : int
    corr : ShardedCorrection
    projector : ShardedProjector
    shard : Shard
    group : ProcessGroup
    interval, batch_size, eta, ridge, n, kernel, budget, form
        As in :class:`kops.solvers.iterations.DelayedProjection`; ``form`` must be the same
        on every rank (the formed path all-reduces once per row tile).
    """

    def __init__(self, Z, c, corr, projector, shard: Shard, group, *, interval, batch_size, eta, ridge=0.0, n=1,
                 kernel, budget, form):
        part = -(-batch_size // shard.world_size)  # the largest part of a batch
        super().__init__(Z, c, corr, projector, interval=interval, batch_size=part, eta=eta, ridge=ridge, n=n,
                         kernel=kernel, budget=budget, form=form)
        self.shard, self.group = shard, group
        # The formed path's tiles are sized for the largest rank's buffer, so every rank runs
        # the same number of tiles (one all-reduce each).
        self.tile_cols = max(shard.sizes) + interval * part

    def _gradient(self, xb, yb, weight=None):
        if weight is not None:
            raise NotImplementedError("the sharded EigenPro 4 state takes no loss weights")
        end, p = self.end, self.p
        pts, wts = self.pts[:end], self.wts[:end]
        if not self.form:
            g = all_reduce(kmv(xb, pts, wts, self.kernel), self.group)
            g -= yb
            return g, kmv(pts[:p], xb, g, self.kernel)
        rows = max(1, self.budget // (self.tile_cols * pts.element_size()))
        g = torch.empty_like(yb)
        u = torch.zeros(p, yb.shape[1], dtype=yb.dtype, device=yb.device)
        for r0 in range(0, xb.shape[0], rows):
            Kt = kernel_matrix(xb[r0 : r0 + rows], pts, self.kernel)
            gt = all_reduce(Kt @ wts, self.group)
            gt -= yb[r0 : r0 + rows]
            u.addmm_(Kt[:, :p].T, gt)
            g[r0 : r0 + rows] = gt
        return g, u

    def _own_part(self, mb: int) -> slice:
        return batch_part(mb, self.shard.rank, self.shard.world_size)  # about m / P rows

    def _f_rows(self):
        return self.projector.rows_f(self.alpha)  # one all-reduce on the correction's rows


class ShardedFullGradientDescent(FullGradientDescent):
    """:class:`kops.solvers.iterations.FullGradientDescent` with ``Z``, ``alpha`` and the
    direction ``d`` sharded by rows.

    The single-process epoch runs unchanged on this rank's rows: each chunk's residuals
    ``R = K(X_B, Z) [alpha, d] - [Y_B, 0]`` come from the sharded product (one all-reduce of
    m x 2c, so every rank holds all of R and the line search's Gram entries of R are the
    same on every rank without communication); ``K(Z_r, X_B) R`` is local; the ridge's
    ``d^T K(Z, Z) alpha`` terms are all-reduced; the correction and the projection are the
    sharded ones.

    Parameters
    ----------
    Z : Tensor (p_r, d)
        This rank's centers.
    c, step, ridge, kernel, chunk, budget
        As in the single-process class.
    corr : ShardedCorrection
    projector : ShardedProjector
    shard : Shard
    group : ProcessGroup
    form : bool
        Form each chunk's block ``K(X_B, Z_r)`` in row tiles (the same on every rank: one
        all-reduce per tile).
    """

    def __init__(self, Z, c, corr, projector, shard: Shard, group, *, step, ridge, kernel, chunk, form=False,
                 budget=0):
        super().__init__(Z, c, corr, projector, step=step, ridge=ridge, kernel=kernel, chunk=chunk, form=form,
                         budget=budget)
        self.shard, self.group = shard, group
        self.tile_cols = max(shard.sizes)  # tiles sized for the largest shard: the same count on every rank

    def _gradient(self, xb, yb, V):
        Z = self.Z
        if not self.form:
            R = all_reduce(kmv(xb, Z, V, self.kernel), self.group)
            R -= yb
            return R, kmv(Z, xb, R, self.kernel)
        rows = max(1, self.budget // (self.tile_cols * Z.element_size()))
        R = torch.empty_like(yb)
        A = torch.zeros(Z.shape[0], yb.shape[1], dtype=yb.dtype, device=yb.device)
        for r0 in range(0, xb.shape[0], rows):
            Kt = kernel_matrix(xb[r0 : r0 + rows], Z, self.kernel)
            Rt = all_reduce(Kt @ V, self.group)
            Rt -= yb[r0 : r0 + rows]
            A.addmm_(Kt.T, Rt)
            R[r0 : r0 + rows] = Rt
        return R, A

    def _dot(self, a, b) -> float:
        local = (a * b).sum().to(torch.float64).reshape(1)
        return float(all_reduce(local, self.group))

    def _pass(self, X, Y, V, progress):
        """The pass over the data; with :class:`~kops.distributed.data.ShardedRows` (each rank
        holds its part) each step takes the next ``ceil(chunk / P)`` rows of every rank's part,
        all-gathered (about chunk x (d + c) floats; all of X and Y once per epoch), so the
        sums over the data are the single-process ones in another order."""
        if not isinstance(X, ShardedRows):
            return super()._pass(X, Y, V, progress)
        sizes, rank, d, c = X.shard.sizes, X.shard.rank, X.shape[1], Y.shape[1]
        part = max(1, -(-self.chunk // len(sizes)))
        A = torch.zeros(self.Z.shape[0], V.shape[1], dtype=V.dtype, device=V.device)
        gram = torch.zeros(V.shape[1] // c, V.shape[1] // c, dtype=torch.float64, device=V.device)
        done = 0
        for r0 in range(0, max(sizes), part):
            counts = [max(0, min(part, size - r0)) for size in sizes]
            mine = slice(r0, r0 + counts[rank])
            rows = all_gather_padded(torch.cat([X.local[mine], Y.local[mine].to(X.dtype)], 1), counts, self.group)
            yb = torch.cat([rows[:, d:], rows.new_zeros(rows.shape[0], V.shape[1] - c)], 1)
            R, Ab = self._gradient(rows[:, :d].contiguous(), yb, V)
            A += Ab
            blocks = R.to(torch.float64).reshape(R.shape[0], -1, c)
            gram += torch.einsum("nic,njc->ij", blocks, blocks)
            done += rows.shape[0]
            if progress is not None:
                progress.update(done)
        return A, gram
