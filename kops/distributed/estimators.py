"""EigenPro 2 / 3 / 4 estimators whose model is sharded by rows over a process group.

``kops.distributed.EigenPro4(..., process_group=None)`` takes every parameter of
:class:`kops.EigenPro4` and a process group (None: the default group, initialised from
torchrun's environment when it is not yet). Every rank calls ``fit(X, y)`` with the same
data; then:

* the set-up (centers, Nystrom sample, preconditioner, batch size, step size) is computed
  by every rank from the same seed (rank 0's ``random_state``, or a seed rank 0 draws), so
  it is the single-process set-up; the scalars the control flow depends on (batch size,
  step size, T) are broadcast from rank 0 so every rank runs the same collectives;
* the centers, weights, cached predictions and the preconditioner's p-row tensors are
  sharded by rows (:class:`~kops.distributed.group.Shard`), EigenPro 4's pending buffer by
  batch parts; each batch is read by every rank and its kernel work divided
  (:mod:`kops.distributed.steps`);
* metrics, the divergence check and prediction use the sharded product (all-reduced, so
  every rank sees the same numbers and takes the same decisions).

The fitted model equals the single-process fit with the same ``random_state`` up to the
rounding of a different summation order. ``centers_`` and ``weights_`` hold this rank's
rows (``shard_`` says which); ``predict`` / ``score`` / ``decision_function`` are
collectives (every rank calls them with the same X) and return the full result on every
rank; :meth:`gathered` returns the equivalent single-process estimator (for saving).

Not sharded: the training data (every rank holds X and y), the set-up's temporaries (each
rank computes them once, as a single process would), the Nystrom sample and its
eigenvectors (s x q), and the float64 Cholesky factor of the span preconditioner (small p).
"""
from __future__ import annotations

import inspect
import numbers

import torch
import torch.distributed as dist

from .. import solvers
from ..config import get_memory_budget
from ..ops import kmv
from ..solvers._sampling import batches, make_generator
from ..solvers._validation import check_epochs, check_ridge
from ..solvers.eigenpro4 import projection_interval
from ..solvers.iterations import reuse_kernel_block
from ..solvers.iterations import FullGradientDescent
from .checkpoint import GatheredState, ShardedCheckpointer
from .group import Shard, all_gather_rows, all_reduce, broadcast, rank_of, resolve_group, world_size_of
from .preconditioning import ShardedCorrection, ShardedProjector
from .product import ShardedKernelProduct
from .steps import (ShardedDelayedProjection, ShardedFullGradientDescent, sharded_eigenpro2_epoch,
                    sharded_projected_step)

__all__ = ["EigenPro2", "EigenPro3", "EigenPro4", "sharded_estimator"]

#: fitted attributes of the sharded estimators only (not copied by ``gathered``)
_SHARDED_ATTRS = ("process_group_", "rank_", "world_size_", "shard_", "product_", "all_centers_", "projector_")


