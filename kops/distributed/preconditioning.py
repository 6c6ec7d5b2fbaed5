"""The projected solvers' preconditioner and projection with the centers sharded by rows.

Both wrap the single-process objects of :mod:`kops.solvers.center_preconditioner` and
:mod:`kops.solvers.projection`, built identically on every rank from the same seeded
sample, and keep only this rank's rows of their p-row tensors. Same interface as the
originals for the steps (``rows``, ``correct``; ``solve``), but on shards: ``u`` and ``h``
are this rank's rows (p_r x c) and ``rows`` are local row indices.

Communication (q damped directions, s Nystrom points, c outputs):

* :meth:`ShardedCorrection.correct`: one all-reduce of q x c (``E^T u[idx]`` or ``W^T u``).
* :meth:`ShardedProjector.solve`: exact path, one all-gather of h (p x c); conjugate
  gradients, per step one all-gather of the direction (p x c) and all-reduces of q x c (the
  Nystrom preconditioner of K(Z, Z)) and c (inner products); above the CG limit, EigenPro 2
  epochs over the centers (one all-reduce of m x c per mini-batch).
* :meth:`ShardedProjector.rows_f`: one all-reduce of ``f`` on the correction's rows
  (s x c, or p x c for the span preconditioner).
"""
from __future__ import annotations

import math

import torch

from ..ops import kmv
from ..solvers.conjugate_gradients import preconditioned_cg
from .group import Shard, all_gather_rows, all_reduce
from .steps import sharded_eigenpro2_epoch

__all__ = ["ShardedCorrection", "ShardedProjector"]


class ShardedCorrection:
    """A :class:`SampleCorrection` or :class:`SpanPreconditioner` on this rank's rows of Z.

    Parameters
    ----------
    corr : SampleCorrection or SpanPreconditioner
        The full (replicated) correction.
    shard : Shard
    group : ProcessGroup

    Attributes
    ----------
    rows : Tensor (k_r,), long, or None
        The local rows of Z the correction reads (its Nystrom points owned here); None for
        the span preconditioner (all rows).
    global_rows : Tensor (s,), long, or None
        The same rows as indices into all of Z, in the correction's order.
    """

    def __init__(self, corr, shard: Shard, group):
        self.shard, self.group = shard, group
        rows = shard.slice
        self.global_rows = corr.rows
        if corr.rows is None:  # span preconditioner: t = c * (W^T u); coef = W t; values = L U t
            self.W, self.LU, self.c = corr.W[rows].contiguous(), corr.LU[rows].contiguous(), corr.c
            self.rows, self.sel = None, None
        else:  # sample: v = E^T u[idx]; coef = E D v on idx; values = M v, M = K(Z, X_S) E D
            self.sel, self.rows = shard.local(corr.rows)
            self.E = corr.P.E[self.sel].contiguous()
            self.ED = corr.P.ED[self.sel].contiguous()
            self.M = corr.M[rows].contiguous()

    def correct(self, u_rows):
        """``(coef, values)``: the correction's coefficients on ``self.rows`` and its values
        on this rank's rows of Z, for the gradient's values ``u_rows`` on ``self.rows``."""
        if self.rows is None:
            t = all_reduce(self.W.T @ u_rows, self.group).mul_(self.c[:, None])
            return self.W @ t, self.LU @ t
        v = all_reduce(self.E.T @ u_rows, self.group)
        return self.ED @ v, self.M @ v


