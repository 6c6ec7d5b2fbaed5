"""Batch size and step size from the preconditioned spectrum, ridge included.

The step of every solver is ``eta = min(1 / beta_G, STEP_FACTOR / lambda_max(m))`` (no
``1 / beta_G`` cap when the batch is all n points, where there is no sampling noise), with
``STEP_FACTOR = 1``, ``beta_G = max_i G_ii + rho_1`` the largest diagonal entry of the
preconditioned operator G below (EigenPro 2's preconditioned ``beta``, the SGD bound that keeps
a small batch's noise in check; measured on up to 256 points of the batch; ``rho_1`` the
ridge on one point: ``r`` or ``r / n``) and ``lambda_max(m)`` the top eigenvalue of the
preconditioned operator of one batch B of m points, measured by block power iteration
(:func:`kops.solvers.preconditioner.top_eigenvalue`), plus the ridge:

* EigenPro 2 (system ``K + r I``): ``G = K_BB - K_BS E D E^T K_SB`` (m x m), and
  ``lambda_max = top(G) + r``.
* EigenPro 3 / 4 (centers Z): the operator restricted to the span of the centers,
  ``G_Z = K_BZ (K_ZZ^{-1} - C) K_ZB`` with ``C`` the correction's coefficients
  (:mod:`kops.solvers.center_preconditioner`), when a float64 factor of ``K_ZZ`` fits a
  quarter of the memory budget; otherwise its upper bound ``G`` above (X_S from Z). The
  ridge adds ``m r / n`` (the batch's share of ``r f``).
* The projection (:class:`~kops.solvers.projection.CenterProjector`) runs conjugate
  gradients, which need no step size, except for p > 10,000 without a formed ``K(Z, Z)``
  (EigenPro 2 epochs over the centers, with EigenPro 2's rule).

Without a ridge and with an exact eigensystem of the whole data this reproduces EigenPro's
``beta + (m - 1) lambda_{q+1}``; it differs where the Nystrom sample misjudges the data's
spectrum (few centers, Gaussian kernels), where the a-priori rule is unsafe or too small.

The batch size is EigenPro's ``m = min(max(m*, 1000), 10000, n)`` with ``m* = beta / mu_{q+1}``
(:class:`~kops.solvers.preconditioner.NystromPreconditioner`), within the memory budget.

The ridge (EigenPro 3 / 4). The preconditioner flattens the top q eigenvalues to
``mu_{q+1} = lambda_{q+1} + r / n``; the smallest eigenvalue on the span of the centers is
``r / n``, so the preconditioned condition number is ``kappa_r = 1 + n lambda_{q+1} / r``.
A mini-batch step contracts the ridge directions by ``c = eta m r / n ~ 1 / kappa_r``: with a
large ridge (``kappa_r`` near 1) the iterate forgets all but the last batch or two, and the
batches' sampling noise stays in the model (measured, n = 3000, p = 1000, batch 250: 4.5% of
the fitted values from the exact model at r = 10, 10% at r = 100, no better with more
epochs). A step on the full gradient (accumulated over the epoch's batches, the same kernel
products) has no noise and contracts the error by ``1 - 1 / kappa_r`` per epoch, so when
``kappa_r <= FULL_GRADIENT_KAPPA = 2`` each epoch at least halves it: the solvers then take
one full-gradient step per epoch (:func:`use_full_gradient`), with
``eta = STEP_FACTOR / ((n / m) lambda_max(m))`` (:func:`full_gradient_step_size`).
"""
from __future__ import annotations

import torch

from ..ops import kernel_matrix, kmv
from ._validation import default_count
from .preconditioner import STEP_FACTOR, top_eigenvalue

__all__ = ["batch_size_for", "measured_step", "use_full_gradient", "full_gradient_step_size", "MAX_BATCH",
           "MIN_BATCH", "FULL_GRADIENT_KAPPA"]

#: upper limit of the default batch size (larger batches do not converge faster per epoch)
MAX_BATCH = 10_000
#: the smallest batch the memory budget must hold (fewer rows cannot make progress)
MIN_BATCH = 32
#: the smallest default batch (when m* is smaller)
MIN_DEFAULT_BATCH = 1000
#: points of the probe batch on which the preconditioned diagonal is measured
DIAG_ROWS = 256
#: the projected solvers take full-gradient steps when the ridge-shifted condition number
#: ``mu_{q+1} / (r / n)`` of the preconditioned operator is at most this
FULL_GRADIENT_KAPPA = 2.0


def use_full_gradient(precond, ridge: float, n: int, option="auto") -> bool:
    """Whether EigenPro 3 / 4 step on the full gradient (module docstring, "The ridge").

    ``option`` is the estimators' ``full_gradient`` parameter: True, False or "auto", which
    chooses full-gradient steps when ``kappa_r = mu_{q+1} / (r / n) <= FULL_GRADIENT_KAPPA``.
    """
    if option is True or option is False:
        return option
    if option != "auto":
        raise ValueError(f"full_gradient must be True, False or 'auto', got {option!r}")
    return ridge > 0 and precond.mu_q1 <= FULL_GRADIENT_KAPPA * ridge / n


def full_gradient_step_size(top: float, m: int, n: int, factor: float = STEP_FACTOR) -> tuple[float, float]:
    """``(eta, lambda_max)`` of the full gradient of n points from ``top``, measured on m of them.

    The operator of all n points is the sum of those of ``n / m`` disjoint batches, so its top
    eigenvalue is at most ``(n / m) top`` (tight when ``m >> m*``); no ``1 / beta`` cap: there
    is no sampling noise.
    """
    top_n = top * max(1.0, n / m)
    return factor / top_n, top_n


