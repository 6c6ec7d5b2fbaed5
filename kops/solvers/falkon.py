"""Falkon: Nystrom kernel ridge regression by conjugate gradient with a Cholesky preconditioner.

The model and objective are those of :class:`kops.ExactKernelRidge` on centers Z (p x d),
with optional sample weights ``w`` (n,)::

    f = K(., Z) alpha,   L(alpha) = 1/2 sum_i w_i (f(x_i) - y_i)^2 + r/2 alpha^T K_ZZ alpha
    H alpha = K_nZ^T W y,   H = K_nZ^T W K_nZ + r K_ZZ                  (normal equations)

Falkon (Rudi, Carratino, Rosasco 2017; Meanti et al. 2020) solves them by conjugate gradient
on ``B^T H B beta = B^T K_nZ^T W y``, ``alpha = B beta``, with the preconditioner that would
invert H exactly if the data were the centers (the Nystrom approximation
``K_nZ^T W K_nZ ~ (N / p) K_ZZ^2``, ``N = sum_i w_i``). In float64, with lower factors::

    K_ZZ + eps I = L L^T                     (eps = 1e-5 p mean(diag) for float32 training,
                                              1e-13 p mean(diag) for float64; more if singular)
    L^T L / p + (r / N) I = A A^T
    B = L^{-T} A^{-T} / sqrt(N)

The jitter keeps ``B`` from amplifying the products' rounding: with float32 products, a
factor of the bare ``K_ZZ`` made CG diverge on smooth kernels (measured: residual 4e4 after
20 iterations on 200 Gaussian centers). Every 10 iterations the residual is recomputed from
its definition, and CG stops with its best iterate once that residual grows (the rounding
floor of the products; :func:`conjugate_gradient`). One CG iteration applies ``B^T H B``
once: two triangular solves each side (O(p^2) float64) and ``K_nZ^T W K_nZ u`` through the
ops: either two fused products ``kmv(Z, X, w * kmv(X, Z,
u))`` or, when the cost model of :func:`kops.solvers.iterations.reuse_kernel_block` says so,
row tiles ``K(X_t, Z)`` formed once by :func:`kops.kernel_matrix` and multiplied twice.
The ridge part is exact, not Falkon's usual ``r B^T K_ZZ B ~ (r/N) A^{-1} A^{-T}``: from
``L^{-1} K_ZZ L^{-T} = I - eps L^{-1} L^{-T}`` the jitter's error is removed, so the fixed
point is exactly the restricted model whatever the jitter.

Cost per iteration O(n p (d + c)) kernel work and O(p^2 c) float64 solves; memory: the two
float64 factors (``16 p^2`` bytes) plus the matrix of the second Cholesky while it is
factorised (``8 p^2``) must fit the memory budget, which is why the default number of centers is capped
by it (:func:`max_centers`). This is Falkon's O(p^2) memory wall; EigenPro 4 has none.
"""
from __future__ import annotations

import math
import time

import torch

from ..config import get_memory_budget
from ..ops import kernel_matrix, kmv
from ._sampling import select_centers
from ._validation import check_epochs, check_ridge
from .base import DivergenceError, KernelModel
from .dense import formed_kernel_matrix, jittered_cholesky
from .iterations import reuse_kernel_block

__all__ = ["Falkon", "FalkonPreconditioner", "max_centers", "conjugate_gradient"]

#: float64 p x p matrices alive at once while the preconditioner is built (L, L^T L, A)
FACTOR_MATRICES = 3
#: preconditioner jitter per center, relative to the mean of diag K(Z, Z), by training dtype
JITTER = {torch.float32: 1e-5, torch.float64: 1e-13}
#: CG iterations between recomputations of the residual from its definition
RESIDUAL_REFRESH = 10
#: growth of the recomputed residual over the best one at which CG stops (the rounding floor)
FLOOR_GROWTH = 2.0
#: default number of centers, before the memory cap
DEFAULT_CENTERS = 10_000


