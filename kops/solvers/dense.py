"""Dense blocks the solvers form on purpose: a kernel matrix in row tiles within a budget, the
Cholesky factor of a PSD matrix with the smallest jitter that makes it succeed, and the top
eigenpairs of a symmetric matrix."""
from __future__ import annotations

import torch

from ..ops import kernel_matrix

__all__ = ["formed_kernel_matrix", "jittered_cholesky", "top_eigh"]


def formed_kernel_matrix(x, z, kernel, budget: int, dtype=None, tile_factor: int = 1):
    """``K(x, z)`` (m x p, in ``dtype``, default x's) formed in row tiles of at most ``budget``
    bytes of temporaries (a tile of r rows takes ``tile_factor * r * p`` elements)."""
    dtype = x.dtype if dtype is None else dtype
    x, z = x.to(dtype), z.to(dtype)
    out = torch.empty(x.shape[0], z.shape[0], dtype=dtype, device=x.device)
    elt = out.element_size()
    rows = max(1, budget // max(1, tile_factor * z.shape[0] * elt))
    for r0 in range(0, x.shape[0], rows):
        out[r0 : r0 + rows] = kernel_matrix(x[r0 : r0 + rows], z, kernel)
    return out


def jittered_cholesky(G: torch.Tensor, jitter: float = 0.0, *, what: str = "the matrix", tries: int = 14):
    """Lower ``L`` with ``G + j I = L L^T``, in place on G's diagonal; ``j >= jitter``.

    While the factorisation fails (a numerically singular G), j grows to
    ``max(1e-13 * 10^k * mean(diag G), 10 j)``. Returns ``(L, j)``; raises ValueError naming
    ``what`` after ``tries`` attempts.
    """
    scale = float(G.diagonal().mean()) or 1.0
    G.diagonal().add_(jitter)
    for attempt in range(tries):
        L, info = torch.linalg.cholesky_ex(G)
        if int(info) == 0:
            return L, jitter
        step = max(scale * 1e-13 * 10**attempt, 10 * jitter)
        G.diagonal().add_(step - jitter)
        jitter = step
    raise ValueError(f"{what} is not positive definite even with jitter")


def top_eigh(A: torch.Tensor, k: int):
    """The ``k`` largest eigenvalues of the symmetric ``A`` (n x n), descending, and their
    orthonormal eigenvectors: ``(w (k,), V (n, k))`` with ``A V = V diag(w)``.

    On CPU, where SciPy is installed and ``k <= n / 2``, LAPACK's ``syevr`` (SciPy's
    ``eigh(subset_by_index=..., driver="evr")``) computes only those k pairs after the
    tridiagonal reduction; elsewhere the full ``torch.linalg.eigh``, truncated. The solvers
    need tens to a few hundred of the top pairs of a few-thousand-square matrix, where the full
    decomposition's back-transformation of all n eigenvectors is most of the time.
    """
    n = A.shape[0]
    k = max(0, min(int(k), n))
    if A.device.type == "cpu" and A.dtype in (torch.float32, torch.float64) and 0 < k <= n // 2:
        try:
            import scipy.linalg
        except ImportError:
            scipy = None
        if scipy is not None:
            w, V = scipy.linalg.eigh(A.detach().numpy(), subset_by_index=[n - k, n - 1], driver="evr",
                                     check_finite=False)
            return torch.from_numpy(w[::-1].copy()), torch.from_numpy(V[:, ::-1].copy())
    w, V = torch.linalg.eigh(A)
    return w.flip(0)[:k], V.flip(1)[:, :k]
