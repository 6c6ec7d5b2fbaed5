"""Top eigenpairs of the normalised Nystrom kernel matrix ``K(X_S, X_S) / s`` in float64.

Two paths:

* ``"dense"``: form ``K(X_S, X_S)`` in float64 (``s^2`` doubles) and call
  ``torch.linalg.eigh``; exact, O(s^3) time. Meant for s up to a few thousand.
* ``"subspace"``: matrix-free restarted block Krylov iteration (block Lanczos with full
  reorthogonalisation, depth 3) with Rayleigh-Ritz. The only access to the matrix is the
  fused product ``K(X_S, X_S) @ Q`` for float64 blocks ``Q`` of ``b = k + oversample``
  columns (:func:`kops.kmv`), so ``K`` is never formed and s = 50,000 or more fits in
  memory (O(4 s b) doubles). A restart costs 4 products (s^2 b kernel multiply-adds each),
  QRs of s x b blocks and an eigh of a 4b x 4b matrix.

``"auto"`` takes the dense path when ``s <= dense_max`` (or when ``b`` would not be much
smaller than s); otherwise subspace iteration, on a formed ``K(X_S, X_S)`` (method
"formed-subspace": each product a GEMM) when ``8 s^2`` bytes fit in half the memory budget,
else matrix-free.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import get_memory_budget
from ..ops import kernel_matrix, kmv
from ._validation import kernel_of
from .dense import top_eigh

__all__ = ["Eigensystem", "top_eigensystem"]

#: s up to which "auto" takes the dense path (eigh of s x s is slow on small CPUs).
DENSE_MAX = 500


@dataclass
class Eigensystem:
    """The top ``k`` eigenpairs of ``K(X_S, X_S) / s``.

    Attributes
    ----------
    eigenvalues : Tensor, shape (k,), float64
        In decreasing order, ``lambda_1 >= ... >= lambda_k >= 0``.
    eigenvectors : Tensor, shape (s, k), float64
        Orthonormal columns; column i belongs to ``eigenvalues[i]``.
    method : str
        "dense", "formed-subspace" or "subspace" (matrix-free).
    iterations : int
        Subspace iterations run (0 for the dense path).
    residual : float
        ``max_i ||K q_i / s - lambda_i q_i|| / lambda_i`` at return (0 for the dense path).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    method: str
    iterations: int = 0
    residual: float = 0.0


def _dense(x64, spec, k):
    s = x64.shape[0]
    K = kernel_matrix(x64, x64, spec) / s
    K = 0.5 * (K + K.T)  # exact symmetry for eigh
    w, V = top_eigh(K, k)
    return Eigensystem(w.clamp_min(0.0), V.contiguous(), "dense")


def _orthonormal_complement(W, B):
    """An orthonormal basis of W's columns made orthogonal to B's (orthonormal) columns."""
    for _ in range(2):  # twice is enough (Kahan's "twice is enough")
        W = W - B @ (B.T @ W)
    Q, _ = torch.linalg.qr(W)
    Q = Q - B @ (B.T @ Q)  # QR of a near rank-deficient W may return columns inside span(B)
    Q, _ = torch.linalg.qr(Q)
    return Q