def max_centers(budget: int) -> int:
    """The most centers whose float64 preconditioner (``3 * 8 p^2`` bytes) fits ``budget``."""
    return int(math.isqrt(max(0, budget) // (8 * FACTOR_MATRICES)))


class FalkonPreconditioner:
    """Falkon's preconditioner ``B = L^{-T} A^{-T} / sqrt(N)`` (module docstring), float64.

    Parameters
    ----------
    Z : Tensor (p, d)
        The centers.
    kernel : kops.Kernel
    ridge : float
        r, the ridge of the objective.
    total_weight : float
        N, the sum of the sample weights (n without weights).
    budget : int
        Bytes for the temporaries of forming ``K(Z, Z)``.
    jitter : float
        Relative jitter per center: ``eps >= jitter * p * mean(diag K(Z, Z))``.

    Attributes
    ----------
    L, A : Tensor (p, p), float64, lower triangular
    jitter : float
        eps, added to ``K(Z, Z)``'s diagonal for its factor.
    jitter_A : float
        Added to ``L^T L / p + (r / N) I`` for its factor (0 unless singular).
    """

    def __init__(self, Z, kernel, ridge: float, total_weight: float, budget: int, jitter: float):
        p = Z.shape[0]
        K = formed_kernel_matrix(Z, Z, kernel, budget, torch.float64)
        what = "the Falkon preconditioner (pass ridge > 0)"
        self.L, self.jitter = jittered_cholesky(K, jitter * p * float(K.diagonal().mean()), what=what)
        del K
        G = self.L.T @ self.L
        G /= p
        G.diagonal().add_(ridge / total_weight)
        self.A, self.jitter_A = jittered_cholesky(G, what=what)
        del G
        self.scale = 1.0 / math.sqrt(total_weight)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``B v = L^{-T} A^{-T} v / sqrt(N)``, v (p, c) float64."""
        t = torch.linalg.solve_triangular(self.A.T, v, upper=True)
        return torch.linalg.solve_triangular(self.L.T, t, upper=True).mul_(self.scale)

    def apply_transpose(self, u: torch.Tensor) -> torch.Tensor:
        """``B^T u = A^{-1} L^{-1} u / sqrt(N)``, u (p, c) float64."""
        t = torch.linalg.solve_triangular(self.L, u, upper=False)
        return torch.linalg.solve_triangular(self.A, t, upper=False).mul_(self.scale)

    def inverse(self, alpha: torch.Tensor) -> torch.Tensor:
        """``B^{-1} alpha = sqrt(N) A^T L^T alpha`` (the CG start of a warm start)."""
        return (self.A.T @ (self.L.T @ alpha)).div_(self.scale)

    def ridge_part(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``B^T K_ZZ B v`` for ``u = B v``, exactly: ``A^{-1} (A^{-T} v - eps L^{-1} u sqrt(N)) / N``."""
        t = torch.linalg.solve_triangular(self.A.T, v, upper=True)
        if self.jitter:
            t -= torch.linalg.solve_triangular(self.L, u, upper=False) * (self.jitter / self.scale)
        return torch.linalg.solve_triangular(self.A, t, upper=False).mul_(self.scale**2)


def normal_product(X, Z, U, kernel, sample_weight, *, form: bool, budget: int) -> torch.Tensor:
    """``K(Z, X) (w * (K(X, Z) U))`` (p, c) in X's dtype, without forming more than a tile.

    ``form``: row tiles ``K(X_t, Z)`` of at most ``budget`` bytes are formed once and used
    for both products; otherwise two fused products.
    """
    if not form:
        F = kmv(X, Z, U, kernel)
        if sample_weight is not None:
            F.mul_(sample_weight[:, None])
        return kmv(Z, X, F, kernel)
    out = torch.zeros(Z.shape[0], U.shape[1], dtype=U.dtype, device=U.device)
    rows = max(1, budget // max(1, Z.shape[0] * X.element_size()))
    for r0 in range(0, X.shape[0], rows):
        Kt = kernel_matrix(X[r0 : r0 + rows], Z, kernel)
        F = Kt @ U
        if sample_weight is not None:
            F.mul_(sample_weight[r0 : r0 + rows, None])
        out.addmm_(Kt.T, F)
    return out


def conjugate_gradient(apply, b, x0=None, *, max_iter: int, tol: float, on_iteration=None,
                       refresh: int = RESIDUAL_REFRESH):
    """Conjugate gradient on ``W x = b`` for SPD ``W``, each column of b (p, c) on its own.

    ``on_iteration(k, x, relative_residual)`` runs after iteration k (1-based) and may
    return True to stop. Stops when every column's ``||r|| / ||b||`` is at most ``tol``.

    Every ``refresh`` iterations (and at the end) the residual is recomputed as ``b - W x``:
    rounding drifts the recursive one away from it. When the recomputed residual is more than
    ``FLOOR_GROWTH`` times the best one seen, the products' rounding floor has been reached
    (float32 products on an ill-conditioned system): the best iterate is returned and the
    iteration stops, instead of drifting away.

    Returns ``(x, iterations, relative residuals (c,))``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    b_norm = b.norm(dim=0).clamp_min(torch.finfo(b.dtype).tiny)
    d = r.clone()
    rs = r.square().sum(0)
    rel = rs.sqrt() / b_norm
    best_x, best_rel = x.clone(), rel.clone()
    k = 0

    def at_floor():  # recompute the residual; True when it has grown past the best one's
        nonlocal r, best_x, best_rel
        r = b - apply(x)
        true_rel = r.norm(dim=0) / b_norm
        if float(true_rel.max()) > FLOOR_GROWTH * float(best_rel.max()):
            return True
        if float(true_rel.max()) <= float(best_rel.max()):
            best_x, best_rel = x.clone(), true_rel
        return False

    while k < max_iter and bool((rel > tol).any()):
        Wd = apply(d)
        curvature = (d * Wd).sum(0)
        active = (rel > tol) & (curvature > 0)  # converged (or exhausted) columns stay put
        step = torch.where(active, rs / torch.where(active, curvature, 1.0), 0.0)
        x.add_(d * step)
        r.sub_(Wd * step)
        k += 1
        if not bool(torch.isfinite(x).all()):
            raise DivergenceError(f"conjugate gradient produced non-finite values in iteration {k}")
        if k % refresh == 0 and at_floor():
            return best_x, k, best_rel
        rs_new = r.square().sum(0)
        d = r + d * torch.where(active, rs_new / torch.where(rs > 0, rs, 1.0), 0.0)
        rs = rs_new
        rel = rs.sqrt() / b_norm
        if on_iteration is not None and on_iteration(k, x, rel):
            break
        if not bool(active.any()):
            break
    if k % refresh and at_floor():
        return best_x, k, best_rel
    return x, k, rel


class Falkon(KernelModel):
    """Falkon kernel ridge regression / classification on Nystrom centers (module docstring).

    Converges to :class:`kops.ExactKernelRidge` on the same centers and ridge (the
    conjugate gradient's fixed point is that model exactly); measured: 10 to 50 iterations to 1e-6 of it.

    Parameters
    ----------
    kernel : str or kops.Kernel, default "laplacian"
    bandwidth : float, optional
        With a kernel name; None takes the median pairwise distance of (a sample of) X.
    centers : None, int or array (p, d)
        An int p picks p random training points; None picks
        ``min(10000, n, max_centers(budget))`` (the float64 preconditioner must fit the
        memory budget: a p that does not raises ValueError naming the budget it needs).
    ridge : float, default 0
        r in the objective (as :class:`kops.ExactKernelRidge`; Falkon's ``lambda`` is r / n).
    max_iter : int, default 20
        Most conjugate gradient iterations.
    tol : float, default 1e-7
        Stop when every output's relative residual ``||W beta - b|| / ||b||`` of the
        preconditioned system is at most tol.
    task : {"auto", "regression", "classification"}
    device : optional
    dtype : {"float32", "float64"}, default float32
        The dtype of the kernel products and the weights; the preconditioner and the
        conjugate gradient's vectors are float64.
    random_state : int, torch.Generator or None
        Seeds the choice of centers (and the default bandwidth's sample).
    memory_budget : int or str, optional
        Bytes for the preconditioner and kernel tiles (default :func:`kops.get_memory_budget`).
    warm_start : bool, default False
        Refit starting from the previous fit's weights and centers (same features and outputs).
    callback : callable, optional
        ``callback(estimator, record)`` after each iteration; returning True stops.
    verbose : int, default 0

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
    preconditioner_ : FalkonPreconditioner
    n_iter_ : int
        Conjugate gradient iterations run.
    residuals_ : ndarray (c,)
        Final relative residuals of the preconditioned system.
    block_reuse_ : bool
        Whether each product formed its kernel tiles once (the cost model).
    history_ : list of dict
        One record per iteration run (``epoch`` is the iteration), with the metrics of
        :class:`kops.solvers.base.KernelModel` and ``residual`` (the largest over outputs).
        When the iteration stops at the rounding floor (:func:`conjugate_gradient`) the
        model is the best iterate, which may precede the last records.
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, ridge=0.0, max_iter=20, tol=1e-7,
                 task="auto", device=None, dtype="float32", random_state=None, memory_budget=None,
                 warm_start=False, callback=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.ridge = ridge
        self.max_iter = max_iter
        self.tol = tol
        self.task = task
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.memory_budget = memory_budget
        self.warm_start = warm_start
        self.callback = callback
        self.verbose = verbose

    def _check_tol(self) -> float:
        try:
            tol = float(self.tol)
        except (TypeError, ValueError):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}") from None
        if not tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        return tol

    def _centers(self, X, Y, budget):
        warm = self._warm_start_weights(X, Y)
        if warm is not None:
            return warm
        cap = max_centers(budget)
        centers = self.centers
        if centers is None:
            centers = max(2, min(DEFAULT_CENTERS, X.shape[0], cap))
        Z, _ = select_centers(centers, X, self.generator_)
        p = Z.shape[0]
        if p > cap:
            need = FACTOR_MATRICES * 8 * p * p
            raise ValueError(f"centers: the float64 preconditioner of p = {p} centers needs a memory budget of at "
                             f"least {need} bytes ({need / 2**20:.0f} MiB), the budget is {budget}; pass fewer "
                             f"centers (at most {cap}) or a larger memory_budget")
        return Z, None

    def _fit(self, X, Y):
        max_iter = check_epochs(self.max_iter)
        ridge = check_ridge(self.ridge)
        tol = self._check_tol()
        budget = get_memory_budget(self.device_)
        t0 = time.perf_counter()
        Z, warm = self._centers(X, Y, budget)
        n, d = X.shape
        p, c = Z.shape[0], Y.shape[1]
        w = self._sample_weight_tensor()
        total = float(w.sum()) if w is not None else float(n)
        self.preconditioner_ = P = FalkonPreconditioner(Z, self.kernel_, ridge, total, budget // 2, JITTER[X.dtype])
        tile_budget = budget // 4
        self.block_reuse_ = form = reuse_kernel_block(n, p, d, X.element_size(), tile_budget, X.device)
        kernel, dtype = self.kernel_, X.dtype

        def data_part(U64):  # K_nZ^T W K_nZ U, float64 in and out, products in the training dtype
            return normal_product(X, Z, U64.to(dtype), kernel, w, form=form, budget=tile_budget).to(torch.float64)

        def apply(v):  # B^T H B v
            u = P.apply(v)
            out = P.apply_transpose(data_part(u))
            if ridge:
                out.add_(P.ridge_part(v, u), alpha=ridge)
            return out

        WY = Y if w is None else Y * w[:, None]
        b = P.apply_transpose(kmv(Z, X, WY, kernel).to(torch.float64))
        self.centers_ = Z
        self.weights_ = torch.zeros(p, c, dtype=dtype, device=X.device) if warm is None else warm.clone()
        beta0 = None if warm is None else P.inverse(warm.to(torch.float64))
        self._ridge, self._n = ridge, total  # the objective is L / sum(w)
        self._iteration_start = t0

        def on_iteration(k, beta, rel):
            self.weights_.copy_(P.apply(beta))
            now = time.perf_counter()
            stop = self._end_epoch(k, now - self._iteration_start)
            self.history_[-1]["residual"] = float(rel.max())
            self._iteration_start = time.perf_counter()
            return stop

        beta, self.n_iter_, rel = conjugate_gradient(apply, b, beta0, max_iter=max_iter, tol=tol,
                                                     on_iteration=on_iteration)
        self.residuals_ = rel.cpu().numpy()
        self.weights_.copy_(P.apply(beta))  # the best iterate (see conjugate_gradient)
        return self
