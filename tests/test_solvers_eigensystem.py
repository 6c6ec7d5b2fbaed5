"""The Nystrom eigensystem and preconditioner: eigen-residuals, matrix-free vs dense."""
import math

import pytest
import torch

import kops
from kops.solvers import NystromPreconditioner, top_eigensystem


def _points(s, d, seed):
    return torch.randn(s, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel,bandwidth", [("gaussian", 2.0), ("laplacian", 4.0)])
def test_subspace_matches_dense(kernel, bandwidth):
    x = _points(600, 6, 1)
    k = 41
    dense = top_eigensystem(x, kernel, bandwidth, k=k, method="dense")
    free = top_eigensystem(x, kernel, bandwidth, k=k, method="subspace", tol=1e-9)
    assert free.method == "subspace" and dense.method == "dense"
    lam = dense.eigenvalues
    assert torch.all(lam[:-1] >= lam[1:])
    torch.testing.assert_close(free.eigenvalues, lam, rtol=0, atol=1e-8 * float(lam[0]))
    # Eigen-residuals ||K q / s - lambda q|| of both paths, with K formed here for the check.
    K = kops.kernel_matrix(x, x, kernel, bandwidth) / x.shape[0]
    for es in (dense, free):
        R = K @ es.eigenvectors - es.eigenvectors * es.eigenvalues
        assert float(R.norm(dim=0).max()) <= 1e-7 * float(lam[0])
        V = es.eigenvectors
        torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    # Subspace angles between the top-j subspaces where the spectrum has a gap after j.
    gaps = (lam[:-1] - lam[1:]) / lam[0]
    j = int(torch.argmax(gaps[: k - 5])) + 1
    sv = torch.linalg.svdvals(dense.eigenvectors[:, :j].T @ free.eigenvectors[:, :j])
    angle = math.acos(min(1.0, float(sv.min())))
    assert angle < 1e-4


def test_auto_path_and_arguments():
    x = _points(50, 3, 2)
    assert top_eigensystem(x, "gaussian", 1.0, k=5).method == "dense"
    formed = top_eigensystem(x, "gaussian", 1.0, k=5, dense_max=10, oversample=4, tol=1e-8)
    assert formed.method == "formed-subspace"
    free = top_eigensystem(x, "gaussian", 1.0, k=5, method="subspace", oversample=4, tol=1e-8)
    torch.testing.assert_close(formed.eigenvalues, free.eigenvalues, rtol=1e-7, atol=0)
    with pytest.raises(ValueError, match="k must"):
        top_eigensystem(x, "gaussian", 1.0, k=51)
    with pytest.raises(ValueError, match="k must"):
        top_eigensystem(x, "gaussian", 1.0, k=0)
    with pytest.raises(ValueError, match="method"):
        top_eigensystem(x, "gaussian", 1.0, k=3, method="lanczos")
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        top_eigensystem(bad, "gaussian", 1.0, k=3)


def test_preconditioner_formulas_and_correction():
    x = _points(300, 4, 3)
    q = 20
    P = NystromPreconditioner(x, kops.Laplacian(3.0), n_components=q, eig_method="dense")
    lam = P.eigensystem.eigenvalues
    s = x.shape[0]
    assert P.beta == pytest.approx(1.0)
    assert P.lambda_q1 == pytest.approx(float(lam[q]))
    torch.testing.assert_close(P.D64, (1 - lam[q] / lam[:q]) / (lam[:q] * s))
    assert P.critical_batch_size == pytest.approx(1.0 / float(lam[q]))
    m_star = P.critical_batch_size
    assert P.step_size(1) == pytest.approx(1.0)
    big = int(m_star) + 10
    assert P.step_size(big) == pytest.approx(2.0 / (1.0 + (big - 1) * float(lam[q])))
    # The correction E D E^T K(X_S, X_B) g against its dense formula.
    xb = _points(17, 4, 4)
    g = _points(17, 3, 5)
    Ksb = kops.kernel_matrix(x, xb, kops.Laplacian(3.0))
    want = P.E64 @ (P.D64[:, None] * (P.E64.T @ (Ksb @ g)))
    torch.testing.assert_close(P.correction(xb, g), want)
    # Preconditioned K_S has its top q eigenvalues damped to lambda_{q+1}:
    # (I - K_S/s-part) ... checked through the operator K_S/s - K_S E D E^T K_S / s.
    K = kops.kernel_matrix(x, x, kops.Laplacian(3.0)) / s
    Kp = K - (K * s) @ P.E64 @ torch.diag(P.D64) @ P.E64.T @ K
    top = torch.linalg.eigvalsh(0.5 * (Kp + Kp.T))[-1]
    assert float(top) == pytest.approx(float(lam[q]), rel=1e-6)
    with pytest.raises(ValueError, match="n_components"):
        NystromPreconditioner(x, "gaussian", 1.0, n_components=300)


def test_matrix_free_path_never_forms_k(monkeypatch):
    import kops.solvers.eigensystem as es

    def forbidden(*args, **kwargs):
        raise AssertionError("the matrix-free path formed K")

    monkeypatch.setattr(es, "kernel_matrix", forbidden)
    x = _points(400, 5, 6)
    out = top_eigensystem(x, "gaussian", 2.0, k=10, method="subspace", tol=1e-8)
    assert out.method == "subspace" and out.residual <= 1e-8


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (200, 1), (200, 37), (200, 100), (200, 150), (97, 97)])
@pytest.mark.parametrize("with_scipy", [True, False])
def test_top_eigh_pairs_by_residuals(n, k, dtype, with_scipy, monkeypatch):
    import builtins

    from kops.solvers.dense import top_eigh

    if not with_scipy:  # the torch path must give the same pairs where SciPy is absent
        real_import = builtins.__import__

        def no_scipy(name, *args, **kwargs):
            if name.startswith("scipy"):
                raise ImportError("no scipy here")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_scipy)
    g = torch.Generator().manual_seed(n + k)
    B = torch.randn(n, n + 3, generator=g, dtype=torch.float64)
    A64 = B @ B.T / (n + 3) + torch.diag(torch.linspace(0, 1, n, dtype=torch.float64))
    A = A64.to(dtype)
    w, V = top_eigh(A, k)
    assert w.shape == (k,) and V.shape == (n, k) and w.dtype == dtype and V.dtype == dtype
    eps = torch.finfo(dtype).eps
    scale = float(A64.norm())
    assert bool((w[:-1] >= w[1:]).all())  # descending
    want = torch.linalg.eigvalsh(A64).flip(0)[:k]
    assert float((w.double() - want).abs().max()) <= 50 * n * eps * scale
    residual = (A.double() @ V.double() - V.double() * w.double()).norm(dim=0).max()
    assert float(residual) <= 50 * n * eps * scale
    gram = V.double().T @ V.double()
    assert float((gram - torch.eye(k, dtype=torch.float64)).abs().max()) <= 50 * n * eps
