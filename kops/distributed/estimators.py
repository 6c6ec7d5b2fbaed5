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

Not sharded by default: the training data (every rank holds X and y), the set-up's
temporaries (each rank computes them once, as a single process would), the Nystrom sample
and its eigenvectors (s x q), and the float64 Cholesky factor of the span preconditioner
(small p).

Sharded data (``data_sharding="rows"``): each rank passes its own contiguous part of the
training set to ``fit`` (rank 0 the first rows, then rank 1's, ...; any sizes, at least 2
rows each; the same features, ``dtype`` and target columns on every rank, ValueError naming
the argument on every rank otherwise). The global n and the row offsets come from one
all-gather of the part sizes; every random draw is the global one, and the rows a draw
picks (the bandwidth sample, the metrics subset, the centers, the Nystrom sample, the
probe batch, each batch X_B, Y_B) are assembled on every rank by an all-gather of the rows
each rank owns (:mod:`kops.distributed.data`): per batch of m points about m x (d + c)
floats more than the replicated fit, and the fit equals the single-process fit on the
concatenated data. EigenPro 2's centers are its training points: its model shard is the
data shard (rank r holds the weights of its own rows, so its centers are not gathered).
Full-gradient epochs pass over the data in steps that take about m / P rows of every
rank's part (all of X and Y move through all-gathers once per epoch). Not supported with
sharded data: ``sample_weight``, checkpoints (NotImplementedError naming the option), and
prediction on each rank's own rows (``predict`` / ``score`` take the same X on every rank;
different X is a ValueError on every rank).
"""
from __future__ import annotations

import inspect
import numbers

import numpy as np
import torch
import torch.distributed as dist

from .. import solvers
from ..config import get_memory_budget
from ..ops import kmv
from ..solvers._sampling import batches, make_generator
from ..solvers._validation import check_epochs, check_ridge, check_y, is_classification_target, kernel_of
from ..solvers.base import median_bandwidth
from ..solvers.eigenpro4 import projection_interval
from ..solvers.iterations import reuse_kernel_block
from ..solvers.iterations import FullGradientDescent
from ..solvers.sklearn_compat import validate_fit_input
from .checkpoint import GatheredState, ShardedCheckpointer
from .data import DATA_SHARDING, ShardedRows, take_rows
from .group import (Shard, all_gather_objects, all_gather_rows, all_reduce, broadcast, rank_of, resolve_group,
                    world_size_of)
from .preconditioning import ShardedCorrection, ShardedProjector
from .product import ShardedKernelProduct
from .steps import (ShardedDelayedProjection, ShardedFullGradientDescent, sharded_eigenpro2_epoch,
                    sharded_projected_step)

__all__ = ["EigenPro2", "EigenPro3", "EigenPro4", "sharded_estimator"]

#: fitted attributes of the sharded estimators only (not copied by ``gathered``)
_SHARDED_ATTRS = ("process_group_", "rank_", "world_size_", "shard_", "product_", "all_centers_", "projector_")
#: the sharded estimators' own parameters (not the single-process class's)
_SHARDED_PARAMS = ("process_group", "data_sharding")


class _ShardedModel:
    """The sharded estimators' common part (mixed in before the single-process class)."""

    _single = None  # the single-process estimator class

    def __init__(self, *args, process_group=None, data_sharding="replicated", **params):
        self._single.__init__(self, *args, **params)
        self.process_group = process_group
        self.data_sharding = data_sharding

    # ------------------------------------------------------------------ set-up
    def _rows_sharded(self) -> bool:
        if self.data_sharding not in DATA_SHARDING:
            raise ValueError(f"data_sharding must be one of {', '.join(map(repr, DATA_SHARDING))}, got "
                             f"{self.data_sharding!r}")
        return self.data_sharding == "rows"

    def fit(self, X, y, X_val=None, y_val=None, sample_weight=None):
        """Fit the model (a collective: every rank calls it).

        With ``data_sharding="replicated"`` (default) every rank passes the same X (n, d) and
        y; with ``"rows"`` each rank passes its own contiguous part (n_r, d) of the training
        set in rank order (the module docstring). Other parameters as in the single-process
        ``fit``; ``X_val``, ``y_val`` are the same on every rank.
        """
        if self._rows_sharded():
            if sample_weight is not None:
                raise NotImplementedError("sample_weight is not supported with data_sharding='rows'; pass "
                                          "data_sharding='replicated' (every rank holds all the data)")
            if getattr(self, "_checkpointer", None) is not None:
                raise NotImplementedError("checkpoints are not supported with data_sharding='rows' (they identify "
                                          "the fit by a digest of all the data); pass data_sharding='replicated' or "
                                          "fit without checkpoints")
            group = self.process_group_ = resolve_group(self.process_group)
            self.world_size_ = world_size_of(group)
            X, y, _ = self._agreed(lambda: validate_fit_input(self, X, y, None), "X, y")
        try:
            return super().fit(X, y, X_val, y_val, sample_weight)
        finally:
            self.__dict__.pop("_train_rows", None)

    def _setup(self, X_raw):
        group = self.process_group_ = resolve_group(self.process_group)
        self.rank_, self.world_size_ = rank_of(group), world_size_of(group)
        saved = self.random_state, self.device, self.bandwidth
        median = self.bandwidth is None and isinstance(self.kernel, str)
        try:  # every rank runs the same set-up: rank 0's seed, this rank's device
            self.random_state = self._shared_seed()
            if self.device is None and dist.get_backend(group) == "nccl":
                self.device = torch.device("cuda", torch.cuda.current_device())
            elif self.device is None:
                self.device = "cpu"
            if not self._rows_sharded():
                return super()._setup(X_raw)
            if median:  # measured below on rows of all the data, not this rank's part
                self.bandwidth = 1.0
            X = self._train_rows = ShardedRows(self._agreed(lambda: super(_ShardedModel, self)._setup(X_raw), "X"),
                                               group, "X")
            if median:
                self.kernel_ = kernel_of(self.kernel, median_bandwidth(X, self.generator_))
            return X
        finally:
            self.random_state, self.device, self.bandwidth = saved

    def _agreed(self, check, name):
        """``check()``'s result; when it raises ValueError or TypeError on any rank, every rank
        raises (the first failing rank's message), so a bad part does not leave the others
        waiting in the next collective."""
        try:
            result, message = check(), None
        except (ValueError, TypeError) as err:
            result, message = None, f"{type(err).__name__}: {err}"
        failed = [(r, m) for r, m in enumerate(all_gather_objects(message, self.process_group_)) if m is not None]
        if failed:
            rank, first = failed[0]
            raise ValueError(f"{name} on rank {rank} of {self.world_size_} (data_sharding='rows'): {first}")
        return result

    def _targets(self, y, n):
        """The targets: with sharded rows, this rank's part (n_r, c) as ShardedRows with X's
        partition, one-vs-all over the classes of ALL the ranks' labels."""
        if not self._rows_sharded():
            return super()._targets(y, n)
        rows = self._train_rows
        task = getattr(self, "task", "auto")

        def encode():
            t = check_y(y, "y", rows.local.shape[0])
            return t, (task == "classification" or (task == "auto" and is_classification_target(t)))

        t, classify = self._agreed(encode, "y")
        if classify:  # every rank's labels: a part may miss a class
            labels = t.numpy() if isinstance(t, torch.Tensor) else t
            classes = np.unique(np.concatenate(all_gather_objects(np.unique(labels), self.process_group_)))
            t = np.concatenate([classes, labels])  # encoded with every class, then the prefix dropped
        Y = self._agreed(lambda: super(_ShardedModel, self)._targets(t, t.shape[0]), "y")
        Y = Y[len(classes):] if classify else Y
        return ShardedRows(Y.contiguous(), self.process_group_, "y")

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
        """Every rank must pass the same X and y: compare shapes and sums with rank 0's
        (nothing to compare when each rank passes its part: ``data_sharding="rows"``)."""
        if isinstance(X, ShardedRows):
            return
        differs = self._ranks_differing(X, Y)
        if differs:
            raise ValueError(f"X and y must be the same on every rank: {differs} of {self.world_size_} ranks "
                             "passed data that differs from rank 0's (shape or values); to pass each rank's own "
                             "rows, use data_sharding='rows'")

    def _ranks_differing(self, X, Y=None) -> int:
        """How many ranks hold another X (and Y) than rank 0: shapes and sums compared
        (one broadcast and one all-reduce of a few numbers)."""
        X64 = X.to(torch.float64)
        values = [X.shape[0], X.shape[1], float(X64.sum()), float(X64.square().sum())]
        if Y is not None:
            values += [Y.shape[1], float(Y.to(torch.float64).sum())]
        mine = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        first = broadcast(mine.clone(), self.process_group_)
        flag = torch.tensor([float(not torch.equal(mine, first))], dtype=torch.float64, device=mine.device)
        return int(all_reduce(flag, self.process_group_))

    def _agree(self, *values):
        """Rank 0's values of the scalars that decide the control flow (one broadcast)."""
        t = broadcast(torch.tensor(values, dtype=torch.float64, device=self.device_), self.process_group_)
        return [type(v)(x) for v, x in zip(values, t.tolist())]

    def _shard_model(self, Z, name):
        """Shard the centers Z (p x d) by rows; ``centers_`` becomes this rank's rows. Centers
        that are sharded training rows (EigenPro 2, ``data_sharding="rows"``) keep the data's
        partition: each rank's centers are its own rows (``all_centers_`` is None then)."""
        if isinstance(Z, ShardedRows):
            shard = self.shard_ = Z.shard
            self.all_centers_ = None
            self.centers_ = Z.local
        else:
            shard = self.shard_ = Shard(Z.shape[0], self.rank_, self.world_size_, name)
            self.all_centers_ = Z
            self.centers_ = Z[shard.slice]
        self.product_ = ShardedKernelProduct(self.centers_, self.kernel_, shard, self.process_group_)
        return shard

    def _all_centers(self):
        """All the centers (p, d): replicated, or gathered from the ranks' rows (a collective)."""
        if self.all_centers_ is not None:
            return self.all_centers_
        return all_gather_rows(self.centers_, self.shard_, self.process_group_)

    def _same_points(self, Z, X) -> bool:
        """Whether the centers Z (p, d) are the training points X (the same answer on every rank)."""
        if not isinstance(X, ShardedRows):
            return Z.shape == X.shape and torch.equal(Z, X)
        same = tuple(Z.shape) == tuple(X.shape) and torch.equal(Z[X.shard.slice], X.local)
        flag = torch.tensor([float(not same)], dtype=torch.float64, device=self._comm_device())
        return float(all_reduce(flag, self.process_group_)) == 0

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
            self.centers_ = self._all_centers()
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
        """``K(X, Z) alpha`` on every rank (a collective): X must be the same on every rank,
        also when the training data were sharded (ValueError on every rank otherwise)."""
        differs = self._ranks_differing(X)
        if differs:
            raise ValueError(f"X must be the same on every rank for predict, decision_function and score (they are "
                             f"collectives over the sharded model): {differs} of {self.world_size_} ranks passed "
                             "another X than rank 0's; with data_sharding='rows' only fit takes each rank's part")
        return self.product_(X, self.weights_)

    def _ridge_term(self) -> float:
        ridge = getattr(self, "_ridge", 0.0)
        if not ridge:
            return 0.0
        a = self.weights_
        full = all_gather_rows(a, self.shard_, self.process_group_)
        local = (a * kmv(self.centers_, self._all_centers(), full, self.kernel_)).sum().to(torch.float64)
        return 0.5 * ridge / self._n * float(all_reduce(local.reshape(1), self.process_group_))

    def gathered(self):
        """The equivalent single-process estimator (all centers and weights; a collective).

        Returns
        -------
        An instance of the single-process class (e.g. :class:`kops.EigenPro4`) with the same
        parameters and fitted attributes, ``centers_`` (p, d) and ``weights_`` (p, c).
        """
        self._check_fitted()
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in _SHARDED_PARAMS}
        single = self._single(**params)
        for key, value in vars(self).items():
            if key not in _SHARDED_ATTRS and key not in params and key not in _SHARDED_PARAMS:
                setattr(single, key, value)
        single.centers_ = self._all_centers()
        single.weights_ = all_gather_rows(self.weights_, self.shard_, self.process_group_)
        return single


