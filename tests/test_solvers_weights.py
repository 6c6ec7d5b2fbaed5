"""Unequal sample weights in EigenPro 2 / 3 / 4 (kops.solvers.loss_weights).

The weighted loss ``1/2 sum_i w_i ||f(x_i) - y_i||^2 + r/2 alpha^T K(Z, Z) alpha`` is the one
of :class:`kops.ExactKernelRidge` (and Falkon) with the same weights: each solver, with
random positive weights, reaches the weighted exact model on the same centers (to the
tolerances of ``tests/test_solvers_convergence.py``: 1e-3 float64 regression, 1e-2 float32
classification) in every step mode (mini-batch, whole batch, full gradient, delayed
projections, formed kernel blocks); integer weights are repeated rows; a row of weight 0
has no effect; bad weights are refused naming ``sample_weight``; the sharded solvers of
kops.distributed refuse weights other than ones.
"""
import numpy as np
import pytest
import torch

import kops
from helpers import relative_distance, smooth_problem

TOL = {"float64": 1e-3, "float32": 1e-2}
BANDWIDTH = {"laplacian": 2.0, "gaussian": 1.0}


def _problem(n, d, task, seed=0):
    """The smooth problem with random weights in [0.5, 1.5) (max / min up to 3)."""
    X, y = smooth_problem(n, d, task, seed)
    w = 0.5 + torch.rand(n, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return X, y, w


# name, solver, its centers (None: EigenPro 2's training points), parameters, ridges, and
# whether the steps keep a sampling-noise floor (EigenPro 3's mini-batches: the unweighted fit
# stays 1.5% to 6.9% from the exact model here after 15 epochs, the weighted one 0.8% to 4%).
# EigenPro 2 takes 30 epochs: its weighted operator's bottom directions are up to
# max(w) / min(w) = 3 times slower (measured 3.5e-3 after 15 epochs, 6e-4 after 30).
MODES = [
    ("ep2-whole-batch", kops.EigenPro2, None, {"epochs": 30}, (1e-3, 1.0), False),
    ("ep2-mini-batch", kops.EigenPro2, None, {"epochs": 30, "batch_size": 64}, (1e-3,), False),
    ("ep3-mini-batch", kops.EigenPro3, 120, {"batch_size": 64, "full_gradient": False}, (1e-3,), True),
    ("ep3-full-gradient", kops.EigenPro3, 120, {"batch_size": 64, "full_gradient": True}, (1.0,), False),
    ("ep4-whole-batch", kops.EigenPro4, 30, {"full_gradient": False}, (1e-3,), False),
    ("ep4-full-gradient", kops.EigenPro4, 30, {"full_gradient": True}, (1.0,), False),
]
CASES = [(mode, kernel, ridge, dtype) for mode in MODES for kernel in BANDWIDTH for ridge in mode[4]
         for dtype in ("float64", "float32")
         # EigenPro 2 interpolates a smooth kernel's ill-conditioned matrix at ridge 1e-3: not in float32
         if not (mode[1] is kops.EigenPro2 and kernel == "gaussian" and dtype == "float32" and ridge < 1)]


@pytest.mark.parametrize("mode,kernel,ridge,dtype", CASES,
                         ids=[f"{m[0]}-{k}-r{r:g}-{t}" for m, k, r, t in CASES])
def test_weighted_fit_reaches_the_weighted_exact_model(mode, kernel, ridge, dtype):
    _, cls, p, extra, _, noisy = mode
    task = "regression" if dtype == "float64" else "classification"
    X, Y, w = _problem(300, 3, task)
    centers = {"centers": X[:p]} if p else {}
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], ridge=ridge, task=task, **centers)
    exact.fit(X, Y, sample_weight=w)
    params = dict({"epochs": 15}, **extra)
    model = cls(kernel, BANDWIDTH[kernel], ridge=ridge, dtype=dtype, task=task, random_state=0, **centers, **params)
    model.fit(X, Y, sample_weight=w)
    if "full_gradient" in extra:
        assert model.full_gradient_ == extra["full_gradient"]
    tol = TOL[dtype]
    if noisy:  # no further from its exact model than the unweighted solver from its own
        unweighted = cls(kernel, BANDWIDTH[kernel], ridge=ridge, dtype=dtype, task=task, random_state=0,
                         **centers, **params).fit(X, Y)
        plain = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], ridge=ridge, task=task, **centers).fit(X, Y)
        tol = max(tol, relative_distance(unweighted, plain, X))
    assert relative_distance(model, exact, X) < tol
    # the recorded objective is the weighted one, L / sum(w), on the exact model's scale
    objective = [r["objective"] for r in model.history_]
    assert objective[-1] == pytest.approx(exact.history_[-1]["objective"], rel=0.05 if noisy else 1e-2)
    assert max(b / a for a, b in zip(objective, objective[1:])) <= 1.01


@pytest.mark.parametrize("form", [False, True])
def test_weighted_batch_gradient_is_the_dense_formula(form):
    from kops.solvers.iterations import batch_gradient

    g = torch.Generator().manual_seed(7)
    xb, pts = torch.randn(50, 5, generator=g, dtype=torch.float64), torch.randn(70, 5, generator=g, dtype=torch.float64)
    wts, yb = torch.randn(70, 2, generator=g, dtype=torch.float64), torch.randn(50, 2, generator=g, dtype=torch.float64)
    weight = torch.rand(50, generator=g, dtype=torch.float64)
    K = torch.exp(-torch.cdist(xb, pts) / 2.0)
    res, u = batch_gradient(xb, yb, pts, wts, 40, kops.Laplacian(2.0), form=form, budget=20 * 70 * 8, weight=weight)
    torch.testing.assert_close(res, K @ wts - yb)  # the residual stays unweighted
    torch.testing.assert_close(u, K[:, :40].T @ (weight[:, None] * (K @ wts - yb)))


