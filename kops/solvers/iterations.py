"""The iteration steps of the EigenPro solvers, reading top to bottom, calling only the ops.

* :func:`eigenpro2_epoch`: one EigenPro 2 epoch on ``(K(x, x) + r I) w = t``.
* :func:`batch_gradient`, :func:`projected_update`: a batch's gradient on the centers and
  the preconditioned, projected step for it; :func:`projected_step` (EigenPro 3) is the two,
  :class:`FullGradientDescent` steps on the gradient of all n points (large ridges).
* :class:`DelayedProjection`: EigenPro 4's state (the centers' weights and the pending
  part, in preallocated buffers) with :meth:`~DelayedProjection.step` and
  :meth:`~DelayedProjection.project`.

The objective of the projected solvers, for centers ``Z`` and ``f = K(., Z) alpha``:
``L(alpha) = 1/2 ||K(X, Z) alpha - Y||^2 + r/2 alpha^T K(Z, Z) alpha`` (:class:`kops.ExactKernelRidge`
with the same centers and ridge). Its functional gradient ``K(., X)(f(X) - Y) + r f`` is
estimated on a batch B of m points by ``K(., X_B) g + (m / n) r f``. With sample weights W
(normalised, :mod:`kops.solvers.loss_weights`) the loss is ``1/2 ||K(X, Z) alpha - Y||_W^2``
and each batch's residual g is scaled by ``W_B`` before it meets ``K(., X_B)``.

The Nystrom sample X_S is a subset of the centers (row indices ``idx`` into Z), so
``K(X_S, X_B) g`` is read from the rows of ``K(Z, X_B) g``, never evaluated again. The
preconditioner's correction is in the span of the centers, but it still goes through the
projection, as its values on Z (``M v`` with ``M = K(Z, X_S) E D``, p x q): D amplifies the
sample's small eigendirections, which an inexact projection does not reach, so adding the
correction to ``alpha`` directly while projecting the rest diverges (measured: few Gaussian
centers). Through the projection the two parts cancel as they should.
"""
from __future__ import annotations

import torch

from ..ops import kernel_matrix, kmv
from ._sampling import batches

__all__ = ["eigenpro2_step", "eigenpro2_epoch", "batch_gradient", "projected_update", "projected_step",
           "FullGradientDescent", "DelayedProjection", "reuse_kernel_block", "BALANCE"]

#: flops per byte of memory traffic at which a device is balanced (GEMM rate / bandwidth)
BALANCE = {"cpu": 10.0, "cuda": 20.0}
#: fewest rows a formed kernel tile must have to be worth forming
MIN_TILE_ROWS = 64


def reuse_kernel_block(m: int, cols: int, d: int, element_size: int, budget: int, device) -> bool:
    """Whether to form ``K(X_B, cols)`` once (in row tiles) and multiply it twice.

    Cost model per kernel entry: the fused path evaluates the entry twice (the prediction
    ``K w`` and the gradient ``K^T g``), about ``2 d + 20`` flops for the second evaluation
    (distance and exponential). The formed path writes and reads the entry back, about
    ``3 * element_size`` bytes, i.e. ``3 * element_size * BALANCE`` flop-equivalents. Form
    when the saving is larger and a tile of at least ``min(m, 64)`` rows fits the budget.
    (Measured on a 2-core CPU at d = 784: 0.52 s formed vs 2 x 0.69 s fused.)
    """
    if budget // max(1, cols * element_size) < min(m, MIN_TILE_ROWS):
        return False
    balance = BALANCE.get(torch.device(device).type, BALANCE["cuda"])
    return 2 * d + 20 > 3 * element_size * balance