def batch_size_for(precond, n: int, batch_size, bytes_per_row: int, budget: int, name="batch_size",
                   share: int = 4) -> int:
    """The batch size: the user's (clipped to n with a warning) or min(m*, 10000, n, budget).

    ``budget`` is the batch's ``1 / share`` of the memory budget. Raises ValueError when it
    cannot hold ``min(n, 32)`` rows, naming the whole budget and the minimum.
    """
    need = min(n, MIN_BATCH) * bytes_per_row
    if budget < need:
        raise ValueError(f"memory budget of {share * budget} bytes is too small to make progress: a batch of "
                         f"{min(n, MIN_BATCH)} rows needs at least {share * need} bytes; raise memory_budget")
    cap = max(1, budget // max(1, bytes_per_row))
    if batch_size is None:
        # At least MIN_DEFAULT_BATCH: below it a constant step leaves a sampling-noise floor
        # (a large ridge makes m* tiny: m* = 5 at r = 100, n = 400), and the work per epoch
        # does not grow with m.
        m_star = max(int(precond.critical_batch_size), MIN_DEFAULT_BATCH)
        return int(max(1, min(m_star, MAX_BATCH, n, cap)))
    return default_count(batch_size, n, n, name)


def measured_step(xb, precond, *, rho: float, rho1: float, budget: int, generator, centers=None,
                  correction=None, inverse=None, factor: float = STEP_FACTOR,
                  full_batch: bool = False, projected: bool = True) -> tuple[float, float]:
    """``(eta, lambda_max)`` for batches like ``xb`` (module docstring).

    Parameters
    ----------
    xb : Tensor (m, d)
        One batch.
    precond : NystromPreconditioner or a correction on the centers
        Gives ``beta`` (and, without ``centers``, the sample ``x`` and ``E``, ``D``).
    rho : float
        The ridge's addition to ``lambda_max`` (``r`` or ``m r / n``).
    rho1 : float
        The ridge's addition to one point's diagonal (``r`` or ``r / n``).
    budget : int
        Bytes for the formed blocks (the operator is applied matrix-free beyond it).
    centers : Tensor (p, d), optional
        Restrict to the span of these centers (projected solvers), with ``correction``
        (:mod:`kops.solvers.center_preconditioner`, with ``coef_full64``) and ``inverse``
        (``v -> K(Z, Z)^{-1} v`` in float64); measured in float64.
    full_batch : bool
        The batch is all the points (no ``1 / beta`` cap).
    projected : bool
        With ``centers``: the operator on the span of the centers (``False``: without the
        projection, ``K_BB - K_BZ C K_ZB``, which bounds EigenPro 4's steps between
        projections, when the pending part lives outside the span).
    """
    P = precond
    m, elt = xb.shape[0], xb.element_size()
    dt, dev = xb.dtype, xb.device
    if centers is not None:
        # In float64 whatever the training dtype: K(Z, Z)^{-1} and the correction are large
        # and nearly cancel on ill-conditioned centers (few Gaussian centers), which in float32
        # made the measured top eigenvalue 3x too small and the fit diverge.
        k = correction.kernel if hasattr(correction, "kernel") else P.kernel
        dt = torch.float64
        # The blocks within the budget: a sub-batch of m' rows, scaled by m / m' (below).
        p = centers.shape[0]
        sub = m
        while sub > DIAG_ROWS and (sub * p + (0 if projected else sub * sub)) * 8 > budget:
            sub //= 2
        scale, m = m / sub, sub
        xb, centers = xb[:sub].to(dt), centers.to(dt)
        KBZ = kernel_matrix(xb, centers, k)
        W = KBZ[:DIAG_ROWS].T
        coef = correction.coef_full64
        if projected:
            def apply(V):
                w = KBZ.T @ V
                return KBZ @ (inverse(w) - coef(w))

            diag = (W * (inverse(W) - coef(W))).sum(0)
        else:
            KBB = kernel_matrix(xb, xb, k)

            def apply(V):
                return KBB @ V - KBZ @ coef(KBZ.T @ V)

            diag = KBB.diagonal()[:DIAG_ROWS] - (W * coef(W)).sum(0)
    else:
        k, s = P.kernel, P.n_nystrom

        def correction_of(KSB_v):  # E D E^T K_SB v
            return P.coefficients(P.project(KSB_v))

        KsS = kernel_matrix(xb[:DIAG_ROWS], P.x, k)
        diag = P.kernel_diag - ((KsS @ P.E).square() * P.D).sum(1)
        # Formed blocks (kernel_matrix is far faster than repeated fused products at large d).
        # When the batch's blocks do not fit, a sub-batch of m' rows does: lambda_max is
        # subadditive over the batch's points, so (m / m') lambda_max(m') bounds lambda_max(m).
        sub = m
        while sub > DIAG_ROWS and (sub * sub + sub * s) * elt > budget:
            sub //= 2
        scale = m / sub
        xs = xb[:sub]
        if (sub * sub + sub * s) * elt <= budget:
            KBB = kernel_matrix(xs, xs, k)
            KBS = kernel_matrix(xs, P.x, k)

            def apply(V):
                return KBB @ V - KBS @ correction_of(KBS.T @ V)
        else:
            def apply(V):
                return kmv(xs, xs, V, k) - kmv(xs, P.x, correction_of(kmv(P.x, xs, V, k)), k)

        top = scale * top_eigenvalue(apply, sub, dtype=dt, device=dev, generator=generator, iterations=8) + rho
        m = 0  # measured above
    if m:
        top = scale * top_eigenvalue(apply, m, dtype=dt, device=dev, generator=generator, iterations=8) + rho
    if not top > 0:
        top = P.beta + rho
    eta = factor / top
    beta_g = float(diag.max()) + rho1
    return (eta if full_batch or not beta_g > 0 else min(eta, 1.0 / beta_g)), top