def test_weighted_fit_with_delayed_projections():
    # The budget holds no factor of K(Z, Z): the sample preconditioner, T > 1 pending batches.
    X, Y, w = _problem(1500, 4, "regression", seed=1)
    Z = X[:500]
    exact = kops.ExactKernelRidge("laplacian", 2.0, centers=Z, ridge=1e-3).fit(X, Y, sample_weight=w)
    model = kops.EigenPro4("laplacian", 2.0, centers=Z, ridge=1e-3, epochs=12, batch_size=125, n_nystrom=500,
                           random_state=0, memory_budget="4MB").fit(X, Y, sample_weight=w)
    assert not model.span_preconditioner_ and model.projection_interval_ > 1
    assert relative_distance(model, exact, X) < 0.03  # measured 1.5% (8 epochs unweighted: 1.2%)


@pytest.mark.parametrize("cls,p", [(kops.EigenPro2, None), (kops.EigenPro3, 60), (kops.EigenPro4, 60)])
def test_integer_weights_are_repeated_rows(cls, p):
    X, Y, _ = _problem(150, 3, "regression", seed=1)
    counts = torch.randint(1, 4, (150,), generator=torch.Generator().manual_seed(2))
    repeat = torch.repeat_interleave(torch.arange(150), counts)
    centers = {"centers": X[:p]} if p else {}
    kw = dict(kernel="laplacian", bandwidth=2.0, ridge=1e-2, epochs=30, dtype="float64", random_state=0, **centers)
    weighted = cls(**kw).fit(X, Y, sample_weight=counts.double())
    repeated = cls(**kw).fit(X[repeat], Y[repeat])
    want = torch.as_tensor(repeated.decision_function(X))
    got = torch.as_tensor(weighted.decision_function(X))
    assert float((got - want).norm() / want.norm()) < 1e-3


@pytest.mark.parametrize("cls,centers", [(kops.EigenPro2, None), (kops.EigenPro3, 40), (kops.EigenPro4, 40)])
def test_rows_of_weight_zero_have_no_effect(cls, centers):
    X, Y, w = _problem(200, 3, "regression", seed=4)
    zero = torch.arange(200) % 5 == 0
    w[zero] = 0.0
    kw = dict(kernel="gaussian", bandwidth=1.0, ridge=1e-2, epochs=3, dtype="float64", random_state=0)
    if centers:
        kw["centers"] = centers
    model = cls(**kw).fit(X, Y, sample_weight=w)
    X2, Y2 = X.clone(), Y.clone()
    X2[zero] += 100.0  # other points and targets on the rows of weight 0: the same fit
    Y2[zero] = 1e6
    other = cls(**kw).fit(X2, Y2, sample_weight=w)
    assert torch.equal(model.centers_, other.centers_) and model.centers_.shape[0] == (40 if centers else 160)
    torch.testing.assert_close(model.weights_, other.weights_, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [kops.EigenPro2, kops.EigenPro3, kops.EigenPro4])
@pytest.mark.parametrize("bad,match", [(-1.0, "sample_weight must be non-negative"),
                                       (float("nan"), "sample_weight contains NaN"),
                                       ("short", r"sample_weight must have shape \(40,\)"),
                                       ("2d", r"sample_weight must have shape \(40,\)")])
def test_bad_sample_weights_are_refused_naming_the_argument(cls, bad, match):
    X, Y, w = _problem(40, 2, "regression")
    if bad == "short":
        w = w[:-1]
    elif bad == "2d":
        w = w[:, None]
    else:
        w[3] = bad
    with pytest.raises(ValueError, match=match):
        cls(bandwidth=1.0, epochs=1, task="regression").fit(X, Y, sample_weight=w)


def test_sklearn_estimators_take_weights_as_numpy_arrays():
    X, y, w = _problem(120, 3, "classification", seed=5)
    X, y, w = X.numpy(), y.numpy(), w.numpy()
    exact = kops.ExactKernelRidgeClassifier("laplacian", 2.0, centers=X[:40], ridge=1e-3).fit(X, y, sample_weight=w)
    model = kops.EigenPro4Classifier("laplacian", 2.0, centers=X[:40], ridge=1e-3, epochs=15, dtype="float64",
                                     random_state=0).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(model.decision_function(X), exact.decision_function(X), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["EigenPro2", "EigenPro3", "EigenPro4"])
def test_sharded_solvers_refuse_sample_weights_other_than_ones(name, tmp_path):
    dist = pytest.importorskip("torch.distributed")
    from kops.distributed import estimators as sharded

    if dist.is_initialized():
        pytest.skip("a default group is initialised in this process")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        cls = getattr(sharded, name)
        X, Y, w = _problem(80, 2, "regression")
        kw = dict(kernel="laplacian", bandwidth=2.0, epochs=1, dtype="float64", full_gradient=False,
                  random_state=0)
        if name == "EigenPro2":
            del kw["full_gradient"]
        for weights in (w, torch.full((80,), 2.0)):  # unequal, or equal but not 1 (a rescaled ridge)
            with pytest.raises(ValueError, match=f"sample_weight: kops.distributed.estimators.{name} takes no"):
                cls(**kw).fit(X, Y, sample_weight=weights)
        ones = cls(**kw).fit(X, Y, sample_weight=torch.ones(80)).weights_
        torch.testing.assert_close(ones, cls(**kw).fit(X, Y).weights_, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()
