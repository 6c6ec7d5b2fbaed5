"""kops.integrations.linear_operator: the library's own solve / inv_quad_logdet against dense."""
import linear_operator
import pytest
import torch
from linear_operator import settings
from linear_operator.operators import AddedDiagLinearOperator, DenseLinearOperator, LinearOperator

import kops
from kops.integrations.linear_operator import KopsLinearOperator, to_linear_operator

F64 = torch.float64


def _problem(generator, n=60, d=3, ard=True):
    x = torch.randn(n, d, generator=generator, dtype=F64)
    ell = (torch.rand(d if ard else (), generator=generator, dtype=F64) + 1.0).requires_grad_(True)
    c = torch.tensor(1.7, dtype=F64, requires_grad=True)
    return x, ell, c


def _dense(x, z, ell, c, kernel):
    return c * kops.kernel_matrix(x, z, kernel, ell)


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "matern32", "matern52"])
def test_products_transpose_diagonal_and_indexing_match_dense(kernel, generator):
    x, ell, c = _problem(generator)
    z = torch.randn(45, 3, generator=generator, dtype=F64)
    A = KopsLinearOperator(x, z, ell, c, kernel=kernel)
    K = _dense(x, z, ell, c, kernel).detach()
    assert isinstance(A, LinearOperator) and A.shape == (60, 45)
    rhs = torch.randn(45, 3, generator=generator, dtype=F64)
    torch.testing.assert_close(A.matmul(rhs), K @ rhs, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A @ rhs[:, 0], K @ rhs[:, 0], rtol=1e-11, atol=1e-11)
    batched = torch.randn(2, 45, 4, generator=generator, dtype=F64)  # rhs with batch dimensions
    torch.testing.assert_close(A.matmul(batched), K @ batched, rtol=1e-11, atol=1e-11)
    u = torch.randn(60, 2, generator=generator, dtype=F64)
    torch.testing.assert_close(A.mT.matmul(u), K.T @ u, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(A.to_dense(), K, rtol=1e-12, atol=1e-12)
    rows, cols = torch.tensor([0, 5, 7]), torch.tensor([3, 3, 44])
    torch.testing.assert_close(A[rows, cols], K[rows, cols], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(A[2:9, 10:20].to_dense(), K[2:9, 10:20], rtol=1e-12, atol=1e-13)
    square = KopsLinearOperator(x, z[:1].expand(60, 3) + x, ell, c, kernel=kernel)
    torch.testing.assert_close(square.diagonal(), square.to_dense().diagonal(), rtol=1e-12, atol=1e-13)
    sym = KopsLinearOperator(x, x, ell, c, kernel=kernel)
    torch.testing.assert_close(sym.diagonal(), torch.full((60,), 1.7, dtype=F64))


def test_cholesky_path_inv_quad_logdet_and_gradients_match_dense(generator):
    x, ell, c = _problem(generator)
    y = torch.randn(60, generator=generator, dtype=F64)
    noise = 0.3
    A = KopsLinearOperator(x, x, ell, c, kernel="matern52").add_diagonal(torch.tensor(noise, dtype=F64))
    with settings.max_cholesky_size(10_000):  # (its Cholesky path needs a 2-D right-hand side)
        iq, logdet = A.inv_quad_logdet(y.unsqueeze(-1), logdet=True)
    grads = torch.autograd.grad(iq + logdet, (ell, c))
    dense = _dense(x, x, ell, c, "matern52") + noise * torch.eye(60, dtype=F64)
    iq_ref = y @ torch.linalg.solve(dense, y)
    logdet_ref = torch.logdet(dense)
    grads_ref = torch.autograd.grad(iq_ref + logdet_ref, (ell, c))
    torch.testing.assert_close(iq, iq_ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-9, atol=1e-10)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_cg_path_solve_and_inv_quad_gradients_match_dense(generator):
    x, ell, c = _problem(generator, n=150)
    rhs = torch.randn(150, 2, generator=generator, dtype=F64)
    noise = torch.tensor(1.0, dtype=F64)
    A = KopsLinearOperator(x, x, ell, c, kernel="gaussian").add_diagonal(noise)
    dense = _dense(x, x, ell, c, "gaussian") + noise * torch.eye(150, dtype=F64)
    same_cg_on_dense = DenseLinearOperator(dense.detach()).add_diagonal(0 * noise)
    with settings.max_cholesky_size(0), settings.cg_tolerance(1e-5), settings.max_cg_iterations(150):
        solved = A.solve(rhs)
        solved_dense = same_cg_on_dense.solve(rhs)
        iq, _ = A.inv_quad_logdet(rhs, logdet=False)
    # The same CG iterates as on the formed matrix (products agree to 1e-14; CG amplifies that
    # rounding to up to 2e-6 of the solution, measured over random seeds, by the time it stops) ...
    assert float((solved.detach() - solved_dense).abs().max()) <= 2e-5 * float(solved_dense.abs().max())
    # ... and linear_cg's own accuracy against the exact solve (about 1e-6 here, for either).
    exact = torch.linalg.solve(dense.detach(), rhs)
    assert float((solved.detach() - exact).abs().max()) <= 1e-4 * float(exact.abs().max())
    grads = torch.autograd.grad(iq, (ell, c))
    iq_ref = (rhs * torch.linalg.solve(dense, rhs)).sum()
    grads_ref = torch.autograd.grad(iq_ref, (ell, c))
    torch.testing.assert_close(iq, iq_ref, rtol=1e-5, atol=0)
    for g, r in zip(grads, grads_ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-8)


def test_lanczos_logdet_matches_the_same_estimate_on_the_formed_matrix(generator):
    x, ell, c = _problem(generator, n=120, ard=False)
    noise = torch.tensor(0.5, dtype=F64)
    A = KopsLinearOperator(x, x, ell, c, kernel="laplacian").add_diagonal(noise)
    dense = _dense(x, x, ell, c, "laplacian").detach() + noise * torch.eye(120, dtype=F64)
    estimates = []
    for op in (A, DenseLinearOperator(dense).add_diagonal(0 * noise)):
        torch.manual_seed(0)  # the same probe vectors for both
        with settings.max_cholesky_size(0), settings.num_trace_samples(64), settings.cg_tolerance(1e-3):
            estimates.append(float(op.inv_quad_logdet(logdet=True)[1]))
    assert abs(estimates[0] - estimates[1]) <= 1e-6 * abs(estimates[1])
    # Stochastic Lanczos quadrature itself: an absolute error of a few per cent of n.
    assert abs(estimates[0] - float(torch.logdet(dense))) <= 0.05 * 120


def test_bilinear_derivative_is_the_gradient_of_u_k_v(generator):
    x, ell, c = _problem(generator, n=30)
    z = torch.randn(25, 3, generator=generator, dtype=F64, requires_grad=True)
    x.requires_grad_(True)
    A = KopsLinearOperator(x, z, ell, c, kernel="matern32")
    left = torch.randn(30, 2, generator=generator, dtype=F64)
    right = torch.randn(25, 2, generator=generator, dtype=F64)
    grads = A._bilinear_derivative(left, right)
    want = torch.autograd.grad((left * (_dense(x, z, ell, c, "matern32") @ right)).sum(), (x, z, ell, c))
    assert len(grads) == 4
    for g, r in zip(grads, want):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


def test_batch_dimensions_are_refused_clearly(generator):
    x, ell, c = _problem(generator, n=10)
    with pytest.raises(ValueError, match="no batch dimensions.*x of shape \\(2, 10, 3\\)"):
        KopsLinearOperator(x.expand(2, 10, 3), x, ell, c)
    with pytest.raises(ValueError, match="no batch dimensions.*lengthscale of shape"):
        KopsLinearOperator(x, x, torch.ones(2, 3, dtype=F64), c)
    A = KopsLinearOperator(x, x, ell, c)
    with pytest.raises(ValueError, match="no batch dimensions"):
        A.expand(4, 10, 10)
    with pytest.raises(ValueError, match="no batch dimensions"):
        A.unsqueeze(0)
    with pytest.raises(ValueError, match="bandwidth"):
        KopsLinearOperator(x, x, torch.tensor(-1.0, dtype=F64))
    with pytest.raises(ValueError, match="unknown kernel"):
        KopsLinearOperator(x, x, 1.0, kernel="nope")


def test_a_kops_kernel_operator_with_ridge_converts(generator):
    x = torch.randn(40, 2, generator=generator, dtype=F64)
    op = kops.KernelOperator(x, kernel="gaussian", bandwidth=0.7, ridge=0.25)
    A = to_linear_operator(op)
    assert isinstance(A, AddedDiagLinearOperator)
    torch.testing.assert_close(A.to_dense(), op.to_dense(), rtol=1e-12, atol=1e-13)
    b = torch.randn(40, generator=generator, dtype=F64)
    torch.testing.assert_close(linear_operator.solve(A, b), torch.linalg.solve(op.to_dense(), b),
                               rtol=1e-9, atol=1e-10)
    plain = to_linear_operator(kops.KernelOperator(x, x[:30], "laplacian", bandwidth=1.0))
    assert isinstance(plain, KopsLinearOperator) and plain.shape == (40, 30)
