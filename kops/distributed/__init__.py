"""EigenPro and the kernel product with the model sharded over ``torch.distributed``.

The same program runs on 2 CPU processes (Gloo), the GPUs of a node or many nodes (NCCL),
launched by ``torchrun``::

    # torchrun --nproc-per-node 2 train.py
    import kops.distributed as kd
    model = kd.EigenPro4("laplacian", 10.0, centers=1000, random_state=0)  # the default group
    model.fit(X, y)                   # every rank passes the same X, y
    # or each rank its own contiguous rows, in rank order (batches assembled by all-gathers):
    # kd.EigenPro4(..., data_sharding="rows").fit(X[lo:hi], y[lo:hi])
    pred = model.predict(X_test)      # a collective: every rank gets all predictions
    single = model.gathered()         # a kops.EigenPro4 with all centers and weights

* :class:`ShardedKernelProduct`: ``K(X_B, Z) alpha`` as a local fused product plus an
  all-reduce of m x c floats, ``K(Z_r, X_B) g`` local (:mod:`kops.distributed.product`).
* :class:`EigenPro2`, :class:`EigenPro3`, :class:`EigenPro4`: the solvers with their model
  sharded by rows; ``process_group`` is a ProcessGroup, or None for the default group
  (initialised from torchrun's environment when needed). Results equal the single-process
  fit with the same ``random_state`` to rounding (:mod:`kops.distributed.estimators`).
* :class:`~kops.distributed.data.ShardedRows`: training rows partitioned over the ranks
  (``data_sharding="rows"``), indexed by global rows through an all-gather
  (:mod:`kops.distributed.data`).
* :func:`launch`: run a function on N local processes in one Gloo group (tests, benchmarks).
* :class:`DistributedError`: a collective failed (a rank died or timed out).

Nothing else in kops imports this package.
"""
from .estimators import EigenPro2, EigenPro3, EigenPro4, sharded_estimator
from .group import DistributedError, Shard, init_from_env, launched_by_torchrun, resolve_group
from .launch import LaunchError, launch
from .product import ShardedKernelProduct

__all__ = [
    "EigenPro2",
    "EigenPro3",
    "EigenPro4",
    "sharded_estimator",
    "ShardedKernelProduct",
    "Shard",
    "DistributedError",
    "init_from_env",
    "launched_by_torchrun",
    "resolve_group",
    "launch",
    "LaunchError",
]