class _ShardedModel:
    """The sharded estimators' common part (mixed in before the single-process class)."""

    _single = None  # the single-process estimator class

    def __init__(self, *args, process_group=None, **params):
        self._single.__init__(self, *args, **params)
        self.process_group = process_group

    # ------------------------------------------------------------------ set-up
    def _setup(self, X_raw):
        group = self.process_group_ = resolve_group(self.process_group)
        self.rank_, self.world_size_ = rank_of(group), world_size_of(group)
        saved = self.random_state, self.device
        try:  # every rank runs the same set-up: rank 0's seed, this rank's device
            self.random_state = self._shared_seed()
            if self.device is None and dist.get_backend(group) == "nccl":
                self.device = torch.device("cuda", torch.cuda.current_device())
            elif self.device is None:
                self.device = "cpu"
            return super()._setup(X_raw)
        finally:
            self.random_state, self.device = saved

    def _shared_seed(self) -> int:
        given = self.random_state
        if isinstance(given, numbers.Integral) and not isinstance(given, bool):
            seed = torch.tensor([int(given)])  # the single-process fit's seed
        else:
            seed = torch.randint(0, 2**62, (1,), generator=make_generator(given))
        return int(broadcast(seed.to(self._comm_device()), self.process_group_).item())

    def _comm_device(self):
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(self.process_group_) == "nccl" \
            else torch.device("cpu")

    def _check_same_data(self, X, Y):
        """Every rank must pass the same X and y: compare shapes and sums with rank 0's."""
        mine = torch.tensor([X.shape[0], X.shape[1], Y.shape[1], float(X.to(torch.float64).sum()),
                             float(X.to(torch.float64).square().sum()), float(Y.to(torch.float64).sum())],
                            dtype=torch.float64, device=X.device)
        first = broadcast(mine.clone(), self.process_group_)
        differs = all_reduce(torch.tensor([float(not torch.equal(mine, first))], dtype=torch.float64,
                                          device=X.device), self.process_group_)
        if float(differs) > 0:
            raise ValueError(f"X and y must be the same on every rank: {int(differs)} of {self.world_size_} ranks "
                             "passed data that differs from rank 0's (shape or values)")

    def _agree(self, *values):
        """Rank 0's values of the scalars that decide the control flow (one broadcast)."""
        t = broadcast(torch.tensor(values, dtype=torch.float64, device=self.device_), self.process_group_)
        return [type(v)(x) for v, x in zip(values, t.tolist())]

    def _shard_model(self, Z, name):
        """Shard the centers Z (p x d) by rows; ``centers_`` becomes this rank's rows."""
        shard = self.shard_ = Shard(Z.shape[0], self.rank_, self.world_size_, name)
        self.all_centers_ = Z
        self.centers_ = Z[shard.slice]
        self.product_ = ShardedKernelProduct(self.centers_, self.kernel_, shard, self.process_group_)
        return shard

    def _warm_start_weights(self, X, Y):
        """The previous fit's centers and weights, gathered (a collective), for ``warm_start``;
        each rank then keeps its rows (``Shard.slice``)."""
        if not getattr(self, "warm_start", False) or not hasattr(self, "weights_"):
            return None
        shard = getattr(self, "shard_", None)
        if shard is not None and shard.world_size != self.world_size_:
            raise ValueError(f"warm_start: the previous fit ran on {shard.world_size} processes, this one on "
                             f"{self.world_size_}; gather the model (gathered()) and warm-start that, or pass "
                             "warm_start=False")
        if shard is not None:
            saved = self.centers_, self.weights_
            self.centers_ = self.all_centers_
            self.weights_ = all_gather_rows(self.weights_, shard, self.process_group_)
            try:
                return super()._warm_start_weights(X, Y)
            finally:
                self.centers_, self.weights_ = saved
        return super()._warm_start_weights(X, Y)

    def _run_epochs(self, epochs, n, step=None, batch_size=None, *, run_epoch=None, end_epoch=None, state=None,
                    ridge=0.0):
        """The single-process epoch loop; an attached checkpointer runs as a
        :class:`~kops.distributed.checkpoint.ShardedCheckpointer` on the gathered state."""
        original = getattr(self, "_checkpointer", None)
        if original is None:
            return super()._run_epochs(epochs, n, step, batch_size, run_epoch=run_epoch, end_epoch=end_epoch,
                                       state=state, ridge=ridge)
        per_epoch = 1 if isinstance(state, FullGradientDescent) else -(-n // self.batch_size_)
        self._checkpointer = ShardedCheckpointer(original, self, per_epoch)
        try:
            return super()._run_epochs(epochs, n, step, batch_size, run_epoch=run_epoch, end_epoch=end_epoch,
                                       state=GatheredState(self, state), ridge=ridge)
        finally:
            self._checkpointer.detach()
            self._checkpointer = original

    # ---------------------------------------------------------- sharded products
    def _raw(self, X):
        return self.product_(X, self.weights_)

    def _ridge_term(self) -> float:
        ridge = getattr(self, "_ridge", 0.0)
        if not ridge:
            return 0.0
        a = self.weights_
        full = all_gather_rows(a, self.shard_, self.process_group_)
        local = (a * kmv(self.centers_, self.all_centers_, full, self.kernel_)).sum().to(torch.float64)
        return 0.5 * ridge / self._n * float(all_reduce(local.reshape(1), self.process_group_))

    def gathered(self):
        """The equivalent single-process estimator (all centers and weights; a collective).

        Returns
        -------
        An instance of the single-process class (e.g. :class:`kops.EigenPro4`) with the same
        parameters and fitted attributes, ``centers_`` (p, d) and ``weights_`` (p, c).
        """
        self._check_fitted()
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "process_group"}
        single = self._single(**params)
        for key, value in vars(self).items():
            if key not in _SHARDED_ATTRS and key not in params and key != "process_group":
                setattr(single, key, value)
        single.centers_ = self.all_centers_
        single.weights_ = all_gather_rows(self.weights_, self.shard_, self.process_group_)
        return single


