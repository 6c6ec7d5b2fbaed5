"""Each failure measured on the solvers, as a test: ridge, few centers, silent failures, budgets."""
import threading

import numpy as np
import pytest
import torch

import kops
from kops.solvers.base import DivergenceError


def _r2(pred, y):
    pred = np.asarray(pred).reshape(y.shape)
    return 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()


@pytest.mark.parametrize("cls", [kops.EigenPro4, kops.EigenPro3])
@pytest.mark.parametrize("ridge", [10.0, 100.0])
def test_ridge_does_not_diverge_and_reaches_exact(cls, ridge):
    # Measured: predictions of 1e35 (ridge 100) and 1e14 (ridge 10) after 10 epochs.
    X = np.random.RandomState(0).randn(400, 3)
    y = X[:, 0]
    model = cls("laplacian", 2.0, centers=X[:100], ridge=ridge, epochs=10, dtype="float64", device="cpu",
                random_state=0).fit(X, y)
    exact = kops.ExactKernelRidge("laplacian", 2.0, centers=X[:100], ridge=ridge).fit(X, y)
    pred, want = model.predict(X), exact.predict(X)
    assert np.abs(pred).max() < 10
    assert np.linalg.norm(pred - want) / np.linalg.norm(want) < 0.05
    objective = [r["objective"] for r in model.history_]
    assert objective[-1] <= exact.history_[-1]["objective"] * 1.05


def test_eigenpro2_ridge_laplacian_converges():
    # Measured: R^2 0.48 after 20 epochs where the exact (K + rI)^-1 y model has 0.81.
    X = np.random.RandomState(0).randn(400, 3)
    y = X[:, 0]
    Xt = np.random.RandomState(1).randn(400, 3)
    ep2 = kops.EigenPro2("laplacian", 2.0, ridge=10.0, epochs=20, dtype="float64", random_state=0).fit(X, y)
    exact = kops.ExactKernelRidge("laplacian", 2.0, ridge=10.0).fit(X, y)
    assert _r2(ep2.predict(Xt), Xt[:, 0]) == pytest.approx(_r2(exact.predict(Xt), Xt[:, 0]), abs=1e-3)


def test_eigenpro2_ridge_gaussian_converges():
    # Measured: R^2 0.28 vs 0.95 (ridge 1, Gaussian s = 2, n = 2000, d = 4).
    rng = np.random.RandomState(1)
    X = rng.randn(2000, 4)
    y = np.sin(X[:, 0]) + X[:, 1]
    ep2 = kops.EigenPro2("gaussian", 2.0, ridge=1.0, epochs=20, dtype="float64", random_state=0).fit(X, y)
    exact = kops.ExactKernelRidge("gaussian", 2.0, ridge=1.0).fit(X, y)
    pred, want = ep2.predict(X), exact.predict(X)
    assert np.linalg.norm(pred - want) / np.linalg.norm(want) < 1e-3


def test_float16_and_bfloat16_are_refused():
    X = np.random.RandomState(0).randn(100, 3)
    y = (X[:, 0] > 0).astype(int)
    for dtype in ("float16", "bfloat16", torch.float16, np.float16):
        with pytest.raises(ValueError, match="not supported for training.*float32"):
            kops.EigenPro4("gaussian", 1.0, centers=20, epochs=1, dtype=dtype).fit(X, y)
        with pytest.raises(ValueError, match="not supported"):
            kops.ExactKernelRidge("gaussian", 1.0, dtype=dtype).fit(X, y)


def test_exact_float32_interpolates_like_float64():
    # Measured: train accuracy 0.51 in float32 where float64 reaches 1.00 (weights rounded).
    from kops.solvers.main_job import load_digits_split

    Xtr, _, ytr, _ = load_digits_split(0)
    a32 = kops.ExactKernelRidge("laplacian", 10.0, dtype="float32").fit(Xtr, ytr).score(Xtr, ytr)
    a64 = kops.ExactKernelRidge("laplacian", 10.0, dtype="float64").fit(Xtr, ytr).score(Xtr, ytr)
    assert a64 == 1.0 and a32 == 1.0


def test_budget_too_small_raises_naming_budget():
    # Measured: memory_budget="1KB" gave R^2 ~ 0 with no warning.
    X = np.random.RandomState(0).randn(400, 3)
    y = X[:, 0]
    for cls, kw in [(kops.EigenPro2, {}), (kops.EigenPro3, {"centers": 50}), (kops.EigenPro4, {"centers": 50})]:
        with pytest.raises(ValueError, match="memory budget of 1000 bytes is too small.*at least"):
            cls("laplacian", 2.0, epochs=1, memory_budget="1KB", **kw).fit(X, y)


def test_memory_budget_context_is_thread_local():
    # Measured: the context was process-wide (one thread's context changed every thread).
    default = kops.get_memory_budget()
    inside, barrier = {}, threading.Barrier(2)

    def worker(name, size):
        with kops.memory_budget(size):
            barrier.wait()
            inside[name] = kops.get_memory_budget()
            barrier.wait()
        inside[name + "_after"] = kops.get_memory_budget()

    threads = [threading.Thread(target=worker, args=("a", "1MiB")), threading.Thread(target=worker, args=("b", "2MiB"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside["a"] == 2**20 and inside["b"] == 2 * 2**20
    assert inside["a_after"] == default and inside["b_after"] == default
    assert kops.get_memory_budget() == default
    # The process-wide value still applies to every thread without a context.
    kops.set_memory_budget("3MiB")
    try:
        seen = []
        t = threading.Thread(target=lambda: seen.append(kops.get_memory_budget()))
        t.start()
        t.join()
        assert seen == [3 * 2**20]
        with kops.memory_budget("1MiB"):
            assert kops.get_memory_budget() == 2**20
        assert kops.get_memory_budget() == 3 * 2**20
    finally:
        kops.set_memory_budget(None)


def test_divergence_stops_with_clear_error_and_keeps_last_good_weights():
    import kops.solvers.eigenpro2 as ep2mod

    X = np.random.RandomState(0).randn(300, 3)
    y = X[:, 0]
    real = ep2mod.eigenpro2_step
    blown = []

    def unstable(x, t, w, *args, **kwargs):  # a good first epoch, then a blow-up in the second
        out = real(x, t, w, *args, **kwargs)
        if len(model.history_) == 1 and not blown:
            blown.append(1)
            w.mul_(1e3)
        return out

    model = kops.EigenPro2("laplacian", 2.0, epochs=5, dtype="float64", random_state=0)
    ep2mod.eigenpro2_step = unstable
    try:
        with pytest.raises(DivergenceError, match="diverged in epoch 2.*smaller batch_size"):
            model.fit(X, y)
    finally:
        ep2mod.eigenpro2_step = real
    assert len(model.history_) == 2
    good = kops.EigenPro2("laplacian", 2.0, epochs=1, dtype="float64", random_state=0).fit(X, y)
    torch.testing.assert_close(model.weights_, good.weights_)
