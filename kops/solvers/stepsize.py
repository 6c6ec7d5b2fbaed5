"""Batch size and step size from the preconditioned spectrum, ridge included.

The step of every solver is ``eta = min(1 / beta, STEP_FACTOR / lambda_max(m))`` (no
``1 / beta`` cap when the batch is all n points, where there is no sampling noise), with
``STEP_FACTOR = 1.5``, ``beta = max K(x, x) + rho_1`` (EigenPro's SGD bound, which keeps a
small batch's noise in check) and ``lambda_max(m)`` the top eigenvalue of the preconditioned
operator of one batch B of m points, measured by block power iteration
(:func:`kops.solvers.preconditioner.top_eigenvalue`), plus the ridge:

* EigenPro 2 (system ``K + r I``): ``G = K_BB - K_BS E D E^T K_SB`` (m x m), and
  ``lambda_max = top(G) + r``.
* EigenPro 3 / 4 and the projection (centers Z, X_S a subset of Z): the operator restricted
  to the span of the centers, ``G_Z = K_BZ K_ZZ^{-1} K_ZB - K_BS E D E^T K_SB``, when
  ``K_ZZ`` (float64) fits a quarter of the memory budget; otherwise its upper bound ``G``.
  The ridge adds ``m r / n`` (the batch's share of ``r f``).

Without a ridge and with an exact eigensystem of the whole data this reproduces EigenPro's
``beta + (m - 1) lambda_{q+1}``; it differs where the Nystrom sample misjudges the data's
spectrum (few centers, Gaussian kernels), where the a-priori rule is unsafe or too small.

The batch size is EigenPro's ``m = min(m*, 10000, n)`` with ``m* = beta / mu_{q+1}``
(:class:`~kops.solvers.preconditioner.NystromPreconditioner`), within the memory budget.
"""
from __future__ import annotations

import torch

from ..ops import kernel_matrix, kmv
from ._validation import default_count
from .preconditioner import STEP_FACTOR, top_eigenvalue

__all__ = ["batch_size_for", "measured_step", "MAX_BATCH", "MIN_BATCH"]

#: upper limit of the default batch size (larger batches do not converge faster per epoch)
MAX_BATCH = 10_000
#: the smallest batch the memory budget must hold (fewer rows cannot make progress)
MIN_BATCH = 32


def batch_size_for(precond, n: int, batch_size, bytes_per_row: int, budget: int, name="batch_size") -> int:
    """The batch size: the user's (clipped to n with a warning) or min(m*, 10000, n, budget).

    Raises ValueError when the budget cannot hold ``min(n, 32)`` rows.
    """
    need = min(n, MIN_BATCH) * bytes_per_row
    if budget < need:
        raise ValueError(f"memory budget of {budget} bytes is too small to make progress: a batch of "
                         f"{min(n, MIN_BATCH)} rows needs at least {need} bytes of this part of the budget "
                         f"(about {4 * need} bytes in total); raise memory_budget")
    cap = max(1, budget // max(1, bytes_per_row))
    if batch_size is None:
        return int(max(1, min(int(precond.critical_batch_size), MAX_BATCH, n, cap)))
    return default_count(batch_size, n, n, name)


def _chol_inverse(Z, kernel):
    """A function ``v -> K(Z, Z)^{-1} v`` by a float64 Cholesky factor (jitter when singular)."""
    K = kernel_matrix(Z.to(torch.float64), Z.to(torch.float64), kernel)
    scale = float(K.diagonal().mean())
    for attempt in range(12):
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) == 0:
            break
        K.diagonal().add_(scale * 1e-12 * 10**attempt)
    del K
    return lambda v: torch.cholesky_solve(v, L)


def measured_step(xb, precond, *, rho: float, budget: int, generator, centers=None, sample_in_centers=None,
                  factor: float = STEP_FACTOR, full_batch: bool = False) -> tuple[float, float]:
    """``(eta, lambda_max)`` for batches like ``xb`` (module docstring).

    Parameters
    ----------
    xb : Tensor (m, d)
        One batch.
    precond : NystromPreconditioner
    rho : float
        The ridge's addition to ``lambda_max`` (``r`` or ``m r / n``).
    budget : int
        Bytes for the formed blocks (the operator is applied matrix-free beyond it).
    centers : Tensor (p, d), optional
        Restrict to the span of these centers (projected solvers).
    sample_in_centers : Tensor (s,), long, optional
        Rows of the Nystrom sample in ``centers``.
    full_batch : bool
        The batch is all the points (no ``1 / beta`` cap).
    """
    P, k = precond, precond.kernel
    m, s, elt = xb.shape[0], P.n_nystrom, xb.element_size()
    dt, dev = xb.dtype, xb.device

    def correction(KBS_v):  # K_BS E D E^T K_SB v, given K_SB v (s x b)
        return P.coefficients(P.project(KBS_v))

    p = centers.shape[0] if centers is not None else 0
    if centers is not None and 8 * p * p <= budget // 4 and (m * p) * elt <= budget // 4:
        inv = _chol_inverse(centers, k)
        KBZ = kernel_matrix(xb, centers, k)
        KBS = KBZ[:, sample_in_centers]

        def apply(V):
            proj = inv((KBZ.T @ V).to(torch.float64)).to(dt)
            return KBZ @ proj - KBS @ correction(KBS.T @ V)
    elif (m * m + m * s) * elt <= budget:
        KBB = kernel_matrix(xb, xb, k)
        KBS = kernel_matrix(xb, P.x, k)

        def apply(V):
            return KBB @ V - KBS @ correction(KBS.T @ V)
    else:
        def apply(V):
            return kmv(xb, xb, V, k) - kmv(xb, P.x, correction(kmv(P.x, xb, V, k)), k)

    top = top_eigenvalue(apply, m, dtype=dt, device=dev, generator=generator) + rho
    if not top > 0:
        top = P.beta + rho
    eta = factor / top
    return (eta if full_batch else min(eta, 1.0 / P.beta)), top