def _signature_with_group(cls):
    """``cls.__init__``'s signature: the single-process one plus ``process_group`` (what
    get_params / clone read)."""
    base = inspect.signature(cls._single.__init__)
    group = inspect.Parameter("process_group", inspect.Parameter.KEYWORD_ONLY, default=None)

    def __init__(self, *args, process_group=None, **params):
        _ShardedModel.__init__(self, *args, process_group=process_group, **params)

    __init__.__signature__ = base.replace(parameters=list(base.parameters.values()) + [group])
    __init__.__doc__ = cls._single.__init__.__doc__
    cls.__init__ = __init__
    return cls


@_signature_with_group
class EigenPro2(_ShardedModel, solvers.EigenPro2):
    """:class:`kops.EigenPro2` with its weights sharded by rows over ``process_group``
    (the module docstring; each batch: one all-reduce of m x c)."""

    _single = solvers.EigenPro2

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        ridge = check_ridge(self.ridge)
        self._check_same_data(X, Y)
        idx, P, m, eta = self._setup_eigenpro2(X, Y, ridge)
        m, eta = self._agree(m, eta)
        n, c = X.shape[0], Y.shape[1]
        warm = self._warm_start_weights(X, Y)
        if warm is not None and not (warm[0].shape == X.shape and torch.equal(warm[0], X)):
            raise ValueError("warm_start: EigenPro2's centers are its training points, so a warm start needs the "
                             "same X as the previous fit")
        shard = self._shard_model(X, "n (training points)")
        self.weights_ = torch.zeros(shard.rows, c, dtype=X.dtype, device=X.device) if warm is None \
            else warm[1][shard.slice].clone()
        gen, group = self.generator_, self.process_group_

        def run_epoch(progress):
            sharded_eigenpro2_epoch(X, Y, self.weights_, shard, P, idx, m, eta, gen, ridge=ridge, group=group,
                                    progress=progress)

        self._run_epochs(epochs, n, run_epoch=run_epoch, ridge=ridge)
        return self


class _ShardedProjected(_ShardedModel):
    def _setup_sharded(self, X, Y, ridge):
        """The single-process set-up (the same on every rank)."""
        self._check_same_data(X, Y)
        return self._setup_projected(X, Y, ridge)

    def _warm_rows(self, shard):
        """This rank's rows of the warm start's weights (None without one)."""
        warm = self._warm_weights
        del self._warm_weights
        return None if warm is None else warm[shard.slice]

    def _fit_full_gradient_sharded(self, X, Y, shard, scorr, sproj, m, eta, ridge, epochs, tile_budget):
        """The full-gradient epochs (large ridges) on the sharded model: one step per epoch."""
        self.block_reuse_ = reuse_kernel_block(m, max(shard.sizes), X.shape[1], X.element_size(), tile_budget,
                                               X.device)
        descent = ShardedFullGradientDescent(self.centers_, Y.shape[1], scorr, sproj, shard, self.process_group_,
                                             step=eta, ridge=ridge, kernel=self.kernel_, chunk=m,
                                             form=self.block_reuse_, budget=tile_budget)
        warm = self._warm_rows(shard)
        if warm is not None:
            descent.alpha.copy_(warm)
        self.weights_ = descent.alpha
        self._run_epochs(epochs, X.shape[0], run_epoch=lambda progress: descent.epoch(X, Y, progress),
                         state=descent, ridge=ridge)
        return self

    def _shard_pieces(self, Z, corr, projector):
        shard = self._shard_model(Z, "centers")
        scorr = ShardedCorrection(corr, shard, self.process_group_)
        self.projector_ = ShardedProjector(projector, Z, scorr, shard, self.process_group_)
        return shard, scorr, self.projector_


