"""EigenPro's Nystrom preconditioner for linear_operator's (and GPyTorch's) conjugate gradients.

For ``A = c K(X, X) + sigma^2 I`` (n x n: a kops kernel with outputscale c, plus the
noise of an added diagonal), from a Nystrom sample ``X_S`` of s points:

1. ``lambda_1 >= ... >= lambda_{q+1}``, ``E`` (s x q): the top eigenpairs of
   ``K(X_S, X_S) / s``, built exactly as EigenPro builds them
   (:class:`kops.solvers.NystromPreconditioner`, float64; directions below the dtype's
   resolution are dropped);
2. the Nystrom extension ``F = sqrt(c) K(X, X_S) E (s Lambda)^{-1/2}`` (n x q, one fused
   product), so that ``c K ~ F F^T``; its thin QR and a q x q eigendecomposition give
   ``F F^T = U diag(theta) U^T`` with orthonormal U (n x q);
3. EigenPro's damping of the top q directions to the (q+1)-th eigenvalue of A,
   ``mu = c n lambda_{q+1} + sigma^2``:

   ``P^{-1} v = v - U diag(h) U^T v``, ``h_i = max(0, 1 - mu / (theta_i + sigma^2))``,

   i.e. ``P = I + U diag(g) U^T`` with ``g_i = max(0, (theta_i + sigma^2) / mu - 1)`` and
   ``log det P = sum_i log(1 + g_i)``. P is symmetric positive definite whatever the sample,
   so CG stays exact; ``P^{-1} A`` has its top q eigenvalues near mu instead of
   ``theta_1 + sigma^2``, which is what cuts the iterations.

linear_operator asks an ``AddedDiagLinearOperator`` for ``(P^{-1} closure, P as a
LinearOperator, log det P)`` through its ``preconditioner_override``;
:class:`EigenProPreconditioner` is such an override. A non-constant added diagonal is
replaced by its mean in P (P is still a valid preconditioner; its log determinant is exact
for the P used). Everything here is computed without gradients: linear_operator
differentiates the solves and log determinants through the operator, not through P.
"""
from __future__ import annotations

import torch
from linear_operator.operators import (ConstantDiagLinearOperator, ConstantMulLinearOperator, PsdSumLinearOperator,
                                       RootLinearOperator)

from ..kernels import KERNELS
from ..ops import kmv
from ..solvers.preconditioner import NystromPreconditioner
from .linear_operator import KopsLinearOperator

__all__ = ["EigenProPreconditioner"]


def _kernel_part(op):
    """(KopsLinearOperator, outputscale multiplier) of a kernel operator, or TypeError."""
    scale = 1.0
    while isinstance(op, ConstantMulLinearOperator):
        scale = scale * float(op._constant.detach().reshape(-1)[0])
        op = op.base_linear_op
    if not isinstance(op, KopsLinearOperator):
        raise TypeError("EigenProPreconditioner needs a kops kernel operator (KopsLinearOperator, or a "
                        f"ConstantMulLinearOperator of one) plus a diagonal; got {type(op).__name__}")
    if op.x.shape[0] != op.z.shape[0] or not torch.equal(op.x, op.z):
        raise ValueError("EigenProPreconditioner needs a symmetric K(X, X): x and z of the kernel operator differ")
    return op, scale * float(op.outputscale.detach())


