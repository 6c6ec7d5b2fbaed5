"""Fits the multi-process tests run on every rank (importable by the spawned processes)."""
import os

import numpy as np
import torch

#: name -> (class name, data (n, d, outputs, dtype), estimator parameters); small enough for seconds
CASES = {
    "ep2": ("EigenPro2", (240, 5, 2, "float64"), dict(kernel="laplacian", bandwidth=2.0, epochs=2, batch_size=50,
                                                      n_nystrom=40, n_components=8)),
    "ep2_ridge_classes": ("EigenPro2", (200, 4, "classes", "float64"),
                          dict(kernel="gaussian", bandwidth=1.5, epochs=2, batch_size=64, n_nystrom=30,
                               n_components=6, ridge=0.5)),
    "ep3_span": ("EigenPro3", (240, 5, 2, "float64"), dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=2,
                                                           batch_size=50, n_nystrom=40, n_components=8)),
    "ep3_sample_ridge": ("EigenPro3", (240, 5, 1, "float64"),
                         dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=2, batch_size=50, n_nystrom=20,
                              n_components=6, ridge=0.3, memory_budget=100_000)),
    "ep4_span": ("EigenPro4", (240, 5, 2, "float64"), dict(kernel="matern52", bandwidth=2.0, centers=61, epochs=2,
                                                           batch_size=40, n_nystrom=40, n_components=8,
                                                           projection_interval=3)),
    "ep4_sample_ridge": ("EigenPro4", (240, 5, 2, "float64"),
                         dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=2, batch_size=40, n_nystrom=20,
                              n_components=6, ridge=0.3, projection_interval=3, memory_budget=60_000)),
    "ep4_formed_float32": ("EigenPro4", (200, 64, "classes", "float32"),
                           dict(kernel="gaussian", bandwidth=8.0, centers=50, epochs=2, batch_size=32,
                                n_nystrom=20, n_components=5)),
    # p above the projection's full-batch limit (lowered to 30 here): each projection step is an
    # EigenPro 2 epoch over the centers in mini-batches
    "ep4_sample_epoch_projection": ("EigenPro4", (240, 5, 1, "float64"),
                                    dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=2, batch_size=40,
                                         n_nystrom=20, n_components=6, projection_interval=2,
                                         memory_budget=20_000)),
    # large ridges: one full-gradient step per epoch with its exact line search (span, sample
    # and formed-block paths)
    "ep3_full_gradient_span": ("EigenPro3", (240, 5, 2, "float64"),
                               dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=3, batch_size=50,
                                    n_nystrom=40, n_components=8, ridge=100.0, full_gradient=True)),
    "ep4_full_gradient_sample": ("EigenPro4", (240, 5, 1, "float64"),
                                 dict(kernel="laplacian", bandwidth=2.0, centers=61, epochs=3, batch_size=40,
                                      n_nystrom=20, n_components=6, ridge=30.0, full_gradient=True,
                                      memory_budget=60_000)),
    "ep4_full_gradient_formed_float32": ("EigenPro4", (200, 64, "classes", "float32"),
                                         dict(kernel="gaussian", bandwidth=8.0, centers=50, epochs=3, batch_size=32,
                                              n_nystrom=20, n_components=5, ridge=10.0, full_gradient=True)),
}
#: cases run with the projection's full-batch limit lowered
SMALL_PROJECTION_BATCH = {"ep4_sample_epoch_projection": 30}


def make_data(n, d, outputs, dtype, seed=0):
    """(X, y, X_test) of a smooth target: regression with ``outputs`` columns, or 3 classes."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + 50, d)).astype(dtype)
    if outputs == "classes":
        y = (np.sin(X[:, 0]) + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    else:
        W = rng.standard_normal((d, outputs))
        y = np.sin(X @ W).astype(dtype)
        y = y[:, 0] if outputs == 1 else y
    return X[:n], y[:n], X[n:]


def fit_case(name, distributed, *, epochs=None, checkpoint=None, resume=False):
    """The fitted estimator of a case and its outputs on the test points; with ``checkpoint``
    (a directory) the fit writes its checkpoints there (and resumes from it with ``resume``),
    with ``epochs`` it runs that many epochs instead of the case's."""
    import kops
    import kops.distributed as kd
    from kops.solvers import projection
    from kops.solvers.checkpoint import checkpointing

    cls_name, data, params = CASES[name]
    X, y, X_test = make_data(*data)
    cls = getattr(kd if distributed else kops, cls_name)
    params = dict(params, **({} if epochs is None else {"epochs": epochs}))
    saved = projection.MAX_BATCH
    projection.MAX_BATCH = SMALL_PROJECTION_BATCH.get(name, saved)
    try:
        model = cls(dtype=data[3], device="cpu", random_state=3, **params)
        if checkpoint is None:
            model.fit(X, y)
        else:
            with checkpointing(model, checkpoint, every=1, resume=resume) as ckpt:
                model.fit(X, y)
            model.resumed_from_ = ckpt.resumed_from
    finally:
        projection.MAX_BATCH = saved
    return model, np.asarray(model.decision_function(X_test))