def _signature_with_group(cls):
    """``cls.__init__``'s signature: the single-process one plus ``process_group`` and
    ``data_sharding`` (what get_params / clone read)."""
    base = inspect.signature(cls._single.__init__)
    group = inspect.Parameter("process_group", inspect.Parameter.KEYWORD_ONLY, default=None)
    data = inspect.Parameter("data_sharding", inspect.Parameter.KEYWORD_ONLY, default="replicated")

    def __init__(self, *args, process_group=None, data_sharding="replicated", **params):
        _ShardedModel.__init__(self, *args, process_group=process_group, data_sharding=data_sharding, **params)

    __init__.__signature__ = base.replace(parameters=list(base.parameters.values()) + [group, data])
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
        self._refuse_row_weights()  # sample weights other than ones: ValueError on every rank
        ridge = check_ridge(self.ridge)
        self._check_same_data(X, Y)
        idx, P, m, eta = self._setup_eigenpro2(X, Y, ridge)
        m, eta = self._agree(m, eta)
        n, c = X.shape[0], Y.shape[1]
        warm = self._warm_start_weights(X, Y)
        if warm is not None and not self._same_points(warm[0], X):
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
        self._refuse_row_weights()  # sample weights other than ones: ValueError on every rank
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
                sharded_projected_step(product, alpha, scorr, sproj, *take_rows(b, X, Y), eta, ridge=ridge, n=n)
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
        self._refuse_row_weights()  # sample weights other than ones: ValueError on every rank
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
                state.step(*take_rows(b, X, Y))
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
