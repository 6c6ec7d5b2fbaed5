"""The EigenPro steps of :mod:`kops.solvers.iterations` with the model sharded by rows.

Each function computes what its single-process counterpart computes, with the same random
draws, on this rank's rows of the model: the prediction on the batch is the sharded product
(:class:`~kops.distributed.product.ShardedKernelProduct`: a local fused product plus one
all-reduce of m x c), the gradient's values on the centers are local, the preconditioner
and the projection are the sharded ones (:mod:`kops.distributed.preconditioning`). Every
rank holds the batch (it indexes the training data every rank holds).

Communication per batch of m points, c outputs, q damped directions, s Nystrom points:

* :func:`sharded_eigenpro2_epoch`: one all-reduce of m x c.
* :func:`sharded_projected_step` (EigenPro 3): one all-reduce of m x c, one of q x c, and the
  projection (an all-gather of p x c when exact; per step one all-reduce of s x c and one
  all-gather of p x c when iterative); with a ridge one more of q x c and one of ``f`` on
  the correction's rows.
* :class:`ShardedFullGradientDescent` (large ridges): per chunk of m points one all-reduce of
  m x 2c; per epoch the projection, two all-reduces of q x c (the correction) and, with a
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
from ..solvers.iterations import FullGradientDescent
from .group import Shard, all_reduce, batch_part

__all__ = ["sharded_eigenpro2_epoch", "sharded_projected_step", "ShardedDelayedProjection",
           "ShardedFullGradientDescent"]


def sharded_eigenpro2_epoch(x, targets, weights, shard: Shard, precond, nystrom_idx, batch_size, eta, generator, *,
                            ridge=0.0, kernel=None, group, progress=None) -> float:
    """One EigenPro 2 epoch (:func:`kops.solvers.iterations.eigenpro2_epoch`) on row shards.

    ``weights`` (n_r x c) are this rank's rows ``shard.lo:shard.hi`` of the weights, updated
    in place; ``x`` (n x d) and ``targets`` (n x c) are all the points on every rank. Each
    batch B::

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
    x_r = x[shard.slice]
    perm = torch.randperm(n, generator=generator).to(x.device)
    s_mask, s_local = shard.local(nystrom_idx)
    done, seen = 0, 0.0
    for b in batches(perm, batch_size):
        xb = x[b]
        mask, local = shard.local(b)
        g = kmv(xb, x_r, weights, kernel)
        if ridge:
            g.index_add_(0, mask.nonzero(as_tuple=True)[0], weights[local], alpha=ridge)
        all_reduce(g, group)
        g -= targets[b]
        seen += float(g.square().sum())
        corr = precond.correction(xb, g)
        weights.index_add_(0, local, g[mask], alpha=-eta)
        weights.index_add_(0, s_local, corr[s_mask], alpha=eta)
        done += b.shape[0]
        if progress is not None:
            progress.update(done)
    return seen


def _at(u, rows):
    return u if rows is None else u[rows]


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


class ShardedDelayedProjection:
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
    ``alpha_r += (K(Z, Z)^{-1} h)_r``; clear the pending part.

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
        p, d = Z.shape
        self.p, self.corr, self.projector, self.kernel = p, corr, projector, kernel
        self.shard, self.group = shard, group
        self.T, self.eta, self.ridge, self.n = interval, eta, ridge, n
        self.budget, self.form = budget, form
        part = -(-batch_size // shard.world_size)  # the largest part of a batch
        # The formed path's tiles are sized for the largest rank's buffer, so every rank runs
        # the same number of tiles (one all-reduce each).
        self.tile_cols = max(shard.sizes) + interval * part
        cap = p + interval * part
        self.pts = torch.empty(cap, d, dtype=Z.dtype, device=Z.device)
        self.pts[:p] = Z
        self.wts = torch.zeros(cap, c, dtype=Z.dtype, device=Z.device)
        self.alpha = self.wts[:p]
        self.h = torch.zeros(p, c, dtype=Z.dtype, device=Z.device)
        rows = corr.rows
        k = p if rows is None else rows.shape[0]
        self.a_c = torch.zeros(k, c, dtype=Z.dtype, device=Z.device)
        self.f_rows = torch.zeros(k, c, dtype=Z.dtype, device=Z.device) if ridge else None
        self.end, self.pending, self.n_projections = p, 0, 0

    def _gradient(self, xb, yb):
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

    def _add_coef(self, coef):
        if self.corr.rows is None:
            self.alpha.add_(coef)
        else:
            self.alpha.index_add_(0, self.corr.rows, coef)
        self.a_c += coef

    def step(self, xb, yb) -> float:
        """One batch (all of it, on every rank); projects when T batches are pending.
        Returns ``||g||^2``."""
        eta, mb, rows = self.eta, xb.shape[0], self.corr.rows
        g, u = self._gradient(xb, yb)
        coef, values = self.corr.correct(_at(u, rows))
        coef.mul_(eta)
        if self.ridge:
            c = eta * mb * self.ridge / self.n
            pull_coef, pull_values = self.corr.correct(self.f_rows + _at(self.h, rows))
            self.wts[: self.end].mul_(1.0 - c)
            self.a_c.mul_(1.0 - c)
            self.h.mul_(1.0 - c)
            self.f_rows.mul_(1.0 - c)
            coef.add_(pull_coef, alpha=c)
            values.add_(pull_values, alpha=c / eta)
        self.h.sub_(u.sub_(values), alpha=eta)
        part = batch_part(mb, self.shard.rank, self.shard.world_size)
        end, k = self.end, part.stop - part.start
        self.pts[end : end + k] = xb[part]
        self.wts[end : end + k] = g[part] * (-eta)
        self.end, self.pending = end + k, self.pending + 1
        self._add_coef(coef)
        if self.pending == self.T:
            self.project()
        return float(g.square().sum())

    def project(self) -> None:
        """``alpha_r += (K(Z, Z)^{-1} h)_r``; clear the pending part (a collective)."""
        if not self.pending:
            return
        self._add_coef(-self.a_c)
        self.a_c.zero_()
        self.alpha.add_(self.projector.solve(self.h))
        self.wts[self.p : self.end].zero_()
        self.h.zero_()
        self.end, self.pending = self.p, 0
        self.n_projections += 1
        if self.ridge:
            self.f_rows.copy_(self.projector.rows_f(self.alpha))


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
