"""EigenPro 2 / 3 / 4 against the exact solver, against each other, and on the digits data."""
import numpy as np
import pytest
import torch

import kops
from kops.solvers.eigenpro4 import projection_interval

KERNEL, BW = "laplacian", 2.0


def _problem(n=600, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64) * 4
    Y = torch.stack([torch.sin(X.sum(1)), torch.cos(X[:, 0])], 1)
    Xt = torch.rand(150, d, generator=g, dtype=torch.float64) * 4
    return X, Y, Xt


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_eigenpro2_converges_to_exact(ridge):
    X, Y, Xt = _problem()
    exact = kops.ExactKernelRidge(KERNEL, BW, ridge=ridge).fit(X, Y)
    ep2 = kops.EigenPro2(KERNEL, BW, epochs=20, ridge=ridge, dtype="float64", random_state=0).fit(X, Y)
    # Tolerance: 1e-3 relative to the exact predictions after 20 epochs.
    assert _rel(ep2.predict(Xt), exact.predict(Xt)) < 1e-3
    mse = [r["train_mse"] for r in ep2.history_]
    assert mse[-1] < mse[0]


@pytest.mark.parametrize("cls", [kops.EigenPro4, kops.EigenPro3])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_projected_solvers_converge_to_exact_on_centers(cls, ridge):
    X, Y, Xt = _problem()
    Z = X[:100]
    exact = kops.ExactKernelRidge(KERNEL, BW, centers=Z, ridge=ridge).fit(X, Y)
    model = cls(KERNEL, BW, centers=Z, epochs=10, ridge=ridge, dtype="float64", random_state=0).fit(X, Y)
    # Default batch (all 600 points here, m* > n): 1e-3 relative to the exact model in 10 epochs.
    assert _rel(model.predict(Xt), exact.predict(Xt)) < 1e-3
    # Small batches (SGD): down to the noise floor of a constant step, 3% in 25 epochs.
    sgd = cls(KERNEL, BW, centers=Z, epochs=25, batch_size=100, ridge=ridge, dtype="float64",
              random_state=0).fit(X, Y)
    assert _rel(sgd.predict(Xt), exact.predict(Xt)) < 0.03


def test_eigenpro4_with_centers_equal_data_matches_eigenpro2_solution():
    X, Y, Xt = _problem(n=300)
    exact = kops.ExactKernelRidge(KERNEL, BW).fit(X, Y)
    ep4 = kops.EigenPro4(KERNEL, BW, centers=X, epochs=20, dtype="float64", random_state=1).fit(X, Y)
    assert _rel(ep4.predict(Xt), exact.predict(Xt)) < 1e-3


def test_t1_eigenpro4_is_eigenpro3():
    X, Y, Xt = _problem(n=400)
    kw = dict(centers=80, epochs=3, batch_size=50, dtype="float64", random_state=3)
    ep3 = kops.EigenPro3(KERNEL, BW, **kw).fit(X, Y)
    ep4 = kops.EigenPro4(KERNEL, BW, projection_interval=1, **kw).fit(X, Y)
    assert ep4.projection_interval_ == 1
    torch.testing.assert_close(ep4.predict(Xt), ep3.predict(Xt), rtol=1e-9, atol=1e-9)


def test_eigenpro3_and_eigenpro4_agree():
    X, Y, Xt = _problem(n=400, seed=5)
    kw = dict(centers=80, epochs=15, batch_size=40, dtype="float64", random_state=4)
    ep3 = kops.EigenPro3(KERNEL, BW, **kw).fit(X, Y)
    ep4 = kops.EigenPro4(KERNEL, BW, **kw).fit(X, Y)
    assert ep4.span_preconditioner_ and ep4.projection_interval_ == 1  # exact projections: not delayed
    assert ep4.n_projections_ == 15 * 10
    assert _rel(ep4.predict(Xt), ep3.predict(Xt)) < 1e-9
    # The sample set-up (p too large for a factor of K(Z, Z) in the budget) delays projections.
    big = kops.EigenPro4(KERNEL, BW, memory_budget="200KB", **kw).fit(X, Y)
    big3 = kops.EigenPro3(KERNEL, BW, memory_budget="200KB", **kw).fit(X, Y)
    assert not big.span_preconditioner_ and big.projection_interval_ == 2  # (2 - 1) * 80 // 40
    assert big.n_projections_ == 15 * 5
    assert _rel(big.predict(Xt), big3.predict(Xt)) < 0.03