class ShardedProjector:
    """``w ~ K(Z, Z)^{-1} h`` for h sharded by rows, from a CholeskyProjector or CenterProjector.

    Parameters
    ----------
    projector : CholeskyProjector or CenterProjector
        Built identically on every rank; only its rows of a formed ``K(Z, Z)`` are kept.
    Z : Tensor (p, d)
        All the centers (read by the products with ``K(Z_r, Z)``).
    correction : ShardedCorrection
        Its rows are where :meth:`rows_f` evaluates f.
    shard : Shard
    group : ProcessGroup

    Attributes
    ----------
    steps_, residuals_ : list
        As the single-process projectors' (steps and relative residual of each projection).
    """

    def __init__(self, projector, Z, correction: ShardedCorrection, shard: Shard, group):
        self.Z, self.Z_r = Z, Z[shard.slice]
        self.kernel, self.shard, self.group, self.correction = projector.kernel, shard, group, correction
        self.L = getattr(projector, "L", None)
        self.formed = False
        if self.L is None:
            self.P, self.idx = projector.P, projector.idx
            self.tol, self.max_steps = projector.tol, projector.max_steps
            self.method = getattr(projector, "method", "cg")
            self.generator = projector.generator
            self.formed = projector.formed
            if self.formed:  # only this rank's rows of K(Z, Z)
                self.K_r = projector.K[shard.slice].contiguous()
            if self.method == "cg":  # the Nystrom preconditioner of K(Z, Z): its basis by rows
                self.U_r, self.scale = projector.pcg.U[shard.slice].contiguous(), projector.pcg.scale
            else:
                self.eta, self.batch_size = projector.step_size, projector.batch_size
        self.steps_, self.residuals_ = [], []

    def rows_f(self, alpha_r):
        """``f = K(., Z) alpha`` on the correction's local rows (``f(Z_r)`` for the span one)."""
        rows = self.correction.global_rows
        z = self.Z if rows is None else self.Z[rows]
        f = all_reduce(kmv(z, self.Z_r, alpha_r, self.kernel), self.group)
        return f[self.shard.slice] if rows is None else f[self.correction.sel]

    def _norm(self, t):
        sq = torch.tensor([float(t.to(torch.float64).square().sum())], dtype=torch.float64, device=t.device)
        return math.sqrt(float(all_reduce(sq, self.group)))

    def _K(self, v_r):
        """This rank's rows of ``K(Z, Z) v`` (all-gathers v: p x c)."""
        v = all_gather_rows(v_r, self.shard, self.group)
        return self.K_r @ v if self.formed else kmv(self.Z_r, self.Z, v, self.kernel)

    def matmul(self, V_r):
        """This rank's rows of ``K(Z, Z) V`` for V sharded by rows (an all-gather of p x k)."""
        return self._K(V_r)

    def _pcg(self, r_r):
        """The rows of ``r + U diag(scale) U^T r`` (one all-reduce of q x c)."""
        return r_r + self.U_r @ (all_reduce(self.U_r.T @ r_r, self.group) * self.scale[:, None])

    def _colsum(self, t):
        return all_reduce(t.sum(0), self.group)

    def solve(self, h_r):
        """This rank's rows of w (p_r x c) with ``||K(Z, Z) w - h|| <= tol ||h||``."""
        if self.L is not None:  # exact: the float64 factor is replicated, h is gathered
            h = all_gather_rows(h_r, self.shard, self.group)
            w = torch.cholesky_solve(h.to(torch.float64), self.L).to(h_r.dtype)
            self.steps_.append(1)
            self.residuals_.append(0.0)
            return w[self.shard.slice]
        norm = self._norm(h_r)
        if norm == 0.0:
            return torch.zeros_like(h_r)
        if self.method == "cg":  # per step one all-gather of p x c and all-reduces of q x c and c
            w, rel, steps = preconditioned_cg(h_r, self._K, self._pcg, tol=self.tol, max_steps=self.max_steps,
                                              norm_h=norm, colsum=self._colsum, norm=self._norm)
        else:
            w = torch.zeros_like(h_r)
            rel, steps = 1.0, 0
            h = all_gather_rows(h_r, self.shard, self.group)
            while steps < self.max_steps:
                seen = sharded_eigenpro2_epoch(self.Z, h, w, self.shard, self.P, self.idx, self.batch_size,
                                               self.eta, self.generator, kernel=self.kernel, group=self.group)
                steps += 1
                rel = (seen ** 0.5) / norm
                if rel <= self.tol:
                    break
        self.steps_.append(steps)
        self.residuals_.append(rel)
        return w
