"""Falkon reaches the exact restricted model (ExactKernelRidge on the same centers and ridge).

Matrix: kernels (Gaussian, Laplacian, Matern 5/2) x ridges (1e-8, 1e-3, 1, 100) x
(float64 regression with 2 outputs, float32 3-class classification), 300 points, 60 centers:
the fitted values are within 1e-3 (float64) / 1e-2 (float32) of the exact model's (relative,
Frobenius; the tolerances of the EigenPro convergence matrix) in at most 60 iterations (250 for the Gaussian kernel at ridges <= 1e-3, where the
preconditioned system is ill-conditioned: see ``_iterations``). Then: all points as centers, the memory budget, the
stopping rule, the history and the preconditioner's dtype.
"""
import itertools

import numpy as np
import pytest
import torch

import kops
from helpers import relative_distance, smooth_problem
from kops.solvers.falkon import FalkonPreconditioner, conjugate_gradient, max_centers

BANDWIDTH = {"gaussian": 1.0, "laplacian": 2.0, "matern52": 1.5}
RIDGES = [1e-8, 1e-3, 1.0, 100.0]
TOL = {"float64": 1e-3, "float32": 1e-2}  # as the EigenPro convergence matrix


def _iterations(kernel, ridge):
    # The Gaussian kernel at small ridges is Falkon's hard case: the Nystrom approximation
    # K_XZ^T K_XZ ~ (n / p) K_ZZ^2 is poor in the small eigendirections of K_ZZ, and the
    # preconditioned system keeps a condition number of 900 (ridge 1e-3) to 4500 (ridge 1e-8)
    # here (1 to 120 for the other cases), so CG needs hundreds of iterations (measured in float64:
    # 1.4e-3 after 200 iterations at ridge 1e-8, 1e-5 after 400).
    return 250 if kernel == "gaussian" and ridge <= 1e-3 else 60


CASES = list(itertools.product(BANDWIDTH, RIDGES, ["float64", "float32"]))


@pytest.mark.parametrize("kernel,ridge,dtype", CASES, ids=[f"{k}-r{r:g}-{t}" for k, r, t in CASES])
def test_reaches_the_exact_restricted_model(kernel, ridge, dtype):
    task = "regression" if dtype == "float64" else "classification"
    X, Y = smooth_problem(300, 3, task)
    Z = X[:60]
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge, task=task).fit(X, Y)
    model = kops.Falkon(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge, max_iter=_iterations(kernel, ridge),
                        tol=1e-10, dtype=dtype, task=task).fit(X, Y)
    rel = relative_distance(model, exact, X)
    assert rel < TOL[dtype], f"fitted values {rel:.3g} from the exact model after {model.n_iter_} iterations"
    assert model.weights_.dtype == getattr(torch, dtype)
    assert model.preconditioner_.L.dtype == torch.float64 and model.preconditioner_.A.dtype == torch.float64
    if task == "classification":
        assert np.mean(np.asarray(model.predict(X)) == np.asarray(exact.predict(X))) > 0.99


def test_all_points_as_centers_and_random_centers():
    X, Y = smooth_problem(200, 2, "regression", seed=3)
    exact = kops.ExactKernelRidge("laplacian", 1.0, ridge=1e-2).fit(X, Y)  # centers = all points
    model = kops.Falkon("laplacian", 1.0, centers=X, ridge=1e-2, max_iter=80, tol=1e-10, dtype="float64").fit(X, Y)
    assert relative_distance(model, exact, X) < 1e-6
    drawn = kops.Falkon("laplacian", 1.0, centers=50, ridge=1e-2, dtype="float64", random_state=4).fit(X, Y)
    same = kops.ExactKernelRidge("laplacian", 1.0, centers=drawn.centers_, ridge=1e-2).fit(X, Y)
    assert relative_distance(drawn, same, X) < 1e-5


def test_history_has_one_record_per_iteration_and_the_objective_falls():
    X, Y = smooth_problem(300, 3, "regression", seed=1)
    model = kops.Falkon("gaussian", 1.0, centers=60, ridge=1e-3, max_iter=12, tol=0.0, dtype="float64",
                        random_state=0).fit(X, Y)
    assert model.n_iter_ == 12 and [r["epoch"] for r in model.history_] == list(range(1, 13))
    objective = [r["objective"] for r in model.history_]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(objective, objective[1:]))
    assert model.history_[-1]["residual"] < model.history_[0]["residual"]


def test_tolerance_stops_early_and_callback_stops():
    X, Y = smooth_problem(300, 3, "regression", seed=2)
    loose = kops.Falkon("laplacian", 2.0, centers=60, ridge=1.0, max_iter=100, tol=1e-3, dtype="float64",
                        random_state=0).fit(X, Y)
    assert loose.n_iter_ < 100 and loose.residuals_.max() <= 1e-3
    stopped = kops.Falkon("laplacian", 2.0, centers=60, max_iter=100, random_state=0,
                          callback=lambda est, rec: rec["epoch"] == 3).fit(X, Y)
    assert len(stopped.history_) == 3


def test_memory_budget_caps_the_centers():
    X, Y = smooth_problem(400, 3, "regression")
    budget = 3 * 8 * 100 * 100  # room for the preconditioner of 100 centers
    assert max_centers(budget) == 100
    with pytest.raises(ValueError, match="centers: the float64 preconditioner of p = 150 centers needs a memory "
                                         "budget of at least 540000 bytes"):
        kops.Falkon(centers=150, memory_budget=budget).fit(X, Y)
    model = kops.Falkon(memory_budget=budget, max_iter=2, random_state=0).fit(X, Y)
    assert model.centers_.shape[0] == 100


def test_bad_parameters_name_the_argument():
    X, Y = smooth_problem(50, 2, "regression")
    with pytest.raises(ValueError, match="tol"):
        kops.Falkon(tol=-1.0).fit(X, Y)
    with pytest.raises(ValueError, match="epochs|max_iter"):
        kops.Falkon(max_iter=-1).fit(X, Y)
    with pytest.raises(ValueError, match="ridge"):
        kops.Falkon(ridge=-1.0).fit(X, Y)
    with pytest.raises(ValueError, match="centers=60 is larger"):
        kops.Falkon(centers=60).fit(X, Y)


def test_preconditioner_whitens_the_nystrom_system():
    # With the data equal to the centers, B^T H B is the identity (H = K^2 + r K, exactly
    # what the preconditioner inverts); conjugate gradient then needs a single iteration.
    Z = torch.rand(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    kernel = kops.Laplacian(1.0)
    ridge = 0.5
    P = FalkonPreconditioner(Z, kernel, ridge, total_weight=40.0, budget=1 << 20, jitter=0.0)
    K = kops.kernel_matrix(Z, Z, kernel)
    H = K @ K + ridge * K
    V = torch.randn(40, 2, dtype=torch.float64)
    U = P.apply(V)
    W = P.apply_transpose(H @ U)
    torch.testing.assert_close(W, V, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(P.ridge_part(V, U) * ridge, P.apply_transpose(ridge * (K @ U)), rtol=1e-8, atol=1e-10)
    x, k, rel = conjugate_gradient(lambda v: P.apply_transpose(H @ P.apply(v)), V, max_iter=5, tol=1e-8)
    assert k == 1 and float(rel.max()) < 1e-8
    np.testing.assert_allclose(x.numpy(), V.numpy(), rtol=1e-8)