def _subspace(x64, spec, k, *, oversample, tol, max_iter, generator, formed=False, depth=3):
    """Restarted block Krylov (block Lanczos with full reorthogonalisation) + Rayleigh-Ritz.

    Each restart builds the basis [Q, A Q, ..., A^depth Q] (orthonormalised block by block),
    keeping the images A Q_j, so one restart costs depth + 1 products with blocks of b
    columns; the Rayleigh-Ritz step on the whole basis converges far faster than plain
    subspace iteration on flat spectra (Laplacian kernel, large d).
    """
    s = x64.shape[0]
    if formed:  # K fits the budget: form it once, each product is then a plain GEMM
        K = kernel_matrix(x64, x64, spec)

        def product(Q):
            return K @ Q
    else:
        def product(Q):
            return kmv(x64, x64, Q, spec)

    b = min(s, k + oversample)
    depth = max(0, min(depth, s // (2 * b) - 1))
    Q = torch.randn(s, b, dtype=torch.float64, generator=generator).to(x64.device)
    Q, _ = torch.linalg.qr(Q)
    residual = float("inf")
    it = 0
    w = None
    for it in range(1, max_iter + 1):
        blocks, images = [Q], []
        for j in range(depth + 1):
            W = product(blocks[-1]) / s
            images.append(W)
            if j < depth:
                blocks.append(_orthonormal_complement(W, torch.cat(blocks, 1)))
        B, AB = torch.cat(blocks, 1), torch.cat(images, 1)
        # Rayleigh-Ritz on span(B): the best approximations to the top eigenpairs there.
        H = B.T @ AB
        H = 0.5 * (H + H.T)
        w, U = torch.linalg.eigh(H)
        w, U = w.flip(0)[:b], U.flip(1)[:, :b]
        Q, AQ = B @ U, AB @ U
        R = AQ[:, :k] - Q[:, :k] * w[:k]
        # Relative to each eigenvalue, floored at 1e-8 lambda_1 (below: rounding noise).
        scale = w[:k].clamp_min(1e-8 * float(w[0].clamp_min(torch.finfo(torch.float64).tiny)))
        residual = float((R.norm(dim=0) / scale).max())
        if residual <= tol or depth == 0 and b == s:
            break
        if depth == 0:  # plain subspace iteration: the next block is the image
            Q, _ = torch.linalg.qr(AQ)
    method = "formed-subspace" if formed else "subspace"
    return Eigensystem(w[:k].clamp_min(0.0).contiguous(), Q[:, :k].contiguous(), method, it, residual)


def top_eigensystem(x, kernel, bandwidth=None, k: int = 151, *, method: str = "auto",
                    tol: float = 1e-6, max_iter: int = 200, oversample: int | None = None,
                    dense_max: int = DENSE_MAX, generator: torch.Generator | None = None) -> Eigensystem:
    """Top ``k`` eigenpairs of ``K(x, x) / s`` (``s = x.shape[0]``), computed in float64.

    Parameters
    ----------
    x : Tensor, shape (s, d)
        The Nystrom sample ``X_S`` (any floating dtype; cast to float64).
    kernel : str or kops.Kernel
        Kernel object, or a name with ``bandwidth``.
    bandwidth : float, optional
    k : int
        Number of eigenpairs, ``1 <= k <= s`` (the preconditioner asks for q + 1).
    method : {"auto", "dense", "subspace"}
        See the module docstring. The dense path needs ``8 s^2`` bytes within the memory
        budget (:func:`kops.get_memory_budget`); "auto" falls back to "subspace" otherwise.
    tol : float
        Subspace path: stop when every eigen-residual
        ``||K q_i / s - lambda_i q_i||`` is below ``tol * lambda_i`` (relative to its own
        eigenvalue, so the smallest one, lambda_{q+1}, which sets the step size, is accurate).
    max_iter : int
        Subspace path: at most this many restarts (each ``depth + 1 = 4`` products with K).
    oversample : int, optional
        Extra columns in the block (default ``16 + k // 10``).
    dense_max : int
        Largest s for which "auto" picks the dense path.
    generator : torch.Generator, optional
        Random start block of the subspace path.

    Returns
    -------
    Eigensystem
        Eigenvalues (k,) in decreasing order and orthonormal eigenvectors (s, k), float64.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor (s, d), got {getattr(x, 'shape', type(x).__name__)}")
    s = x.shape[0]
    if s == 0:
        raise ValueError("x is empty: the Nystrom sample needs at least one point")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= s:
        raise ValueError(f"k must be an int with 1 <= k <= s = {s}, got {k!r}")
    if method not in ("auto", "dense", "subspace"):
        raise ValueError(f"method must be 'auto', 'dense' or 'subspace', got {method!r}")
    spec = kernel_of(kernel, bandwidth)
    x64 = x.detach().to(torch.float64).contiguous()
    if not bool(torch.isfinite(x64).all()):
        raise ValueError("x contains NaN or infinity")
    oversample = 16 + k // 10 if oversample is None else int(oversample)
    formed = False
    if method == "auto":
        fits = 8 * s * s <= get_memory_budget(x.device) // 2
        method = "dense" if fits and (s <= dense_max or k + oversample >= s // 2) else "subspace"
        formed = fits
    if method == "dense":
        return _dense(x64, spec, k)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    return _subspace(x64, spec, k, oversample=oversample, tol=tol, max_iter=max_iter, generator=generator,
                     formed=formed)
