"""The convergence matrix: every iterative solver reaches the exact model on its centers and ridge.

Stated guarantee, checked for kernels (Gaussian, Laplacian, Matern 5/2) x ridge (0, 1e-3,
1, 10, 100) x centers (few: EigenPro 4 on 30 of 300 points; moderate: EigenPro 3 on 120;
all: EigenPro 2) x (float64 regression, float32 3-class classification), with the default
batch and step size, after 15 epochs:

* the fitted values ``f(X)`` are within ``TOL[dtype]`` (relative, Frobenius) of
  :class:`kops.ExactKernelRidge` on the same centers and ridge;
* the objective (``history_[k]["objective"]``) never grows by more than 1% from one epoch to
  the next.

Excluded, and why: EigenPro 2 at ridge 0 in float32 with the smooth kernels (Gaussian,
Matern 5/2): the target is an interpolant of a matrix whose condition number is far beyond
float32's resolution, so no float32 iteration reaches it (measured: 0.30 and 0.08 after 15
epochs, while the objective falls by 1e12). A property test over random small problems, the
sample-preconditioner path (n = 3000, delayed projections or full-gradient steps) and larger n
(20,000 points with 300 centers in float32; 10,000 points, 3 classes, 1000 centers) complete
the matrix.
"""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import kops
from helpers import relative_distance, smooth_problem

BANDWIDTH = {"gaussian": 1.0, "laplacian": 2.0, "matern52": 1.5}
RIDGES = [0.0, 1e-3, 1.0, 10.0, 100.0]
SOLVERS = [("few", kops.EigenPro4, 30), ("moderate", kops.EigenPro3, 120), ("all", kops.EigenPro2, None)]
TOL = {"float64": 1e-3, "float32": 1e-2}
GROWTH = 1.01
EPOCHS = 15


def _check(model, exact, X, tol):
    rel = relative_distance(model, exact, X)
    assert rel < tol, f"fitted values {rel:.3g} from the exact model (tolerance {tol})"
    objective = [r["objective"] for r in model.history_]
    assert all(np.isfinite(objective))
    # Below this the objective is noise at the minimum (an interpolating fit reaches 1e-32;
    # float64 at the solver's divergence floor, sqrt(eps): EigenPro 3 with ridge 0 and all
    # points as centers moved 5.5e-13 -> 6.3e-13 between epochs)
    want = torch.as_tensor(exact.decision_function(X)).double()
    floor = 0.5 * float(want.square().sum(1).mean()) * (1.5e-8 if model.dtype_ == torch.float64 else 1e-6)
    growth = max([b / a for a, b in zip(objective, objective[1:]) if a > floor], default=1.0)
    assert growth <= GROWTH, f"objective grew by {growth:.4f} in one epoch"


CASES = [
    (kernel, ridge, centers, dtype)
    for kernel, ridge, centers, dtype in itertools.product(BANDWIDTH, RIDGES, SOLVERS, ["float64", "float32"])
    if not (centers[0] == "all" and ridge == 0.0 and dtype == "float32" and kernel != "laplacian")
]


@pytest.mark.parametrize("kernel,ridge,centers,dtype", CASES,
                         ids=[f"{k}-r{r:g}-{c[0]}-{t}" for k, r, c, t in CASES])
def test_reaches_exact_model(kernel, ridge, centers, dtype):
    _, cls, p = centers
    task = "regression" if dtype == "float64" else "classification"
    X, Y = smooth_problem(300, 3, task)
    kw = {"centers": X[:p]} if p else {}
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], ridge=ridge, task=task, **kw).fit(X, Y)
    model = cls(kernel, BANDWIDTH[kernel], ridge=ridge, epochs=EPOCHS, dtype=dtype, task=task, random_state=0,
                **kw).fit(X, Y)
    _check(model, exact, X, TOL[dtype])


def test_larger_problem_with_mini_batches():
    # n = 3000 in mini-batches, with the sample preconditioner (the budget holds no factor of
    # K(Z, Z)) and delayed projections (T > 1).
    X, Y = smooth_problem(3000, 4, "regression", seed=1)
    Z = X[:1000]
    exact = kops.ExactKernelRidge("laplacian", 2.0, centers=Z, ridge=1e-3).fit(X, Y)
    model = kops.EigenPro4("laplacian", 2.0, centers=Z, ridge=1e-3, epochs=8, batch_size=250, n_nystrom=1000,
                           random_state=0, memory_budget="8MB").fit(X, Y)
    assert not model.span_preconditioner_ and model.projection_interval_ > 1
    assert relative_distance(model, exact, X) < 0.03
    objective = [r["objective"] for r in model.history_]
    assert objective[-1] <= 1.2 * exact.history_[-1]["objective"]
    assert max(b / a for a, b in zip(objective, objective[1:])) <= GROWTH