#: cases whose fits are checkpointed after one epoch and resumed (sharded and across world sizes)
RESUME_CASES = ("ep2", "ep3_span", "ep4_sample_ridge", "ep4_full_gradient_sample")


def resume_cases(folder):
    """On every rank, per case: fit 1 epoch with checkpoints in ``folder/NAME-Pp`` (rank 0 keeps a
    copy of that checkpoint in ``NAME-Pp-epoch1``), resume it for the case's epochs, and resume the
    single-process checkpoint ``folder/NAME-single-Pp`` (written after 1 epoch) for the case's
    epochs too. Returns the test outputs and where each resumed."""
    import shutil

    import torch.distributed as dist

    world = dist.get_world_size()
    out = {}
    for name in RESUME_CASES:
        own = os.path.join(folder, f"{name}-{world}p")
        fit_case(name, True, epochs=1, checkpoint=own)
        if dist.get_rank() == 0:
            shutil.copytree(own, own + "-epoch1")
        dist.barrier()
        resumed, raw = fit_case(name, True, checkpoint=own, resume=True)
        from_single, raw_single = fit_case(name, True, checkpoint=os.path.join(folder, f"{name}-single-{world}p"),
                                           resume=True)
        out[name] = {"resumed": raw, "resumed_at": resumed.resumed_from_.epoch, "from_single": raw_single,
                     "from_single_at": from_single.resumed_from_.epoch}
    return out


#: cases fitted twice for one epoch each with warm_start=True (the second fit continues the first)
WARM_START_CASES = ("ep2", "ep4_sample_ridge")


def warm_start_fit(name, distributed):
    """Test outputs after one plain epoch and after a second, warm-started one."""
    import kops
    import kops.distributed as kd

    cls_name, data, params = CASES[name]
    X, y, X_test = make_data(*data)
    cls = getattr(kd if distributed else kops, cls_name)
    model = cls(dtype=data[3], device="cpu", random_state=3, warm_start=True, **dict(params, epochs=1))
    first = np.asarray(model.fit(X, y).decision_function(X_test))
    second = np.asarray(model.fit(X, y).decision_function(X_test))
    return first, second


def run_cases(names):
    """On every rank: each case's test outputs, objectives and gathered weights."""
    out = {}
    for name in names:
        model, raw = fit_case(name, distributed=True)
        single = model.gathered()
        out[name] = {"raw": raw, "full_gradient": bool(getattr(model, "full_gradient_", False)),
                     "block_reuse": getattr(model, "block_reuse_", None), "objective": [r["objective"] for r in model.history_],
                     "weights": single.weights_.numpy().copy(), "rows": model.weights_.shape[0],
                     "pred_gathered": np.asarray(single.decision_function(make_data(*CASES[name][1])[2])),
                     "seconds": model.fit_seconds_}
    out["warm_start"] = {name: warm_start_fit(name, True) for name in WARM_START_CASES}
    out["mismatch"] = mismatched_data_message()
    return out


def mismatched_data_message():
    """The error when rank 1 passes other data than rank 0 (empty on a single process)."""
    import torch.distributed as dist

    import kops.distributed as kd

    if dist.get_world_size() == 1:
        return ""
    X, y, _ = make_data(60, 3, 1, "float64")
    if dist.get_rank() == 1:
        X = X + 1e-9
    try:
        kd.EigenPro2(epochs=1, dtype="float64", device="cpu", random_state=0).fit(X, y)
    except ValueError as err:
        return str(err)
    return "no error"


def die_mid_fit(rank_to_die):
    """Rank ``rank_to_die`` exits during the first epoch's callback; the others keep fitting."""
    import torch.distributed as dist

    import kops.distributed as kd

    X, y, _ = make_data(200, 4, 1, "float64")

    def callback(model, record):
        if dist.get_rank() == rank_to_die:
            os._exit(3)
        return False

    kd.EigenPro4("laplacian", 2.0, centers=40, epochs=3, batch_size=40, dtype="float64", device="cpu",
                 random_state=0, callback=callback).fit(X, y)
    return "finished"


def world_size():
    import torch.distributed as dist

    return dist.get_world_size(), torch.get_num_threads()
