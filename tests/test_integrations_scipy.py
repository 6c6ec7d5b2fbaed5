"""kops.integrations.scipy: SciPy's cg, eigsh and lsqr on a kops kernel operator."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator, cg, eigsh, lsqr

import kops
from kops.integrations.scipy import KernelLinearOperator, aslinearoperator

F64 = torch.float64


def _data(generator, n, d):
    return torch.randn(n, d, generator=generator, dtype=F64)


def test_importing_kops_imports_no_adapter_and_no_optional_library():
    code = ("import sys, kops; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gpytorch', 'linear_operator') "
            "or m.startswith('kops.integrations.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
def test_cg_on_k_plus_ridge_matches_exact_kernel_ridge_and_a_dense_solve(kernel, generator):
    n, d, ridge = 257, 5, 0.5
    X = _data(generator, n, d)
    y = torch.sin(X.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=generator, dtype=F64)
    A = kops.KernelOperator(X, kernel=kernel, bandwidth=2.0, ridge=ridge)
    S = aslinearoperator(A)
    assert isinstance(S, LinearOperator) and S.shape == (n, n) and S.dtype == np.float64
    alpha, info = cg(S, y[:, 0].numpy(), rtol=1e-12, maxiter=5 * n)
    assert info == 0
    dense = np.linalg.solve(A.to_dense().numpy(), y[:, 0].numpy())
    assert np.abs(alpha - dense).max() <= 1e-8 * np.abs(dense).max()
    model = kops.ExactKernelRidge(kernel, bandwidth=2.0, ridge=ridge).fit(X, y)
    exact = model.weights_[:, 0].numpy()
    assert np.abs(alpha - exact).max() <= 1e-8 * np.abs(exact).max()
    X_test = _data(generator, 31, d)
    predicted = kops.kmv(X_test, X, torch.from_numpy(alpha), kernel, 2.0).numpy()
    np.testing.assert_allclose(predicted, model.predict(X_test).reshape(-1), rtol=1e-7, atol=1e-8)


def test_eigsh_top_eigenvalues_match_numpy_on_the_dense_matrix(generator):
    n = 300
    X = _data(generator, n, 3)
    A = kops.KernelOperator(X, kernel="matern52", bandwidth=1.5, ridge=0.01)
    top = np.sort(eigsh(aslinearoperator(A), k=6, which="LA", return_eigenvectors=False, tol=1e-12))[::-1]
    want = np.linalg.eigvalsh(A.to_dense().numpy())[::-1][:6]
    np.testing.assert_allclose(top, want, rtol=1e-9)


def test_lsqr_on_a_rectangular_operator_matches_numpy_least_squares(generator):
    X, Z = _data(generator, 200, 4), _data(generator, 40, 4)
    b = torch.randn(200, generator=generator, dtype=F64).numpy()
    A = kops.KernelOperator(X, Z, "cauchy", bandwidth=1.0)
    S = aslinearoperator(A)
    result = lsqr(S, b, damp=1e-2, atol=1e-14, btol=1e-14, iter_lim=10_000)
    K = A.to_dense().numpy()
    want = np.linalg.solve(K.T @ K + 1e-4 * np.eye(40), K.T @ b)
    np.testing.assert_allclose(result[0], want, rtol=1e-6, atol=1e-8 * np.abs(want).max())


def test_matvec_matmat_rmatvec_and_adjoint_match_the_dense_matrix(generator):
    X, Z = _data(generator, 23, 3), _data(generator, 17, 3)
    A = kops.KernelOperator(X, Z, "gaussian", bandwidth=0.8)
    S, K = aslinearoperator(A), A.to_dense().numpy()
    v, V = np.random.default_rng(0).normal(size=17), np.random.default_rng(1).normal(size=(17, 4))
    u, U = np.random.default_rng(2).normal(size=23), np.random.default_rng(3).normal(size=(23, 2))
    np.testing.assert_allclose(S.matvec(v), K @ v, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S @ V, K @ V, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S.rmatvec(u), K.T @ u, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S.rmatmat(U), K.T @ U, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S.H @ U, K.T @ U, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(S.T.matvec(u), K.T @ u, rtol=1e-12, atol=1e-13)
    assert S.H.shape == (17, 23) and isinstance(S.H, KernelLinearOperator)


def test_float32_operators_compute_in_float32_and_others_are_refused(generator):
    X = _data(generator, 50, 2).float()
    S = aslinearoperator(kops.KernelOperator(X, kernel="gaussian", bandwidth=1.0))
    out = S.matvec(np.ones(50))
    assert S.dtype == np.float32 and out.dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        aslinearoperator(kops.KernelOperator(X.half(), kernel="gaussian", bandwidth=1.0))
    with pytest.raises(TypeError, match="kops.KernelOperator"):
        aslinearoperator(np.eye(3))
    with pytest.raises(ValueError):
        S.matvec(np.ones(49))
