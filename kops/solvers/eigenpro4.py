"""EigenPro 4: EigenPro 3 with delayed projection.

The model is ``f = K(., Z) alpha + K(., Z_tmp) a_tmp + K(., X_S) a_S``: the centers' part and
a pending part (temporary centers = the visited batches, and the Nystrom points' correction
weights). The pending part is projected onto the centers only every T batches.

Storage: ONE preallocated buffer of points ``[Z; X_S; Z_tmp]`` (p + s + T m rows) and one of
weights ``[alpha; a_S; a_tmp]``. The pending rows sit last so that the live part of the model
is always a prefix: the prediction on a batch is a single :func:`kops.kmv` call on a view
of the buffers (nothing is concatenated per step), and ``K(Z, X_B) g`` and
``K(X_S, X_B) g`` are a single call on the ``[Z; X_S]`` prefix::

    setup: Nystrom preconditioner (X_S, E, D, eta), X_S drawn from Z;  M = K(Z, X_S) E D
           T = max(1, (coeff - 1) p // m)    (never 0; also bounded by the memory budget)
    each batch B:
        g   = K(X_B, [Z; X_S; Z_tmp]) [alpha; a_S; a_tmp] - Y_B
        u   = K([Z; X_S], X_B) g;  v = E^T u_S
        h  -= eta (u_Z - M v)             # cached predictions: the pending part's values on Z
        append X_B to Z_tmp with weights -eta g;   a_S += eta E D v
        every T batches and at the end of each epoch:
            w ~ K(Z, Z)^{-1} h            # one EigenPro 2 epoch on the centers (own step size)
            alpha += w;  clear Z_tmp, a_tmp, a_S, h

Because h is accumulated, the projection never evaluates the pending model on Z. The
per-batch cost is O(m (p + s + T m) d), i.e. O(p) per point amortised, plus one projection
(O(p^2 d)) every T batches.
"""
from __future__ import annotations

import time

import torch

from ..config import get_memory_budget
from ..ops import kmv
from ._utils import Progress, batches
from .eigenpro2 import check_epochs, check_ridge
from .projection import ProjectedEigenPro

__all__ = ["EigenPro4", "projection_interval"]