NYSTROM_CASES = [(k, 0.0) for k in BANDWIDTH] + [(k, 100.0) for k in BANDWIDTH] + [("gaussian", 0.1),
                                                                                    ("laplacian", 10.0)]


@pytest.mark.parametrize("kernel,ridge", NYSTROM_CASES)
def test_sample_preconditioner_path_reaches_exact_model(kernel, ridge):
    # The matrix above fits a factor of K(Z, Z) in the budget (span preconditioner, exact
    # projection); this covers the other path: Nystrom sample, inexact projections, delayed
    # (T > 1) with mini-batch steps, or full-gradient steps where the ridge dominates.
    X, Y = smooth_problem(3000, 4, "regression", seed=1)
    Z = X[:1000]
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge).fit(X, Y)
    model = kops.EigenPro4(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge, epochs=8, batch_size=250,
                           n_nystrom=1000, random_state=0, memory_budget="8MB").fit(X, Y)
    assert not model.span_preconditioner_
    P = model.preconditioner_
    # The stated rule: full-gradient steps exactly when kappa_r = mu_{q+1} / (r / n) <= 2.
    assert model.full_gradient_ == (ridge > 0 and P.mu_q1 <= 2 * ridge / 3000)
    if not model.full_gradient_:
        assert model.projection_interval_ > 1
    # Mini-batch steps keep a sampling-noise floor (measured 1.1% here); full-gradient steps
    # reach the float32 / projection-tolerance floor (measured 0.04-0.3%).
    tol = 1e-2 if model.full_gradient_ else 0.03
    assert relative_distance(model, exact, X) < tol
    objective = [r["objective"] for r in model.history_]
    assert max(b / a for a, b in zip(objective, objective[1:])) <= GROWTH


LARGE_CASES = [(k, r) for k in BANDWIDTH for r in (0.0, 1.0, 100.0)]


@pytest.mark.parametrize("kernel,ridge", LARGE_CASES)
def test_large_n_few_centers_float32(kernel, ridge):
    # n = 20,000 with 300 centers in float32 (the default dtype), mini-batches of up to
    # 10,000: the ill-conditioned few-Gaussian-centers regime (diverged in float32 before
    # the float32 jitter of the factor of K(Z, Z)) and the large-ridge regime (full-gradient
    # steps). Ridge 0 converges more slowly (measured 1.3-1.6% after 5 epochs).
    X, Y = smooth_problem(20000, 3, "regression", seed=2)
    Z = X[:300]
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge).fit(X, Y)
    model = kops.EigenPro4(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge, epochs=5, random_state=0).fit(X, Y)
    assert model.dtype_ == torch.float32
    _check(model, exact, X, 0.03 if ridge == 0 else 1e-2)


def test_large_n_classification_eigenpro3():
    # 10,000 points, 3 classes, 1000 centers, float64, mini-batches. With ridge ~0 the 0/1
    # targets' exact model is a near-interpolant, reached slowly in its small eigendirections
    # (measured: fitted values 10% off after 5 epochs, 6.5% after 10) while the predicted
    # classes agree on 98.7% of the points after 5.
    X, y = smooth_problem(10000, 3, "classification", seed=3)
    Z = X[:1000]
    exact = kops.ExactKernelRidge("laplacian", 2.0, centers=Z, ridge=1e-3).fit(X, y)
    model = kops.EigenPro3("laplacian", 2.0, centers=Z, ridge=1e-3, epochs=5, dtype="float64",
                           random_state=0).fit(X, y)
    assert model.batch_size_ < 10000
    _check(model, exact, X, 0.15)
    assert float((model.predict(X) == exact.predict(X)).double().mean()) > 0.98


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(40, 200), d=st.integers(1, 6), p_frac=st.floats(0.1, 1.0), ridge=st.sampled_from(RIDGES),
       kernel=st.sampled_from(sorted(BANDWIDTH)), seed=st.integers(0, 2**16), which=st.sampled_from([3, 4]))
@example(n=140, d=1, p_frac=1.0, ridge=0.0, kernel="matern52", seed=6259, which=3)  # was a false divergence
@example(n=102, d=1, p_frac=1.0, ridge=0.0, kernel="matern52", seed=1, which=3)  # growth at 1e-12
def test_property_random_small_problems(n, d, p_frac, ridge, kernel, seed, which):
    X, Y = smooth_problem(n, d, "regression", seed=seed)
    p = max(2, int(p_frac * n))
    Z = X[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:p]]
    cls = kops.EigenPro4 if which == 4 else kops.EigenPro3
    exact = kops.ExactKernelRidge(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge).fit(X, Y)
    model = cls(kernel, BANDWIDTH[kernel], centers=Z, ridge=ridge, epochs=EPOCHS, dtype="float64",
                random_state=seed).fit(X, Y)
    _check(model, exact, X, 1e-2)