def eigenpro2_step(x, targets, weights, precond, nystrom_idx, b, eta, *, ridge=0.0, kernel=None,
                   sample_weight=None) -> float:
    """One EigenPro 2 batch on the rows ``b`` (a long tensor on x's device), in place on ``weights``.

    ``g = K(x_B, x) w + ridge w_B - t_B``; ``w[B] -= eta g``; ``w[S] += eta E D E^T K(x_S, x_B) g``
    (see :func:`eigenpro2_epoch`). With ``sample_weight`` (n,) the residual's rows are scaled,
    ``g = W_B (K(x_B, x) w - t_B) + ridge w_B``: the gradient of
    ``1/2 sum_i w_i (f(x_i) - t_i)^2 + ridge/2 w^T K w`` divided by K (whose fixed point
    ``W (K w - t) + ridge w = 0`` is :class:`kops.ExactKernelRidge`'s weighted system).
    Returns ``||g||^2``.
    """
    kernel = precond.kernel if kernel is None else kernel
    xb = x[b]
    g = kmv(xb, x, weights, kernel)
    g -= targets[b]
    if sample_weight is not None:
        g.mul_(sample_weight[b, None])
    if ridge:
        g += ridge * weights[b]
    corr = precond.correction(xb, g)
    weights.index_add_(0, b, g, alpha=-eta)
    weights.index_add_(0, nystrom_idx, corr, alpha=eta)
    return float(g.square().sum())


def eigenpro2_epoch(x, targets, weights, precond, nystrom_idx, batch_size, eta, generator, *,
                    ridge=0.0, kernel=None, progress=None) -> float:
    """One EigenPro 2 epoch on ``(K(x, x) + ridge I) weights = targets``, in place on ``weights``.

    Each batch B (:func:`eigenpro2_step`)::

        g         = K(x_B, x) w + ridge w_B - t_B        # one fused product, m x c
        w[B]     -= eta g
        w[S]     += eta E D E^T K(x_S, x_B) g             # one fused product, s x c

    Parameters
    ----------
    x : Tensor (n, d)
        Points, which are also the centers.
    targets : Tensor (n, c)
    weights : Tensor (n, c)
        Updated in place.
    precond : NystromPreconditioner
        Built on ``x[nystrom_idx]``.
    nystrom_idx : Tensor (s,), long, on x's device
    batch_size : int
    eta : float
    generator : torch.Generator
        Batch order.

    Returns
    -------
    float
        ``sum_B ||g_B||^2``: the squared residual met during the epoch.
    """
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    done, seen = 0, 0.0
    for b in batches(perm, batch_size):
        seen += eigenpro2_step(x, targets, weights, precond, nystrom_idx, b, eta, ridge=ridge, kernel=kernel)
        done += b.shape[0]
        if progress is not None:
            progress.update(done)
    return seen


def _at(u, rows):
    return u if rows is None else u[rows]