def projection_interval(p: int, m: int, coeff: float = 2.0, interval=None, max_rows=None) -> int:
    """T, the batches between projections: ``max(1, (coeff - 1) p // m)``, never 0.

    ``interval`` (a user's T) overrides the formula; ``max_rows`` caps ``T m`` (the pending
    buffer) when memory is short.
    """
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"projection_interval must be an int >= 1 or None, got {interval!r}")
        T = interval
    else:
        if not coeff >= 1:
            raise ValueError(f"projection_coeff must be >= 1, got {coeff!r}")
        T = int((coeff - 1) * p // max(1, m))
    if max_rows is not None:
        T = min(T, max_rows // max(1, m))
    return max(1, T)


class EigenPro4(ProjectedEigenPro):
    """EigenPro 4 (delayed projection) kernel regression / classification on centers Z.

    Converges to the same model as :class:`kops.EigenPro3` (and :class:`kops.ExactKernelRidge`
    on the same centers) at a per-batch cost that does not grow with p^2. ``T = 1`` is
    EigenPro 3 with one projection epoch.

    Parameters
    ----------
    kernel, bandwidth, centers, epochs, batch_size, n_nystrom, n_components, ridge, task,
    device, dtype, random_state, memory_budget, eig_method, callback, verbose
        As in :class:`kops.EigenPro3`.
    projection_interval : int, optional
        T, batches between projections; default ``max(1, (projection_coeff - 1) p // m)``,
        reduced if the pending buffer (T m rows) would exceed half the memory budget.
        The end of every epoch also projects.
    projection_coeff : float, default 2
        The coefficient of the default T.
    projection_epochs : int, default 1
        EigenPro 2 epochs per projection.

    Attributes
    ----------
    centers_ : Tensor (p, d)
    weights_ : Tensor (p, c)
        A view of the first p rows of the weight buffer.
    projection_interval_ : int
        T in use.
    n_projections_ : int
    preconditioner_, projector_, batch_size_, step_size_, history_
        As in :class:`kops.EigenPro3`.

    Notes
    -----
    The ridge term (optional) is applied at each projection as the ridge gradient of the
    centers' part, ``(k m / n) r f`` for the k batches since the last projection,
    preconditioned like the data term; the pending part's own ridge gradient is omitted
    (it is projected at most T batches later).
    """

    def __init__(self, kernel="laplacian", bandwidth=None, *, centers=None, epochs=5, batch_size=None,
                 n_nystrom=None, n_components=None, projection_interval=None, projection_coeff=2.0,
                 projection_epochs=1, ridge=0.0, task="auto", device=None, dtype="float32", random_state=None,
                 memory_budget=None, eig_method="auto", callback=None, verbose=0):
        self.kernel = kernel
        self.bandwidth = bandwidth
        self.centers = centers
        self.epochs = epochs
        self.batch_size = batch_size
        self.n_nystrom = n_nystrom
        self.n_components = n_components
        self.projection_interval = projection_interval
        self.projection_coeff = projection_coeff
        self.projection_epochs = projection_epochs
        self.ridge = ridge
        self.task = task
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.memory_budget = memory_budget
        self.eig_method = eig_method
        self.callback = callback
        self.verbose = verbose

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        ridge = check_ridge(self.ridge)
        inner = self._projection_epochs()
        Z, idx, P, M, projector, m = self._setup_projected(X, Y)
        n, d = X.shape
        p, s, c = Z.shape[0], P.n_nystrom, Y.shape[1]
        row_bytes = X.element_size() * (d + c)
        T = projection_interval(p, m, self.projection_coeff, self.projection_interval,
                                max_rows=get_memory_budget(self.device_) // 2 // row_bytes)
        self.projection_interval_ = T
        cap = p + s + T * m
        # The preallocated buffers: points [Z; X_S; Z_tmp], weights [alpha; a_S; a_tmp].
        pts = torch.empty(cap, d, dtype=X.dtype, device=X.device)
        pts[:p] = Z
        pts[p : p + s] = P.x
        wts = torch.zeros(cap, c, dtype=X.dtype, device=X.device)
        alpha, a_S = wts[:p], wts[p : p + s]
        self.weights_ = alpha
        ZS = pts[: p + s]
        h = torch.zeros(p, c, dtype=X.dtype, device=X.device)  # cached predictions of the pending part on Z
        eta = self.step_size_
        self.n_projections_ = 0
        state = {"end": p + s, "batches": 0}

        def project():
            if ridge:
                k = state["batches"] * m / n
                h.sub_(self._preconditioned_on_centers(P, ZS, p, M, Z, alpha), alpha=eta * ridge * k)
            alpha.add_(projector.solve(h, inner))
            wts[p : state["end"]].zero_()
            h.zero_()
            state["end"], state["batches"] = p + s, 0
            self.n_projections_ += 1

        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            progress = Progress(n, f"EigenPro4 epoch {epoch}", bool(self.verbose))
            perm = torch.randperm(n, generator=self.generator_).to(X.device)
            done = 0
            for b in batches(perm, m):
                end, mb = state["end"], b.shape[0]
                xb = X[b]
                g = kmv(xb, pts[:end], wts[:end], self.kernel_)  # the whole model: one fused call
                g -= Y[b]
                u = kmv(ZS, xb, g, self.kernel_)  # [K(Z, X_B) g; K(X_S, X_B) g]: one fused call
                v = P.project(u[p:])
                h.sub_(u[:p] - M @ v, alpha=eta)
                pts[end : end + mb] = xb
                wts[end : end + mb] = g.mul_(-eta)
                a_S.add_(P.coefficients(v), alpha=eta)
                state["end"], state["batches"] = end + mb, state["batches"] + 1
                done += mb
                if state["batches"] == T:
                    project()
                progress.update(done)
            if state["batches"]:
                project()  # every epoch ends with the model on the centers only
            progress.close()
            if self._end_epoch(epoch, time.perf_counter() - t0):
                break
        return self