def test_projection_interval_never_zero():
    assert projection_interval(p=10, m=1000) == 1
    assert projection_interval(p=1000, m=100) == 10
    assert projection_interval(p=1000, m=100, coeff=3) == 20
    assert projection_interval(p=1000, m=100, max_rows=250) == 2
    assert projection_interval(p=1000, m=100, interval=4) == 4
    with pytest.raises(ValueError, match="projection_interval"):
        projection_interval(p=10, m=1, interval=0)


def test_eigenpro4_centers_fewer_than_batch():
    X, Y, _ = _problem(n=300)
    model = kops.EigenPro4(KERNEL, BW, centers=20, batch_size=100, epochs=2, random_state=0).fit(X, Y)
    assert model.projection_interval_ == 1
    assert model.weights_.shape == (20, 2)


def test_digits_eigenpro4_matches_exact_accuracy():
    from kops.solvers.main_job import load_digits_split

    Xtr, Xte, ytr, yte = load_digits_split(0)
    Z = Xtr[np.random.default_rng(0).permutation(len(Xtr))[:1000]]
    exact = kops.ExactKernelRidge("laplacian", 10.0, centers=Z).fit(Xtr, ytr)
    ep4 = kops.EigenPro4("laplacian", 10.0, centers=Z, epochs=3, batch_size=256, random_state=0)
    ep4.fit(Xtr, ytr, Xte, yte)
    acc_exact, acc_ep4 = exact.score(Xte, yte), ep4.score(Xte, yte)
    assert acc_exact > 0.97
    assert acc_ep4 >= acc_exact - 0.01
    assert ep4.history_[-1]["val_accuracy"] == pytest.approx(acc_ep4)
    assert list(ep4.classes_) == list(range(10))
    assert ep4.predict(Xte).shape == (len(Xte),)