def batch_gradient(xb, yb, pts, wts, p, kernel, *, form=False, budget=0, weight=None):
    """``g = K(X_B, pts) wts - Y_B`` (m x c) and ``u = K(pts[:p], X_B) W g`` (p x c).

    ``weight`` (m,): the batch's loss weights W (a row scaling of g in u; None: W = I). g is
    returned unweighted.
    With ``form`` the kernel block is formed in row tiles of at most ``budget`` bytes and
    used for both products (:func:`reuse_kernel_block`); otherwise two fused products.
    """
    if not form:
        g = kmv(xb, pts, wts, kernel)
        g -= yb
        return g, kmv(pts[:p], xb, g if weight is None else g * weight[:, None], kernel)
    rows = max(1, budget // (pts.shape[0] * pts.element_size()))
    g = torch.empty_like(yb)
    u = torch.zeros(p, yb.shape[1], dtype=yb.dtype, device=yb.device)
    for r0 in range(0, xb.shape[0], rows):
        Kt = kernel_matrix(xb[r0 : r0 + rows], pts, kernel)
        gt = torch.addmm(yb[r0 : r0 + rows], Kt, wts, alpha=1.0, beta=-1.0)
        u.addmm_(Kt[:, :p].T, gt if weight is None else gt * weight[r0 : r0 + rows, None])
        g[r0 : r0 + rows] = gt
    return g, u


def projected_update(alpha, u, corr, projector, eta, c=0.0) -> None:
    """The preconditioned, projected step for a gradient whose values on Z are ``u``, in place.

    ::

        h      = eta (u - values(u))                               # preconditioned, on Z
        with a ridge, c = eta m r / n (m the points behind u):
            alpha = (1 - c) alpha;   h -= c values(f(Z))            # preconditioned r f
        alpha -= K(Z, Z)^{-1} h                                    # the projection
    """
    h = u.sub_(corr.correct(_at(u, corr.rows))[1]).mul_(eta)
    if c:
        h.sub_(corr.correct(projector.rows(corr.rows, alpha))[1], alpha=c)
        alpha.mul_(1.0 - c)
    alpha.sub_(projector.solve(h))


def projected_step(Z, alpha, corr, projector, xb, yb, eta, *, ridge=0.0, n=1, kernel=None, form=False, budget=0,
                   weight=None):
    """One EigenPro 3 step on the batch ``(xb, yb)``, in place on ``alpha`` (p x c).

    ``corr`` is the preconditioner seen from the centers
    (:mod:`kops.solvers.center_preconditioner`): ``corr.correct(u[rows])`` gives the
    correction's coefficients (on ``corr.rows``) and its values on Z. ::

        g = K(X_B, Z) alpha - Y_B;   u = K(Z, X_B) W_B g           # m x c, p x c
        projected_update(alpha, u, eta, c = eta m r / n)

    ``weight`` (m,): the batch's normalised loss weights W_B (:mod:`kops.solvers.loss_weights`;
    None: unweighted). Returns ``||g||^2``.
    """
    g, u = batch_gradient(xb, yb, Z, alpha, Z.shape[0], kernel, form=form, budget=budget, weight=weight)
    projected_update(alpha, u, corr, projector, eta, eta * xb.shape[0] * ridge / n if ridge else 0.0)
    return float(g.square().sum())


class FullGradientDescent:
    """Preconditioned, projected descent on the full gradient with an exact line search.

    For ``L(alpha) = 1/2 ||K(X, Z) alpha - Y||_W^2 + r/2 alpha^T K(Z, Z) alpha`` (W the loss
    weights, I without; ``<a, b>_W = sum_i w_i a_i b_i``) the gradient is
    ``u = K(Z, X) W (K(X, Z) alpha - Y) + r K(Z, Z) alpha`` (the functional gradient's values on
    Z) and the direction ``d = K(Z, Z)^{-1} (u - values(u))`` (preconditioned, projected; a
    descent direction). Each :meth:`epoch` is ONE pass over the data, in chunks, with the
    weights ``[alpha, d]`` (2c columns) for the previous direction d::

        g = K(X, Z) alpha - Y,  q = K(X, Z) d,  A = K(Z, X) W [g, q]     # one pass, p x 2c
        s = (<g, q>_W + r d^T K_ZZ alpha) / (<q, q>_W + r d^T K_ZZ d)     # exact line search
        alpha -= s d;  u = A_g - s A_q + r K_ZZ alpha                     # by linearity
        d = K_ZZ^{-1} (u - values(u));  alpha -= t d                       # t: the last step

    so every epoch ends with the new direction applied with the previous direction's optimal
    step (the next pass corrects it exactly). On a quadratic, the error falls by at least
    ``(kappa - 1) / (kappa + 1)`` per epoch for the preconditioned condition number kappa.

    Parameters
    ----------
    Z : Tensor (p, d)
    c : int
    corr : SampleCorrection or SpanPreconditioner
    projector : CenterProjector or CholeskyProjector
        Provides ``solve`` (``K(Z, Z)^{-1}``) and ``matmul`` (``K(Z, Z) @``).
    step : float
        The first direction's step (:func:`kops.solvers.stepsize.full_gradient_step_size`).
    ridge : float
    kernel : kops.Kernel
    chunk : int
        Rows per chunk of the pass.
    form, budget
        As in :func:`batch_gradient`.
    sample_weight : Tensor (n,), optional
        The normalised loss weights of the rows of X (:mod:`kops.solvers.loss_weights`).
    """

    def __init__(self, Z, c, corr, projector, *, step, ridge, kernel, chunk, form=False, budget=0,
                 sample_weight=None):
        p = Z.shape[0]
        self.Z, self.corr, self.projector, self.kernel = Z, corr, projector, kernel
        self.sample_weight = sample_weight
        self.ridge, self.chunk, self.form, self.budget = ridge, chunk, form, budget
        self.alpha = torch.zeros(p, c, dtype=Z.dtype, device=Z.device)
        self.d = None
        self.step = step
        self.steps_ = []

    # The reductions over the centers, separate so that a sharded model (rows of Z, alpha, d
    # on each process) can sum them over its processes (kops.distributed).
    def _gradient(self, xb, yb, V, weight=None):
        """``R = K(X_B, Z) V - Y_B`` (m x k) and ``K(Z, X_B) W R`` (p x k) for one chunk (W: the
        chunk's loss weights ``weight``, I when None)."""
        return batch_gradient(xb, yb, self.Z, V, self.Z.shape[0], self.kernel, form=self.form, budget=self.budget,
                              weight=weight)

    def _dot(self, a, b) -> float:
        """``sum(a * b)`` over the centers' rows (p x c each)."""
        return float((a * b).sum())

    def _pass(self, X, Y, V, progress):
        """``A = K(Z, X) W [K(X, Z) V - [Y, 0]]`` and the (weighted) Gram entries of the residuals."""
        n, c, p = X.shape[0], Y.shape[1], self.Z.shape[0]
        A = torch.zeros(p, V.shape[1], dtype=V.dtype, device=V.device)
        gram = torch.zeros(V.shape[1] // c, V.shape[1] // c, dtype=torch.float64, device=V.device)
        pad = V.shape[1] - c
        for r0 in range(0, n, self.chunk):
            yb = Y[r0 : r0 + self.chunk]
            if pad:
                yb = torch.cat([yb, torch.zeros(yb.shape[0], pad, dtype=yb.dtype, device=yb.device)], 1)
            w = None if self.sample_weight is None else self.sample_weight[r0 : r0 + self.chunk]
            xb = X[r0 : r0 + self.chunk]
            # the sharded subclasses' _gradient takes no weights (their solvers refuse them)
            R, Ab = self._gradient(xb, yb, V) if w is None else self._gradient(xb, yb, V, weight=w)
            A += Ab
            blocks = R.to(torch.float64).reshape(R.shape[0], -1, c)
            weighted = blocks if w is None else blocks * w.to(torch.float64)[:, None, None]
            gram += torch.einsum("nic,njc->ij", weighted, blocks)
            if progress is not None:
                progress.update(min(n, r0 + self.chunk))
        return A, gram

    def epoch(self, X, Y, progress=None) -> float:
        """One pass and one step (class docstring). Returns ``||K(X, Z) alpha - Y||_W^2`` at
        the line-search point."""
        c, r, alpha = Y.shape[1], self.ridge, self.alpha
        d = self.d
        V = alpha if d is None else torch.cat([alpha, d], 1)
        A, gram = self._pass(X, Y, V, progress)
        KV = self.projector.matmul(V) if r else None
        if d is None:
            u = A
            seen = float(gram[0, 0])
            if r:
                u = u + r * KV
        else:
            Ka, Kd = (KV[:, :c], KV[:, c:]) if r else (0.0, 0.0)
            num = float(gram[0, 1]) + (r * self._dot(d, Ka) if r else 0.0)
            den = float(gram[1, 1]) + (r * self._dot(d, Kd) if r else 0.0)
            s = num / den if den > 0 else 0.0
            alpha.sub_(d, alpha=s)
            seen = float(gram[0, 0]) - 2 * s * float(gram[0, 1]) + s * s * float(gram[1, 1])
            u = A[:, :c] - s * A[:, c:]
            if r:
                u += r * (Ka - s * Kd)
            total = self.step + s  # the previous direction's optimal step
            if total > 0:
                self.step = total
            self.steps_.append(total)
        h = u - self.corr.correct(_at(u, self.corr.rows))[1]
        self.d = self.projector.solve(h)
        alpha.sub_(self.d, alpha=self.step)
        return seen

    def state_dict(self) -> dict:
        """The iteration state: ``alpha``, the last direction ``d`` and the step (checkpoints)."""
        state = {"alpha": self.alpha.detach().cpu().clone(), "step": self.step, "steps": list(self.steps_)}
        if self.d is not None:
            state["d"] = self.d.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output in place (shapes are checked)."""
        for name in ("alpha", "d"):
            src = state.get(name)
            if name == "d" and src is None:
                continue
            if src is None or tuple(src.shape) != tuple(self.alpha.shape):
                raise ValueError(f"saved full-gradient state {name!r} has shape "
                                 f"{None if src is None else tuple(src.shape)}, expected {tuple(self.alpha.shape)}")
        self.alpha.copy_(state["alpha"])
        self.d = state["d"].to(self.alpha.device) if state.get("d") is not None else None
        self.step, self.steps_ = float(state["step"]), list(state["steps"])


class DelayedProjection:
    """EigenPro 4's state: the model on the centers plus a pending part, projected every T batches.

    The model is ``f = K(., Z) (alpha + a_c) + K(., Z_tmp) a_tmp``: ONE preallocated buffer of
    points ``[Z; Z_tmp]`` (p + T m rows) and one of weights ``[alpha; a_tmp]``; the pending
    rows sit last, so the live model is a prefix of the buffers and nothing is concatenated
    per step. ``a_c`` holds the preconditioner's pending corrections (on ``corr.rows``; the
    Nystrom points for EigenPro's sample preconditioner); it is kept inside the weight
    buffer, so the prediction is one product, and taken out again at the projection.
    ``h`` (p x c) caches the pending part's values on Z ("cached predictions"), so the
    projection never evaluates the pending model. One step on a batch B of m points::

        g   = K(X_B, [Z; Z_tmp]) [alpha + a_c; a_tmp] - Y_B  # formed block, or fused
        u   = K(Z, X_B) W_B g                                # the same block, transposed
        coef, values = corr.correct(u[rows])
        h  -= eta (u - values);  a_c += eta coef;  append X_B to Z_tmp with weights -eta W_B g
        with a ridge (c = eta m r / n): every weight and h scale by (1 - c), and the
        preconditioned pull of f(Z[rows]) = K(Z[rows], Z) alpha + h[rows] is added likewise

    and :meth:`project` (every T batches and at the end of each epoch)::

        alpha += w ~ K(Z, Z)^{-1} h;   clear Z_tmp, a_tmp, a_c, h

    Parameters
    ----------
    Z : Tensor (p, d)
    c : int
        Outputs.
    corr : SampleCorrection or SpanPreconditioner
    projector : CenterProjector or CholeskyProjector
    interval : int
        T, batches between projections.
    batch_size : int
        m (the pending buffer holds T m rows).
    eta : float
    ridge : float
    n : int
        Training points (the ridge's weight per batch is m / n).
    kernel : kops.Kernel
    budget : int
        Bytes for one formed kernel tile.
    form : bool
        Form the kernel block once per batch (see :func:`reuse_kernel_block`).
    """

    def __init__(self, Z, c, corr, projector, *, interval, batch_size, eta, ridge=0.0, n=1, kernel,
                 budget, form):
        p, d = Z.shape
        self.p, self.corr, self.projector, self.kernel = p, corr, projector, kernel
        self.T, self.eta, self.ridge, self.n = interval, eta, ridge, n
        self.budget, self.form = budget, form
        cap = p + interval * batch_size
        self.pts = torch.empty(cap, d, dtype=Z.dtype, device=Z.device)
        self.pts[:p] = Z
        self.wts = torch.zeros(cap, c, dtype=Z.dtype, device=Z.device)
        self.alpha = self.wts[:p]
        self.h = torch.zeros(p, c, dtype=Z.dtype, device=Z.device)
        rows = corr.rows
        k = p if rows is None else rows.shape[0]
        self.a_c = torch.zeros(k, c, dtype=Z.dtype, device=Z.device)
        self.f_rows = torch.zeros(k, c, dtype=Z.dtype, device=Z.device) if ridge else None  # K(Z[rows], Z) alpha
        self.end, self.pending, self.n_projections = p, 0, 0

    def _gradient(self, xb, yb, weight=None):
        """``g = f(X_B) - Y_B`` and ``u = K(Z, X_B) W_B g`` (formed tiles or two fused products)."""
        end = self.end
        return batch_gradient(xb, yb, self.pts[:end], self.wts[:end], self.p, self.kernel, form=self.form,
                              budget=self.budget, weight=weight)

    def _add_coef(self, coef):
        if self.corr.rows is None:
            self.alpha.add_(coef)
        else:
            self.alpha.index_add_(0, self.corr.rows, coef)
        self.a_c += coef

    def step(self, xb, yb, weight=None) -> float:
        """One batch; projects when T batches are pending. ``weight`` (m,): the batch's
        normalised loss weights W_B (None: unweighted). Returns ``||g||^2``."""
        eta, mb, rows = self.eta, xb.shape[0], self.corr.rows
        g, u = self._gradient(xb, yb, weight)
        coef, values = self.corr.correct(_at(u, rows))
        coef.mul_(eta)
        if self.ridge:
            c = eta * mb * self.ridge / self.n
            pull_coef, pull_values = self.corr.correct(self.f_rows + _at(self.h, rows))  # f before the step
            self.wts[: self.end].mul_(1.0 - c)  # alpha (a_c included) and a_tmp
            self.a_c.mul_(1.0 - c)
            self.h.mul_(1.0 - c)
            self.f_rows.mul_(1.0 - c)
            coef.add_(pull_coef, alpha=c)
            values.add_(pull_values, alpha=c / eta)
        self.h.sub_(u.sub_(values), alpha=eta)
        end = self.end
        residual = float(g.square().sum())
        if weight is not None:
            g.mul_(weight[:, None])
        part = self._own_part(mb)
        k = part.stop - part.start
        self.pts[end : end + k] = xb[part]
        self.wts[end : end + k] = g[part] * (-eta)
        self.end, self.pending = end + k, self.pending + 1
        self._add_coef(coef)
        if self.pending == self.T:
            self.project()
        return residual

    # Hooks of a sharded state (kops.distributed.steps.ShardedDelayedProjection): which rows
    # of a batch its pending buffer keeps, and f on the correction's rows.
    def _own_part(self, mb: int) -> slice:
        """The rows of a batch of ``mb`` points this state appends to its pending buffer."""
        return slice(0, mb)

    def _f_rows(self):
        """``K(Z[rows], Z) alpha`` (after a projection, with a ridge)."""
        return self.projector.rows(self.corr.rows, self.alpha)

    def project(self) -> None:
        """Move the pending part onto the centers: ``alpha += K(Z, Z)^{-1} h``; clear it."""
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
            self.f_rows.copy_(self._f_rows())

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The iteration state (tensors cloned to the CPU, counters as ints): the live
        prefix of the point and weight buffers, the cached predictions ``h``, the pending
        corrections ``a_c`` and, with a ridge, ``f_rows``. The centers and the
        preconditioner are not part of it (they are fixed during the fit)."""
        end = self.end
        state = {"pending_points": self.pts[self.p : end], "weights": self.wts[:end], "h": self.h, "a_c": self.a_c}
        if self.f_rows is not None:
            state["f_rows"] = self.f_rows
        state = {k: v.detach().cpu().clone() for k, v in state.items()}
        state.update(end=end, pending=self.pending, n_projections=self.n_projections)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output in place (shapes are checked)."""
        end = int(state["end"])
        if not self.p <= end <= self.pts.shape[0]:
            raise ValueError(f"the saved pending buffer ends at row {end}, outside this solver's buffer "
                             f"(rows {self.p} to {self.pts.shape[0]})")
        targets = {"pending_points": self.pts[self.p : end], "weights": self.wts[:end], "h": self.h, "a_c": self.a_c}
        if self.f_rows is not None:
            targets["f_rows"] = self.f_rows
        for name, dst in targets.items():
            src = state.get(name)
            if src is None or tuple(src.shape) != tuple(dst.shape):
                got = None if src is None else tuple(src.shape)
                raise ValueError(f"saved EigenPro 4 state {name!r} has shape {got}, expected {tuple(dst.shape)}")
            dst.copy_(src)
        self.wts[end:].zero_()
        self.end, self.pending, self.n_projections = end, int(state["pending"]), int(state["n_projections"])
