"""Preconditioned conjugate gradients on a symmetric PSD operator, one CG per column.

Shared by the projection onto the centers (:class:`kops.solvers.projection.CenterProjector`)
and its sharded form (:mod:`kops.distributed.preconditioning`), which pass reductions that sum
over the ranks.
"""
from __future__ import annotations

import torch

__all__ = ["preconditioned_cg"]


def _column_sums(t):
    return t.sum(0)


def _frobenius(t):
    return float(t.norm())


def preconditioned_cg(h, matmul, precondition, *, tol: float, max_steps: int, norm_h: float | None = None,
                      colsum=_column_sums, norm=_frobenius):
    """Solve ``A w = h`` from ``w = 0`` by preconditioned CG, an independent CG per column of h.

    Parameters
    ----------
    h : Tensor (p, c)
    matmul : callable
        ``V -> A V`` for V of h's shape.
    precondition : callable
        ``R -> P^{-1} R`` (symmetric positive definite).
    tol : float
        Stop when ``||A w - h|| <= tol ||h||`` (Frobenius, over all columns).
    max_steps : int
    norm_h : float, optional
        ``||h||`` when the caller has it.
    colsum, norm : callable
        Column sums (c,) and the Frobenius norm; a sharded caller sums them over its ranks.

    Returns
    -------
    (w, rel, steps)
        The iterate of smallest relative residual ``rel`` (on a numerically singular A,
        rounding can make later residuals grow) and the steps run.
    """
    norm_h = norm(h) if norm_h is None else norm_h
    w = torch.zeros_like(h)
    if norm_h == 0.0:
        return w, 0.0, 0
    r = h.clone()
    z = precondition(r)
    d = z.clone()
    rz = colsum(r * z)
    tiny = torch.finfo(h.dtype).tiny
    best, best_rel = w.clone(), 1.0
    steps = 0
    while steps < max_steps:
        Ad = matmul(d)
        dAd = colsum(d * Ad)
        a = torch.where(dAd > tiny, rz / dAd.clamp_min(tiny), torch.zeros_like(dAd))
        w.addcmul_(d, a)
        r.addcmul_(Ad, a, value=-1.0)
        steps += 1
        rel = norm(r) / norm_h
        if rel < best_rel:
            best.copy_(w)
            best_rel = rel
        if rel <= tol or not rel < 1e3:
            break
        z = precondition(r)
        rz_new = colsum(r * z)
        beta = torch.where(rz > tiny, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz))
        d = z.add_(d * beta)
        rz = rz_new
    return best, best_rel, steps