def test_regression_shapes_numpy_and_torch():
    X, Y, Xt = _problem(n=200)
    m = kops.EigenPro2(KERNEL, BW, epochs=2, random_state=0).fit(X.numpy(), Y[:, 0].numpy())
    out = m.predict(Xt.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (150,)
    out_t = m.predict(Xt)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (150,)
    assert -1 <= m.score(X.numpy(), Y[:, 0].numpy()) <= 1


def test_callback_stops_and_params():
    X, Y, _ = _problem(n=200)
    seen = []
    m = kops.EigenPro2(KERNEL, BW, epochs=5, random_state=0, callback=lambda est, rec: seen.append(rec) or True)
    m.fit(X, Y)
    assert len(seen) == 1 and len(m.history_) == 1
    params = m.get_params()
    assert params["epochs"] == 5 and params["kernel"] == KERNEL
    m.set_params(epochs=1)
    assert m.epochs == 1
    from kops.solvers import EigenPro4 as E4
    assert E4 is kops.EigenPro4


def test_seeds_reproduce():
    X, Y, Xt = _problem(n=300)
    a = kops.EigenPro4(KERNEL, BW, centers=50, epochs=2, random_state=7).fit(X, Y).predict(Xt)
    b = kops.EigenPro4(KERNEL, BW, centers=50, epochs=2, random_state=7).fit(X, Y).predict(Xt)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("form", [True, False])
def test_eigenpro4_one_buffer_both_block_paths_and_budget(monkeypatch, form):
    import kops.solvers.eigenpro4 as ep4mod
    import kops.solvers.iterations as it

    calls = []
    real_kmv, real_km = it.kmv, it.kernel_matrix

    def spy_kmv(x, z, v, *args, **kwargs):
        calls.append(("kmv", z.untyped_storage().data_ptr(), z.shape[0]))
        return real_kmv(x, z, v, *args, **kwargs)

    def spy_km(x, z, *args, **kwargs):
        calls.append(("block", z.untyped_storage().data_ptr(), z.shape[0]))
        return real_km(x, z, *args, **kwargs)

    monkeypatch.setattr(it, "kmv", spy_kmv)
    monkeypatch.setattr(it, "kernel_matrix", spy_km)
    monkeypatch.setattr(ep4mod, "reuse_kernel_block", lambda *a, **k: form)
    X, Y, Xt = _problem(n=400)
    model = kops.EigenPro4(KERNEL, BW, centers=100, batch_size=20, epochs=1, random_state=0,
                           dtype="float64", projection_interval=5).fit(X, Y)
    T = model.projection_interval_
    assert T == 5 and model.block_reuse_ is form
    # Formed: ONE kernel block per batch (for g and K^T g). Fused: two products per batch,
    # the first over the live prefix [Z; Z_tmp] of one preallocated buffer.
    per_batch = 1 if form else 2
    assert len(calls) == per_batch * (400 // 20)
    firsts = calls[0::per_batch]
    assert len({c[1] for c in firsts}) == 1
    sizes = [c[2] for c in firsts]
    assert sizes[:T + 1] == [100 + 20 * k for k in range(T)] + [100]  # grows, then resets
    # A small memory budget shortens T (the pending buffer, T m rows, gets at most half of it).
    # float32 rows of x and y: 20 bytes; half of 6000 bytes holds 150 pending rows (T = 7 < 20).
    small = kops.EigenPro4(KERNEL, BW, centers=400, batch_size=20, epochs=1, random_state=0,
                           memory_budget=6000, projection_interval=20).fit(X, Y)
    assert small.projection_interval_ == 7


def test_block_paths_agree():
    import kops.solvers.eigenpro4 as ep4mod

    X, Y, Xt = _problem(n=400)
    kw = dict(centers=100, batch_size=50, epochs=2, random_state=0, dtype="float64")
    a = kops.EigenPro4(KERNEL, BW, **kw).fit(X, Y)
    real = ep4mod.reuse_kernel_block
    try:
        ep4mod.reuse_kernel_block = lambda *args, **kwargs: not real(*args, **kwargs)
        b = kops.EigenPro4(KERNEL, BW, **kw).fit(X, Y)
    finally:
        ep4mod.reuse_kernel_block = real
    assert a.block_reuse_ != b.block_reuse_
    torch.testing.assert_close(a.predict(Xt), b.predict(Xt), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("formed", [True, False])
@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
def test_projection_cg_reaches_tolerance_with_fewer_steps(kernel, formed):
    # The projection K(Z, Z) w = h: preconditioned CG reaches its tolerance (checked against
    # a dense float64 solve by the residual) and the Nystrom preconditioner cuts the steps.
    from kops.solvers.preconditioner import NystromPreconditioner
    from kops.solvers.projection import CenterProjector

    g = torch.Generator().manual_seed(0)
    Z = torch.rand(300, 3, generator=g, dtype=torch.float64) * 3
    idx = torch.randperm(300, generator=g)[:100]
    spec = kops.Laplacian(2.0) if kernel == "laplacian" else kops.Gaussian(1.0)
    h = kops.kmv(Z, Z, torch.randn(300, 2, generator=g, dtype=torch.float64), spec)  # in the range
    P = NystromPreconditioner(Z[idx], spec, n_components=30)
    budget = 2**30 if formed else 2**12
    tol = 1e-8 if kernel == "laplacian" else 1e-5  # the Gaussian K(Z, Z) is numerically singular
    proj = CenterProjector(Z, P, idx, generator=g, budget=budget, tol=tol, max_steps=400)
    assert proj.formed == formed and proj.method == "cg"
    w = proj.solve(h)
    K = kops.kernel_matrix(Z, Z, spec)
    assert float((K @ w - h).norm() / h.norm()) <= tol * 1.01
    steps = proj.steps_[-1]
    proj.pcg = lambda r: r.clone()  # plain CG
    proj.solve(h)
    assert steps < proj.steps_[-1]