@_signature_with_group
class EigenPro3(_ShardedProjected, solvers.EigenPro3):
    """:class:`kops.EigenPro3` with its model sharded by rows over ``process_group``
    (the module docstring)."""

    _single = solvers.EigenPro3

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        ridge = check_ridge(self.ridge)
        Z, corr, projector, m = self._setup_sharded(X, Y, ridge)
        del self._probe
        m, eta = self._agree(m, self.step_size_)
        n, c = X.shape[0], Y.shape[1]
        shard, scorr, sproj = self._shard_pieces(Z, corr, projector)
        del corr, projector  # their p-row tensors (a formed K(Z, Z)) are replicated: keep only the shards
        if self.full_gradient_:  # decided by the replicated set-up: the same on every rank
            return self._fit_full_gradient_sharded(X, Y, shard, scorr, sproj, m, eta, ridge, epochs,
                                                   get_memory_budget(self.device_) // 4)
        gen, product = self.generator_, self.product_
        self.weights_ = alpha = torch.zeros(shard.rows, c, dtype=X.dtype, device=X.device)
        warm = self._warm_rows(shard)
        if warm is not None:
            alpha.copy_(warm)

        def run_epoch(progress):
            perm = torch.randperm(n, generator=gen).to(X.device)
            done = 0
            for b in batches(perm, m):
                sharded_projected_step(product, alpha, scorr, sproj, X[b], Y[b], eta, ridge=ridge, n=n)
                done += b.shape[0]
                progress.update(done)

        self._run_epochs(epochs, n, run_epoch=run_epoch, ridge=ridge)
        return self


@_signature_with_group
class EigenPro4(_ShardedProjected, solvers.EigenPro4):
    """:class:`kops.EigenPro4` with its model and pending buffer sharded over ``process_group``
    (the module docstring; each batch: one all-reduce of m x c and one of q x c)."""

    _single = solvers.EigenPro4

    def _fit(self, X, Y):
        epochs = check_epochs(self.epochs)
        ridge = check_ridge(self.ridge)
        Z, corr, projector, m = self._setup_sharded(X, Y, ridge)
        n, d = X.shape
        p, c = Z.shape[0], Y.shape[1]
        budget = get_memory_budget(self.device_)
        interval = self.projection_interval
        if self.full_gradient_ or (interval is None and self.span_preconditioner_):
            interval = 1  # as the single-process EigenPro 4
        T = projection_interval(p, m, self.projection_coeff, interval,
                                max_rows=budget // 2 // (X.element_size() * (d + c)))
        if T > 1:
            self._delayed_step(ridge, n)
        del self._probe
        m, T, eta = self._agree(m, T, self.step_size_)
        self.projection_interval_ = T
        shard, scorr, sproj = self._shard_pieces(Z, corr, projector)
        del corr, projector  # their p-row tensors (a formed K(Z, Z)) are replicated: keep only the shards
        tile_budget = budget // 4
        if self.full_gradient_:
            self._fit_full_gradient_sharded(X, Y, shard, scorr, sproj, m, eta, ridge, epochs, tile_budget)
            self.n_projections_ = len(self.history_)  # one projection per epoch
            return self
        part = -(-m // self.world_size_)
        self.block_reuse_ = reuse_kernel_block(m, max(shard.sizes) + T * part, d, X.element_size(), tile_budget,
                                               X.device)
        state = ShardedDelayedProjection(self.centers_, c, scorr, sproj, shard, self.process_group_, interval=T,
                                         batch_size=m, eta=eta, ridge=ridge, n=n, kernel=self.kernel_,
                                         budget=tile_budget, form=self.block_reuse_)
        self.weights_ = state.alpha
        warm = self._warm_rows(shard)
        if warm is not None:  # start from the previous fit: as after a projection
            state.alpha.copy_(warm)
            if state.f_rows is not None:
                state.f_rows.copy_(sproj.rows_f(state.alpha))
        gen = self.generator_

        def run_epoch(progress):
            perm = torch.randperm(n, generator=gen).to(X.device)
            done = 0
            for b in batches(perm, m):
                state.step(X[b], Y[b])
                done += b.shape[0]
                progress.update(done)
            state.project()
            self.n_projections_ = state.n_projections

        self.n_projections_ = 0
        self._run_epochs(epochs, n, run_epoch=run_epoch, state=state, ridge=ridge)
        self.n_projections_ = state.n_projections
        return self


_BY_SINGLE = {solvers.EigenPro2: EigenPro2, solvers.EigenPro3: EigenPro3, solvers.EigenPro4: EigenPro4}


def sharded_estimator(cls):
    """The sharded class for a single-process estimator class or its name.

    ``sharded_estimator(kops.EigenPro4)`` (or ``"EigenPro4"``) is
    :class:`kops.distributed.EigenPro4`; other solvers raise ValueError.
    """
    for single, sharded in _BY_SINGLE.items():
        if cls is single or cls is sharded or cls == single.__name__:
            return sharded
    raise ValueError(f"no sharded version of {cls!r}: kops.distributed has EigenPro2, EigenPro3 and EigenPro4")