class EigenProPreconditioner:
    """A ``preconditioner_override`` for linear_operator's ``AddedDiagLinearOperator``.

    Parameters
    ----------
    n_components : int
        q, the number of damped eigendirections (fewer when the sample has fewer resolvable
        ones).
    n_nystrom : int, optional
        s, the size of the Nystrom sample (default ``min(n, max(5 q, 500))``, which keeps the
        sample's eigensystem on EigenPro's dense path); all n points when s >= n (then U is
        the exact top eigenbasis of K). The preconditioner is rebuilt for every operator
        (GPyTorch makes one per training step), so s bounds its O(s^3 + n s d + n q^2) cost.
    seed : int
        Seed of the sample (and of the eigensolver's start block).
    min_size : int
        Operators smaller than this get no preconditioner (returns ``(None, None, None)``).

    Attributes
    ----------
    last_ : dict
        From the latest call: ``n_components``, ``n_nystrom``, ``mu`` (the damped level) and
        ``theta_1`` (the top eigenvalue of the Nystrom approximation of c K).

    Examples
    --------
    >>> A = AddedDiagLinearOperator(KopsLinearOperator(x, x, ell), DiagLinearOperator(noise),
    ...                             preconditioner_override=EigenProPreconditioner(50))
    """

    def __init__(self, n_components: int = 50, n_nystrom: int | None = None, *, seed: int = 0, min_size: int = 0):
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an int >= 1, got {n_components!r}")
        if n_nystrom is not None and (isinstance(n_nystrom, bool) or not isinstance(n_nystrom, int)
                                      or n_nystrom <= n_components):
            raise ValueError(f"n_nystrom must be an int > n_components = {n_components}, got {n_nystrom!r}")
        self.n_components = n_components
        self.n_nystrom = n_nystrom
        self.seed = int(seed)
        self.min_size = int(min_size)
        self.last_ = {}

    def __repr__(self) -> str:
        return f"EigenProPreconditioner(n_components={self.n_components}, n_nystrom={self.n_nystrom}, seed={self.seed})"

    def __call__(self, added_diag):
        """``(closure v -> P^{-1} v, P as a LinearOperator, log det P)`` for ``added_diag``."""
        cached = getattr(added_diag, "_kops_eigenpro_preconditioner", None)
        if cached is not None:
            return cached
        kernel_op, outputscale = _kernel_part(added_diag._linear_op)
        n = kernel_op.x.shape[0]
        if n < self.min_size or n <= self.n_components + 1:
            return None, None, None
        with torch.no_grad():
            result = self._build(added_diag, kernel_op, outputscale)
        added_diag._kops_eigenpro_preconditioner = result
        return result

    def _build(self, added_diag, kernel_op, outputscale):
        x = kernel_op.x.detach()
        n, dtype, device = x.shape[0], x.dtype, x.device
        noise = float(added_diag._diag_tensor._diagonal().detach().mean())
        kernel = KERNELS[kernel_op.kernel_name](kernel_op.lengthscale.detach())
        s = min(n, self.n_nystrom or max(5 * self.n_components, 500))
        generator = torch.Generator().manual_seed(self.seed)
        sample = torch.randperm(n, generator=generator)[:s].to(device)
        x_s = x[sample].to(torch.float64)
        # EigenPro's construction of the sample's eigensystem (kops.solvers.preconditioner).
        nystrom = NystromPreconditioner(x_s, kernel, n_components=min(self.n_components, s - 1),
                                        generator=generator)
        q = nystrom.n_components
        lam = nystrom.eigensystem.eigenvalues[:q]
        basis = nystrom.E64 / (s * lam).sqrt()
        F = kmv(x.to(torch.float64), x_s, basis, kernel) * outputscale ** 0.5  # c K ~ F F^T
        Q, R = torch.linalg.qr(F)
        theta, V = torch.linalg.eigh(R @ R.T)
        theta = theta.clamp_min(0.0)
        U = Q @ V
        mu = outputscale * n * nystrom.lambda_q1 + noise
        h = (1.0 - mu / (theta + noise)).clamp_min(0.0)
        g = ((theta + noise) / mu - 1.0).clamp_min(0.0)
        self.last_ = {"n_components": q, "n_nystrom": s, "mu": mu, "theta_1": float(theta.max())}
        U_d, h_d = U.to(dtype), h.to(dtype)

        def closure(v):
            # P^{-1} v = v - U diag(h) U^T v, for v (..., n, t)
            return v - U_d @ (h_d.unsqueeze(-1) * (U_d.mT @ v))

        one = torch.ones(1, dtype=dtype, device=device)
        p_operator = PsdSumLinearOperator(RootLinearOperator((U * g.sqrt()).to(dtype)),
                                          ConstantDiagLinearOperator(one, diag_shape=n))
        logdet = torch.log1p(g).sum().to(dtype)
        return closure, p_operator, logdet
